//! `profile`: CPU time. The `pprof` crate's SIGPROF sampler collects raw
//! stacks; we re-encode them with our own builder.
//!
//! One profile runs at a time in the whole process (the sampler is
//! process-global). Starting, stopping and reading the sampler happen on
//! blocking threads; the request's future only sleeps in between, and if it
//! is dropped (the client went away) the sampler is stopped at once.

use std::fmt;
use std::time::Duration;

use super::{About, Admission, Ask, Collecting, Profile, Seconds, Slot, Working};
use crate::error::Error;
use crate::format::{Label, LeafTrim, Sample, StackProfile, ValueType, vt};
use crate::jemalloc;
use crate::symbols::symbolizer;

const SAMPLE_TYPES: &[ValueType] = &[vt("samples", "count"), vt("cpu", "nanoseconds")];

/// Shared libraries in which a sample is dropped rather than unwound:
/// unwinding from inside the unwinder or the dynamic loader can deadlock.
const BLOCKLIST: &[&str] = &["libc", "libgcc", "pthread", "vdso", "ld-linux"];

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

/// The process's one CPU profile at a time.
static SLOT: Slot = Slot::new(Error::CpuProfilerBusy);

impl Profile for Cpu {
    fn about(&self) -> &About {
        &self.about
    }

    fn admission(&self) -> Admission {
        Admission::OneAtATime(&SLOT)
    }

    fn collect(&'static self, ask: Ask, working: Working) -> Collecting {
        Box::pin(profile(ask.window, ask.hz, working))
    }

    /// CPU profiles have no text form (the route takes no `debug`).
    fn text(&self, _: &StackProfile, _: u32, _: &mut dyn fmt::Write) -> fmt::Result {
        Err(fmt::Error)
    }

    /// 1 while a CPU profile runs.
    fn count(&self) -> usize {
        usize::from(SLOT.in_use())
    }
}

/// A running sampler. Dropping it stops the sampler (on a blocking thread
/// when inside a runtime) and then frees the slot.
struct Session {
    guard: Option<pprof::ProfilerGuard<'static>>,
    /// The admission slot, freed once the sampler has stopped.
    slot: Working,
    hz: u32,
}

impl Drop for Session {
    fn drop(&mut self) {
        let (guard, slot) = (self.guard.take(), self.slot.take());
        let stop = move || {
            jemalloc::unsampled(|| drop(guard));
            drop(slot);
            jemalloc::release_free_memory();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(stop);
            }
            Err(_) => stop(),
        }
    }
}

fn start(hz: u32, slot: Working) -> Result<Session, Error> {
    let hz_c = i32::try_from(hz).unwrap_or(i32::MAX);
    let guard = jemalloc::unsampled(|| {
        pprof::ProfilerGuardBuilder::default()
            .frequency(hz_c)
            .blocklist(BLOCKLIST)
            .build()
    })
    .map_err(|e| match e {
        pprof::Error::Running => Error::CpuProfilerBusy,
        other => Error::Profiler(format!("Could not enable CPU profiling: {other}")),
    })?;
    Ok(Session {
        guard: Some(guard),
        slot,
        hz,
    })
}

impl Session {
    /// Read the samples, stop the sampler, free the slot; then turn the raw
    /// report into our profile (symbolizing only to find the signal frames).
    fn finish(mut self) -> Result<StackProfile, Error> {
        let guard = self.guard.take();
        let report = guard
            .as_ref()
            .map(|g| g.report().build_unresolved())
            .transpose()
            .map_err(|e| Error::Profiler(format!("Could not read the CPU profile: {e}")))?;
        // Stopping frees the sampler's table and allocates a fresh one.
        jemalloc::unsampled(|| drop(guard));
        drop(self.slot.take());
        jemalloc::release_free_memory();
        let report =
            report.ok_or_else(|| Error::Profiler("CPU profiler was not running".to_owned()))?;
        let period = 1_000_000_000 / i64::from(self.hz.max(1));
        let stacks: Vec<(Vec<u64>, String, i64)> = report
            .data
            .iter()
            .map(|(frames, count)| {
                let ips = frames
                    .frames
                    .iter()
                    .map(|f| f.ip() as usize as u64)
                    .filter(|&ip| ip > 1) // the end-of-stack marker
                    .collect();
                let name =
                    &frames.thread_name[..frames.thread_name_length.min(frames.thread_name.len())];
                let thread = if name.is_empty() {
                    frames.thread_id.to_string()
                } else {
                    String::from_utf8_lossy(name).into_owned()
                };
                (ips, thread, i64::try_from(*count).unwrap_or(0))
            })
            .collect();
        drop(report.data);
        Ok(StackProfile {
            sample_types: SAMPLE_TYPES,
            period_type: SAMPLE_TYPES[1],
            period,
            default_sample_type: None,
            time: report.timing.start_time,
            duration: report.timing.duration,
            samples: samples_without_signal_frames(stacks, period),
            leaf_trim: LeafTrim::None,
        })
    }
}

/// Each raw stack starts inside the sampler's signal handler. Cut through
/// the handler and the kernel's signal trampoline; the frame after them is
/// the interrupted one, whose ip is exact, while every caller's ip is a
/// return address (looked up as `ip - 1`, as pprof expects).
fn samples_without_signal_frames(stacks: Vec<(Vec<u64>, String, i64)>, period: i64) -> Vec<Sample> {
    let lookups = stacks
        .iter()
        .flat_map(|(ips, ..)| ips.iter().map(|ip| ip.saturating_sub(1)));
    let resolved = symbolizer().resolve_all(lookups);
    let names_at = |ip: u64| resolved.get(&ip.saturating_sub(1));
    stacks
        .into_iter()
        .filter(|(_, _, count)| *count > 0)
        .map(|(ips, thread, count)| {
            let handler = ips.iter().rposition(|ip| {
                names_at(*ip).is_some_and(|frames| {
                    frames
                        .iter()
                        .any(|f| f.name.contains("perf_signal_handler"))
                })
            });
            let mut first = handler.map_or(0, |h| h + 1);
            if handler.is_some()
                && ips.get(first).is_some_and(|ip| {
                    names_at(*ip).is_none_or(|frames| {
                        frames.is_empty() || frames.iter().any(|f| f.name.contains("restore_rt"))
                    })
                })
            {
                first += 1;
            }
            let pcs = ips[first.min(ips.len())..]
                .iter()
                .enumerate()
                .map(|(i, ip)| {
                    if i == 0 && handler.is_some() {
                        *ip
                    } else {
                        ip.saturating_sub(1)
                    }
                })
                .collect();
            Sample {
                pcs,
                values: vec![count, count * period],
                labels: vec![Label::Str("thread", thread)],
            }
        })
        .collect()
}

/// Run one CPU profile for `duration`, holding `slot` until the sampler
/// has stopped. Dropping the returned future stops it.
async fn profile(duration: Duration, hz: u32, slot: Working) -> Result<StackProfile, Error> {
    let session = tokio::task::spawn_blocking(move || start(hz, slot))
        .await
        .map_err(|e| Error::Profiler(format!("CPU profiler task failed: {e}")))??;
    tokio::time::sleep(duration).await;
    tokio::task::spawn_blocking(move || session.finish())
        .await
        .map_err(|e| Error::Profiler(format!("CPU profiler task failed: {e}")))?
}
