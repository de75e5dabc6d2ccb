//! The one symbolization service: addresses in, functions, files and lines
//! out. Cached and bounded; only ever called from blocking threads, never
//! from a signal handler.
//!
//! A lookup reads the running images' files in place (mapped, never
//! copied) and parses only what the asked addresses need (see [`dwarf`]),
//! so its transient memory grows with the addresses asked, not with the
//! size of the binary. The cache lock is held only to read and to insert
//! answers, never while a lookup parses: a `/symbol` request or a large
//! profile's symbolization never stalls another profile's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

mod dwarf;
mod elf;
mod line;
mod maps;
mod modules;
mod names;

pub(crate) use maps::{Mapping, mappings};
pub(crate) use names::{clean_name, demangle};

use modules::Table;

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

/// Addresses the cache holds before it is emptied and starts again.
const MAX_CACHED_ADDRESSES: usize = 1 << 16;

/// About how many bytes the cache may hold before it is emptied and starts
/// again: release builds' names are long (generic paths, mangled twice, a
/// few inlined frames an address), some 2 KiB an address, so the address
/// bound alone would allow well over 100 MiB.
const MAX_CACHED_BYTES: usize = 16 << 20;

#[derive(Default)]
struct Cache {
    frames: HashMap<u64, Arc<[Frame]>>,
    strings: HashSet<Arc<str>>,
    /// What `frames` and `strings` hold, roughly (their heap bytes).
    bytes: usize,
}

impl Cache {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        let owned: Arc<str> = Arc::from(s);
        self.strings.insert(owned.clone());
        // The text, the `Arc` counts and the set's slot.
        self.bytes += s.len() + 16 + 24;
        owned
    }

    fn insert(&mut self, pc: u64, frames: Arc<[Frame]>) {
        // The frames, the `Arc` counts and the map's slot.
        self.bytes += frames.len() * std::mem::size_of::<Frame>() + 16 + 32;
        self.frames.insert(pc, frames);
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.strings.clear();
        self.bytes = 0;
    }
}

/// The images' table and when a lookup last used it.
#[derive(Default)]
struct Images {
    table: Option<Arc<Table>>,
    used: Option<Instant>,
}

/// How long the images' table (the file mappings: address space and page
/// cache, no anonymous memory) is kept after its last use.
const IDLE: Duration = Duration::from_secs(10);

/// One background thread per process that drops the images' table once
/// it has been idle for [`IDLE`] (and `backtrace`'s own parsed debug info,
/// which tokio's task dumps fill); our address cache keeps the answers.
fn start_janitor() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("pprof-symbols".to_owned())
            .spawn(|| {
                loop {
                    std::thread::sleep(IDLE / 2);
                    let mut images = symbolizer()
                        .images
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if images.used.is_some_and(|t| t.elapsed() >= IDLE) {
                        let table = images.table.take();
                        images.used = None;
                        drop(images);
                        drop(table);
                        backtrace::clear_symbol_cache();
                        crate::jemalloc::release_free_memory();
                    }
                }
            });
        // Without the thread the table simply stays.
        drop(spawned);
    });
}

/// A frame as a lookup finds it, before its strings are interned.
#[derive(Debug, PartialEq, Eq)]
struct Named {
    name: String,
    system: String,
    file: String,
    line: u32,
}

/// Process-wide symbolizer (debug info is per process, so is its cache).
pub(crate) struct Symbolizer {
    cache: Mutex<Cache>,
    images: Mutex<Images>,
}

pub(crate) fn symbolizer() -> &'static Symbolizer {
    static SYMBOLIZER: OnceLock<Symbolizer> = OnceLock::new();
    SYMBOLIZER.get_or_init(|| Symbolizer {
        cache: Mutex::new(Cache::default()),
        images: Mutex::new(Images::default()),
    })
}

#[cfg(test)]
thread_local! {
    /// Runs on this thread when a lookup starts, with no lock held.
    static ON_LOOKUP: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

impl Symbolizer {
    /// Frames at each address (innermost first); an address that resolves to
    /// nothing maps to an empty slice.
    pub(crate) fn resolve_all(
        &self,
        pcs: impl IntoIterator<Item = u64>,
    ) -> HashMap<u64, Arc<[Frame]>> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            for pc in pcs {
                if out.contains_key(&pc) {
                    continue;
                }
                match cache.frames.get(&pc) {
                    Some(found) => {
                        out.insert(pc, found.clone());
                    }
                    None => missing.push(pc),
                }
            }
        }
        if missing.is_empty() {
            return out;
        }
        missing.sort_unstable();
        missing.dedup();
        // The debug-info reader's and the cache's allocations are ours, not
        // the user's: kept out of the heap profile.
        crate::jemalloc::unsampled(|| {
            let resolved = self.lookup(&missing);
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            // Checked at each insert, so no batch leaves it over its bounds:
            // full, it starts again; a batch bigger than the bounds is
            // answered whole but cached only until they are reached again.
            let mut emptied = false;
            for (pc, raw) in resolved {
                let has_room = |cache: &Cache| {
                    cache.frames.len() < MAX_CACHED_ADDRESSES && cache.bytes < MAX_CACHED_BYTES
                };
                if !has_room(&cache) && !emptied {
                    cache.clear();
                    emptied = true;
                }
                let frames: Arc<[Frame]> = if has_room(&cache) {
                    let frames: Arc<[Frame]> = raw
                        .iter()
                        .map(|named| Frame {
                            name: cache.intern(&named.name),
                            system_name: cache.intern(&named.system),
                            file: cache.intern(&named.file),
                            line: named.line,
                        })
                        .collect();
                    cache.insert(pc, frames.clone());
                    frames
                } else {
                    raw.iter()
                        .map(|named| Frame {
                            name: named.name.as_str().into(),
                            system_name: named.system.as_str().into(),
                            file: named.file.as_str().into(),
                            line: named.line,
                        })
                        .collect()
                };
                out.insert(pc, frames);
            }
        });
        start_janitor();
        out
    }

    /// Resolve `pcs` (sorted, unique) with no cache lock held: names,
    /// system names, files and lines, innermost frame first.
    fn lookup(&self, pcs: &[u64]) -> Vec<(u64, Vec<Named>)> {
        #[cfg(test)]
        ON_LOOKUP.with(|hook| {
            if let Some(hook) = hook.borrow_mut().as_mut() {
                hook();
            }
        });
        let table = self.table(pcs);
        let mut raw = table.resolve(pcs);
        pcs.iter()
            .map(|pc| {
                let frames = raw
                    .remove(pc)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|frame| {
                        let system = frame.name.filter(|n| !n.is_empty())?;
                        let name = clean_name(&system);
                        let mangled = demangle(&system) != system;
                        Some(Named {
                            name,
                            system: if mangled { system } else { String::new() },
                            file: frame.file,
                            line: frame.line,
                        })
                    })
                    .collect();
                (*pc, frames)
            })
            .collect()
    }

    /// The images' table, reloaded when an address lies in none of its
    /// images and the loader has loaded or unloaded a library since (an
    /// address in no image at all, as `/symbol` may be asked, costs no
    /// reload).
    fn table(&self, pcs: &[u64]) -> Arc<Table> {
        let mut images = self.images.lock().unwrap_or_else(PoisonError::into_inner);
        images.used = Some(Instant::now());
        match &images.table {
            Some(table) if (table.covers(pcs) || !table.is_stale()) && !table.files_changed() => {
                table.clone()
            }
            _ => {
                let table = Arc::new(Table::load());
                images.table = Some(table.clone());
                table
            }
        }
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// The return address of this function's call, minus one: an address
    /// inside the caller's code.
    #[inline(never)]
    fn caller_pc() -> u64 {
        let this = caller_pc as fn() -> u64 as usize;
        let mut seen_this = false;
        let mut pc = 1;
        backtrace::trace(|frame| {
            if seen_this {
                pc = frame.ip() as usize as u64;
                return false;
            }
            seen_this = frame.symbol_address() as usize == this;
            true
        });
        std::hint::black_box(pc - 1)
    }

    #[test]
    fn a_batch_bigger_than_the_cache_leaves_it_within_its_bounds() {
        // A symbolizer of its own: the process-wide one serves other tests.
        let own = Symbolizer {
            cache: Mutex::new(Cache::default()),
            images: Mutex::new(Images::default()),
        };
        // Addresses in no image resolve to nothing, quickly, and are cached
        // like any other.
        let batch = (0..(MAX_CACHED_ADDRESSES as u64 + 5_000)).map(|i| 0x1000 + i);
        let answered = own.resolve_all(batch);
        assert_eq!(
            answered.len(),
            MAX_CACHED_ADDRESSES + 5_000,
            "every address answered"
        );
        assert!(
            own.cached_addresses() <= MAX_CACHED_ADDRESSES,
            "{} cached",
            own.cached_addresses()
        );
        let more = own.resolve_all((0..10u64).map(|i| 0x10_0000_0000 + i));
        assert_eq!(more.len(), 10);
        assert!(own.cached_addresses() <= MAX_CACHED_ADDRESSES);
    }

    #[inline(never)]
    fn named_function() -> u64 {
        caller_pc()
    }

    #[inline(never)]
    fn asked_once() -> u64 {
        caller_pc()
    }

    #[inline(always)]
    fn inlined_leaf() -> u64 {
        caller_pc()
    }

    #[inline(never)]
    fn inlining_caller() -> (u64, u32) {
        let line = line!() + 1;
        let pc = inlined_leaf();
        (std::hint::black_box(pc), line)
    }

    #[test]
    fn the_cache_counts_its_bytes() {
        let mut cache = Cache::default();
        let long = "x".repeat(1000);
        let a = cache.intern(&long);
        let after_one = cache.bytes;
        let b = cache.intern(&long);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.bytes, after_one, "a string is counted once");
        assert!(after_one >= 1000);
        let frame = Frame {
            name: a,
            system_name: b,
            file: cache.intern(""),
            line: 1,
        };
        cache.insert(1, vec![frame.clone(), frame].into());
        assert!(cache.bytes > after_one + 2 * std::mem::size_of::<Frame>());
        cache.clear();
        assert_eq!(
            (cache.bytes, cache.frames.len(), cache.strings.len()),
            (0, 0, 0)
        );
    }

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

    #[test]
    fn own_functions_resolve_to_their_full_name_file_and_line() {
        let pc = named_function();
        let frames = symbolizer().resolve_all([pc]);
        let frames = &frames[&pc];
        assert_eq!(
            frames.first().map(|f| &*f.name),
            Some("pprof_core::symbols::tests::named_function"),
            "{frames:?}"
        );
        assert!(frames[0].file.ends_with("symbols/mod.rs"), "{frames:?}");
        assert!(frames[0].line > 0, "{frames:?}");
        assert!(
            frames[0].system_name.starts_with("_R") || frames[0].system_name.starts_with("_ZN")
        );
    }

    #[test]
    fn inlined_frames_keep_full_names_files_and_lines() {
        let (pc, call_line) = inlining_caller();
        let frames = symbolizer().resolve_all([pc]);
        let frames = &frames[&pc];
        let names: Vec<&str> = frames.iter().map(|f| &*f.name).collect();
        assert_eq!(
            names,
            [
                "pprof_core::symbols::tests::inlined_leaf",
                "pprof_core::symbols::tests::inlining_caller"
            ],
            "{frames:?}"
        );
        assert!(
            frames.iter().all(|f| f.file.ends_with("symbols/mod.rs")),
            "{frames:?}"
        );
        assert!(frames[0].line > 0, "{frames:?}");
        assert_eq!(
            frames[1].line, call_line,
            "the outer frame is at the call site: {frames:?}"
        );
    }

    #[test]
    fn libc_and_the_vdso_have_names() {
        let images = crate::signals::images();
        let in_libc = |pc: u64| {
            images
                .iter()
                .find(|i| maps::image_holds(i, pc, pc + 1))
                .is_some_and(|i| i.name.contains("libc.so"))
        };
        // A few bytes into each function, as a sample's address would be.
        let getpid: unsafe extern "C" fn() -> libc::pid_t = libc::getpid;
        let epoll_wait: unsafe extern "C" fn(
            libc::c_int,
            *mut libc::epoll_event,
            libc::c_int,
            libc::c_int,
        ) -> libc::c_int = libc::epoll_wait;
        let recv: unsafe extern "C" fn(
            libc::c_int,
            *mut libc::c_void,
            libc::size_t,
            libc::c_int,
        ) -> libc::ssize_t = libc::recv;
        let in_libc_pcs = [
            (getpid as usize as u64 + 1, "getpid"),
            (epoll_wait as usize as u64 + 4, "epoll_wait"),
            (recv as usize as u64 + 4, "recv"),
        ];
        let vdso_pcs: Vec<u64> = images
            .iter()
            .filter(|i| i.is_vdso)
            .flat_map(|i| {
                i.segments
                    .iter()
                    .filter(|s| s.executable)
                    .map(|s| i.bias + s.vaddr + s.memsz / 2)
            })
            .collect();
        let resolved = symbolizer().resolve_all(
            in_libc_pcs
                .iter()
                .map(|(pc, _)| *pc)
                .chain(vdso_pcs.iter().copied()),
        );
        let names = |pc: &u64| {
            resolved[pc]
                .iter()
                .map(|f| f.name.to_string())
                .collect::<Vec<_>>()
        };
        for (pc, name) in &in_libc_pcs {
            assert!(in_libc(*pc), "{name} at {pc:#x} is not in libc");
            assert!(
                names(pc).iter().any(|n| n.contains(name)),
                "{name}: {:?}",
                names(pc)
            );
        }
        for pc in &vdso_pcs {
            assert!(!names(pc).is_empty(), "vDSO address {pc:#x} unnamed");
        }
    }

    /// A lookup that has released the cache lock, held mid-way by a hook,
    /// while another thread reads a cached answer: the reader finishes
    /// (and the lock is free) before the held lookup may go on.
    #[test]
    fn a_lookup_in_progress_does_not_block_cached_answers() {
        let cached = named_function();
        assert!(!symbolizer().resolve_all([cached])[&cached].is_empty());
        let (started_tx, started_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let slow = std::thread::spawn(move || {
            ON_LOOKUP.with(|hook| {
                *hook.borrow_mut() = Some(Box::new(move || {
                    let _ = started_tx.send(());
                    let _ = go_rx.recv();
                }));
            });
            // Asked by no other test: it must be looked up.
            let pc = asked_once();
            let frames = symbolizer()
                .resolve_all([pc])
                .remove(&pc)
                .unwrap_or_default();
            ON_LOOKUP.with(|hook| hook.borrow_mut().take());
            frames
        });
        started_rx.recv().expect("the lookup started");
        assert!(
            symbolizer().cache.try_lock().is_ok(),
            "the cache lock is held while a lookup runs"
        );
        let (answer_tx, answer_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = answer_tx.send(symbolizer().resolve_all([cached]));
        });
        // Not a timing threshold: only how long to wait before calling
        // it a deadlock instead of hanging the test run.
        let answer = answer_rx.recv_timeout(Duration::from_secs(120));
        go_tx.send(()).expect("the held lookup is waiting");
        let held = slow.join().expect("the held lookup finished");
        let answer = answer.expect("a cached answer was blocked by a lookup in progress");
        assert!(!answer[&cached].is_empty());
        assert!(!held.is_empty(), "the held lookup still resolved");
    }
}

/// By hand: `cargo test -p pprof-core --lib -- --ignored agrees_with_backtrace --nocapture`
/// looks up every function of the test binary and of its libraries (the
/// middle of each) both here and through `backtrace` (the symbolizer this
/// one replaced) and prints where they differ. Not run by default: it costs
/// `backtrace`'s ~50 MiB parse.
#[cfg(test)]
mod compare_with_backtrace {
    use super::*;

    fn through_backtrace(pc: u64) -> Vec<Named> {
        let mut raw = Vec::new();
        let address = usize::try_from(pc.saturating_add(1)).unwrap_or(usize::MAX);
        backtrace::resolve(address as *mut std::ffi::c_void, |symbol| {
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
            .map(|(system, file, line)| Named {
                name: clean_name(&system),
                system: if demangle(&system) == system {
                    String::new()
                } else {
                    system
                },
                file,
                line,
            })
            .collect()
    }

    #[test]
    #[ignore = "by hand: compares with backtrace, which costs ~50 MiB"]
    fn agrees_with_backtrace() {
        let mut pcs = Vec::new();
        for image in crate::signals::images() {
            let bytes = if image.is_vdso {
                crate::signals::vdso_bytes().unwrap_or_default()
            } else if image.name.is_empty() {
                std::fs::read("/proc/self/exe").unwrap_or_default()
            } else {
                std::fs::read(&image.name).unwrap_or_default()
            };
            if let Some(elf) = elf::ElfFile::parse(&bytes) {
                pcs.extend(
                    elf.function_midpoints()
                        .into_iter()
                        .map(|a| a.wrapping_add(image.bias)),
                );
            }
        }
        pcs.sort_unstable();
        pcs.dedup();
        let started = Instant::now();
        let ours = symbolizer().lookup(&pcs);
        eprintln!("ours: {} addresses in {:?}", pcs.len(), started.elapsed());
        let started = Instant::now();
        let theirs: Vec<_> = pcs.iter().map(|pc| through_backtrace(*pc)).collect();
        eprintln!("backtrace: {:?}", started.elapsed());
        let mut differ = 0;
        for ((pc, ours), theirs) in ours.iter().zip(&theirs) {
            if ours != theirs {
                differ += 1;
                eprintln!("{pc:#x}\n  ours      {ours:?}\n  backtrace {theirs:?}");
            }
        }
        eprintln!("{differ} of {} differ", pcs.len());
    }
}
