//! Limits that keep the routes from tying up the service: one heap dump at
//! a time, capped text answers, and requests that end early free what
//! they held.

use std::time::{Duration, Instant};

use pprof_core::Config;
use pprof_tests::{Adapter, assert_go_error, get, heap_profiler_lock, send};

// Heap profiles need jemalloc with its profiler on in this test process.
pprof_core::jemalloc_heap_profiling!();

const BUSY: &str =
    "Could not dump the heap profile: another heap or allocs dump is in progress; try again\n";

#[test]
fn concurrent_heap_requests_get_a_profile_or_a_clear_409_never_a_queue() {
    let _heap = heap_profiler_lock();
    for adapter in Adapter::ALL {
        let addr = adapter.start(None);
        let answers: Vec<_> = (0..6)
            .map(|i| {
                let path = if i % 2 == 0 {
                    "/debug/pprof/heap"
                } else {
                    "/debug/pprof/allocs"
                };
                std::thread::spawn(move || get(addr, path))
            })
            .map(|t| t.join().expect("request thread"))
            .collect();
        let mut served = 0;
        for r in &answers {
            match r.status {
                200 => {
                    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
                    assert!(
                        !r.profile().sample.is_empty(),
                        "{adapter:?}: empty heap profile"
                    );
                    served += 1;
                }
                409 => {
                    assert_eq!(r.header("x-go-pprof"), Some("1"), "{adapter:?}");
                    assert_eq!(r.text(), BUSY, "{adapter:?}");
                }
                other => panic!("{adapter:?}: {other} {}", r.text()),
            }
        }
        assert!(served >= 1, "{adapter:?}: no heap request was served");
        // Once they are done, the slot is free.
        assert_eq!(
            get(addr, "/debug/pprof/heap").status,
            200,
            "{adapter:?} after"
        );
    }
}

#[test]
fn client_leaving_a_delta_heap_profile_frees_it() {
    let _heap = heap_profiler_lock();
    for adapter in Adapter::ALL {
        // One delta allocs profile at a time: while the abandoned one
        // holds its place, a second is refused, so the 200 at the end
        // shows that leaving cancelled it (a wait of its own would hold
        // the place for its whole minute).
        let addr = adapter.start_with(Config::default().max_delta_requests(1));
        let started = Instant::now();
        let waiting = send(addr, "GET", "/debug/pprof/allocs?seconds=60", b"");
        // Past its first snapshot (which holds the heap dump slot).
        std::thread::sleep(Duration::from_millis(500));
        let mut refused = None;
        for _ in 0..100 {
            let r = get(addr, "/debug/pprof/allocs?seconds=1");
            if r.status == 409 {
                refused = Some(r);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let refused =
            refused.unwrap_or_else(|| panic!("{adapter:?}: the first delta held no place"));
        assert_go_error(
            &refused,
            409,
            "Could not start a delta allocs profile: 1 are in progress, the server's limit (max_delta_requests); try again",
            &format!("{adapter:?}"),
        );
        // Heap requests work meanwhile: the delta does not hold the dump slot.
        let r = get(addr, "/debug/pprof/heap");
        assert_eq!(r.status, 200, "{adapter:?}: {}", r.text());
        drop(waiting);
        // The server notices the hang-up (hyper at once, actix's watch
        // within 200 ms): retried while the place is still held, for at
        // most 20 s, far less than the abandoned profile's minute.
        let mut r = get(addr, "/debug/pprof/allocs?seconds=1");
        while r.status == 409 && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(100));
            r = get(addr, "/debug/pprof/allocs?seconds=1");
        }
        assert_eq!(r.status, 200, "{adapter:?}: {}", r.text());
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"allocs-delta\"")
        );
    }
}

#[test]
fn text_over_the_limit_is_a_400_that_says_so() {
    let _heap = heap_profiler_lock();
    // Something sizeable and live, so the text is long.
    let keep: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1 << 20]).collect();
    let limit = 600;
    for adapter in Adapter::ALL {
        let addr = adapter.start_with(Config::default().max_text_bytes(limit));
        for path in ["heap?debug=1", "goroutine?debug=2"] {
            let r = get(addr, &format!("/debug/pprof/{path}"));
            assert_go_error(
                &r,
                400,
                "over the server's limit of 600 (max_text_bytes)",
                &format!("{adapter:?} {path}"),
            );
        }
        // The protobuf form has no such limit; a short text is whole.
        let r = get(addr, "/debug/pprof/heap");
        assert_eq!(r.status, 200);
        assert!(!r.profile().sample.is_empty());
        let r = get(addr, "/debug/pprof/cmdline");
        assert_eq!(r.status, 200, "{adapter:?}");
    }
    drop(std::hint::black_box(keep));
}

#[test]
fn heap_dumps_survive_a_tmp_cleaner_removing_their_directory() {
    let _heap = heap_profiler_lock();
    let addr = Adapter::Axum.start(None);
    assert_eq!(get(addr, "/debug/pprof/heap").status, 200);
    // What systemd-tmpfiles or tmpreaper would do to our private directory.
    let ours = format!("pprof-core-{}-", std::process::id());
    let mut removed = 0;
    for entry in std::fs::read_dir(std::env::temp_dir()).expect("temp dir") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with(&ours) {
            std::fs::remove_dir_all(entry.path()).expect("remove");
            removed += 1;
        }
    }
    assert!(removed >= 1, "no private dump directory to remove");
    let r = get(addr, "/debug/pprof/heap");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.profile().sample.is_empty());
}
