//! The running images as the symbolizer sees them: which image holds an
//! address, and for each image its ELF file (mapped read-only, never
//! copied) and its separate debug file, opened the first time one of its
//! addresses is asked for.
//!
//! The file read is the one the process runs: `/proc/self/exe` for the
//! executable (the inode the kernel loaded, even if the path now holds
//! another file), and for a library its path only when the file there is
//! the same image (same build id, or same device and inode), else
//! `/proc/self/map_files/…` where the kernel lets us open it. A file that
//! cannot be shown to be the running one is not read: no names beat wrong
//! names.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::signals::{Image, images, loader_generation, map_file, vdso_bytes};

use super::dwarf::{self, Found, RawFrame};
use super::elf::ElfFile;
use super::maps::{build_id, hex, image_holds};

/// Where distributions put debug files named by build id.
const DEBUG_DIR: &str = "/usr/lib/debug";

/// The images loaded when the table was made, each opened on first use.
pub(super) struct Table {
    /// The loader's counts of loads and unloads when the table was made.
    generation: (u64, u64),
    images: Vec<Image>,
    modules: Vec<OnceLock<Module>>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("images", &self.images.len())
            .finish_non_exhaustive()
    }
}

impl Table {
    pub(super) fn load() -> Table {
        // Counted first: a library loaded meanwhile makes the table look
        // stale, never current.
        let generation = loader_generation();
        let images = images();
        let modules = images.iter().map(|_| OnceLock::new()).collect();
        Table {
            generation,
            images,
            modules,
        }
    }

    /// Whether the loader has loaded or unloaded anything since.
    pub(super) fn is_stale(&self) -> bool {
        loader_generation() != self.generation
    }

    /// Whether a file this table mapped has changed since (cut short or
    /// rewritten in place): the table must not be read again.
    pub(super) fn files_changed(&self) -> bool {
        self.modules.iter().filter_map(OnceLock::get).any(|m| {
            !m.file.as_ref().is_none_or(Data::unchanged)
                || !m.debug.as_ref().is_none_or(Data::unchanged)
        })
    }

    fn image_of(&self, pc: u64) -> Option<usize> {
        self.images
            .iter()
            .position(|image| image_holds(image, pc, pc.saturating_add(1)))
    }

    /// Whether every address of `pcs` lies in an image of this table.
    pub(super) fn covers(&self, pcs: &[u64]) -> bool {
        pcs.iter().all(|pc| self.image_of(*pc).is_some())
    }

    /// The frames at each of `pcs` (innermost first; empty when nothing
    /// is known), one batch per image.
    pub(super) fn resolve(&self, pcs: &[u64]) -> HashMap<u64, Vec<RawFrame>> {
        let mut by_image: HashMap<usize, Vec<u64>> = HashMap::new();
        let mut out = HashMap::with_capacity(pcs.len());
        for &pc in pcs {
            match self.image_of(pc) {
                Some(i) => by_image
                    .entry(i)
                    .or_default()
                    .push(pc.wrapping_sub(self.images[i].bias)),
                None => {
                    out.insert(pc, Vec::new());
                }
            }
        }
        for (i, mut stated) in by_image {
            stated.sort_unstable();
            stated.dedup();
            let image = &self.images[i];
            // The loader lists the main program first.
            let module = self.modules[i].get_or_init(|| Module::open(image, i == 0));
            let frames = module.resolve(&stated);
            for (address, frames) in stated.into_iter().zip(frames) {
                out.insert(address.wrapping_add(image.bias), frames);
            }
        }
        out
    }
}

/// An image's bytes: a read-only file mapping, or a copy (the vDSO).
enum Data {
    Mapped(Mapped),
    Owned(Vec<u8>),
}

/// A mapped file and what it was when mapped: read again before each
/// lookup, a file changed since (cut short in place, rewritten) is never
/// read through the old mapping.
struct Mapped {
    map: memmap2::Mmap,
    file: File,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Mapped {
    fn new(file: File) -> Option<Self> {
        let meta = file.metadata().ok()?;
        let map = map_file(&file).ok()?;
        Some(Self {
            map,
            len: meta.len(),
            modified: meta.modified().ok(),
            file,
        })
    }

    /// Whether the file is still as it was when mapped.
    fn unchanged(&self) -> bool {
        self.file
            .metadata()
            .is_ok_and(|meta| meta.len() == self.len && meta.modified().ok() == self.modified)
    }
}

impl Data {
    fn mapped(file: File) -> Option<Self> {
        Mapped::new(file).map(Data::Mapped)
    }

    fn unchanged(&self) -> bool {
        match self {
            Data::Mapped(mapped) => mapped.unchanged(),
            Data::Owned(_) => true,
        }
    }
}

impl std::ops::Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Mapped(mapped) => &mapped.map,
            Data::Owned(bytes) => bytes,
        }
    }
}

/// One image's files, as far as they could be opened.
struct Module {
    file: Option<Data>,
    debug: Option<Data>,
    /// What the DWARF reader keeps of the file between lookups.
    kept: dwarf::Kept,
}

impl Module {
    fn open(image: &Image, is_main: bool) -> Module {
        let running_id = build_id(image);
        let (file, path) = match open_image(image, is_main, &running_id) {
            Some((file, path)) => (Some(file), path),
            None => (None, PathBuf::new()),
        };
        let debug = file
            .as_deref()
            .and_then(ElfFile::parse)
            .filter(|elf| !elf.has_dwarf())
            .and_then(|elf| open_debug_file(&running_id, elf.debuglink(), &path));
        Module {
            file,
            debug,
            kept: dwarf::Kept::new(),
        }
    }

    /// Frames for each of `sorted` (stated addresses, ascending, unique):
    /// DWARF where the image has it, names from the symbol table where
    /// DWARF gives none.
    fn resolve(&self, sorted: &[u64]) -> Vec<Vec<RawFrame>> {
        let file = self.file.as_deref().and_then(ElfFile::parse);
        let debug = self.debug.as_deref().and_then(ElfFile::parse);
        let with_dwarf = debug
            .as_ref()
            .filter(|d| d.has_dwarf())
            .or(file.as_ref().filter(|f| f.has_dwarf()));
        let found = match with_dwarf {
            Some(elf) => dwarf::resolve(elf, sorted, &self.kept),
            None => vec![Found::default(); sorted.len()],
        };
        let mut frames: Vec<Vec<RawFrame>> = found.into_iter().map(Found::into_frames).collect();
        let unnamed: Vec<usize> = (0..sorted.len())
            .filter(|&i| frames[i].is_empty() || frames[i].iter().any(|f| f.name.is_none()))
            .collect();
        let with_symbols = debug.as_ref().filter(|d| d.has_symtab()).or(file.as_ref());
        if unnamed.is_empty() {
            return frames;
        }
        let Some(elf) = with_symbols else {
            return frames;
        };
        let addresses: Vec<u64> = unnamed.iter().map(|&i| sorted[i]).collect();
        let names = elf.symbol_names(&addresses);
        for (&i, name) in unnamed.iter().zip(names) {
            let Some(name) = name else { continue };
            let name = String::from_utf8_lossy(name).into_owned();
            if frames[i].is_empty() {
                frames[i].push(RawFrame {
                    name: Some(name),
                    ..RawFrame::default()
                });
            } else {
                for frame in frames[i].iter_mut().filter(|f| f.name.is_none()) {
                    frame.name = Some(name.clone());
                }
            }
        }
        frames
    }
}

/// The running image's file, mapped, with the path it is known by.
fn open_image(image: &Image, is_main: bool, running_id: &[u8]) -> Option<(Data, PathBuf)> {
    if image.is_vdso {
        return vdso_bytes().map(|bytes| (Data::Owned(bytes), PathBuf::new()));
    }
    if is_main {
        // The main program: the kernel keeps the inode it runs.
        let path = std::fs::read_link("/proc/self/exe").unwrap_or_default();
        let file = File::open("/proc/self/exe").ok()?;
        return Some((Data::mapped(file)?, path));
    }
    if image.name.is_empty() {
        return None;
    }
    let path = PathBuf::from(&image.name);
    let entries = maps_entries(image);
    if let Ok(file) = File::open(&path)
        && let Some(data) = Data::mapped(file)
    {
        let Data::Mapped(mapped) = &data else {
            return None;
        };
        let same = match ElfFile::parse(&mapped.map).and_then(|elf| elf.build_id()) {
            Some(on_disk) if !running_id.is_empty() => on_disk == running_id,
            _ => mapped.file.metadata().is_ok_and(|meta| {
                entries
                    .iter()
                    .any(|e| e.inode == meta.ino() && e.dev == meta.dev())
            }),
        };
        if same {
            return Some((data, path));
        }
    }
    // The path holds another file now; the kernel may let us open the
    // mapped one (it needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE).
    entries.iter().find_map(|e| {
        let file = File::open(format!("/proc/self/map_files/{:x}-{:x}", e.start, e.end)).ok()?;
        Some((Data::mapped(file)?, path.clone()))
    })
}

/// A separate debug file for an image without DWARF: by build id under
/// `/usr/lib/debug/.build-id/`, or by its `.gnu_debuglink` name next to
/// the file, in its `.debug/` directory or under `/usr/lib/debug`. A debug
/// file whose build id is not the running image's is not used.
fn open_debug_file(running_id: &[u8], debuglink: Option<&[u8]>, path: &Path) -> Option<Data> {
    let mut candidates = Vec::new();
    if let [first, rest @ ..] = running_id
        && !rest.is_empty()
    {
        candidates.push(PathBuf::from(format!(
            "{DEBUG_DIR}/.build-id/{}/{}.debug",
            hex(&[*first]),
            hex(rest)
        )));
    }
    if let Some(link) = debuglink.and_then(|l| std::str::from_utf8(l).ok())
        && !link.is_empty()
        && !link.contains('/')
    {
        let real = path
            .to_str()
            .map(|p| p.trim_end_matches(" (deleted)"))
            .map(PathBuf::from)
            .unwrap_or_default();
        if let Some(dir) = real.parent() {
            candidates.push(dir.join(link));
            candidates.push(dir.join(".debug").join(link));
            let relative = dir.strip_prefix("/").unwrap_or(dir);
            candidates.push(Path::new(DEBUG_DIR).join(relative).join(link));
        }
    }
    candidates.into_iter().find_map(|candidate| {
        if candidate == path {
            return None;
        }
        let data = Data::mapped(File::open(&candidate).ok()?)?;
        let elf = ElfFile::parse(&data)?;
        let matches = match elf.build_id() {
            Some(id) => running_id.is_empty() || id == running_id,
            None => running_id.is_empty(),
        };
        (matches && elf.has_dwarf()).then_some(data)
    })
}

/// A line of `/proc/self/maps` that belongs to an image.
struct MapsEntry {
    start: u64,
    end: u64,
    dev: u64,
    inode: u64,
}

fn maps_entries(image: &Image) -> Vec<MapsEntry> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let _perms = fields.next()?;
            let _offset = fields.next()?;
            let (major, minor) = fields.next()?.split_once(':')?;
            let inode = fields.next()?.parse().ok()?;
            let entry = MapsEntry {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                dev: libc::makedev(
                    u32::from_str_radix(major, 16).ok()?,
                    u32::from_str_radix(minor, 16).ok()?,
                ),
                inode,
            };
            (inode != 0 && image_holds(image, entry.start, entry.end)).then_some(entry)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_file_cut_short_or_rewritten_is_seen_as_changed() {
        let dir = std::env::temp_dir().join(format!("pprof-core-mapped-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("file");
        std::fs::write(&path, vec![7u8; 64 << 10]).expect("write");
        let data = Data::mapped(File::open(&path).expect("open")).expect("mapped");
        assert!(data.unchanged());
        assert_eq!(data.len(), 64 << 10);
        // Cut short in place (as `cp` onto it does first).
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(4096))
            .expect("truncate");
        assert!(!data.unchanged(), "a file cut short must not be read again");
        assert!(Data::Owned(vec![1, 2, 3]).unchanged());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
