//! What `go tool pprof` reads from our endpoints, on the practice program:
//! each planted problem on top of its profile, Go's sample types in every
//! profile, and source listings that work.
//!
//! Needs `go` (apt-get install -y golang-go): under `CI=true` these tests
//! fail without it; elsewhere they are skipped with a loud message.

use std::net::SocketAddr;

use pprof_tests::{cpu_profiler_lock, get, go_tool_pprof, practice, save, top_function};

pprof_core::jemalloc_heap_profiling!();

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}/debug/pprof/{path}")
}

#[test]
fn cpu_profile_puts_tiger_eat_on_top() {
    let addr = practice();
    let _cpu = cpu_profiler_lock();
    let r = get(addr, "/debug/pprof/profile?seconds=3");
    assert_eq!(r.status, 200, "{}", r.text());
    let file = save(&r.body, "cpu.pb.gz");
    let Some(top) = go_tool_pprof(&["-top", &file]) else {
        return;
    };
    assert!(top.contains("Type: cpu"), "{top}");
    assert_eq!(
        top_function(&top).as_deref(),
        Some("practice::Tiger::eat"),
        "{top}"
    );

    let raw = go_tool_pprof(&["-raw", &file]).unwrap_or_default();
    assert!(raw.contains("samples/count cpu/nanoseconds"), "{raw}");
    assert!(raw.contains("thread:[zoo]"), "thread label: {raw}");

    // -list finds the source through the file:line of our symbolization.
    let list = go_tool_pprof(&["-list", "Tiger::eat", &file]).unwrap_or_default();
    assert!(
        list.contains("ROUTINE ======================== practice::Tiger::eat"),
        "{list}"
    );
    assert!(list.contains("examples/practice/src/lib.rs"), "{list}");
    assert!(list.contains("x ^= x << 13;"), "source lines shown: {list}");
}

#[test]
fn heap_profile_puts_mouse_steal_on_top() {
    let _heap = pprof_tests::heap_profiler_lock();
    let addr = practice();
    // go tool pprof fetches the URL itself, as a user would.
    let Some(top) = go_tool_pprof(&["-top", &url(addr, "heap")]) else {
        return;
    };
    assert!(top.contains("Type: inuse_space"), "{top}");
    assert_eq!(
        top_function(&top).as_deref(),
        Some("practice::Mouse::steal"),
        "{top}"
    );

    let raw = go_tool_pprof(&["-raw", &url(addr, "heap")]).unwrap_or_default();
    assert!(
        raw.contains("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes"),
        "{raw}"
    );
    assert!(raw.contains("bytes:["), "bytes label: {raw}");
}

#[test]
fn allocs_profile_puts_dog_run_on_top() {
    let _heap = pprof_tests::heap_profiler_lock();
    let addr = practice();
    let Some(top) = go_tool_pprof(&["-sample_index=alloc_space", "-top", &url(addr, "allocs")])
    else {
        return;
    };
    assert!(top.contains("Type: alloc_space"), "{top}");
    assert_eq!(
        top_function(&top).as_deref(),
        Some("practice::Dog::run"),
        "{top}"
    );
    // allocs names alloc_space as its default type, so no flag is needed either.
    let default = go_tool_pprof(&["-top", &url(addr, "allocs")]).unwrap_or_default();
    assert!(default.contains("Type: alloc_space"), "{default}");
}

#[test]
fn delta_profiles_read_in_go_tool_pprof() {
    let _heap = pprof_tests::heap_profiler_lock();
    let addr = practice();
    let Some(raw) = go_tool_pprof(&["-raw", &url(addr, "allocs?seconds=1")]) else {
        return;
    };
    assert!(raw.contains("alloc_space/bytes"), "{raw}");
    // Over one second the dog ran: its churn is in the delta.
    let top = go_tool_pprof(&[
        "-sample_index=alloc_space",
        "-top",
        &url(addr, "allocs?seconds=2"),
    ])
    .unwrap_or_default();
    assert_eq!(
        top_function(&top).as_deref(),
        Some("practice::Dog::run"),
        "{top}"
    );
}

#[test]
fn goroutine_profile_puts_wolf_drink_on_top() {
    let addr = practice();
    let Some(top) = go_tool_pprof(&["-top", &url(addr, "goroutine")]) else {
        return;
    };
    assert!(top.contains("Type: goroutine"), "{top}");
    assert_eq!(
        top_function(&top).as_deref(),
        Some("practice::Wolf::drink::{{closure}}"),
        "{top}"
    );
    // The wolf's threads are labelled with their name; -traces shows it.
    let traces = go_tool_pprof(&["-traces", &url(addr, "goroutine")]).unwrap_or_default();
    let wolf = traces
        .split("-----------+")
        .find(|t| t.lines().any(|l| l.trim() == "thread:  wolf"))
        .unwrap_or_else(|| panic!("no trace labelled thread wolf: {traces}"));
    assert!(
        wolf.lines().any(|l| l.trim() == "state:  sleeping"),
        "{wolf}"
    );
    assert!(
        wolf.contains("practice::Wolf::drink::{{closure}}"),
        "{wolf}"
    );

    // threadcreate: the closure given to spawn, named after Wolf::drink.
    let created = go_tool_pprof(&["-top", &url(addr, "threadcreate")]).unwrap_or_default();
    assert!(created.contains("Type: threadcreate"), "{created}");
    assert_eq!(
        top_function(&created).as_deref(),
        Some("practice::Wolf::drink::{{closure}}"),
        "{created}"
    );
}

#[test]
fn mutex_profile_puts_wolf_howl_on_top() {
    let addr = practice();
    let Some(top) = go_tool_pprof(&["-top", &url(addr, "mutex")]) else {
        return;
    };
    assert!(top.contains("Type: delay"), "{top}");
    assert_eq!(
        top_function(&top).as_deref(),
        Some("practice::Wolf::howl"),
        "{top}"
    );
    let raw = go_tool_pprof(&["-raw", &url(addr, "mutex")]).unwrap_or_default();
    assert!(raw.contains("contentions/count delay/nanoseconds"), "{raw}");
}

#[test]
fn block_profile_puts_cat_pee_on_top() {
    let addr = practice();
    let Some(top) = go_tool_pprof(&["-top", &url(addr, "block")]) else {
        return;
    };
    assert!(top.contains("Type: delay"), "{top}");
    assert_eq!(
        top_function(&top).as_deref(),
        Some("practice::Cat::pee"),
        "{top}"
    );
    // The sloth's naps block a runtime worker: poll watching puts them in
    // the block profile, second to the cat (100 ms per half second).
    assert!(
        top.lines()
            .any(|l| l.contains("practice::Sloth::nap") && !l.trim_start().starts_with('0')),
        "{top}"
    );
    // Over two seconds the wolf howled (100 ms each round): the cat's waits
    // are in the delta too.
    let top = go_tool_pprof(&["-top", &url(addr, "block?seconds=2")]).unwrap_or_default();
    assert_eq!(
        top_function(&top).as_deref(),
        Some("practice::Cat::pee"),
        "{top}"
    );
}
