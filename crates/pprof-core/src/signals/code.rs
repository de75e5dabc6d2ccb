//! The code this process can be running, as the unwinder checks it: each
//! loaded object's executable segments and its unwind tables
//! (`.eh_frame_hdr` and `.eh_frame`), registered outside any signal
//! handler and published whole ([`Published`]).
//!
//! # Where the tables come from
//!
//! `dl_iterate_phdr` lists the loaded objects and their program headers.
//! An object's `PT_GNU_EH_FRAME` segment is its `.eh_frame_hdr` (a sorted
//! index of its functions), which points at its `.eh_frame`; the records
//! of `.eh_frame` are walked to its terminator, inside the loaded segment
//! that holds it. The loader keeps an object mapped while its callback
//! runs (it holds the lock `dlclose` needs to unlist one), so reading
//! there is safe.
//!
//! The main program and the vDSO can never be unloaded: their tables are
//! read where the loader mapped them. Every other object is copied, so a
//! library unloaded with `dlclose` (or replaced by another at the same
//! address) before the next refresh is never read: a walk meets at worst
//! a stale copy of its tables, which can only produce addresses that the
//! checks in [`super::unwind`] then refuse.
//!
//! A refresh runs when the loader's counts of loads and unloads
//! (`dlpi_adds`, `dlpi_subs`) have changed: before a profile starts, at
//! the CPU sampler's thread scans, before each thread dump, and when a
//! walk outside a handler meets a return address in no known object.
//! Objects already registered keep their copies.

use std::ffi::{CStr, c_int, c_void};
use std::ops::Deref;
use std::sync::{Mutex, PoisonError};

use framehop::{ExplicitModuleSectionInfo, Module, MustNotAllocateDuringUnwind, Unwinder as _};

use super::image::loader_generation;
use super::published::Published;

/// The program header type of `.eh_frame_hdr` (`PT_GNU_EH_FRAME`).
const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
/// Unwind tables larger than this are not copied (an object that big is
/// walked with frame pointers only, and its frames end walks that need more).
const MAX_COPY: usize = 64 << 20;

/// Unwind-table bytes: where the loader mapped them, or our own copy.
#[derive(Debug)]
pub(super) enum Bytes {
    /// Mapped by the loader for the life of the process.
    Mapped(&'static [u8]),
    /// Copied out of an object that may be unloaded.
    Owned(Box<[u8]>),
}

impl Default for Bytes {
    fn default() -> Self {
        Self::Owned(Box::new([]))
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(bytes) => bytes,
            Self::Owned(bytes) => bytes,
        }
    }
}

/// The unwinder of this architecture over our tables, allocation-free.
pub(super) type NativeUnwinder = framehop::UnwinderNative<Bytes, MustNotAllocateDuringUnwind>;

/// Everything a walk checks addresses against, as of one refresh.
pub(super) struct KnownCode {
    pub(super) unwinder: NativeUnwinder,
    /// Executable segments of every object, `[start, end)`, sorted.
    exec: Box<[(u64, u64)]>,
    /// The loader's (loads, unloads) when this was built.
    loader: (u64, u64),
    /// Bytes of unwind tables copied (not mapped in place).
    pub(super) copied: usize,
}

impl KnownCode {
    /// Whether `address` lies in an executable segment of a known object.
    /// Async-signal-safe.
    pub(super) fn holds(&self, address: u64) -> bool {
        let i = self.exec.partition_point(|&(start, _)| start <= address);
        i > 0 && address < self.exec[i - 1].1
    }
}

static KNOWN: Published<KnownCode> = Published::new();

/// One registered object, kept between refreshes so that its copy is made
/// once.
pub(super) struct Entry {
    name: String,
    bias: u64,
    exec: Vec<(u64, u64)>,
    module: Module<Bytes>,
    copied: usize,
}

/// The objects registered at the last refresh (outside handlers only).
static ENTRIES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Bytes of unwind tables copied out of libraries (the rest are read where
/// the loader mapped them).
pub(crate) fn copied_bytes() -> usize {
    read(|known| known.map_or(0, |k| k.copied))
}

/// Run `read` with the known code (`None` before the first refresh).
/// Async-signal-safe.
pub(super) fn read<R>(read: impl FnOnce(Option<&KnownCode>) -> R) -> R {
    KNOWN.read(read)
}

/// The writers' locks, held across a fork ([`super::fork`]).
pub(super) type Locked = (
    std::sync::MutexGuard<'static, Vec<Entry>>,
    std::sync::MutexGuard<'static, Vec<Box<KnownCode>>>,
);

/// Take the writers' locks (before a fork).
pub(super) fn lock() -> Locked {
    (
        ENTRIES.lock().unwrap_or_else(PoisonError::into_inner),
        KNOWN.lock(),
    )
}

/// In a child just forked: forget the parent's readers.
pub(super) fn forget_readers() {
    KNOWN.forget_readers();
}

/// Register what the loader has loaded since the last refresh, and forget
/// what it unloaded; cheap when nothing changed. Not for signal handlers.
pub(crate) fn refresh() {
    let generation = loader_generation();
    if KNOWN.is_set() && KNOWN.read(|known| known.map(|k| k.loader)) == Some(generation) {
        KNOWN.tidy();
        return;
    }
    let mut entries = ENTRIES.lock().unwrap_or_else(PoisonError::into_inner);
    let previous = std::mem::take(&mut *entries);
    let mut walk = Walk {
        previous,
        found: Vec::new(),
        index: 0,
    };
    // SAFETY: the callback matches the signature `dl_iterate_phdr` expects
    // and reads only what the loader hands it (see `each_object`); `walk`
    // outlives the synchronous call and is what the callback casts `data`
    // back to.
    unsafe {
        libc::dl_iterate_phdr(Some(each_object), (&raw mut walk).cast::<c_void>());
    }
    let mut unwinder = NativeUnwinder::new();
    let mut exec = Vec::new();
    let mut copied = 0;
    for entry in &walk.found {
        unwinder.add_module(entry.module.clone());
        exec.extend_from_slice(&entry.exec);
        copied += entry.copied;
    }
    exec.sort_unstable();
    *entries = walk.found;
    drop(entries);
    KNOWN.publish(Box::new(KnownCode {
        unwinder,
        exec: exec.into_boxed_slice(),
        loader: generation,
        copied,
    }));
}

/// The state `each_object` builds up over one `dl_iterate_phdr`.
struct Walk {
    previous: Vec<Entry>,
    found: Vec<Entry>,
    /// Which object this is (the first is the main program).
    index: usize,
}

/// `dl_iterate_phdr`'s callback: register one object, reusing its entry
/// from the last refresh when it is the same object at the same place.
///
/// # Safety
///
/// `info` must be the loader's description of a loaded object, valid for
/// the call, and `data` a `*mut Walk`.
unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `refresh` passes exactly this type as `data`, exclusively
    // borrowed for the duration of `dl_iterate_phdr`; the loader hands a
    // valid `dl_phdr_info`.
    let (walk, info) = unsafe { (&mut *data.cast::<Walk>(), &*info) };
    let index = walk.index;
    walk.index += 1;
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string the
        // loader keeps while the object is loaded.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    let headers: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
        &[]
    } else {
        // SAFETY: the loader reports `dlpi_phnum` program headers at
        // `dlpi_phdr`, mapped while the object is loaded.
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    let bias = info.dlpi_addr;
    let exec: Vec<(u64, u64)> = headers
        .iter()
        .filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_X != 0 && h.p_memsz > 0)
        .filter_map(|h| {
            let start = bias.checked_add(h.p_vaddr)?;
            Some((start, start.checked_add(h.p_memsz)?))
        })
        .collect();
    if exec.is_empty() {
        return 0;
    }
    if let Some(at) = walk
        .previous
        .iter()
        .position(|e| e.bias == bias && e.name == name && e.exec == exec)
    {
        walk.found.push(walk.previous.swap_remove(at));
        return 0;
    }
    // The main program and the vDSO stay mapped for the life of the process.
    // SAFETY: `getauxval` has no preconditions.
    let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    let permanent = index == 0 || (vdso != 0 && headers_start(headers, bias) == Some(vdso));
    // SAFETY: the object is loaded and listed for the duration of this
    // callback, so its loaded segments are mapped.
    let tables = unsafe { unwind_tables(headers, bias, permanent) };
    let copied = match &tables {
        Some((hdr, frames)) => copy_len(hdr) + copy_len(frames),
        None => 0,
    };
    let avma =
        exec.iter().map(|e| e.0).min().unwrap_or(0)..exec.iter().map(|e| e.1).max().unwrap_or(0);
    let text_svma = (avma.start - bias)..(avma.end - bias);
    let section_info = match tables {
        Some((hdr, frames)) => ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: Some(text_svma),
            eh_frame_hdr_svma: Some(hdr.svma..hdr.svma + hdr.bytes.len() as u64),
            eh_frame_hdr: Some(hdr.bytes),
            eh_frame_svma: Some(frames.svma..frames.svma + frames.bytes.len() as u64),
            eh_frame: Some(frames.bytes),
            ..Default::default()
        },
        None => ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: Some(text_svma),
            ..Default::default()
        },
    };
    walk.found.push(Entry {
        module: Module::new(name.clone(), avma, bias, section_info),
        name,
        bias,
        exec,
        copied,
    });
    0
}

/// One unwind section: its address as the object states it, its bytes.
struct Section {
    svma: u64,
    bytes: Bytes,
}

fn copy_len(section: &Section) -> usize {
    match section.bytes {
        Bytes::Mapped(_) => 0,
        Bytes::Owned(ref b) => b.len(),
    }
}

/// Where the object's first loaded segment (its ELF header) is in memory.
fn headers_start(headers: &[libc::Elf64_Phdr], bias: u64) -> Option<u64> {
    headers
        .iter()
        .find(|h| h.p_type == libc::PT_LOAD && h.p_offset == 0)
        .and_then(|h| bias.checked_add(h.p_vaddr))
}

/// The object's `.eh_frame_hdr` and `.eh_frame`, mapped in place when
/// `permanent`, else copied; `None` when it has none we can read.
///
/// # Safety
///
/// Call from `dl_iterate_phdr`'s callback for this object, whose loaded
/// segments (`headers`, at `bias`) are mapped for the duration of the call.
unsafe fn unwind_tables(
    headers: &[libc::Elf64_Phdr],
    bias: u64,
    permanent: bool,
) -> Option<(Section, Section)> {
    let hdr = headers.iter().find(|h| h.p_type == PT_GNU_EH_FRAME)?;
    // A loaded, readable segment holding `[svma, svma + len)`: its end.
    let segment_end = |svma: u64, len: u64| {
        headers
            .iter()
            .filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_R != 0)
            .find(|h| svma >= h.p_vaddr && svma.saturating_add(len) <= h.p_vaddr + h.p_memsz)
            .map(|h| h.p_vaddr + h.p_memsz)
    };
    segment_end(hdr.p_vaddr, hdr.p_memsz)?;
    let hdr_len = usize::try_from(hdr.p_memsz)
        .ok()
        .filter(|l| (8..=MAX_COPY).contains(l))?;
    let hdr_at = usize::try_from(bias.checked_add(hdr.p_vaddr)?).ok()?;
    // SAFETY: `[p_vaddr, p_vaddr + p_memsz)` lies inside a readable loaded
    // segment (checked above), mapped at `bias + p_vaddr` during this call.
    // The slice outlives the call only for a `permanent` object (the main
    // program, the vDSO: mapped for the life of the process); any other's
    // bytes are copied below, before the callback returns.
    let hdr_bytes: &'static [u8] =
        unsafe { std::slice::from_raw_parts(hdr_at as *const u8, hdr_len) };
    // Where `.eh_frame` starts, in memory, from the header's pointer to it.
    let bases = gimli::BaseAddresses::default().set_eh_frame_hdr(hdr_at as u64);
    let parsed = gimli::EhFrameHdr::new(hdr_bytes, gimli::LittleEndian)
        .parse(&bases, 8)
        .ok()?;
    let gimli::Pointer::Direct(frames_at) = parsed.eh_frame_ptr() else {
        return None;
    };
    let frames_svma = frames_at.checked_sub(bias)?;
    let end = segment_end(frames_svma, 4)?;
    let available = usize::try_from(end - frames_svma).ok()?;
    // SAFETY: `[frames_svma, end)` is inside a readable loaded segment;
    // kept past the call only for a `permanent` object, as above.
    let rest: &'static [u8] = unsafe {
        std::slice::from_raw_parts(usize::try_from(frames_at).ok()? as *const u8, available)
    };
    let frames_len = records_len(rest);
    if frames_len == 0 || frames_len > MAX_COPY {
        return None;
    }
    let frames_bytes = &rest[..frames_len];
    let (hdr_bytes, frames_bytes) = if permanent {
        (Bytes::Mapped(hdr_bytes), Bytes::Mapped(frames_bytes))
    } else {
        (
            Bytes::Owned(hdr_bytes.into()),
            Bytes::Owned(frames_bytes.into()),
        )
    };
    Some((
        Section {
            svma: hdr.p_vaddr,
            bytes: hdr_bytes,
        },
        Section {
            svma: frames_svma,
            bytes: frames_bytes,
        },
    ))
}

/// The length of the CIE and FDE records at the start of `bytes`, up to
/// their zero terminator or the last record that fits.
fn records_len(bytes: &[u8]) -> usize {
    let mut at = 0usize;
    loop {
        let Some(word) = bytes.get(at..at + 4) else {
            return at;
        };
        let len = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        let (header, body) = match len {
            0 => return at,
            0xffff_ffff => {
                let Some(long) = bytes.get(at + 4..at + 12) else {
                    return at;
                };
                let mut eight = [0u8; 8];
                eight.copy_from_slice(long);
                (12, u64::from_le_bytes(eight))
            }
            n => (4, u64::from(n)),
        };
        let Some(next) = usize::try_from(body)
            .ok()
            .and_then(|b| at.checked_add(header)?.checked_add(b))
            .filter(|&n| n <= bytes.len())
        else {
            return at;
        };
        at = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loaded_object_with_code_is_known_and_only_libraries_are_copied() {
        refresh();
        let here = every_loaded_object_with_code_is_known_and_only_libraries_are_copied as fn()
            as usize as u64;
        read(|known| {
            let known = known.expect("refreshed");
            assert!(known.holds(here));
            assert!(
                known.holds(libc::getpid as *const () as usize as u64),
                "libc is known"
            );
            assert!(!known.holds(0x10), "the first page holds no code");
            assert!(!known.holds(&KNOWN as *const _ as u64), "data is not code");
            // libc, libgcc and the rest are copied; the main program is not.
            assert!(
                known.copied > 0 && known.copied < 16 << 20,
                "{}",
                known.copied
            );
        });
    }

    #[test]
    fn a_refresh_with_nothing_loaded_since_keeps_what_it_had() {
        refresh();
        let first = read(|k| k.map(|k| std::ptr::from_ref(k) as usize));
        refresh();
        assert_eq!(read(|k| k.map(|k| std::ptr::from_ref(k) as usize)), first);
    }

    #[test]
    fn records_end_at_the_terminator_or_at_the_last_whole_record() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&8u32.to_le_bytes());
        bytes.extend_from_slice(&[1; 8]);
        bytes.extend_from_slice(&4u32.to_le_bytes());
        bytes.extend_from_slice(&[2; 4]);
        assert_eq!(records_len(&bytes), 20, "no terminator: every whole record");
        let mut terminated = bytes.clone();
        terminated.extend_from_slice(&0u32.to_le_bytes());
        terminated.extend_from_slice(&[9; 16]);
        assert_eq!(records_len(&terminated), 20);
        let mut cut = bytes.clone();
        cut.extend_from_slice(&100u32.to_le_bytes());
        assert_eq!(records_len(&cut), 20, "a record past the end is not taken");
        assert_eq!(records_len(&[0xff, 0xff, 0xff, 0xff, 1]), 0);
    }
}
