//! One sample per stack and label set, after the frame rules: what every
//! writer (the proto encoder, Go's text forms, and through the encoder the
//! pages) reads a profile through.
//!
//! Collectors key their tables by the raw stack, and the frame rules then
//! trim leaf frames (the allocator's, the locks', the waits'): two stacks
//! that differed only there become one, and a reader would see two
//! samples it has to merge itself (tools disagree on whether they do).
//! Here samples with the same symbolized stack (the same locations, leaf
//! first, after trimming) and the same labels (each key with its text or
//! number, in any order, whichever collector made them) become one, with
//! the values summed. A merge whose values cancel out (a delta's rise and
//! fall on one stack) leaves no sample, as a delta drops unchanged stacks.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::frames::{Symbolized, symbolize};
use super::profile::{Label, Sample, StackProfile};

/// A label as a reader tells labels apart: its key and its text or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Value<'a> {
    Text(&'a str),
    Number(i64),
}

fn label_key(label: &Label) -> (&str, Value<'_>) {
    match label {
        Label::Str(key, value) => (key, Value::Text(value)),
        Label::User(key, value) => (key, Value::Text(value)),
        Label::Num(key, value) => (key, Value::Number(*value)),
    }
}

/// One sample as the writers see it.
pub(crate) struct Record<'a> {
    /// The first of the samples merged into it (whose labels, in their
    /// order, it carries).
    pub(crate) sample: &'a Sample,
    /// Their values, summed.
    pub(crate) values: Vec<i64>,
    /// Their one symbolized stack, after the frame rules.
    pub(crate) stack: Symbolized,
}

/// The profile's samples, symbolized and trimmed, one per stack and label
/// set, in the order each first appears.
pub(crate) fn records(profile: &StackProfile) -> Vec<Record<'_>> {
    type Key<'a> = (Vec<(u64, usize)>, Vec<(&'a str, Value<'a>)>);
    let mut index: HashMap<Key<'_>, usize> = HashMap::new();
    let mut records: Vec<Record<'_>> = Vec::with_capacity(profile.samples.len());
    let mut merged = Vec::with_capacity(profile.samples.len());
    for (sample, stack) in profile.samples.iter().zip(symbolize(profile)) {
        let locations = stack
            .stack
            .iter()
            .map(|(pc, frames)| (*pc, frames.len()))
            .collect();
        let mut labels: Vec<_> = sample.labels.iter().map(label_key).collect();
        labels.sort_unstable();
        match index.entry((locations, labels)) {
            Entry::Occupied(at) => {
                let at = *at.get();
                for (sum, v) in records[at].values.iter_mut().zip(&sample.values) {
                    *sum = sum.saturating_add(*v);
                }
                merged[at] = true;
            }
            Entry::Vacant(slot) => {
                slot.insert(records.len());
                records.push(Record {
                    sample,
                    values: sample.values.clone(),
                    stack,
                });
                merged.push(false);
            }
        }
    }
    records
        .into_iter()
        .zip(merged)
        .filter(|(record, merged)| !*merged || record.values.iter().any(|&v| v != 0))
        .map(|(record, _)| record)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::format::{LeafTrim, ValueType, to_proto, vt};

    #[inline(never)]
    fn user_frame() -> u64 {
        std::hint::black_box(1)
    }

    #[inline(never)]
    fn caller_frame() -> u64 {
        user_frame() + 1
    }

    /// A lookup address `offset` bytes into `f`.
    fn pc(f: usize, offset: u64) -> u64 {
        f as u64 + offset
    }

    /// Two stacks that differ only in a leaf frame `trim` drops (two
    /// addresses in `machinery`), over the same user frames.
    fn trimmed_to_one(machinery: usize) -> [Vec<u64>; 2] {
        let user = [
            pc(user_frame as fn() -> u64 as usize, 1),
            pc(caller_frame as fn() -> u64 as usize, 1),
        ];
        [1, 3].map(|offset| {
            let mut pcs = vec![pc(machinery, offset)];
            pcs.extend(user);
            pcs
        })
    }

    fn profile(types: &'static [ValueType], trim: LeafTrim, samples: Vec<Sample>) -> StackProfile {
        StackProfile {
            sample_types: types,
            period_type: types[0],
            period: 1,
            default_sample_type: None,
            time: UNIX_EPOCH + Duration::from_secs(1),
            duration: Duration::ZERO,
            samples,
            leaf_trim: trim,
            comments: Vec::new(),
        }
    }

    /// A label set made anew each time: equal contents, different `Arc`s.
    fn user_labels() -> Vec<Label> {
        vec![Label::User(Arc::from("tenant"), Arc::from("acme"))]
    }

    /// The encoded samples: (location ids, values).
    fn encoded(p: &StackProfile) -> Vec<(Vec<u64>, Vec<i64>)> {
        to_proto(p)
            .sample
            .into_iter()
            .map(|s| (s.location_id, s.value))
            .collect()
    }

    #[test]
    fn cpu_samples_with_equal_labels_in_other_arcs_and_orders_are_one() {
        const TYPES: &[ValueType] = &[vt("samples", "count"), vt("cpu", "nanoseconds")];
        let pcs = vec![
            pc(user_frame as fn() -> u64 as usize, 1),
            pc(caller_frame as fn() -> u64 as usize, 1),
        ];
        let thread = || Label::Str("thread", "worker".to_owned());
        let samples = vec![
            Sample {
                pcs: pcs.clone(),
                values: vec![1, 10],
                labels: [vec![thread()], user_labels()].concat(),
            },
            Sample {
                pcs,
                values: vec![2, 20],
                labels: [user_labels(), vec![thread()]].concat(),
            },
        ];
        let got = encoded(&profile(TYPES, LeafTrim::None, samples));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, [3, 30]);
    }

    #[test]
    fn heap_samples_whose_allocator_frames_differ_are_one() {
        const TYPES: &[ValueType] = &[
            vt("alloc_objects", "count"),
            vt("alloc_space", "bytes"),
            vt("inuse_objects", "count"),
            vt("inuse_space", "bytes"),
        ];
        let alloc = std::alloc::alloc as unsafe fn(std::alloc::Layout) -> *mut u8 as usize;
        let [a, b] = trimmed_to_one(alloc);
        let sample = |pcs: &Vec<u64>, n, size| Sample {
            pcs: pcs.clone(),
            values: vec![n, n * size, n, n * size],
            labels: vec![Label::Num("bytes", size)],
        };
        let p = profile(
            TYPES,
            LeafTrim::Allocator,
            vec![sample(&a, 1, 64), sample(&b, 2, 64)],
        );
        let got = encoded(&p);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, [3, 192, 3, 192]);
        let mut text = String::new();
        crate::format::heap(&mut text, &p, &[]).expect("text");
        assert!(text.starts_with("heap profile: 3: 192 [3: 192]"), "{text}");
        assert_eq!(
            text.matches(" @ ").count(),
            2,
            "the header and one record: {text}"
        );
        // Another object size is another sample, as Go keeps one per size.
        let p = profile(
            TYPES,
            LeafTrim::Allocator,
            vec![sample(&a, 1, 64), sample(&b, 1, 128)],
        );
        assert_eq!(encoded(&p).len(), 2);
    }

    #[test]
    fn thread_samples_whose_wait_frames_differ_are_one() {
        const TYPES: &[ValueType] = &[vt("goroutine", "count")];
        let sleep = std::thread::sleep as fn(Duration) as usize;
        let [a, b] = trimmed_to_one(sleep);
        let sample = |pcs| Sample {
            pcs,
            values: vec![1],
            labels: [
                vec![Label::Str("thread", "waiter".to_owned())],
                user_labels(),
            ]
            .concat(),
        };
        let p = profile(TYPES, LeafTrim::Wait, vec![sample(a), sample(b)]);
        let got = encoded(&p);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, [2]);
    }

    #[test]
    fn contention_samples_whose_lock_frames_differ_are_one_and_cancelled_deltas_none() {
        const TYPES: &[ValueType] = &[vt("contentions", "count"), vt("delay", "nanoseconds")];
        let sleep = std::thread::sleep as fn(Duration) as usize;
        let [a, b] = trimmed_to_one(sleep);
        let sample = |pcs, values: [i64; 2]| Sample {
            pcs,
            values: values.to_vec(),
            labels: user_labels(),
        };
        let p = profile(
            TYPES,
            LeafTrim::Contention,
            vec![sample(a.clone(), [1, 100]), sample(b.clone(), [2, 200])],
        );
        let got = encoded(&p);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, [3, 300]);
        let mut text = String::new();
        crate::format::contention(&mut text, "contention", &p, 0).expect("text");
        assert!(text.contains("\n300 3 @ "), "{text}");
        assert_eq!(text.matches(" @ ").count(), 1, "{text}");
        // A delta whose rise on one raw stack and fall on the other cancel
        // once trimmed: nothing changed there, so no sample.
        let p = profile(
            TYPES,
            LeafTrim::Contention,
            vec![sample(a, [1, 100]), sample(b, [-1, -100])],
        );
        assert_eq!(encoded(&p), []);
    }
}
