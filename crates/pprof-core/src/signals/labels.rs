//! The labels in force on each thread, where a signal handler can read
//! them: one pointer in a thread-local, set and restored around each
//! labeled poll or call by the thread itself.
//!
//! The pointer is borrowed: the scope that set it keeps its [`LabelSet`]
//! alive (in an `Arc`) until it has put the previous pointer back, so at
//! every instant the thread-local points at a live set. A handler on that
//! thread takes its own reference with one atomic increment
//! ([`retain_current`]) and stores the raw pointer with its sample; the
//! reader side turns it back into an `Arc` ([`adopt`]) once the sample is
//! aggregated, so a set outlives the request that made it for as long as a
//! sample points at it, and no longer.
//!
//! The thread-local is `const`-initialised and has no destructor, so
//! reading it is a plain load from the thread's static TLS block: no
//! allocation, no lock (pprof-core must be linked into the executable, as
//! Rust builds it; a library loaded later with `dlopen` would get dynamic
//! TLS, whose first access may allocate).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{Ordering, compiler_fence};

/// An immutable set of labels, sorted by key, each key once.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct LabelSet {
    pub(crate) pairs: Box<[(Arc<str>, Arc<str>)]>,
}

thread_local! {
    static CURRENT: Cell<*const LabelSet> = const { Cell::new(std::ptr::null()) };
}

/// Restores the thread's previous labels when dropped.
#[must_use = "the labels are in force until this is dropped"]
pub(crate) struct InForce<'a> {
    previous: *const LabelSet,
    /// Ties the guard to the set it put in force, which must outlive it.
    _set: std::marker::PhantomData<&'a LabelSet>,
}

/// Make `set` this thread's labels until the returned guard is dropped.
/// The borrow keeps the set alive for as long as the thread-local points
/// at it; guards are dropped in the reverse order of their making, as
/// scopes nest.
pub(crate) fn put_in_force(set: Option<&Arc<LabelSet>>) -> InForce<'_> {
    let ptr = set.map_or(std::ptr::null(), Arc::as_ptr);
    let previous = CURRENT.with(|current| current.replace(ptr));
    // A handler on this thread sees the old or the new pointer, never a
    // half-made state; keep the compiler from moving the store.
    compiler_fence(Ordering::SeqCst);
    InForce {
        previous,
        _set: std::marker::PhantomData,
    }
}

impl Drop for InForce<'_> {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.previous));
        compiler_fence(Ordering::SeqCst);
    }
}

/// Put `set` in force on this thread for as long as the caller keeps it
/// alive and until it calls [`restore`] with the returned value: for
/// enter/exit pairs that are not one scope (a `tracing` span's). The
/// caller must hold `set` until then.
#[cfg(feature = "tracing")]
pub(crate) fn swap_in_force(set: Option<&Arc<LabelSet>>) -> *const LabelSet {
    let ptr = set.map_or(std::ptr::null(), Arc::as_ptr);
    let previous = CURRENT.with(|current| current.replace(ptr));
    compiler_fence(Ordering::SeqCst);
    previous
}

/// Undo a [`swap_in_force`].
#[cfg(feature = "tracing")]
pub(crate) fn restore(previous: *const LabelSet) {
    CURRENT.with(|current| current.set(previous));
    compiler_fence(Ordering::SeqCst);
}

/// The address of the set in force on this thread (null: none), to tell
/// whether it changed; not to be dereferenced.
pub(crate) fn current_ptr() -> *const LabelSet {
    CURRENT.with(Cell::get)
}

/// The labels in force on this thread (a new reference), for ordinary code.
pub(crate) fn current() -> Option<Arc<LabelSet>> {
    let ptr = CURRENT.with(Cell::get);
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-null pointer in the thread-local was set by
    // `put_in_force` from an `Arc` that its guard keeps alive until the
    // pointer is replaced; this thread is the only one that replaces it,
    // and it is here, so the set is alive. Taking a reference is one
    // atomic increment.
    unsafe {
        Arc::increment_strong_count(ptr);
        Some(Arc::from_raw(ptr))
    }
}

/// From a signal handler: a reference to the labels in force on the
/// interrupted thread, as a raw pointer (0: none), for [`adopt`] to take
/// back later. Async-signal-safe: a thread-local load and one atomic
/// increment.
pub(crate) fn retain_current() -> usize {
    let ptr = CURRENT.with(Cell::get);
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: as in `current`: the interrupted thread's scope keeps the set
    // alive while the pointer is in force, and it cannot run until this
    // handler returns.
    unsafe { Arc::increment_strong_count(ptr) };
    ptr as usize
}

/// Take back a reference [`retain_current`] handed out (0: none). Each
/// value must be adopted once at most.
pub(crate) fn adopt(raw: usize) -> Option<Arc<LabelSet>> {
    if raw == 0 {
        return None;
    }
    // SAFETY: `raw` came from `retain_current`, which took one strong
    // reference for it; the caller adopts it once, so this `Arc` owns that
    // reference.
    Some(unsafe { Arc::from_raw(raw as *const LabelSet) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> Arc<LabelSet> {
        Arc::new(LabelSet {
            pairs: pairs
                .iter()
                .map(|(k, v)| (Arc::from(*k), Arc::from(*v)))
                .collect(),
        })
    }

    #[test]
    fn scopes_nest_and_restore_and_references_outlive_them() {
        assert!(current().is_none());
        assert_eq!(retain_current(), 0);
        let outer = set(&[("a", "1")]);
        let raw = {
            let _outer = put_in_force(Some(&outer));
            let inner = set(&[("b", "2")]);
            let raw = {
                let _inner = put_in_force(Some(&inner));
                assert_eq!(current().as_deref(), Some(&*inner));
                retain_current()
            };
            assert_eq!(current().as_deref(), Some(&*outer));
            drop(inner);
            raw
        };
        assert!(current().is_none());
        // The sample's reference kept the inner set alive past its scope.
        let adopted = adopt(raw).expect("a reference");
        assert_eq!(&*adopted.pairs[0].0, "b");
        assert_eq!(Arc::strong_count(&adopted), 1);
        assert_eq!(Arc::strong_count(&outer), 1);
    }
}
