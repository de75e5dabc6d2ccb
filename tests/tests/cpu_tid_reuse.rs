//! A thread that gets the id of a thread that just ended, while a CPU
//! profile runs, is sampled like any other (own test binary: it sets the
//! next thread id through `/proc/sys/kernel/ns_last_pid`, which needs root
//! in the pid namespace, as CI has).

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use pprof_tests::{burn_cpu_here, decode_profile, stacks, this_thread_cpu_ns};

/// This thread's kernel id, from `/proc/thread-self`.
fn tid() -> i32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// Ask the kernel to hand out `next` as the next id (it gives last + 1).
fn next_id_is(next: i32) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/kernel/ns_last_pid")
        .and_then(|mut f| f.write_all((next - 1).to_string().as_bytes()))
        .is_ok()
}

#[test]
fn a_thread_that_reuses_an_ended_threads_id_is_sampled() {
    let last: i32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if last == 0 || !next_id_is(last + 1) {
        let message = "/proc/sys/kernel/ns_last_pid is not writable here (needs root)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{message}; CI=true requires it"
        );
        eprintln!("\n!!! SKIPPED: {message}\n");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let pprof = pprof_core::Pprof::new(pprof_core::Config::default());
    let request = http::Request::get("/debug/pprof/profile?seconds=4")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let profile = runtime.spawn(async move {
        let response = pprof.handle(request).await;
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default()
    });
    // A thread that lives long enough for a scan to give it a timer.
    let (tx, rx) = mpsc::channel();
    let (stop, stopped) = mpsc::channel::<()>();
    let first = std::thread::spawn(move || {
        let _ = tx.send(tid());
        let _ = stopped.recv();
    });
    let id = rx.recv().expect("first thread's id");
    std::thread::sleep(Duration::from_millis(400));
    // It ends, and a new thread gets its id at once (before the next scan).
    let _ = stop.send(());
    first.join().expect("first thread");
    let mut reused = None;
    for _ in 0..50 {
        if !next_id_is(id) {
            break;
        }
        let second = std::thread::Builder::new()
            .name("reused-id".to_owned())
            .spawn(move || {
                if tid() != id {
                    return None;
                }
                burn_cpu_here(Duration::from_millis(1500));
                Some(this_thread_cpu_ns())
            })
            .expect("spawn");
        if let Some(cpu) = second.join().expect("second thread") {
            reused = Some(cpu);
            break;
        }
    }
    let burned_ns = reused.expect("no thread got the ended thread's id (other processes took it)");
    let body = runtime.block_on(profile).expect("profile task");
    let p = decode_profile(&body);
    let sampled: i64 = stacks(&p)
        .iter()
        .filter(|s| s.label("thread") == Some("reused-id") && s.has("burn_cpu_here"))
        .map(|s| s.values[1])
        .sum();
    #[allow(clippy::cast_precision_loss)]
    let ratio = sampled as f64 / burned_ns.max(1) as f64;
    assert!(
        ratio > 0.8,
        "the thread with the reused id used {burned_ns} ns; its stacks hold {sampled} ns"
    );
}
