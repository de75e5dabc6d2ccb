//! The CPU sampler as a reader sees it: time in libc attributed to the
//! call and its Rust caller, windows of concurrent profiles kept apart,
//! threads started mid-profile sampled.

use std::time::Duration;

use pprof_tests::{Adapter, Stack, burn_cpu_on_thread, cpu_profiler_lock, get, stacks};

/// The samples of a CPU profile fetched from `addr`.
fn cpu_profile(addr: std::net::SocketAddr, seconds: u64) -> (Vec<Stack>, pprof_tests::Profile) {
    let r = get(addr, &format!("/debug/pprof/profile?seconds={seconds}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.profile();
    (stacks(&p), p)
}

/// CPU nanoseconds of the samples `keep` selects.
fn cpu_of(stacks: &[Stack], keep: impl Fn(&Stack) -> bool) -> i64 {
    stacks.iter().filter(|s| keep(s)).map(|s| s.values[1]).sum()
}

/// A loop on a cheap system call: nearly all its time is in libc and the kernel.
#[inline(never)]
fn call_getppid_here(until: std::time::Instant) -> u64 {
    let mut calls = 0u64;
    while std::time::Instant::now() < until {
        for _ in 0..1000 {
            // SAFETY-free: getppid has no arguments and cannot fail.
            calls += u64::from(std::hint::black_box(std::process::id()) > 0);
            let _ = std::hint::black_box(nix_free_getppid());
        }
    }
    calls
}

/// `getppid(2)` through libc, without `unsafe` in the test: std exposes
/// the parent's id only on unix through this call.
fn nix_free_getppid() -> u32 {
    std::os::unix::process::parent_id()
}

#[test]
fn time_in_libc_is_attributed_to_the_call_and_its_rust_caller() {
    let _cpu = cpu_profiler_lock();
    let addr = Adapter::Axum.start(None);
    let until = std::time::Instant::now() + Duration::from_secs(3);
    let caller = std::thread::Builder::new()
        .name("syscaller".into())
        .spawn(move || call_getppid_here(until))
        .expect("spawn");
    let (stacks, _) = cpu_profile(addr, 2);
    let _ = caller.join();
    let ours: Vec<&Stack> = stacks
        .iter()
        .filter(|s| s.label("thread") == Some("syscaller"))
        .collect();
    let total: i64 = ours.iter().map(|s| s.values[1]).sum();
    assert!(total > 0, "the syscall thread was not sampled: {stacks:#?}");
    let in_caller = cpu_of(&stacks, |s| {
        s.label("thread") == Some("syscaller") && s.has("call_getppid_here")
    });
    let leaf_in_libc = cpu_of(&stacks, |s| {
        s.label("thread") == Some("syscaller")
            && s.has("call_getppid_here")
            && s.functions
                .first()
                .is_some_and(|leaf| leaf.contains("getppid"))
    });
    // Nearly every tick of the thread is in its loop; many are in libc's
    // getppid itself (the kernel's time is charged at the syscall's pc),
    // with the Rust caller below it. (A blocklist that drops ticks in libc
    // would show none.)
    assert!(
        in_caller * 4 >= total * 3,
        "{in_caller} of {total} in the caller, {leaf_in_libc} in libc: {ours:#?}"
    );
    assert!(
        leaf_in_libc * 4 >= total,
        "{leaf_in_libc} of {total} in libc: {ours:#?}"
    );
}

#[inline(never)]
fn burn_in_the_first_window(d: Duration) -> u64 {
    pprof_tests::burn_cpu_here(d)
}

#[inline(never)]
fn burn_in_the_second_window(d: Duration) -> u64 {
    pprof_tests::burn_cpu_here(d)
}

#[test]
fn concurrent_profiles_each_hold_exactly_their_own_window() {
    let _cpu = cpu_profiler_lock();
    for adapter in Adapter::ALL {
        let addr = adapter.start(None);
        // First: 0 s to 2 s. Second: from 1 s, 4 s long. One thread burns
        // only at the first's start; another starts once the first has
        // answered (so after its window, however late a loaded machine
        // opened it) and burns inside the second's.
        let first = std::thread::spawn(move || cpu_profile(addr, 2));
        let early = std::thread::Builder::new()
            .name("early".into())
            .spawn(|| burn_in_the_first_window(Duration::from_millis(700)))
            .expect("spawn");
        std::thread::sleep(Duration::from_secs(1));
        let second = std::thread::spawn(move || cpu_profile(addr, 4));
        let _ = early.join();
        let (first, first_p) = first.join().expect("first");
        let late = std::thread::Builder::new()
            .name("late".into())
            .spawn(|| burn_in_the_second_window(Duration::from_millis(800)))
            .expect("spawn");
        let (second, second_p) = second.join().expect("second");
        let _ = late.join();
        let has = |stacks: &[Stack], f: &str| stacks.iter().any(|s| s.has(f));
        assert!(has(&first, "burn_in_the_first_window"), "{adapter:?}");
        assert!(
            !has(&first, "burn_in_the_second_window"),
            "{adapter:?}: late work in the first window"
        );
        assert!(has(&second, "burn_in_the_second_window"), "{adapter:?}");
        assert!(
            !has(&second, "burn_in_the_first_window"),
            "{adapter:?}: early work in the second window"
        );
        // Each its own time and length.
        assert!(second_p.time_nanos > first_p.time_nanos, "{adapter:?}");
        assert!((2_000_000_000..3_500_000_000).contains(&first_p.duration_nanos));
        assert!((4_000_000_000..5_500_000_000).contains(&second_p.duration_nanos));
    }
}

/// Burns for `d` of wall time; returns the CPU time the kernel counted
/// for this thread, in nanoseconds (a loaded machine gives it less).
#[inline(never)]
fn burn_on_a_thread_started_mid_profile(d: Duration) -> i64 {
    let _ = pprof_tests::burn_cpu_here(d);
    pprof_tests::this_thread_cpu_ns()
}

#[test]
fn a_thread_started_mid_profile_is_sampled() {
    let _cpu = cpu_profiler_lock();
    let addr = Adapter::Tower.start(None);
    let profile = std::thread::spawn(move || cpu_profile(addr, 3));
    std::thread::sleep(Duration::from_secs(1));
    let newcomer = std::thread::Builder::new()
        .name("newcomer".into())
        .spawn(|| burn_on_a_thread_started_mid_profile(Duration::from_millis(800)))
        .expect("spawn");
    let used = newcomer.join().expect("newcomer");
    let (stacks, _) = profile.join().expect("profile");
    let sampled = cpu_of(&stacks, |s| {
        s.label("thread") == Some("newcomer") && s.has("burn_on_a_thread_started_mid_profile")
    });
    // The kernel counted `used`; the profile (ticks of 10 ms) holds most of
    // it, from the thread's first milliseconds on.
    assert!(
        sampled * 10 >= used * 7 && sampled <= used + 50_000_000,
        "sampled {sampled} ns of {used} ns: {stacks:#?}"
    );
}

#[test]
fn a_burner_among_idle_threads_is_on_top_with_its_thread_name() {
    let _cpu = cpu_profiler_lock();
    let addr = Adapter::Warp.start(None);
    let burner = burn_cpu_on_thread("burner", Duration::from_millis(2500));
    let (stacks, p) = cpu_profile(addr, 2);
    let _ = burner.join();
    let burning = cpu_of(&stacks, |s| s.has("pprof_tests::burn_cpu_here"));
    let total = cpu_of(&stacks, |_| true);
    assert!(burning * 2 > total, "{burning} of {total}");
    assert!(
        stacks
            .iter()
            .filter(|s| s.has("pprof_tests::burn_cpu_here"))
            .all(|s| s.label("thread") == Some("burner"))
    );
    // No two samples share a stack (of locations) and labels.
    let mut keys: Vec<_> = p
        .sample
        .iter()
        .map(|s| (s.location_id.clone(), format!("{:?}", s.label)))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "samples are aggregated by stack and labels");
    // The sampler says what it did.
    let comments = pprof_tests::comments(&p);
    assert!(
        comments
            .iter()
            .any(|c| c.contains("threads with their own CPU timer at 100 Hz")),
        "{comments:?}"
    );
}
