//! The one unwinding routine, and where it runs.
//!
//! Unwinding uses libgcc's `_Unwind_Backtrace` (through `backtrace`), the
//! same unwinder the CPU sampler runs in its SIGPROF handler. With glibc ≥
//! 2.35 and GCC ≥ 12 it finds unwind tables through `_dl_find_object`,
//! which takes no lock; its one-time initialisation is run ([`prepare`])
//! outside any handler before the first signal is sent. With an older
//! glibc, libgcc falls back to `dl_iterate_phdr`, which takes the loader's
//! lock: a thread interrupted inside `dlopen` would then wait for itself in
//! the handler. The CPU profiler's SIGPROF handler has the same exposure.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Run the unwinder's one-time set-up here, outside any signal handler.
pub(super) fn prepare() {
    backtrace::trace(|_| true);
}

/// The calling thread's stack as lookup addresses (return address − 1),
/// leaf first, as many as fit in `buf`; returns how many. Not for signal
/// handlers. It takes no lock of `backtrace`'s, so an unlock that records
/// never waits for a symbolization in progress. The first frames are this
/// function and its callers' capture machinery; the encoder trims them.
#[inline(never)]
pub(crate) fn stack_here(buf: &mut [u64]) -> usize {
    let mut n = 0;
    // SAFETY: `backtrace`'s global lock only serialises unwinders that are
    // not thread-safe (Windows' dbghelp); on Linux libgcc's unwinder may run
    // on many threads at once (the signal handlers here already do). The
    // closure cannot panic: it only stores into `buf` within its length.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize as u64;
            if ip > 1 && n < buf.len() {
                buf[n] = ip - 1;
                n += 1;
            }
            n < buf.len()
        });
    }
    n
}

/// From inside a signal handler: unwind the interrupted thread's stack into
/// `out`, leaf first, starting at the `interrupted` pc (the frames above it
/// are the handler and the kernel's trampoline); raw addresses, the leaf
/// exact and the others return addresses. Returns how many were written.
///
/// # Safety
///
/// Call only from a signal handler on the thread being unwound, after
/// [`prepare`] has run once in the process.
pub(super) unsafe fn from_signal(interrupted: Option<usize>, out: &[AtomicUsize]) -> usize {
    let mut len = 0;
    // Frames above the interrupted one are this handler and the kernel's
    // signal trampoline: skip them until the interrupted pc appears.
    let mut recording = interrupted.is_none();
    // SAFETY: unwinds only the current thread; the unwinder does not
    // allocate or lock (see the module docs) and its initialisation ran in
    // `prepare`. The closure only stores into atomics.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            if !recording && Some(ip) == interrupted {
                recording = true;
            }
            if recording && len < out.len() {
                out[len].store(ip, Ordering::Relaxed);
                len += 1;
            }
            len < out.len()
        });
    }
    if len == 0
        && let (Some(pc), Some(first)) = (interrupted, out.first())
    {
        // The unwinder did not get past the trampoline: the pc alone.
        first.store(pc, Ordering::Relaxed);
        len = 1;
    }
    len
}
