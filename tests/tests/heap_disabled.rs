//! A process that did not turn jemalloc's profiler on gets a clear error
//! from /heap and /allocs, never an empty profile or a crash.

use pprof_tests::{Adapter, get};

#[test]
fn heap_without_profiling_says_how_to_enable_it() {
    for adapter in Adapter::ALL {
        let addr = adapter.start(None);
        for name in ["heap", "allocs", "heap?debug=1", "allocs?seconds=1"] {
            let r = get(addr, &format!("/debug/pprof/{name}"));
            assert_eq!(r.status, 501, "{adapter:?} {name}: {}", r.text());
            assert_eq!(r.header("x-go-pprof"), Some("1"));
            assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
            let text = r.text();
            assert!(text.contains("jemalloc_heap_profiling!"), "{text}");
            assert_eq!(text.matches('\n').count(), 1, "{text}");
        }
        let head = pprof_tests::request(addr, "HEAD", "/debug/pprof/heap", b"");
        assert_eq!(head.status, 501, "HEAD agrees with GET");
        // Everything else still works.
        assert_eq!(get(addr, "/debug/pprof/").status, 200);
    }
}
