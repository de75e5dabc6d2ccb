//! Poll watching: async tasks whose single poll blocked a runtime worker
//! thread for longer than a threshold show up in the block profile, with
//! the worker's stacks while it was blocked (the synchronous call hidden in
//! an async handler).
//!
//! A watched future ([`watch_polls`], or every request future of a service
//! behind [`WatchPollsLayer`](crate::WatchPollsLayer)) marks the start and
//! end of each poll in a per-thread slot: no clock read, a few loads and
//! stores per poll (the start is a coarse clock the watchdog advances at
//! each scan). A watchdog thread (`pprof-pollwatch`, started on the first
//! watched poll) scans the slots every `threshold / 5` (1 to 50 ms, from
//! the smallest threshold of the polls running). It never blocks: when it
//! finds a poll running past its threshold it asks a second thread
//! (`pprof-pollstack`) to take that worker's stack, which interrupts the
//! worker with a signal (the thread dump's,
//! [`Config::thread_signal`](crate::Config::thread_signal)) and keeps what
//! its handler records. So the clock keeps moving while a capture waits
//! for a worker.
//!
//! While the poll stays past its threshold, its stack is taken again at
//! each scan, and each stretch of time is charged to the stack seen at its
//! end: from the poll's start to the first capture, from each capture to
//! the next, and from the last capture to the poll's end (read from the
//! real clock then). A poll that computes in one function for 50 ms and
//! then sleeps in another for 200 ms is charged about 50 ms and 200 ms to
//! the two. When the poll ends, the worker adds its stacks to the block
//! profile as one blocking event (subject to
//! [`set_block_profile_rate`](super::set_block_profile_rate)), split
//! between them by time: each stack's delay is its share, and so is its
//! count. Durations are right to within one scan interval (the start).
//!
//! A poll that ends before the watchdog catches it (up to one scan interval
//! past the threshold) is not recorded. Nested watched futures are watched
//! once, by the outermost. Thresholds under 1 ms (zero included) are
//! raised to 1 ms, the watchdog's shortest scan.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use super::events::{self, now_nanos};
use crate::labels::Labels;

/// The default threshold: a poll longer than this blocks a worker.
pub const DEFAULT_SLOW_POLL_THRESHOLD: Duration = Duration::from_millis(10);

/// The shortest threshold: the watchdog's shortest scan interval.
const MIN_THRESHOLD: Duration = Duration::from_millis(1);

static DEFAULT_THRESHOLD_NS: AtomicU64 = AtomicU64::new(10_000_000);

/// How long a capture waits for a signalled worker to record its stack.
const CAPTURE_TIMEOUT: Duration = Duration::from_millis(50);

/// Distinct stacks kept per long poll; later ones add to the last.
const MAX_STACKS_PER_POLL: usize = 64;

/// Set the threshold of watched futures that name none (default
/// [`DEFAULT_SLOW_POLL_THRESHOLD`]; under 1 ms, zero included, is raised
/// to 1 ms); returns the previous one.
pub fn set_slow_poll_threshold(threshold: Duration) -> Duration {
    Duration::from_nanos(DEFAULT_THRESHOLD_NS.swap(threshold_nanos(threshold), Ordering::Relaxed))
}

/// A threshold in nanoseconds, raised to [`MIN_THRESHOLD`].
pub(crate) fn threshold_nanos(threshold: Duration) -> u64 {
    nanos(threshold.max(MIN_THRESHOLD))
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
    /// A capture of this worker is asked for or under way.
    capturing: AtomicBool,
    /// The stacks taken during the current long poll.
    long: Mutex<LongPoll>,
}

/// What the captures of one long poll found so far.
#[derive(Default)]
struct LongPoll {
    /// The poll they belong to.
    sequence: u64,
    /// When the last stretch ended (the poll's start, then each capture).
    charged_until: u64,
    /// Each stack seen (with the labels in force on the worker then: the
    /// poll's), with the time charged to it (ns).
    stacks: Vec<(Vec<u64>, Labels, u64)>,
}

impl LongPoll {
    /// Charge the time from the last capture to `at` to `pcs`.
    fn charge(&mut self, pcs: Vec<u64>, labels: Labels, at: u64) {
        let stretch = at.saturating_sub(self.charged_until);
        self.charged_until = self.charged_until.max(at);
        if let Some((_, _, time)) = self
            .stacks
            .iter_mut()
            .find(|(seen, with, _)| *seen == pcs && *with == labels)
        {
            *time += stretch;
        } else if self.stacks.len() < MAX_STACKS_PER_POLL {
            self.stacks.push((pcs, labels, stretch));
        } else if let Some((_, _, time)) = self.stacks.last_mut() {
            *time += stretch;
        }
    }
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
        capturing: AtomicBool::new(false),
        long: Mutex::new(LongPoll::default()),
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

/// A capture the watchdog asks for: this slot's worker, during this poll.
struct Wanted {
    slot: Arc<Slot>,
    sequence: u64,
    started: u64,
}

fn start_watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        COARSE_NOW.store(now_nanos().max(1), Ordering::Relaxed);
        let (wanted, captures) = mpsc::channel();
        // Without the threads nothing is caught; watched futures still run.
        let _ = std::thread::Builder::new()
            .name("pprof-pollstack".to_owned())
            .spawn(move || capturer(&captures));
        let _ = std::thread::Builder::new()
            .name("pprof-pollwatch".to_owned())
            .spawn(move || watchdog(&wanted));
    });
}

/// Advance the coarse clock and find long polls, every scan interval; never
/// waits for anything but its timer.
fn watchdog(wanted: &mpsc::Sender<Wanted>) {
    let mut shortest = DEFAULT_THRESHOLD_NS.load(Ordering::Relaxed);
    loop {
        let interval = Duration::from_nanos(shortest / 5)
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        std::thread::sleep(interval);
        COARSE_NOW.store(now_nanos(), Ordering::Relaxed);
        shortest = DEFAULT_THRESHOLD_NS.load(Ordering::Relaxed);
        if !events::block_enabled() {
            continue;
        }
        let slots: Vec<Arc<Slot>> = SLOTS.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for slot in slots {
            if let Some(threshold) = check(&slot, wanted) {
                shortest = shortest.min(threshold);
            }
        }
    }
}

/// Ask for the worker's stack if its poll has run past the threshold and
/// no capture of it is pending; the poll's threshold while one runs.
fn check(slot: &Arc<Slot>, wanted: &mpsc::Sender<Wanted>) -> Option<u64> {
    let started = slot.started.load(Ordering::Acquire);
    if started == 0 {
        return None;
    }
    let sequence = slot.sequence.load(Ordering::Acquire);
    let threshold = slot.threshold.load(Ordering::Relaxed);
    if coarse_now().saturating_sub(started) >= threshold
        && !slot.capturing.swap(true, Ordering::AcqRel)
    {
        let asked = wanted.send(Wanted {
            slot: slot.clone(),
            sequence,
            started,
        });
        if asked.is_err() {
            slot.capturing.store(false, Ordering::Release);
        }
    }
    Some(threshold)
}

/// Take the stacks the watchdog asks for, one at a time, and charge each
/// to the poll still running (a capture can wait up to [`CAPTURE_TIMEOUT`]
/// for a worker, or for a thread dump in progress).
fn capturer(captures: &mpsc::Receiver<Wanted>) {
    for Wanted {
        slot,
        sequence,
        started,
    } in captures
    {
        let tid = slot.tid.load(Ordering::Relaxed);
        let signal = crate::signals::thread_signal();
        let captured = crate::signals::capture_thread(tid, signal, CAPTURE_TIMEOUT);
        let at = now_nanos();
        if let Ok(Some((pcs, labels))) = captured {
            let mut long = slot.long.lock().unwrap_or_else(PoisonError::into_inner);
            // Only if that same poll is still running (the worker sets
            // `started` to 0 before it takes `long` at the poll's end).
            if slot.sequence.load(Ordering::Acquire) == sequence
                && slot.started.load(Ordering::Acquire) == started
            {
                if long.sequence != sequence {
                    *long = LongPoll {
                        sequence,
                        charged_until: started,
                        stacks: Vec::new(),
                    };
                }
                long.charge(pcs, Labels::from_set(labels), at);
            }
        }
        slot.capturing.store(false, Ordering::Release);
    }
}

/// Marks the outermost watched poll on this thread; ends it on drop.
pub(crate) struct Mark {
    /// `(start, sequence)` of an outermost poll; `None` when nested.
    outer: Option<(u64, u64)>,
}

impl Mark {
    /// A poll starts now, watched at the process-wide threshold.
    #[cfg(any(feature = "tracing", tokio_unstable))]
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
            if coarse_now().saturating_sub(start) >= slot.threshold.load(Ordering::Relaxed) {
                long_poll_ended(slot, sequence, start);
            }
        });
    }
}

/// Charge the last stretch (from the last capture to now, on the real
/// clock) and record the poll's stacks as one blocking event.
#[cold]
#[inline(never)]
fn long_poll_ended(slot: &Slot, sequence: u64, start: u64) {
    let ended = now_nanos();
    let mut long = std::mem::take(&mut *slot.long.lock().unwrap_or_else(PoisonError::into_inner));
    if long.sequence != sequence || long.stacks.is_empty() {
        return;
    }
    if let Some((_, _, time)) = long.stacks.last_mut() {
        *time += ended.saturating_sub(long.charged_until);
    }
    events::record_block_stacks(
        &long.stacks,
        Duration::from_nanos(ended.saturating_sub(start)),
    );
    long.stacks.clear();
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
    /// Use `threshold` for this future instead of the process-wide one
    /// (under 1 ms, zero included, is raised to 1 ms).
    pub fn threshold(mut self, threshold: Duration) -> Self {
        self.threshold_ns = Some(threshold_nanos(threshold));
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

    #[inline(never)]
    async fn yield_in_a_known_function() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    fn recorded_with(name: &str) -> Vec<Vec<i64>> {
        crate::profiles::contention_leaves(Kind::Block)
            .into_iter()
            .filter(|(leaf, _)| leaf.ends_with(name))
            .map(|(_, values)| values)
            .collect()
    }

    /// The `(contentions, delay)` of every recorded block stack with a frame
    /// named `name`, summed.
    fn charged_to(name: &str) -> [i64; 2] {
        crate::profiles::contention_stacks(Kind::Block)
            .into_iter()
            .filter(|(names, _)| names.iter().any(|n| n.ends_with(name)))
            .fold([0, 0], |acc, (_, v)| [acc[0] + v[0], acc[1] + v[1]])
    }

    fn runtime(workers: usize) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_long_poll_is_recorded_with_the_blocking_call_on_top() {
        runtime(1).block_on(async {
            tokio::spawn(watch_polls(async {
                block_the_worker_in_a_known_function(Duration::from_millis(300));
            }))
            .await
            .expect("task");
            // Short polls are not recorded.
            tokio::spawn(watch_polls(yield_in_a_known_function()))
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
        assert_eq!(
            charged_to("watch::tests::yield_in_a_known_function::{{closure}}"),
            [0, 0],
            "a short poll was recorded"
        );
    }

    #[inline(never)]
    fn compute_for_a_while(how_long: Duration) -> u64 {
        let start = std::time::Instant::now();
        let mut x = std::hint::black_box(1u64);
        while start.elapsed() < how_long {
            for _ in 0..1000 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            }
        }
        std::hint::black_box(x)
    }

    #[inline(never)]
    fn then_sleep_in_another_function(how_long: Duration) {
        std::thread::sleep(how_long);
    }

    #[test]
    fn a_long_poll_is_charged_to_each_stack_for_the_time_it_was_seen() {
        runtime(1).block_on(async {
            tokio::spawn(watch_polls(async {
                compute_for_a_while(Duration::from_millis(50));
                then_sleep_in_another_function(Duration::from_millis(200));
            }))
            .await
            .expect("task");
        });
        let [_, computing] = charged_to("watch::tests::compute_for_a_while");
        let [count, sleeping] = charged_to("watch::tests::then_sleep_in_another_function");
        // Was: the whole 250 ms on the stack seen first (computing), none
        // on the sleep. Now about 50/200; generous bounds for a loaded box.
        assert!(
            (10_000_000..150_000_000).contains(&computing),
            "computing {computing} ns, sleeping {sleeping} ns"
        );
        assert!(
            (150_000_000..1_000_000_000).contains(&sleeping),
            "computing {computing} ns, sleeping {sleeping} ns"
        );
        assert_eq!(count, 1, "one poll, one event, counted where it mostly was");
    }

    #[inline(never)]
    async fn short_polls_while_a_capture_waits(stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_micros(500));
            tokio::task::yield_now().await;
        }
    }

    #[inline(never)]
    fn a_long_poll_beside_a_waiting_capture(how_long: Duration) {
        std::thread::sleep(how_long);
    }

    #[test]
    fn short_polls_stay_short_while_a_capture_waits_for_a_worker() {
        let stop = Arc::new(AtomicBool::new(false));
        runtime(3).block_on(async {
            let short = {
                let stop = stop.clone();
                tokio::spawn(watch_polls(async move {
                    short_polls_while_a_capture_waits(&stop).await;
                }))
            };
            // Long polls of a worker that has the signal blocked: each
            // capture of it waits its whole timeout.
            let blocked = tokio::spawn(async {
                for _ in 0..4 {
                    tokio::spawn(watch_polls(async {
                        crate::signals::with_thread_signal_blocked(|| {
                            std::thread::sleep(Duration::from_millis(200));
                        });
                    }))
                    .await
                    .expect("task");
                }
            });
            // Meanwhile a long poll on another worker, which the watchdog
            // must catch: it is watching, not stalled or idle, all along.
            // (block_on's thread is not a worker: sleeping here holds none.)
            std::thread::sleep(Duration::from_millis(100));
            tokio::spawn(watch_polls(async {
                a_long_poll_beside_a_waiting_capture(Duration::from_millis(300));
            }))
            .await
            .expect("task");
            blocked.await.expect("task");
            stop.store(true, Ordering::Relaxed);
            short.await.expect("task");
        });
        let [count, delay] = charged_to("watch::tests::a_long_poll_beside_a_waiting_capture");
        assert_eq!(
            count, 1,
            "the long poll beside the waiting captures was not recorded"
        );
        assert!(
            (250_000_000..2_000_000_000).contains(&delay),
            "the long poll was charged {delay} ns"
        );
        assert_eq!(
            charged_to("watch::tests::short_polls_while_a_capture_waits::{{closure}}"),
            [0, 0],
            "a 0.5 ms poll was taken for a long one"
        );
    }

    #[test]
    fn a_zero_threshold_is_raised_to_a_millisecond() {
        // (The process-wide setter goes through the same function; not
        // called here, as other tests run with the default meanwhile.)
        assert_eq!(threshold_nanos(Duration::ZERO), 1_000_000);
        assert_eq!(threshold_nanos(Duration::from_micros(10)), 1_000_000);
        assert_eq!(threshold_nanos(Duration::from_millis(20)), 20_000_000);
        let watched = watch_polls(async {}).threshold(Duration::ZERO);
        assert_eq!(watched.threshold_ns, Some(1_000_000));
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
        // The task's end wakes `block_on` before its worker runs the
        // after-poll hook that records the poll: let the workers finish.
        drop(runtime);
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
