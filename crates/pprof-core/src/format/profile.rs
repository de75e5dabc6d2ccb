//! The in-memory profile every collector produces and the one encoder reads:
//! samples of raw stacks with values, before symbolization.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A `type/unit` pair, as in profile.proto's `ValueType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValueType {
    pub(crate) kind: &'static str,
    pub(crate) unit: &'static str,
}

pub(crate) const fn vt(kind: &'static str, unit: &'static str) -> ValueType {
    ValueType { kind, unit }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Label {
    /// One of ours (`thread`, `state`, …).
    Str(&'static str, String),
    Num(&'static str, i64),
    /// The application's (see [`labels`](crate::labels)).
    User(std::sync::Arc<str>, std::sync::Arc<str>),
}

impl Label {
    /// Whether it is a string label (which samples are told apart by).
    pub(crate) fn is_string(&self) -> bool {
        !matches!(self, Self::Num(..))
    }
}

/// One stack and its values. `pcs` are lookup addresses (a return address
/// minus one, or the exact interrupted pc for a CPU sample's leaf), leaf first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) pcs: Vec<u64>,
    pub(crate) values: Vec<i64>,
    pub(crate) labels: Vec<Label>,
}

/// Which leaf frames the encoder drops after symbolization (the profiler's own
/// machinery, which no user wants to see on top).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeafTrim {
    None,
    /// Allocator and `alloc::` plumbing above the allocating user frame.
    Allocator,
    /// The profiled locks' own frames (`pprof_core::sync`, the stack
    /// capture, drop glue) above the frame that locked or unlocked.
    Contention,
    /// Waiting machinery (libc's blocking calls, std's sleep and lock
    /// internals) above the frame that waits.
    Wait,
}

#[derive(Debug, Clone)]
pub(crate) struct StackProfile {
    pub(crate) sample_types: &'static [ValueType],
    pub(crate) period_type: ValueType,
    pub(crate) period: i64,
    pub(crate) default_sample_type: Option<&'static str>,
    pub(crate) time: SystemTime,
    pub(crate) duration: Duration,
    pub(crate) samples: Vec<Sample>,
    pub(crate) leaf_trim: LeafTrim,
    /// Notes for the reader (profile.proto's `comment`; `go tool pprof
    /// -comments` shows them): what the collector could not do, counted.
    pub(crate) comments: Vec<String>,
}

impl StackProfile {
    pub(crate) fn time_nanos(&self) -> i64 {
        nanos(self.time.duration_since(UNIX_EPOCH).unwrap_or_default())
    }

    pub(crate) fn duration_nanos(&self) -> i64 {
        nanos(self.duration)
    }

    /// `later - self`, per stack and string labels: samples whose values all
    /// cancel are dropped, negative values are kept. Numeric labels come from
    /// the later sample. Time is the later one's, duration the gap between them.
    pub(crate) fn delta_to(&self, later: StackProfile) -> StackProfile {
        type Key = (Vec<u64>, Vec<Label>);
        fn key(s: &Sample) -> Key {
            let labels = s.labels.iter().filter(|l| l.is_string()).cloned().collect();
            (s.pcs.clone(), labels)
        }
        // Per key: the summed earlier values and the earlier sample's labels.
        let mut before: HashMap<Key, (Vec<i64>, Vec<Label>)> = HashMap::new();
        for s in &self.samples {
            let (values, _) = before
                .entry(key(s))
                .or_insert_with(|| (vec![0; s.values.len()], s.labels.clone()));
            for (acc, v) in values.iter_mut().zip(&s.values) {
                *acc += v;
            }
        }
        let mut samples = Vec::with_capacity(later.samples.len());
        for mut s in later.samples {
            if let Some((old, _)) = before.remove(&key(&s)) {
                for (v, o) in s.values.iter_mut().zip(old) {
                    *v -= o;
                }
            }
            if s.values.iter().any(|&v| v != 0) {
                samples.push(s);
            }
        }
        // Stacks that disappeared give negative deltas, with all their labels.
        for ((pcs, _), (old, labels)) in before {
            if old.iter().any(|&v| v != 0) {
                samples.push(Sample {
                    pcs,
                    values: old.into_iter().map(|v| -v).collect(),
                    labels,
                });
            }
        }
        StackProfile {
            duration: later.time.duration_since(self.time).unwrap_or_default(),
            samples,
            ..later
        }
    }
}

pub(crate) fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPES: &[ValueType] = &[vt("a", "count"), vt("b", "bytes")];

    fn profile(at: u64, samples: Vec<Sample>) -> StackProfile {
        StackProfile {
            sample_types: TYPES,
            period_type: vt("space", "bytes"),
            period: 1,
            default_sample_type: None,
            time: UNIX_EPOCH + Duration::from_secs(at),
            duration: Duration::ZERO,
            samples,
            leaf_trim: LeafTrim::None,
            comments: Vec::new(),
        }
    }

    fn sample(pcs: &[u64], values: [i64; 2]) -> Sample {
        Sample {
            pcs: pcs.to_vec(),
            values: values.to_vec(),
            labels: vec![],
        }
    }

    #[test]
    fn delta_subtracts_drops_zeroes_and_keeps_negatives() {
        let first = profile(
            10,
            vec![
                sample(&[1, 2], [5, 50]),
                sample(&[3], [1, 10]),
                sample(&[4], [2, 20]),
            ],
        );
        let second = profile(
            15,
            vec![
                sample(&[1, 2], [7, 70]),
                sample(&[3], [1, 10]),
                sample(&[5], [1, 1]),
            ],
        );
        let delta = first.delta_to(second);
        assert_eq!(delta.duration, Duration::from_secs(5));
        assert_eq!(delta.time, UNIX_EPOCH + Duration::from_secs(15));
        let mut got: Vec<_> = delta
            .samples
            .iter()
            .map(|s| (s.pcs.clone(), s.values.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (vec![1, 2], vec![2, 20]),
                (vec![4], vec![-2, -20]),
                (vec![5], vec![1, 1]),
            ]
        );
    }
}
