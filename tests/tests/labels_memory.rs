//! Labels with a unique value per request (what the docs advise against)
//! stay bounded: a profile keeps at most 1024 distinct sets, counts the
//! rest under one overflow set, and nothing is left behind (own test
//! binary: other tests' allocations would move the number).

use std::time::Duration;

use pprof_tests::{Adapter, burn_cpu_here, get, rss_anon_kib, stacks};

pprof_core::jemalloc_heap_profiling!();

/// `seconds` of work split over many "requests", each labeled with its own id.
fn unique_requests(seconds: u64, worker: u64) {
    let until = std::time::Instant::now() + Duration::from_secs(seconds);
    let mut id = 0u64;
    while std::time::Instant::now() < until {
        id += 1;
        pprof_core::labels::with([("request.id", format!("{worker}-{id}"))], || {
            burn_cpu_here(Duration::from_micros(500));
        });
    }
}

#[test]
fn unique_label_values_are_bounded_per_profile_and_leave_nothing_behind() {
    let addr = Adapter::Axum.start(None);
    // Each tick of a kernel that checks timers at 250 Hz stands for 4 ms at
    // 1000 Hz: two threads for 8 s give well over 1024 distinct sets on an
    // idle machine (about 1600 on one with twice the load it has cores).
    let profile = move |seconds: u64| {
        let workers: Vec<_> = (0..2)
            .map(|w| std::thread::spawn(move || unique_requests(seconds, w)))
            .collect();
        let r = get(
            addr,
            &format!("/debug/pprof/profile?seconds={seconds}&hz=1000"),
        );
        for w in workers {
            let _ = w.join();
        }
        assert_eq!(r.status, 200, "{}", r.text());
        r.profile()
    };
    let overflowed = |p: &pprof_tests::Profile| {
        stacks(p)
            .iter()
            .any(|s| s.label("pprof_core.labels") == Some("overflow"))
    };
    // Warm up: symbolizer caches and the runtime settle.
    let _ = profile(2);
    let before = rss_anon_kib();
    let overflows_before = pprof_core::labels::overflows();
    // Past 1024 distinct sets the rest go to the overflow set. Profile
    // until the workers got CPU for more ticks than that: once on most
    // machines, a few times on a busy one; never not at all.
    let mut tries = 0;
    let p = loop {
        let p = profile(8);
        tries += 1;
        if overflowed(&p) || tries == 4 {
            break p;
        }
    };
    let _ = profile(2);
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_anon_kib();
    let samples = stacks(&p);
    let ids: std::collections::HashSet<&str> = samples
        .iter()
        .filter_map(|s| s.label("request.id"))
        .collect();
    assert_eq!(
        ids.len(),
        1024,
        "distinct sets kept in a profile of more unique sets than that (after {tries} tries: \
         fewer means the workers never got 1024 ticks of CPU)"
    );
    assert!(overflowed(&p), "no overflow set");
    assert!(pprof_core::labels::overflows() > overflows_before);
    // Every tick still counts, labeled or overflowed.
    let unlabeled: i64 = samples
        .iter()
        .filter(|s| {
            s.has("burn_cpu_here")
                && s.label("request.id").is_none()
                && s.label("pprof_core.labels").is_none()
        })
        .map(|s| s.values[1])
        .sum();
    assert_eq!(unlabeled, 0);
    assert!(
        after <= before + 4 * 1024,
        "RssAnon grew from {before} KiB to {after} KiB over {} profiles of unique labels",
        tries + 1
    );
}
