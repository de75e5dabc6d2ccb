//! Labels: key/value tags on every sample taken while they are in force,
//! as Go's `pprof.Do`, `pprof.WithLabels` and `pprof.Labels` give them, for
//! synchronous code and for futures, wherever they are polled.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use pprof_core::labels;
//!
//! // Any future: the labels hold while it is polled, on whichever thread.
//! let answer = labels::scope([("job", "reindex")], async {
//!     // Synchronous code inside: nested labels merge, the inner value wins.
//!     labels::with([("tenant", "acme")], || {
//!         let now = labels::current();
//!         assert_eq!(now.get("job"), Some("reindex"));
//!         assert_eq!(now.get("tenant"), Some("acme"));
//!         42
//!     })
//! })
//! .await;
//! assert_eq!(answer, 42);
//! assert!(labels::current().is_empty());
//! # });
//! ```
//!
//! Then `go tool pprof -tagfocus job=reindex …/profile`, `-tagshow`,
//! `-traces`. CPU samples carry the labels in force on the interrupted
//! thread at that instant; thread dumps (`goroutine`) carry each thread's;
//! `mutex` and `block` samples carry the recording thread's, and a watched
//! poll's block sample the poll's.
//!
//! # Cardinality
//!
//! Every distinct set of labels is a distinct sample in each profile, so
//! label with what has few values: route templates (`/users/{id}`), job
//! names, tenants. Not request ids or user ids: a profile keeps at most
//! [`MAX_SETS_PER_PROFILE`] distinct sets, and samples of any further set
//! go to one set that says so (`pprof_core.labels=overflow`).
//!
//! # Bounds
//!
//! A set holds at most [`MAX_LABELS`] labels, keys of at most
//! [`MAX_KEY_BYTES`] bytes and values of at most [`MAX_VALUE_BYTES`] bytes;
//! longer keys and values are cut (at a character boundary) and further
//! labels dropped, each such event counted in [`overflows`] and in the
//! profiles' comments. A set lives as long as a scope or a sample refers
//! to it, so requests with unique values leave nothing behind.
//!
//! # Cost
//!
//! An unlabeled thread pays nothing. A labeled poll lends its set to the
//! thread's label stack and takes it back (no reference counted; merging
//! with the labels already in force only when those change); a sampled
//! tick takes one atomic increment.
//!
//! # Out of order
//!
//! Each scope and span removes only its own labels when it ends, in
//! whatever order they end: a `tracing` span entered inside [`with`] and
//! exited after it keeps its labels (with those of the `with`, in force
//! when it was entered) until it exits, and then what was in force before
//! it is again, if nothing entered later is still in force.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use crate::signals::labels::{self as slot, LabelSet};

#[cfg(feature = "tracing")]
pub mod tracing;

/// Labels one set holds at most.
pub const MAX_LABELS: usize = 16;
/// Bytes of a key at most.
pub const MAX_KEY_BYTES: usize = 64;
/// Bytes of a value at most.
pub const MAX_VALUE_BYTES: usize = 256;
/// Distinct label sets one profile keeps at most.
pub const MAX_SETS_PER_PROFILE: usize = 1024;
/// Scopes and spans in force on one thread at once, at most: past that,
/// the outermost is let go (counted in [`overflows`]); nested ones carry
/// its labels still, as each set holds those in force when it was made.
pub const MAX_DEPTH: usize = slot::MAX_DEPTH;

static OVERFLOWS: AtomicU64 = AtomicU64::new(0);

/// Labels cut or dropped so far for going past the bounds, label sets a
/// profile had no room for, and sets a thread let go because more than
/// [`MAX_DEPTH`] were in force on it at once (the outermost goes).
pub fn overflows() -> u64 {
    OVERFLOWS.load(Ordering::Relaxed) + slot::evicted()
}

pub(crate) fn count_overflow() {
    OVERFLOWS.fetch_add(1, Ordering::Relaxed);
}

/// The one set samples of a label set a profile had no room for carry.
pub(crate) fn overflow_labels() -> Labels {
    Labels::new([("pprof_core.labels", "overflow")])
}

/// A set of labels: keys to values, each key once. Cheap to clone.
///
/// ```
/// let labels = pprof_core::labels::Labels::new([("route", "/users/{id}"), ("method", "GET")]);
/// assert_eq!(labels.get("route"), Some("/users/{id}"));
/// assert_eq!(labels.iter().count(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(Option<Arc<LabelSet>>);

impl Labels {
    /// The labels `pairs` name; a key given twice keeps its last value.
    pub fn new<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self::none().merged(pairs)
    }

    /// No labels.
    pub fn none() -> Self {
        Self(None)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs()
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.pairs()[i].1)
    }

    /// Every label, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs().iter().map(|(k, v)| (&**k, &**v))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }

    fn pairs(&self) -> &[(Arc<str>, Arc<str>)] {
        self.0.as_ref().map_or(&[], |set| &set.pairs)
    }

    /// These labels with `pairs` added; a key already set takes the new value.
    pub(crate) fn merged<K: AsRef<str>, V: AsRef<str>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut all: Vec<(Arc<str>, Arc<str>)> = self.pairs().to_vec();
        for (key, value) in pairs {
            let key = bounded(key.as_ref(), MAX_KEY_BYTES);
            let value = bounded(value.as_ref(), MAX_VALUE_BYTES);
            match all.binary_search_by(|(k, _)| (**k).cmp(&*key)) {
                Ok(i) => all[i].1 = value,
                Err(_) if all.len() >= MAX_LABELS => count_overflow(),
                Err(i) => all.insert(i, (key, value)),
            }
        }
        Self::from_pairs(all)
    }

    /// These labels with `inner`'s on top (inner values win).
    pub(crate) fn with_inner(&self, inner: &Labels) -> Self {
        if self.is_empty() {
            return inner.clone();
        }
        if inner.is_empty() {
            return self.clone();
        }
        self.merged(inner.iter())
    }

    fn from_pairs(pairs: Vec<(Arc<str>, Arc<str>)>) -> Self {
        if pairs.is_empty() {
            Self(None)
        } else {
            Self(Some(Arc::new(LabelSet {
                pairs: pairs.into_boxed_slice(),
            })))
        }
    }

    /// From a set a sample or a scope holds.
    pub(crate) fn from_set(set: Option<Arc<LabelSet>>) -> Self {
        Self(set)
    }

    /// As a sample's labels.
    pub(crate) fn to_sample_labels(&self) -> Vec<crate::format::Label> {
        self.pairs()
            .iter()
            .map(|(k, v)| crate::format::Label::User(k.clone(), v.clone()))
            .collect()
    }

    pub(crate) fn set(&self) -> Option<&Arc<LabelSet>> {
        self.0.as_ref()
    }

    pub(crate) fn into_set(self) -> Option<Arc<LabelSet>> {
        self.0
    }

    /// The set itself, for lending it to the thread's label stack.
    fn set_mut(&mut self) -> &mut Option<Arc<LabelSet>> {
        &mut self.0
    }
}

/// A request's labels: `http.request.method`, and `http.route` when it has
/// a route template (OpenTelemetry: none, never an empty one, without).
pub(crate) fn request_labels(method: &str, route: Option<&str>) -> Labels {
    let route = route.filter(|r| !r.is_empty());
    Labels::new(
        [("http.request.method", method)]
            .into_iter()
            .chain(route.map(|r| ("http.route", r))),
    )
}

/// `text` cut to at most `max` bytes, at a character boundary (counted).
fn bounded(text: &str, max: usize) -> Arc<str> {
    if text.len() <= max {
        return Arc::from(text);
    }
    count_overflow();
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Arc::from(&text[..end])
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Self::new(pairs)
    }
}

/// The labels in force on this thread now (Go: `pprof.ForLabels` on the
/// context `pprof.Do` gave).
pub fn current() -> Labels {
    Labels(slot::current())
}

/// Run `work` with `labels` added to the ones in force (Go: `pprof.Do`
/// with a synchronous function). Nested calls merge; the inner value wins.
///
/// ```
/// let total = pprof_core::labels::with([("tenant", "acme")], || (1..=10).sum::<u32>());
/// assert_eq!(total, 55);
/// ```
pub fn with<K: AsRef<str>, V: AsRef<str>, R>(
    labels: impl IntoIterator<Item = (K, V)>,
    work: impl FnOnce() -> R,
) -> R {
    let merged = current().merged(labels);
    let _in_force = slot::put_owned_in_force(merged.into_set());
    work()
}

pin_project_lite::pin_project! {
    /// A future whose polls run with its labels in force; see [`scope`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Labeled<F> {
        #[pin]
        inner: F,
        own: Labels,
        // The labels in force where it was last polled, and the merge of
        // its own onto them (kept so a poll in the same place does not
        // merge again; holding the outer set keeps its address unique).
        merged_on: Labels,
        merged: Labels,
        // The task it runs in, noted for tokio's task dumps.
        task: TaskNote,
    }
}

/// The labels of tasks that run a labeled future, for the goroutine
/// profile's task samples (feature `tokio-taskdump`): each labeled future
/// notes itself at its first poll inside a task and is forgotten when it
/// is dropped, so a nested one that ends leaves the others' notes alone.
#[cfg(all(feature = "tokio-taskdump", tokio_unstable))]
pub(crate) mod tasks {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, PoisonError};

    use super::Labels;

    /// Per task, the labeled futures alive in it, in the order they noted
    /// themselves: (note number, labels).
    type Notes = HashMap<tokio::task::Id, Vec<(u64, Labels)>>;

    static TASKS: Mutex<Option<Notes>> = Mutex::new(None);

    /// The labels the task `id` runs with, where known: those of the
    /// earliest-noted labeled future still alive in it (the outermost: a
    /// future is polled, so noted, before the ones inside it).
    pub(crate) fn of(id: tokio::task::Id) -> Labels {
        TASKS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|tasks| tasks.get(&id))
            .and_then(|notes| notes.first())
            .map(|(_, labels)| labels.clone())
            .unwrap_or_default()
    }

    /// Note a labeled future of task `id`; the number to forget it by.
    pub(super) fn note(id: tokio::task::Id, labels: &Labels) -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let number = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut tasks = TASKS.lock().unwrap_or_else(PoisonError::into_inner);
        tasks
            .get_or_insert_with(HashMap::new)
            .entry(id)
            .or_default()
            .push((number, labels.clone()));
        number
    }

    /// Forget the note `number` of task `id` (the task's entry goes with its last note).
    pub(super) fn forget(id: tokio::task::Id, number: u64) {
        let mut tasks = TASKS.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tasks) = tasks.as_mut() else {
            return;
        };
        if let Some(notes) = tasks.get_mut(&id) {
            notes.retain(|(n, _)| *n != number);
            if notes.is_empty() {
                tasks.remove(&id);
            }
        }
    }
}

/// Which task a labeled future noted itself for, and its note's number
/// (nothing without task dumps).
#[derive(Debug, Default)]
struct TaskNote {
    #[cfg(all(feature = "tokio-taskdump", tokio_unstable))]
    noted: Option<(tokio::task::Id, u64)>,
}

impl TaskNote {
    #[cfg(all(feature = "tokio-taskdump", tokio_unstable))]
    fn note(&mut self, labels: &Labels) {
        if self.noted.is_none()
            && let Some(id) = tokio::task::try_id()
        {
            self.noted = Some((id, tasks::note(id, labels)));
        }
    }

    #[cfg(not(all(feature = "tokio-taskdump", tokio_unstable)))]
    fn note(&mut self, _: &Labels) {}
}

#[cfg(all(feature = "tokio-taskdump", tokio_unstable))]
impl Drop for TaskNote {
    fn drop(&mut self) {
        if let Some((id, number)) = self.noted {
            tasks::forget(id, number);
        }
    }
}

/// `future` with `labels` in force during each of its polls, added to the
/// ones in force where it is polled (Go: `pprof.Do` around a goroutine's
/// work). The labels follow the future to whichever worker thread polls it.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let job = pprof_core::labels::scope([("job", "reindex")], async {
///     pprof_core::labels::current().get("job").map(str::to_owned)
/// });
/// assert_eq!(job.await.as_deref(), Some("reindex"));
/// # });
/// ```
pub fn scope<K: AsRef<str>, V: AsRef<str>, F: Future>(
    labels: impl IntoIterator<Item = (K, V)>,
    future: F,
) -> Labeled<F> {
    Labeled::new(Labels::new(labels), future)
}

impl<F> Labeled<F> {
    /// `future` with `labels` in force during its polls.
    pub fn new(labels: Labels, future: F) -> Self {
        Self {
            inner: future,
            merged: labels.clone(),
            own: labels,
            merged_on: Labels::none(),
            task: TaskNote::default(),
        }
    }
}

impl<F: Future> Future for Labeled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let outer = slot::current_ptr();
        let same_place = match this.merged_on.set() {
            Some(set) => Arc::as_ptr(set) == outer,
            None => outer.is_null(),
        };
        // (A merged set the thread's stack had to let go while it was lent
        // is merged again.)
        let let_go = this.merged.set().is_none()
            && (this.own.set().is_some() || this.merged_on.set().is_some());
        if !same_place || let_go {
            let outer = current();
            *this.merged = outer.with_inner(this.own);
            *this.merged_on = outer;
        }
        this.task.note(this.merged);
        // Lent to the thread's label stack for the poll, and given back.
        let _in_force = slot::lend_in_force(this.merged.set_mut());
        this.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_sorted_and_bounded() {
        let labels = Labels::new([("b", "2"), ("a", "1"), ("b", "3")]);
        assert_eq!(labels.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "3")]);
        let before = overflows();
        let long = "é".repeat(MAX_VALUE_BYTES);
        let labels = Labels::new([("k", long.as_str())]);
        let value = labels.get("k").unwrap_or_default();
        assert!(value.len() <= MAX_VALUE_BYTES && value.chars().all(|c| c == 'é'));
        let many = Labels::new((0..MAX_LABELS + 3).map(|i| (format!("k{i:02}"), "v")));
        assert_eq!(many.iter().count(), MAX_LABELS);
        assert!(overflows() >= before + 4);
    }

    #[test]
    fn nested_scopes_merge_and_the_inner_value_wins() {
        with([("route", "/a"), ("method", "GET")], || {
            with([("route", "/b")], || {
                let now = current();
                assert_eq!(now.get("route"), Some("/b"));
                assert_eq!(now.get("method"), Some("GET"));
            });
            assert_eq!(current().get("route"), Some("/a"));
        });
        assert!(current().is_empty());
    }

    /// Run `work` under `depth` nested `with`s.
    fn nested(depth: usize, work: &mut dyn FnMut()) {
        if depth == 0 {
            work();
        } else {
            with([("depth", depth.to_string())], || nested(depth - 1, work));
        }
    }

    #[test]
    fn a_labeled_future_whose_set_was_let_go_mid_poll_has_its_labels_next_poll() {
        let mut yielded = false;
        let mut future = Box::pin(scope([("job", "deep")], async move {
            // Deeper than a thread's stack holds: the future's own entry,
            // the outermost, is let go during this poll.
            nested(MAX_DEPTH + 1, &mut || {});
            std::future::poll_fn(|_| {
                if std::mem::replace(&mut yielded, true) {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            })
            .await;
            current().get("job").map(str::to_owned)
        }));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert!(current().is_empty());
        let Poll::Ready(job) = future.as_mut().poll(&mut cx) else {
            panic!("ready at the second poll");
        };
        assert_eq!(job.as_deref(), Some("deep"));
    }

    #[test]
    fn a_labeled_future_keeps_its_labels_across_worker_threads() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime");
        let seen = runtime.block_on(async {
            tokio::spawn(scope([("job", "hop")], async {
                let mut seen = Vec::new();
                for _ in 0..50 {
                    seen.push((
                        std::thread::current().id(),
                        current().get("job").map(str::to_owned),
                    ));
                    tokio::task::yield_now().await;
                }
                seen
            }))
            .await
            .expect("task")
        });
        assert!(seen.iter().all(|(_, job)| job.as_deref() == Some("hop")));
        // Outside the future nothing is in force on any worker.
        let after = runtime.block_on(async {
            tokio::spawn(async { current().is_empty() })
                .await
                .expect("task")
        });
        assert!(after);
    }
}
