//! `cargo xtask fuzz [--seconds N]`: every cargo-fuzz target in `fuzz/` for
//! a fixed time budget each, then one line per target: executions, corpus
//! size and findings (crashes, with the file libFuzzer wrote).

use std::path::Path;
use std::process::{Command, Stdio};

/// The targets in `fuzz/fuzz_targets/`; adding one means adding it here.
const TARGETS: &[&str] = &["request", "symbol", "text_cap"];

struct Outcome {
    target: &'static str,
    execs: u64,
    corpus: u64,
    finding: Option<String>,
}

pub(crate) fn run(seconds: u64) -> Result<(), String> {
    check_tools()?;
    let mut outcomes = Vec::new();
    for &target in TARGETS {
        eprintln!("xtask: fuzz {target} for {seconds} s");
        outcomes.push(fuzz_one(target, seconds)?);
    }
    println!("\n| target | seconds | executions | corpus | findings |");
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

fn fuzz_one(target: &'static str, seconds: u64) -> Result<Outcome, String> {
    let corpus = format!("fuzz/corpus/{target}");
    let seeds = format!("fuzz/seeds/{target}");
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{corpus}: {e}"))?;
    // The first directory is where libFuzzer keeps what it learns; the seeds are read only.
    let output = Command::new("cargo")
        .args(["+nightly", "fuzz", "run", target, &corpus, &seeds, "--"])
        .arg(format!("-max_total_time={seconds}"))
        .args(["-print_final_stats=1", "-max_len=4096"])
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
