//! The process's executable mappings and their build ids, for
//! profile.proto's `Mapping` table. A build id is the one the running image
//! carries in its mapped notes, not what the file on disk says now: the
//! file may have been replaced (a deploy, a package upgrade) since the
//! process started.

use crate::signals::{Image, images};

use super::elf::build_id_in_notes;

/// One executable mapping of the process, from `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub(crate) start: u64,
    pub(crate) limit: u64,
    pub(crate) offset: u64,
    pub(crate) path: String,
    /// Lowercase hex, empty when the image carries none.
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
    let images = images();
    for m in &mut found {
        if let Some(image) = images.iter().find(|i| image_holds(i, m.start, m.limit)) {
            m.build_id = hex(&build_id(image));
        }
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

    /// Read `len` bytes of this process's memory at `at` through the kernel
    /// (`/proc/self/mem`), a path independent of the loader's tables.
    fn memory(at: u64, len: usize) -> Vec<u8> {
        use std::io::{Read, Seek, SeekFrom};
        let mut mem = std::fs::File::open("/proc/self/mem").expect("/proc/self/mem");
        mem.seek(SeekFrom::Start(at)).expect("seek");
        let mut bytes = vec![0; len];
        mem.read_exact(&mut bytes).expect("read");
        bytes
    }

    /// The GNU build id in the notes of the main program as mapped now,
    /// found from its ELF header in memory.
    fn build_id_in_memory() -> String {
        let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at =
            |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let u64_at =
            |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let main = &mappings()[0];
        // The mapping that holds the ELF header (file offset 0).
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let header_at = maps
            .lines()
            .filter(|l| l.ends_with(&main.path))
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let start = f.next()?.split_once('-')?.0;
                let offset = f.nth(1)?;
                (u64::from_str_radix(offset, 16).ok()? == 0)
                    .then(|| u64::from_str_radix(start, 16).ok())?
            })
            .expect("the main program's first mapping");
        let header = memory(header_at, 64);
        assert_eq!(&header[..4], b"\x7fELF");
        let (phoff, phentsize, phnum) = (
            u64_at(&header, 0x20),
            u16_at(&header, 0x36),
            u16_at(&header, 0x38),
        );
        let phdrs = memory(
            header_at + phoff,
            usize::from(phentsize) * usize::from(phnum),
        );
        let phdrs: Vec<&[u8]> = phdrs.chunks(usize::from(phentsize)).collect();
        let first_load = phdrs
            .iter()
            .find(|p| u32_at(p, 0) == 1 && u64_at(p, 8) == 0)
            .map(|p| u64_at(p, 16))
            .expect("a PT_LOAD at offset 0");
        let bias = header_at - first_load;
        for p in phdrs.iter().filter(|p| u32_at(p, 0) == 4) {
            let notes = memory(
                bias + u64_at(p, 16),
                usize::try_from(u64_at(p, 40)).unwrap_or(0),
            );
            let mut at = 0;
            while at + 12 <= notes.len() {
                let (namesz, descsz, kind) = (
                    u32_at(&notes, at) as usize,
                    u32_at(&notes, at + 4) as usize,
                    u32_at(&notes, at + 8),
                );
                let desc = at + 12 + namesz.div_ceil(4) * 4;
                if kind == 3 && notes.get(at + 12..at + 12 + namesz) == Some(b"GNU\0") {
                    return hex(&notes[desc..desc + descsz]);
                }
                at = desc + descsz.div_ceil(4) * 4;
            }
        }
        String::new()
    }

    #[test]
    fn the_build_id_is_the_one_in_the_running_image() {
        let in_memory = build_id_in_memory();
        assert!(!in_memory.is_empty());
        assert_eq!(mappings()[0].build_id, in_memory);
    }

    const REPLACED_CHILD: &str = "PPROF_CORE_TEST_REPLACED_CHILD";

    #[inline(never)]
    fn a_function_to_name() -> u64 {
        a_function_to_name as fn() -> u64 as usize as u64 + 1
    }

    /// The process runs a binary whose file is then replaced on disk (as a
    /// deploy does): its mapping keeps the running image's build id, and its
    /// own functions still resolve.
    #[test]
    fn a_replaced_binary_keeps_its_build_id_and_names() {
        use std::io::{BufRead, BufReader, Write};
        use std::process::{Command, Stdio};
        if std::env::var_os(REPLACED_CHILD).is_some() {
            // Straight to the pipe, past the test harness's output capture.
            let mut out = std::io::stdout();
            let _ = writeln!(out, "child: ready").and_then(|()| out.flush());
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let pc = a_function_to_name();
            let frames = crate::symbols::symbolizer().resolve_all([pc]);
            let name = frames[&pc].first().map(|f| f.name.to_string());
            let _ = writeln!(out, "child: build_id={}", mappings()[0].build_id);
            let _ = writeln!(out, "child: name={}", name.unwrap_or_default());
            let _ = out.flush();
            return;
        }
        let exe = std::env::current_exe().expect("current_exe");
        // A second name for the test binary (a hard link beside it: no
        // copy, so the test costs little CPU next to the CPU profiler's).
        let name = format!("pprof-core-replaced-{}", std::process::id());
        let mut dir = exe.with_file_name(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory beside the test binary");
        let mut copy = dir.join("service");
        if std::fs::hard_link(&exe, &copy).is_err() {
            let _ = std::fs::remove_dir_all(&dir);
            dir = std::env::temp_dir().join(&name);
            std::fs::create_dir_all(&dir).expect("temp dir");
            copy = dir.join("service");
            std::fs::copy(&exe, &copy).expect("copy the test binary");
        }
        let disk_id = |path: &std::path::Path| {
            let file = std::fs::File::open(path).expect("open");
            let map = crate::signals::map_file(&file).expect("map");
            super::super::elf::ElfFile::parse(&map)
                .and_then(|e| e.build_id().map(hex))
                .unwrap_or_default()
        };
        let original = disk_id(&copy);
        // Another ELF file with another build id: the C library.
        let other = crate::signals::images()
            .into_iter()
            .find(|i| i.name.contains("libc.so"))
            .map(|i| std::path::PathBuf::from(i.name))
            .expect("libc is loaded");
        let replacement = dir.join("service.new");
        std::fs::copy(&other, &replacement).expect("copy libc");
        let replaced_id = disk_id(&replacement);
        assert_ne!(original, replaced_id);

        let mut child = Command::new(&copy)
            .args([
                "--exact",
                "symbols::maps::tests::a_replaced_binary_keeps_its_build_id_and_names",
                "--test-threads=1",
            ])
            .env(REPLACED_CHILD, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the copy");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        // The harness may print its own words before ours on a line.
        let mut said = |what: &str| {
            lines
                .by_ref()
                .map_while(Result::ok)
                .find_map(|l| l.find(what).map(|at| l[at + what.len()..].to_owned()))
        };
        assert!(said("child: ready").is_some());
        std::fs::rename(&replacement, &copy).expect("replace the binary on disk");
        assert_eq!(disk_id(&copy), replaced_id);
        writeln!(child.stdin.take().expect("stdin")).expect("tell the child");
        let build_id = said("child: build_id=").unwrap_or_default();
        let name = said("child: name=").unwrap_or_default();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            build_id, original,
            "the running image's id, not the new file's"
        );
        assert_eq!(name, "pprof_core::symbols::maps::tests::a_function_to_name");
    }
}
