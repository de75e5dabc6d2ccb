//! The async-signal-safe machinery, and with the jemalloc glue the only
//! place in pprof-core with `unsafe` code: installing signal handlers,
//! unwinding from a signal context into preallocated slots, capturing the
//! stack of one thread or of all of them.
//!
//! # Invariants
//!
//! - A signal handler only does async-signal-safe work: it allocates
//!   nothing, takes no lock, saves and restores `errno`, and writes only
//!   into atomics of storage allocated before the signal was sent
//!   ([`threads`]' slot pools, which are never freed, so a handler that
//!   runs late still writes into valid memory).
//! - One unwinding routine ([`unwind`]) serves every handler: it reads
//!   stack memory only within the interrupted thread's stack ([`stacks`]),
//!   unwind tables only from objects registered outside any handler
//!   ([`code`]), runs on a stack and cache of its own ([`workspace`]), and
//!   says why when it stops early. What it reads is built outside handlers
//!   and published whole ([`published`]).
//! - A handler is installed only over the default or ignored action, never
//!   over the application's own, and never uninstalled, so a late signal
//!   finds a harmless handler.
//! - Symbolization, aggregation and encoding happen later, on ordinary
//!   threads, never in a handler.
//!
//! Every `unsafe` block here carries a `// SAFETY:` note.

pub(crate) mod code;
pub(crate) mod cpu;
pub(crate) mod fork;
mod handler;
mod image;
pub(crate) mod labels;
mod published;
mod socket;
mod stacks;
mod threads;
mod unwind;
mod workspace;

pub(crate) use image::{Image, images, loader_generation, map_file, vdso_bytes};
pub(crate) use socket::duplicate as duplicate_fd;
pub(crate) use threads::{
    ThreadStack, capture as capture_thread, count as thread_count, dump as dump_threads,
    set_thread_signal, thread_signal,
};
#[cfg(test)]
pub(crate) use threads::{hold_dumps, with_thread_signal_blocked};
pub(crate) use unwind::{MAX_FRAMES, Outcome, prepare as refresh_unwinder, stack_here};

/// This thread's kernel id.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions, cannot fail and is async-signal-safe.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    i32::try_from(tid).unwrap_or(0)
}
