//! `cargo xtask ci`: formatting, lints and every test, exactly as CI runs them.
//! `cargo xtask practice`: the tutorial in one command.
//! `cargo xtask fuzz`, `cargo xtask soak`: the long checks, not part of ci.

mod bench;
mod fuzz;
mod http;
mod procfs;
mod proto;
mod soak;
mod symbols;

use std::net::TcpStream;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: cargo xtask ci [--no-lint] | cargo xtask practice | cargo xtask bench [--quick]
       cargo xtask bench --symbols-only [--quick] [--binary PATH]...
       cargo xtask bench --uploads-only [--quick]
       cargo xtask fuzz [--seconds N] | cargo xtask soak [--profiles N] | cargo xtask proto

  ci         cargo fmt --check, cargo clippy (warnings are errors), cargo test --workspace,
             the fuzz targets compiled (cargo check, stable),
             then bench --quick (proves the bench harness works; its numbers mean little)
  --no-lint  skip fmt and clippy (quicker local runs)
  bench      release builds, wrk load on loopback: the cost of being profiled, next to Go
  --quick    every bench case, briefly
  --symbols-only  only the first symbolization's memory and time, each case in a fresh
             process, on the given binaries (default: release builds of the bench server,
             the axum example and the practice program)
  --uploads-only  only the pages' worst accepted uploads (and two refused ones): status,
             time to the page, the server's peak RSS
  practice   start the practice zoo on 127.0.0.1:6060 and run go tool pprof -top on each
             profile: CPU (10 s), heap, allocs, goroutine, mutex, block
  fuzz       every cargo-fuzz target in fuzz/ for N seconds each (default 60; needs
             nightly and cargo-fuzz): executions and findings per target
  proto      regenerate pprof-core's profile.proto types with prost (needs protoc);
             ci checks the committed ones are current
  soak       the practice service (release, jemalloc profiling on) under wrk load takes
             N (default 300) 1 s CPU profiles, each followed by a heap/allocs/... dump:
             crashes, hangs, failed requests, RSS trend (see docs/SOAK.md)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(args.iter().any(|a| a == "--no-lint")),
        Some("practice") => practice(),
        Some("bench") if args.iter().any(|a| a == "--symbols-only") => {
            let quick = args.iter().any(|a| a == "--quick");
            let given: Vec<String> = args
                .windows(2)
                .filter(|w| w[0] == "--binary")
                .map(|w| w[1].clone())
                .collect();
            let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
            let binaries = if given.is_empty() {
                symbols::build(&target, quick)
            } else {
                Ok(given)
            };
            report("bench", binaries.and_then(|b| symbols::run(&b, quick)))
        }
        Some("bench") if args.iter().any(|a| a == "--uploads-only") => report(
            "bench",
            bench::uploads_only(args.iter().any(|a| a == "--quick")),
        ),
        Some("bench") => match bench::run(args.iter().any(|a| a == "--quick")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask: bench failed: {e}");
                ExitCode::FAILURE
            }
        },
        Some("proto") => report("proto", proto::run()),
        Some("fuzz") => report("fuzz", fuzz::run(number_after(&args, "--seconds", 60))),
        Some("soak") => report("soak", soak::run(number_after(&args, "--profiles", 300))),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The number after `flag` in `args`, or `default`.
fn number_after<T: std::str::FromStr + Copy>(args: &[String], flag: &str, default: T) -> T {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(what: &str, outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {what} failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Build and start the practice program, then ask go tool pprof what each
/// profile shows, as the README's tutorial does by hand.
fn practice() -> ExitCode {
    const ADDR: &str = "127.0.0.1:6060";
    if !cargo()
        .args(["build", "-p", "practice"])
        .status()
        .is_ok_and(|s| s.success())
    {
        return ExitCode::FAILURE;
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let mut server = match Command::new(format!("{target}/debug/practice"))
        .args(["--addr", ADDR])
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("xtask: cannot start practice: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    while TcpStream::connect(ADDR).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            eprintln!("xtask: practice did not listen on {ADDR}");
            let _ = server.kill();
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the animals live a few rounds first.
    std::thread::sleep(Duration::from_secs(5));
    let steps: [(&str, &[&str], &str); 6] = [
        (
            "CPU: who burns it?",
            &[
                "-top",
                "http://127.0.0.1:6060/debug/pprof/profile?seconds=10",
            ],
            "flamegraph?profile=profile&seconds=10",
        ),
        (
            "Heap: who holds memory?",
            &["-top", "http://127.0.0.1:6060/debug/pprof/heap"],
            "top?profile=heap",
        ),
        (
            "Allocations: who churns memory?",
            &[
                "-sample_index=alloc_space",
                "-top",
                "http://127.0.0.1:6060/debug/pprof/allocs",
            ],
            "flamegraph?profile=allocs",
        ),
        (
            "Threads: who leaks them?",
            &["-top", "http://127.0.0.1:6060/debug/pprof/goroutine"],
            "flamegraph?profile=goroutine",
        ),
        (
            "Locks: who holds them while others wait?",
            &["-top", "http://127.0.0.1:6060/debug/pprof/mutex"],
            "flamegraph?profile=mutex",
        ),
        (
            "Blocking: who waits?",
            &["-top", "http://127.0.0.1:6060/debug/pprof/block"],
            "flamegraph?profile=block",
        ),
    ];
    let mut ok = true;
    for (title, args, page) in steps {
        println!(
            "\n=== {title}\nin a browser: http://{ADDR}/debug/pprof/ui/{page}\n$ go tool pprof {}",
            args.join(" ")
        );
        let status = Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("xtask: go tool pprof failed (is golang-go installed?)");
            ok = false;
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn ci(skip_lint: bool) -> ExitCode {
    let started = Instant::now();
    let mut steps: Vec<(&str, Vec<&str>)> = Vec::new();
    if !skip_lint {
        steps.push(("format", vec!["fmt", "--all", "--check"]));
        steps.push((
            "lints",
            vec![
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ));
    }
    steps.push(("tests", vec!["test", "--workspace"]));
    let mut totals = Totals::default();
    for (name, args) in steps {
        eprintln!("xtask: {name}: cargo {}", args.join(" "));
        let step = Instant::now();
        let status = if name == "tests" {
            run_counting(cargo().args(&args), &mut totals)
        } else {
            cargo().args(&args).status()
        };
        match status {
            Ok(s) if s.success() => {
                eprintln!("xtask: {name} passed in {:.0?}", step.elapsed());
            }
            Ok(s) => {
                eprintln!("xtask: {name} failed ({s})");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("xtask: cannot run cargo: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let step = Instant::now();
    eprintln!(
        "xtask: package: cargo package --no-verify -p {}",
        PUBLISHED.join(" -p ")
    );
    if let Err(e) = package() {
        eprintln!("xtask: package failed: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("xtask: package passed in {:.0?}", step.elapsed());
    if let Err(e) = ui_feature_drops_its_dependencies() {
        eprintln!("xtask: features failed: {e}");
        return ExitCode::FAILURE;
    }
    // tokio's task dumps need `--cfg tokio_unstable`, which changes every
    // crate's flags: its own target directory keeps the main one intact.
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let step = Instant::now();
    eprintln!(
        "xtask: task dumps: RUSTFLAGS=\"--cfg tokio_unstable\" cargo test -p pprof-core --features tokio-taskdump --lib tasks"
    );
    let status = run_counting(
        cargo()
            .args([
                "test",
                "-p",
                "pprof-core",
                "--features",
                "tokio-taskdump",
                "--lib",
                "tasks",
            ])
            .env("RUSTFLAGS", "--cfg tokio_unstable")
            .env("CARGO_TARGET_DIR", format!("{target}/taskdump")),
        &mut totals,
    );
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("xtask: task dumps failed");
        return ExitCode::FAILURE;
    }
    eprintln!("xtask: task dumps passed in {:.0?}", step.elapsed());
    // The fuzz targets are built by nightly `cargo fuzz`, outside the
    // workspace; checking them on stable keeps the `fuzzing` feature and
    // the targets compiling (a refactor once broke them unseen).
    let step = Instant::now();
    eprintln!("xtask: fuzz targets: cargo check --manifest-path fuzz/Cargo.toml");
    let status = cargo()
        .args(["check", "--manifest-path", "fuzz/Cargo.toml"])
        .env("CARGO_TARGET_DIR", format!("{target}/fuzz-check"))
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("xtask: fuzz targets failed to compile");
        return ExitCode::FAILURE;
    }
    eprintln!("xtask: fuzz targets passed in {:.0?}", step.elapsed());
    eprintln!("xtask: bench --quick (the harness, not the numbers)");
    if let Err(e) = bench::run(true) {
        eprintln!("xtask: bench --quick failed: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("xtask: ci passed in {:.0?}", started.elapsed());
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    ExitCode::SUCCESS
}

/// The crates published to crates.io, in dependency order.
const PUBLISHED: [&str; 4] = ["pprof-core", "pprof-axum", "pprof-actix", "pprof-warp"];

/// Package every published crate (together, so the adapters find the
/// unpublished core), then check each package holds only its own files:
/// its manifest, README, both license texts, its `src/` (and pprof-core
/// the `proto/` its generated types come from).
fn package() -> Result<(), String> {
    let mut command = cargo();
    command.args(["package", "--no-verify", "--allow-dirty", "--quiet"]);
    for name in PUBLISHED {
        command.args(["-p", name]);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo package: {status}"));
    }
    for name in PUBLISHED {
        let output = cargo()
            .args(["package", "--list", "--allow-dirty", "-p", name])
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        let listed = String::from_utf8_lossy(&output.stdout).into_owned();
        let files: Vec<&str> = listed.lines().collect();
        for needed in [
            "Cargo.toml",
            "README.md",
            "LICENSE-MIT",
            "LICENSE-APACHE",
            "src/lib.rs",
        ] {
            if !files.contains(&needed) {
                return Err(format!("{name}'s package lacks {needed}: {files:?}"));
            }
        }
        let belongs = |f: &str| {
            f.starts_with("src/")
                || (name == "pprof-core" && f.starts_with("proto/"))
                || [
                    "Cargo.toml",
                    "Cargo.toml.orig",
                    "Cargo.lock",
                    "README.md",
                    "LICENSE-MIT",
                    "LICENSE-APACHE",
                    ".cargo_vcs_info.json",
                ]
                .contains(&f)
        };
        let stray: Vec<&&str> = files.iter().filter(|f| !belongs(f)).collect();
        if !stray.is_empty() {
            return Err(format!(
                "{name}'s package holds files of no use to it: {stray:?}"
            ));
        }
        eprintln!("xtask: package: {name}: {} files", files.len());
    }
    Ok(())
}

/// pprof-core without default features has none of the `ui` feature's
/// dependencies (the README promises `default-features = false` drops them).
fn ui_feature_drops_its_dependencies() -> Result<(), String> {
    const UI_ONLY: [&str; 3] = ["inferno", "multer", "regex"];
    let tree = |features: &[&str]| -> Result<String, String> {
        let output = cargo()
            .args([
                "tree",
                "-p",
                "pprof-core",
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .args(features)
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let has = |tree: &str, name: &str| tree.lines().any(|l| l.starts_with(&format!("{name} v")));
    let with = tree(&[])?;
    let without = tree(&["--no-default-features"])?;
    for name in UI_ONLY {
        if !has(&with, name) {
            return Err(format!("{name} is not a dependency of the default build"));
        }
        if has(&without, name) {
            return Err(format!(
                "{name} is still there with default-features = false"
            ));
        }
    }
    eprintln!(
        "xtask: features: default-features = false drops {}",
        UI_ONLY.join(", ")
    );
    Ok(())
}

/// Test counts summed over every `test result:` line cargo printed.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Run a `cargo test` command, echoing its output and summing its counts,
/// so that one closing line can say how many tests ran in all.
fn run_counting(
    command: &mut Command,
    totals: &mut Totals,
) -> std::io::Result<std::process::ExitStatus> {
    use std::io::{BufRead, BufReader};
    let mut child = command.stdout(std::process::Stdio::piped()).spawn()?;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |word: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .trim_start_matches("ok. ")
                                .trim_start_matches("FAILED. ")
                                .strip_suffix(word)
                        })
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                totals.passed += count("passed");
                totals.failed += count("failed");
                totals.ignored += count("ignored");
            }
        }
    }
    child.wait()
}
