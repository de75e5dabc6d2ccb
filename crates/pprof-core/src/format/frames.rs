//! Frame rules in one place: which frames are machinery (the allocator,
//! the profiled locks, waiting, starting a thread) rather than the code a
//! user wants to see, and the symbolized stacks the writers print.

use std::sync::Arc;

use super::profile::{LeafTrim, StackProfile};
use crate::symbols::{Frame, demangle, symbolizer};

/// A symbolized sample: its frames, leaf first, after leaf trimming.
pub(crate) struct Symbolized {
    /// `(pc, frames at that pc after trimming)`, leaf first.
    pub(crate) stack: Vec<(u64, Arc<[Frame]>)>,
}

/// Frames that stand for a reason, not for code: the outermost frame of a
/// sample whose stack could not be taken whole, so the sample still counts
/// (as Go's `runtime._LostExternalCode` and `runtime._ExternalCode` do).
/// Each is a reserved address below the first page, which no code occupies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Missing {
    /// The innermost frames of a deeper stack are all there is.
    Truncated = 1,
    /// Only the pc: every unwinder workspace was in use.
    UnwinderBusy,
    /// Only the pc: the stack pointer was in no mapping known yet.
    UnknownStack,
    /// The walk stopped at a return address outside every known object.
    UnknownCode,
    /// The walk stopped where the unwind tables pointed off the stack.
    OutsideStack,
    /// The walk stopped at a frame that did not move up the stack.
    NoProgress,
    /// Only the pc: no unwinder for this architecture.
    Unsupported,
    /// No stack at all: the sampler's buffer was full.
    BufferFull,
    /// No stack at all: the profile already holds too many distinct stacks.
    TooManyStacks,
    /// No stack: the thread's timer had expired, but the kernel had not yet
    /// delivered its tick when the window closed.
    TickInFlight,
    /// No stack: CPU a thread used before the scan that gave it a timer.
    BeforeTimer,
    /// No stack: CPU of a thread the kernel refused a timer.
    NoTimer,
    /// No stack: the rest of the process's CPU (threads that came and went
    /// between two scans, undelivered ticks of threads that ended).
    ThreadsGone,
}

impl Missing {
    const ALL: [Missing; 13] = [
        Missing::Truncated,
        Missing::UnwinderBusy,
        Missing::UnknownStack,
        Missing::UnknownCode,
        Missing::OutsideStack,
        Missing::NoProgress,
        Missing::Unsupported,
        Missing::BufferFull,
        Missing::TooManyStacks,
        Missing::TickInFlight,
        Missing::BeforeTimer,
        Missing::NoTimer,
        Missing::ThreadsGone,
    ];

    /// The reserved address that stands for this reason in a stack.
    pub(crate) const fn pc(self) -> u64 {
        self as u64
    }

    /// The function name profiles show for it.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Truncated => "pprof_core::_TruncatedStack",
            Self::UnwinderBusy => "pprof_core::_NotUnwound_UnwinderBusy",
            Self::UnknownStack => "pprof_core::_NotUnwound_StackNotYetKnown",
            Self::UnknownCode => "pprof_core::_StackEnds_UnknownCode",
            Self::OutsideStack => "pprof_core::_StackEnds_OutsideTheStack",
            Self::NoProgress => "pprof_core::_StackEnds_NoProgress",
            Self::Unsupported => "pprof_core::_NotUnwound_UnsupportedArch",
            Self::BufferFull => "pprof_core::_LostStack_BufferFull",
            Self::TooManyStacks => "pprof_core::_LostStack_TooManyStacks",
            Self::TickInFlight => "pprof_core::_LostStack_TickNotYetDelivered",
            Self::BeforeTimer => "pprof_core::_LostStack_BeforeThreadTimer",
            Self::NoTimer => "pprof_core::_LostStack_ThreadWithoutTimer",
            Self::ThreadsGone => "pprof_core::_LostStack_ThreadsGone",
        }
    }

    /// The reason a reserved address stands for, if it is one.
    pub(crate) fn at(pc: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.pc() == pc)
    }

    fn frames(self) -> Arc<[Frame]> {
        Arc::from([Frame {
            name: self.name().into(),
            system_name: "".into(),
            file: "".into(),
            line: 0,
        }])
    }
}

/// Resolve every sample's stack, dropping the leaf frames the profile's
/// [`LeafTrim`] names; reserved addresses become their [`Missing`] frame.
pub(crate) fn symbolize(profile: &StackProfile) -> Vec<Symbolized> {
    let mut resolved = symbolizer().resolve_all(
        profile
            .samples
            .iter()
            .flat_map(|s| s.pcs.iter().copied())
            .filter(|pc| Missing::at(*pc).is_none()),
    );
    for missing in Missing::ALL {
        resolved.insert(missing.pc(), missing.frames());
    }
    profile
        .samples
        .iter()
        .map(|sample| {
            let mut stack: Vec<(u64, Arc<[Frame]>)> = sample
                .pcs
                .iter()
                .map(|pc| {
                    (
                        *pc,
                        resolved.get(pc).cloned().unwrap_or_else(|| Arc::from([])),
                    )
                })
                .collect();
            trim_leaf(&mut stack, profile.leaf_trim);
            Symbolized { stack }
        })
        .collect()
}

fn trim_leaf(stack: &mut Vec<(u64, Arc<[Frame]>)>, trim: LeafTrim) {
    let is_machinery: fn(&Frame) -> bool = match trim {
        LeafTrim::None => return,
        LeafTrim::Allocator => is_allocator_frame,
        LeafTrim::Contention => is_contention_frame,
        LeafTrim::Wait => is_wait_frame,
    };
    // Never trim everything: keep at least the outermost frame.
    let mut drop_pcs = 0;
    while drop_pcs + 1 < stack.len() {
        let (pc, frames) = &stack[drop_pcs];
        let keep_from = frames
            .iter()
            .position(|f| !is_machinery(f))
            .unwrap_or(frames.len());
        if keep_from == frames.len() {
            drop_pcs += 1;
            continue;
        }
        if keep_from > 0 {
            let kept: Arc<[Frame]> = Arc::from(&frames[keep_from..]);
            stack[drop_pcs] = (*pc, kept);
        }
        break;
    }
    stack.drain(..drop_pcs);
}

/// True when `name` starts with any of `prefixes`.
fn starts_with_any(name: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| name.starts_with(p))
}

/// Frames between an allocating call and jemalloc's sampler: jemalloc itself,
/// the Rust global-allocator shims and `alloc::`'s growth helpers (also when
/// they implement a trait for a user type, `<u8 as alloc::…>::from_elem`).
/// Go's heap profile likewise starts at the user frame, not at `runtime.mallocgc`.
fn is_allocator_frame(frame: &Frame) -> bool {
    if is_allocator_name(&frame.name) || is_allocator_file(&frame.file) {
        return true;
    }
    let full = demangle(&frame.system_name);
    [
        "as alloc::",
        "as core::alloc::",
        "as std::alloc::",
        "as tikv_jemallocator::",
    ]
    .iter()
    .any(|t| full.contains(t))
}

/// Source files of the allocation machinery: std's `alloc` crate and allocator
/// modules, and jemalloc (C and Rust). Inlined frames often carry only a
/// short name (`finish_grow`), but always their file.
fn is_allocator_file(file: &str) -> bool {
    const PARTS: &[&str] = &[
        "/library/alloc/src/",
        "/library/core/src/alloc/",
        "/library/std/src/alloc.rs",
        "/library/std/src/sys/alloc/",
        "tikv-jemalloc",
        "/jemalloc/",
    ];
    PARTS.iter().any(|p| file.contains(p))
}

fn is_allocator_name(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "je_",
        "_rjem_",
        "prof_",
        "imalloc",
        "ialloc",
        "malloc",
        "calloc",
        "realloc",
        "posix_memalign",
        "aligned_alloc",
        "__rust_",
        "__rustc::",
        "__rg_",
        "__rdl_",
        "tikv_jemallocator::",
        "pprof_core::jemalloc::",
        "alloc::",
        "core::alloc::",
        "std::alloc::",
        "hashbrown::raw::",
    ];
    name.is_empty() || starts_with_any(name, PREFIXES)
}

/// Frames between a profiled lock's caller and the stack capture: our lock
/// and contention code, the unwinder, and the drop glue that runs a guard's
/// `Drop`; for a worker caught in a long poll, the waiting machinery (libc,
/// std's sleep and lock internals) above the frame that blocks.
fn is_contention_frame(frame: &Frame) -> bool {
    is_wait_frame(frame) || is_lock_frame(frame)
}

fn is_lock_frame(frame: &Frame) -> bool {
    const PREFIXES: &[&str] = &[
        "pprof_core::sync::",
        "pprof_core::signals::",
        "backtrace::",
        "_Unwind_",
        "core::ptr::drop_in_place",
        "core::mem::drop",
    ];
    let name = &*frame.name;
    name.is_empty() || (starts_with_any(name, PREFIXES) && !name.contains("::tests::"))
}

/// Frames of starting a thread: the kernel's clone, libc's start routine,
/// std's spawn plumbing, and the closure-call shims.
pub(crate) fn is_thread_start(frame: &Frame) -> bool {
    const PREFIXES: &[&str] = &[
        "std::sys::",
        "std::thread::",
        "std::panicking::",
        "std::panic::",
        "std::rt::",
        "core::ops::function::",
        "core::panic::",
        "alloc::boxed::",
        "__rust_try",
    ];
    is_libc_frame(frame) || starts_with_any(&frame.name, PREFIXES)
}

/// A frame of the C library or the loader: a C name (no Rust path) that has
/// no source file, glibc's relative source paths, or a reserved `__` name.
fn is_libc_frame(frame: &Frame) -> bool {
    let (name, file): (&str, &str) = (&frame.name, &frame.file);
    !name.contains("::")
        && (file.is_empty()
            || file.starts_with("./")
            || file.contains("/sysdeps/")
            || name.starts_with("__"))
}

/// Leaf frames of waiting that say how, not where: libc's blocking calls,
/// std's and parking_lot's sleep, lock and channel internals, and this
/// crate's own stack capture on the dumping thread.
fn is_wait_frame(frame: &Frame) -> bool {
    const PREFIXES: &[&str] = &[
        "std::sys::",
        "std::thread::",
        "std::sync::",
        "std::time::",
        "std::io::",
        "core::",
        "alloc::",
        "parking_lot",
        "tokio::loom::",
        "backtrace::",
        "pprof_core::signals::",
        "crossbeam_channel::",
        "crossbeam_utils::",
    ];
    let name: &str = &frame.name;
    name.is_empty() || is_libc_frame(frame) || starts_with_any(name, PREFIXES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str) -> Frame {
        Frame {
            name: name.into(),
            system_name: name.into(),
            file: "".into(),
            line: 0,
        }
    }

    #[test]
    fn allocator_frames_are_trimmed_from_the_leaf_only() {
        let mut stack: Vec<(u64, Arc<[Frame]>)> = vec![
            (1, Arc::from([frame("je_prof_backtrace")])),
            (2, Arc::from([frame("__rust_alloc")])),
            (
                3,
                Arc::from([
                    frame("alloc::raw_vec::RawVec<T>::allocate_in"),
                    frame("practice::Dog::run"),
                ]),
            ),
            (4, Arc::from([frame("alloc::vec::Vec<T>::push")])),
            (5, Arc::from([frame("main")])),
        ];
        trim_leaf(&mut stack, LeafTrim::Allocator);
        let names: Vec<Vec<&str>> = stack
            .iter()
            .map(|(_, f)| f.iter().map(|f| &*f.name).collect())
            .collect();
        assert_eq!(
            names,
            vec![
                vec!["practice::Dog::run"],
                vec!["alloc::vec::Vec<T>::push"],
                vec!["main"]
            ]
        );
    }
}
