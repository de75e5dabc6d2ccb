//! Heap and allocation profiles from jemalloc's own sampling profiler.
//!
//! jemalloc samples one allocation every 2^`lg_prof_sample` bytes on average
//! and, on `prof.dump`, writes every sampled stack with its live and
//! (with `prof_accum`) cumulative counts. We dump to a private file, parse
//! it, scale the sampled counts up to estimates of the true ones (as
//! jemalloc's `jeprof` does) and hand the stacks to the common encoder.
//!
//! Turn it on in the binary with one line at the crate root:
//!
//! ```no_run
//! pprof_core::jemalloc_heap_profiling!();
//! # fn main() {}
//! ```
//!
//! That installs jemalloc as the global allocator and exports jemalloc's
//! `malloc_conf` with `prof:true,prof_active:true,lg_prof_sample:19,prof_accum:true`
//! (one sample per 512 KiB allocated, like Go's default `MemProfileRate`).
//! Pass your own options as a string literal to change them:
//! `pprof_core::jemalloc_heap_profiling!("prof:true,prof_active:true,lg_prof_sample:17,prof_accum:true");`.
//! The environment variable `_RJEM_MALLOC_CONF` overrides both at start-up.

use std::time::SystemTime;

use crate::Error;
use crate::profile::{Label, LeafTrim, Sample, StackProfile, ValueType, vt};

/// The global allocator [`jemalloc_heap_profiling!`](crate::jemalloc_heap_profiling) installs.
#[cfg(feature = "tikv-jemallocator")]
pub use tikv_jemallocator::Jemalloc;

/// jemalloc options set by [`jemalloc_heap_profiling!`](crate::jemalloc_heap_profiling) when given none.
pub const DEFAULT_MALLOC_CONF: &str =
    "prof:true,prof_active:true,lg_prof_sample:19,prof_accum:true";

/// Install jemalloc as the global allocator with its heap profiler on.
///
/// Put it once, at the crate root of the binary (not of a library). Without
/// arguments it uses [`DEFAULT_MALLOC_CONF`]; a string literal replaces those
/// options. See the [`heap`](crate::heap) module.
#[cfg(feature = "tikv-jemallocator")]
#[macro_export]
macro_rules! jemalloc_heap_profiling {
    () => {
        $crate::jemalloc_heap_profiling!(
            "prof:true,prof_active:true,lg_prof_sample:19,prof_accum:true"
        );
    };
    ($malloc_conf:literal) => {
        #[global_allocator]
        static PPROF_CORE_GLOBAL_ALLOCATOR: $crate::heap::Jemalloc = $crate::heap::Jemalloc;

        // jemalloc reads this `const char *` before `main`; the name is the
        // prefixed one `tikv-jemalloc-sys` builds jemalloc with.
        // SAFETY: exactly one such symbol may exist in a binary (this macro
        // goes once, in the binary); its value is a thin pointer to static,
        // NUL-terminated bytes, which is what jemalloc's `malloc_conf` is.
        #[allow(unsafe_code)]
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static PPROF_CORE_MALLOC_CONF: &u8 = {
            const CONF: &[u8] = concat!($malloc_conf, "\0").as_bytes();
            &CONF[0]
        };
    };
}

pub(crate) const SAMPLE_TYPES: &[ValueType] = &[
    vt("alloc_objects", "count"),
    vt("alloc_space", "bytes"),
    vt("inuse_objects", "count"),
    vt("inuse_space", "bytes"),
];

/// One sampled stack of a jemalloc dump, counts as sampled (not scaled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DumpStack {
    /// Lookup addresses (return address minus one), leaf first.
    pub(crate) pcs: Vec<u64>,
    pub(crate) live_objects: u64,
    pub(crate) live_bytes: u64,
    pub(crate) total_objects: u64,
    pub(crate) total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dump {
    /// Mean bytes between samples (2^lg_prof_sample).
    pub(crate) period: u64,
    pub(crate) stacks: Vec<DumpStack>,
}

/// Parse jemalloc's `heap_v2` dump format.
pub(crate) fn parse_dump(text: &str) -> Result<Dump, String> {
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
pub(crate) fn unsample(objects: u64, bytes: u64, period: u64) -> (i64, i64) {
    if objects == 0 || period == 0 {
        return (0, 0);
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
pub(crate) fn to_profile(
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
        period_type: vt("space", "bytes"),
        period: i64::try_from(dump.period).unwrap_or(i64::MAX),
        default_sample_type,
        time: SystemTime::now(),
        duration: std::time::Duration::ZERO,
        samples,
        leaf_trim: LeafTrim::Allocator,
    }
}

/// Run `work` with jemalloc's sampling paused on this thread, so that the
/// profiler's own tables (the CPU sampler's ~80 MiB collector, the
/// symbolizer's debug info) do not crowd the heap profile the user came for.
/// Their size still shows in the process RSS and in `debug=1`'s statistics.
pub(crate) fn unsampled<T>(work: impl FnOnce() -> T) -> T {
    let previous = imp::set_thread_sampling(false);
    let out = work();
    if let Some(previous) = previous {
        imp::set_thread_sampling(previous);
    }
    out
}

/// Hand jemalloc's free dirty pages back to the OS now (like Go's
/// `debug.FreeOSMemory`), instead of after its decay time; used after the
/// profilers free their large tables. A no-op without jemalloc.
pub(crate) fn release_free_memory() {
    imp::purge_all_arenas();
}

/// Allocator statistics for the text format's trailing block.
pub(crate) fn stats() -> Vec<(&'static str, u64)> {
    imp::stats()
}

/// `Ok` when jemalloc's heap profiler is on in this process.
pub(crate) fn check_enabled() -> Result<(), Error> {
    imp::check_enabled()
}

/// The right to run one heap or allocs request's dumps; held while that
/// request works (not while a delta profile waits), freed on drop.
#[derive(Debug)]
pub(crate) struct DumpSlot {
    _permit: tokio::sync::SemaphorePermit<'static>,
}

static DUMP_SLOT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The dump slot if it is free; [`Error::HeapDumpBusy`] (409) if another
/// request holds it. A second request is refused rather than queued, so
/// that a burst of heap requests cannot pile up dumps.
pub(crate) fn claim_dump_slot() -> Result<DumpSlot, Error> {
    DUMP_SLOT
        .try_acquire()
        .map(|permit| DumpSlot { _permit: permit })
        .map_err(|_| Error::HeapDumpBusy)
}

/// The dump slot once it is free: for work already admitted (the second
/// snapshot of a delta profile).
pub(crate) async fn wait_for_dump_slot() -> DumpSlot {
    loop {
        // The semaphore is never closed; should it be, try again.
        if let Ok(permit) = DUMP_SLOT.acquire().await {
            return DumpSlot { _permit: permit };
        }
        tokio::task::yield_now().await;
    }
}

/// Dump jemalloc's profile now (blocking; call from a blocking thread).
pub(crate) fn dump() -> Result<Dump, Error> {
    let text = imp::dump_text()?;
    parse_dump(&text).map_err(Error::Profiler)
}

#[cfg(feature = "tikv-jemallocator")]
mod imp {
    use std::ffi::CString;
    use std::fs::DirBuilder;
    use std::os::unix::fs::DirBuilderExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock, PoisonError};
    use std::time::{SystemTime, UNIX_EPOCH};

    use tikv_jemalloc_ctl::{epoch, profiling, raw, stats as jstats};

    use crate::Error;

    /// jemalloc writes one dump at a time anyway; this keeps our files apart
    /// (requests are already one at a time through the dump slot).
    static DUMP_LOCK: Mutex<()> = Mutex::new(());

    pub(super) fn check_enabled() -> Result<(), Error> {
        if profiling::prof::read().unwrap_or(false) {
            Ok(())
        } else {
            Err(Error::HeapProfilingDisabled)
        }
    }

    /// A directory only this process's user can enter, made once per process
    /// with a name nobody else chose: jemalloc opens the dump file with
    /// `O_CREAT|O_TRUNC`, so it must not be somewhere another user can plant
    /// a link, and the dump (addresses) must not be readable by others.
    fn private_dir() -> Result<&'static Path, Error> {
        static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let made = DIR.get_or_init(|| {
            let base = std::env::temp_dir();
            let mut last = String::new();
            for attempt in 0..16u32 {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let dir = base.join(format!(
                    "pprof-core-{}-{nanos:08x}{attempt}",
                    std::process::id()
                ));
                match DirBuilder::new().mode(0o700).create(&dir) {
                    Ok(()) => return Ok(dir),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(last)
        });
        made.as_deref().map_err(|e| {
            Error::Profiler(format!(
                "cannot create a private directory for heap dumps: {e}"
            ))
        })
    }

    pub(super) fn dump_text() -> Result<String, Error> {
        check_enabled()?;
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let _one_at_a_time = DUMP_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let path =
            private_dir()?.join(format!("{}.heap", SEQUENCE.fetch_add(1, Ordering::Relaxed)));
        let c_path = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| Error::Profiler("temporary path contains a NUL byte".to_owned()))?;
        // SAFETY: `prof.dump` takes a `const char *` file name; `c_path` is a
        // valid NUL-terminated string that outlives the call, and jemalloc
        // only reads it during the call.
        #[allow(unsafe_code)]
        let written = unsafe { raw::write(b"prof.dump\0", c_path.as_ptr()) };
        let text = std::fs::read_to_string(&path);
        let _ = std::fs::remove_file(&path);
        written.map_err(|e| Error::Profiler(format!("jemalloc prof.dump failed: {e}")))?;
        text.map_err(|e| Error::Profiler(format!("could not read jemalloc's dump: {e}")))
    }

    /// Set `thread.prof.active`; the previous value, or `None` when heap
    /// profiling is off (the control then does not exist).
    pub(super) fn set_thread_sampling(active: bool) -> Option<bool> {
        // SAFETY: `thread.prof.active` is a `bool` read-write control; the
        // value type matches and jemalloc copies it during the call.
        #[allow(unsafe_code)]
        let previous = unsafe { raw::update(b"thread.prof.active\0", active) };
        previous.ok()
    }

    pub(super) fn purge_all_arenas() {
        // `MALLCTL_ARENAS_ALL` (4096) addresses every arena at once.
        const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
        // SAFETY: `arena.<i>.purge` takes no input and gives no output, so
        // every pointer is null and both lengths are zero; the name is a
        // NUL-terminated static string.
        #[allow(unsafe_code)]
        unsafe {
            tikv_jemalloc_sys::mallctl(
                PURGE_ALL.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
    }

    pub(super) fn stats() -> Vec<(&'static str, u64)> {
        let _ = epoch::advance();
        let read = |r: tikv_jemalloc_ctl::Result<usize>| r.map_or(0, |v| v as u64);
        vec![
            ("allocated", read(jstats::allocated::read())),
            ("active", read(jstats::active::read())),
            ("metadata", read(jstats::metadata::read())),
            ("resident", read(jstats::resident::read())),
            ("mapped", read(jstats::mapped::read())),
            ("retained", read(jstats::retained::read())),
        ]
    }
}

#[cfg(not(feature = "tikv-jemallocator"))]
mod imp {
    use crate::Error;

    pub(super) fn check_enabled() -> Result<(), Error> {
        Err(Error::FeatureDisabled {
            profile: "heap",
            feature: "tikv-jemallocator",
        })
    }

    pub(super) fn dump_text() -> Result<String, Error> {
        check_enabled().map(|()| String::new())
    }

    pub(super) fn stats() -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    pub(super) fn set_thread_sampling(_: bool) -> Option<bool> {
        None
    }

    pub(super) fn purge_all_arenas() {}
}

#[cfg(test)]
mod tests {
    use super::*;

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
