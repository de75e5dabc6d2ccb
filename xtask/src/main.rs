//! `cargo xtask ci`: formatting, lints and every test, exactly as CI runs them.

use std::process::{Command, ExitCode};
use std::time::Instant;

const USAGE: &str = "usage: cargo xtask ci [--no-lint]

  ci         cargo fmt --check, cargo clippy (warnings are errors), cargo test --workspace
  --no-lint  skip fmt and clippy (quicker local runs)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(args.iter().any(|a| a == "--no-lint")),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
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
    for (name, args) in steps {
        eprintln!("xtask: {name}: cargo {}", args.join(" "));
        let step = Instant::now();
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(&args)
            .status();
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
    eprintln!("xtask: ci passed in {:.0?}", started.elapsed());
    ExitCode::SUCCESS
}
