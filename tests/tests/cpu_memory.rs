//! A burst of CPU profiles leaves no anonymous memory behind (own test
//! binary: other tests' allocations would move the number).

use std::time::Duration;

use pprof_tests::{Adapter, burn_cpu_on_thread, get, rss_anon_kib};

pprof_core::jemalloc_heap_profiling!();

#[test]
fn a_burst_of_profiles_leaves_no_growth_in_anonymous_memory() {
    let addr = Adapter::Axum.start(None);
    let profile = move || {
        let r = get(addr, "/debug/pprof/profile?seconds=1&hz=1000");
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let burner = burn_cpu_on_thread("burner", Duration::from_secs(30));
    let round = move || {
        profile();
        let together: Vec<_> = (0..4).map(|_| std::thread::spawn(profile)).collect();
        for t in together {
            t.join().expect("profile");
        }
    };
    // Warm up: the symbolizer's caches (they grow with the distinct
    // addresses named, up to their bound), the runtime's blocking threads
    // and the allocator's per-thread arenas settle.
    for _ in 0..3 {
        round();
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_anon_kib();
    for _ in 0..4 {
        round();
        eprintln!("RssAnon after a round: {} KiB", rss_anon_kib());
    }
    // The sampler stops within its manager's next round.
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_anon_kib();
    drop(burner);
    assert!(before > 0, "RssAnon is readable");
    assert!(
        after <= before + 4 * 1024,
        "RssAnon grew from {before} KiB to {after} KiB over 20 profiles"
    );
}
