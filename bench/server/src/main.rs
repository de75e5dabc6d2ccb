//! What `cargo xtask bench` measures.
//!
//! ```text
//! bench-server serve --framework axum|actix|warp [--pprof] [--watch-polls] [--addr HOST:PORT]
//! bench-server accuracy [--seconds N]
//! bench-server threads [--counts 10,100,500] [--rounds N]
//! ```
//!
//! `serve`: `/` answers `hello`, `/alloc` allocates about 100 KiB in small
//! and large pieces per request; `--pprof` mounts the pprof routes;
//! `--watch-polls` (axum) watches every request future's polls
//! (`pprof_core::WatchPollsLayer`).
//! jemalloc is the allocator in every run; its heap profiler follows
//! `_RJEM_MALLOC_CONF` (`prof:false` turns it off), so "routes mounted" and
//! "heap profiling on" are measured separately.
//!
//! `accuracy`: two threads burn CPU in a 3:1 ratio while a CPU profile runs
//! in process; prints the profile's shares and total next to what the
//! kernel accounted.
//!
//! `threads`: for each count, that many extra threads wait on a channel
//! while `/goroutine` (proto) and `/goroutine?debug=2` are requested
//! through the handler in process; prints the median and slowest time.
//!
//! `cpu-total FILE [FUNCTION...]`: a saved CPU profile's total CPU seconds,
//! and the seconds of the samples whose stack holds each named function
//! (any profile.proto: ours or Go's).
//!
//! `handler-cost --depth N [--seconds S]`: a thread burns CPU N frames deep
//! while a 1000 Hz profile runs in process; prints what the sampler
//! measured its signal handler to take per tick.
//!
//! `sampler-memory --threads N [--seconds S] [--hz H]`: N threads burn CPU
//! while one profile runs in process; prints RssAnon before, at its peak
//! while profiling (read every 100 ms), and after.
//!
//! `uploads DIR`: writes the uploads the bench posts to a page (issue 20):
//! the worst ones accepted under the limits, and two the limits refuse.

use std::hint::black_box;
use std::time::{Duration, Instant};

pprof_core::jemalloc_heap_profiling!();

fn flag(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("serve") => serve(),
        Some("accuracy") => accuracy(),
        Some("threads") => threads(),
        Some("cpu-total") => cpu_total(),
        Some("handler-cost") => handler_cost(),
        Some("sampler-memory") => sampler_memory(),
        Some("uploads") => uploads(),
        _ => {
            eprintln!(
                "usage: bench-server serve --framework axum|actix|warp [--pprof] [--addr A] | accuracy [--seconds N] | threads [--counts 10,100,500] [--rounds N] | cpu-total FILE [FUNCTION...] | handler-cost --depth N [--seconds S] | sampler-memory --threads N [--seconds S] [--hz H] | uploads DIR"
            );
            std::process::exit(2);
        }
    }
}

/// Write the uploads of the bench's page case into the directory named
/// after `uploads`, one file each, named for what it is.
fn uploads() {
    use pprof_tests::hostile;
    let dir = std::path::PathBuf::from(std::env::args().nth(2).unwrap_or_else(|| ".".into()));
    let files = [
        // At the frame bounds: 488 samples 4,096 deep (1,998,848 frames),
        // every frame its own node of the flame graph's tree.
        ("deepest", hostile::distinct_deep_stacks(488, 4096)),
        // 990,000 samples two deep (near the record bound), 990,000
        // distinct stacks.
        ("widest", hostile::wide_stacks(990_000, 1000)),
        // Near the record bound inside one sample.
        ("labels", hostile::nested_labels(999_000)),
        // A 30 MiB function name, under the 32 MiB decoded bound.
        ("longest-name", hostile::long_name(30 << 20)),
        // Refused: issue 20's 10^12 frames, and its sample 10^6 deep.
        (
            "refused-point-1",
            hostile::location_named_many_times(1_000_000, 1_000_000),
        ),
        ("refused-point-2", hostile::deep_sample(1_000_000)),
    ];
    for (name, bytes) in files {
        let path = dir.join(format!("{name}.pb.gz"));
        std::fs::write(&path, bytes).unwrap_or_else(|e| {
            eprintln!("bench-server: {}: {e}", path.display());
            std::process::exit(1);
        });
    }
}

/// About 100 KiB a request: a large buffer and many small strings, like a
/// handler that parses and builds a response.
#[inline(never)]
fn allocation_heavy() -> String {
    let buffer = vec![1u8; 64 * 1024];
    let words: Vec<String> = (0..512).map(|i| format!("word-{i}")).collect();
    let total = buffer.iter().map(|&b| u64::from(b)).sum::<u64>() + words.len() as u64;
    black_box(&words);
    format!("{total}\n")
}

fn serve() {
    let addr = flag("--addr").unwrap_or_else(|| "127.0.0.1:6071".to_owned());
    let framework = flag("--framework").unwrap_or_else(|| "axum".to_owned());
    let with_pprof = std::env::args().any(|a| a == "--pprof");
    let listener = std::net::TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("bench-server: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    match framework.as_str() {
        "actix" => serve_actix(listener, with_pprof),
        "axum" | "warp" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| {
                    eprintln!("bench-server: runtime: {e}");
                    std::process::exit(1);
                });
            runtime.block_on(async move {
                let _ = listener.set_nonblocking(true);
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("bench-server: {e}");
                        std::process::exit(1);
                    }
                };
                if framework == "axum" {
                    serve_axum(listener, with_pprof).await;
                } else {
                    serve_warp(listener, with_pprof).await;
                }
            });
        }
        other => {
            eprintln!("bench-server: unknown framework {other}");
            std::process::exit(2);
        }
    }
}

async fn serve_axum(listener: tokio::net::TcpListener, with_pprof: bool) {
    use axum::routing::get;
    let mut app = axum::Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/alloc", get(|| async { allocation_heavy() }));
    if with_pprof {
        app = app.merge(pprof_axum::routes());
    }
    if let Some(dir) = flag("--files") {
        // A real app's shape: static files from tokio's blocking pool behind
        // a fallback service, every request labeled (point 11a of issue 19).
        app = app.fallback_service(tower_http::services::ServeDir::new(dir));
        app = app.layer(pprof_axum::LabelRequests::new());
    }
    if std::env::args().any(|a| a == "--watch-polls") {
        app = app.layer(pprof_core::WatchPollsLayer::new());
    }
    let _ = axum::serve(listener, app).await;
}

async fn serve_warp(listener: tokio::net::TcpListener, with_pprof: bool) {
    use warp::Filter;
    let hello = warp::path::end().map(|| "hello\n");
    let alloc = warp::path("alloc")
        .and(warp::path::end())
        .map(allocation_heavy);
    let app = hello.or(alloc);
    if with_pprof {
        warp::serve(app.or(pprof_warp::routes()))
            .incoming(listener)
            .run()
            .await;
    } else {
        warp::serve(app).incoming(listener).run().await;
    }
}

fn serve_actix(listener: std::net::TcpListener, with_pprof: bool) {
    use actix_web::{App, HttpServer, web};
    let result = actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let app = App::new()
                .route("/", web::get().to(|| async { "hello\n" }))
                .route("/alloc", web::get().to(|| async { allocation_heavy() }));
            let scope = with_pprof.then(|| pprof_actix::scope("/debug"));
            app.configure(|cfg| {
                if let Some(scope) = scope {
                    cfg.service(scope);
                }
            })
        })
        .on_connect(pprof_actix::on_connect)
        .listen(listener)?
        .run()
        .await
    });
    if let Err(e) = result {
        eprintln!("bench-server: {e}");
    }
}

/// CPU time (user + system) from a `/proc/.../stat` line, in seconds.
fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the `)` that closes the command name: utime is the 12th, stime the 13th.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn this_thread_cpu_seconds() -> f64 {
    let link = std::fs::read_link("/proc/thread-self").unwrap_or_default();
    cpu_seconds(&format!("/proc/{}/stat", link.display()))
}

/// Spins for `busy` out of every `busy + idle` until `until`; returns the
/// thread's CPU seconds as the kernel counted them. Inlined into each
/// burner, so that the burner's own frame is on every sampled stack (a
/// tail call would otherwise remove it).
#[inline(always)]
fn burn(until: Instant, busy: Duration, idle: Duration) -> f64 {
    let mut x = black_box(0x9e37_79b9_7f4a_7c15_u64);
    while Instant::now() < until {
        let start = Instant::now();
        while start.elapsed() < busy {
            for _ in 0..1000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
        }
        std::thread::sleep(idle);
    }
    black_box(x);
    this_thread_cpu_seconds()
}

#[inline(never)]
fn burn_three(until: Instant) -> f64 {
    burn(until, Duration::from_millis(30), Duration::ZERO)
}

#[inline(never)]
fn burn_one(until: Instant) -> f64 {
    burn(until, Duration::from_millis(10), Duration::from_millis(20))
}

fn accuracy() {
    use prost::Message;
    use std::io::Read;
    let seconds: u64 = flag("--seconds").and_then(|s| s.parse().ok()).unwrap_or(10);
    let (runtime, pprof) = in_process();
    let profile_for = |secs: u64| {
        let request = http::Request::get(format!("/debug/pprof/profile?seconds={secs}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap_or_default();
        runtime.block_on(pprof.handle(request))
    };
    // A first short profile pays the one-time set-up (sampler table, debug
    // info), so the measured window holds only the burners and sampling.
    drop(profile_for(1));
    let process_before = cpu_seconds("/proc/self/stat");
    let until = Instant::now() + Duration::from_secs(seconds);
    let three = std::thread::spawn(move || burn_three(until));
    let one = std::thread::spawn(move || burn_one(until));
    let response = profile_for(seconds);
    let process_after = cpu_seconds("/proc/self/stat");
    let (three_cpu, one_cpu) = (three.join().unwrap_or(0.0), one.join().unwrap_or(0.0));
    let body = body_of(&runtime, response);
    if let Some(path) = flag("--save") {
        let _ = std::fs::write(path, &body);
    }
    let mut raw = Vec::new();
    let _ = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut raw);
    let profile = pprof_core::proto::Profile::decode(raw.as_slice()).unwrap_or_default();
    let name_of = |id: u64| function_name(&profile, id);
    let (mut three_ns, mut one_ns, mut total_ns) = (0i64, 0i64, 0i64);
    for sample in &profile.sample {
        let value = sample.value.get(1).copied().unwrap_or(0);
        total_ns += value;
        let names: Vec<String> = sample
            .location_id
            .iter()
            .filter_map(|id| profile.location.iter().find(|l| l.id == *id))
            .flat_map(|l| l.line.iter().map(|line| name_of(line.function_id)))
            .collect();
        if names.iter().any(|n| n.ends_with("burn_three")) {
            three_ns += value;
        } else if names.iter().any(|n| n.ends_with("burn_one")) {
            one_ns += value;
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let secs = |ns: i64| ns as f64 / 1e9;
    let burners = secs(three_ns + one_ns).max(1e-9);
    println!("accuracy.seconds={seconds}");
    println!("accuracy.kernel_three_s={three_cpu:.2}");
    println!("accuracy.kernel_one_s={one_cpu:.2}");
    println!(
        "accuracy.kernel_share_three={:.1}",
        100.0 * three_cpu / (three_cpu + one_cpu).max(1e-9)
    );
    println!("accuracy.profile_three_s={:.2}", secs(three_ns));
    println!("accuracy.profile_one_s={:.2}", secs(one_ns));
    println!(
        "accuracy.profile_share_three={:.1}",
        100.0 * secs(three_ns) / burners
    );
    println!("accuracy.profile_total_s={:.2}", secs(total_ns));
    println!(
        "accuracy.kernel_process_s={:.2}",
        process_after - process_before
    );
}

/// Time goroutine dumps with `count` extra threads alive.
fn threads() {
    let counts: Vec<usize> = flag("--counts")
        .unwrap_or_else(|| "10,100,500".to_owned())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let rounds: usize = flag("--rounds").and_then(|r| r.parse().ok()).unwrap_or(20);
    let (runtime, pprof) = in_process();
    let time = |target: &str| {
        let request = http::Request::get(target)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap_or_default();
        let started = Instant::now();
        let response = runtime.block_on(pprof.handle(request));
        let elapsed = started.elapsed();
        if response.status() != 200 {
            eprintln!("bench-server: {target} answered {}", response.status());
            std::process::exit(1);
        }
        elapsed.as_secs_f64() * 1000.0
    };
    for count in counts {
        let (stop, parked) = std::sync::mpsc::channel::<()>();
        let parked = std::sync::Arc::new(std::sync::Mutex::new(parked));
        let waiting: Vec<_> = (0..count)
            .map(|_| {
                let parked = parked.clone();
                std::thread::spawn(move || {
                    let _unused = parked.lock().map(|rx| rx.recv());
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let cold = time("/debug/pprof/goroutine");
        for (name, target) in [
            ("proto", "/debug/pprof/goroutine"),
            ("debug2", "/debug/pprof/goroutine?debug=2"),
        ] {
            let mut ms: Vec<f64> = (0..rounds).map(|_| time(target)).collect();
            ms.sort_by(f64::total_cmp);
            let median = ms.get(ms.len() / 2).copied().unwrap_or_default();
            let slowest = ms.last().copied().unwrap_or_default();
            println!("threads.{count}.{name}_median_ms={median:.2}");
            println!("threads.{count}.{name}_max_ms={slowest:.2}");
        }
        println!("threads.{count}.cold_ms={cold:.2}");
        drop(stop);
        for t in waiting {
            let _ = t.join();
        }
    }
}

/// A one-worker runtime and a default handler, to call the routes in process.
fn in_process() -> (tokio::runtime::Runtime, pprof_core::Pprof) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("bench-server: runtime: {e}");
            std::process::exit(1);
        });
    (
        runtime,
        pprof_core::Pprof::new(pprof_core::Config::default()),
    )
}

/// A gunzipped (or raw) profile.proto.
/// A response's whole body, read on `runtime`.
fn body_of(
    runtime: &tokio::runtime::Runtime,
    response: http::Response<pprof_core::ResponseBody>,
) -> bytes::Bytes {
    use http_body_util::BodyExt;
    runtime.block_on(async {
        response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default()
    })
}

fn decode(body: &[u8]) -> pprof_core::proto::Profile {
    use prost::Message;
    use std::io::Read;
    let mut raw = Vec::new();
    if flate2::read::GzDecoder::new(body)
        .read_to_end(&mut raw)
        .is_err()
    {
        raw = body.to_vec();
    }
    pprof_core::proto::Profile::decode(raw.as_slice()).unwrap_or_default()
}

/// The name of the profile's function `id` (empty when unknown).
fn function_name(profile: &pprof_core::proto::Profile, id: u64) -> String {
    profile
        .function
        .iter()
        .find(|f| f.id == id)
        .and_then(|f| {
            profile
                .string_table
                .get(usize::try_from(f.name).unwrap_or(0))
        })
        .cloned()
        .unwrap_or_default()
}

/// Function names of a sample, leaf first.
fn sample_functions(
    profile: &pprof_core::proto::Profile,
    sample: &pprof_core::proto::Sample,
) -> Vec<String> {
    let name_of = |id: u64| function_name(profile, id);
    sample
        .location_id
        .iter()
        .filter_map(|id| profile.location.iter().find(|l| l.id == *id))
        .flat_map(|l| l.line.iter().map(|line| name_of(line.function_id)))
        .collect()
}

fn cpu_total() {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let Some(path) = args.first() else {
        eprintln!("bench-server: cpu-total FILE [FUNCTION...]");
        std::process::exit(2);
    };
    let profile = decode(&std::fs::read(path).unwrap_or_default());
    let cpu = |sample: &pprof_core::proto::Sample| sample.value.get(1).copied().unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let secs = |ns: i64| ns as f64 / 1e9;
    println!(
        "cpu.total_s={:.3}",
        secs(profile.sample.iter().map(cpu).sum())
    );
    for function in &args[1..] {
        let ns: i64 = profile
            .sample
            .iter()
            .filter(|s| {
                sample_functions(&profile, s)
                    .iter()
                    .any(|f| f.contains(function.as_str()))
            })
            .map(cpu)
            .sum();
        println!("cpu.{function}_s={:.3}", secs(ns));
    }
}

/// Recurse `depth` frames, then burn until `until`.
#[inline(never)]
fn deep(depth: usize, until: Instant) -> u64 {
    if depth > 1 {
        return black_box(deep(depth - 1, until)) + 1;
    }
    let mut x = black_box(1u64);
    while Instant::now() < until {
        for _ in 0..1000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
    }
    x
}

/// One in-process CPU profile of `seconds` at `hz`; its comments.
fn profile_comments(
    runtime: &tokio::runtime::Runtime,
    pprof: &pprof_core::Pprof,
    seconds: u64,
    hz: u32,
) -> Vec<String> {
    let request = http::Request::get(format!("/debug/pprof/profile?seconds={seconds}&hz={hz}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap_or_default();
    let response = runtime.block_on(pprof.handle(request));
    let body = body_of(runtime, response);
    let profile = decode(&body);
    profile
        .comment
        .iter()
        .filter_map(|c| {
            profile
                .string_table
                .get(usize::try_from(*c).unwrap_or(0))
                .cloned()
        })
        .collect()
}

fn handler_cost() {
    let depth: usize = flag("--depth").and_then(|d| d.parse().ok()).unwrap_or(10);
    let seconds: u64 = flag("--seconds").and_then(|s| s.parse().ok()).unwrap_or(3);
    let (runtime, pprof) = in_process();
    let until = Instant::now() + Duration::from_secs(seconds + 1);
    // The frames below `deep`'s own are the thread's start: about six more.
    let burner = std::thread::spawn(move || deep(depth.saturating_sub(6).max(1), until));
    let comments = profile_comments(&runtime, &pprof, seconds, 1000);
    let _ = burner.join();
    let cost = comments
        .iter()
        .find_map(|c| c.strip_prefix("signal handler: "))
        .and_then(|c| c.split(' ').next())
        .unwrap_or("?");
    let median = comments
        .iter()
        .find_map(|c| c.split("median about ").nth(1))
        .and_then(|c| c.split(' ').next())
        .unwrap_or("?");
    println!("handler.depth={depth}");
    println!("handler.ns_per_tick={cost}");
    println!("handler.median_ns_per_tick={median}");
}

fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn sampler_memory() {
    let threads: usize = flag("--threads")
        .and_then(|d| d.parse().ok())
        .unwrap_or(100);
    let seconds: u64 = flag("--seconds").and_then(|s| s.parse().ok()).unwrap_or(30);
    let hz: u32 = flag("--hz").and_then(|s| s.parse().ok()).unwrap_or(100);
    let (runtime, pprof) = in_process();
    let until = Instant::now() + Duration::from_secs(seconds + 3);
    let burners: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || deep(4, until)))
        .collect();
    // Warm up: the symbolizer and the runtime, with a short profile.
    let _ = profile_comments(&runtime, &pprof, 1, hz);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_anon_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_anon_kib(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let _ = profile_comments(&runtime, &pprof, seconds, hz);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_anon_kib();
    println!("memory.threads={threads}");
    println!("memory.before_kib={before}");
    println!(
        "memory.peak_kib={}",
        peak.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("memory.after_kib={after}");
    for b in burners {
        let _ = b.join();
    }
}
