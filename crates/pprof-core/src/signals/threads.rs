//! Every OS thread's stack, captured in process (the goroutine profile).
//!
//! The dumping thread lists `/proc/self/task`, gives each thread a slot of
//! preallocated memory and sends it a signal (`SIGURG` by default, see
//! [`Config::thread_signal`](crate::Config::thread_signal)). The handler finds
//! its slot by thread id, unwinds its own stack into the slot's fixed array
//! of raw return addresses and marks the slot done: it allocates nothing,
//! takes no lock and only stores into atomics. Symbolization happens later,
//! on the dumping thread. A thread that does not answer within the timeout
//! (the signal is blocked, or it is stuck in the kernel) is reported without
//! a stack, and the dump completes.
//!
//! Slots live in pools that are never freed, so a handler that runs late
//! (after its dump gave up on it) still writes into valid memory; it finds
//! its slot no longer waiting and returns without writing. A slot's owner
//! (the thread id) and its state are one atomic word, changed together: a
//! handler claims a slot only while it waits for that handler's own
//! thread, so a late handler never writes into a slot that has since been
//! given to another thread.
//! How the handler unwinds is [`unwind`](super::unwind)'s business.

use std::fs;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{gettid, handler, unwind};
use crate::error::Error;

use super::labels::LabelSet;
use super::unwind::{MAX_FRAMES, Outcome};

/// How long a dump waits for a group of signalled threads to answer before
/// it signals the next group.
const GROUP_WAIT: Duration = Duration::from_millis(2);

/// A slot's life: free → waiting (the dumper signalled its thread) →
/// writing (the handler claimed it) → done (the dumper reads it), or
/// waiting → abandoned (the dumper gave up).
const FREE: u8 = 0;
const WAITING: u8 = 1;
const WRITING: u8 = 2;
const DONE: u8 = 3;
const ABANDONED: u8 = 4;

struct Slot {
    /// Owner and state together ([`word`]): who may write and whether.
    word: AtomicU64,
    len: AtomicUsize,
    /// How far the handler's walk got ([`Outcome`] as a byte).
    outcome: AtomicU8,
    /// A reference to the thread's labels (0: none), see [`super::labels`].
    labels: AtomicUsize,
    /// Leaf first: the interrupted pc, then return addresses.
    pcs: [AtomicUsize; MAX_FRAMES],
}

/// A slot's owner (a thread id) and state as one word.
const fn word(tid: i32, state: u8) -> u64 {
    ((tid as u32 as u64) << 8) | state as u64
}

/// The state part of a slot's word.
const fn state_of(word: u64) -> u8 {
    (word & 0xff) as u8
}

impl Slot {
    fn new() -> Self {
        Self {
            word: AtomicU64::new(word(0, FREE)),
            len: AtomicUsize::new(0),
            outcome: AtomicU8::new(0),
            labels: AtomicUsize::new(0),
            pcs: std::array::from_fn(|_| AtomicUsize::new(0)),
        }
    }

    fn state(&self) -> u8 {
        state_of(self.word.load(Ordering::Acquire))
    }

    /// Give the slot to `tid`, waiting for its handler, unless a handler is
    /// writing into it (then it is left alone).
    fn assign(&self, tid: i32) -> bool {
        let current = self.word.load(Ordering::Acquire);
        if matches!(state_of(current), WAITING | WRITING) {
            return false;
        }
        // No handler writes into a slot that is neither waiting nor being
        // written, so the length may be reset before it waits again; the
        // labels a late handler left in it (done after its dump gave up)
        // are released.
        self.len.store(0, Ordering::Relaxed);
        drop(super::labels::adopt(self.labels.swap(0, Ordering::Relaxed)));
        self.word
            .compare_exchange(
                current,
                word(tid, WAITING),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

/// Leaked on creation: handlers may read a pool at any time, forever.
struct Pool {
    slots: Box<[Slot]>,
}

/// The pool handlers look in; null until the first dump.
static POOL: AtomicPtr<Pool> = AtomicPtr::new(std::ptr::null_mut());

/// One dump at a time; holds the current pool and the installed signal.
static DUMPER: Mutex<Dumper> = Mutex::new(Dumper {
    pool: None,
    installed: Vec::new(),
});

pub(super) struct Dumper {
    pool: Option<&'static Pool>,
    /// Signals our handler was installed for (and never uninstalled from).
    installed: Vec<i32>,
}

/// The dump lock if no dump holds it now (before a fork: a dump is not
/// waited for, the child then has none).
pub(super) fn try_lock_dumper() -> Option<std::sync::MutexGuard<'static, Dumper>> {
    match DUMPER.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// What one thread looked like at the dump.
#[derive(Debug, Clone)]
pub(crate) struct ThreadStack {
    pub(crate) tid: i32,
    /// `comm` of the thread (15 bytes at most, as the kernel keeps it).
    pub(crate) name: String,
    /// The kernel's scheduler state (`running`, `sleeping`, …).
    pub(crate) state: &'static str,
    /// The kernel function the thread waits in, where `/proc` shows it.
    pub(crate) wait_channel: Option<String>,
    /// Lookup addresses, leaf first: the interrupted pc, then return
    /// addresses minus one. `None`: the thread did not answer.
    pub(crate) pcs: Option<Vec<u64>>,
    /// Why the stack is short, when the handler could not take it whole.
    pub(crate) partial: Option<&'static str>,
    /// The labels in force on the thread when it answered.
    pub(crate) labels: Option<Arc<LabelSet>>,
}

/// Live thread ids of this process.
pub(crate) fn thread_ids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut tids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// The number of live threads (the index page's count).
pub(crate) fn count() -> usize {
    thread_ids().len()
}

/// Name, state and wait channel of a thread from `/proc`.
fn describe(tid: i32) -> (String, &'static str, Option<String>) {
    let task = format!("/proc/self/task/{tid}");
    let name = fs::read_to_string(format!("{task}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default();
    let state = fs::read_to_string(format!("{task}/stat"))
        .ok()
        .and_then(|stat| {
            // `pid (comm) S …`: comm may contain spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            after.split_whitespace().next()?.chars().next()
        })
        .map_or("unknown", state_name);
    let wait_channel = fs::read_to_string(format!("{task}/wchan"))
        .ok()
        .map(|w| w.trim().to_owned())
        .filter(|w| !w.is_empty() && w != "0");
    (name, state, wait_channel)
}

fn state_name(code: char) -> &'static str {
    match code {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk sleep",
        'T' => "stopped",
        't' => "tracing stop",
        'Z' => "zombie",
        'X' => "dead",
        'I' => "idle",
        _ => "unknown",
    }
}

/// True when `tid` has `signal` blocked (`SigBlk` in its status), so sending
/// it would only leave a pending signal behind.
fn blocks(tid: i32, signal: i32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| (1..=64).contains(&signal) && mask & (1 << (signal - 1)) != 0)
}

/// Capture every thread's stack. `signal` is the signal used to interrupt
/// threads, `timeout` how long to wait for all of them.
///
/// Blocking: call it from a blocking thread.
pub(crate) fn dump(signal: i32, timeout: Duration) -> Result<Vec<ThreadStack>, Error> {
    let me = gettid();
    // Name and state first: the signal wakes each thread for a moment.
    let mut described: std::collections::HashMap<i32, (String, &'static str, Option<String>)> =
        thread_ids()
            .into_iter()
            .filter(|t| *t != me)
            .map(|t| (t, describe(t)))
            .filter(|(_, (name, state, _))| !(name.is_empty() && *state == "unknown"))
            .collect();
    // Threads that block the signal are not sent it: they would only keep
    // it pending. They are listed without a stack.
    let mut tids: Vec<i32> = described.keys().copied().collect();
    tids.sort_unstable();
    let (blocked, tids): (Vec<i32>, Vec<i32>) = tids.into_iter().partition(|t| blocks(*t, signal));
    // Every thread's stack must be known to the unwinder, the new ones too.
    unwind::prepare(true);
    let mut captured = capture_threads(&tids, signal, timeout)?;
    captured.extend(blocked.into_iter().map(|t| (t, None)));
    let mut stacks = Vec::with_capacity(captured.len() + 1);
    stacks.push(own_stack(me));
    for (tid, answer) in captured {
        let Some((name, state, wait_channel)) = described.remove(&tid) else {
            continue;
        };
        let partial = answer.as_ref().and_then(|a| a.outcome.reason());
        let (pcs, labels) = answer.map_or((None, None), |a| (Some(a.pcs), a.labels));
        stacks.push(ThreadStack {
            tid,
            name,
            state,
            wait_channel,
            pcs,
            partial,
            labels,
        });
    }
    Ok(stacks)
}

/// The stack of one thread of this process (lookup addresses, leaf first)
/// and its labels, or `None` if it did not answer within `timeout`. For watchdogs that
/// sample a thread caught doing something; blocking.
pub(crate) fn capture(
    tid: i32,
    signal: i32,
    timeout: Duration,
) -> Result<Option<Captured1>, Error> {
    unwind::prepare(false);
    Ok(capture_threads(&[tid], signal, timeout)?
        .pop()
        .and_then(|(_, answer)| answer.map(|a| (a.pcs, a.labels))))
}

/// Hold the dump lock: every dump waits until the guard is dropped (tests).
#[cfg(test)]
pub(crate) fn hold_dumps() -> std::sync::MutexGuard<'static, impl Sized> {
    DUMPER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Run `f` with the process's thread signal blocked on this thread (tests).
#[cfg(test)]
pub(crate) fn with_thread_signal_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: a zeroed sigset_t is initialised by sigemptyset/sigaddset;
    // pthread_sigmask changes only this thread's mask, and is undone below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, thread_signal());
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let out = f();
    // SAFETY: as above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    out
}

/// One thread's stack (lookup addresses, leaf first) and the labels in
/// force on it when it was taken.
pub(crate) type Captured1 = (Vec<u64>, Option<Arc<LabelSet>>);

/// What a thread's handler recorded.
struct Answer {
    pcs: Vec<u64>,
    outcome: Outcome,
    labels: Option<Arc<LabelSet>>,
}

/// A thread id and, if it answered, what it recorded.
type Captured = (i32, Option<Answer>);

/// Signal each of `tids` (other threads of this process) and collect what
/// their handlers recorded: `(tid, stack or None)`, in `tids`' order.
fn capture_threads(tids: &[i32], signal: i32, timeout: Duration) -> Result<Vec<Captured>, Error> {
    if super::fork::dumps_lost() {
        return Err(Error::Profiler(
            "this process was forked while a thread dump ran: it has no thread dumps".to_owned(),
        ));
    }
    // What the lock guards (the pool and the installed signal) is never
    // left half-changed, so a panic elsewhere while it was held leaves
    // nothing to repair.
    let mut dumper = DUMPER.lock().unwrap_or_else(PoisonError::into_inner);
    install(&mut dumper, signal)?;
    let pool = pool_for(&mut dumper, tids.len());

    // Assign a slot per thread, skipping slots a late handler may still be
    // writing into.
    let mut assigned: Vec<(i32, Option<&Slot>)> = Vec::with_capacity(tids.len());
    let mut free_slots = pool.slots.iter();
    for &tid in tids {
        let slot = free_slots.by_ref().find(|s| s.assign(tid));
        assigned.push((tid, slot));
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let pending = |assigned: &[(i32, Option<&Slot>)]| {
        assigned
            .iter()
            .any(|(_, s)| s.is_some_and(|s| matches!(s.state(), WAITING | WRITING)))
    };
    // Signalled all at once, every thread would walk at once and find the
    // unwinder's workspaces taken: a group at a time, each given a moment
    // to answer before the next is sent (those that do not, answer later).
    let group = super::workspace::capacity();
    let deadline = Instant::now() + timeout;
    for batch in assigned.chunks_mut(group) {
        for (tid, slot) in batch.iter_mut() {
            let Some(s) = slot else { continue };
            // SAFETY: tgkill only sends a signal; a handler for it is
            // installed (so it cannot kill the thread) and the target is one
            // of our threads (or gone, which tgkill reports).
            let sent = unsafe { libc::syscall(libc::SYS_tgkill, pid, *tid, signal) };

            if sent != 0
                && s.word
                    .compare_exchange(
                        word(*tid, WAITING),
                        word(0, FREE),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                *slot = None;
            }
        }
        let next = (Instant::now() + GROUP_WAIT).min(deadline);
        while pending(batch) && Instant::now() < next {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    while pending(&assigned) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(assigned
        .into_iter()
        .map(|(tid, slot)| {
            let stack = slot.and_then(|s| collect(s, tid, deadline + timeout));
            (tid, stack)
        })
        .collect())
}

/// What the slot given to `tid` holds, or `None` (and the slot
/// abandoned) if its thread never answered. A handler caught mid-write gets
/// until `hard_deadline`.
fn collect(slot: &Slot, tid: i32, hard_deadline: Instant) -> Option<Answer> {
    loop {
        match slot.word.compare_exchange(
            word(tid, WAITING),
            word(tid, ABANDONED),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return None,
            Err(w) if w == word(tid, DONE) => break,
            Err(w) if w == word(tid, WRITING) && Instant::now() < hard_deadline => {
                std::thread::yield_now();
            }
            Err(_) => return None,
        }
    }
    let len = slot.len.load(Ordering::Acquire).min(MAX_FRAMES);
    let pcs = slot.pcs[..len]
        .iter()
        .enumerate()
        .map(|(i, pc)| {
            let pc = pc.load(Ordering::Relaxed) as u64;
            // The leaf is the interrupted instruction itself; the others are
            // return addresses, looked up one byte earlier (inside the call).
            if i == 0 { pc } else { pc.saturating_sub(1) }
        })
        .filter(|pc| *pc != 0) // the outermost frame of a thread ends at address 0
        .collect();
    let outcome = Outcome::from_u8(slot.outcome.load(Ordering::Relaxed));
    let labels = super::labels::adopt(slot.labels.swap(0, Ordering::Relaxed));
    slot.word.store(word(0, FREE), Ordering::Release);
    Some(Answer {
        pcs,
        outcome,
        labels,
    })
}

/// The dumping thread's own stack, taken directly.
fn own_stack(tid: i32) -> ThreadStack {
    let mut buf = [0u64; MAX_FRAMES];
    let len = unwind::stack_here(&mut buf);
    let pcs = buf[..len].to_vec();
    let (name, state, wait_channel) = describe(tid);
    ThreadStack {
        tid,
        name,
        state,
        wait_channel,
        pcs: Some(pcs),
        partial: None,
        labels: super::labels::current(),
    }
}

/// A pool with at least `threads` slots (a new, larger one is leaked when
/// needed: growth doubles, so all pools together stay under twice the largest).
fn pool_for(dumper: &mut Dumper, threads: usize) -> &'static Pool {
    let wanted = (threads + 16).next_power_of_two().max(64);
    match dumper.pool {
        Some(pool) if pool.slots.len() >= wanted => pool,
        _ => {
            let pool: &'static Pool = Box::leak(Box::new(Pool {
                slots: (0..wanted).map(|_| Slot::new()).collect(),
            }));
            POOL.store(std::ptr::from_ref(pool).cast_mut(), Ordering::Release);
            dumper.pool = Some(pool);
            pool
        }
    }
}

/// Install the handler for `signal` once, and check before every dump that
/// it is still the one that runs. Refuses a signal that is not
/// [`usable`], or that the application handles itself; never restores the
/// default action, so a late signal finds a harmless handler.
fn install(dumper: &mut Dumper, signal: i32) -> Result<(), Error> {
    usable(signal)?;
    if dumper.installed.contains(&signal) {
        // Re-read: an application that installs its own handler after our
        // first dump must not get a stream of signals meant for us.
        if handler::runs(signal, on_signal)? {
            return Ok(());
        }
        return Err(Error::Profiler(format!(
            "{} now runs a handler of the application's, installed after pprof-core's: \
             thread dumps no longer send it; choose another with Config::thread_signal",
            signal_name(signal)
        )));
    }
    handler::install(signal, on_signal)?;
    dumper.installed.push(signal);
    Ok(())
}

/// `Ok` for a signal that may interrupt threads for dumps: one whose
/// default action does no harm once our handler is in place and that
/// applications rarely use: `SIGURG`, `SIGUSR1`, `SIGUSR2` and the
/// real-time signals. Not `SIGTERM`, `SIGINT`, `SIGHUP`, `SIGPIPE`,
/// `SIGCHLD` (applications and shells rely on them), the fault signals (a
/// handler would hide crashes) or `SIGPROF` (the CPU profiler's).
pub(crate) fn usable(signal: i32) -> Result<(), Error> {
    let real_time = (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal);
    if real_time || [libc::SIGURG, libc::SIGUSR1, libc::SIGUSR2].contains(&signal) {
        return Ok(());
    }
    Err(Error::Profiler(format!(
        "{} cannot serve thread dumps: Config::thread_signal takes SIGURG (the default), \
         SIGUSR1, SIGUSR2 or a real-time signal (SIGRTMIN to SIGRTMAX)",
        signal_name(signal)
    )))
}

/// `signal` by name, for messages: `signal 15 (SIGTERM)`.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGURG => "SIGURG",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        s if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&s) => {
            return format!("signal {s} (SIGRTMIN+{})", s - libc::SIGRTMIN());
        }
        _ => return format!("signal {signal}"),
    };
    format!("signal {signal} ({name})")
}

/// The signal thread captures use outside a dump request (the poll
/// watchdog): the one the last [`Pprof`](crate::Pprof) was configured
/// with, `SIGURG` until then. One setting, `Config::thread_signal`.
static THREAD_SIGNAL: AtomicI32 = AtomicI32::new(libc::SIGURG);

/// Make `signal` the process's thread signal (see [`THREAD_SIGNAL`]).
pub(crate) fn set_thread_signal(signal: i32) {
    THREAD_SIGNAL.store(signal, Ordering::Relaxed);
}

/// The process's thread signal (see [`THREAD_SIGNAL`]).
pub(crate) fn thread_signal() -> i32 {
    THREAD_SIGNAL.load(Ordering::Relaxed)
}

/// The signal handler: record this thread's stack into its slot, if a dump
/// is waiting for it. Async-signal-safe: atomics, `gettid`, the unwinder.
extern "C" fn on_signal(_: libc::c_int, _: *mut libc::siginfo_t, context: *mut libc::c_void) {
    handler::keeping_errno(|| record_stack(context));
}

fn record_stack(context: *mut libc::c_void) {
    let pool = POOL.load(Ordering::Acquire);
    if pool.is_null() {
        return;
    }
    // SAFETY: pools are leaked (`pool_for`), so a non-null pointer is valid
    // for the rest of the process.
    let pool = unsafe { &*pool };
    let tid = gettid();
    // Owner and state in one compare-and-swap: only a slot waiting for this
    // very thread is claimed.
    let Some(slot) = pool.slots.iter().find(|s| {
        s.word
            .compare_exchange(
                word(tid, WAITING),
                word(tid, WRITING),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }) else {
        return;
    };
    // SAFETY: we are in the handler, on the thread being unwound, with the
    // context the kernel passed it.
    let (len, outcome) = unsafe { unwind::from_signal(context, &slot.pcs) };
    slot.outcome.store(outcome as u8, Ordering::Relaxed);
    slot.labels
        .store(super::labels::retain_current(), Ordering::Relaxed);
    slot.len.store(len, Ordering::Release);
    slot.word.store(word(tid, DONE), Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Tests that dump every thread run one at a time: a dump's signal
    /// wakes threads that another test expects asleep.
    fn one_dump_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        LOCK.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The function names of a captured stack, leaf first.
    fn frame_names(pcs: &[u64]) -> Vec<String> {
        let resolved = crate::symbols::symbolizer().resolve_all(pcs.iter().copied());
        pcs.iter()
            .filter_map(|pc| resolved.get(pc))
            .flat_map(|frames| frames.iter().map(|f| f.name.to_string()))
            .collect()
    }

    #[inline(never)]
    fn park_here_for_the_test(stop: &mpsc::Receiver<()>) {
        let _ = stop.recv_timeout(Duration::from_secs(30));
    }

    #[test]
    fn signals_that_must_not_be_taken_over_are_refused() {
        for signal in [
            0,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGPIPE,
            libc::SIGCHLD,
            libc::SIGPROF,
            libc::SIGSEGV,
            libc::SIGKILL,
            65,
        ] {
            let refused = dump(signal, Duration::from_millis(10));
            assert!(
                matches!(&refused, Err(Error::Profiler(m)) if m.contains("cannot serve thread dumps")
                    && m.contains("SIGUSR1, SIGUSR2 or a real-time signal")),
                "{signal}: {refused:?}"
            );
        }
        let refused = dump(libc::SIGTERM, Duration::from_millis(10));
        assert!(
            matches!(&refused, Err(Error::Profiler(m)) if m.starts_with("signal 15 (SIGTERM) cannot")),
            "{refused:?}"
        );
        for signal in [
            libc::SIGURG,
            libc::SIGUSR1,
            libc::SIGRTMIN() + 2,
            libc::SIGRTMAX(),
        ] {
            assert!(usable(signal).is_ok(), "{signal}");
        }
    }

    extern "C" fn the_applications_own_handler(_: libc::c_int) {}

    #[test]
    fn a_handler_the_application_installs_later_stops_dumps_with_a_clear_error() {
        let _one = one_dump_test_at_a_time();
        // A thread of our own to answer: the harness's main thread blocks
        // every signal for a moment whenever it starts a test's thread.
        let (tx, rx) = mpsc::channel();
        let parked = std::thread::spawn(move || park_here_for_the_test(&rx));
        std::thread::sleep(Duration::from_millis(20));
        let signal = libc::SIGUSR2;
        let first = dump(signal, Duration::from_secs(2)).expect("our handler installs");
        let _ = tx.send(());
        parked.join().expect("parked thread");
        assert!(
            first.iter().filter(|t| t.pcs.is_some()).count() >= 2,
            "{first:?}"
        );
        // The application takes the signal over afterwards.
        // SAFETY: a zeroed sigaction with a plain handler, its flags and an
        // empty mask; the handler does nothing.
        unsafe {
            let mut own: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int) = the_applications_own_handler;
            own.sa_sigaction = handler as libc::sighandler_t;
            libc::sigemptyset(&mut own.sa_mask);
            libc::sigaction(signal, &own, std::ptr::null_mut());
        }
        let refused = dump(signal, Duration::from_millis(200));
        assert!(
            matches!(&refused, Err(Error::Profiler(m))
                if m.starts_with("signal 12 (SIGUSR2) now runs a handler of the application's")),
            "{refused:?}"
        );
    }

    #[test]
    fn every_thread_answers_with_its_stack_and_name() {
        let _one = one_dump_test_at_a_time();
        let (tx, rx) = mpsc::channel();
        let parked = std::thread::Builder::new()
            .name("parked-test".to_owned())
            .spawn(move || park_here_for_the_test(&rx))
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(50));
        let stacks = dump(libc::SIGURG, Duration::from_secs(2)).expect("dump");
        let thread = stacks
            .iter()
            .find(|t| t.name == "parked-test")
            .expect("the parked thread is listed");
        assert_eq!(thread.state, "sleeping");
        let names = frame_names(&thread.pcs.clone().expect("it answered"));
        assert!(
            names.iter().any(|n| n.ends_with("park_here_for_the_test")),
            "{names:?}"
        );
        let _ = tx.send(());
        parked.join().expect("join");
    }

    #[test]
    fn a_thread_blocking_the_signal_is_listed_without_a_stack_and_the_dump_completes() {
        let _one = one_dump_test_at_a_time();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let blocker = std::thread::Builder::new()
            .name("blocks-signal".to_owned())
            .spawn(move || {
                // SAFETY: a zeroed sigset_t is filled by sigemptyset/sigaddset;
                // pthread_sigmask changes only this thread's mask.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGURG);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                }
                let _ = ready_tx.send(gettid());
                let _ = stop_rx.recv_timeout(Duration::from_secs(30));
            })
            .expect("spawn");
        let tid = ready_rx.recv().expect("blocker started");
        let stacks = dump(libc::SIGURG, Duration::from_millis(200)).expect("dump");
        let blocked = stacks.iter().find(|t| t.tid == tid).expect("listed");
        assert_eq!(blocked.name, "blocks-signal");
        assert!(blocked.pcs.is_none());
        assert!(
            stacks.iter().filter(|t| t.pcs.is_some()).count() >= 2,
            "the other threads answered"
        );
        // Signalled anyway, it cannot answer: the capture gives up after
        // its timeout and the slot is abandoned.
        let started = Instant::now();
        assert_eq!(
            capture(tid, libc::SIGURG, Duration::from_millis(50)).expect("capture"),
            None
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        // When it unblocks, the late handler finds nothing waiting for it and
        // returns; the next dump is whole.
        let _ = stop_tx.send(());
        blocker.join().expect("join");
        let again = dump(libc::SIGURG, Duration::from_secs(2)).expect("dump");
        assert!(again.iter().all(|t| t.pcs.is_some()), "{again:?}");
    }

    #[test]
    fn a_poisoned_dump_lock_recovers() {
        let _one = one_dump_test_at_a_time();
        let _ = std::thread::spawn(|| {
            let _held = DUMPER.lock();
            panic!("poisoning the dump lock on purpose");
        })
        .join();
        assert!(DUMPER.is_poisoned());
        let stacks = dump(libc::SIGURG, Duration::from_secs(2)).expect("a dump after a panic");
        assert!(stacks.iter().filter(|t| t.pcs.is_some()).count() >= 2);
    }

    /// Threads that each sit in a function of their own (told apart by the
    /// constant they pass around, so the compiler cannot merge them) and
    /// keep blocking and unblocking the dump signal: a signal sent while it
    /// is blocked runs its handler late, when the dump that sent it may
    /// have given up and the next one given the slot to another thread.
    macro_rules! toggling_threads {
        ($($name:ident = $n:literal),+) => {$(
            #[inline(never)]
            fn $name(stop: &std::sync::atomic::AtomicBool) {
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: a zeroed sigset_t is initialised by
                    // sigemptyset/sigaddset; pthread_sigmask changes only
                    // this thread's mask.
                    unsafe {
                        let mut set: libc::sigset_t = std::mem::zeroed();
                        libc::sigemptyset(&mut set);
                        libc::sigaddset(&mut set, libc::SIGURG);
                        let how = if round % 2 == 0 { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
                        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
                    }
                    std::thread::sleep(Duration::from_micros(std::hint::black_box($n) * 150 + round % 7 * 100));
                    round += 1;
                }
                // SAFETY: as above; leave the signal unblocked.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGURG);
                    libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                }
            }
        )+};
    }
    toggling_threads!(
        toggling_a = 1,
        toggling_b = 2,
        toggling_c = 3,
        toggling_d = 4
    );

    #[test]
    fn late_handlers_against_back_to_back_dumps_write_only_their_own_stacks() {
        let _one = one_dump_test_at_a_time();
        type Body = fn(&std::sync::atomic::AtomicBool);
        let bodies: [(&str, Body); 4] = [
            ("toggling_a", toggling_a),
            ("toggling_b", toggling_b),
            ("toggling_c", toggling_c),
            ("toggling_d", toggling_d),
        ];
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let threads: Vec<_> = bodies
            .iter()
            .map(|&(name, body)| {
                let (stop, tx) = (stop.clone(), tx.clone());
                std::thread::spawn(move || {
                    let _ = tx.send((gettid(), name));
                    body(&stop);
                })
            })
            .collect();
        let owners: std::collections::HashMap<i32, &str> =
            (0..bodies.len()).filter_map(|_| rx.recv().ok()).collect();
        let tids: Vec<i32> = owners.keys().copied().collect();
        let (mut answered, mut late) = (0, 0);
        for _ in 0..300 {
            // Sent whether or not the signal is blocked, with a timeout
            // short enough that many answers come after the dump gave up.
            let captured =
                capture_threads(&tids, libc::SIGURG, Duration::from_micros(300)).expect("dump");
            for (tid, pcs) in captured {
                let Some(pcs) = pcs else {
                    late += 1;
                    continue;
                };
                answered += 1;
                let names = frame_names(&pcs.pcs);
                let own = owners[&tid];
                let theirs: Vec<&str> = bodies
                    .iter()
                    .map(|(name, _)| *name)
                    .filter(|name| names.iter().any(|n| n.ends_with(&format!("tests::{name}"))))
                    .collect();
                assert!(
                    theirs.is_empty() || theirs == [own],
                    "thread {tid} ({own}) got the stack of {theirs:?}: {names:?}"
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("toggling thread");
        }
        assert!(answered > 0 && late > 0, "answered {answered}, late {late}");
    }
}
