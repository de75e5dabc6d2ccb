//! Every profile's samples are unique by stack and labels, after the frame
//! rules trimmed their leaves (issue 19, 11c): a reader never sees two
//! samples it would have to merge, on the practice program's planted
//! problems (allocations in the heap profiles, waits, contention).

use pprof_tests::{cpu_profiler_lock, get, heap_profiler_lock, practice, repeated_samples, stacks};

pprof_core::jemalloc_heap_profiling!();

/// Objects of one size from one call site along two allocator paths:
/// `reserve_exact` allocates for an empty vector and reallocates one that
/// holds a few bytes. Their stacks differ only in jemalloc's and
/// `alloc::`'s frames, which the heap profiles trim: after that they are
/// one stack, with one object size.
#[inline(never)]
fn grow_at_one_call_site(kept: &mut Vec<Vec<u8>>) {
    const SIZE: usize = 256 << 10;
    for i in 0..400 {
        let mut v: Vec<u8> = if i % 2 == 0 {
            Vec::new()
        } else {
            Vec::with_capacity(16)
        };
        v.reserve_exact(SIZE);
        kept.push(v);
    }
}

#[test]
fn no_profile_holds_two_samples_of_one_stack_and_label_set() {
    let _cpu = cpu_profiler_lock();
    let _heap = heap_profiler_lock();
    let addr = practice();
    let mut kept = Vec::new();
    grow_at_one_call_site(&mut kept);
    let allocs = stacks(&get(addr, "/debug/pprof/allocs").profile());
    assert!(
        allocs.iter().any(|s| s.has("grow_at_one_call_site")),
        "the planted allocations were not sampled"
    );
    for path in [
        "profile?seconds=2",
        "heap",
        "allocs",
        "heap?seconds=1",
        "goroutine",
        "threadcreate",
        "mutex",
        "block",
        "block?seconds=1",
    ] {
        let r = get(addr, &format!("/debug/pprof/{path}"));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let p = r.profile();
        assert!(!p.sample.is_empty(), "{path}: no samples");
        let repeated = repeated_samples(&p);
        assert!(
            repeated.is_empty(),
            "{path}: {} of {} samples repeat another's stack and labels: {repeated:#?}",
            repeated.len(),
            p.sample.len()
        );
    }
    drop(kept);
}
