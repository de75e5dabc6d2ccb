//! Another profiler owns SIGPROF: a CPU profile is refused with a message
//! naming the conflict, and theirs stays installed (own test binary: the
//! handler is the process's).
#![allow(
    unsafe_code,
    reason = "the test plays another profiler installing its SIGPROF handler"
)]

use pprof_tests::{Adapter, assert_go_error, get};

extern "C" fn another_profilers_handler(_: libc::c_int) {}

fn sigprof_handler() -> libc::sighandler_t {
    // SAFETY: sigaction with a null new action only reads the current one
    // into `old`, a zeroed sigaction we own.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut old);
        old.sa_sigaction
    }
}

#[test]
fn a_cpu_profile_never_replaces_another_profilers_sigprof_handler() {
    let theirs = another_profilers_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installs a handler that does nothing, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGPROF, theirs) };
    for adapter in Adapter::ALL {
        let addr = adapter.start(None);
        let r = get(addr, "/debug/pprof/profile?seconds=1");
        assert_go_error(
            &r,
            409,
            "SIGPROF already has a handler in this process (another profiler?)",
            &format!("{adapter:?}"),
        );
        assert_eq!(
            sigprof_handler(),
            theirs,
            "{adapter:?}: theirs is still installed"
        );
        // Everything else still works.
        assert_eq!(get(addr, "/debug/pprof/cmdline").status, 200);
    }
}
