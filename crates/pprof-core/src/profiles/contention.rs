//! `mutex` and `block`: the contention recorded by [`sync`](crate::sync)'s
//! locks and by poll watching, read out of its event tables.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::{About, Admission, Ask, Collecting, Profile, Seconds, Working, blocking};
use crate::format::{self, LeafTrim, Sample, StackProfile, ValueType, vt};
use crate::sync::events::{self, Kind};

const SAMPLE_TYPES: &[ValueType] = &[vt("contentions", "count"), vt("delay", "nanoseconds")];

/// One of the two contention profiles.
pub(crate) struct Contention {
    about: About,
    kind: Kind,
    /// The `--- NAME:` header of Go's text form.
    text_header: &'static str,
}

/// `/mutex`: delay charged to the critical sections that caused it.
pub(crate) static MUTEX: Contention = Contention {
    about: About {
        name: "mutex",
        description: "Stack traces of holders of contended mutexes (pprof_core::sync locks)",
        index_links: &[],
        sample_types: SAMPLE_TYPES,
        period_type: SAMPLE_TYPES[0],
        seconds: Seconds::Delta,
    },
    kind: Kind::Mutex,
    text_header: "mutex",
};

/// `/block`: time threads (and runtime workers) spent blocked.
pub(crate) static BLOCK: Contention = Contention {
    about: About {
        name: "block",
        description: "Stack traces that led to blocking on synchronization primitives (pprof_core::sync locks, and polls that blocked a runtime worker)",
        index_links: &[],
        sample_types: SAMPLE_TYPES,
        period_type: SAMPLE_TYPES[0],
        seconds: Seconds::Delta,
    },
    kind: Kind::Block,
    text_header: "contention",
};

impl Profile for Contention {
    fn about(&self) -> &About {
        &self.about
    }

    /// Reading the tables is a copy under their lock, but symbolizing and
    /// encoding them is not free: concurrent requests share one answer.
    fn admission(&self) -> Admission {
        Admission::Coalesced
    }

    fn collect(&'static self, _: Ask, _: Working) -> Collecting {
        Box::pin(blocking(move || Ok(profile(self.kind))))
    }

    fn text(&self, profile: &StackProfile, _debug: u32, out: &mut dyn fmt::Write) -> fmt::Result {
        format::contention(out, self.text_header, profile, events::dropped(self.kind))
    }

    fn count(&self) -> usize {
        events::stack_count(self.kind)
    }
}

/// The cumulative profile so far (delta profiles subtract two of these).
fn profile(kind: Kind) -> StackProfile {
    let samples = events::recorded(kind)
        .into_iter()
        .map(|(pcs, labels, values)| Sample {
            pcs,
            values: values.to_vec(),
            labels: labels.to_sample_labels(),
        })
        .collect();
    StackProfile {
        sample_types: SAMPLE_TYPES,
        period_type: SAMPLE_TYPES[0],
        period: 1,
        default_sample_type: None,
        time: SystemTime::now(),
        duration: Duration::ZERO,
        samples,
        leaf_trim: LeafTrim::Contention,
        comments: Vec::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sync::events::record_at_rates;

    /// The function names, leaf first, of every recorded stack of `kind`
    /// (after the encoder's trimming), with the stack's values.
    pub(crate) fn stacks(kind: Kind) -> Vec<(Vec<String>, Vec<i64>)> {
        let p = profile(kind);
        format::symbolize(&p)
            .into_iter()
            .zip(&p.samples)
            .map(|(sym, sample)| {
                let names = sym
                    .stack
                    .iter()
                    .flat_map(|(_, frames)| frames.iter().map(|f| f.name.to_string()))
                    .collect();
                (names, sample.values.clone())
            })
            .collect()
    }

    /// The symbolized leaf and values of each recorded stack.
    pub(crate) fn leaves(kind: Kind) -> Vec<(String, Vec<i64>)> {
        stacks(kind)
            .into_iter()
            .map(|(names, values)| (names.into_iter().next().unwrap_or_default(), values))
            .collect()
    }

    /// Go's `debug=1` text of `kind`'s profile now.
    pub(crate) fn text(kind: Kind) -> String {
        let profile = &match kind {
            Kind::Mutex => &MUTEX,
            Kind::Block => &BLOCK,
        };
        let mut out = String::new();
        let _ = profile.text(&super::profile(kind), 1, &mut out);
        out
    }

    /// 20 000 events at fraction 10 and, for waits of a quarter of the
    /// block rate, probability 1/4: the scaled totals estimate the truth.
    #[inline(never)]
    fn record_sampled_events_here() {
        for _ in 0..20_000 {
            record_at_rates(Some((1, 1_000)), Some(Duration::from_nanos(250)), 10, 1_000);
        }
    }

    #[test]
    fn sampled_values_are_scaled_back_to_the_truth() {
        record_sampled_events_here();
        let totals = |kind| {
            leaves(kind)
                .into_iter()
                .filter(|(leaf, _)| leaf.ends_with("record_sampled_events_here"))
                .fold([0i64; 2], |acc, (_, v)| [acc[0] + v[0], acc[1] + v[1]])
        };
        // Within 10 % (about five standard deviations of the sampling).
        let near = |got: i64, want: i64| (got - want).abs() * 10 <= want;
        let [count, delay] = totals(Kind::Mutex);
        assert!(
            near(count, 20_000) && near(delay, 20_000_000),
            "{count} {delay}"
        );
        let [count, delay] = totals(Kind::Block);
        assert!(
            near(count, 20_000) && near(delay, 5_000_000),
            "{count} {delay}"
        );
    }
}
