//! The first symbolization's cost, each case in a freshly started release
//! process: its anonymous memory (`RssAnon` of `/proc/PID/status` before
//! the request, the highest value seen while it runs, right after it) and
//! the request's time. Run on the bench server (the large binary: three
//! frameworks) and on the examples, so the growth with the binary's size,
//! or its absence, shows; and with more and more addresses asked of
//! `/symbol`, so the growth with the addresses asked shows.
//!
//! `cargo xtask bench` runs it after the throughput cases; `cargo xtask
//! bench --symbols-only [--binary PATH]...` runs only it, on the given
//! binaries (any build of the bench server or an example) instead of
//! building them, which is how the "before" numbers of older builds are
//! taken with the same harness. Nothing is asserted.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one fresh process is asked.
#[derive(Clone, Copy)]
enum Case {
    /// `GET /debug/pprof/goroutine`: every thread's stack, symbolized.
    Goroutine,
    /// `POST /debug/pprof/symbol` with this many addresses spread evenly
    /// over the executable's code; with none, the cost of the request
    /// itself (a blocking-pool thread, the HTTP answer), to subtract.
    Symbol(usize),
}

impl Case {
    fn label(self) -> String {
        match self {
            Case::Goroutine => "first `/goroutine`".to_owned(),
            Case::Symbol(0) => "`/symbol`, no address (the request alone)".to_owned(),
            Case::Symbol(n) => format!("first `/symbol`, {n} addresses"),
        }
    }
}

/// Measure every case on every binary (fresh process each) and print one
/// table.
pub(crate) fn run(binaries: &[String], quick: bool) -> Result<(), String> {
    let cases: &[Case] = if quick {
        &[Case::Symbol(0), Case::Goroutine, Case::Symbol(1000)]
    } else {
        &[
            Case::Symbol(0),
            Case::Goroutine,
            Case::Symbol(100),
            Case::Symbol(1000),
            Case::Symbol(4000),
        ]
    };
    println!(
        "\n| first symbolization (fresh process) | binary (size) | RssAnon before | peak | right after | request |"
    );
    println!("|---|---|---|---|---|---|");
    for binary in binaries {
        let size = std::fs::metadata(binary).map_or(0.0, |m| m.len() as f64 / 1048576.0);
        let name = binary.rsplit('/').next().unwrap_or(binary);
        for case in cases {
            let m = measure(binary, *case)?;
            println!(
                "| {} | {name} ({size:.0} MiB) | {:.1} MiB | {:.1} MiB (+{:.1}) | {:.1} MiB | {:.0} ms{} |",
                case.label(),
                m.before,
                m.peak,
                m.peak - m.before,
                m.after,
                m.elapsed.as_secs_f64() * 1000.0,
                m.note,
            );
        }
    }
    Ok(())
}

/// The release binaries `cargo xtask bench` measures: the bench server,
/// and in a full run the axum example and the practice program too.
pub(crate) fn build(target: &str, quick: bool) -> Result<Vec<String>, String> {
    let mut packages = vec!["bench-server"];
    if !quick {
        packages.extend(["axum-example", "practice"]);
    }
    let mut command = super::cargo();
    command.args(["build", "--release"]);
    for p in &packages {
        command.args(["-p", p]);
    }
    let status = command.status().map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("building the symbolization binaries failed".into());
    }
    Ok(packages
        .iter()
        .map(|p| format!("{target}/release/{p}"))
        .collect())
}

struct Measured {
    before: f64,
    peak: f64,
    after: f64,
    elapsed: Duration,
    note: String,
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn measure(binary: &str, case: Case) -> Result<Measured, String> {
    // A port nobody listens on now (other benches may run on this machine).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut command = Command::new(binary);
    if binary.contains("bench-server") {
        command.args(["serve", "--framework", "axum", "--pprof"]);
    }
    let child = command
        .args(["--addr", &addr])
        .env("_RJEM_MALLOC_CONF", "prof:false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{binary}: {e}"))?;
    let process = Process(child);
    let pid = process.0.id();
    let started = Instant::now();
    let mut process = process;
    while TcpStream::connect(&addr).is_err() {
        if process.0.try_wait().is_ok_and(|exited| exited.is_some()) {
            return Err(format!("{binary} exited before listening on {addr}"));
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!("{binary} did not listen on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let start-up allocations settle.
    std::thread::sleep(Duration::from_millis(500));
    let request = match case {
        Case::Goroutine => {
            format!(
                "GET /debug/pprof/goroutine HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
        }
        Case::Symbol(n) => {
            let body = if n == 0 {
                String::new()
            } else {
                spread_addresses(pid, n)?
            };
            format!(
                "POST /debug/pprof/symbol HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
    };
    let before = crate::procfs::rss_anon_mib(pid);
    let peak_kib = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak_kib, done) = (peak_kib.clone(), done.clone());
        // Every 0.2 ms: a spike shorter than that moves nothing that counts.
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak_kib.fetch_max(crate::procfs::rss_anon_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let sent = Instant::now();
    let answer = crate::http::exchange(&addr, &request);
    let elapsed = sent.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let after = crate::procfs::rss_anon_mib(pid);
    let (status, body) = answer?;
    let note = match (case, status) {
        (_, 200) if body.is_empty() => " (empty answer)".to_owned(),
        (Case::Symbol(_), 200) => format!(
            ", {} named",
            String::from_utf8_lossy(&body)
                .lines()
                .count()
                .saturating_sub(1)
        ),
        (_, 200) => String::new(),
        (_, other) => format!(" (answered {other})"),
    };
    Ok(Measured {
        before,
        peak: (peak_kib.load(Ordering::Relaxed) as f64 / 1024.0).max(before.max(after)),
        after,
        elapsed,
        note,
    })
}

/// `n` addresses spread evenly over the process's first executable mapping
/// of its own binary, joined by `+` as Go's symbol protocol has them.
fn spread_addresses(pid: u32, n: usize) -> Result<String, String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| e.to_string())?;
    let exe = exe.to_string_lossy().into_owned();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| e.to_string())?;
    let (start, end) = maps
        .lines()
        .filter(|l| l.ends_with(&exe))
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            fields.next()?.contains('x').then(|| {
                Some((
                    u64::from_str_radix(start, 16).ok()?,
                    u64::from_str_radix(end, 16).ok()?,
                ))
            })?
        })
        .ok_or_else(|| format!("no code mapping of {exe}"))?;
    let step = (end - start) / n.max(1) as u64;
    Ok((0..n as u64)
        .map(|i| format!("{:#x}", start + i * step + step / 2))
        .collect::<Vec<_>>()
        .join("+"))
}
