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
//! publishes the entry below, then releases its reference (or, for a set
//! a labeled poll lent the stack, hands it back to the future). A compiler
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
//! thread, or once this thread was ending) does nothing.
//!
//! # Bounds and the end of a thread
//!
//! A stack holds at most [`MAX_DEPTH`] entries, in a fixed array of plain
//! cells (a thread-local with no destructor: a push or a pop touches no
//! lazy state, takes no borrow flag and never allocates); a push onto a
//! full stack lets the outermost entry go (never the top, so never the
//! published set), counted in [`evicted`]: an `Entered` guard of a span
//! that is never exited on this thread (leaked, or held across an `.await`
//! and dropped elsewhere) cannot grow a worker's stack without bound. The
//! first push registers a small exit hook (a thread-local with a
//! destructor): at thread exit it publishes null, then releases what is
//! left. Scopes and spans entered after that (from other thread-local
//! destructors) put nothing in force: their code runs unlabeled rather
//! than with a set no one owns.

use std::cell::Cell;
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

/// Who put an entry in force, so that its exit removes that entry only:
/// source 0 and a scope's number (unique on its thread), or a `tracing`
/// subscriber's number ([`span_source`], from 1) and a span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    source: u64,
    id: u64,
}

const NO_OWNER: Owner = Owner { source: 0, id: 0 };

/// One thread's entries, outermost first: who put each in force and the
/// reference to its set it owns (from `Arc::into_raw`; null: no labels).
struct Stack {
    owners: [Cell<Owner>; MAX_DEPTH],
    sets: [Cell<*const LabelSet>; MAX_DEPTH],
    depth: Cell<usize>,
    next_scope: Cell<u64>,
    /// [`FRESH`], [`HOOKED`] (the exit hook is registered) or [`CLOSED`]
    /// (it ran: the thread is ending; nothing more goes in force).
    state: Cell<u8>,
}

const FRESH: u8 = 0;
const HOOKED: u8 = 1;
const CLOSED: u8 = 2;

/// Releases what is left on the thread's stack when the thread ends.
struct ExitHook;

impl Drop for ExitHook {
    fn drop(&mut self) {
        let _ = STACK.try_with(Stack::close);
    }
}

thread_local! {
    /// What a handler reads: the top entry's set (null: none).
    static CURRENT: AtomicPtr<LabelSet> = const { AtomicPtr::new(std::ptr::null_mut()) };
    /// The entries that own what is published; never touched by a handler.
    static STACK: Stack = const {
        Stack {
            owners: [const { Cell::new(NO_OWNER) }; MAX_DEPTH],
            sets: [const { Cell::new(std::ptr::null()) }; MAX_DEPTH],
            depth: Cell::new(0),
            next_scope: Cell::new(0),
            state: Cell::new(FRESH),
        }
    };
    static EXIT: ExitHook = const { ExitHook };
}

static EVICTED: AtomicU64 = AtomicU64::new(0);

/// Entries let go because a thread's stack was full ([`MAX_DEPTH`]).
pub(crate) fn evicted() -> u64 {
    EVICTED.load(Ordering::Relaxed)
}

/// Make `ptr` the set a handler on this thread sees. Whatever made it
/// owned is done before, whatever releases the set it replaces comes after.
#[inline]
fn publish(ptr: *const LabelSet) {
    compiler_fence(Ordering::SeqCst);
    CURRENT.with(|current| current.store(ptr.cast_mut(), Ordering::Relaxed));
    compiler_fence(Ordering::SeqCst);
}

/// Take back a reference an entry owned (null: none).
fn take_back(ptr: *const LabelSet) -> Option<Arc<LabelSet>> {
    // SAFETY: every non-null pointer in a stack's `sets` came from
    // `Arc::into_raw` in `push` and stands for the one reference its entry
    // owns; callers take it back only as they remove the entry (or clear
    // it), so each reference is taken back once.
    (!ptr.is_null()).then(|| unsafe { Arc::from_raw(ptr) })
}

impl Stack {
    /// A number for a new scope's entry, unique on this thread.
    fn next_scope(&self) -> Owner {
        let id = self.next_scope.get();
        self.next_scope.set(id.wrapping_add(1));
        Owner { source: 0, id }
    }

    /// Push `set` for `owner` (the stack owns that reference now) and
    /// publish it. Once the thread is ending nothing is put in force, and
    /// `set` comes back.
    #[inline]
    fn push(&self, owner: Owner, set: Option<Arc<LabelSet>>) -> Result<(), Option<Arc<LabelSet>>> {
        if self.state.get() != HOOKED && !self.hook() {
            return Err(set);
        }
        let mut depth = self.depth.get();
        if depth == MAX_DEPTH {
            self.evict_outermost();
            depth -= 1;
        }
        let ptr = set.map_or(std::ptr::null(), Arc::into_raw);
        self.owners[depth].set(owner);
        self.sets[depth].set(ptr);
        self.depth.set(depth + 1);
        publish(ptr);
        Ok(())
    }

    /// Register the exit hook on a thread's first push; false once the
    /// thread is ending (the hook ran, or cannot be registered any more).
    #[cold]
    fn hook(&self) -> bool {
        if self.state.get() == FRESH {
            // Registers the hook's destructor; fails only if the thread's
            // thread-locals are being torn down already.
            let hooked = EXIT.try_with(|_| ()).is_ok();
            self.state.set(if hooked { HOOKED } else { CLOSED });
        }
        self.state.get() == HOOKED
    }

    /// Let the outermost entry go to make room: never the top (MAX_DEPTH >
    /// 1), so never the published set; the entries above move down, the
    /// published pointer stays.
    #[cold]
    fn evict_outermost(&self) {
        let outermost = self.sets[0].get();
        let depth = self.depth.get();
        for i in 1..depth {
            self.owners[i - 1].set(self.owners[i].get());
            self.sets[i - 1].set(self.sets[i].get());
        }
        self.depth.set(depth - 1);
        EVICTED.fetch_add(1, Ordering::Relaxed);
        drop(take_back(outermost));
    }

    /// Remove `owner`'s latest entry, publishing the one below first if it
    /// was on top; its set comes back (`None` if there is no such entry).
    #[inline]
    fn remove(&self, owner: Owner) -> Option<Option<Arc<LabelSet>>> {
        let depth = self.depth.get();
        let at = (0..depth).rev().find(|&i| self.owners[i].get() == owner)?;
        let ptr = self.sets[at].get();
        if at + 1 == depth {
            let below = at
                .checked_sub(1)
                .map_or(std::ptr::null(), |i| self.sets[i].get());
            publish(below);
        } else {
            // Not on top, so not published: what is in force stays.
            for i in at + 1..depth {
                self.owners[i - 1].set(self.owners[i].get());
                self.sets[i - 1].set(self.sets[i].get());
            }
        }
        self.depth.set(depth - 1);
        Some(take_back(ptr))
    }

    /// The thread is ending: nothing in force, then every set released.
    fn close(&self) {
        self.state.set(CLOSED);
        publish(std::ptr::null());
        let depth = self.depth.replace(0);
        for set in &self.sets[..depth] {
            drop(take_back(set.replace(std::ptr::null())));
        }
    }
}

/// Keeps a scope's labels in force until dropped (on the thread that made it).
#[must_use = "the labels are in force until this is dropped"]
pub(crate) struct InForce {
    /// Its entry's owner; `None` when nothing was put in force.
    owner: Option<Owner>,
    _not_send: PhantomData<*const ()>,
}

/// Make `set` (`None`: no labels) this thread's labels until the returned
/// guard is dropped. The thread's stack keeps its own reference.
#[cfg(test)]
pub(crate) fn put_in_force(set: Option<&Arc<LabelSet>>) -> InForce {
    put_owned_in_force(set.cloned())
}

/// As `put_in_force`, with the reference the stack keeps given, not taken.
pub(crate) fn put_owned_in_force(set: Option<Arc<LabelSet>>) -> InForce {
    let owner = STACK.try_with(|stack| {
        let owner = stack.next_scope();
        stack.push(owner, set).ok().map(|()| owner)
    });
    InForce {
        owner: owner.ok().flatten(),
        _not_send: PhantomData,
    }
}

impl Drop for InForce {
    fn drop(&mut self) {
        if let Some(owner) = self.owner {
            let removed = STACK.try_with(|stack| stack.remove(owner));
            drop(removed);
        }
    }
}

/// Keeps the set it was lent in force until dropped, then gives it back.
#[must_use = "the labels are in force until this is dropped"]
pub(crate) struct Lent<'a> {
    owner: Option<Owner>,
    home: &'a mut Option<Arc<LabelSet>>,
    _not_send: PhantomData<*const ()>,
}

/// Make the set in `home` this thread's labels until the returned guard is
/// dropped, moving the reference into the thread's stack meanwhile (no
/// reference taken or released: what a labeled poll pays). The guard puts
/// it back; if the stack had to let it go (more than [`MAX_DEPTH`] entries
/// since), `home` is left empty. If nothing can be put in force (the
/// thread is ending), `home` keeps its set.
#[inline]
pub(crate) fn lend_in_force(home: &mut Option<Arc<LabelSet>>) -> Lent<'_> {
    let owner = STACK.try_with(|stack| {
        let owner = stack.next_scope();
        match stack.push(owner, home.take()) {
            Ok(()) => Some(owner),
            Err(refused) => {
                *home = refused;
                None
            }
        }
    });
    Lent {
        owner: owner.ok().flatten(),
        home,
        _not_send: PhantomData,
    }
}

impl Drop for Lent<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(owner) = self.owner
            && let Ok(Some(set)) = STACK.try_with(|stack| stack.remove(owner))
        {
            *self.home = set;
        }
    }
}

/// A number for a `tracing` subscriber's span ids, unique in the process
/// (never 0, which scopes use), so spans of different subscribers with the
/// same id are told apart.
#[cfg(feature = "tracing")]
pub(crate) fn span_source() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Put `set` in force for span `id` of `source` until [`exit_span`] with
/// the same two; false if nothing could be put in force (the thread is
/// ending: a span entered from a thread-local destructor).
#[cfg(feature = "tracing")]
pub(crate) fn enter_span(source: u64, id: u64, set: Option<Arc<LabelSet>>) -> bool {
    STACK
        .try_with(|stack| stack.push(Owner { source, id }, set).is_ok())
        .unwrap_or(false)
}

/// Undo the latest [`enter_span`] of span `id` of `source` on this thread
/// (nothing if there is none).
#[cfg(feature = "tracing")]
pub(crate) fn exit_span(source: u64, id: u64) {
    let removed = STACK.try_with(|stack| stack.remove(Owner { source, id }));
    drop(removed);
}

/// The address of the set in force on this thread (null: none), to tell
/// whether it changed; not to be dereferenced.
#[inline]
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

    #[test]
    fn a_full_stack_lets_the_outermost_go_and_keeps_the_top_in_force() {
        let outermost = set(&[("depth", "0")]);
        let before = evicted();
        let mut guards = vec![put_in_force(Some(&outermost))];
        let sets: Vec<_> = (1..=MAX_DEPTH)
            .map(|i| set(&[("depth", &i.to_string())]))
            .collect();
        for s in &sets {
            guards.push(put_in_force(Some(s)));
        }
        assert!(evicted() > before, "one entry let go");
        assert_eq!(
            Arc::strong_count(&outermost),
            1,
            "and its reference released"
        );
        assert_eq!(current().as_deref(), sets.last().map(|s| &**s));
        // Exits out of order, the outermost's (let go) included.
        let outermost_guard = guards.remove(0);
        drop(outermost_guard);
        while let Some(guard) = guards.pop() {
            drop(guard);
            let top = guards.len().checked_sub(1).map(|i| &*sets[i]);
            assert_eq!(current().as_deref(), top);
        }
        assert!(current().is_none());
        assert!(sets.iter().all(|s| Arc::strong_count(s) == 1));
    }

    #[test]
    fn sets_still_in_force_when_a_thread_ends_are_released() {
        let left = set(&[("left", "in force")]);
        let on_thread = left.clone();
        std::thread::spawn(move || {
            // A guard that is never dropped: its entry stays to the end.
            std::mem::forget(put_in_force(Some(&on_thread)));
            assert!(!current_ptr().is_null());
        })
        .join()
        .expect("thread");
        assert_eq!(
            Arc::strong_count(&left),
            1,
            "the ended thread's stack released it"
        );
    }
}
