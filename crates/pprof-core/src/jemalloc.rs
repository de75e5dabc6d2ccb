//! The jemalloc glue: the global allocator with its profiler on
//! ([`jemalloc_heap_profiling!`](crate::jemalloc_heap_profiling)), and the
//! few `mallctl` calls the profiles need (dump the heap profile, pause
//! sampling on a thread, purge free pages, read statistics). Every
//! `unsafe` line outside `signals/` is here. Without the
//! `tikv-jemallocator` feature the same functions answer that heap
//! profiling is not compiled in.
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

use crate::error::Error;

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

/// Run `work` with jemalloc's sampling paused on this thread, so that the
/// profiler's own tables (the CPU sampler's ~80 MiB collector, the
/// symbolizer's debug info) do not crowd the heap profile the user came for.
/// Their size still shows in the process RSS and in `debug=1`'s statistics.
/// Sampling is restored even if `work` panics.
pub(crate) fn unsampled<T>(work: impl FnOnce() -> T) -> T {
    with_sampling_off(imp::set_thread_sampling, work)
}

/// Run `work` with `set(false)`, then `set` back to what it was, also when
/// `work` panics (a guard restores it while unwinding).
fn with_sampling_off<T>(set: impl Fn(bool) -> Option<bool>, work: impl FnOnce() -> T) -> T {
    struct Restore<F: Fn(bool) -> Option<bool>> {
        set: F,
        previous: Option<bool>,
    }
    impl<F: Fn(bool) -> Option<bool>> Drop for Restore<F> {
        fn drop(&mut self) {
            if let Some(previous) = self.previous {
                (self.set)(previous);
            }
        }
    }
    let previous = set(false);
    let _restore = Restore { set, previous };
    work()
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

/// jemalloc's profile dump (`prof.dump`) as text: blocking, one at a time.
pub(crate) fn dump_text() -> Result<String, Error> {
    imp::dump_text()
}

#[cfg(feature = "tikv-jemallocator")]
mod imp {
    use std::ffi::CString;
    use std::fs::DirBuilder;
    use std::os::unix::fs::DirBuilderExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, PoisonError};
    use std::time::{SystemTime, UNIX_EPOCH};

    use tikv_jemalloc_ctl::{epoch, profiling, raw, stats as jstats};

    use crate::error::Error;

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

    /// A directory only this process's user can enter, with a name nobody
    /// else chose: jemalloc opens the dump file with `O_CREAT|O_TRUNC`, so
    /// it must not be somewhere another user can plant a link, and the dump
    /// (addresses) must not be readable by others. Made on the first dump,
    /// and again (under a new name) when it is gone or no longer ours, as
    /// when a tmp cleaner (systemd-tmpfiles, tmpreaper) removed it. Call
    /// with the dump lock held.
    fn private_dir() -> Result<PathBuf, Error> {
        static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
        let mut dir = DIR.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = dir.as_ref()
            && still_private(existing)
        {
            return Ok(existing.clone());
        }
        let made = make_private_dir().map_err(|e| {
            Error::Profiler(format!(
                "cannot create a private directory for heap dumps: {e}"
            ))
        })?;
        *dir = Some(made.clone());
        Ok(made)
    }

    /// Still a directory (not a link) of ours that only we may enter.
    fn still_private(dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        #[allow(unsafe_code)]
        let me = unsafe { libc::geteuid() };
        std::fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o777 == 0o700)
    }

    fn make_private_dir() -> Result<PathBuf, String> {
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
    use crate::error::Error;

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
    use std::cell::Cell;

    use super::with_sampling_off;

    #[test]
    fn sampling_is_restored_when_the_work_panics() {
        let active = Cell::new(true);
        let set = |on: bool| Some(active.replace(on));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_sampling_off(set, || {
                assert!(!active.get(), "off while the work runs");
                panic!("the work panics");
            })
        }));
        assert!(caught.is_err());
        assert!(active.get(), "sampling stayed off after a panic");
        assert_eq!(with_sampling_off(set, || 7), 7);
        assert!(active.get());
    }
}
