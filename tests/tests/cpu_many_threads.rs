//! A process with 2,000 threads: every one gets its own CPU timer and the
//! busy one is found (own test binary: the threads would crowd other tests).

use std::sync::mpsc;
use std::time::Duration;

use pprof_tests::{Adapter, burn_cpu_on_thread, get, stacks};

#[test]
fn two_thousand_threads_each_get_a_timer_and_the_busy_one_is_found() {
    let addr = Adapter::Axum.start(None);
    let (stop, stopped) = mpsc::channel::<()>();
    let stopped = std::sync::Arc::new(std::sync::Mutex::new(stopped));
    let idle: Vec<_> = (0..2000)
        .map(|i| {
            let stopped = stopped.clone();
            std::thread::Builder::new()
                .name(format!("idle-{i}"))
                .stack_size(64 * 1024)
                .spawn(move || {
                    let _ = stopped
                        .lock()
                        .map(|rx| rx.recv_timeout(Duration::from_secs(60)));
                })
                .expect("spawn idle thread")
        })
        .collect();
    let burner = burn_cpu_on_thread("burner", Duration::from_millis(2500));
    let r = get(addr, "/debug/pprof/profile?seconds=2");
    let _ = burner.join();
    drop(stop);
    for t in idle {
        let _ = t.join();
    }
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.profile();
    let comments = pprof_tests::comments(&p);
    let timed: usize = comments
        .iter()
        .find_map(|c| {
            c.strip_prefix("pprof-core CPU sampler: ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no sampler comment: {comments:?}"));
    assert!(timed >= 2000, "{timed} timers: {comments:?}");
    let stacks = stacks(&p);
    let burning: i64 = stacks
        .iter()
        .filter(|s| s.has("pprof_tests::burn_cpu_here"))
        .map(|s| s.values[1])
        .sum();
    let total: i64 = stacks.iter().map(|s| s.values[1]).sum();
    assert!(burning * 2 > total, "{burning} of {total} ns");
}
