//! Where a thread's stack may be read: the process's writable mappings,
//! from `/proc/self/maps`, read outside any handler and published whole.
//!
//! A walk reads the interrupted thread's stack only between its stack
//! pointer and the top of the writable mapping that holds it; for a thread
//! started by the C library that top is lowered to the thread's own
//! descriptor (`pthread_self()`, which glibc and musl place at the top of
//! the thread's stack block), so a walk never reads past the thread's
//! own stack even where the kernel merged its mapping with a neighbour.
//! Everything between a live thread's stack pointer and that top is mapped
//! while the thread runs, so no read can fault.
//!
//! A stack pointer in no known mapping (a thread started, or a stack made,
//! since the last read) gets no walk: the sample holds its pc and says
//! why, and the table is marked stale, to be read again by the next
//! thread scan, dump or walk outside a handler. The one case this cannot
//! rule out: a thread running on a stack it made itself (a coroutine's,
//! an alternate signal stack) whose mapping the kernel merged with a
//! neighbour that was unmapped after our last read, walked by a handler
//! whose unwind tables point past its own stack; the descriptor bound
//! covers every thread the C library started.

use std::sync::atomic::{AtomicBool, Ordering};

use super::published::Published;

/// The writable mappings at one read of `/proc/self/maps`.
pub(super) struct StackMap {
    /// `[start, end)`, sorted, not overlapping.
    writable: Box<[(u64, u64)]>,
}

impl StackMap {
    /// The end of what a walk from `sp` may read on a thread whose
    /// descriptor is at `thread_pointer` (0: unknown), or `None` when `sp`
    /// is in no known writable mapping. Async-signal-safe.
    pub(super) fn readable_end(&self, sp: u64, thread_pointer: u64) -> Option<u64> {
        let i = self.writable.partition_point(|&(start, _)| start <= sp);
        let (start, end) = *self.writable.get(i.checked_sub(1)?)?;
        if !(start..end).contains(&sp) {
            return None;
        }
        Some(if thread_pointer > sp && thread_pointer < end {
            thread_pointer
        } else {
            end
        })
    }
}

static STACKS: Published<StackMap> = Published::new();
/// Set by a walk that met a stack pointer in no known mapping.
static STALE: AtomicBool = AtomicBool::new(true);

/// Run `read` with the table (`None` before the first read).
/// Async-signal-safe.
pub(super) fn read<R>(read: impl FnOnce(Option<&StackMap>) -> R) -> R {
    STACKS.read(read)
}

/// From a walk: the table missed a stack; read it again at the next chance.
/// Async-signal-safe.
pub(super) fn mark_stale() {
    STALE.store(true, Ordering::Relaxed);
}

/// The writers' lock, held across a fork ([`super::fork`]).
pub(super) type Locked = std::sync::MutexGuard<'static, Vec<Box<StackMap>>>;

/// Take the writers' lock (before a fork).
pub(super) fn lock() -> Locked {
    STACKS.lock()
}

/// In a child just forked: forget the parent's readers.
pub(super) fn forget_readers() {
    STACKS.forget_readers();
}

/// Read the table again if a walk missed a stack since the last read (or
/// `always`). Not for signal handlers.
pub(crate) fn refresh(always: bool) {
    if !always && !STALE.load(Ordering::Relaxed) {
        STACKS.tidy();
        return;
    }
    STALE.store(false, Ordering::Relaxed);
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let mut writable: Vec<(u64, u64)> = maps.lines().filter_map(writable_range).collect();
    writable.sort_unstable();
    STACKS.publish(Box::new(StackMap {
        writable: writable.into_boxed_slice(),
    }));
}

/// `[start, end)` of a `/proc/self/maps` line whose permissions allow
/// reading and writing.
fn writable_range(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    if !perms.starts_with("rw") {
        return None;
    }
    Some((
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threads_stack_reads_up_to_its_descriptor_and_data_elsewhere_to_its_mapping_end() {
        refresh(true);
        let local = 0u64;
        let sp = std::ptr::from_ref(&local) as u64;
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as u64;
        let end = read(|s| s.and_then(|s| s.readable_end(sp, me))).expect("this stack is known");
        assert!(end > sp);
        // The test harness runs tests on threads the C library started: the
        // bound is the descriptor.
        assert_eq!(end, me, "bounded by the thread's descriptor");
        assert_eq!(read(|s| s.and_then(|s| s.readable_end(0x10, 0))), None);
        let code = a_threads_stack_reads_up_to_its_descriptor_and_data_elsewhere_to_its_mapping_end
            as fn() as usize as u64;
        assert_eq!(
            read(|s| s.and_then(|s| s.readable_end(code, 0))),
            None,
            "code is not writable"
        );
    }

    #[test]
    fn maps_lines_give_writable_ranges_only() {
        assert_eq!(
            writable_range("7ffd1000-7ffd3000 rw-p 00000000 00:00 0   [stack]"),
            Some((0x7ffd_1000, 0x7ffd_3000))
        );
        assert_eq!(
            writable_range("55d0-55e0 r-xp 00000000 08:01 123 /bin/x"),
            None
        );
        assert_eq!(writable_range("7000-8000 ---p 00000000 00:00 0"), None);
    }
}
