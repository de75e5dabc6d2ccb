//! The goroutine dump under pressure: 100 consecutive dumps while the app
//! serves requests, a CPU profile's SIGPROF flies and one thread blocks the
//! dump signal. Nothing may crash, hang or fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pprof_tests::{Adapter, cpu_profiler_lock, get, string};

pprof_core::jemalloc_heap_profiling!();

/// A thread with SIGURG (the dump signal) blocked, waiting until told to stop.
fn thread_blocking_the_dump_signal(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("blocks-urg".to_owned())
        .spawn(move || {
            #[allow(unsafe_code)]
            // SAFETY: the zeroed sigset_t is initialised by sigemptyset and
            // sigaddset; pthread_sigmask changes this thread's mask only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGURG);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .expect("spawn")
}

#[test]
fn a_hundred_dumps_under_load_neither_crash_nor_hang() {
    let addr = Adapter::Axum.start(None);
    let stop = Arc::new(AtomicBool::new(false));
    let blocker = thread_blocking_the_dump_signal(stop.clone());

    // Load on the app's own route from two clients.
    let served = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if get(addr, "/hello").status == 200 {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // A CPU profile runs through part of the dumps: SIGPROF and the dump
    // signal interrupt the same threads.
    let cpu = cpu_profiler_lock();
    let profiler = std::thread::spawn(move || get(addr, "/debug/pprof/profile?seconds=3").status);

    for i in 0..100 {
        let r = get(addr, "/debug/pprof/goroutine");
        assert_eq!(r.status, 200, "dump {i}: {}", r.text());
        let p = r.profile();
        assert!(!p.sample.is_empty(), "dump {i}");
        // The blocked thread is listed, without a stack, and says why.
        let blocked = p.sample.iter().any(|s| {
            s.label
                .iter()
                .any(|l| string(&p, l.key) == "thread" && string(&p, l.str) == "blocks-urg")
                && s.label.iter().any(|l| {
                    string(&p, l.key) == "stack" && string(&p, l.str).contains("did not answer")
                })
        });
        assert!(blocked, "dump {i}: the blocked thread is missing");
    }
    let debug2 = get(addr, "/debug/pprof/goroutine?debug=2");
    assert_eq!(debug2.status, 200);
    let text = debug2.text();
    let block = text
        .split("\n\n")
        .find(|b| b.contains("\"blocks-urg\" ["))
        .unwrap_or_else(|| panic!("no block for the blocked thread: {text}"));
    assert!(
        block.contains("\t(unavailable: the thread did not answer the signal)"),
        "{block}"
    );

    assert_eq!(profiler.join().expect("profiler"), 200);
    drop(cpu);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    blocker.join().expect("blocker");
    assert!(served.load(Ordering::Relaxed) > 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "app requests failed");
    // And the service still answers.
    assert_eq!(get(addr, "/hello").text(), "hello\n");
}
