//! `fork` without `exec`: the child has one thread, no timers of ours, no
//! manager, and copies of every lock as it was at the fork.
//!
//! `pthread_atfork` handlers, registered once, take our locks before the
//! fork and give them back after it in both processes, so the child never
//! inherits a lock another thread held; in the child they then forget the
//! state that belongs to the parent (the CPU sampler's timers, which the
//! child does not have and must not delete: its own timers get the same
//! ids; the armed buffer; handlers counted inside) through the hooks the
//! rooms above register ([`register`]). A thread dump in progress at the
//! fork is not waited for: the child then has no thread dumps ([`dumps_lost`]).
//!
//! glibc's `posix_spawn` (what `std::process::Command` uses) and `vfork`
//! run no fork handlers, and need none: the child execs at once.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{MutexGuard, Once};

/// A hook of a room above (the CPU sampler): before the fork it takes its
/// lock, after it gives it back (`forked`: in the child).
pub(crate) type Hook = fn(Phase);

/// Where a fork is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Before,
    Parent,
    Child,
}

static HOOK: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
/// Set in a child forked while a thread dump held its lock.
static DUMPS_LOST: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The locks the forking thread holds across the fork.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Our signal-side locks, held across one fork.
struct Held {
    _code: super::code::Locked,
    _stacks: super::stacks::Locked,
    dumper: Option<MutexGuard<'static, super::threads::Dumper>>,
}

/// Register the handlers (once), and `hook`, the one room above that keeps
/// state a child must forget. Not for signal handlers.
pub(crate) fn register(hook: Option<Hook>) {
    if let Some(hook) = hook {
        HOOK.store(hook as *mut (), Ordering::Release);
    }
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the three handlers are `extern "C" fn()` that never unwind
        // (each catches nothing that could panic: they lock, store and drop).
        unsafe { libc::pthread_atfork(Some(before), Some(in_parent), Some(in_child)) };
    });
}

/// In a child forked while a thread dump ran: dumps are not available.
pub(crate) fn dumps_lost() -> bool {
    DUMPS_LOST.load(Ordering::Relaxed)
}

fn hook(phase: Phase) {
    let hook = HOOK.load(Ordering::Acquire);
    if !hook.is_null() {
        // SAFETY: only `register` stores here, a `Hook` cast to a pointer.
        let hook: Hook = unsafe { std::mem::transmute::<*mut (), Hook>(hook) };
        hook(phase);
    }
}

extern "C" fn before() {
    hook(Phase::Before);
    let held = Held {
        _code: super::code::lock(),
        _stacks: super::stacks::lock(),
        dumper: super::threads::try_lock_dumper(),
    };
    HELD.with(|h| *h.borrow_mut() = Some(held));
}

extern "C" fn in_parent() {
    HELD.with(|h| drop(h.borrow_mut().take()));
    hook(Phase::Parent);
}

extern "C" fn in_child() {
    let held = HELD.with(|h| h.borrow_mut().take());
    if held.as_ref().is_some_and(|h| h.dumper.is_none()) {
        DUMPS_LOST.store(true, Ordering::Relaxed);
    }
    drop(held);
    super::code::forget_readers();
    super::stacks::forget_readers();
    super::cpu::forget_after_fork();
    hook(Phase::Child);
}

/// Fork; run `child` in the child and exit with what it returns; in the
/// parent, wait for it and return its exit status (`None` if it died of a
/// signal). For tests of what a child inherits.
#[cfg(test)]
pub(crate) fn in_a_child(child: impl FnOnce() -> i32) -> Option<i32> {
    // SAFETY: fork has no preconditions; the child runs `child` and exits
    // with `_exit`, running no destructor or test harness code of the parent.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = child();
        // SAFETY: `_exit` ends the child at once.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

/// A timer of the calling process's own that signals nothing (for tests:
/// whether something deleted it).
#[cfg(test)]
pub(crate) struct OwnTimer(libc::timer_t);

#[cfg(test)]
impl OwnTimer {
    pub(crate) fn new() -> Self {
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: a zeroed sigevent asking for no notification; the kernel
        // writes the id into `id`.
        let made = unsafe {
            let mut event: libc::sigevent = std::mem::zeroed();
            event.sigev_notify = libc::SIGEV_NONE;
            libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut id)
        };
        assert_eq!(made, 0, "timer_create");
        Self(id)
    }

    /// Whether the timer still exists.
    pub(crate) fn exists(&self) -> bool {
        // SAFETY: a zeroed itimerspec for the kernel to fill.
        let mut spec: libc::itimerspec = unsafe { std::mem::zeroed() };
        // SAFETY: `self.0` came from timer_create; a deleted id answers EINVAL.
        unsafe { libc::timer_gettime(self.0, &mut spec) == 0 }
    }
}
