//! The process's executable mappings and their build ids, for
//! profile.proto's `Mapping` table.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::signals::Image;

use super::elf::build_id_in_notes;

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
        m.build_id = build_id_on_disk(&m.path);
    }
    found
}

/// Whether one of `image`'s loaded segments overlaps `[start, limit)`.
pub(super) fn image_holds(image: &Image, start: u64, limit: u64) -> bool {
    image.segments.iter().any(|s| {
        let from = image.bias.wrapping_add(s.vaddr);
        let to = from.wrapping_add(s.memsz);
        from < limit && start < to
    })
}

/// The GNU build id in `image`'s notes as mapped in memory; empty if none.
pub(super) fn build_id(image: &Image) -> Vec<u8> {
    image
        .notes
        .iter()
        .find_map(|n| build_id_in_notes(n.align, &n.bytes))
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
fn build_id_on_disk(path: &str) -> String {
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

    #[test]
    fn own_executable_comes_first_with_a_build_id() {
        let maps = mappings();
        let exe = std::env::current_exe().unwrap_or_default();
        assert_eq!(maps[0].path, exe.to_string_lossy());
        assert!(!maps[0].build_id.is_empty());
    }
}
