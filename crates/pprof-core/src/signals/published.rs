//! A value built outside signal handlers and read inside them: the known
//! code and the stack mappings the unwinder checks every read against.
//!
//! A reader (a handler, or ordinary code) announces itself in a counter,
//! loads the pointer, reads, and leaves. A writer swaps in a new value and
//! frees the old one only once it has seen the counter at zero after the
//! swap; until then the old value waits in a retired list, so a writer
//! never waits for a reader (a reader may be a thread stopped by a
//! debugger in the middle of a handler). Readers take no lock and
//! allocate nothing; only writers touch the retired list.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A value readers see whole, old or new, never half-made or freed.
pub(super) struct Published<T: 'static> {
    current: AtomicPtr<T>,
    readers: AtomicUsize,
    retired: Mutex<Vec<Box<T>>>,
}

impl<T: 'static> Published<T> {
    pub(super) const fn new() -> Self {
        Self {
            current: AtomicPtr::new(std::ptr::null_mut()),
            readers: AtomicUsize::new(0),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Run `read` with the value published now (`None` before the first).
    /// Async-signal-safe: two atomic updates and a load around `read`.
    pub(super) fn read<R>(&self, read: impl FnOnce(Option<&T>) -> R) -> R {
        self.readers.fetch_add(1, Ordering::SeqCst);
        let value = self.current.load(Ordering::SeqCst);
        // SAFETY: a non-null pointer came from `Box::into_raw` in `publish`
        // and is freed only after a writer, having swapped it out, saw no
        // reader inside; we announced ourselves before loading it, so a
        // writer that swaps it out from now on sees us and keeps it.
        let out = read(unsafe { value.as_ref() });
        self.readers.fetch_sub(1, Ordering::SeqCst);
        out
    }

    /// Whether a value was ever published.
    pub(super) fn is_set(&self) -> bool {
        !self.current.load(Ordering::Acquire).is_null()
    }

    /// Publish `value` (not from a signal handler): readers from now on see
    /// it; the one it replaces is freed once no reader can hold it.
    pub(super) fn publish(&self, value: Box<T>) {
        let old = self.current.swap(Box::into_raw(value), Ordering::SeqCst);
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        if !old.is_null() {
            // SAFETY: `old` came from `Box::into_raw` in an earlier publish
            // and is no longer published; it is owned here from now on.
            retired.push(unsafe { Box::from_raw(old) });
        }
        self.reclaim(&mut retired);
    }

    /// Hold the writers' lock (across a fork: see [`super::fork`]).
    pub(super) fn lock(&'static self) -> MutexGuard<'static, Vec<Box<T>>> {
        self.retired.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// In a child just forked: the readers counted inside were threads of
    /// the parent, which the child does not have.
    pub(super) fn forget_readers(&self) {
        self.readers.store(0, Ordering::SeqCst);
    }

    /// Free the retired values if no reader is inside (not from a handler).
    pub(super) fn tidy(&self) {
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        self.reclaim(&mut retired);
    }

    fn reclaim(&self, retired: &mut Vec<Box<T>>) {
        // Every retired value was swapped out before this load; a reader
        // that announces itself after it loads the current value instead.
        if !retired.is_empty() && self.readers.load(Ordering::SeqCst) == 0 {
            retired.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_inside_keeps_the_old_value_until_it_leaves() {
        static VALUE: Published<String> = Published::new();
        assert!(VALUE.read(|v| v.is_none()));
        VALUE.publish(Box::new("one".to_owned()));
        VALUE.read(|v| {
            assert_eq!(v.map(String::as_str), Some("one"));
            // A writer while we read: ours stays valid, the next read sees
            // the new one.
            VALUE.publish(Box::new("two".to_owned()));
            assert_eq!(v.map(String::as_str), Some("one"));
            assert_eq!(
                VALUE.retired.lock().map(|r| r.len()).unwrap_or(0),
                1,
                "kept while a reader is inside"
            );
        });
        VALUE.tidy();
        assert_eq!(VALUE.retired.lock().map(|r| r.len()).unwrap_or(9), 0);
        assert_eq!(VALUE.read(|v| v.cloned()), Some("two".to_owned()));
    }
}
