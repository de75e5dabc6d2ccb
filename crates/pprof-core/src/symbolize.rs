//! The one symbolization service: addresses in, functions, files and lines
//! out. Cached and bounded; only ever called from blocking threads, never
//! from a signal handler.

use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

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
                        crate::heap::release_free_memory();
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
                    let frames = crate::heap::unsampled(|| resolve_uncached(pc, &mut cache));
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

/// A readable, pprof-safe name for a symbol: Rust names demangled without
/// their hash, and qualified paths (`<T as Trait>::f`, `<T>::f`) rewritten to
/// `T::f`, because pprof's shortener cuts whatever sits between `<` and `>`.
pub(crate) fn clean_name(symbol: &str) -> String {
    unqualify(&demangle(symbol))
}

/// The demangled Rust path without its hash; other symbols as they are.
pub(crate) fn demangle(symbol: &str) -> String {
    match rustc_demangle::try_demangle(symbol) {
        Ok(demangled) => format!("{demangled:#}"),
        Err(_) => symbol.to_owned(),
    }
}

/// Rewrite every qualified path `<Self as Trait>::x` or `<Self>::x` to
/// `Self::x`, recursively; generic arguments (`Vec<T>`, `f::<T>`) stay.
fn unqualify(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        // A qualified path starts an expression (not `Vec<` nor `f::<`) and
        // is followed by `::`.
        let starts_path =
            i == 0 || matches!(bytes[i - 1], b' ' | b'<' | b',' | b'(' | b'[' | b'&' | b'*');
        if bytes[i] == b'<'
            && starts_path
            && let Some(close) = matching_angle(name, i)
            && name[close + 1..].starts_with("::")
        {
            let inner = &name[i + 1..close];
            let self_type = split_top_level_as(inner).unwrap_or(inner);
            let self_type = self_type
                .trim_start_matches('&')
                .trim_start_matches("mut ")
                .trim_start_matches("dyn ");
            out.push_str(&unqualify(self_type));
            i = close + 1;
            continue;
        }
        let ch = name[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn matching_angle(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in s.bytes().enumerate().skip(open) {
        match b {
            b'<' => depth += 1,
            b'>' if i > 0 && s.as_bytes()[i - 1] == b'-' => {} // `->` in fn types
            b'>' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The part before a top-level ` as ` in `Self as Trait`.
fn split_top_level_as(inner: &str) -> Option<&str> {
    let mut depth = 0i32;
    let bytes = inner.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'<' | b'(' | b'[' => depth += 1,
            b'>' if i > 0 && bytes[i - 1] == b'-' => {} // `->` in fn types
            b'>' | b')' | b']' => depth -= 1,
            b' ' if depth == 0 && inner[i..].starts_with(" as ") => return Some(&inner[..i]),
            _ => {}
        }
    }
    None
}

/// One executable mapping of the process, from `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub(crate) start: u64,
    pub(crate) limit: u64,
    pub(crate) offset: u64,
    pub(crate) path: String,
    pub(crate) build_id: String,
}

/// The executable mappings of this process, the main executable's first.
pub(crate) fn mappings() -> Vec<Mapping> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let exe = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut found: Vec<Mapping> = maps.lines().filter_map(parse_maps_line).collect();
    // Stable: the main executable first, the rest in address order.
    found.sort_by_key(|m| m.path != exe);
    for m in &mut found {
        m.build_id = build_id(&m.path);
    }
    found
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.collect::<Vec<_>>().join(" ");
    if !perms.contains('x') || path.is_empty() {
        return None;
    }
    let (start, limit) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        limit: u64::from_str_radix(limit, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path,
        build_id: String::new(),
    })
}

/// The GNU build id of an ELF file as lowercase hex, or empty. Cached per path.
fn build_id(path: &str) -> String {
    static IDS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let ids = IDS.get_or_init(Default::default);
    let mut ids = ids.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(id) = ids.get(path) {
        return id.clone();
    }
    let id = if path.starts_with('/') {
        read_build_id(path).unwrap_or_default()
    } else {
        String::new()
    };
    ids.insert(path.to_owned(), id.clone());
    id
}

fn read_build_id(path: &str) -> Option<String> {
    const PT_NOTE: u32 = 4;
    const NT_GNU_BUILD_ID: u32 = 3;
    let mut file = File::open(path).ok()?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header).ok()?;
    // 64-bit little-endian ELF only; anything else simply has no id here.
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u32_at =
        |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
    let u64_at =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let phoff = u64_at(&header, 0x20);
    let phentsize = usize::from(u16_at(&header, 0x36));
    let phnum = usize::from(u16_at(&header, 0x38));
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let mut phdrs = vec![0u8; phentsize * phnum];
    file.seek(SeekFrom::Start(phoff)).ok()?;
    file.read_exact(&mut phdrs).ok()?;
    for ph in phdrs.chunks_exact(phentsize) {
        if u32_at(ph, 0) != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(ph, 8), u64_at(ph, 32).min(1 << 16));
        let mut notes = vec![0u8; usize::try_from(size).ok()?];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut notes).ok()?;
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let namesz = u32_at(&notes, at) as usize;
            let descsz = u32_at(&notes, at + 4) as usize;
            let kind = u32_at(&notes, at + 8);
            let name_at = at + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let end = desc_at + descsz.div_ceil(4) * 4;
            if desc_at + descsz > notes.len() {
                break;
            }
            if kind == NT_GNU_BUILD_ID && notes[name_at..name_at + namesz] == *b"GNU\0" {
                let desc = &notes[desc_at..desc_at + descsz];
                return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
            }
            at = end;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_names_lose_hash_and_qualified_paths() {
        assert_eq!(
            clean_name("_ZN8practice5Tiger3eat17h0123456789abcdefE"),
            "practice::Tiger::eat"
        );
        assert_eq!(
            unqualify("<practice::Tiger as practice::Animal>::eat"),
            "practice::Tiger::eat"
        );
        assert_eq!(
            unqualify("<std::sync::Mutex<T>>::lock"),
            "std::sync::Mutex<T>::lock"
        );
        assert_eq!(
            unqualify("<&mut <a::B as c::D>::E as f::G>::h"),
            "a::B::E::h"
        );
        assert_eq!(
            unqualify("core::ptr::drop_in_place<alloc::vec::Vec<u8>>"),
            "core::ptr::drop_in_place<alloc::vec::Vec<u8>>"
        );
        assert_eq!(
            unqualify("<fn() -> u8 as core::ops::FnOnce<()>>::call_once"),
            "fn() -> u8::call_once"
        );
        assert_eq!(
            unqualify(
                "core::option::Option<&str>::map::<alloc::boxed::Box<str>, <alloc::boxed::Box<str>>::from>"
            ),
            "core::option::Option<&str>::map::<alloc::boxed::Box<str>, alloc::boxed::Box<str>::from>"
        );
        assert_eq!(clean_name("malloc"), "malloc");
    }

    #[test]
    fn maps_lines_keep_executable_file_mappings() {
        let line = "55d0c0a00000-55d0c0b00000 r-xp 00001000 08:01 1234    /usr/bin/my app";
        assert_eq!(
            parse_maps_line(line),
            Some(Mapping {
                start: 0x55d0_c0a0_0000,
                limit: 0x55d0_c0b0_0000,
                offset: 0x1000,
                path: "/usr/bin/my app".into(),
                build_id: String::new(),
            })
        );
        assert_eq!(
            parse_maps_line("7f00-7f10 rw-p 00000000 00:00 0    [heap]"),
            None
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
    fn own_executable_comes_first_with_a_build_id() {
        let maps = mappings();
        let exe = std::env::current_exe().unwrap_or_default();
        assert_eq!(maps[0].path, exe.to_string_lossy());
        assert!(!maps[0].build_id.is_empty());
    }
}
