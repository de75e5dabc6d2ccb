//! The one unwinding routine, used by every handler (the CPU sampler's,
//! the thread dump's, the poll watchdog's) and by [`stack_here`] outside
//! them, and the rules it follows.
//!
//! A walk starts from the interrupted registers (the pc, stack pointer and
//! frame pointer the kernel saved) and steps from frame to frame with
//! [framehop](https://docs.rs/framehop), which reads the unwind tables
//! (`.eh_frame_hdr`, `.eh_frame`) of the objects registered in
//! [`super::code`] and allocates nothing. libgcc's unwinder never runs in a
//! handler: nothing here takes a lock or depends on the C library's table
//! lookup, so static builds and any glibc get whole stacks.
//!
//! # What a walk trusts
//!
//! Nothing it reads. Every read of the stack goes through one check: the
//! word lies between the interrupted stack pointer and the top of that
//! thread's stack ([`super::stacks`]), so a wrong unwind table or a
//! corrupt stack ends the walk instead of faulting. Every return address
//! must lie in the executable segments of a known object, and every frame
//! must move up the stack. A walk that stops before the thread's first
//! frame records the frames it has and says why ([`Outcome`]), and the
//! sample's last frame names the reason.
//!
//! The walk runs on a workspace of its own ([`super::workspace`]): its own
//! cache and its own stack, so a thread near its stack limit has room for
//! it, and two walks at once never share state. Walks are bounded by the
//! output's length ([`MAX_FRAMES`]).
//!
//! Only x86_64 is unwound; elsewhere a handler records the pc alone and
//! says so.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

use framehop::{Error as WalkError, FrameAddress, Unwinder as _};

use super::{code, stacks, workspace};

/// Deepest stack recorded; deeper stacks keep their innermost frames.
pub(crate) const MAX_FRAMES: usize = 128;

/// How far a walk got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Outcome {
    /// The whole stack, up to the thread's first frame.
    Whole = 0,
    /// The innermost [`MAX_FRAMES`] frames of a deeper stack.
    Truncated = 1,
    /// Not walked: every unwinder workspace was in use.
    Busy = 2,
    /// Not walked: the stack pointer lay in no mapping known yet (a stack
    /// made since the last look).
    UnknownStack = 3,
    /// Stopped at a return address outside the code of every known
    /// object: JIT code, a stub without unwind tables, or a misread frame.
    UnknownCode = 4,
    /// Stopped where the unwind tables pointed outside the thread's stack:
    /// wrong tables for the code it ran, or a corrupt stack.
    OutsideStack = 5,
    /// Stopped at a frame that did not move up the stack.
    NoProgress = 6,
    /// Not walked: no unwinder for this architecture, the pc alone.
    Unsupported = 7,
}

impl Outcome {
    /// The outcome a stored byte stands for.
    pub(crate) fn from_u8(byte: u8) -> Self {
        match byte {
            0 => Self::Whole,
            1 => Self::Truncated,
            2 => Self::Busy,
            3 => Self::UnknownStack,
            4 => Self::UnknownCode,
            5 => Self::OutsideStack,
            6 => Self::NoProgress,
            _ => Self::Unsupported,
        }
    }

    /// Why the stack is short, in words; `None` for a whole stack.
    pub(crate) fn reason(self) -> Option<&'static str> {
        match self {
            Self::Whole => None,
            Self::Truncated => Some("stack truncated at 128 frames"),
            Self::Busy => Some("not unwound: every unwinder workspace was in use"),
            Self::UnknownStack => {
                Some("not unwound: the stack pointer was in no mapping known yet")
            }
            Self::UnknownCode => Some(
                "stack ends at a return address outside every known object (JIT code, a stub without unwind tables, or a misread frame)",
            ),
            Self::OutsideStack => Some(
                "stack ends where the unwind tables pointed outside the thread's stack (wrong tables or a corrupt stack)",
            ),
            Self::NoProgress => Some("stack ends at a frame that did not move up the stack"),
            Self::Unsupported => Some("not unwound: no unwinder for this architecture"),
        }
    }
}

/// The registers a walk starts from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Registers {
    pub(super) pc: u64,
    pub(super) sp: u64,
    pub(super) fp: u64,
}

/// Make the workspaces and read the known code and stacks, outside any
/// handler, before the first signal that may walk is sent; afterwards a
/// refresh, cheap when nothing changed. `threads_changed`: threads were
/// started since the last call (their stacks are new).
pub(crate) fn prepare(threads_changed: bool) {
    super::fork::register(None);
    workspace::prepare();
    code::refresh();
    stacks::refresh(threads_changed);
}

/// From inside a signal handler: the interrupted thread's stack into
/// `out`, leaf first: the interrupted pc, then return addresses. Returns
/// how many were written and how far the walk got; the pc alone is always
/// recorded when the context holds one.
///
/// # Safety
///
/// Call only from a signal handler on the interrupted thread, with the
/// `ucontext_t` the kernel passed it (or null).
pub(super) unsafe fn from_signal(context: *mut c_void, out: &[AtomicUsize]) -> (usize, Outcome) {
    let Some(registers) = super::handler::registers(context) else {
        return (0, Outcome::Unsupported);
    };
    let mut put = |i: usize, address: u64| {
        if let Some(slot) = out.get(i) {
            slot.store(address as usize, Ordering::Relaxed);
        }
    };
    put(0, registers.pc);
    if !cfg!(target_arch = "x86_64") {
        return (1, Outcome::Unsupported);
    }
    walk(registers, thread_pointer(), out.len(), &mut put)
}

/// The calling thread's stack as lookup addresses (each address minus
/// one), leaf first, as many as fit in `buf`; returns how many. Not for
/// signal handlers (it may read `/proc` when a stack or a library is new).
/// The first frames are this function and its callers' capture machinery;
/// the encoder trims them.
#[inline(never)]
pub(crate) fn stack_here(buf: &mut [u64]) -> usize {
    if buf.is_empty() {
        return 0;
    }
    let Some(registers) = here() else {
        return 0;
    };
    workspace::prepare();
    let tp = thread_pointer();
    let mut written = 0;
    let capacity = buf.len();
    for attempt in 0..64 {
        let mut put = |i: usize, address: u64| {
            if let Some(slot) = buf.get_mut(i) {
                *slot = address.saturating_sub(1);
            }
        };
        let (len, outcome) = walk(registers, tp, capacity, &mut put);
        written = len;
        match outcome {
            // A stack or a library new since the last look: look again.
            Outcome::UnknownStack if attempt == 0 => stacks::refresh(true),
            Outcome::UnknownCode if attempt == 0 => code::refresh(),
            // Every workspace taken (by handlers, or by other threads'
            // captures): they are quick to come back.
            Outcome::Busy => std::thread::yield_now(),
            _ => break,
        }
        if code::read(|k| k.is_none()) {
            code::refresh();
        }
        if stacks::read(|s| s.is_none()) {
            stacks::refresh(true);
        }
    }
    written
}

/// This thread's registers, as at a call from here.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn here() -> Option<Registers> {
    let (pc, sp, fp): (u64, u64, u64);
    // SAFETY: reads three registers, writes nothing else.
    unsafe {
        std::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {fp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            fp = out(reg) fp,
            options(nomem, nostack, preserves_flags),
        );
    }
    Some(Registers { pc, sp, fp })
}

#[cfg(not(target_arch = "x86_64"))]
fn here() -> Option<Registers> {
    None
}

/// The calling thread's descriptor, which the C library keeps at the top
/// of the stacks it makes. Async-signal-safe (a read of the thread
/// register).
fn thread_pointer() -> u64 {
    // SAFETY: pthread_self has no preconditions and only reads the thread
    // pointer.
    unsafe { libc::pthread_self() as u64 }
}

/// Walk from `registers` on a thread whose descriptor is at `tp`, handing
/// each address to `put(index, address)` (the leaf first, at 0), at most
/// `capacity`. Async-signal-safe.
fn walk(
    registers: Registers,
    tp: u64,
    capacity: usize,
    put: &mut dyn FnMut(usize, u64),
) -> (usize, Outcome) {
    if capacity == 0 {
        return (0, Outcome::Truncated);
    }
    put(0, registers.pc);
    workspace::with_workspace(|cache| {
        code::read(|known| {
            stacks::read(|stack_map| {
                let (Some(known), Some(stack_map)) = (known, stack_map) else {
                    return (1, Outcome::Busy);
                };
                let Some(end) = stack_map.readable_end(registers.sp, tp) else {
                    stacks::mark_stale();
                    return (1, Outcome::UnknownStack);
                };
                walk_within(known, cache, registers, end, capacity, put)
            })
        })
    })
    .unwrap_or((1, Outcome::Busy))
}

/// The walk itself, reading the stack only in `[registers.sp, end)`.
fn walk_within(
    known: &code::KnownCode,
    cache: &mut workspace::Cache,
    registers: Registers,
    end: u64,
    capacity: usize,
    put: &mut dyn FnMut(usize, u64),
) -> (usize, Outcome) {
    let low = registers.sp;
    let mut read_stack = |address: u64| -> Result<u64, ()> {
        match address.checked_add(8) {
            Some(past) if address >= low && past <= end => {
                // SAFETY: `[address, address + 8)` lies between the
                // interrupted thread's stack pointer and the top of its
                // stack ([`stacks`]), memory the kernel keeps mapped and
                // readable while the thread lives; it is read as plain
                // bytes, whatever they hold.
                Ok(unsafe { (address as *const u64).read_unaligned() })
            }
            _ => Err(()),
        }
    };
    let mut regs = framehop::UnwindRegsNative::new(registers.pc, registers.sp, registers.fp);
    let mut frame = FrameAddress::from_instruction_pointer(registers.pc);
    let mut written = 1;
    loop {
        let below = regs.sp();
        let next = known
            .unwinder
            .unwind_frame(frame, &mut regs, cache, &mut read_stack);
        let return_address = match next {
            Ok(Some(address)) => address,
            Ok(None) | Err(WalkError::ReturnAddressIsNull) => return (written, Outcome::Whole),
            Err(WalkError::CouldNotReadStack(_) | WalkError::IntegerOverflow) => {
                return (written, Outcome::OutsideStack);
            }
            Err(WalkError::FramepointerUnwindingMovedBackwards | WalkError::DidNotAdvance) => {
                return (written, Outcome::NoProgress);
            }
        };
        let Some(caller) = FrameAddress::from_return_address(return_address) else {
            return (written, Outcome::Whole);
        };
        if regs.sp() <= below {
            return (written, Outcome::NoProgress);
        }
        // The call instruction is just before the return address.
        if !known.holds(return_address.wrapping_sub(1)) {
            return (written, Outcome::UnknownCode);
        }
        if written == capacity {
            return (written, Outcome::Truncated);
        }
        put(written, return_address);
        written += 1;
        frame = caller;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn deeper(depth: usize, buf: &mut [u64]) -> usize {
        if depth == 0 {
            stack_here(buf)
        } else {
            std::hint::black_box(deeper(depth - 1, buf))
        }
    }

    fn names(pcs: &[u64]) -> Vec<String> {
        let resolved = crate::symbols::symbolizer().resolve_all(pcs.iter().copied());
        pcs.iter()
            .filter_map(|pc| resolved.get(pc))
            .flat_map(|frames| frames.iter().map(|f| f.name.to_string()))
            .collect()
    }

    #[test]
    fn a_stack_here_holds_its_callers_up_to_the_threads_first_frame() {
        let mut buf = [0u64; MAX_FRAMES];
        let len = std::thread::spawn(move || {
            let len = deeper(20, &mut buf);
            (len, buf)
        })
        .join()
        .expect("thread");
        let (len, buf) = len;
        let names = names(&buf[..len]);
        let deep = names
            .iter()
            .filter(|n| n.ends_with("tests::deeper"))
            .count();
        assert_eq!(deep, 21, "{names:?}");
        assert!(
            names
                .iter()
                .any(|n| n.contains("thread") && n.contains("start")),
            "reaches the thread's start: {names:?}"
        );
    }

    #[test]
    fn a_full_buffer_keeps_the_innermost_frames() {
        let mut buf = [0u64; 8];
        assert_eq!(deeper(30, &mut buf), 8);
        assert!(names(&buf).iter().any(|n| n.ends_with("tests::deeper")));
    }

    #[test]
    fn outcomes_round_trip_through_a_byte() {
        for o in [
            Outcome::Whole,
            Outcome::Truncated,
            Outcome::Busy,
            Outcome::UnknownStack,
            Outcome::UnknownCode,
            Outcome::OutsideStack,
            Outcome::NoProgress,
            Outcome::Unsupported,
        ] {
            assert_eq!(Outcome::from_u8(o as u8), o);
            assert_eq!(o.reason().is_none(), o == Outcome::Whole);
        }
    }
}
