//! The CPU sampler's signal side: `SIGPROF` from a CPU-time timer on every
//! thread, the handler that records each tick, and the preallocated,
//! bounded, lock-free buffer it records into.
//!
//! # Timers
//!
//! Each thread gets a POSIX timer on its own CPU clock (`timer_create` on
//! the thread's `CLOCK_THREAD_CPUTIME_ID`-style clock with
//! `SIGEV_THREAD_ID`), as Go ≥ 1.18 does: the kernel signals that thread
//! after every `period` of CPU time it used, so a bursty thread is sampled
//! exactly as much as it ran. Each tick weighs 1 + the timer's overrun
//! count: the kernel checks CPU timers at its scheduler tick, so a thread
//! that runs in bursts shorter than one gets its ticks late, several
//! merged into one, and the overruns say how many.
//!
//! Each timer's first expiry is at a random point of its first period, so
//! the ticks a window counts are an unbiased estimate of the CPU its
//! threads used (a first expiry one whole period in would lose half a
//! period a thread on average: most of the CPU of a thread that runs a
//! few periods a window).
//!
//! The process-wide `ITIMER_PROF` runs only while the kernel has refused
//! some thread a timer of its own (past `RLIMIT_SIGPENDING`, which counts
//! each timer, per user): its ticks count for those threads alone, each
//! weighed by the whole periods of that thread's own CPU not yet counted.
//! It does not run otherwise, because on Linux a process-directed `SIGPROF`
//! loses the ticks of the per-thread timers of threads that run in short
//! bursts (0.11 to 0.92 of them, erratically, in a C program with eight
//! such threads and nothing else). A thread is sampled from the thread
//! scan that gives it its timer; what it ran before, and what threads that
//! came and went between two scans ran, is counted by the sampler from the
//! kernel's CPU clocks (`profiles/cpu/sampler.rs`), never silently dropped.
//!
//! # The handler
//!
//! [`on_sigprof`] saves `errno`, takes a tick only from our timers (told
//! apart by the value they carry; a stray `kill -PROF`, an `ITIMER_PROF`
//! or someone else's timer is ignored, and never kills the process), claims a
//! free slot of the armed [`Buffer`] with one compare-and-swap, writes the
//! thread id, the time, the tick's weight (1 + the timer's overruns), the
//! labels in force on the interrupted thread (one reference, see
//! [`super::labels`]) and the stack through the one
//! unwinding routine ([`super::unwind`]), then publishes the slot. It
//! allocates nothing and takes no lock. A tick that finds no free slot is
//! still counted ([`Buffer::lost`]). Aggregation, thread names,
//! symbolization and encoding happen on the reader's side.
//!
//! # Lifetime
//!
//! The buffer is published through one pointer; handlers announce
//! themselves in a counter before they read it. Disarming clears the
//! pointer, then waits until no handler is inside before the buffer is
//! freed, so a late tick never touches freed memory.

use std::sync::atomic::{
    AtomicI32, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::time::Duration;

use std::sync::Arc;

use super::handler;
use super::labels::LabelSet;
use super::unwind::{self, MAX_FRAMES, Outcome};
use crate::error::Error;

/// The value our thread timers carry in `sigev_value`, to tell their
/// ticks from anyone else's `SI_TIMER` signals.
const TIMER_MARK: usize = 0x7070_726f_6663_7075; // "pprofcpu"

/// A slot's life: free → writing (a handler claimed it) → ready → free.
const FREE: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// Slots a handler tries before it counts the tick as lost.
const PROBES: usize = 8;

/// One tick as a handler recorded it.
struct Slot {
    state: AtomicU8,
    outcome: AtomicU8,
    tid: AtomicI32,
    weight: AtomicU32,
    time: AtomicU64,
    /// A reference to the interrupted thread's labels (0: none).
    labels: AtomicUsize,
    len: AtomicUsize,
    /// Leaf first: the interrupted pc, then return addresses.
    pcs: [AtomicUsize; MAX_FRAMES],
}

impl Slot {
    fn new() -> Self {
        Self {
            state: AtomicU8::new(FREE),
            outcome: AtomicU8::new(0),
            tid: AtomicI32::new(0),
            weight: AtomicU32::new(0),
            time: AtomicU64::new(0),
            labels: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            pcs: std::array::from_fn(|_| AtomicUsize::new(0)),
        }
    }
}

/// One recorded tick, read back.
#[derive(Debug)]
pub(crate) struct Tick<'a> {
    pub(crate) tid: i32,
    /// `CLOCK_MONOTONIC` nanoseconds at the tick (see [`monotonic_ns`]).
    pub(crate) time: u64,
    /// Periods of CPU time this tick stands for (1 + timer overruns).
    pub(crate) weight: u32,
    /// The labels in force on the interrupted thread.
    pub(crate) labels: Option<Arc<LabelSet>>,
    pub(crate) outcome: Outcome,
    /// Raw addresses, leaf first: the leaf exact, the rest return addresses.
    pub(crate) pcs: &'a [u64],
}

/// Where handlers record ticks.
pub(crate) struct Buffer {
    slots: Box<[Slot]>,
    cursor: AtomicUsize,
    /// Ticks (weights) that found no free slot.
    lost: AtomicU64,
    /// Time spent recording ticks (claim to publish), and how many.
    handler_ns: AtomicU64,
    handler_ticks: AtomicU64,
    /// Ticks by how long recording them took, in [`DURATION_BUCKETS`]
    /// buckets of an eighth of an octave (a thread preempted inside its
    /// handler makes the mean large; the median stays honest).
    handler_durations: [AtomicU64; DURATION_BUCKETS],
    /// Threads refused a timer of their own: the process-wide timer's ticks
    /// count for them alone.
    refused: Box<[RefusedThread]>,
    period_ns: u64,
}

/// One thread refused a timer: its id (0: free, -1: its thread ended) and
/// the CPU time (ns of its own clock) its ticks have counted so far.
struct RefusedThread {
    tid: AtomicI32,
    accounted: AtomicU64,
}

/// Threads refused a timer that one run of the sampler samples with the
/// process-wide timer (beyond them, their CPU is counted without stacks).
const REFUSED: usize = 1024;

/// Buckets of handler durations: one per nanosecond below 16, then eight
/// per octave up to about 2^36 ns.
const DURATION_BUCKETS: usize = 16 + 33 * 8;

/// The bucket of a duration of `ns` nanoseconds.
fn duration_bucket(ns: u64) -> usize {
    if ns < 16 {
        return ns as usize;
    }
    let octave = 63 - ns.leading_zeros() as usize; // >= 4
    let eighth = ((ns >> (octave - 3)) & 7) as usize;
    (16 + (octave - 4) * 8 + eighth).min(DURATION_BUCKETS - 1)
}

/// The middle of a bucket's range.
fn bucket_middle(bucket: usize) -> u64 {
    if bucket < 16 {
        return bucket as u64;
    }
    let octave = (bucket - 16) / 8 + 4;
    let eighth = ((bucket - 16) % 8) as u64;
    let width = 1u64 << (octave - 3);
    (8 + eighth) * width + width / 2
}

/// The armed buffer handlers write into; null when no profile runs.
static ARMED: AtomicPtr<Buffer> = AtomicPtr::new(std::ptr::null_mut());
/// Handlers between announcing themselves and leaving.
static INSIDE: AtomicUsize = AtomicUsize::new(0);

impl Buffer {
    /// A buffer of `slots` ticks, for timers every `period`.
    pub(crate) fn new(slots: usize, period: Duration) -> Self {
        Self {
            refused: (0..REFUSED)
                .map(|_| RefusedThread {
                    tid: AtomicI32::new(0),
                    accounted: AtomicU64::new(0),
                })
                .collect(),
            period_ns: u64::try_from(period.as_nanos()).unwrap_or(u64::MAX).max(1),
            slots: (0..slots.max(1)).map(|_| Slot::new()).collect(),
            cursor: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
            handler_ns: AtomicU64::new(0),
            handler_ticks: AtomicU64::new(0),
            handler_durations: [const { AtomicU64::new(0) }; DURATION_BUCKETS],
        }
    }

    /// Bytes this buffer holds.
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots) + std::mem::size_of_val(&*self.refused)
    }

    /// Sample thread `tid`, refused a timer, with the process-wide timer
    /// from now on (its CPU clock reads `cpu_ns`); `false` when the table of
    /// such threads is full. Not for handlers; one caller at a time.
    pub(crate) fn refuse(&self, tid: i32, cpu_ns: u64) -> bool {
        let Some(entry) = self
            .refused
            .iter()
            .find(|e| e.tid.load(Ordering::Acquire) == 0)
        else {
            return false;
        };
        entry.accounted.store(cpu_ns, Ordering::Relaxed);
        entry.tid.store(tid, Ordering::Release);
        true
    }

    /// Stop sampling a refused thread that ended (its id may come back).
    pub(crate) fn forget_refused(&self, tid: i32) {
        if let Some(entry) = self.refused_entry(tid) {
            entry.tid.store(-1, Ordering::Release);
        }
    }

    /// How much of refused thread `tid`'s CPU its ticks have counted (ns of
    /// its clock), if it is in the table.
    pub(crate) fn refused_accounted(&self, tid: i32) -> Option<u64> {
        self.refused_entry(tid)
            .map(|e| e.accounted.load(Ordering::Relaxed))
    }

    /// The entry of refused thread `tid`. Async-signal-safe.
    fn refused_entry(&self, tid: i32) -> Option<&RefusedThread> {
        if tid <= 0 {
            return None;
        }
        self.refused
            .iter()
            .find(|e| e.tid.load(Ordering::Acquire) == tid)
    }

    /// On a process-timer tick: whole periods of refused thread `tid`'s CPU
    /// (its clock at `cpu_ns`) not yet counted, counted now (the remainder
    /// waits for its next tick); 0 for any other thread. Async-signal-safe.
    fn refused_ticks(&self, tid: i32, cpu_ns: u64) -> u32 {
        let Some(entry) = self.refused_entry(tid) else {
            return 0;
        };
        let mut accounted = entry.accounted.load(Ordering::Relaxed);
        loop {
            let periods = cpu_ns.saturating_sub(accounted) / self.period_ns;
            if periods == 0 {
                return 0;
            }
            match entry.accounted.compare_exchange_weak(
                accounted,
                accounted + periods * self.period_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return u32::try_from(periods).unwrap_or(u32::MAX),
                Err(seen) => accounted = seen,
            }
        }
    }

    /// Ticks lost so far because no slot was free.
    pub(crate) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Hand every published tick to `each` and free its slot.
    pub(crate) fn drain(&self, mut each: impl FnMut(&Tick<'_>)) {
        let mut pcs = [0u64; MAX_FRAMES];
        for slot in &*self.slots {
            if slot.state.load(Ordering::Acquire) != READY {
                continue;
            }
            let len = slot.len.load(Ordering::Relaxed).min(MAX_FRAMES);
            for (to, from) in pcs.iter_mut().zip(&slot.pcs[..len]) {
                *to = from.load(Ordering::Relaxed) as u64;
            }
            let tick = Tick {
                tid: slot.tid.load(Ordering::Relaxed),
                time: slot.time.load(Ordering::Relaxed),
                weight: slot.weight.load(Ordering::Relaxed),
                labels: super::labels::adopt(slot.labels.swap(0, Ordering::Relaxed)),
                outcome: Outcome::from_u8(slot.outcome.load(Ordering::Relaxed)),
                pcs: &pcs[..len],
            };
            each(&tick);
            slot.state.store(FREE, Ordering::Release);
        }
    }

    /// Record one tick of `weight` on this thread (in the handler), its
    /// stack from the interrupted `context` (the handler's `ucontext_t`).
    fn record(&self, weight: u32, context: *mut libc::c_void) {
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let claimed = (0..PROBES)
            .map(|i| &self.slots[(start + i) % self.slots.len()])
            .find(|slot| {
                slot.state
                    .compare_exchange(FREE, WRITING, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            });
        let Some(slot) = claimed else {
            self.lost.fetch_add(u64::from(weight), Ordering::Relaxed);
            return;
        };
        let started = monotonic_ns();
        slot.tid.store(super::gettid(), Ordering::Relaxed);
        slot.time.store(started, Ordering::Relaxed);
        slot.weight.store(weight, Ordering::Relaxed);
        slot.labels
            .store(super::labels::retain_current(), Ordering::Relaxed);
        // SAFETY: we are in the SIGPROF handler on the interrupted thread,
        // with the context the kernel passed it (or null in tests).
        let (len, outcome) = unsafe { unwind::from_signal(context, &slot.pcs) };
        slot.len.store(len, Ordering::Relaxed);
        slot.outcome.store(outcome as u8, Ordering::Relaxed);
        slot.state.store(READY, Ordering::Release);
        let took = monotonic_ns().saturating_sub(started);
        self.handler_ns.fetch_add(took, Ordering::Relaxed);
        self.handler_ticks.fetch_add(1, Ordering::Relaxed);
        self.handler_durations[duration_bucket(took)].fetch_add(1, Ordering::Relaxed);
    }

    /// Ticks recorded so far and the mean time one took to record (from
    /// claiming its slot to publishing it: the unwinding, mostly).
    /// The median time to record a tick (to within 1/16 of its value); 0
    /// before any.
    pub(crate) fn handler_median_ns(&self) -> u64 {
        let counts: Vec<u64> = self
            .handler_durations
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let mut seen = 0;
        for (bucket, n) in counts.iter().enumerate() {
            seen += n;
            if total > 0 && seen * 2 >= total {
                return bucket_middle(bucket);
            }
        }
        0
    }

    pub(crate) fn handler_cost(&self) -> (u64, u64) {
        let ticks = self.handler_ticks.load(Ordering::Relaxed);
        let ns = self.handler_ns.load(Ordering::Relaxed);
        (ticks, ns.checked_div(ticks).unwrap_or(0))
    }

    /// Publish `self` for handlers; the returned [`Armed`] disarms it.
    pub(crate) fn arm(self) -> Result<Armed, Error> {
        unwind::prepare(true);
        let buffer: &'static Buffer = Box::leak(Box::new(self));
        let ptr = std::ptr::from_ref(buffer).cast_mut();
        if ARMED
            .compare_exchange(
                std::ptr::null_mut(),
                ptr,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_err()
        {
            // SAFETY: `ptr` came from `Box::leak` just above and was never
            // published, so this is its only owner.
            drop(unsafe { Box::from_raw(ptr) });
            return Err(Error::Profiler(
                "a CPU sampler buffer is already armed".to_owned(),
            ));
        }
        Ok(Armed { buffer })
    }
}

/// The published buffer; dropping it unpublishes it, waits for handlers
/// still inside, then frees it.
pub(crate) struct Armed {
    buffer: &'static Buffer,
}

impl std::fmt::Debug for Armed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Armed")
            .field("slots", &self.buffer.slots.len())
            .finish()
    }
}

impl std::ops::Deref for Armed {
    type Target = Buffer;

    fn deref(&self) -> &Buffer {
        self.buffer
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.store(std::ptr::null_mut(), Ordering::SeqCst);
        // A handler that announced itself before the store may still hold
        // the pointer; one announcing itself after it sees null.
        while INSIDE.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        // Ticks never drained still hold references to their labels.
        self.buffer.drain(|_| {});
        let ptr = std::ptr::from_ref(self.buffer).cast_mut();
        // SAFETY: the buffer came from `Box::leak` in `arm`; it is no longer
        // published and no handler is inside, so nothing else refers to it.
        drop(unsafe { Box::from_raw(ptr) });
    }
}

/// In a child just forked: the armed buffer and the handlers counted
/// inside it are the parent's (the child has no timers, and no other
/// thread); forget them, leaving the buffer to leak, so the child can arm
/// its own.
pub(super) fn forget_after_fork() {
    ARMED.store(std::ptr::null_mut(), Ordering::SeqCst);
    INSIDE.store(0, Ordering::SeqCst);
}

/// `CLOCK_MONOTONIC` in nanoseconds (the clock `std::time::Instant` reads
/// on Linux); async-signal-safe.
pub(crate) fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `now`, which we own; it is
    // async-signal-safe (a vDSO call).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// Install our `SIGPROF` handler, once and for the rest of the process
/// (a late or stray `SIGPROF` then finds a harmless handler). Refused,
/// with a message naming the conflict, when the application or another
/// profiler already handles `SIGPROF`; theirs is never replaced. The
/// disposition is read again at every call, so a handler installed by
/// someone else since is noticed.
pub(crate) fn install() -> Result<(), Error> {
    let ours = on_sigprof as handler::Action as libc::sighandler_t;
    match handler::current(libc::SIGPROF)? {
        current if current == ours => Ok(()),
        current if current == libc::SIG_DFL || current == libc::SIG_IGN => {
            // The signals a thread dump or the poll watchdog may use wait
            // until a tick is recorded, so no walk nests inside ours.
            let mut held = vec![libc::SIGURG, libc::SIGUSR1, libc::SIGUSR2];
            held.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
            handler::install_masked(libc::SIGPROF, on_sigprof, &held)
        }
        _ => Err(Error::SignalTaken {
            signal: "SIGPROF",
            user: "CPU profiles",
        }),
    }
}

/// A timer on one thread's CPU clock that signals that thread with
/// `SIGPROF` every `period` of CPU time it uses; deleted on drop.
#[derive(Debug)]
pub(crate) struct ThreadTimer {
    id: libc::timer_t,
    /// The thread's CPU clock (ns) at its first expiry; the n-th expiry
    /// comes `n - 1` periods of its CPU time later.
    first_expiry: u64,
    period_ns: u64,
    cpu_at_start: u64,
}

// SAFETY: a timer id is a plain kernel handle; any thread may arm or
// delete it.
unsafe impl Send for ThreadTimer {}

impl ThreadTimer {
    /// Start a timer on thread `tid` of this process, first expiring at a
    /// random point of its first period; the OS error when the kernel
    /// refuses one (`EAGAIN` past `RLIMIT_SIGPENDING`, which each timer
    /// counts against, per user; or the thread is gone).
    pub(crate) fn start(tid: i32, period: Duration) -> std::io::Result<Self> {
        let clock = thread_clock(tid);
        // SAFETY: a zeroed sigevent is valid; we set the fields the kernel
        // reads for SIGEV_THREAD_ID.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = libc::SIGPROF;
        event.sigev_notify_thread_id = tid;
        event.sigev_value = libc::sigval {
            sival_ptr: TIMER_MARK as *mut libc::c_void,
        };
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX).max(1);
        let first = 1 + random(tid) % period_ns;
        let cpu_before = thread_cpu_ns(Some(tid));
        let id = create_and_arm(clock, &mut event, Duration::from_nanos(first), period)?;
        Ok(Self {
            id,
            first_expiry: cpu_before.saturating_add(first),
            period_ns,
            cpu_at_start: cpu_before,
        })
    }

    /// The thread's CPU clock (ns) just before its timer started.
    pub(crate) fn cpu_at_start(&self) -> u64 {
        self.cpu_at_start
    }

    /// How many times this timer has expired by the time its thread's CPU
    /// clock reads `cpu_ns` (delivered or not).
    pub(crate) fn expirations_at(&self, cpu_ns: u64) -> u64 {
        match cpu_ns.checked_sub(self.first_expiry) {
            Some(since) => 1 + since / self.period_ns,
            None => 0,
        }
    }

    /// Whether the timer's thread is gone: the kernel then reports the
    /// timer disarmed, even when a new thread has reused the id.
    pub(crate) fn thread_gone(&self) -> bool {
        // SAFETY: a zeroed itimerspec is valid; `id` is our live timer.
        let mut now: libc::itimerspec = unsafe { std::mem::zeroed() };
        // SAFETY: `id` was created by timer_create and not yet deleted;
        // `now` is ours to write.
        if unsafe { libc::timer_gettime(self.id, &mut now) } != 0 {
            return true;
        }
        now.it_interval.tv_sec == 0 && now.it_interval.tv_nsec == 0
    }
}

/// A number that differs from call to call and thread to thread (for the
/// timers' first expiries: no two threads in step).
fn random(tid: i32) -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);
    let mut x = COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ monotonic_ns()
        ^ (u64::from(tid.unsigned_abs()) << 32);
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Drop for ThreadTimer {
    fn drop(&mut self) {
        // SAFETY: `id` was created by timer_create and is deleted once.
        unsafe { libc::timer_delete(self.id) };
    }
}

/// The process-wide `ITIMER_PROF`, running while this lives (only while
/// some thread has been refused a timer of its own).
#[derive(Debug)]
pub(crate) struct ProcessTimer(());

impl ProcessTimer {
    /// Start it every `period` of process CPU time.
    pub(crate) fn start(period: Duration) -> std::io::Result<Self> {
        set_itimer(period)?;
        Ok(Self(()))
    }
}

impl Drop for ProcessTimer {
    fn drop(&mut self) {
        let _ = set_itimer(Duration::ZERO);
    }
}

/// Arm `ITIMER_PROF` every `period`; zero stops it.
fn set_itimer(period: Duration) -> std::io::Result<()> {
    let every = libc::timeval {
        tv_sec: libc::time_t::try_from(period.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(period.subsec_micros()),
    };
    let value = libc::itimerval {
        it_interval: every,
        it_value: every,
    };
    // SAFETY: `value` is valid; the old value is not asked for.
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &value, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// CPU time of thread `tid` of this process (`None`: its own), in
/// nanoseconds; async-signal-safe. 0 when the thread is gone.
pub(crate) fn thread_cpu_ns(tid: Option<i32>) -> u64 {
    let clock = tid.map_or(libc::CLOCK_THREAD_CPUTIME_ID, thread_clock);
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `now`, which we own; it is
    // async-signal-safe.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return 0;
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// CPU time of the whole process so far (every thread, live or ended), in
/// nanoseconds.
pub(crate) fn process_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `now`, which we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return 0;
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// The kernel's CPU clock id of thread `tid`: MAKE_THREAD_CPUCLOCK(tid,
/// CPUCLOCK_SCHED), as `pthread_getcpuclockid` builds it.
fn thread_clock(tid: i32) -> libc::clockid_t {
    #[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
    let clock = ((!(tid as u32)) << 3) as libc::clockid_t | 6;
    clock
}

/// `timer_create` on `clock` with `event`, then arm it: first after
/// `first`, then every `period`.
fn create_and_arm(
    clock: libc::clockid_t,
    event: &mut libc::sigevent,
    first: Duration,
    period: Duration,
) -> std::io::Result<libc::timer_t> {
    let mut id: libc::timer_t = std::ptr::null_mut();
    // SAFETY: `event` and `id` are valid for the call; the kernel copies
    // the event.
    if unsafe { libc::timer_create(clock, event, &mut id) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let spec = libc::itimerspec {
        it_interval: timespec(period),
        it_value: timespec(first),
    };
    // SAFETY: `id` is the timer just created; `spec` is valid.
    if unsafe { libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) } != 0 {
        let error = std::io::Error::last_os_error();
        // SAFETY: deleting the timer we just created, once.
        unsafe { libc::timer_delete(id) };
        return Err(error);
    }
    Ok(id)
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(d.subsec_nanos()),
    }
}

/// Where a `SIGPROF` came from; overruns: further expirations the kernel
/// merged into this one.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// Our timer on this thread.
    ThreadTimer { overruns: u32 },
    /// The process-wide `ITIMER_PROF` (counted only on refused threads).
    ProcessTimer,
    /// Anything else (`kill`, `tgkill`, someone else's timer): ignored.
    Other,
}

/// Read the source of a signal from its `siginfo_t`.
///
/// # Safety
///
/// `info` is the pointer the kernel passed to an `SA_SIGINFO` handler.
unsafe fn source(info: *const libc::siginfo_t) -> Source {
    if info.is_null() {
        return Source::Other;
    }
    // SAFETY: the kernel passes a valid siginfo_t.
    let code = unsafe { (*info).si_code };
    match code {
        libc::SI_KERNEL => Source::ProcessTimer,
        libc::SI_TIMER => {
            // The kernel's timer layout after the three leading ints and
            // their padding: `int si_tid; int si_overrun; sigval si_value`.
            let base = info.cast::<u8>();
            // SAFETY: for SI_TIMER the union holds the timer fields at
            // these offsets (Linux ABI, 64-bit); siginfo_t is 128 bytes.
            let (overrun, value) = unsafe {
                (
                    base.add(20).cast::<i32>().read_unaligned(),
                    base.add(24).cast::<usize>().read_unaligned(),
                )
            };
            let overruns = u32::try_from(overrun).unwrap_or(0);
            if value == TIMER_MARK {
                Source::ThreadTimer { overruns }
            } else {
                Source::Other
            }
        }
        _ => Source::Other,
    }
}

/// The `SIGPROF` handler. Async-signal-safe: atomics, `gettid`,
/// `clock_gettime`, the unwinder.
extern "C" fn on_sigprof(_: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    handler::keeping_errno(|| {
        INSIDE.fetch_add(1, Ordering::SeqCst);
        let buffer = ARMED.load(Ordering::SeqCst);
        if !buffer.is_null() {
            // SAFETY: a non-null pointer is the armed buffer, which is
            // freed only after it is unpublished and `INSIDE` drops to
            // zero; we announced ourselves before loading it.
            let buffer = unsafe { &*buffer };
            // SAFETY: `info` is the kernel's siginfo for this signal.
            let weight = match unsafe { source(info) } {
                Source::ThreadTimer { overruns } => overruns.saturating_add(1),
                Source::ProcessTimer => buffer.refused_ticks(super::gettid(), thread_cpu_ns(None)),
                Source::Other => 0,
            };
            if weight > 0 {
                buffer.record(weight, context);
            }
        }
        INSIDE.fetch_sub(1, Ordering::SeqCst);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_counts_what_it_cannot_hold_and_drains_what_it_holds() {
        unwind::prepare(false);
        let buffer = Buffer::new(2, Duration::from_millis(10));
        let set = Arc::new(LabelSet {
            pairs: Box::new([(Arc::from("k"), Arc::from("v"))]),
        });
        {
            let _in_force = super::super::labels::put_in_force(Some(&set));
            for _ in 0..5 {
                // No machine context: the tick holds no stack.
                buffer.record(3, std::ptr::null_mut());
            }
        }
        // Two ticks hold a reference each, until drained.
        assert_eq!(Arc::strong_count(&set), 3);
        assert_eq!(buffer.lost(), 9, "three ticks of weight 3 found no slot");
        let mut seen = Vec::new();
        buffer.drain(|tick| {
            seen.push((
                tick.tid,
                tick.weight,
                tick.labels.as_ref().map(|l| l.pairs.len()),
                tick.outcome,
            ));
        });
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|&(tid, w, labels, outcome)| {
            tid == super::super::gettid()
                && w == 3
                && labels == Some(1)
                && outcome == Outcome::Unsupported
        }));
        let mut again = 0;
        buffer.drain(|_| again += 1);
        assert_eq!(again, 0, "drained slots are free again");
        assert_eq!(
            Arc::strong_count(&set),
            1,
            "drained ticks gave their references back"
        );
    }

    #[test]
    fn refused_threads_count_whole_periods_of_their_own_time_and_keep_the_rest() {
        let buffer = Buffer::new(1, Duration::from_millis(1));
        assert_eq!(buffer.refused_ticks(77, 2_500_000), 0, "not refused");
        assert!(buffer.refuse(77, 1_000_000));
        assert_eq!(buffer.refused_ticks(77, 2_500_000), 1);
        assert_eq!(
            buffer.refused_ticks(77, 3_100_000),
            1,
            "the half period carried"
        );
        assert_eq!(buffer.refused_ticks(77, 3_200_000), 0);
        assert_eq!(buffer.refused_accounted(77), Some(3_000_000));
        buffer.forget_refused(77);
        assert_eq!(buffer.refused_ticks(77, 9_000_000), 0, "ended");
        assert_eq!(buffer.refused_accounted(77), None);
    }

    #[test]
    fn durations_fall_in_buckets_within_a_sixteenth_of_their_value() {
        for ns in [
            0, 1, 15, 16, 17, 100, 1_000, 1_999, 2_000, 12_345, 5_000_000,
        ] {
            let middle = bucket_middle(duration_bucket(ns));
            assert!(middle.abs_diff(ns) * 16 <= ns.max(16), "{ns} -> {middle}");
        }
        assert!(duration_bucket(u64::MAX) < DURATION_BUCKETS);
    }

    #[test]
    fn a_timer_counts_its_expirations_from_a_random_first_one() {
        let period = Duration::from_millis(10);
        let firsts: Vec<u64> = (0..8)
            .map(|_| {
                let timer = ThreadTimer::start(super::super::gettid(), period).expect("timer");
                let first = timer.first_expiry - thread_cpu_ns(None).min(timer.first_expiry);
                assert!(first <= 10_000_000, "within the first period: {first}");
                assert_eq!(timer.expirations_at(timer.first_expiry - 1), 0);
                assert_eq!(timer.expirations_at(timer.first_expiry), 1);
                assert_eq!(timer.expirations_at(timer.first_expiry + 25_000_000), 3);
                assert!(!timer.thread_gone());
                timer.first_expiry
            })
            .collect();
        let mut distinct = firsts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 4, "not in step: {firsts:?}");
    }

    #[test]
    fn a_timer_whose_thread_ended_says_so() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ = tx.send(super::super::gettid());
            let _ = stop_rx.recv();
        });
        let tid = rx.recv().expect("tid");
        let timer = ThreadTimer::start(tid, Duration::from_millis(10)).expect("timer");
        assert!(!timer.thread_gone());
        let _ = stop_tx.send(());
        thread.join().expect("join");
        assert!(
            timer.thread_gone(),
            "the kernel disarmed it with its thread"
        );
    }
}
