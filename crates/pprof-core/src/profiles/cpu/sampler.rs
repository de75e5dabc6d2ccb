//! The one CPU sampler of the process, shared by every CPU profile that
//! runs: it starts with the first, gives each its own window, and stops
//! when the last one leaves.
//!
//! A manager thread (`pprof-cpu`) runs while the sampler does. Every
//! [`DRAIN_EVERY`] it drains the signal handler's buffer into the open
//! windows (each tick goes to every window open at its time), and every
//! scan interval it lists the process's threads and gives each new one its
//! own CPU timer (deleting those of threads gone, and those whose thread
//! ended though a new one has its id). The scan interval is
//! [`SCAN_MIN`], or longer in a process with so many threads that listing
//! them costs more than a fiftieth of the interval (at most [`SCAN_MAX`]).
//! The manager, not the requests, stops the timers, so a runtime that is
//! shutting down cannot leave them running.
//!
//! # Every tick counted
//!
//! A window's samples add up to the CPU the kernel counted for the process
//! while it was open. What the timers could not sample is still there,
//! from the kernel's CPU clocks, under a frame that says why
//! ([`Missing`]): the ticks a thread's timer had expired for but the
//! kernel had not yet delivered when the window closed (it checks CPU
//! timers at its scheduler tick, so a thread that runs in bursts shorter
//! than one gets its ticks late), the CPU a thread used before the scan
//! that gave it its timer, that of threads the kernel refused a timer,
//! and the rest: threads that started and ended between two scans. The
//! profile's comments give each share.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::error::Error;
use crate::format::Missing;
use crate::jemalloc;
use crate::labels::{self, Labels, MAX_SETS_PER_PROFILE, overflow_labels};
use crate::signals::cpu::{
    self as timers, Armed, Buffer, ProcessTimer, ThreadTimer, Tick, monotonic_ns, process_cpu_ns,
    thread_cpu_ns,
};
use crate::signals::{MAX_FRAMES, Outcome, fork};

/// How often the manager empties the handler's buffer.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// Bounds of the thread-scan interval.
const SCAN_MIN: Duration = Duration::from_millis(50);
const SCAN_MAX: Duration = Duration::from_millis(500);
/// The buffer holds this long of ticks at full rate (the manager drains
/// it forty times as often).
const BUFFER_SPAN: Duration = Duration::from_millis(400);
/// Bounds of the buffer, in ticks (one tick is about 1.1 KiB).
const MIN_SLOTS: usize = 256;
pub(super) const MAX_SLOTS: usize = 8192;
/// The longest a closing window waits for the ticks the kernel owes it.
const MAX_GRACE: Duration = Duration::from_millis(250);
/// Distinct (stack, thread, labels) keys one window keeps; further ticks
/// on new keys go to one [`Missing::TooManyStacks`] sample.
const MAX_KEYS: usize = 16_384;

/// What one sample is told apart by: its stack, its thread's name, its labels.
pub(super) type Key = (Box<[u64]>, Arc<str>, Labels);

/// One CPU profile's share of the sampler.
#[derive(Debug)]
pub(super) struct Window {
    id: u64,
    start: u64,
    pub(super) started: SystemTime,
    pub(super) hz: u32,
    /// Ticks (in periods) per key.
    pub(super) ticks: HashMap<Key, u64>,
    /// What the sampler could not do while this window was open.
    pub(super) notes: Vec<String>,
    /// The distinct label sets it holds (at most [`MAX_SETS_PER_PROFILE`]).
    label_sets: HashSet<Labels>,
    pub(super) duration: Duration,
    /// Per timed thread: its timer's expirations not yet delivered when the
    /// window opened (they count for the CPU before it).
    undelivered_at_start: HashMap<i32, u64>,
    /// CPU (ns) no timer sampled, by reason and thread name.
    unsampled: HashMap<(Missing, Arc<str>), u64>,
    /// The process's CPU clock when the window opened, and when it closed.
    process_cpu_at_start: u64,
    process_cpu_at_end: u64,
    /// Once closed: per thread, the ticks the kernel still owes the window
    /// (its timer expired before the close); late ticks of those threads
    /// come here, up to that many, and no other tick does.
    owed: Option<HashMap<i32, u64>>,
    /// Of the sampled ticks, those that came after the close.
    late: u64,
}

struct Running {
    /// Which start this is: a manager thread serves only its own.
    generation: u64,
    hz: u32,
    period: Duration,
    period_ns: u64,
    slots: usize,
    armed: Armed,
    timers: HashMap<i32, Timed>,
    /// Threads the kernel refused a timer: why, whether the process-wide
    /// timer samples them (else their CPU is counted without stacks), and
    /// their CPU clock when last read.
    refused: HashMap<i32, Refused>,
    /// Samples the refused threads; runs only while there are some.
    process_timer: Option<ProcessTimer>,
    /// Why the process-wide timer could not start, if it could not.
    process_timer_failed: Option<String>,
    windows: Vec<Window>,
    names: HashMap<i32, Arc<str>>,
    last_scan: Instant,
    scan_every: Duration,
    /// Scans so far: threads found by the first one predate the sampler.
    scans: u64,
    /// Why the last listing of the threads failed, if it did (the timers
    /// are kept as they were; each open window says so).
    listing_failed: Option<String>,
    lost_seen: u64,
    next_id: u64,
}

/// A thread the kernel refused a timer of its own.
struct Refused {
    why: String,
    /// Whether the process-wide timer samples it.
    sampled: bool,
    /// Its CPU clock when last read (for those not sampled).
    cpu_seen: u64,
}

/// A thread's timer and how many of its expirations handlers recorded.
struct Timed {
    timer: ThreadTimer,
    delivered: u64,
}

static SAMPLER: Mutex<Option<Running>> = Mutex::new(None);

fn sampler() -> MutexGuard<'static, Option<Running>> {
    SAMPLER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A window of the sampler, open until finished or dropped (the request
/// went away: its window closes, the others go on).
#[derive(Debug)]
pub(super) struct Subscription {
    id: u64,
    open: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.open
            && let Some(running) = sampler().as_mut()
        {
            running.windows.retain(|w| w.id != self.id);
        }
    }
}

/// Open a window at `hz`, starting the sampler if none runs. Refused when
/// `max` windows are open already, or the sampler runs at another rate.
/// Blocking (the first one creates a timer per thread).
pub(super) fn subscribe(hz: u32, max: usize) -> Result<Subscription, Error> {
    let mut guard = sampler();
    if guard
        .as_ref()
        .is_some_and(|r| r.windows.is_empty() && r.hz != hz)
    {
        // Idle but not yet stopped by its manager: stop it now for the new rate.
        let idle = guard.take();
        jemalloc::unsampled(|| drop(idle));
    }
    if let Some(running) = guard.as_ref() {
        if running.hz != hz {
            return Err(Error::CpuRateBusy {
                running_hz: running.hz,
            });
        }
        if running.windows.len() >= max {
            return Err(Error::CpuProfilerBusy);
        }
    } else {
        *guard = Some(jemalloc::unsampled(|| start(hz))?);
    }
    let running = guard.as_mut().ok_or(Error::CpuProfilerBusy)?;
    // Ticks still in the buffer from before this moment belong to others.
    running.drain();
    running.next_id += 1;
    let id = running.next_id;
    let undelivered_at_start = running.undelivered();
    running.windows.push(Window {
        id,
        start: monotonic_ns(),
        started: SystemTime::now(),
        hz,
        ticks: HashMap::new(),
        notes: Vec::new(),
        label_sets: HashSet::new(),
        duration: Duration::ZERO,
        undelivered_at_start,
        unsampled: HashMap::new(),
        process_cpu_at_start: process_cpu_ns(),
        process_cpu_at_end: 0,
        owed: None,
        late: 0,
    });
    Ok(Subscription { id, open: true })
}

impl Subscription {
    /// Close the window: everything sampled until now, and what could not
    /// be. Blocking: the ticks the kernel owes the window (expired before
    /// its end, not yet delivered) are waited for a little while
    /// ([`owed_grace`]); those that do not come count as such.
    pub(super) fn finish(mut self) -> Result<Window, Error> {
        self.open = false;
        let grace = {
            let mut guard = sampler();
            let running = guard.as_mut().ok_or_else(gone)?;
            running.drain();
            running.count_refused();
            let undelivered = running.undelivered();
            let window = running.window(self.id)?;
            window.duration = Duration::from_nanos(monotonic_ns().saturating_sub(window.start));
            window.process_cpu_at_end = process_cpu_ns();
            window.owed = Some(
                undelivered
                    .into_iter()
                    .filter_map(|(tid, now)| {
                        let before = window.undelivered_at_start.get(&tid).copied().unwrap_or(0);
                        (now > before).then(|| (tid, now - before))
                    })
                    .collect(),
            );
            owed_grace(window.duration)
        };
        // Late ticks come with the kernel's next scheduler tick on a thread
        // that runs; the manager drains meanwhile.
        let waiting = Instant::now();
        while waiting.elapsed() < grace {
            std::thread::sleep(DRAIN_EVERY);
            let mut guard = sampler();
            let running = guard.as_mut().ok_or_else(gone)?;
            running.drain();
            if running
                .window(self.id)?
                .owed
                .as_ref()
                .is_none_or(|owed| owed.values().all(|&n| n == 0))
            {
                break;
            }
        }
        let mut guard = sampler();
        let running = guard.as_mut().ok_or_else(gone)?;
        running.drain();
        let at = running
            .windows
            .iter()
            .position(|w| w.id == self.id)
            .ok_or_else(gone_window)?;
        let names = &mut running.names;
        let mut window = running.windows.swap_remove(at);
        window.close(names, running.period_ns);
        window.notes.extend(running.notes());
        Ok(window)
    }
}

/// How long a closing window waits for the ticks owed it: a tenth of its
/// length, at most [`MAX_GRACE`].
fn owed_grace(window: Duration) -> Duration {
    (window / 10).min(MAX_GRACE)
}

fn gone() -> Error {
    Error::Profiler("the CPU sampler stopped before the profile ended".to_owned())
}

fn gone_window() -> Error {
    Error::Profiler("the CPU profile's window is gone".to_owned())
}

/// How many CPU profiles are running now (the index page's count).
pub(super) fn open_windows() -> usize {
    sampler().as_ref().map_or(0, |r| r.windows.len())
}

/// Across a fork: the sampler's lock is held, so the child gets it free;
/// there the running sampler is the parent's (its timers, its buffer, its
/// windows): forgotten, never dropped, so nothing of the child's is deleted.
fn across_fork(phase: fork::Phase) {
    thread_local! {
        static HELD: std::cell::RefCell<Option<MutexGuard<'static, Option<Running>>>> =
            const { std::cell::RefCell::new(None) };
    }
    match phase {
        fork::Phase::Before => HELD.with(|h| *h.borrow_mut() = Some(sampler())),
        fork::Phase::Parent => HELD.with(|h| drop(h.borrow_mut().take())),
        fork::Phase::Child => {
            if let Some(mut guard) = HELD.with(|h| h.borrow_mut().take()) {
                std::mem::forget(guard.take());
            }
        }
    }
}

fn start(hz: u32) -> Result<Running, Error> {
    fork::register(Some(across_fork));
    static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let generation = GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    timers::install()?;
    let period_ns = 1_000_000_000 / u64::from(hz.max(1));
    let period = Duration::from_nanos(period_ns);
    let slots = buffer_slots(hz, thread_ids().map_or(1, |t| t.len()));
    #[cfg(test)]
    let slots = match tests::SLOTS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => slots,
        fixed => fixed,
    };
    let armed = Buffer::new(slots, period).arm()?;
    let mut running = Running {
        generation,
        hz,
        period,
        period_ns,
        slots,
        armed,
        timers: HashMap::new(),
        refused: HashMap::new(),
        process_timer: None,
        process_timer_failed: None,
        windows: Vec::new(),
        names: HashMap::new(),
        last_scan: Instant::now(),
        scan_every: SCAN_MIN,
        scans: 0,
        listing_failed: None,
        lost_seen: 0,
        next_id: 0,
    };
    running.scan();
    std::thread::Builder::new()
        .name("pprof-cpu".to_owned())
        .spawn(move || manage(generation))
        .map_err(|e| Error::Profiler(format!("cannot start the CPU sampler's thread: {e}")))?;
    Ok(running)
}

/// Ticks the buffer holds: [`BUFFER_SPAN`] of ticks from every thread that
/// can run at once (a thread off-CPU uses no CPU time, so at most one per
/// CPU ticks), within [`MIN_SLOTS`]..=[`MAX_SLOTS`].
pub(super) fn buffer_slots(hz: u32, threads: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let running = threads.clamp(1, cpus);
    let per_thread = u128::from(hz) * BUFFER_SPAN.as_millis() / 1000;
    usize::try_from(per_thread)
        .unwrap_or(usize::MAX)
        .saturating_mul(running)
        .clamp(MIN_SLOTS, MAX_SLOTS)
}

/// Live thread ids of this process, or why they could not be listed (out
/// of file descriptors, say).
fn thread_ids() -> std::io::Result<HashSet<i32>> {
    let dir = std::fs::read_dir("/proc/self/task")?;
    let mut tids = HashSet::new();
    for entry in dir {
        if let Some(tid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            tids.insert(tid);
        }
    }
    Ok(tids)
}

/// The manager thread of the sampler's `generation`-th start: drain,
/// rescan, and stop the sampler once the last window has closed.
fn manage(generation: u64) {
    loop {
        std::thread::sleep(DRAIN_EVERY);
        let mut guard = sampler();
        let Some(running) = guard.as_mut().filter(|r| r.generation == generation) else {
            return;
        };
        if running.windows.is_empty() {
            // Dropping it stops the timers, unpublishes and frees the buffer.
            let stopped = guard.take();
            jemalloc::unsampled(|| drop(stopped));
            drop(guard);
            jemalloc::release_free_memory();
            return;
        }
        running.drain();
        if running.last_scan.elapsed() >= running.scan_every {
            running.scan();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Timers first, so no new tick comes; the buffer (`armed`) is
        // freed after them, once no handler is inside.
        self.process_timer = None;
        self.timers.clear();
    }
}

impl Running {
    /// Give each new thread its timer; delete the timers of threads gone.
    /// A listing that fails changes nothing (and says so in the profiles).
    fn scan(&mut self) {
        let started = Instant::now();
        let live = match thread_ids() {
            Ok(live) => {
                self.listing_failed = None;
                live
            }
            Err(e) => {
                let why = format!(
                    "a listing of the threads failed ({e}): the timers were kept as they were, threads started meanwhile waited for the next listing"
                );
                for window in self.windows.iter_mut().filter(|w| w.owed.is_none()) {
                    if !window.notes.contains(&why) {
                        window.notes.push(why.clone());
                    }
                }
                self.listing_failed = Some(e.to_string());
                self.last_scan = Instant::now();
                return;
            }
        };
        let first = self.scans == 0;
        self.scans += 1;
        // A timer whose thread ended goes, even when a new thread already
        // has its id: the new one gets a timer of its own below.
        let names = &mut self.names;
        self.timers.retain(|tid, timed| {
            let keep = live.contains(tid) && !timed.timer.thread_gone();
            if !keep {
                names.remove(tid);
            }
            keep
        });
        let armed = &self.armed;
        self.refused.retain(|tid, refused| {
            let keep = live.contains(tid);
            if !keep && refused.sampled {
                armed.forget_refused(*tid);
            }
            keep
        });
        self.names.retain(|tid, _| live.contains(tid));
        let mut new_threads = false;
        for &tid in &live {
            if self.timers.contains_key(&tid) || self.refused.contains_key(&tid) {
                continue;
            }
            new_threads = true;
            match ThreadTimer::start(tid, self.period) {
                Ok(timer) => {
                    // A thread the first scan found ran before the sampler;
                    // any later one started since the last scan, and ran
                    // until now unsampled.
                    if !first {
                        self.unsampled(Missing::BeforeTimer, tid, timer.cpu_at_start());
                    }
                    self.timers.insert(
                        tid,
                        Timed {
                            timer,
                            delivered: 0,
                        },
                    );
                }
                Err(e) => {
                    let cpu = thread_cpu_ns(Some(tid));
                    if !first {
                        self.unsampled(Missing::BeforeTimer, tid, cpu);
                    }
                    let sampled = self.armed.refuse(tid, cpu);
                    self.refused.insert(
                        tid,
                        Refused {
                            why: e.to_string(),
                            sampled,
                            cpu_seen: cpu,
                        },
                    );
                }
            }
        }
        self.count_refused();
        self.process_timer_while_refused();
        // New threads have new stacks for the unwinder to know.
        crate::signals::refresh_unwinder(new_threads);
        let cost = started.elapsed();
        self.scan_every = (cost * 50).clamp(SCAN_MIN, SCAN_MAX);
        self.last_scan = Instant::now();
    }

    /// Charge `cpu_ns` of thread `tid`'s CPU, which no timer sampled, to
    /// every open window under `why`.
    fn unsampled(&mut self, why: Missing, tid: i32, cpu_ns: u64) {
        if cpu_ns == 0 || self.windows.is_empty() {
            return;
        }
        let name = self
            .names
            .entry(tid)
            .or_insert_with(|| thread_name(tid))
            .clone();
        for window in self.windows.iter_mut().filter(|w| w.owed.is_none()) {
            *window.unsampled.entry((why, name.clone())).or_insert(0) += cpu_ns;
        }
    }

    /// Charge the CPU the refused threads that no timer samples used since
    /// their last reading.
    fn count_refused(&mut self) {
        let tids: Vec<i32> = self
            .refused
            .iter()
            .filter(|(_, r)| !r.sampled)
            .map(|(&tid, _)| tid)
            .collect();
        for tid in tids {
            let now = thread_cpu_ns(Some(tid));
            let Some(refused) = self.refused.get_mut(&tid) else {
                continue;
            };
            let used = now.saturating_sub(refused.cpu_seen);
            refused.cpu_seen = now.max(refused.cpu_seen);
            self.unsampled(Missing::NoTimer, tid, used);
        }
    }

    /// The process-wide timer runs while some refused thread needs it.
    fn process_timer_while_refused(&mut self) {
        let needed = self.refused.values().any(|r| r.sampled);
        if !needed {
            self.process_timer = None;
        } else if self.process_timer.is_none() {
            match ProcessTimer::start(self.period) {
                Ok(timer) => self.process_timer = Some(timer),
                Err(e) => self.process_timer_failed = Some(e.to_string()),
            }
        }
    }

    /// Per timed thread, its timer's expirations not yet delivered to a
    /// handler (the buffer drained first).
    fn undelivered(&self) -> HashMap<i32, u64> {
        let timed = self.timers.iter().map(|(&tid, timed)| {
            let due = timed.timer.expirations_at(thread_cpu_ns(Some(tid)));
            (tid, due.saturating_sub(timed.delivered))
        });
        // A refused thread is owed the whole periods of its CPU that the
        // process-wide timer's ticks have not counted yet.
        let refused = self.refused.keys().filter_map(|&tid| {
            let accounted = self.armed.refused_accounted(tid)?;
            let cpu = thread_cpu_ns(Some(tid));
            Some((tid, cpu.saturating_sub(accounted) / self.period_ns))
        });
        timed.chain(refused).filter(|&(_, n)| n > 0).collect()
    }

    /// Move every recorded tick into the windows open at its time.
    fn drain(&mut self) {
        let (armed, windows, names, timers) = (
            &self.armed,
            &mut self.windows,
            &mut self.names,
            &mut self.timers,
        );
        armed.drain(|tick| {
            if let Some(timed) = timers.get_mut(&tick.tid) {
                timed.delivered += u64::from(tick.weight);
            }
            let key = key_of(tick, names);
            for window in windows.iter_mut().filter(|w| w.start <= tick.time) {
                let weight = match window.owed.as_mut() {
                    None => u64::from(tick.weight),
                    // Closed: only what the kernel owed it, late.
                    Some(owed) => match owed.get_mut(&tick.tid) {
                        Some(n) => {
                            let late = (*n).min(u64::from(tick.weight));
                            *n -= late;
                            late
                        }
                        None => 0,
                    },
                };
                if weight > 0 {
                    if window.owed.is_some() {
                        window.late += weight;
                    }
                    window.add(key.clone(), weight);
                }
            }
        });
        let lost = self.armed.lost();
        let new_losses = lost - self.lost_seen;
        self.lost_seen = lost;
        if new_losses > 0 {
            let key: Key = (
                Box::new([Missing::BufferFull.pc()]),
                Arc::from(""),
                Labels::none(),
            );
            for window in windows.iter_mut().filter(|w| w.owed.is_none()) {
                window.add(key.clone(), new_losses);
            }
        }
    }

    /// The open or closing window `id`.
    fn window(&mut self, id: u64) -> Result<&mut Window, Error> {
        self.windows
            .iter_mut()
            .find(|w| w.id == id)
            .ok_or_else(gone_window)
    }

    /// The sampler's own counts, for the profile's comments.
    fn notes(&self) -> Vec<String> {
        let (ticks, mean_ns) = self.armed.handler_cost();
        let mut notes = vec![
            format!(
                "pprof-core CPU sampler: {} threads with their own CPU timer at {} Hz, buffer of {} ticks ({} KiB)",
                self.timers.len(),
                self.hz,
                self.slots,
                self.armed.bytes() / 1024
            ),
            format!(
                "signal handler: {mean_ns} ns per recorded tick (mean of {ticks} since the sampler started; median about {} ns); unwind tables copied from libraries: {} KiB",
                self.armed.handler_median_ns(),
                crate::signals::code::copied_bytes() / 1024
            ),
        ];
        if !self.refused.is_empty() {
            let mut why: Vec<&str> = self.refused.values().map(|r| r.why.as_str()).collect();
            why.sort_unstable();
            why.dedup();
            let sampled = self.refused.values().filter(|r| r.sampled).count();
            notes.push(format!(
                "{} threads had no timer of their own ({}): {sampled} were sampled by the process-wide timer, the CPU of the others counts under {}",
                self.refused.len(),
                why.join("; "),
                Missing::NoTimer.name()
            ));
        }
        if let Some(why) = &self.process_timer_failed {
            notes.push(format!("the process-wide timer could not start: {why}"));
        }

        if self.lost_seen > 0 {
            notes.push(format!(
                "{} ticks found the buffer full since the sampler started; they count under {}",
                self.lost_seen,
                Missing::BufferFull.name()
            ));
        }
        notes
    }
}

impl Window {
    fn add(&mut self, mut key: Key, ticks: u64) {
        if !key.2.is_empty() && !self.label_sets.contains(&key.2) {
            if self.label_sets.len() < MAX_SETS_PER_PROFILE {
                self.label_sets.insert(key.2.clone());
            } else {
                labels::count_overflow();
                key.2 = overflow_labels();
            }
        }
        if let Some(count) = self.ticks.get_mut(&key) {
            *count += ticks;
        } else if self.ticks.len() < MAX_KEYS {
            self.ticks.insert(key, ticks);
        } else {
            // One sample for all of them: neither thread nor labels, so the
            // overflow cannot itself grow with them.
            let overflow: Key = (
                Box::new([Missing::TooManyStacks.pc()]),
                Arc::from(""),
                Labels::none(),
            );
            *self.ticks.entry(overflow).or_insert(0) += ticks;
        }
    }

    /// At the close: add what the timers could not sample, so the window's
    /// samples add up to the CPU the kernel counted for the process while it
    /// was open, and say how much of it is which.
    fn close(&mut self, names: &mut HashMap<i32, Arc<str>>, period_ns: u64) {
        let mut added: Vec<(Missing, u64)> = Vec::new();
        let mut in_flight: HashMap<Arc<str>, u64> = HashMap::new();
        for (tid, owed) in self.owed.take().unwrap_or_default() {
            if owed > 0 {
                let name = names.entry(tid).or_insert_with(|| thread_name(tid)).clone();
                *in_flight.entry(name).or_insert(0) += owed;
            }
        }
        let sampled: u64 = self.ticks.values().sum();
        for (name, ticks) in in_flight {
            self.add_missing(Missing::TickInFlight, name, ticks, &mut added);
        }
        for ((why, name), ns) in std::mem::take(&mut self.unsampled) {
            let ticks = (ns + period_ns / 2) / period_ns;
            self.add_missing(why, name, ticks, &mut added);
        }
        let accounted: u64 = self.ticks.values().sum();
        let used_ns = self
            .process_cpu_at_end
            .saturating_sub(self.process_cpu_at_start);
        let used = (used_ns + period_ns / 2) / period_ns;
        self.add_missing(
            Missing::ThreadsGone,
            Arc::from(""),
            used.saturating_sub(accounted),
            &mut added,
        );
        let mut parts: Vec<String> = added
            .iter()
            .map(|(why, ticks)| format!("{ticks} under {}", why.name()))
            .collect();
        if parts.is_empty() {
            parts.push("none".to_owned());
        }
        self.notes.push(format!(
            "every tick counted: the process used {used} periods of CPU while the window was open; {sampled} were sampled with their stacks ({} of them delivered by the kernel after the close), and of the rest {}",
            self.late,
            parts.join(", ")
        ));
    }

    fn add_missing(
        &mut self,
        why: Missing,
        thread: Arc<str>,
        ticks: u64,
        added: &mut Vec<(Missing, u64)>,
    ) {
        if ticks == 0 {
            return;
        }
        self.add((Box::new([why.pc()]), thread, Labels::none()), ticks);
        match added.iter_mut().find(|(w, _)| *w == why) {
            Some((_, n)) => *n += ticks,
            None => added.push((why, ticks)),
        }
    }
}

/// A tick's key: lookup addresses (the leaf exact, callers one byte back
/// into their call), a reason frame if the stack is short, and the thread's name.
fn key_of(tick: &Tick<'_>, names: &mut HashMap<i32, Arc<str>>) -> Key {
    let mut pcs: Vec<u64> = Vec::with_capacity(tick.pcs.len().min(MAX_FRAMES) + 1);
    pcs.extend(
        tick.pcs
            .iter()
            .enumerate()
            .map(|(i, &pc)| if i == 0 { pc } else { pc.saturating_sub(1) })
            .filter(|&pc| pc != 0),
    );
    pcs.extend(missing_for(tick.outcome).map(Missing::pc));
    let name = names
        .entry(tick.tid)
        .or_insert_with(|| thread_name(tick.tid))
        .clone();
    (
        pcs.into_boxed_slice(),
        name,
        Labels::from_set(tick.labels.clone()),
    )
}

/// The frame that says why a walk stopped short, if it did.
fn missing_for(outcome: Outcome) -> Option<Missing> {
    match outcome {
        Outcome::Whole => None,
        Outcome::Truncated => Some(Missing::Truncated),
        Outcome::Busy => Some(Missing::UnwinderBusy),
        Outcome::UnknownStack => Some(Missing::UnknownStack),
        Outcome::UnknownCode => Some(Missing::UnknownCode),
        Outcome::OutsideStack => Some(Missing::OutsideStack),
        Outcome::NoProgress => Some(Missing::NoProgress),
        Outcome::Unsupported => Some(Missing::Unsupported),
    }
}

/// A thread's name (`comm`), or its id when it has none or is gone.
fn thread_name(tid: i32) -> Arc<str> {
    let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default();
    if name.is_empty() {
        Arc::from(tid.to_string())
    } else {
        Arc::from(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer size for the next start, when not 0 (to fill it in a test).
    pub(super) static SLOTS: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    #[test]
    fn the_buffer_grows_with_rate_and_running_threads_within_its_bounds() {
        assert_eq!(buffer_slots(1, 1), MIN_SLOTS);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(
            buffer_slots(1000, 1000),
            (400 * cpus).clamp(MIN_SLOTS, MAX_SLOTS),
            "threads beyond the CPUs do not tick at once"
        );
        assert_eq!(buffer_slots(1000, 1 << 20), buffer_slots(1000, cpus));
        assert!(buffer_slots(u32::MAX, 1 << 20) <= MAX_SLOTS);
    }

    /// This thread's CPU time so far, in clock ticks (1/100 s).
    fn own_cpu_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        field(11) + field(12)
    }

    /// Burn until this thread has used `cpu_ticks` of CPU time (however
    /// long a loaded machine takes to give it that).
    #[inline(never)]
    fn burn_while_the_manager_is_held(cpu_ticks: u64) -> u64 {
        let start = own_cpu_ticks();
        let mut x = std::hint::black_box(1u64);
        while own_cpu_ticks() < start + cpu_ticks {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            }
        }
        x
    }

    /// The unit tests that run the sampler run one at a time.
    fn one_sampler_test_at_a_time() -> MutexGuard<'static, ()> {
        static ONE: Mutex<()> = Mutex::new(());
        ONE.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// While the manager cannot
    /// drain, two busy threads at 1000 Hz fill the buffer: the ticks that
    /// found it full are one sample under [`Missing::BufferFull`], and the
    /// totals still count every tick.
    #[test]
    fn ticks_that_find_the_buffer_full_are_counted_under_a_named_frame() {
        let _one = one_sampler_test_at_a_time();
        // The burners exist before the sampler starts, so each gets its own
        // timer (up to one signal per kernel tick each); they burn once the
        // manager is held.
        let go = std::sync::Arc::new(std::sync::Barrier::new(3));
        let burners: Vec<_> = (0..2)
            .map(|_| {
                let go = go.clone();
                std::thread::spawn(move || {
                    go.wait();
                    burn_while_the_manager_is_held(120)
                })
            })
            .collect();
        SLOTS.store(64, std::sync::atomic::Ordering::Relaxed);
        let window = subscribe(1000, 4).expect("sampler starts");
        SLOTS.store(0, std::sync::atomic::Ordering::Relaxed);
        // 1.2 s of CPU each at 1000 Hz: 2400 ticks, while no drain runs.
        let held = sampler();
        go.wait();
        for b in burners {
            let _ = b.join();
        }
        drop(held);
        let window = window.finish().expect("window");
        let full: u64 = window
            .ticks
            .iter()
            .filter(|((pcs, _, _), _)| pcs.first() == Some(&Missing::BufferFull.pc()))
            .map(|(_, ticks)| ticks)
            .sum();
        let slots = buffer_slots(1000, 2) as u64;
        let all: u64 = window.ticks.values().sum();
        let mut by_thread: HashMap<&str, (u64, u64, u64)> = HashMap::new();
        for ((_, thread, _), ticks) in &window.ticks {
            let e = by_thread.entry(thread).or_insert((0, 0, 0));
            e.0 += ticks;
            e.1 += 1;
            e.2 = e.2.max(*ticks);
        }
        eprintln!("{by_thread:?}");
        let manager: Vec<_> = window
            .ticks
            .iter()
            .filter(|((_, t, _), _)| &**t == "pprof-cpu")
            .take(3)
            .collect();
        for ((pcs, _, _), n) in manager {
            let resolved = crate::symbols::symbolizer().resolve_all(pcs.iter().copied());
            let names: Vec<String> = pcs
                .iter()
                .filter_map(|pc| resolved.get(pc))
                .flat_map(|f| f.iter().map(|f| f.name.to_string()))
                .collect();
            eprintln!("{n}: {names:?}");
        }
        assert!(full > 0, "no tick found the buffer full: {all} ticks");
        // Every tick counts: the buffer's ticks and the lost ones together
        // are the CPU time used (2.4 s at 1 ms a tick), within sampling noise.
        assert!(
            (2000..2900).contains(&all),
            "{all} ticks in all, {full} lost, {slots} slots"
        );
        assert!(
            window
                .notes
                .iter()
                .any(|n| n.contains("found the buffer full")),
            "{:?}",
            window.notes
        );
        // The profile names it.
        let profile = super::super::to_profile(window);
        let names: Vec<String> = crate::format::symbolize(&profile)
            .iter()
            .flat_map(|s| {
                s.stack
                    .iter()
                    .flat_map(|(_, f)| f.iter().map(|f| f.name.to_string()))
            })
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n == "pprof_core::_LostStack_BufferFull")
        );
    }

    /// A child forked while the sampler runs inherits its state but not its
    /// timers, its manager or its other threads: it must neither delete
    /// timers of its own (ids start again in a new process) nor take the
    /// parent's windows for its own; it profiles itself.
    #[test]
    fn a_child_forked_while_the_sampler_runs_keeps_its_timers_and_samples_itself() {
        let _one = one_sampler_test_at_a_time();
        let parent = subscribe(1000, 4).expect("the parent's sampler");
        let status = crate::signals::fork::in_a_child(|| {
            let own = crate::signals::fork::OwnTimer::new();
            let Ok(window) = subscribe(100, 1) else {
                return 10;
            };
            let burner = std::thread::spawn(|| burn_while_the_manager_is_held(40));
            let _ = burner.join();
            let Ok(window) = window.finish() else {
                return 11;
            };
            let sampled: u64 = window
                .ticks
                .iter()
                .filter(|((pcs, _, _), _)| Missing::at(pcs[0]).is_none())
                .map(|(_, n)| n)
                .sum();
            // The child's sampler stops when its window closes; its timer
            // and the child's own must both have been its to delete or keep.
            std::thread::sleep(Duration::from_millis(100));
            match (own.exists(), sampled) {
                (false, _) => 12,
                (true, 0) => 13,
                _ => 0,
            }
        });
        drop(parent.finish());
        // The manager stops the idle sampler at its next round: the next
        // test starts its own.
        let stopping = Instant::now();
        while sampler().is_some() && stopping.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            status,
            Some(0),
            "10: the parent's sampler refused the child; 11: its window was lost; \
             12: the child's own timer was deleted; 13: the child sampled nothing"
        );
    }

    /// A window at 100 Hz with nothing in it yet.
    fn empty_window() -> Window {
        Window {
            id: 0,
            start: 0,
            started: SystemTime::now(),
            hz: 100,
            ticks: HashMap::new(),
            notes: Vec::new(),
            label_sets: HashSet::new(),
            duration: Duration::ZERO,
            undelivered_at_start: HashMap::new(),
            unsampled: HashMap::new(),
            process_cpu_at_start: 0,
            process_cpu_at_end: 0,
            owed: None,
            late: 0,
        }
    }

    #[test]
    fn a_window_keeps_at_most_its_bound_of_label_sets_and_counts_the_rest() {
        let mut window = empty_window();
        let before = labels::overflows();
        let thread: Arc<str> = Arc::from("t");
        for i in 0..(MAX_SETS_PER_PROFILE + 10) {
            let labels = Labels::new([("request.id", i.to_string())]);
            window.add((Box::new([100u64]), thread.clone(), labels), 1);
        }
        assert_eq!(window.label_sets.len(), MAX_SETS_PER_PROFILE);
        let overflow = (Box::new([100u64]) as Box<[u64]>, thread, overflow_labels());
        assert_eq!(window.ticks.get(&overflow), Some(&10));
        assert_eq!(
            window.ticks.values().sum::<u64>(),
            MAX_SETS_PER_PROFILE as u64 + 10
        );
        assert!(labels::overflows() >= before + 10);
    }

    #[test]
    fn a_full_window_counts_new_stacks_under_one_sample() {
        let mut window = empty_window();
        let thread: Arc<str> = Arc::from("t");
        for i in 0..(MAX_KEYS as u64 + 10) {
            window.add((Box::new([i + 100]), thread.clone(), Labels::none()), 2);
        }
        assert_eq!(window.ticks.len(), MAX_KEYS + 1);
        // Neither thread nor labels: the overflow is one sample however
        // many threads and label sets overflow.
        let overflow = (
            Box::new([Missing::TooManyStacks.pc()]) as Box<[u64]>,
            Arc::from(""),
            Labels::none(),
        );
        assert_eq!(window.ticks.get(&overflow), Some(&20));
        assert_eq!(
            window.ticks.values().sum::<u64>(),
            2 * (MAX_KEYS as u64 + 10)
        );
    }
}
