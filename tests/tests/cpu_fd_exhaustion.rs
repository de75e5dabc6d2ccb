//! A process out of file descriptors while a CPU profile runs (own test
//! binary: the limit is the process's). The sampler cannot list its
//! threads meanwhile: it keeps their timers, and the profile still holds
//! the CPU the threads used, no more, with a comment saying so.

use std::time::Duration;

use pprof_tests::{burn_cpu_here, comments, decode_profile, stacks, this_thread_cpu_ns};

/// Open `/dev/null` until the process has no descriptor left; the files,
/// to close once done.
fn exhaust_descriptors() -> Vec<std::fs::File> {
    let mut held = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        held.push(file);
        if held.len() > 1 << 20 {
            break;
        }
    }
    held
}

#[test]
fn a_failed_thread_listing_keeps_the_timers_and_the_totals() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let pprof = pprof_core::Pprof::new(pprof_core::Config::default());
    // A burner with a past: a second of CPU before the profile, which must
    // not count in it, then two seconds inside it.
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let burner = std::thread::Builder::new()
        .name("fd-burner".to_owned())
        .spawn(move || {
            burn_cpu_here(Duration::from_millis(1000));
            let _ = ready_tx.send(this_thread_cpu_ns());
            let _ = go_rx.recv();
            burn_cpu_here(Duration::from_millis(2000));
            this_thread_cpu_ns()
        })
        .expect("burner");
    let before = ready.recv().expect("the burner's past");
    let request = http::Request::get("/debug/pprof/profile?seconds=3")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let profile = runtime.spawn(async move {
        let response = pprof.handle(request).await;
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (status, body)
    });
    // The burner burns again once the profile runs, and ends before it does.
    std::thread::sleep(Duration::from_millis(300));
    let _ = go.send(());
    // Out of descriptors for a second, in the middle of the profile: every
    // thread scan meanwhile fails to read /proc/self/task.
    std::thread::sleep(Duration::from_millis(500));
    let held = exhaust_descriptors();
    std::thread::sleep(Duration::from_millis(1000));
    drop(held);
    let burned_ns = burner.join().expect("burner") - before;
    assert!(burned_ns > 0, "the burner's CPU could not be read");
    let (status, body) = runtime.block_on(profile).expect("profile task");
    assert_eq!(status, 200);
    let p = decode_profile(&body);
    let notes = comments(&p);
    assert!(
        notes
            .iter()
            .any(|c| c.contains("a listing of the threads failed")),
        "{notes:?}"
    );
    // The burner's CPU in the window, as the kernel counted it, and not
    // its lifetime's worth at once: within a tenth.
    let sampled: i64 = stacks(&p)
        .iter()
        .filter(|s| s.label("thread") == Some("fd-burner"))
        .map(|s| s.values[1])
        .sum();
    #[allow(clippy::cast_precision_loss)]
    let ratio = sampled as f64 / burned_ns.max(1) as f64;
    assert!(
        (0.9..1.1).contains(&ratio),
        "the burner used {burned_ns} ns; the profile holds {sampled} ns of it: {notes:?}"
    );
}
