//! `cargo xtask bench [--quick]`: the cost of being profiled, measured as
//! ratios in one run (A/B alternating, several rounds, median), next to Go's
//! net/http/pprof on the same machine. Not a test: nothing here asserts a
//! speed; it prints a table for docs/BENCHMARKS.md.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Plan {
    rounds: usize,
    seconds: u64,
    accuracy_seconds: u64,
}

pub(crate) fn run(quick: bool) -> Result<(), String> {
    let plan = if quick {
        Plan {
            rounds: 1,
            seconds: 1,
            accuracy_seconds: 2,
        }
    } else {
        Plan {
            rounds: 5,
            seconds: 5,
            accuracy_seconds: 10,
        }
    };
    require("wrk", &["--version"], "apt-get install -y wrk")?;
    let (server, target) = build_bench_server()?;
    let go_server = build_go_reference(&target)?;

    println!(
        "## cargo xtask bench{}\n",
        if quick { " --quick" } else { "" }
    );
    println!(
        "{} rounds of {} s per side, each round with freshly started servers warmed up for 1 s, A/B alternating; ratio = B / A requests per second, median over rounds. Servers on core 0, wrk (1 thread, 16 connections) on core 1.\n",
        plan.rounds, plan.seconds
    );
    println!("| case | A | B | A req/s (median) | B req/s (median) | ratio B/A (median) |");
    println!("|---|---|---|---|---|---|");

    // Idle cost of mounted routes, per framework; heap sampling off in both.
    for framework in ["axum", "actix", "warp"] {
        let plain = || Server::start(&server, &["serve", "--framework", framework], 7101, false);
        let mounted = || {
            Server::start(
                &server,
                &["serve", "--framework", framework, "--pprof"],
                7102,
                false,
            )
        };
        compare(
            &plan,
            &format!("routes mounted, idle ({framework})"),
            &Side {
                label: "no routes",
                start: &plain,
                path: "/",
                profiling: false,
            },
            &Side {
                label: "routes",
                start: &mounted,
                path: "/",
                profiling: false,
            },
            false,
        )?;
    }

    // CPU profiling at 100 Hz while under load, ours and Go's.
    let ours = || {
        Server::start(
            &server,
            &["serve", "--framework", "axum", "--pprof"],
            7103,
            false,
        )
    };
    compare(
        &plan,
        "CPU profile running (axum)",
        &Side {
            label: "not profiling",
            start: &ours,
            path: "/",
            profiling: false,
        },
        &Side {
            label: "profiling",
            start: &ours,
            path: "/",
            profiling: true,
        },
        true,
    )?;
    match &go_server {
        Some(go) => {
            let go = || Server::start_go(go, 7104);
            compare(
                &plan,
                "CPU profile running (Go net/http/pprof)",
                &Side {
                    label: "not profiling",
                    start: &go,
                    path: "/",
                    profiling: false,
                },
                &Side {
                    label: "profiling",
                    start: &go,
                    path: "/",
                    profiling: true,
                },
                true,
            )?;
        }
        None => println!("| CPU profile running (Go) | skipped: go not installed | | | | |"),
    }

    // jemalloc heap profiling on (default 512 KiB sampling) vs off.
    let off = || Server::start(&server, &["serve", "--framework", "axum"], 7105, false);
    let on = || Server::start(&server, &["serve", "--framework", "axum"], 7106, true);
    compare(
        &plan,
        "heap profiling on, allocation-heavy handler (axum)",
        &Side {
            label: "prof:false",
            start: &off,
            path: "/alloc",
            profiling: false,
        },
        &Side {
            label: "prof:true",
            start: &on,
            path: "/alloc",
            profiling: false,
        },
        false,
    )?;

    // Poll watching on every request future (axum), hello handler: the
    // per-poll bookkeeping on a busy service.
    let plain = || Server::start(&server, &["serve", "--framework", "axum"], 7107, false);
    let watched = || {
        Server::start(
            &server,
            &["serve", "--framework", "axum", "--watch-polls"],
            7108,
            false,
        )
    };
    compare(
        &plan,
        "poll watching on every request (axum)",
        &Side {
            label: "not watched",
            start: &plain,
            path: "/",
            profiling: false,
        },
        &Side {
            label: "WatchPollsLayer",
            start: &watched,
            path: "/",
            profiling: false,
        },
        false,
    )?;

    endpoint_costs(&server, quick)?;
    upload_pages(&server, &target, quick)?;
    super::symbols::run(&super::symbols::build(&target, quick)?, quick)?;
    thread_dumps(&server, quick)?;
    accuracy(&server, plan.accuracy_seconds)?;
    cpu_sampler(&server, go_server.as_deref(), &target, quick)?;
    locks(&target, quick)
}

/// pprof_core::sync next to std and parking_lot, and a watched poll's cost:
/// the in-process microbenchmarks of `bench/locks`.
fn locks(target: &str, quick: bool) -> Result<(), String> {
    let status = super::cargo()
        .args(["build", "--release", "-p", "bench-locks"])
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("building bench-locks failed".into());
    }
    let mut run = Command::new(format!("{target}/release/bench-locks"));
    if quick {
        run.arg("--quick");
    }
    let status = run.status().map_err(|e| format!("bench-locks: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("bench-locks failed".into())
    }
}

fn require(tool: &str, args: &[&str], install: &str) -> Result<(), String> {
    let ok = Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if ok {
        Ok(())
    } else {
        Err(format!("{tool} is needed: {install}"))
    }
}

/// `go build` the reference server; `None` (loudly) without go, an error
/// under CI.
fn build_go_reference(target: &str) -> Result<Option<String>, String> {
    if require("go", &["version"], "apt-get install -y golang-go").is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            return Err("go is needed for the Go reference under CI".into());
        }
        eprintln!("\n!!! SKIPPED: the Go reference (go is not installed)\n");
        return Ok(None);
    }
    let out = std::fs::canonicalize(target)
        .map_err(|e| format!("{target}: {e}"))?
        .join("go-reference");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir("bench/go-reference")
        .status()
        .map_err(|e| format!("go build: {e}"))?;
    if !status.success() {
        return Err("go build of bench/go-reference failed".into());
    }
    Ok(Some(out.display().to_string()))
}

struct Server {
    child: Child,
    addr: String,
}

/// The servers run on core 0 and wrk on core 1 when `taskset` is there, so
/// load generator and server do not steal each other's core mid-run.
fn pinned(core: &str, program: &str) -> Command {
    if require("taskset", &["-V"], "").is_ok() {
        let mut command = Command::new("taskset");
        command.args(["-c", core, program]);
        command
    } else {
        Command::new(program)
    }
}

impl Server {
    fn start(binary: &str, args: &[&str], port: u16, heap_profiling: bool) -> Result<Self, String> {
        let addr = format!("127.0.0.1:{port}");
        let conf = if heap_profiling {
            "prof:true,prof_active:true,lg_prof_sample:19,prof_accum:true"
        } else {
            "prof:false"
        };
        let child = pinned("0", binary)
            .args(args)
            .args(["--addr", &addr])
            .env("_RJEM_MALLOC_CONF", conf)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("{binary}: {e}"))?;
        Self::ready(child, addr)
    }

    fn start_go(binary: &str, port: u16) -> Result<Self, String> {
        Self::start_go_with(binary, port, &[])
    }

    fn start_go_with(binary: &str, port: u16, args: &[&str]) -> Result<Self, String> {
        let addr = format!("127.0.0.1:{port}");
        let child = pinned("0", binary)
            .args(["-addr", &addr])
            .args(args)
            .spawn()
            .map_err(|e| format!("{binary}: {e}"))?;
        Self::ready(child, addr)
    }

    fn ready(child: Child, addr: String) -> Result<Self, String> {
        let server = Self { child, addr };
        let started = Instant::now();
        while TcpStream::connect(&server.addr).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                return Err(format!("no server on {}", server.addr));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests per second from one `wrk` run.
fn wrk(addr: &str, path: &str, seconds: u64) -> Result<f64, String> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c16",
            &format!("-d{seconds}s"),
            &format!("http://{addr}{path}"),
        ])
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// One side of a comparison: how to start its server, what to load.
struct Side<'a> {
    label: &'a str,
    start: &'a dyn Fn() -> Result<Server, String>,
    path: &'a str,
    /// Load it while a CPU profile of the server runs.
    profiling: bool,
}

/// Alternate A and B runs. Every round starts fresh server processes (one
/// shared by both sides when `same_process`), so a process's own luck
/// (memory layout, placement) is averaged out over rounds like the load's.
fn compare(
    plan: &Plan,
    case: &str,
    a: &Side<'_>,
    b: &Side<'_>,
    same_process: bool,
) -> Result<(), String> {
    let (mut a_rps, mut b_rps, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let server_a = (a.start)()?;
        let server_b = if same_process {
            None
        } else {
            Some((b.start)()?)
        };
        let server_b = server_b.as_ref().unwrap_or(&server_a);
        // Warm both up (connections, allocator, caches); not counted.
        wrk(&server_a.addr, a.path, 1)?;
        wrk(&server_b.addr, b.path, 1)?;
        // Alternate which side goes first, so drift hits both alike.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let (mut ra, mut rb) = (0.0, 0.0);
        for is_b in order {
            let (side, server) = if is_b { (b, server_b) } else { (a, &server_a) };
            let profiling = side.profiling.then(|| {
                let target = format!("/debug/pprof/profile?seconds={}", plan.seconds + 1);
                let addr = server.addr.clone();
                let handle = std::thread::spawn(move || get(&addr, &target));
                std::thread::sleep(Duration::from_millis(300));
                handle
            });
            let rps = wrk(&server.addr, side.path, plan.seconds)?;
            if let Some(handle) = profiling {
                let (status, _, _) = handle.join().map_err(|_| "profile thread panicked")??;
                if status != 200 {
                    return Err(format!("{case}: CPU profile answered {status}"));
                }
            }
            if is_b { rb = rps } else { ra = rps }
        }
        a_rps.push(ra);
        b_rps.push(rb);
        ratios.push(if ra > 0.0 { rb / ra } else { 0.0 });
    }
    println!(
        "| {case} | {} | {} | {:.0} | {:.0} | {:.3} |",
        a.label,
        b.label,
        median(a_rps),
        median(b_rps),
        median(ratios)
    );
    Ok(())
}

/// `GET target` with `Connection: close`: status, body, time to the end.
fn get(addr: &str, target: &str) -> Result<(u16, Vec<u8>, Duration), String> {
    let started = Instant::now();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, body) = crate::http::exchange(addr, &request)?;
    Ok((status, body, started.elapsed()))
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Endpoint latency and process memory, release build, heap profiling on.
fn endpoint_costs(server: &str, quick: bool) -> Result<(), String> {
    let s = Server::start(
        server,
        &["serve", "--framework", "axum", "--pprof"],
        7107,
        true,
    )?;
    let pid = s.pid();
    std::thread::sleep(Duration::from_millis(500));
    let start_rss = crate::procfs::rss_mib(pid);
    let (_, _, cold) = get(&s.addr, "/debug/pprof/heap")?;
    let mut warm = Vec::new();
    for _ in 0..5 {
        warm.push(millis(get(&s.addr, "/debug/pprof/heap")?.2));
    }
    let after_heap = crate::procfs::rss_mib(pid);
    let (status, _, one) = get(&s.addr, "/debug/pprof/profile?seconds=1")?;
    if status != 200 {
        return Err(format!("CPU profile answered {status}"));
    }
    let after_one = crate::procfs::rss_mib(pid);
    for _ in 1..10 {
        get(&s.addr, "/debug/pprof/profile?seconds=1")?;
    }
    let after_ten = crate::procfs::rss_mib(pid);
    // The symbolizer drops its parsed debug info after 10 s idle.
    if !quick {
        std::thread::sleep(Duration::from_secs(16));
    }
    let idle = crate::procfs::rss_mib(pid);
    let (_, text, _) = get(&s.addr, "/debug/pprof/heap?debug=1")?;
    let text = String::from_utf8_lossy(&text);
    let cached = text
        .lines()
        .find_map(|l| l.strip_prefix("# pprof_core_symbol_cache_addresses = "))
        .unwrap_or("?");
    println!("\n| endpoint or moment (release, axum) | value |");
    println!("|---|---|");
    println!(
        "| heap, cold (first symbolization) | {:.1} ms |",
        millis(cold)
    );
    println!("| heap, warm (median of 5) | {:.1} ms |", median(warm));
    println!(
        "| CPU profile report building (1 s profile, time past 1 s) | {:.1} ms |",
        millis(one).max(1000.0) - 1000.0
    );
    println!("| RSS at start | {start_rss:.1} MiB |");
    println!("| RSS after 6 heap requests | {after_heap:.1} MiB |");
    println!("| RSS after the first CPU profile | {after_one:.1} MiB |");
    println!("| RSS after ten CPU profiles | {after_ten:.1} MiB |");
    println!(
        "| RSS {} after that | {idle:.1} MiB (+{:.1} MiB over start) |",
        if quick {
            "right"
        } else {
            "16 s idle (debug info dropped)"
        },
        idle - start_rss
    );
    println!("| symbolization cache entries (addresses) | {cached} |");
    Ok(())
}

/// `cargo xtask bench --uploads-only`: the release bench server, then
/// [`upload_pages`] alone.
pub(crate) fn uploads_only(quick: bool) -> Result<(), String> {
    let (server, target) = build_bench_server()?;
    upload_pages(&server, &target, quick)
}

/// Build the release bench server: its path, and the target directory.
fn build_bench_server() -> Result<(String, String), String> {
    let status = super::cargo()
        .args(["build", "--release", "-p", "bench-server"])
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("building bench-server failed".into());
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    Ok((format!("{target}/release/bench-server"), target))
}

/// The worst uploads a page accepts under its limits (and two it
/// refuses), each posted to a freshly started release server: the
/// answer's status, the time from sending the upload to the page's last
/// byte, and the server's peak resident memory (`VmHWM`) against what it
/// held idle before.
fn upload_pages(server: &str, target: &str, quick: bool) -> Result<(), String> {
    let dir = std::path::Path::new(target).join("bench-uploads");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let status = Command::new(server)
        .args(["uploads", &dir.display().to_string()])
        .status()
        .map_err(|e| format!("{server}: {e}"))?;
    if !status.success() {
        return Err("bench-server uploads failed".into());
    }
    let all = [
        "deepest",
        "widest",
        "labels",
        "longest-name",
        "refused-point-1",
        "refused-point-2",
    ];
    let (names, pages): (&[&str], &[&str]) = if quick {
        (&["deepest", "refused-point-1"], &["flamegraph"])
    } else {
        (&all, &["flamegraph", "top"])
    };
    println!(
        "\n| upload (release, axum) | gzipped | decoded | page | status | time to page | peak RSS | idle RSS before |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for name in names {
        let body =
            std::fs::read(dir.join(format!("{name}.pb.gz"))).map_err(|e| format!("{name}: {e}"))?;
        let decoded = {
            use std::io::Read;
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(body.as_slice())
                .read_to_end(&mut raw)
                .map_err(|e| format!("{name}: {e}"))?;
            raw.len()
        };
        for page in pages {
            let s = Server::start(
                server,
                &["serve", "--framework", "axum", "--pprof"],
                7109,
                false,
            )?;
            std::thread::sleep(Duration::from_millis(300));
            let idle = crate::procfs::rss_mib(s.pid());
            let target = format!("/debug/pprof/ui/{page}?profile=goroutine");
            let (status, took) = post_octets(&s.addr, &target, &body)?;
            let peak = crate::procfs::peak_rss_mib(s.pid());
            println!(
                "| {name} | {:.1} KiB | {:.1} MiB | {page} | {status} | {:.0} ms | {peak:.1} MiB | {idle:.1} MiB |",
                body.len() as f64 / 1024.0,
                decoded as f64 / 1048576.0,
                millis(took)
            );
        }
    }
    Ok(())
}

/// POST `body` as `application/octet-stream`: the status and the time to
/// the answer's last byte.
fn post_octets(addr: &str, target: &str, body: &[u8]) -> Result<(u16, Duration), String> {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let (status, _) = crate::http::split_response(&raw);
    Ok((status, started.elapsed()))
}

/// `/goroutine` with 10, 100 and 500 extra threads alive, in process.
fn thread_dumps(server: &str, quick: bool) -> Result<(), String> {
    let rounds = if quick { "3" } else { "20" };
    let out = Command::new(server)
        .args(["threads", "--counts", "10,100,500", "--rounds", rounds])
        .output()
        .map_err(|e| format!("{server}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "thread dump run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: String| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("threads.{key}=")))
            .unwrap_or("?")
            .to_owned()
    };
    println!(
        "\n| goroutine dump ({rounds} rounds) | proto median / max | debug=2 median / max | first (cold) |"
    );
    println!("|---|---|---|---|");
    for count in [10, 100, 500] {
        println!(
            "| {count} extra threads | {} / {} ms | {} / {} ms | {} ms |",
            value(format!("{count}.proto_median_ms")),
            value(format!("{count}.proto_max_ms")),
            value(format!("{count}.debug2_median_ms")),
            value(format!("{count}.debug2_max_ms")),
            value(format!("{count}.cold_ms")),
        );
    }
    Ok(())
}

fn accuracy(server: &str, seconds: u64) -> Result<(), String> {
    let out = Command::new(server)
        .args(["accuracy", "--seconds", &seconds.to_string()])
        .env("_RJEM_MALLOC_CONF", "prof:false")
        .output()
        .map_err(|e| format!("{server}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("accuracy.{key}=")))
            .unwrap_or("?")
            .to_owned()
    };
    println!("\n| CPU accuracy ({seconds} s, threads burning 3:1) | profile | kernel |");
    println!("|---|---|---|");
    println!(
        "| share of the 3× thread | {} % | {} % |",
        value("profile_share_three"),
        value("kernel_share_three")
    );
    println!(
        "| seconds, 3× thread / 1× thread | {} / {} | {} / {} |",
        value("profile_three_s"),
        value("profile_one_s"),
        value("kernel_three_s"),
        value("kernel_one_s")
    );
    println!(
        "| total CPU seconds of the process | {} | {} |",
        value("profile_total_s"),
        value("kernel_process_s")
    );
    if !out.status.success() {
        return Err(format!(
            "accuracy run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// One server under test in the CPU sampler's table: ours or Go's.
struct Subject<'a> {
    name: &'a str,
    start: &'a dyn Fn(u16) -> Result<Server, String>,
}

/// `key=value` lines of a bench-server or Go reference run.
fn values_of(output: &[u8]) -> std::collections::HashMap<String, String> {
    String::from_utf8_lossy(output)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `bench-server cpu-total FILE FUNCTIONS…`
fn cpu_total(
    server: &str,
    file: &str,
    functions: &[&str],
) -> Result<std::collections::HashMap<String, String>, String> {
    let out = Command::new(server)
        .arg("cpu-total")
        .arg(file)
        .args(functions)
        .output()
        .map_err(|e| format!("{server}: {e}"))?;
    Ok(values_of(&out.stdout))
}

/// `wrk` on `path` for `seconds` on core 1: total requests served.
fn wrk_requests(addr: &str, path: &str, seconds: u64) -> Result<f64, String> {
    let out = pinned("1", "wrk")
        .args([
            "-t1",
            "-c16",
            &format!("-d{seconds}s"),
            &format!("http://{addr}{path}"),
        ])
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .ok_or_else(|| format!("no request count in wrk output:\n{text}"))
}

/// What one captured-share measurement found (medians over its rounds).
struct Captured {
    /// Profile CPU over the kernel's.
    share: f64,
    /// The same, without the samples that hold no stack (the frames that
    /// say why: ticks the kernel delivered late, threads without a timer).
    with_stacks: f64,
    profile_s: f64,
    kernel_s: f64,
}

/// Profile CPU over the kernel's count for the process, over one profile's
/// window at `hz`, with `path` under wrk.
fn captured_share(
    subject: &Subject<'_>,
    server: &str,
    target: &str,
    (path, hz): (&str, u32),
    window: u64,
    rounds: usize,
) -> Result<Captured, String> {
    let (mut shares, mut with_stacks) = (Vec::new(), Vec::new());
    let (mut kernel_s, mut profile_s) = (0.0, 0.0);
    for round in 0..rounds {
        let s = (subject.start)(7201)?;
        let addr = s.addr.clone();
        let load_path = path.to_owned();
        let load = std::thread::spawn(move || wrk_requests(&addr, &load_path, window + 4));
        std::thread::sleep(Duration::from_millis(1500));
        let (t0, started) = (crate::procfs::cpu_seconds(s.pid()), Instant::now());
        let (status, body, _) = get(
            &s.addr,
            &format!("/debug/pprof/profile?seconds={window}&hz={hz}"),
        )?;
        let (t1, elapsed) = (crate::procfs::cpu_seconds(s.pid()), started.elapsed());
        let _ = load.join();
        if status != 200 {
            return Err(format!("{}: CPU profile answered {status}", subject.name));
        }
        let file = format!("{target}/bench-captured-{}-{round}.pb.gz", subject.name);
        std::fs::write(&file, &body).map_err(|e| format!("{file}: {e}"))?;
        let seconds = cpu_total(server, &file, &["pprof_core::_LostStack_"])?;
        let of =
            |key: &str| -> f64 { seconds.get(key).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
        let total = of("cpu.total_s");
        let without_stack = of("cpu.pprof_core::_LostStack__s");
        // The request's wall time includes building the report after the
        // window: scale the kernel's count to the window.
        #[allow(clippy::cast_precision_loss)]
        let kernel = (t1 - t0) * (window as f64 / elapsed.as_secs_f64()).min(1.0);
        kernel_s = kernel;
        profile_s = total;
        shares.push(if kernel > 0.0 { total / kernel } else { 0.0 });
        with_stacks.push(if kernel > 0.0 {
            (total - without_stack) / kernel
        } else {
            0.0
        });
    }
    Ok(Captured {
        share: median(shares),
        with_stacks: median(with_stacks),
        profile_s,
        kernel_s,
    })
}

/// Anonymous memory a CPU profile leaves behind, as
/// `../shared/tools/rss-after-profile.sh` measures it: a heap request and a
/// goroutine dump to warm up, `idle`, RssAnon; a 3 s CPU profile, `idle`,
/// RssAnon again.
fn anon_after_profile(subject: &Subject<'_>, idle: Duration) -> Result<f64, String> {
    let s = (subject.start)(7202)?;
    get(&s.addr, "/debug/pprof/heap")?;
    get(&s.addr, "/debug/pprof/goroutine")?;
    std::thread::sleep(idle);
    let before = crate::procfs::rss_anon_mib(s.pid());
    get(&s.addr, "/debug/pprof/profile?seconds=3")?;
    std::thread::sleep(idle);
    Ok(crate::procfs::rss_anon_mib(s.pid()) - before)
}

/// The server's own CPU per 10,000 requests, not profiling and profiling,
/// alternating over `rounds` (fresh server each round): medians and the
/// per-round overhead's spread.
fn cpu_per_request(
    subject: &Subject<'_>,
    rounds: usize,
    seconds: u64,
) -> Result<(f64, f64, f64, f64, f64), String> {
    let (mut plain, mut profiled, mut overheads) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let s = (subject.start)(7203)?;
        wrk_requests(&s.addr, "/", 1)?;
        let (mut a, mut b) = (0.0, 0.0);
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for profiling in order {
            let profile = profiling.then(|| {
                let addr = s.addr.clone();
                let target = format!("/debug/pprof/profile?seconds={}", seconds + 2);
                let handle = std::thread::spawn(move || get(&addr, &target));
                std::thread::sleep(Duration::from_millis(300));
                handle
            });
            let t0 = crate::procfs::cpu_seconds(s.pid());
            let requests = wrk_requests(&s.addr, "/", seconds)?;
            let per_10k = (crate::procfs::cpu_seconds(s.pid()) - t0) / requests.max(1.0) * 10_000.0;
            if let Some(handle) = profile {
                let (status, _, _) = handle.join().map_err(|_| "profile thread panicked")??;
                if status != 200 {
                    return Err(format!("{}: CPU profile answered {status}", subject.name));
                }
                b = per_10k;
            } else {
                a = per_10k;
            }
        }
        plain.push(a);
        profiled.push(b);
        overheads.push(if a > 0.0 { 100.0 * (b / a - 1.0) } else { 0.0 });
    }
    let low = overheads.iter().copied().fold(f64::INFINITY, f64::min);
    let high = overheads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Ok((
        median(plain),
        median(profiled),
        median(overheads),
        low,
        high,
    ))
}

/// A static-file service (axum `ServeDir` behind `LabelRequests`, tokio's
/// blocking pool reading the files: threads that run in short bursts, the
/// app of issue 19's point 11a) next to Go's `http.FileServer`: captured
/// share at 100 and 250 Hz, the debug build (as that app ran) and the
/// release build.
fn files_captured_share(
    server: &str,
    go: Option<&str>,
    target: &str,
    (window, rounds): (u64, usize),
    row: &dyn Fn(&str, Vec<String>),
) -> Result<(), String> {
    let dir = format!("{target}/bench-files");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir}: {e}"))?;
    // A 27 KB page, as in the report.
    let page: Vec<u8> = (0..27_000u32)
        .map(|i| b"abcdefghij\n"[(i % 11) as usize])
        .collect();
    std::fs::write(format!("{dir}/c2.html"), page).map_err(|e| format!("{dir}: {e}"))?;
    let status = super::cargo()
        .args(["build", "-p", "bench-server"])
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("building bench-server (debug) failed".into());
    }
    let debug = format!("{target}/debug/bench-server");
    let start_with = |binary: String| {
        let dir = dir.clone();
        move |port: u16| {
            Server::start(
                &binary,
                &["serve", "--framework", "axum", "--pprof", "--files", &dir],
                port,
                false,
            )
        }
    };
    let debug_start = start_with(debug);
    let release_start = start_with(server.to_owned());
    let go_start = |port: u16| match go {
        Some(go) => Server::start_go_with(go, port, &["-files", &dir]),
        None => Err("go is not installed".to_owned()),
    };
    for hz in [100, 250] {
        let mut cells = Vec::new();
        for (name, start) in [
            (
                "files-debug",
                &debug_start as &dyn Fn(u16) -> Result<Server, String>,
            ),
            ("files-release", &release_start),
        ] {
            let subject = Subject { name, start };
            let c = captured_share(&subject, server, target, ("/c2.html", hz), window, rounds)?;
            cells.push(format!(
                "{name}: {:.3} ({:.2} s of {:.2} s), {:.3} with stacks",
                c.share, c.profile_s, c.kernel_s, c.with_stacks
            ));
        }
        let ours = cells.join("; ");
        let theirs = if go.is_some() && hz == 100 {
            let subject = Subject {
                name: "files-go",
                start: &go_start,
            };
            let c = captured_share(&subject, server, target, ("/c2.html", hz), window, rounds)?;
            format!(
                "{:.3} ({:.2} s of {:.2} s)",
                c.share, c.profile_s, c.kernel_s
            )
        } else if go.is_some() {
            "n/a (Go's route takes no hz)".to_owned()
        } else {
            "skipped: go not installed".to_owned()
        };
        row(
            &format!(
                "(a) captured share, static files (ServeDir behind LabelRequests; Go: http.FileServer) at {hz} Hz, {window} s window under wrk (median of {rounds})"
            ),
            vec![ours, theirs],
        );
    }
    Ok(())
}

/// The CPU sampler next to Go's, in one run: captured share, the 3:1
/// split, memory left after a profile and while one runs, overhead per
/// request, and the signal handler's cost per sample.
fn cpu_sampler(server: &str, go: Option<&str>, target: &str, quick: bool) -> Result<(), String> {
    let (window, share_rounds, overhead_rounds, seconds, idle, split) = if quick {
        (2, 1, 2, 1, Duration::from_secs(1), 2)
    } else {
        (10, 3, 10, 3, Duration::from_secs(20), 10)
    };
    let ours_start = |port: u16| {
        Server::start(
            server,
            &["serve", "--framework", "axum", "--pprof"],
            port,
            false,
        )
    };
    let go_start = |port: u16| match go {
        Some(go) => Server::start_go(go, port),
        None => Err("go is not installed".to_owned()),
    };
    let ours = Subject {
        name: "ours",
        start: &ours_start,
    };
    let theirs = Subject {
        name: "go",
        start: &go_start,
    };
    let mut subjects = vec![&ours];
    if go.is_some() {
        subjects.push(&theirs);
    }
    println!(
        "\n| CPU profile ({}) | ours | Go net/http/pprof |",
        if quick {
            "quick: numbers mean little"
        } else {
            "release, axum hello handler vs the Go reference"
        }
    );
    println!("|---|---|---|");
    let row = |what: &str, cells: Vec<String>| {
        println!(
            "| {what} | {} | {} |",
            cells.first().map_or("", String::as_str),
            cells
                .get(1)
                .map_or("skipped: go not installed", String::as_str)
        );
    };
    let mut cells = Vec::new();
    for s in &subjects {
        let c = captured_share(s, server, target, ("/", 100), window, share_rounds)?;
        cells.push(format!(
            "{:.3} ({:.2} s of {:.2} s; {:.3} with stacks)",
            c.share, c.profile_s, c.kernel_s, c.with_stacks
        ));
    }
    row(
        &format!(
            "(a) captured share: profile CPU / kernel CPU, {window} s window under wrk (median of {share_rounds})"
        ),
        cells,
    );
    files_captured_share(server, go, target, (window, share_rounds), &row)?;

    let ours_split = Command::new(server)
        .args(["accuracy", "--seconds", &split.to_string()])
        .env("_RJEM_MALLOC_CONF", "prof:false")
        .output()
        .map_err(|e| format!("{server}: {e}"))?;
    let v = values_of(&ours_split.stdout);
    let get_v = |v: &std::collections::HashMap<String, String>, k: &str| {
        v.get(k).cloned().unwrap_or_else(|| "?".into())
    };
    let mut cells = vec![format!(
        "{} % (kernel {} %)",
        get_v(&v, "accuracy.profile_share_three"),
        get_v(&v, "accuracy.kernel_share_three")
    )];
    if let Some(go) = go {
        let file = format!("{target}/bench-go-accuracy.pb.gz");
        let out = Command::new(go)
            .args(["-accuracy", &split.to_string(), "-out", &file])
            .output()
            .map_err(|e| format!("{go}: {e}"))?;
        let kernel = values_of(&out.stdout);
        let profile = cpu_total(server, &file, &["accuracy.func1", "accuracy.func2"])?;
        let number = |m: &std::collections::HashMap<String, String>, k: &str| {
            m.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        };
        let (k3, k1) = (
            number(&kernel, "accuracy.kernel_three_s"),
            number(&kernel, "accuracy.kernel_one_s"),
        );
        let (p3, p1) = (
            number(&profile, "cpu.accuracy.func1_s"),
            number(&profile, "cpu.accuracy.func2_s"),
        );
        cells.push(format!(
            "{:.1} % (kernel {:.1} %)",
            100.0 * p3 / (p3 + p1).max(1e-9),
            100.0 * k3 / (k3 + k1).max(1e-9)
        ));
    }
    row(
        &format!("(b) 3:1 two-thread split: share of the 3× thread, {split} s"),
        cells,
    );

    let mut cells = Vec::new();
    for s in &subjects {
        cells.push(format!("{:+.1} MiB", anon_after_profile(s, idle)?));
    }
    row(
        &format!(
            "(c) RssAnon left after a 3 s profile ({} s idle before and after)",
            idle.as_secs()
        ),
        cells,
    );

    let mut cells = Vec::new();
    for s in &subjects {
        let (plain, profiled, overhead, low, high) = cpu_per_request(s, overhead_rounds, seconds)?;
        cells.push(format!(
            "{plain:.3} → {profiled:.3} CPU s: {overhead:+.1} % (rounds {low:+.1} to {high:+.1} %)"
        ));
    }
    row(
        &format!(
            "(d) server CPU per 10,000 requests, not profiling → profiling at 100 Hz (median of {overhead_rounds} alternating rounds)"
        ),
        cells,
    );

    let mut costs = Vec::new();
    for depth in [10, 40, 100] {
        let out = Command::new(server)
            .args([
                "handler-cost",
                "--depth",
                &depth.to_string(),
                "--seconds",
                if quick { "1" } else { "3" },
            ])
            .env("_RJEM_MALLOC_CONF", "prof:false")
            .output()
            .map_err(|e| format!("{server}: {e}"))?;
        let v = values_of(&out.stdout);
        costs.push(format!(
            "{} ns at {depth} frames (mean {})",
            get_v(&v, "handler.median_ns_per_tick"),
            get_v(&v, "handler.ns_per_tick")
        ));
    }
    row(
        "(e) signal handler per recorded tick (claim, unwind, publish): median, mean",
        vec![costs.join(", "), "n/a".into()],
    );

    let (threads, secs) = if quick { (10, 2) } else { (100, 30) };
    let out = Command::new(server)
        .args([
            "sampler-memory",
            "--threads",
            &threads.to_string(),
            "--seconds",
            &secs.to_string(),
        ])
        .env("_RJEM_MALLOC_CONF", "prof:false")
        .output()
        .map_err(|e| format!("{server}: {e}"))?;
    let v = values_of(&out.stdout);
    let kib = |k: &str| v.get(k).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    row(
        &format!(
            "RssAnon while {threads} busy threads are profiled {secs} s at 100 Hz: peak over before, after over before"
        ),
        vec![
            format!(
                "{:+.1} MiB, {:+.1} MiB",
                (kib("memory.peak_kib") - kib("memory.before_kib")) / 1024.0,
                (kib("memory.after_kib") - kib("memory.before_kib")) / 1024.0
            ),
            "n/a".into(),
        ],
    );
    Ok(())
}
