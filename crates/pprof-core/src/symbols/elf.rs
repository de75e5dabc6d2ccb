//! The few things read from an ELF file's bytes: its sections (plain or
//! zlib-compressed), its build id note, its debug link, and the names its
//! symbol table gives a batch of addresses. Nothing is copied out of the
//! (mapped) bytes but the answers.

use object::NativeEndian;
use object::elf::{
    ELF_NOTE_GNU, ELFCOMPRESS_ZLIB, FileHeader64, NT_GNU_BUILD_ID, SHF_COMPRESSED, SHN_UNDEF,
    SHT_DYNSYM, SHT_NOBITS, SHT_SYMTAB, STB_GLOBAL, STB_WEAK, STT_FUNC, STT_OBJECT,
};
use object::read::elf::{
    CompressionHeader, FileHeader, NoteIterator, SectionHeader, SectionTable, Sym, SymbolTable,
};

type Header = FileHeader64<NativeEndian>;

/// A parsed view of one ELF file's bytes.
pub(super) struct ElfFile<'a> {
    data: &'a [u8],
    endian: NativeEndian,
    sections: SectionTable<'a, Header>,
}

/// A section's contents as stored in the file.
#[derive(Debug, Clone, Copy)]
pub(super) enum SectionBytes<'a> {
    /// Stored as is.
    Plain(&'a [u8]),
    /// A zlib stream (`SHF_COMPRESSED`, `ELFCOMPRESS_ZLIB`) that inflates
    /// to `size` bytes.
    Zlib { stream: &'a [u8], size: usize },
}

impl<'a> ElfFile<'a> {
    /// `None` unless `data` is a 64-bit ELF file of this machine's byte order.
    pub(super) fn parse(data: &'a [u8]) -> Option<Self> {
        let header = Header::parse(data).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, data).ok()?;
        Some(ElfFile {
            data,
            endian,
            sections,
        })
    }

    /// The named section's bytes; `None` when absent, empty, not stored in
    /// the file (`SHT_NOBITS`, as in stripped or debug-only files) or
    /// compressed in a way we do not read.
    pub(super) fn section(&self, name: &str) -> Option<SectionBytes<'a>> {
        let (_, section) = self
            .sections
            .section_by_name(self.endian, name.as_bytes())?;
        if section.sh_type(self.endian) == SHT_NOBITS {
            return None;
        }
        let bytes = section.data(self.endian, self.data).ok()?;
        if bytes.is_empty() {
            return None;
        }
        if !section.sh_flags(self.endian).contains(SHF_COMPRESSED) {
            return Some(SectionBytes::Plain(bytes));
        }
        let mut rest = object::Bytes(bytes);
        let header = rest
            .read::<<Header as FileHeader>::CompressionHeader>()
            .ok()?;
        if header.ch_type(self.endian) != ELFCOMPRESS_ZLIB {
            return None;
        }
        let size = usize::try_from(header.ch_size(self.endian)).ok()?;
        Some(SectionBytes::Zlib {
            stream: rest.0,
            size,
        })
    }

    /// The GNU build id from the file's note sections.
    pub(super) fn build_id(&self) -> Option<&'a [u8]> {
        self.sections.iter().find_map(|section| {
            let notes = section.notes(self.endian, self.data).ok()??;
            gnu_build_id(notes)
        })
    }

    /// The file name in `.gnu_debuglink` (where a separate debug file is).
    pub(super) fn debuglink(&self) -> Option<&'a [u8]> {
        let SectionBytes::Plain(data) = self.section(".gnu_debuglink")? else {
            return None;
        };
        let len = data.iter().position(|b| *b == 0)?;
        Some(&data[..len])
    }

    /// Whether the file carries DWARF.
    pub(super) fn has_dwarf(&self) -> bool {
        self.section(".debug_info").is_some()
    }

    /// Whether the file has a full symbol table (not only the dynamic one).
    pub(super) fn has_symtab(&self) -> bool {
        self.sections
            .iter()
            .any(|s| s.sh_type(self.endian) == SHT_SYMTAB && s.sh_size(self.endian) > 0)
    }

    /// The full symbol table, or else the dynamic one.
    fn symbol_table(&self) -> Option<SymbolTable<'a, Header>> {
        [SHT_SYMTAB, SHT_DYNSYM].into_iter().find_map(|kind| {
            self.sections
                .symbols(self.endian, self.data, kind)
                .ok()
                .filter(|t| !t.is_empty())
        })
    }

    /// For each address of `sorted` (stated addresses, ascending), the name
    /// of the function or object symbol that holds it, from the full
    /// symbol table or else the dynamic one. One pass over the table:
    /// nothing is kept but the answers. Of several symbols holding an
    /// address the innermost (latest start) wins, then an unversioned name,
    /// then a global over a weak over a local one, then the plainer name
    /// (`recv` over `__recv`).
    pub(super) fn symbol_names(&self, sorted: &[u64]) -> Vec<Option<&'a [u8]>> {
        let mut best: Vec<Option<(u64, u8, &'a [u8])>> = vec![None; sorted.len()];
        let Some(table) = self.symbol_table() else {
            return vec![None; sorted.len()];
        };
        let strings = table.strings();
        for sym in table.iter() {
            let kind = sym.st_type();
            if (kind != STT_FUNC && kind != STT_OBJECT) || sym.st_shndx(self.endian) == SHN_UNDEF {
                continue;
            }
            let start = sym.st_value(self.endian);
            let end = start.saturating_add(sym.st_size(self.endian));
            // Inclusive end, as `backtrace` has it: a return address just
            // past a call that never returns still names its caller.
            let from = sorted.partition_point(|a| *a < start);
            let to = sorted.partition_point(|a| *a <= end);
            if from >= to {
                continue;
            }
            let Ok(name) = strings.get(sym.st_name(self.endian)) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            let rank = match sym.st_bind() {
                STB_GLOBAL => 0,
                STB_WEAK => 1,
                _ => 2,
            };
            for slot in &mut best[from..to] {
                let better = match slot {
                    None => true,
                    Some((s, r, n)) => {
                        (
                            start,
                            !versioned(name),
                            std::cmp::Reverse(rank),
                            plainness(name),
                        ) > (*s, !versioned(n), std::cmp::Reverse(*r), plainness(n))
                    }
                };
                if better {
                    *slot = Some((start, rank, name));
                }
            }
        }
        best.into_iter().map(|b| b.map(|(_, _, n)| n)).collect()
    }
}

/// `name@VERSION`: a symbol's old version, kept for binary compatibility.
fn versioned(name: &[u8]) -> bool {
    name.contains(&b'@')
}

/// Higher for names that read better: fewer leading underscores, then
/// shorter, then the byte order (so the choice never depends on the
/// table's order).
fn plainness(name: &[u8]) -> (std::cmp::Reverse<usize>, std::cmp::Reverse<usize>, &[u8]) {
    let underscores = name.iter().take_while(|b| **b == b'_').count();
    (
        std::cmp::Reverse(underscores),
        std::cmp::Reverse(name.len()),
        name,
    )
}

/// The GNU build id in notes read from memory (a `PT_NOTE` segment of a
/// running image, aligned as `align` says).
pub(super) fn build_id_in_notes(align: u64, bytes: &[u8]) -> Option<&[u8]> {
    gnu_build_id(NoteIterator::<Header>::new(NativeEndian, align, bytes).ok()?)
}

/// The first GNU build id note among `notes` (a file's section or a
/// running image's segment); a malformed note ends the search.
fn gnu_build_id(mut notes: NoteIterator<'_, Header>) -> Option<&[u8]> {
    while let Ok(Some(note)) = notes.next() {
        if note.name() == ELF_NOTE_GNU && note.n_type(NativeEndian) == NT_GNU_BUILD_ID {
            return Some(note.desc());
        }
    }
    None
}

#[cfg(test)]
impl ElfFile<'_> {
    /// The middle of every function in the symbol table.
    pub(super) fn function_midpoints(&self) -> Vec<u64> {
        let Some(table) = self.symbol_table() else {
            return Vec::new();
        };
        table
            .iter()
            .filter(|s| s.st_type() == STT_FUNC && s.st_shndx(self.endian) != SHN_UNDEF)
            .map(|s| s.st_value(self.endian) + s.st_size(self.endian) / 2)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plainer_names_win_ties() {
        assert!(plainness(b"recv") > plainness(b"__recv"));
        assert!(plainness(b"__recv") > plainness(b"__libc_recv"));
        assert!(plainness(b"read") > plainness(b"readv"));
        assert!(versioned(b"xdr_u32@GLIBC_2.2.5") && !versioned(b"xdr_u32"));
    }
}
