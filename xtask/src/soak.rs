//! `cargo xtask soak [--profiles N]`: the practice service, release build,
//! jemalloc profiling on, under `wrk` load on its own route, takes N
//! consecutive 1-second CPU profiles, each followed by one dump of the next
//! profile in turn (heap, allocs, goroutine, ...: whichever this build
//! serves). It counts crashes, hangs (a request over its timeout), failed
//! pprof requests and failed app requests, samples the RSS, and prints a
//! summary to paste into docs/SOAK.md.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ADDR: &str = "127.0.0.1:6071";
/// Dumps taken between CPU profiles, in turn. Paths this build does not
/// serve (404 at start-up) are left out and named in the summary, so a new
/// profile type is one more entry here.
const DUMPS: &[&str] = &[
    "heap",
    "allocs",
    "goroutine",
    "goroutine?debug=2",
    "threadcreate",
    "mutex",
    "block",
];
/// jemalloc's profiler on, as the practice binary's own `malloc_conf` says.
const MALLOC_CONF: &str = "prof:true,prof_active:true,lg_prof_sample:19,prof_accum:true";
/// RSS before this is warm-up (the practice zoo fills its planted leak,
/// caches fill) and is left out of the trend.
const WARM_UP: Duration = Duration::from_secs(60);
const CPU_TIMEOUT: Duration = Duration::from_secs(15);
const DUMP_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn run(profiles: u32) -> Result<(), String> {
    require("wrk")?;
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    eprintln!("xtask: soak: cargo build --release -p practice");
    let built = crate::cargo()
        .args(["build", "--release", "-p", "practice"])
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        return Err("release build of practice failed".into());
    }
    // Run a copy: a shared target directory may get another build of
    // `practice` while the soak runs.
    let binary = std::env::temp_dir().join(format!("soak-practice-{}", std::process::id()));
    std::fs::copy(format!("{target}/release/practice"), &binary)
        .map_err(|e| format!("copy practice: {e}"))?;
    let mut server = Command::new(&binary)
        // The mouse's planted leak stops at 32 MiB, inside the warm-up.
        .args([
            "--addr",
            ADDR,
            "--steal-kib",
            "8192",
            "--steal-limit-mib",
            "32",
        ])
        .env("_RJEM_MALLOC_CONF", MALLOC_CONF)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("practice: {e}"))?;
    let outcome = soak(&mut server, profiles);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&binary);
    let report = outcome?;
    println!("{report}");
    Ok(())
}

fn require(tool: &str) -> Result<(), String> {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|_| ())
        .map_err(|_| format!("`{tool}` is not installed (apt-get install -y {tool})"))
}

#[derive(Default)]
struct Counts {
    cpu_ok: u32,
    dumps_ok: u32,
    failed: Vec<String>,
    hangs: Vec<String>,
    crash: Option<String>,
}

fn soak(server: &mut Child, profiles: u32) -> Result<String, String> {
    let pid = server.id();
    let started = Instant::now();
    while TcpStream::connect(ADDR).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!("practice did not listen on {ADDR}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (served, left_out): (Vec<&str>, Vec<&str>) = DUMPS.iter().partition(|path| {
        !matches!(
            get(&format!("/debug/pprof/{path}"), DUMP_TIMEOUT),
            Ok((404, _))
        )
    });
    eprintln!("xtask: soak: dumps {served:?}; not served by this build: {left_out:?}");
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || wrk_until(&stop))
    };
    let mut counts = Counts::default();
    let mut rss: Vec<(f64, f64)> = Vec::new();
    let mut stats_after_warm_up = None;
    let soak_start = Instant::now();
    for i in 0..profiles {
        if stats_after_warm_up.is_none() && soak_start.elapsed() >= WARM_UP {
            stats_after_warm_up = Some(memory_stats("after-warm-up"));
        }
        if let Ok(Some(status)) = server.try_wait() {
            counts.crash = Some(format!("practice exited ({status}) before profile {i}"));
            break;
        }
        check(&mut counts, "profile?seconds=1", CPU_TIMEOUT, &mut |ok| {
            ok.cpu_ok += 1
        });
        let dump = served[i as usize % served.len().max(1)];
        check(&mut counts, dump, DUMP_TIMEOUT, &mut |ok| ok.dumps_ok += 1);
        rss.push((
            soak_start.elapsed().as_secs_f64(),
            crate::procfs::rss_mib(pid),
        ));
        if (i + 1) % 25 == 0 {
            eprintln!(
                "xtask: soak: {} profiles, {:.0} s, RSS {:.1} MiB",
                i + 1,
                soak_start.elapsed().as_secs_f64(),
                rss.last().map_or(0.0, |r| r.1)
            );
        }
    }
    if counts.crash.is_none()
        && let Ok(Some(status)) = server.try_wait()
    {
        counts.crash = Some(format!("practice exited ({status}) at the end"));
    }
    let stats_at_end = memory_stats("end");
    stop.store(true, Ordering::Release);
    let load = load.join().map_err(|_| "wrk thread panicked")??;
    let mut report = summary(
        profiles,
        &served,
        &left_out,
        &counts,
        &load,
        &rss,
        soak_start.elapsed(),
    );
    if let Some(start) = stats_after_warm_up {
        report.push_str(&stats_table(&start, &stats_at_end));
    }
    Ok(report)
}

/// One pprof request: 200 with a body within the timeout, or counted.
fn check(counts: &mut Counts, path: &str, timeout: Duration, ok: &mut dyn FnMut(&mut Counts)) {
    match get(&format!("/debug/pprof/{path}"), timeout) {
        Ok((200, body)) if !body.is_empty() => ok(counts),
        Ok((status, body)) => counts.failed.push(format!(
            "{path}: {status} {}",
            String::from_utf8_lossy(&body).trim()
        )),
        Err(e) if e.contains("timed out") || e.contains("WouldBlock") => {
            counts.hangs.push(format!("{path}: {e}"));
        }
        Err(e) => counts.failed.push(format!("{path}: {e}")),
    }
}

/// `GET target` with `Connection: close` and a deadline for the whole answer.
fn get(target: &str, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect(ADDR).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {ADDR}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if started.elapsed() >= timeout => return Err(format!("timed out: {e}")),
            Err(e) => return Err(e.to_string()),
        }
        if started.elapsed() >= timeout {
            return Err("timed out".into());
        }
    }
    Ok(crate::http::split_response(&raw))
}

#[derive(Default)]
struct Load {
    runs: u32,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
}

/// `wrk` on the app's own route, 10 s at a time until told to stop; the
/// counts of every run summed.
fn wrk_until(stop: &AtomicBool) -> Result<Load, String> {
    let mut load = Load::default();
    while !stop.load(Ordering::Acquire) {
        let out = Command::new("wrk")
            .args(["-t1", "-c4", "-d10s", "--timeout", "5s"])
            .arg(format!("http://{ADDR}/"))
            .output()
            .map_err(|e| format!("wrk: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        load.runs += 1;
        for line in text.lines().map(str::trim) {
            if let Some(n) = line
                .split_once(" requests in")
                .and_then(|(n, _)| n.parse::<u64>().ok())
            {
                load.requests += n;
            } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
                load.non_2xx += n.trim().parse::<u64>().unwrap_or(0);
            } else if let Some(errors) = line.strip_prefix("Socket errors:") {
                // "connect 0, read 0, write 0, timeout 0"
                load.socket_errors += errors
                    .split(',')
                    .filter_map(|part| part.split_whitespace().nth(1))
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
    }
    Ok(load)
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

fn summary(
    profiles: u32,
    served: &[&str],
    left_out: &[&str],
    counts: &Counts,
    load: &Load,
    rss: &[(f64, f64)],
    elapsed: Duration,
) -> String {
    let after: Vec<(f64, f64)> = rss
        .iter()
        .copied()
        .filter(|(t, _)| *t >= WARM_UP.as_secs_f64())
        .collect();
    let per_minute = slope(&after) * 60.0;
    let window_min = after
        .first()
        .zip(after.last())
        .map_or(0.0, |(a, b)| (b.0 - a.0) / 60.0);
    let mean = after.iter().map(|p| p.1).sum::<f64>() / (after.len().max(1) as f64);
    let min = after.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = after.iter().map(|p| p.1).fold(0.0, f64::max);
    let third = after.len() / 3;
    let avg = |s: &[(f64, f64)]| s.iter().map(|p| p.1).sum::<f64>() / (s.len().max(1) as f64);
    let (early, late) = (avg(&after[..third]), avg(&after[after.len() - third..]));
    let growth = per_minute * window_min;
    // Settling (caches and tables filling) slows down; a leak keeps its
    // pace. So the verdict reads the second half of the window: no trend
    // when its slope, kept up for an hour, would add less than 5 % of the mean.
    let late_per_minute = slope(&after[after.len() / 2..]) * 60.0;
    let trend_ok = late_per_minute * 60.0 < 0.05 * mean;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "soak: {profiles} rounds in {:.0} s (1 s CPU profile + one dump each; dumps in turn: {}{})",
        elapsed.as_secs_f64(),
        served.join(", "),
        if left_out.is_empty() {
            String::new()
        } else {
            format!("; not served by this build: {}", left_out.join(", "))
        }
    ));
    line(format!(
        "crashes: {}",
        counts
            .crash
            .as_deref()
            .map_or("0".to_owned(), |c| format!("1 ({c})"))
    ));
    line(format!("hangs: {} {:?}", counts.hangs.len(), counts.hangs));
    line(format!(
        "pprof requests: {} CPU profiles ok, {} dumps ok, {} failed {:?}",
        counts.cpu_ok,
        counts.dumps_ok,
        counts.failed.len(),
        counts.failed.iter().take(5).collect::<Vec<_>>()
    ));
    line(format!(
        "app requests (wrk -t1 -c4, {} runs of 10 s): {} total, {} non-2xx, {} socket errors",
        load.runs, load.requests, load.non_2xx, load.socket_errors
    ));
    line(format!(
        "RSS after {} s warm-up ({} samples over {:.1} min): mean {mean:.1} MiB, min {min:.1}, max {max:.1}, \
         first third {early:.1}, last third {late:.1}; fitted slope {per_minute:+.3} MiB/min \
         ({growth:+.1} MiB over the window), second half {late_per_minute:+.3} MiB/min: {}",
        WARM_UP.as_secs(),
        after.len(),
        window_min,
        if trend_ok {
            "no growth trend"
        } else {
            "GROWING"
        }
    ));
    let clean = counts.crash.is_none()
        && counts.hangs.is_empty()
        && counts.failed.is_empty()
        && load.non_2xx == 0
        && load.socket_errors == 0
        && trend_ok;
    line(format!("verdict: {}", if clean { "PASS" } else { "FAIL" }));
    out
}

/// The allocator's and the symbolizer's numbers from `heap?debug=1`'s
/// trailing `# name = value` block; the heap profile itself is saved as
/// `$TMPDIR/soak-heap-{moment}.pb.gz` for `go tool pprof -diff_base`.
fn memory_stats(moment: &str) -> Vec<(String, u64)> {
    if let Ok((200, body)) = get("/debug/pprof/heap", DUMP_TIMEOUT) {
        let path = std::env::temp_dir().join(format!("soak-heap-{moment}.pb.gz"));
        let _ = std::fs::write(&path, body);
    }
    let Ok((200, text)) = get("/debug/pprof/heap?debug=1", DUMP_TIMEOUT) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.strip_prefix("# ")?.split_once(" = "))
        .filter_map(|(k, v)| Some((k.to_owned(), v.trim().parse().ok()?)))
        .collect()
}

fn stats_table(start: &[(String, u64)], end: &[(String, u64)]) -> String {
    let mut out = format!(
        "\nallocator and symbolizer, after warm-up -> end (heap profiles saved as {}/soak-heap-*.pb.gz):\n",
        std::env::temp_dir().display()
    );
    for (name, before) in start {
        if let Some((_, after)) = end.iter().find(|(k, _)| k == name) {
            let change = i128::from(*after) - i128::from(*before);
            out.push_str(&format!("  {name}: {before} -> {after} ({change:+})\n"));
        }
    }
    out
}
