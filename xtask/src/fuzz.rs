//! `cargo xtask fuzz [--seconds N]`: every cargo-fuzz target in `fuzz/` for
//! a fixed time budget each, then one line per target: executions, corpus
//! size and findings (crashes, inputs that took more than 512 MiB or more
//! than [`TIMEOUT`] seconds, with the file libFuzzer wrote).
//!
//! The targets are built without a sanitizer: the code they run is safe
//! Rust (with overflow checks and debug assertions on), and the memory
//! limit is there to catch input that makes pprof-core allocate too much,
//! which AddressSanitizer's own quarantine and shadow memory would blur.

use std::path::Path;
use std::process::{Command, Stdio};

/// The targets in `fuzz/fuzz_targets/`, each with the longest input
/// libFuzzer makes for it; adding one means adding it here.
const TARGETS: &[(&str, usize)] = &[
    ("request", 4096),
    ("symbol", 4096),
    ("text_cap", 4096),
    ("guards", 4096),
    ("page_params", 4096),
    ("multipart", 16 << 10),
    // Gzip makes 64 KiB as much as about 64 MiB: past every limit.
    ("page", 64 << 10),
];

/// The memory an input may take, in MiB (libFuzzer's `-rss_limit_mb`).
const RSS_LIMIT_MB: u64 = 512;

/// The seconds one input may take (libFuzzer's `-timeout`).
const TIMEOUT: u64 = 20;

struct Outcome {
    target: &'static str,
    execs: u64,
    corpus: u64,
    finding: Option<String>,
}

pub(crate) fn run(seconds: u64) -> Result<(), String> {
    check_tools()?;
    let mut outcomes = Vec::new();
    let seeds = write_seeds()?;
    for &(target, max_len) in TARGETS {
        eprintln!("xtask: fuzz {target} for {seconds} s");
        outcomes.push(fuzz_one(target, max_len, seconds, &seeds)?);
    }
    println!(
        "\n| target | seconds | executions | corpus | findings |  (-rss_limit_mb={RSS_LIMIT_MB} -timeout={TIMEOUT})"
    );
    println!("|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {seconds} | {} | {} | {} |",
            o.target,
            o.execs,
            o.corpus,
            o.finding.as_deref().unwrap_or("none")
        );
    }
    let found = outcomes.iter().filter(|o| o.finding.is_some()).count();
    if found > 0 {
        return Err(format!(
            "{found} target(s) found a crash; reproduce with `cargo +nightly fuzz run TARGET FILE`"
        ));
    }
    Ok(())
}

fn check_tools() -> Result<(), String> {
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !nightly {
        return Err(
            "fuzzing needs a nightly toolchain (libFuzzer's sanitizer flags): \
                    rustup toolchain install nightly"
                .into(),
        );
    }
    let cargo_fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !cargo_fuzz {
        return Err("cargo-fuzz is not installed: cargo install cargo-fuzz".into());
    }
    Ok(())
}

fn fuzz_one(
    target: &'static str,
    max_len: usize,
    seconds: u64,
    generated: &Path,
) -> Result<Outcome, String> {
    let corpus = format!("fuzz/corpus/{target}");
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{corpus}: {e}"))?;
    // The first directory is where libFuzzer keeps what it learns; the
    // seeds (committed text, and the binary ones written from code) are
    // read only.
    let mut seeds = Vec::new();
    for dir in [Path::new("fuzz/seeds").join(target), generated.join(target)] {
        if dir.is_dir() {
            seeds.push(dir.display().to_string());
        }
    }
    let output = Command::new("cargo")
        .args([
            "+nightly",
            "fuzz",
            "run",
            "--sanitizer",
            "none",
            "--debug-assertions",
        ])
        .args([target, &corpus])
        .args(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={max_len}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={TIMEOUT}"))
        .arg("-print_final_stats=1")
        .stdout(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo fuzz: {e}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let stat = |name: &str| {
        log.lines()
            .filter_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .next_back()
            .unwrap_or(0)
    };
    let finding = if output.status.success() {
        None
    } else {
        let artifact = log.lines().find_map(|l| {
            l.split_once("Test unit written to ")
                .map(|(_, f)| f.trim().to_owned())
        });
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        Some(artifact.unwrap_or_else(|| format!("cargo fuzz failed ({})", output.status)))
    };
    let corpus_files = Path::new(&corpus)
        .read_dir()
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Ok(Outcome {
        target,
        execs: stat("number_of_executed_units"),
        corpus: corpus_files,
        finding,
    })
}

/// Write the binary seeds (profiles, a form carrying one) from code, so
/// none is committed: under `target/fuzz-seeds/TARGET/`.
fn write_seeds() -> Result<std::path::PathBuf, String> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let root = Path::new(&target).join("fuzz-seeds");
    let profile = seed_profile();
    let gzipped = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&profile).map_err(|e| e.to_string())?;
        gz.finish().map_err(|e| e.to_string())?
    };
    let mut focused = b"focus=eat&sample_index=0\n".to_vec();
    focused.extend_from_slice(&profile);
    let mut form = b"X\n--X\r\nContent-Disposition: form-data; name=\"seconds\"\r\n\r\n5\r\n--X\r\nContent-Disposition: form-data; name=\"baseline\"; filename=\"b.pb.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    form.extend_from_slice(&gzipped);
    form.extend_from_slice(b"\r\n--X--\r\n");
    let seeds: [(&str, &str, &[u8]); 4] = [
        ("page", "raw", &profile),
        ("page", "gzipped", &gzipped),
        ("page", "focused", &focused),
        ("multipart", "form", &form),
    ];
    for (target, name, bytes) in seeds {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join(name), bytes).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(root)
}

/// A small goroutine profile.proto, encoded by hand: two stacks of
/// `main`, `eat` and `nap` in `src/zoo.rs`, one with an inlined frame and
/// a label.
fn seed_profile() -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes(out: &mut Vec<u8>, field: u64, data: &[u8]) {
        varint(out, field << 3 | 2);
        varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }
    fn numbers(fields: &[(u64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (field, value) in fields {
            varint(&mut out, field << 3);
            varint(&mut out, *value);
        }
        out
    }
    fn packed(values: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            varint(&mut out, *v);
        }
        out
    }
    let mut p = Vec::new();
    // sample_type: goroutine/count (strings 1, 2).
    bytes(&mut p, 1, &numbers(&[(1, 1), (2, 2)]));
    // Samples: location ids leaf first, one value, one label (key 6, num 64).
    for (locations, value) in [(&[3u64, 1][..], 5u64), (&[2, 1], 2)] {
        let mut sample = Vec::new();
        bytes(&mut sample, 1, &packed(locations));
        bytes(&mut sample, 2, &packed(&[value]));
        bytes(&mut sample, 3, &numbers(&[(1, 6), (3, 64)]));
        bytes(&mut p, 2, &sample);
    }
    // Locations: 1 main, 2 nap, 3 eat with nap inlined into it.
    for (id, lines) in [
        (1u64, &[(1u64, 3u64)][..]),
        (2, &[(3, 9)]),
        (3, &[(2, 7), (3, 8)]),
    ] {
        let mut location = numbers(&[(1, id), (3, 0x1000 * id)]);
        for (function, line) in lines {
            bytes(&mut location, 4, &numbers(&[(1, *function), (2, *line)]));
        }
        bytes(&mut p, 4, &location);
    }
    // Functions: id, name, system name, file (string 7).
    for (id, name) in [(1u64, 3u64), (2, 4), (3, 5)] {
        bytes(
            &mut p,
            5,
            &numbers(&[(1, id), (2, name), (3, name), (4, 7)]),
        );
    }
    for s in [
        "",
        "goroutine",
        "count",
        "main",
        "zoo::eat",
        "zoo::nap",
        "bytes",
        "src/zoo.rs",
    ] {
        bytes(&mut p, 6, s.as_bytes());
    }
    p
}
