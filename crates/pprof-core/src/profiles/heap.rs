//! `heap` and `allocs`: jemalloc's own sampling profiler, read out.
//!
//! jemalloc samples one allocation every 2^`lg_prof_sample` bytes on average
//! and, on `prof.dump`, writes every sampled stack with its live and
//! (with `prof_accum`) cumulative counts. We dump to a private file (see
//! [`jemalloc`](crate::jemalloc)), parse it, scale the sampled counts up to
//! estimates of the true ones (as jemalloc's `jeprof` does) and hand the
//! stacks to the common encoder. The two profiles are the same dump; they
//! differ in the sample type tools show first.

use std::fmt;
use std::time::SystemTime;

use super::{About, Admission, Ask, Collecting, Profile, Seconds, Slot, Working, blocking};
use crate::error::Error;
use crate::format::{self, Label, LeafTrim, Sample, StackProfile, ValueType, vt};
use crate::jemalloc;

/// `heap` or `allocs`: the same dump, told apart by the sample type tools
/// show first.
pub(crate) struct HeapProfile {
    about: About,
    default_sample_type: Option<&'static str>,
}

/// `/heap`: live memory by allocating stack (tools show `inuse_space`).
pub(crate) static HEAP: HeapProfile = HeapProfile {
    about: About {
        name: "heap",
        description: "A sampling of memory allocations of live objects. You can specify the gc GET parameter to run GC before taking the heap sample.",
        index_links: &[],
        sample_types: SAMPLE_TYPES,
        period_type: PERIOD_TYPE,
        seconds: Seconds::Delta,
    },
    default_sample_type: None,
};

/// `/allocs`: every allocation since the start, by stack (`alloc_space`).
pub(crate) static ALLOCS: HeapProfile = HeapProfile {
    about: About {
        name: "allocs",
        description: "A sampling of all past memory allocations",
        index_links: &[],
        sample_types: SAMPLE_TYPES,
        period_type: PERIOD_TYPE,
        seconds: Seconds::Delta,
    },
    default_sample_type: Some("alloc_space"),
};

/// One heap or allocs request dumps at a time in the process; another
/// meanwhile gets 409 rather than queueing, so a burst of heap requests
/// cannot pile up dumps.
static SLOT: Slot = Slot::new(Error::HeapDumpBusy);

impl Profile for HeapProfile {
    fn about(&self) -> &About {
        &self.about
    }

    fn admission(&self) -> Admission {
        Admission::OneAtATime(&SLOT)
    }

    fn available(&self) -> Result<(), Error> {
        jemalloc::check_enabled()
    }

    /// Text (`debug>0`) carries raw sampled counts, as Go's text carries
    /// its raw records; the proto carries estimates.
    fn collect(&'static self, ask: Ask, working: Working) -> Collecting {
        Box::pin(blocking(move || {
            let _working = working;
            ask.cancel.check()?;
            Ok(to_profile(
                &dump()?,
                self.default_sample_type,
                ask.debug == 0,
            ))
        }))
    }

    fn text(&self, profile: &StackProfile, _debug: u32, out: &mut dyn fmt::Write) -> fmt::Result {
        let mut stats = jemalloc::stats();
        let cached = crate::symbols::symbolizer().cached_addresses();
        stats.push(("pprof_core_symbol_cache_addresses", cached as u64));
        format::heap(out, profile, &stats)
    }

    fn count(&self) -> usize {
        stack_count()
    }
}

const PERIOD_TYPE: ValueType = vt("space", "bytes");

/// Stacks in the heap profile, for the index page: a bare dump (no
/// symbols, no slot; the index asks at most once a second).
fn stack_count() -> usize {
    dump().map_or(0, |d| d.stacks.len())
}

const SAMPLE_TYPES: &[ValueType] = &[
    vt("alloc_objects", "count"),
    vt("alloc_space", "bytes"),
    vt("inuse_objects", "count"),
    vt("inuse_space", "bytes"),
];

/// One sampled stack of a jemalloc dump, counts as sampled (not scaled).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DumpStack {
    /// Lookup addresses (return address minus one), leaf first.
    pcs: Vec<u64>,
    live_objects: u64,
    live_bytes: u64,
    total_objects: u64,
    total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Dump {
    /// Mean bytes between samples (2^lg_prof_sample).
    period: u64,
    stacks: Vec<DumpStack>,
}

/// Parse jemalloc's `heap_v2` dump format.
fn parse_dump(text: &str) -> Result<Dump, String> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let period = header
        .strip_prefix("heap_v2/")
        .and_then(|p| p.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("unexpected jemalloc dump header {header:?}"))?;
    let mut stacks = Vec::new();
    let mut pending: Option<Vec<u64>> = None;
    for line in lines {
        let line = line.trim();
        if line == "MAPPED_LIBRARIES:" {
            break;
        }
        if let Some(addrs) = line.strip_prefix('@') {
            let pcs = addrs
                .split_whitespace()
                .filter_map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
                .filter(|&a| a != 0)
                .map(|a| a - 1)
                .collect();
            pending = Some(pcs);
        } else if let Some(counts) = line.strip_prefix("t*:") {
            let Some(pcs) = pending.take() else {
                continue; // the process-wide totals before the first stack
            };
            let [live_objects, live_bytes, total_objects, total_bytes] = parse_counts(counts)
                .ok_or_else(|| format!("unexpected jemalloc dump counts {line:?}"))?;
            stacks.push(DumpStack {
                pcs,
                live_objects,
                live_bytes,
                total_objects,
                total_bytes,
            });
        }
    }
    Ok(Dump { period, stacks })
}

/// `a: b [c: d]` → `[a, b, c, d]`.
fn parse_counts(s: &str) -> Option<[u64; 4]> {
    let mut numbers = s
        .split(|c: char| c == ':' || c == '[' || c == ']' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u64>().ok());
    let out = [
        numbers.next()??,
        numbers.next()??,
        numbers.next()??,
        numbers.next()??,
    ];
    Some(out)
}

/// Estimate the true counts from sampled ones. An allocation of size `s` is
/// sampled with probability `1 - exp(-s/period)`, so each sampled stack is
/// scaled by the inverse of that probability at its mean size (jeprof's
/// `AdjustSamples` for `heap_v2`).
fn unsample(objects: u64, bytes: u64, period: u64) -> (i64, i64) {
    if objects == 0 || period == 0 {
        return (0, 0);
    }
    if bytes == 0 {
        // No size, no sampling probability to invert (it would scale the
        // objects to infinity, then i64::MAX, and overflow any sum): as is.
        return (i64::try_from(objects).unwrap_or(i64::MAX), 0);
    }
    #[allow(clippy::cast_precision_loss)]
    let (o, b, p) = (objects as f64, bytes as f64, period as f64);
    let scale = 1.0 / (1.0 - (-(b / o) / p).exp());
    #[allow(clippy::cast_possible_truncation)]
    ((o * scale).round() as i64, (b * scale).round() as i64)
}

/// The dump as a profile: the four Go sample types, unsampled when `scaled`
/// (raw sampled counts otherwise, for the text format), each sample labelled
/// with the mean object size (`bytes`).
fn to_profile(
    dump: &Dump,
    default_sample_type: Option<&'static str>,
    scaled: bool,
) -> StackProfile {
    let estimate = |objects: u64, bytes: u64| {
        if scaled {
            unsample(objects, bytes, dump.period)
        } else {
            (
                i64::try_from(objects).unwrap_or(i64::MAX),
                i64::try_from(bytes).unwrap_or(i64::MAX),
            )
        }
    };
    let samples = dump
        .stacks
        .iter()
        .filter_map(|s| {
            let (alloc_objects, alloc_bytes) = estimate(s.total_objects, s.total_bytes);
            let (live_objects, live_bytes) = estimate(s.live_objects, s.live_bytes);
            let values = vec![alloc_objects, alloc_bytes, live_objects, live_bytes];
            if values.iter().all(|&v| v == 0) {
                return None;
            }
            let (objects, bytes) = if s.live_objects > 0 {
                (s.live_objects, s.live_bytes)
            } else {
                (s.total_objects, s.total_bytes)
            };
            let size = i64::try_from(bytes / objects.max(1)).unwrap_or(i64::MAX);
            Some(Sample {
                pcs: s.pcs.clone(),
                values,
                labels: vec![Label::Num("bytes", size)],
            })
        })
        .collect();
    StackProfile {
        sample_types: SAMPLE_TYPES,
        period_type: PERIOD_TYPE,
        period: i64::try_from(dump.period).unwrap_or(i64::MAX),
        default_sample_type,
        time: SystemTime::now(),
        duration: std::time::Duration::ZERO,
        samples,
        leaf_trim: LeafTrim::Allocator,
        comments: Vec::new(),
    }
}

/// Dump jemalloc's profile now (blocking; call from a blocking thread).
fn dump() -> Result<Dump, Error> {
    let text = jemalloc::dump_text()?;
    parse_dump(&text).map_err(Error::Profiler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_and_allocs_share_one_slot() {
        for p in [&HEAP, &ALLOCS] {
            assert!(
                matches!(p.admission(), Admission::OneAtATime(slot) if std::ptr::eq(slot, &SLOT))
            );
        }
    }

    const DUMP: &str = "heap_v2/524288
  t*: 3: 17825792 [0: 0]
  t0: 3: 17825792 [0: 0]
@ 0x55d0c0a01234 0x55d0c0a05678 0x7f0000001000
  t*: 1: 16777216 [4: 67108864]
  t0: 1: 16777216 [4: 67108864]
@ 0x55d0c0a09999
  t*: 2: 1048576 [2: 1048576]
  t0: 2: 1048576 [2: 1048576]

MAPPED_LIBRARIES:
55d0c0a00000-55d0c0b00000 r-xp 00001000 08:01 1234 /bin/x
";

    #[test]
    fn parses_stacks_and_counts() {
        let dump = parse_dump(DUMP).expect("parses");
        assert_eq!(dump.period, 524_288);
        assert_eq!(
            dump.stacks[0],
            DumpStack {
                pcs: vec![0x55d0_c0a0_1233, 0x55d0_c0a0_5677, 0x7f00_0000_0fff],
                live_objects: 1,
                live_bytes: 16_777_216,
                total_objects: 4,
                total_bytes: 67_108_864,
            }
        );
        assert_eq!(dump.stacks.len(), 2);
        assert!(parse_dump("garbage").is_err());
    }

    #[test]
    fn unsampling_scales_small_objects_up_and_leaves_huge_ones() {
        // A 16 MiB object is always sampled at a 512 KiB period: no scaling.
        assert_eq!(unsample(1, 16 << 20, 512 << 10), (1, 16 << 20));
        // 2 sampled objects of 512 KiB stand for 2 / (1 - e^-1) ≈ 3.16 objects.
        let (objects, bytes) = unsample(2, 1 << 20, 512 << 10);
        assert_eq!(objects, 3);
        assert_eq!(bytes, 1_658_823);
        assert_eq!(unsample(0, 0, 512 << 10), (0, 0));
        // Zero bytes: the objects as they are, not i64::MAX.
        assert_eq!(unsample(3, 0, 512 << 10), (3, 0));
    }

    #[test]
    fn profile_has_go_heap_types_and_size_label() {
        let dump = parse_dump(DUMP).expect("parses");
        let p = to_profile(&dump, Some("alloc_space"), true);
        let raw = to_profile(&dump, None, false);
        assert_eq!(raw.samples[1].values, vec![2, 1_048_576, 2, 1_048_576]);
        assert_eq!(p.sample_types.len(), 4);
        assert_eq!(p.period, 524_288);
        assert_eq!(p.samples[0].values, vec![4, 67_108_864, 1, 16_777_216]);
        assert_eq!(p.samples[0].labels, vec![Label::Num("bytes", 16_777_216)]);
    }
}
