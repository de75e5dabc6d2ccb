//! Poll watching: async tasks whose single poll blocked a runtime worker
//! thread for longer than a threshold show up in the block profile, with
//! the worker's stack at that moment (the synchronous call hidden in an
//! async handler).
//!
//! A watched future ([`watch_polls`], or every request future of a service
//! behind [`WatchPollsLayer`](crate::WatchPollsLayer)) marks the start and end of each poll in a
//! per-thread slot: no clock read, a few loads and stores per poll (the
//! time is a coarse clock the watchdog advances at each scan). A watchdog
//! thread (`pprof-pollwatch`, started on the first watched poll) scans the
//! slots every `threshold / 5` (1 to 50 ms). When it finds a poll
//! running longer than its threshold, it interrupts that worker with a
//! signal (the thread dump's, see `signals`) and keeps the stack the worker
//! records in its handler. When the poll ends, the worker adds one blocking
//! event to the block profile: that stack, and the poll's whole duration
//! (subject to [`set_block_profile_rate`](super::set_block_profile_rate)),
//! measured on the coarse clock, so to within one scan interval.
//!
//! A poll that ends before the watchdog catches it (up to one scan interval
//! past the threshold) is not recorded. Nested watched futures are watched
//! once, by the outermost.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use super::events::{self, now_nanos};
use crate::labels::Labels;

/// The default threshold: a poll longer than this blocks a worker.
pub const DEFAULT_SLOW_POLL_THRESHOLD: Duration = Duration::from_millis(10);

static DEFAULT_THRESHOLD_NS: AtomicU64 = AtomicU64::new(10_000_000);

/// The signal that interrupts a worker caught in a long poll (default
/// `SIGURG`, as the goroutine profile's thread dump).
static SIGNAL: AtomicI32 = AtomicI32::new(libc::SIGURG);

/// How long the watchdog waits for a signalled worker to record its stack.
const CAPTURE_TIMEOUT: Duration = Duration::from_millis(50);

/// Set the threshold of watched futures that name none (default
/// [`DEFAULT_SLOW_POLL_THRESHOLD`]); returns the previous one.
pub fn set_slow_poll_threshold(threshold: Duration) -> Duration {
    let nanos = nanos(threshold).max(1);
    Duration::from_nanos(DEFAULT_THRESHOLD_NS.swap(nanos, Ordering::Relaxed))
}

/// Set the signal the watchdog uses to interrupt a worker (default
/// `SIGURG`); use the same as [`Config::thread_signal`](crate::Config::thread_signal)
/// if you changed that.
pub fn set_poll_watch_signal(signal: i32) {
    SIGNAL.store(signal, Ordering::Relaxed);
}

/// One worker thread's poll in progress, shared with the watchdog.
struct Slot {
    tid: AtomicI32,
    /// The coarse clock at the start of the current outermost watched poll; 0 when idle.
    started: AtomicU64,
    /// Threshold of the current poll, ns.
    threshold: AtomicU64,
    /// Incremented at each poll start; identifies a poll.
    sequence: AtomicU64,
    /// The stack the watchdog captured, with the poll it belongs to.
    captured: Mutex<Option<(u64, Vec<u64>, Labels)>>,
    /// The last poll the watchdog tried to capture (only it writes this).
    tried: AtomicU64,
}

static SLOTS: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());

/// [`now_nanos`] as of the watchdog's last scan: the clock of the poll path.
static COARSE_NOW: AtomicU64 = AtomicU64::new(0);

fn coarse_now() -> u64 {
    COARSE_NOW.load(Ordering::Relaxed)
}

/// This thread's slot; unregistered when the thread exits.
struct Registered {
    slot: Arc<Slot>,
    depth: std::cell::Cell<u32>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.slot.tid.store(0, Ordering::Relaxed);
        let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|s| !Arc::ptr_eq(s, &self.slot));
    }
}

thread_local! {
    static THIS_THREAD: Registered = register();
}

fn register() -> Registered {
    start_watchdog();
    let slot = Arc::new(Slot {
        tid: AtomicI32::new(crate::signals::gettid()),
        started: AtomicU64::new(0),
        threshold: AtomicU64::new(u64::MAX),
        sequence: AtomicU64::new(0),
        captured: Mutex::new(None),
        tried: AtomicU64::new(0),
    });
    SLOTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(slot.clone());
    Registered {
        slot,
        depth: std::cell::Cell::new(0),
    }
}

fn start_watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        COARSE_NOW.store(now_nanos().max(1), Ordering::Relaxed);
        // Without the thread nothing is caught; watched futures still run.
        let _ = std::thread::Builder::new()
            .name("pprof-pollwatch".to_owned())
            .spawn(watchdog);
    });
}

fn watchdog() {
    loop {
        let threshold = DEFAULT_THRESHOLD_NS.load(Ordering::Relaxed);
        let interval = Duration::from_nanos(threshold / 5)
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        std::thread::sleep(interval);
        COARSE_NOW.store(now_nanos(), Ordering::Relaxed);
        if !events::block_enabled() {
            continue;
        }
        let slots: Vec<Arc<Slot>> = SLOTS.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for slot in slots {
            check(&slot);
        }
    }
}

/// Capture the worker's stack if its poll has run past the threshold.
fn check(slot: &Slot) {
    let started = slot.started.load(Ordering::Acquire);
    if started == 0 {
        return;
    }
    let sequence = slot.sequence.load(Ordering::Acquire);
    let threshold = slot.threshold.load(Ordering::Relaxed);
    if coarse_now().saturating_sub(started) < threshold
        || slot.tried.swap(sequence, Ordering::Relaxed) == sequence
    {
        return;
    }
    let tid = slot.tid.load(Ordering::Relaxed);
    let signal = SIGNAL.load(Ordering::Relaxed);
    let Ok(Some((pcs, labels))) = crate::signals::capture_thread(tid, signal, CAPTURE_TIMEOUT)
    else {
        return;
    };
    // The labels in force on the worker when its stack was taken: the poll's.
    let labels = Labels::from_set(labels);
    // Keep the stack only if that same poll was still running after the
    // worker recorded it (its handler ran before `capture` returned).
    if slot.sequence.load(Ordering::Acquire) == sequence
        && slot.started.load(Ordering::Acquire) == started
    {
        *slot.captured.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((sequence, pcs, labels));
    }
}

/// Marks the outermost watched poll on this thread; ends it on drop.
pub(crate) struct Mark {
    /// `(start, sequence)` of an outermost poll; `None` when nested.
    outer: Option<(u64, u64)>,
}

impl Mark {
    /// A poll starts now, watched at the process-wide threshold.
    pub(crate) fn enter_default() -> Self {
        Self::enter(DEFAULT_THRESHOLD_NS.load(Ordering::Relaxed))
    }

    #[inline]
    fn enter(threshold_ns: u64) -> Self {
        let outer = THIS_THREAD
            .try_with(|this| {
                let depth = this.depth.get();
                this.depth.set(depth + 1);
                (depth == 0).then(|| {
                    let slot = &this.slot;
                    let sequence = slot.sequence.load(Ordering::Relaxed) + 1;
                    let start = coarse_now().max(1);
                    slot.threshold.store(threshold_ns, Ordering::Relaxed);
                    slot.sequence.store(sequence, Ordering::Release);
                    slot.started.store(start, Ordering::Release);
                    (start, sequence)
                })
            })
            .ok()
            .flatten();
        Self { outer }
    }
}

impl Drop for Mark {
    #[inline]
    fn drop(&mut self) {
        let _ = THIS_THREAD.try_with(|this| {
            this.depth.set(this.depth.get().saturating_sub(1));
            let Some((start, sequence)) = self.outer else {
                return;
            };
            let slot = &this.slot;
            slot.started.store(0, Ordering::Release);
            let elapsed = coarse_now().saturating_sub(start);
            if elapsed >= slot.threshold.load(Ordering::Relaxed) {
                long_poll_ended(slot, sequence, elapsed);
            }
        });
    }
}

#[cold]
#[inline(never)]
fn long_poll_ended(slot: &Slot, sequence: u64, elapsed: u64) {
    let captured = slot
        .captured
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some((of, pcs, labels)) = captured
        && of == sequence
    {
        events::record_block_stack(&pcs, labels, Duration::from_nanos(elapsed));
    }
}

pin_project_lite::pin_project! {
    /// A future whose polls are watched; see [`watch_polls`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct WatchPolls<F> {
        #[pin]
        inner: F,
        threshold_ns: Option<u64>,
    }
}

/// Watch every poll of `future`: one that keeps its worker thread busy
/// longer than the slow-poll threshold (default 10 ms, see
/// [`set_slow_poll_threshold`]) is recorded in the block profile with the
/// worker's stack while it was blocked.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let answer = pprof_core::watch_polls(async {
///     // A synchronous call in async code: blocks the worker for 20 ms.
///     std::thread::sleep(std::time::Duration::from_millis(20));
///     42
/// })
/// .await;
/// assert_eq!(answer, 42);
/// # });
/// ```
pub fn watch_polls<F: Future>(future: F) -> WatchPolls<F> {
    WatchPolls {
        inner: future,
        threshold_ns: None,
    }
}

impl<F> WatchPolls<F> {
    /// Use `threshold` for this future instead of the process-wide one.
    pub fn threshold(mut self, threshold: Duration) -> Self {
        self.threshold_ns = Some(nanos(threshold));
        self
    }

    /// Watch `future` with this threshold (ns), or the process-wide one.
    pub(crate) fn with_threshold_ns(future: F, threshold_ns: Option<u64>) -> Self {
        Self {
            inner: future,
            threshold_ns,
        }
    }
}

/// A duration in whole nanoseconds, saturating.
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl<F: Future> Future for WatchPolls<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let threshold = this
            .threshold_ns
            .unwrap_or_else(|| DEFAULT_THRESHOLD_NS.load(Ordering::Relaxed));
        let _mark = Mark::enter(threshold);
        this.inner.poll(cx)
    }
}

/// Watch the polls of every task of a runtime, with no wrapping: tokio's
/// task hooks mark each poll's start and end (they need `RUSTFLAGS="--cfg
/// tokio_unstable"`). A block sample of a task carries the labels in force
/// on its worker when its stack was taken.
///
/// ```
/// # #[cfg(tokio_unstable)] {
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// let runtime = pprof_core::watch_all_tasks(&mut builder).enable_all().build().unwrap();
/// # drop(runtime); }
/// ```
#[cfg(tokio_unstable)]
pub fn watch_all_tasks(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    thread_local! {
        static TASK_POLL: std::cell::RefCell<Option<Mark>> = const { std::cell::RefCell::new(None) };
    }
    builder
        .on_before_task_poll(|_| {
            let _ = TASK_POLL.try_with(|mark| *mark.borrow_mut() = Some(Mark::enter_default()));
        })
        .on_after_task_poll(|_| {
            let _ = TASK_POLL.try_with(|mark| drop(mark.borrow_mut().take()));
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::events::Kind;

    #[inline(never)]
    fn block_the_worker_in_a_known_function(how_long: Duration) {
        std::thread::sleep(how_long);
    }

    fn recorded_with(name: &str) -> Vec<Vec<i64>> {
        crate::profiles::contention_leaves(Kind::Block)
            .into_iter()
            .filter(|(leaf, _)| leaf.ends_with(name))
            .map(|(_, values)| values)
            .collect()
    }

    #[test]
    fn a_long_poll_is_recorded_with_the_blocking_call_on_top() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            tokio::spawn(watch_polls(async {
                block_the_worker_in_a_known_function(Duration::from_millis(300));
            }))
            .await
            .expect("task");
            // Short polls are not recorded.
            tokio::spawn(watch_polls(async {
                for _ in 0..100 {
                    tokio::task::yield_now().await;
                }
            }))
            .await
            .expect("task");
        });
        let found = recorded_with("watch::tests::block_the_worker_in_a_known_function");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0][0], 1);
        assert!(
            (250_000_000..2_000_000_000).contains(&found[0][1]),
            "{}",
            found[0][1]
        );
    }

    #[cfg(tokio_unstable)]
    #[inline(never)]
    fn block_an_unwrapped_task_here(how_long: Duration) {
        std::thread::sleep(how_long);
    }

    /// (Named for `cargo xtask ci`'s tokio_unstable step, which runs `tasks`.)
    #[cfg(tokio_unstable)]
    #[test]
    fn every_poll_of_runtime_wide_watched_tasks() {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        let runtime = watch_all_tasks(builder.worker_threads(1))
            .build()
            .expect("runtime");
        runtime.block_on(async {
            tokio::spawn(crate::labels::scope([("job", "unwrapped")], async {
                block_an_unwrapped_task_here(Duration::from_millis(300));
            }))
            .await
            .expect("task");
        });
        let stacks = crate::profiles::contention_stacks(Kind::Block);
        let found = stacks
            .iter()
            .find(|(names, _)| {
                names
                    .first()
                    .is_some_and(|n| n.ends_with("block_an_unwrapped_task_here"))
            })
            .unwrap_or_else(|| panic!("no block sample: {stacks:?}"));
        assert!(
            (250_000_000..2_000_000_000).contains(&found.1[1]),
            "{:?}",
            found.1
        );
    }
}
