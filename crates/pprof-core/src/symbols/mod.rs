//! The one symbolization service: addresses in, functions, files and lines
//! out. Cached and bounded; only ever called from blocking threads, never
//! from a signal handler.

use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

mod maps;
mod names;

pub(crate) use maps::{Mapping, mappings};
pub(crate) use names::{clean_name, demangle};

/// One function frame at an address. Inlined calls give several frames for
/// one address, innermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Demangled, without hash, with `<T as Trait>::f` rewritten to `T::f`.
    pub(crate) name: Arc<str>,
    /// The symbol as the linker sees it (mangled); empty when the debug info
    /// gave only a plain name. (pprof strips `<…>` from a name equal to its
    /// system name, so a plain name must not be repeated here.)
    pub(crate) system_name: Arc<str>,
    /// Source path, empty when unknown.
    pub(crate) file: Arc<str>,
    /// Source line, 0 when unknown.
    pub(crate) line: u32,
}

/// Addresses the cache holds before it is emptied and starts again; keeps
/// the cache itself to a few MiB whatever the process does.
const MAX_CACHED_ADDRESSES: usize = 1 << 16;

#[derive(Default)]
struct Cache {
    frames: HashMap<u64, Arc<[Frame]>>,
    strings: HashSet<Arc<str>>,
    /// When `backtrace`'s parsed debug info was last used, while it is held.
    debug_info_used: Option<Instant>,
}

/// How long `backtrace`'s parsed debug info (tens of MiB for a large binary)
/// is kept after its last use. Requests in a burst share one parse (~150 ms
/// in release); an idle process gives the memory back.
const DEBUG_INFO_IDLE: Duration = Duration::from_secs(10);

/// One background thread per process that drops the parsed debug info once
/// it has been idle for [`DEBUG_INFO_IDLE`]; our own address cache keeps
/// the answers.
fn start_debug_info_janitor() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("pprof-symbols".to_owned())
            .spawn(|| {
                loop {
                    std::thread::sleep(DEBUG_INFO_IDLE / 2);
                    let symbolizer = symbolizer();
                    let mut cache = symbolizer
                        .cache
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if cache
                        .debug_info_used
                        .is_some_and(|t| t.elapsed() >= DEBUG_INFO_IDLE)
                    {
                        backtrace::clear_symbol_cache();
                        cache.debug_info_used = None;
                        drop(cache);
                        crate::jemalloc::release_free_memory();
                    }
                }
            });
        // Without the thread the debug info simply stays cached.
        drop(spawned);
    });
}

impl Cache {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        let owned: Arc<str> = Arc::from(s);
        self.strings.insert(owned.clone());
        owned
    }
}

/// Process-wide symbolizer (debug info is per process, so is its cache).
pub(crate) struct Symbolizer {
    cache: Mutex<Cache>,
}

pub(crate) fn symbolizer() -> &'static Symbolizer {
    static SYMBOLIZER: OnceLock<Symbolizer> = OnceLock::new();
    SYMBOLIZER.get_or_init(|| Symbolizer {
        cache: Mutex::new(Cache::default()),
    })
}

impl Symbolizer {
    /// Frames at each address (innermost first); an address that resolves to
    /// nothing maps to an empty slice.
    pub(crate) fn resolve_all(
        &self,
        pcs: impl IntoIterator<Item = u64>,
    ) -> HashMap<u64, Arc<[Frame]>> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = HashMap::new();
        let mut read_debug_info = false;
        for pc in pcs {
            if out.contains_key(&pc) {
                continue;
            }
            let frames = match cache.frames.get(&pc) {
                Some(found) => found.clone(),
                None => {
                    // The debug-info reader's caches are ours, not the user's.
                    let frames = crate::jemalloc::unsampled(|| resolve_uncached(pc, &mut cache));
                    read_debug_info = true;
                    if cache.frames.len() >= MAX_CACHED_ADDRESSES {
                        cache.frames.clear();
                        cache.strings.clear();
                    }
                    cache.frames.insert(pc, frames.clone());
                    frames
                }
            };
            out.insert(pc, frames);
        }
        if read_debug_info {
            cache.debug_info_used = Some(Instant::now());
            drop(cache);
            start_debug_info_janitor();
        }
        out
    }

    /// Number of addresses cached now.
    pub(crate) fn cached_addresses(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .frames
            .len()
    }
}

fn resolve_uncached(pc: u64, cache: &mut Cache) -> Arc<[Frame]> {
    let mut raw = Vec::new();
    // `resolve` only reads debug info for the address; it never dereferences
    // it. It looks up `address - 1` (it expects return addresses), so hand it
    // `pc + 1` to look up exactly `pc`.
    let address = usize::try_from(pc.saturating_add(1)).unwrap_or(usize::MAX);
    backtrace::resolve(address as *mut c_void, |symbol| {
        let system = symbol
            .name()
            .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
            .unwrap_or_default();
        let file = symbol
            .filename()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        raw.push((system, file, symbol.lineno().unwrap_or(0)));
    });
    raw.into_iter()
        .filter(|(system, ..)| !system.is_empty())
        .map(|(system, file, line)| {
            let name = clean_name(&system);
            let mangled = demangle(&system) != system;
            Frame {
                name: cache.intern(&name),
                system_name: cache.intern(if mangled { &system } else { "" }),
                file: cache.intern(&file),
                line,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn known_function() -> u64 {
        let mut pc = 0;
        backtrace::trace(|frame| {
            pc = frame.ip() as usize as u64;
            false
        });
        std::hint::black_box(pc)
    }

    #[test]
    fn own_frames_resolve_with_file_and_line() {
        let pc = known_function();
        assert_ne!(pc, 0);
        let frames = symbolizer().resolve_all([pc - 1]);
        let names: Vec<_> = frames[&(pc - 1)]
            .iter()
            .map(|f| f.name.to_string())
            .collect();
        assert!(!names.is_empty(), "no frames at {pc:#x}");
        assert!(
            frames[&(pc - 1)]
                .iter()
                .any(|f| f.file.ends_with(".rs") && f.line > 0),
            "{:?}",
            frames[&(pc - 1)]
        );
    }
}
