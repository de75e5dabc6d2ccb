//! The labels in force on each thread, where a signal handler can read
//! them: a per-thread stack of the sets its scopes and spans put in force,
//! each entry owning its set (one strong reference), and one published
//! pointer, the top entry's set, that a handler reads.
//!
//! # What a handler reads
//!
//! [`retain_current`] loads the published pointer (a `const`-initialised
//! thread-local `AtomicPtr` with no destructor: a plain load from the
//! thread's static TLS block, no allocation, no lock, no destructor
//! registration) and takes its own reference with one atomic increment;
//! the sample stores it as a `usize`, and the reader side turns it back
//! into an `Arc` ([`adopt`]) once the sample is aggregated. So a set
//! outlives the request that made it for as long as a sample points at it,
//! and no longer. (pprof-core must be linked into the executable, as Rust
//! builds it; a library loaded later with `dlopen` would get dynamic TLS,
//! whose first access may allocate.)
//!
//! # Why the published set is always alive
//!
//! The published pointer is null or the set of the stack's top entry, which
//! owns a reference to it; only the thread itself changes either, and a
//! handler runs on that thread while it is stopped. The order makes every
//! instant safe for a handler, even one that lands mid-push or mid-pop:
//! a push stores its owned reference in the stack, then publishes; a pop
//! publishes the entry below, then releases its reference. A compiler
//! fence sits between each step and the publication (a handler is on the
//! same thread, so the compiler is the only reorderer). Entries that are not
//! on top are never published, so removing one never touches what a
//! handler can see.
//!
//! # Out of order
//!
//! Every entry knows its owner (a scope's guard, or a `tracing` span), and
//! an exit removes only its own entry: exits may come in any order. If the
//! exiting entry is on top, the entry below it is in force again; if it is
//! not, what is in force does not change (a span entered inside a scope
//! and exited after it, as `tracing`'s registry treats spans exited out of
//! order). A set put in force carries the labels that were in force when
//! it was made, so the top entry's set is always a whole answer. An exit
//! whose entry is not on this thread's stack (a span entered on another
//! thread, or before the stack could be made) does nothing.
//!
//! # Bounds and the end of a thread
//!
//! A stack holds at most [`MAX_DEPTH`] entries; a push onto a full stack
//! lets the outermost entry go (never the top, so never the published
//! set), counted in [`evicted`]: an `Entered` guard of a span that is
//! never exited on this thread (leaked, or held across an `.await` and
//! dropped elsewhere) cannot grow a worker's stack without bound. The
//! stack's storage is a thread-local with a destructor: at thread exit it
//! publishes null before it releases its sets. Scopes and spans entered
//! after that (from other thread-local destructors) put nothing in force:
//! their code runs unlabeled rather than with a set no one owns.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering, compiler_fence};

/// An immutable set of labels, sorted by key, each key once.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct LabelSet {
    pub(crate) pairs: Box<[(Arc<str>, Arc<str>)]>,
}

/// Entries one thread's stack holds at most.
pub(crate) const MAX_DEPTH: usize = 64;

/// Who put an entry in force, so that its exit removes that entry only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// A scope's [`InForce`] guard (a number unique on its thread).
    Scope(u64),
    /// A `tracing` span: its subscriber's number (see [`span_source`]) and id.
    #[cfg(feature = "tracing")]
    Span(u64, u64),
}

struct Entry {
    owner: Owner,
    set: Option<Arc<LabelSet>>,
}

/// One thread's entries, outermost first.
struct Stack {
    entries: RefCell<Vec<Entry>>,
    next_scope: Cell<u64>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        // The thread is ending: nothing is in force before the sets go.
        publish(std::ptr::null());
    }
}

thread_local! {
    /// What a handler reads: the top entry's set (null: none).
    static CURRENT: AtomicPtr<LabelSet> = const { AtomicPtr::new(std::ptr::null_mut()) };
    /// The entries that own what is published; never touched by a handler.
    static STACK: Stack = const {
        Stack {
            entries: RefCell::new(Vec::new()),
            next_scope: Cell::new(0),
        }
    };
}

static EVICTED: AtomicU64 = AtomicU64::new(0);

/// Entries let go because a thread's stack was full ([`MAX_DEPTH`]).
pub(crate) fn evicted() -> u64 {
    EVICTED.load(Ordering::Relaxed)
}

/// Make `ptr` the set a handler on this thread sees. Whatever made it
/// owned is done before, whatever releases the set it replaces comes after.
fn publish(ptr: *const LabelSet) {
    compiler_fence(Ordering::SeqCst);
    CURRENT.with(|current| current.store(ptr.cast_mut(), Ordering::Relaxed));
    compiler_fence(Ordering::SeqCst);
}

fn set_ptr(set: Option<&Arc<LabelSet>>) -> *const LabelSet {
    set.map_or(std::ptr::null(), Arc::as_ptr)
}

impl Stack {
    /// Push an owned reference to `set` and publish it; false (nothing in
    /// force) if the stack is busy, which only a bug could make it. What it
    /// let go is dropped by the caller, after the borrow.
    fn push(&self, owner: Owner, set: Option<&Arc<LabelSet>>) -> (bool, Option<Entry>) {
        let Ok(mut entries) = self.entries.try_borrow_mut() else {
            return (false, None);
        };
        let owned = set.cloned();
        let ptr = set_ptr(owned.as_ref());
        // Never the top (MAX_DEPTH > 1), so never the published set.
        let evicted = (entries.len() >= MAX_DEPTH).then(|| entries.remove(0));
        entries.push(Entry { owner, set: owned });
        publish(ptr);
        if evicted.is_some() {
            EVICTED.fetch_add(1, Ordering::Relaxed);
        }
        (true, evicted)
    }

    /// Remove `owner`'s latest entry, publishing the one below first if it
    /// was on top. The removed entry is dropped by the caller, after the borrow.
    fn remove(&self, owner: Owner) -> Option<Entry> {
        let mut entries = self.entries.try_borrow_mut().ok()?;
        let at = entries.iter().rposition(|e| e.owner == owner)?;
        if at + 1 == entries.len() {
            let below = at.checked_sub(1).map(|i| &entries[i]);
            publish(set_ptr(below.and_then(|e| e.set.as_ref())));
        }
        Some(entries.remove(at))
    }
}

/// Keeps a scope's labels in force until dropped (on the thread that made it).
#[must_use = "the labels are in force until this is dropped"]
pub(crate) struct InForce {
    /// Its entry's owner number; `None` when nothing was put in force.
    scope: Option<u64>,
    _not_send: PhantomData<*const ()>,
}

/// Make `set` (`None`: no labels) this thread's labels until the returned
/// guard is dropped. The thread's stack keeps its own reference.
pub(crate) fn put_in_force(set: Option<&Arc<LabelSet>>) -> InForce {
    let pushed = STACK.try_with(|stack| {
        let scope = stack.next_scope.get();
        stack.next_scope.set(scope.wrapping_add(1));
        let (pushed, evicted) = stack.push(Owner::Scope(scope), set);
        drop(evicted);
        pushed.then_some(scope)
    });
    InForce {
        scope: pushed.ok().flatten(),
        _not_send: PhantomData,
    }
}

impl Drop for InForce {
    fn drop(&mut self) {
        if let Some(scope) = self.scope {
            let removed = STACK.try_with(|stack| stack.remove(Owner::Scope(scope)));
            drop(removed);
        }
    }
}

/// A number for a `tracing` subscriber's span ids, unique in the process,
/// so spans of different subscribers with the same id are told apart.
#[cfg(feature = "tracing")]
pub(crate) fn span_source() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Put `set` in force for span `id` of `source` until [`exit_span`] with
/// the same two; false if nothing could be put in force (the thread's
/// stack is gone: a span entered from a thread-local destructor).
#[cfg(feature = "tracing")]
pub(crate) fn enter_span(source: u64, id: u64, set: Option<&Arc<LabelSet>>) -> bool {
    STACK
        .try_with(|stack| {
            let (pushed, evicted) = stack.push(Owner::Span(source, id), set);
            drop(evicted);
            pushed
        })
        .unwrap_or(false)
}

/// Undo the latest [`enter_span`] of span `id` of `source` on this thread
/// (nothing if there is none).
#[cfg(feature = "tracing")]
pub(crate) fn exit_span(source: u64, id: u64) {
    let removed = STACK.try_with(|stack| stack.remove(Owner::Span(source, id)));
    drop(removed);
}

/// The address of the set in force on this thread (null: none), to tell
/// whether it changed; not to be dereferenced.
pub(crate) fn current_ptr() -> *const LabelSet {
    CURRENT.with(|current| current.load(Ordering::Relaxed))
}

/// The labels in force on this thread (a new reference), for ordinary code.
pub(crate) fn current() -> Option<Arc<LabelSet>> {
    let ptr = current_ptr();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-null published pointer is the set of this thread's top
    // entry, which owns a reference to it until the pointer is replaced
    // (module docs); only this thread replaces it, and it is here, so the
    // set is alive. Taking a reference is one atomic increment.
    unsafe {
        Arc::increment_strong_count(ptr);
        Some(Arc::from_raw(ptr))
    }
}

/// From a signal handler: a reference to the labels in force on the
/// interrupted thread, as a raw pointer (0: none), for [`adopt`] to take
/// back later. Async-signal-safe: a thread-local load and one atomic
/// increment; no allocation, no lock, no destructor registration.
pub(crate) fn retain_current() -> usize {
    let ptr = CURRENT.with(|current| current.load(Ordering::Relaxed));
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: as in `current`: the published set is owned by the
    // interrupted thread's top entry, which is released only after another
    // pointer is published (fenced), and the thread cannot run until this
    // handler returns; a handler that lands mid-push or mid-pop sees the
    // old or the new pointer, each owned at that instant.
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

    #[test]
    fn guards_dropped_out_of_order_never_leave_a_freed_set_in_force() {
        let first = set(&[("a", "1")]);
        let second = set(&[("b", "2")]);
        let first_guard = put_in_force(Some(&first));
        let second_guard = put_in_force(Some(&second));
        drop(first_guard);
        drop(first);
        drop(second_guard);
        assert!(current_ptr().is_null(), "the slot points at a freed set");
        // And what is in force in between: the guard that is not on top
        // goes, the one on top stays.
        let first = set(&[("a", "1")]);
        let first_guard = put_in_force(Some(&first));
        let second_guard = put_in_force(Some(&second));
        drop(first_guard);
        assert_eq!(current().as_deref(), Some(&*second));
        drop(second_guard);
        assert!(current().is_none());
    }
}
