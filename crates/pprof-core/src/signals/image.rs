//! The running images (the executable, its shared libraries, the vDSO) as
//! the dynamic loader mapped them, and read-only file mappings for the
//! symbolizer. The unsafe part is small: walking `dl_iterate_phdr`'s
//! program headers and copying the bytes of the notes and the vDSO out of
//! memory the loader or the kernel keeps mapped; everything that parses
//! those bytes is safe code in `symbols/`.
//!
//! # Invariants
//!
//! - Memory is read only inside ranges the loader reports as loaded
//!   (`PT_LOAD` segments of an object, while `dl_iterate_phdr` holds the
//!   loader's lock, so the object cannot be unloaded meanwhile) or that the
//!   kernel reports as a readable mapping (the vDSO, in `/proc/self/maps`).
//! - Nothing here runs in a signal handler.

use std::ffi::{CStr, c_int, c_void};
use std::fs::File;
use std::io;

use memmap2::Mmap;

/// Notes larger than this are not copied (a build id note is 36 bytes).
const MAX_NOTES: u64 = 1 << 16;

/// One object the dynamic loader has mapped into this process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Image {
    /// The loader's name for it: empty for the main program, a path for a
    /// shared library, `linux-vdso.so.1` (or empty) for the vDSO.
    pub(crate) name: String,
    /// Added to an address of the file (its "stated" address) to get the
    /// address in this process.
    pub(crate) bias: u64,
    /// The loaded segments (`PT_LOAD`), in stated addresses.
    pub(crate) segments: Vec<Segment>,
    /// The contents of each `PT_NOTE` segment, as mapped in memory.
    pub(crate) notes: Vec<Notes>,
    /// This image is the vDSO (its ELF header is where `AT_SYSINFO_EHDR`
    /// points).
    pub(crate) is_vdso: bool,
}

/// One `PT_LOAD` segment of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) vaddr: u64,
    pub(crate) memsz: u64,
    pub(crate) offset: u64,
    pub(crate) executable: bool,
}

/// The bytes of one `PT_NOTE` segment and its alignment (4 or 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notes {
    pub(crate) align: u64,
    pub(crate) bytes: Vec<u8>,
}

/// Every object the loader has mapped now, the main program first.
pub(crate) fn images() -> Vec<Image> {
    let mut found: Vec<Image> = Vec::new();
    // SAFETY: `getauxval` has no preconditions; 0 means "not present".
    let vdso_header = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    let mut data = (&mut found, vdso_header);
    // SAFETY: the callback matches the signature `dl_iterate_phdr` expects
    // and only reads what it is handed (see `each_image`); `data` points to
    // a live tuple of the type the callback casts it back to, and outlives
    // the call, which is synchronous.
    unsafe {
        libc::dl_iterate_phdr(Some(each_image), (&raw mut data).cast::<c_void>());
    }
    found
}

/// How many objects the loader has loaded and unloaded so far (glibc's and
/// musl's `dlpi_adds`, `dlpi_subs`): when neither changed, neither did the
/// list [`images`] returns.
pub(crate) fn loader_generation() -> (u64, u64) {
    let mut counts = (0u64, 0u64);
    // SAFETY: as in `images`: the callback matches the expected signature,
    // reads only the `dl_phdr_info` it is handed, and `data` points to a
    // live `(u64, u64)` for the duration of the synchronous call.
    unsafe {
        libc::dl_iterate_phdr(Some(counts_of), (&raw mut counts).cast::<c_void>());
    }
    counts
}

/// `dl_iterate_phdr`'s callback for [`loader_generation`]: the counters are
/// the same in every object's info, so the first one is enough.
///
/// # Safety
///
/// `info` must be the loader's description of a loaded object, valid for
/// the call, and `data` a `*mut (u64, u64)`.
unsafe extern "C" fn counts_of(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: the loader hands a valid `dl_phdr_info` for this call, and
    // `loader_generation` passes exactly this type as `data`.
    let (info, counts) = unsafe { (&*info, &mut *data.cast::<(u64, u64)>()) };
    *counts = (info.dlpi_adds, info.dlpi_subs);
    1
}

/// `dl_iterate_phdr`'s callback: copy one object's name, bias, segments and
/// notes.
///
/// # Safety
///
/// `info` must be the loader's description of a loaded object, valid for
/// the call, and `data` a `*mut (&mut Vec<Image>, u64)`.
unsafe extern "C" fn each_image(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `images` passes exactly this type as `data`, exclusively
    // borrowed for the duration of `dl_iterate_phdr`.
    let (found, vdso_header) = unsafe { &mut *data.cast::<(&mut Vec<Image>, u64)>() };
    // SAFETY: the loader hands a valid `dl_phdr_info` for this call.
    let info = unsafe { &*info };
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: non-null `dlpi_name` is a NUL-terminated string the loader
        // keeps while the object is loaded (at least for this call).
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
    let loads: Vec<&libc::Elf64_Phdr> = headers
        .iter()
        .filter(|h| h.p_type == libc::PT_LOAD)
        .collect();
    let readable = |start: u64, len: u64| {
        loads.iter().any(|l| {
            l.p_flags & libc::PF_R != 0
                && start >= l.p_vaddr
                && start.saturating_add(len) <= l.p_vaddr.saturating_add(l.p_memsz)
        })
    };
    let mut notes = Vec::new();
    for h in headers.iter().filter(|h| h.p_type == libc::PT_NOTE) {
        if h.p_memsz == 0 || h.p_memsz > MAX_NOTES || !readable(h.p_vaddr, h.p_memsz) {
            continue;
        }
        let (Ok(len), Some(at)) = (
            usize::try_from(h.p_memsz),
            bias.checked_add(h.p_vaddr)
                .and_then(|a| usize::try_from(a).ok()),
        ) else {
            continue;
        };
        // SAFETY: `[p_vaddr, p_vaddr + p_memsz)` lies inside a readable
        // loaded segment of this object (checked just above), which the
        // loader keeps mapped at `bias + p_vaddr` while the object is
        // loaded; we copy the bytes out before returning.
        let bytes = unsafe { std::slice::from_raw_parts(at as *const u8, len) }.to_vec();
        notes.push(Notes {
            align: h.p_align,
            bytes,
        });
    }
    let header_at = loads
        .iter()
        .find(|l| l.p_offset == 0)
        .map(|l| bias.wrapping_add(l.p_vaddr));
    found.push(Image {
        name,
        bias,
        segments: loads
            .iter()
            .map(|l| Segment {
                vaddr: l.p_vaddr,
                memsz: l.p_memsz,
                offset: l.p_offset,
                executable: l.p_flags & libc::PF_X != 0,
            })
            .collect(),
        notes,
        is_vdso: *vdso_header != 0 && header_at == Some(*vdso_header),
    });
    0
}

/// A copy of the vDSO's ELF image (a page or two), or `None` when the
/// kernel maps none.
pub(crate) fn vdso_bytes() -> Option<Vec<u8>> {
    // SAFETY: `getauxval` has no preconditions; 0 means "not present".
    let header = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    if header == 0 {
        return None;
    }
    // The kernel's own account of how far the mapping reaches.
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let (start, end) = maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        (start == header && perms.starts_with('r') && line.ends_with("[vdso]"))
            .then_some((start, end))
    })?;
    let len = usize::try_from(end.checked_sub(start)?).ok()?;
    if len > 1 << 20 {
        return None;
    }
    let at = usize::try_from(start).ok()?;
    // SAFETY: `/proc/self/maps` says `[start, end)` is a readable mapping,
    // the vDSO the kernel placed at `AT_SYSINFO_EHDR`, which it keeps for
    // the life of the process; we copy it out at once.
    Some(unsafe { std::slice::from_raw_parts(at as *const u8, len) }.to_vec())
}

/// `file` mapped read-only and private (pages come from the page cache on
/// demand and are not anonymous memory).
///
/// A mapped file cut short by someone else raises `SIGBUS` where it is
/// read past its new end, whatever the mapping's flags. The files mapped
/// here are the images' and their debug files: the kernel refuses writes
/// to the running executable (`ETXTBSY`); a library cut short in place
/// would fault the process in its own next call into it; and the
/// symbolizer checks each file's size and modification time before every
/// lookup, dropping a changed file's mapping, so only a debug file cut
/// short during one lookup can still fault it. Replacing a file by a rename,
/// as package managers and installers do, leaves our mapping intact.
pub(crate) fn map_file(file: &File) -> io::Result<Mmap> {
    // SAFETY: as above: a private, read-only mapping of a file we opened,
    // whose bytes every reader (`object`, `gimli`) bounds-checks and treats
    // as untrusted input; the symbolizer revalidates the file before each
    // lookup (`symbols/modules.rs`).
    unsafe { memmap2::MmapOptions::new().map_copy_read_only(file) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_program_comes_first_with_its_notes() {
        let found = images();
        assert!(!found.is_empty());
        let main = &found[0];
        assert!(main.name.is_empty(), "{:?}", main.name);
        assert!(main.segments.iter().any(|s| s.executable));
        assert!(!main.notes.is_empty());
        assert!(found.iter().filter(|i| i.is_vdso).count() <= 1);
    }

    #[test]
    fn the_loader_counts_what_it_loaded() {
        let (adds, subs) = loader_generation();
        assert!(adds >= images().len() as u64, "{adds} loads");
        assert!(subs <= adds);
    }

    #[test]
    fn the_vdso_is_an_elf_image() {
        let bytes = vdso_bytes().unwrap_or_default();
        assert!(bytes.starts_with(b"\x7fELF"), "{:?}", bytes.get(..4));
    }
}
