//! Where a walk runs: a workspace of its own, with the unwinder's cache and
//! a stack of its own, taken from a pool made once outside any handler.
//!
//! A handler runs on the interrupted thread's stack, or on its alternate
//! signal stack (8 KiB for the threads Rust starts, nearly half of it the
//! kernel's signal frame), and a thread near its stack limit has no room
//! for an unwinder's state. So the handler moves to the workspace's stack
//! (a few instructions of assembly), walks there, and comes back: the
//! interrupted stack holds the kernel's frame and a few dozen bytes of
//! ours, whatever the unwinder needs. Each stack has a guard page below it.
//!
//! A workspace is claimed with one compare-and-swap and given back with a
//! store; a walk that finds every workspace taken (more threads inside a
//! walk at once than the pool holds) does not walk, and says so.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use framehop::{CacheNative, MustNotAllocateDuringUnwind};

/// The unwinder's cache of rules, allocation-free in use.
pub(super) type Cache = CacheNative<MustNotAllocateDuringUnwind>;

/// How many times a walk that finds every workspace taken tries again.
const SPINS: usize = 256;

/// Bytes of each workspace's stack (touched pages only become memory).
const STACK_BYTES: usize = 256 << 10;

struct Workspace {
    busy: AtomicBool,
    cache: UnsafeCell<Cache>,
    /// The top of its stack, 16-byte aligned; 0 when none could be mapped
    /// (the walk then runs where it is).
    stack_top: usize,
}

struct Pool {
    spaces: Box<[Workspace]>,
}

// SAFETY: a workspace's cache is used only by whoever claimed it with the
// compare-and-swap on `busy`, one at a time; the rest is immutable.
unsafe impl Sync for Pool {}

/// The pool handlers take workspaces from; null until [`prepare`]. Never
/// freed, so a late handler never meets freed memory.
static POOL: AtomicPtr<Pool> = AtomicPtr::new(std::ptr::null_mut());

/// Workspaces in the pool: two per thread that can run at once, at least
/// 8 and at most 32.
pub(super) fn capacity() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    (cpus * 2).clamp(8, 32)
}

/// Make the pool, once, outside any handler.
pub(super) fn prepare() {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        let spaces = (0..capacity())
            .map(|_| Workspace {
                busy: AtomicBool::new(false),
                cache: UnsafeCell::new(Cache::new_in()),
                stack_top: map_stack(),
            })
            .collect();
        let pool: &'static Pool = Box::leak(Box::new(Pool { spaces }));
        POOL.store(std::ptr::from_ref(pool).cast_mut(), Ordering::Release);
    });
}

/// Run `walk` with a free workspace's cache, on its stack; `None` when the
/// pool is not made yet or every workspace is taken. Async-signal-safe if
/// `walk` is.
pub(super) fn with_workspace<R>(walk: impl FnOnce(&mut Cache) -> R) -> Option<R> {
    let pool = POOL.load(Ordering::Acquire);
    // SAFETY: the pool is leaked once made, so a non-null pointer is valid
    // for the rest of the process.
    let pool = unsafe { pool.as_ref() }?;
    let claim = || {
        pool.spaces.iter().find(|s| {
            s.busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })
    };
    // Every workspace taken: the walks holding them take microseconds, so
    // try again a little while; never long (the holder may be this very
    // thread, interrupted in a walk of its own).
    let space = claim().or_else(|| {
        (0..SPINS).find_map(|_| {
            for _ in 0..32 {
                std::hint::spin_loop();
            }
            claim()
        })
    })?;
    // SAFETY: we claimed this workspace: nobody else touches its cache until
    // we store `false` below.
    let cache = unsafe { &mut *space.cache.get() };
    let mut result = None;
    let mut call = Some(|| result = Some(walk(cache)));
    if space.stack_top == 0 {
        if let Some(call) = call.take() {
            call();
        }
    } else {
        let run = trampoline_for(&call);
        // SAFETY: `stack_top` is the aligned top of a stack mapped for this
        // workspace alone, which we hold; `run` is `run_call::<F>` for the
        // type of `call`, given a pointer to it, alive for the call.
        unsafe { on_stack(space.stack_top, run, (&raw mut call).cast::<c_void>()) };
    }
    space.busy.store(false, Ordering::Release);
    result
}

/// [`run_call`] for the closure type of `_call`.
fn trampoline_for<F: FnOnce()>(_call: &Option<F>) -> extern "C" fn(*mut c_void) {
    run_call::<F>
}

/// Called on the workspace's stack: take the closure out and run it. An
/// `extern "C"` function: a panic in it aborts instead of unwinding across
/// the stack switch.
extern "C" fn run_call<F: FnOnce()>(call: *mut c_void) {
    // SAFETY: `with_workspace` passes a pointer to its live `Option<F>`.
    if let Some(call) = unsafe { &mut *call.cast::<Option<F>>() }.take() {
        call();
    }
}

/// Call `f(data)` with the stack pointer at `top`, then come back.
///
/// # Safety
///
/// `top` is the 16-byte aligned top of a mapped, writable stack nobody else
/// uses during the call, large enough for `f`.
#[cfg(target_arch = "x86_64")]
unsafe fn on_stack(top: usize, f: extern "C" fn(*mut c_void), data: *mut c_void) {
    // SAFETY: the caller guarantees the stack; the old stack pointer is kept
    // on the new stack and restored from there, so the registers `f` may
    // clobber (all caller-saved ones, declared) do not matter, and the stack
    // is 16-byte aligned at the call, as the ABI requires.
    unsafe {
        std::arch::asm!(
            "mov rax, rsp",
            "mov rsp, rsi",
            "push rax",
            "sub rsp, 8",
            "call rdx",
            "add rsp, 8",
            "pop rsp",
            in("rsi") top,
            in("rdx") f,
            in("rdi") data,
            out("rax") _,
            clobber_abi("C"),
        );
    }
}

/// Elsewhere the walk runs on the stack it finds.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn on_stack(_: usize, f: extern "C" fn(*mut c_void), data: *mut c_void) {
    f(data);
}

/// Map a workspace's stack with a guard page below it; its aligned top, or
/// 0 when the kernel refuses (the walk then runs where it is).
fn map_stack() -> usize {
    if !cfg!(target_arch = "x86_64") {
        return 0;
    }
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let len = STACK_BYTES + page;
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choice touches no existing memory.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return 0;
    }
    // SAFETY: the first page of the mapping just made, ours alone.
    unsafe { libc::mprotect(base, page, libc::PROT_NONE) };
    (base as usize + len) & !15
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_runs_on_its_workspace_stack_and_every_workspace_comes_back() {
        prepare();
        let outer = 0u8;
        let outer_at = std::ptr::from_ref(&outer) as usize;
        let inner_at = with_workspace(|_| {
            let inner = 0u8;
            std::ptr::from_ref(&inner) as usize
        })
        .expect("a free workspace");
        assert!(
            outer_at.abs_diff(inner_at) > STACK_BYTES / 2,
            "ran on another stack: {outer_at:#x} vs {inner_at:#x}"
        );
        // Nested claims take other workspaces until none is left.
        fn nest() -> usize {
            with_workspace(|_| 1 + nest()).unwrap_or(0)
        }
        let pool = POOL.load(Ordering::Acquire);
        // SAFETY: made by prepare, never freed.
        let size = unsafe { &*pool }.spaces.len();
        assert_eq!(nest(), size, "each nested walk took one more workspace");
        assert_eq!(nest(), size, "and gave it back");
    }
}
