//! `profile`: CPU time, from our own sampler.
//!
//! Every thread is sampled by its own CPU clock, the signal handler only
//! records raw stacks into a preallocated buffer, and one sampler serves
//! up to `Config::max_cpu_profiles` profiles at once, each with exactly the
//! samples of its own window ([`sampler`]; the signal side is
//! [`signals::cpu`](crate::signals::cpu)). A tick whose stack could not be
//! taken whole is still a sample, its last frame naming why
//! ([`Missing`](crate::format::Missing)), so totals match the CPU used.

use std::fmt;

use super::{About, Admission, Ask, Collecting, Profile, Seconds, Working, blocking};
use crate::error::Error;
use crate::format::{Label, LeafTrim, Sample, StackProfile, ValueType, vt};

mod sampler;

const SAMPLE_TYPES: &[ValueType] = &[vt("samples", "count"), vt("cpu", "nanoseconds")];

/// `/profile`: the CPU profile.
pub(crate) struct Cpu {
    about: About,
}

pub(crate) static CPU: Cpu = Cpu {
    about: About {
        name: "profile",
        description: "CPU profile. You can specify the duration in the seconds GET parameter. After you get the profile file, use the go tool pprof command to investigate the profile.",
        index_links: &[],
        sample_types: SAMPLE_TYPES,
        period_type: SAMPLE_TYPES[1],
        seconds: Seconds::Window,
    },
};

impl Profile for Cpu {
    fn about(&self) -> &About {
        &self.about
    }

    /// The sampler admits: up to `max_cpu_profiles` windows at one rate.
    fn admission(&self) -> Admission {
        Admission::Shared
    }

    fn collect(&'static self, ask: Ask, _: Working) -> Collecting {
        Box::pin(profile(ask))
    }

    /// CPU profiles have no text form (the route takes no `debug`).
    fn text(&self, _: &StackProfile, _: u32, _: &mut dyn fmt::Write) -> fmt::Result {
        Err(fmt::Error)
    }

    /// CPU profiles running now.
    fn count(&self) -> usize {
        sampler::open_windows()
    }
}

/// One CPU profile for `ask.window` at `ask.hz`. Dropping the returned
/// future closes its window at once (the others go on; the last one
/// leaving stops the timers).
async fn profile(ask: Ask) -> Result<StackProfile, Error> {
    let (hz, max) = (ask.hz, ask.max_cpu_profiles);
    let window = blocking(move || sampler::subscribe(hz, max)).await?;
    tokio::time::sleep(ask.window).await;
    let window = blocking(move || window.finish()).await?;
    Ok(to_profile(window))
}

fn to_profile(window: sampler::Window) -> StackProfile {
    let period = 1_000_000_000 / i64::from(window.hz.max(1));
    let samples = window
        .ticks
        .into_iter()
        .map(|((pcs, thread, labels), ticks)| {
            let count = i64::try_from(ticks).unwrap_or(i64::MAX);
            let mut labels = labels.to_sample_labels();
            if !thread.is_empty() {
                labels.insert(0, Label::Str("thread", thread.to_string()));
            }
            Sample {
                pcs: pcs.into_vec(),
                values: vec![count, count.saturating_mul(period)],
                labels,
            }
        })
        .collect();
    StackProfile {
        sample_types: SAMPLE_TYPES,
        period_type: SAMPLE_TYPES[1],
        period,
        default_sample_type: None,
        time: window.started,
        duration: window.duration,
        samples,
        leaf_trim: LeafTrim::None,
        comments: window.notes,
    }
}
