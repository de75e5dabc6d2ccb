//! Past the kernel's limit on timers (`RLIMIT_SIGPENDING`): threads the
//! kernel refuses a timer are sampled by the process-wide timer, and the
//! profile says so (own test binary: the limit is the process's).

use std::time::Duration;

use pprof_tests::{Adapter, burn_cpu_on_thread, get, stacks};

#[test]
fn threads_refused_a_timer_are_sampled_by_the_process_timer_and_counted() {
    let addr = Adapter::Tower.start(None);
    // Room for a few timers at most (queued signals of this user count too).
    let pid = std::process::id().to_string();
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--sigpending=4:4"])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(limited.success());
    let burners: Vec<_> = (0..6)
        .map(|i| burn_cpu_on_thread(&format!("burner-{i}"), Duration::from_millis(2500)))
        .collect();
    let r = get(addr, "/debug/pprof/profile?seconds=2");
    for b in burners {
        let _ = b.join();
    }
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.profile();
    let comments = pprof_tests::comments(&p);
    assert!(
        comments
            .iter()
            .any(|c| c.contains("had no timer of their own")
                && c.contains("sampled by the process-wide timer")),
        "{comments:?}"
    );
    // Every burner is still in the profile, with its name.
    let stacks = stacks(&p);
    for i in 0..6 {
        let name = format!("burner-{i}");
        let cpu: i64 = stacks
            .iter()
            .filter(|s| s.label("thread") == Some(name.as_str()) && s.has("burn_cpu_here"))
            .map(|s| s.values[1])
            .sum();
        assert!(cpu > 0, "{name} missing: {comments:?}");
    }
}
