//! The goroutine and threadcreate profiles, built from a dump of every
//! thread's stack ([`threads`](crate::threads)).
//!
//! Rust has no goroutines: a thread is the unit that exists, waits and
//! leaks, so each thread is one "goroutine" here.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::Error;
use crate::profile::{Label, LeafTrim, Sample, StackProfile, ValueType, vt};
use crate::symbolize::{Frame, symbolizer};
use crate::threads::{self, ThreadStack};

const GOROUTINE: &[ValueType] = &[vt("goroutine", "count")];
const THREADCREATE: &[ValueType] = &[vt("threadcreate", "count")];

/// One sample per thread (value 1), labelled with its name, state and id.
/// The leaf frames of waiting (the libc call, std's sleep and lock
/// internals) are trimmed when encoding, so the top function is the code
/// that waits; `debug=2` shows the whole stack.
pub(crate) fn goroutine(signal: i32, timeout: Duration) -> Result<StackProfile, Error> {
    let stacks = threads::dump(signal, timeout)?;
    let samples = stacks
        .into_iter()
        .map(|t| Sample {
            values: vec![1],
            labels: labels(&t),
            pcs: t.pcs.unwrap_or_default(),
        })
        .collect();
    Ok(profile(GOROUTINE, samples, LeafTrim::Wait))
}

/// One sample per live thread, its stack cut to the frames that started
/// it: the thread's outermost frames up to the first one that is not
/// thread-start machinery, which is the closure given to `spawn` (named
/// after the function that created the thread), or a C thread's start routine.
pub(crate) fn threadcreate(signal: i32, timeout: Duration) -> Result<StackProfile, Error> {
    let stacks = threads::dump(signal, timeout)?;
    let resolved =
        symbolizer().resolve_all(stacks.iter().flat_map(|t| t.pcs.iter().flatten().copied()));
    let samples = stacks
        .into_iter()
        .map(|t| {
            let mut pcs = t.pcs.clone().unwrap_or_default();
            // Outermost first: find the first frame that is the thread's own code.
            let start = pcs.iter().rposition(|pc| {
                resolved
                    .get(pc)
                    .is_some_and(|frames| frames.iter().any(|f| !is_thread_start(f)))
            });
            if let Some(start) = start {
                pcs.drain(..start);
            }
            Sample {
                values: vec![1],
                labels: labels(&t),
                pcs,
            }
        })
        .collect();
    Ok(profile(THREADCREATE, samples, LeafTrim::None))
}

fn profile(types: &'static [ValueType], samples: Vec<Sample>, trim: LeafTrim) -> StackProfile {
    StackProfile {
        sample_types: types,
        period_type: types[0],
        period: 1,
        default_sample_type: None,
        time: SystemTime::now(),
        duration: Duration::ZERO,
        samples,
        leaf_trim: trim,
    }
}

fn labels(t: &ThreadStack) -> Vec<Label> {
    let mut labels = vec![
        Label::Str("thread", t.name.clone()),
        Label::Str("state", t.state.to_owned()),
    ];
    if let Some(wait) = &t.wait_channel {
        labels.push(Label::Str("wchan", wait.clone()));
    }
    if t.pcs.is_none() {
        labels.push(Label::Str(
            "stack",
            "unavailable: the thread did not answer the signal".to_owned(),
        ));
    }
    labels.push(Label::Num("thread_id", i64::from(t.tid)));
    labels
}

/// Threads with the same stack and string labels folded into one sample
/// whose value is their number (Go's goroutine profile groups the same way).
/// Numeric labels (the thread id) and the wait channel are dropped.
pub(crate) fn grouped(mut profile: StackProfile) -> StackProfile {
    let mut index: HashMap<(Vec<u64>, Vec<Label>), usize> = HashMap::new();
    let mut samples: Vec<Sample> = Vec::new();
    for s in profile.samples {
        let labels: Vec<Label> = s
            .labels
            .into_iter()
            .filter(|l| matches!(l, Label::Str(key, _) if *key != "wchan"))
            .collect();
        let key = (s.pcs, labels);
        match index.get(&key) {
            Some(&i) => {
                for (acc, v) in samples[i].values.iter_mut().zip(&s.values) {
                    *acc += v;
                }
            }
            None => {
                index.insert(key.clone(), samples.len());
                samples.push(Sample {
                    pcs: key.0,
                    values: s.values,
                    labels: key.1,
                });
            }
        }
    }
    profile.samples = samples;
    profile
}

/// Frames of starting a thread: the kernel's clone, libc's start routine,
/// std's spawn plumbing, and the closure-call shims.
fn is_thread_start(frame: &Frame) -> bool {
    const PREFIXES: &[&str] = &[
        "std::sys::",
        "std::thread::",
        "std::panicking::",
        "std::panic::",
        "std::rt::",
        "core::ops::function::",
        "core::panic::",
        "alloc::boxed::",
        "__rust_try",
    ];
    let name: &str = &frame.name;
    is_libc_frame(frame) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A frame of the C library or the loader: a C name (no Rust path) that has
/// no source file, glibc's relative source paths, or a reserved `__` name.
fn is_libc_frame(frame: &Frame) -> bool {
    let (name, file): (&str, &str) = (&frame.name, &frame.file);
    !name.contains("::")
        && (file.is_empty()
            || file.starts_with("./")
            || file.contains("/sysdeps/")
            || name.starts_with("__"))
}

/// Leaf frames of waiting that say how, not where: libc's blocking calls,
/// std's and parking_lot's sleep, lock and channel internals, and this
/// crate's own dump on the dumping thread.
pub(crate) fn is_wait_frame(frame: &Frame) -> bool {
    const PREFIXES: &[&str] = &[
        "std::sys::",
        "std::thread::",
        "std::sync::",
        "std::time::",
        "std::io::",
        "core::",
        "alloc::",
        "parking_lot",
        "tokio::loom::",
        "backtrace::",
        "pprof_core::threads::",
        "pprof_core::goroutine::",
        "crossbeam_channel::",
        "crossbeam_utils::",
    ];
    let name: &str = &frame.name;
    name.is_empty() || is_libc_frame(frame) || PREFIXES.iter().any(|p| name.starts_with(p))
}
