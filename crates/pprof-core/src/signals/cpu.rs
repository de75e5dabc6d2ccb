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
//! count: a kernel checks CPU timers at its scheduler tick, so at rates
//! above its `HZ` it merges expirations, and the overruns say how many.
//!
//! The process-wide `ITIMER_PROF` runs beside them for the threads that
//! have no timer of their own (started since the last scan, or refused one
//! by the kernel). The kernel sends its signal to the thread that was
//! running; a tick on a thread that has its own timer is ignored, so every
//! thread is sampled once, by one of the two (Go filters its `setitimer`
//! ticks the same way). It reports no overruns, and its one pending
//! signal is taken by whichever thread gets to it (a thread with its own
//! timer takes its own first), so each of its ticks on an untimed thread
//! weighs the whole periods of that thread's own CPU time not yet counted.
//!
//! # The handler
//!
//! [`on_sigprof`] saves `errno`, takes a tick only from our timers (told
//! apart by the value they carry; a stray `kill -PROF` or someone else's
//! timer is ignored, and never kills the process), claims a
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

/// Where handlers record ticks, and which threads have their own timer.
pub(crate) struct Buffer {
    slots: Box<[Slot]>,
    cursor: AtomicUsize,
    /// Ticks (weights) that found no free slot.
    lost: AtomicU64,
    /// One bit per thread id: set while that thread has its own timer.
    timed: Box<[AtomicU64]>,
    /// Threads without a timer of their own: how much of each one's CPU
    /// time the process-wide timer's ticks have accounted for.
    untimed: Box<[Untimed]>,
    /// Ticks on untimed threads that found `untimed` full (weighed 1).
    untimed_full: AtomicU64,
    /// Time spent recording ticks (claim to publish), and how many.
    handler_ns: AtomicU64,
    handler_ticks: AtomicU64,
    period_ns: u64,
}

/// One untimed thread's account: its id (0: free) and the CPU time (ns of
/// its own clock) its ticks have counted so far.
struct Untimed {
    tid: AtomicI32,
    accounted: AtomicU64,
}

/// Entries of the untimed-threads table; ids are never removed during one
/// run of the sampler, so a run holds at most this many threads that ever
/// went without a timer (beyond it, their ticks weigh 1 and are counted).
const UNTIMED: usize = 16_384;

/// The armed buffer handlers write into; null when no profile runs.
static ARMED: AtomicPtr<Buffer> = AtomicPtr::new(std::ptr::null_mut());
/// Handlers between announcing themselves and leaving.
static INSIDE: AtomicUsize = AtomicUsize::new(0);

impl Buffer {
    /// A buffer of `slots` ticks for threads ids below `max_tid`, timers
    /// ticking every `period`.
    pub(crate) fn new(slots: usize, max_tid: usize, period: Duration) -> Self {
        Self {
            slots: (0..slots.max(1)).map(|_| Slot::new()).collect(),
            cursor: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
            timed: (0..max_tid.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            untimed: (0..UNTIMED)
                .map(|_| Untimed {
                    tid: AtomicI32::new(0),
                    accounted: AtomicU64::new(0),
                })
                .collect(),
            untimed_full: AtomicU64::new(0),
            handler_ns: AtomicU64::new(0),
            handler_ticks: AtomicU64::new(0),
            period_ns: u64::try_from(period.as_nanos()).unwrap_or(u64::MAX).max(1),
        }
    }

    /// The account of untimed thread `tid`, made (from `accounted`) if it
    /// has none yet; `None` when the table is full.
    fn untimed_account(&self, tid: i32, accounted: u64) -> Option<&Untimed> {
        let start = usize::try_from(tid).unwrap_or(0).wrapping_mul(0x9e37_79b9) % UNTIMED;
        for i in 0..UNTIMED {
            let entry = &self.untimed[(start + i) % UNTIMED];
            match entry.tid.load(Ordering::Acquire) {
                t if t == tid => return Some(entry),
                0 => {
                    // Set the account before the id makes it visible.
                    if entry
                        .tid
                        .compare_exchange(0, -1, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        entry.accounted.store(accounted, Ordering::Relaxed);
                        entry.tid.store(tid, Ordering::Release);
                        return Some(entry);
                    }
                    if entry.tid.load(Ordering::Acquire) == tid {
                        return Some(entry);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Open the account of a thread that goes without a timer of its own
    /// from now (the kernel refused one): its CPU time until now (read by
    /// the caller from its clock) is not this run's.
    pub(crate) fn untimed_from(&self, tid: i32, cpu_ns: u64) {
        if self.untimed_account(tid, cpu_ns).is_none() {
            self.untimed_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ticks on untimed threads that found their table full.
    pub(crate) fn untimed_full(&self) -> u64 {
        self.untimed_full.load(Ordering::Relaxed)
    }

    /// Whole periods of this (untimed) thread's CPU time, at `cpu_ns` of
    /// its own clock, not yet counted; counts them (the remainder stays for
    /// its next tick). A thread met for the first time started during this
    /// run (every older one was seen by the first scan and given a timer,
    /// or opened with [`Buffer::untimed_from`]): all its time counts.
    fn untimed_ticks(&self, tid: i32, cpu_ns: u64) -> u32 {
        let Some(entry) = self.untimed_account(tid, 0) else {
            self.untimed_full.fetch_add(1, Ordering::Relaxed);
            return 1;
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

    /// Bytes this buffer holds.
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots) + std::mem::size_of_val(&*self.timed)
    }

    /// Mark whether `tid` has its own timer (its process-timer ticks are
    /// then ignored). Ids beyond the table stay unmarked: such threads are
    /// sampled by the process timer.
    pub(crate) fn set_timed(&self, tid: i32, timed: bool) -> bool {
        let Some((word, bit)) = bit_of(tid) else {
            return false;
        };
        let Some(word) = self.timed.get(word) else {
            return false;
        };
        if timed {
            word.fetch_or(bit, Ordering::SeqCst);
        } else {
            word.fetch_and(!bit, Ordering::SeqCst);
        }
        true
    }

    fn is_timed(&self, tid: i32) -> bool {
        bit_of(tid).is_some_and(|(word, bit)| {
            self.timed
                .get(word)
                .is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0)
        })
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

    /// Record one tick of `weight` on this thread (in the handler).
    fn record(&self, weight: u32, interrupted: Option<usize>) {
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
        // and `arm` ran `unwind::prepare` before any timer was started.
        let (len, outcome) = unsafe { unwind::from_signal(interrupted, &slot.pcs) };
        slot.len.store(len, Ordering::Relaxed);
        slot.outcome.store(outcome as u8, Ordering::Relaxed);
        slot.state.store(READY, Ordering::Release);
        self.handler_ns
            .fetch_add(monotonic_ns().saturating_sub(started), Ordering::Relaxed);
        self.handler_ticks.fetch_add(1, Ordering::Relaxed);
    }

    /// Ticks recorded so far and the mean time one took to record (from
    /// claiming its slot to publishing it: the unwinding, mostly).
    pub(crate) fn handler_cost(&self) -> (u64, u64) {
        let ticks = self.handler_ticks.load(Ordering::Relaxed);
        let ns = self.handler_ns.load(Ordering::Relaxed);
        (ticks, ns.checked_div(ticks).unwrap_or(0))
    }

    /// Publish `self` for handlers; the returned [`Armed`] disarms it.
    pub(crate) fn arm(self) -> Result<Armed, Error> {
        unwind::prepare();
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

/// Word and bit of `tid` in the timed-threads table.
fn bit_of(tid: i32) -> Option<(usize, u64)> {
    let tid = usize::try_from(tid).ok()?;
    Some((tid / 64, 1 << (tid % 64)))
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
}

// SAFETY: a timer id is a plain kernel handle; any thread may arm or
// delete it.
unsafe impl Send for ThreadTimer {}

impl ThreadTimer {
    /// Start a timer on thread `tid` of this process; the OS error when
    /// the kernel refuses one (e.g. `EAGAIN` past `RLIMIT_SIGPENDING`, or
    /// the thread is gone).
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
        let id = create_and_arm(clock, &mut event, period)?;
        Ok(Self { id })
    }
}

impl Drop for ThreadTimer {
    fn drop(&mut self) {
        // SAFETY: `id` was created by timer_create and is deleted once.
        unsafe { libc::timer_delete(self.id) };
    }
}

/// The process-wide `ITIMER_PROF`, running while this lives: its ticks
/// count for threads that have no timer of their own, each weighed by the
/// receiving thread's own CPU time not yet counted (it merges expirations
/// silently, and lands on whichever thread takes the pending signal).
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

/// The kernel's CPU clock id of thread `tid`: MAKE_THREAD_CPUCLOCK(tid,
/// CPUCLOCK_SCHED), as `pthread_getcpuclockid` builds it.
fn thread_clock(tid: i32) -> libc::clockid_t {
    #[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
    let clock = ((!(tid as u32)) << 3) as libc::clockid_t | 6;
    clock
}

/// `timer_create` on `clock` with `event`, then arm it every `period`.
fn create_and_arm(
    clock: libc::clockid_t,
    event: &mut libc::sigevent,
    period: Duration,
) -> std::io::Result<libc::timer_t> {
    let mut id: libc::timer_t = std::ptr::null_mut();
    // SAFETY: `event` and `id` are valid for the call; the kernel copies
    // the event.
    if unsafe { libc::timer_create(clock, event, &mut id) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let every = timespec(period);
    let spec = libc::itimerspec {
        it_interval: every,
        it_value: every,
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
    /// The process-wide `ITIMER_PROF`.
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
                Source::ThreadTimer { overruns } => Some(overruns.saturating_add(1)),
                Source::ProcessTimer => {
                    // Only a thread without a timer of its own keeps it, for
                    // as much of its own CPU time as is not yet counted.
                    let tid = super::gettid();
                    (!buffer.is_timed(tid))
                        .then(|| buffer.untimed_ticks(tid, thread_cpu_ns(None)))
                        .filter(|&ticks| ticks > 0)
                }
                Source::Other => None,
            };
            if let Some(weight) = weight {
                buffer.record(weight, handler::interrupted_pc(context));
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
        unwind::prepare();
        let buffer = Buffer::new(2, 64, Duration::from_millis(10));
        let set = Arc::new(LabelSet {
            pairs: Box::new([(Arc::from("k"), Arc::from("v"))]),
        });
        {
            let _in_force = super::super::labels::put_in_force(Some(&set));
            for _ in 0..5 {
                buffer.record(3, None);
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
                tick.pcs.len(),
            ));
        });
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|&(tid, w, labels, len)| {
            tid == super::super::gettid() && w == 3 && labels == Some(1) && len > 0
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
    fn untimed_threads_count_whole_periods_of_their_own_time_and_keep_the_rest() {
        let buffer = Buffer::new(1, 64, Duration::from_millis(1));
        // A thread met first: all its time counts.
        assert_eq!(buffer.untimed_ticks(77, 2_500_000), 2);
        assert_eq!(
            buffer.untimed_ticks(77, 3_100_000),
            1,
            "the half period carried"
        );
        assert_eq!(buffer.untimed_ticks(77, 3_200_000), 0);
        // One refused a timer counts from when it was.
        buffer.untimed_from(78, 10_000_000);
        assert_eq!(buffer.untimed_ticks(78, 10_900_000), 0);
        assert_eq!(buffer.untimed_ticks(78, 12_000_000), 2);
        assert_eq!(buffer.untimed_full(), 0);
    }

    #[test]
    fn timed_threads_are_marked_and_cleared() {
        let buffer = Buffer::new(1, 1 << 16, Duration::from_millis(10));
        assert!(buffer.set_timed(4242, true));
        assert!(buffer.is_timed(4242) && !buffer.is_timed(4243));
        assert!(buffer.set_timed(4242, false));
        assert!(!buffer.is_timed(4242));
        assert!(!buffer.set_timed(1 << 20, true), "beyond the table");
        assert!(!buffer.is_timed(1 << 20));
    }
}
