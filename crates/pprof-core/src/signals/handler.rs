//! Installing a signal handler, and what every handler needs from the
//! interrupted context.

use crate::error::Error;

/// A handler as `sigaction` takes it with `SA_SIGINFO`.
pub(super) type Action = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Install `action` for `signal`, unless the application handles the
/// signal itself (then the error says so). Threads interrupted in a system
/// call resume it (`SA_RESTART`); the handler runs on the alternate signal
/// stack where there is one (`SA_ONSTACK`). `SIGPROF` is held off while it runs, so
/// the CPU sampler's handler never nests inside it.
pub(super) fn install(signal: i32, action: Action) -> Result<(), Error> {
    let current = current(signal)?;
    let ours = action as libc::sighandler_t;
    if current != libc::SIG_DFL && current != libc::SIG_IGN && current != ours {
        return Err(Error::Profiler(format!(
            "signal {signal} already has a handler in this process; choose another with Config::thread_signal"
        )));
    }
    install_masked(signal, action, &[libc::SIGPROF])
}

/// The handler (or `SIG_DFL`, `SIG_IGN`) `signal` has now.
pub(super) fn current(signal: i32) -> Result<libc::sighandler_t, Error> {
    // SAFETY: sigaction with a null new action only reads the current one
    // into `old`, a zeroed sigaction we own.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
            return Err(Error::Profiler(format!(
                "cannot read the action of signal {signal}"
            )));
        }
        Ok(old.sa_sigaction)
    }
}

/// Install `action` for `signal` (`SA_SIGINFO | SA_RESTART | SA_ONSTACK`),
/// with the signals in `blocked` held off while it runs. On the thread's
/// alternate signal stack, where it has one (every thread Rust starts
/// does), the kernel's signal frame never lands on a thread near its stack
/// limit; the walk itself moves to a stack of its own
/// ([`super::workspace`]).
pub(super) fn install_masked(signal: i32, action: Action, blocked: &[i32]) -> Result<(), Error> {
    // SAFETY: `new` is fully initialised (zeroed, then handler, flags and
    // a mask built with sigemptyset/sigaddset); the handler is
    // async-signal-safe (module docs).
    let installed = unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = action as libc::sighandler_t;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut new.sa_mask);
        for &other in blocked {
            libc::sigaddset(&mut new.sa_mask, other);
        }
        libc::sigaction(signal, &new, std::ptr::null_mut())
    };
    if installed != 0 {
        return Err(Error::Profiler(format!(
            "cannot install a handler for signal {signal}"
        )));
    }
    Ok(())
}

/// Whether `signal` runs `action` now: the application may have installed
/// its own handler over ours since we installed it.
pub(super) fn runs(signal: i32, action: Action) -> Result<bool, Error> {
    Ok(current(signal)? == action as libc::sighandler_t)
}

/// The interrupted thread's pc, stack pointer and frame pointer, from the
/// signal's machine context; `None` without one, or on an architecture
/// this crate does not unwind.
pub(super) fn registers(context: *mut libc::c_void) -> Option<super::unwind::Registers> {
    if context.is_null() {
        return None;
    }
    let context = context.cast::<libc::ucontext_t>();
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO
        // handler; we only read three saved registers.
        let gregs = unsafe { &(*context).uc_mcontext.gregs };
        let reg = |r: libc::c_int| gregs[usize::try_from(r).unwrap_or(0)] as u64;
        let registers = super::unwind::Registers {
            pc: reg(libc::REG_RIP),
            sp: reg(libc::REG_RSP),
            fp: reg(libc::REG_RBP),
        };
        (registers.pc != 0).then_some(registers)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = context;
        None
    }
}

/// Run a handler's body with the interrupted code's `errno` kept intact.
pub(super) fn keeping_errno(body: impl FnOnce()) {
    // SAFETY: __errno_location returns this thread's errno slot, valid for
    // the thread's life; reading it is async-signal-safe.
    let errno = unsafe { *libc::__errno_location() };
    body();
    // SAFETY: as above; restoring it keeps the interrupted code's errno.
    unsafe {
        *libc::__errno_location() = errno;
    }
}
