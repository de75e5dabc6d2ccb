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
//! its slot no longer waiting and returns without writing.
//! How the handler unwinds is [`unwind`](super::unwind)'s business.

use std::fs;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{gettid, handler, unwind};
use crate::error::Error;

use super::labels::LabelSet;
use super::unwind::{MAX_FRAMES, Outcome};

/// A slot's life: free → waiting (the dumper signalled its thread) →
/// writing (the handler claimed it) → done (the dumper reads it), or
/// waiting → abandoned (the dumper gave up).
const FREE: u8 = 0;
const WAITING: u8 = 1;
const WRITING: u8 = 2;
const DONE: u8 = 3;
const ABANDONED: u8 = 4;

struct Slot {
    tid: AtomicI32,
    state: AtomicU8,
    len: AtomicUsize,
    /// How far the handler's walk got ([`Outcome`] as a byte).
    outcome: AtomicU8,
    /// A reference to the thread's labels (0: none), see [`super::labels`].
    labels: AtomicUsize,
    /// Leaf first: the interrupted pc, then return addresses.
    pcs: [AtomicUsize; MAX_FRAMES],
}

impl Slot {
    fn new() -> Self {
        Self {
            tid: AtomicI32::new(0),
            state: AtomicU8::new(FREE),
            len: AtomicUsize::new(0),
            outcome: AtomicU8::new(0),
            labels: AtomicUsize::new(0),
            pcs: std::array::from_fn(|_| AtomicUsize::new(0)),
        }
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
    installed: None,
});

struct Dumper {
    pool: Option<&'static Pool>,
    installed: Option<i32>,
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
    Ok(capture_threads(&[tid], signal, timeout)?
        .pop()
        .and_then(|(_, answer)| answer.map(|a| (a.pcs, a.labels))))
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
    let mut dumper = DUMPER
        .lock()
        .map_err(|_| Error::Profiler("thread dump state poisoned".to_owned()))?;
    install(&mut dumper, signal)?;
    let pool = pool_for(&mut dumper, tids.len());

    // Assign a slot per thread, skipping slots a late handler may still be
    // writing into.
    let mut assigned: Vec<(i32, Option<&Slot>)> = Vec::with_capacity(tids.len());
    let mut free_slots = pool
        .slots
        .iter()
        .filter(|s| s.state.load(Ordering::Acquire) != WRITING);
    for &tid in tids {
        let slot = free_slots.next();
        if let Some(slot) = slot {
            slot.len.store(0, Ordering::Relaxed);
            slot.tid.store(tid, Ordering::Relaxed);
            slot.state.store(WAITING, Ordering::Release);
        }
        assigned.push((tid, slot));
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    for (tid, slot) in &mut assigned {
        let Some(s) = slot else { continue };
        // SAFETY: tgkill only sends a signal; a handler for it is installed
        // (so it cannot kill the thread) and the target is one of our
        // threads (or gone, which tgkill reports).
        let sent = unsafe { libc::syscall(libc::SYS_tgkill, pid, *tid, signal) };
        if sent != 0 {
            s.state.store(FREE, Ordering::Release);
            *slot = None;
        }
    }

    let deadline = Instant::now() + timeout;
    let pending = |assigned: &[(i32, Option<&Slot>)]| {
        assigned.iter().any(|(_, s)| {
            s.is_some_and(|s| matches!(s.state.load(Ordering::Acquire), WAITING | WRITING))
        })
    };
    while pending(&assigned) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(assigned
        .into_iter()
        .map(|(tid, slot)| (tid, slot.and_then(|s| collect(s, deadline + timeout))))
        .collect())
}

/// The stack a slot holds, or `None` (and the slot abandoned) if its thread
/// never answered. A handler caught mid-write gets until `hard_deadline`.
fn collect(slot: &Slot, hard_deadline: Instant) -> Option<Answer> {
    loop {
        match slot
            .state
            .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return None,
            Err(DONE) => break,
            Err(WRITING) if Instant::now() < hard_deadline => std::thread::yield_now(),
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
    slot.state.store(FREE, Ordering::Release);
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

/// Install the handler for `signal` once. Refuses a signal the application
/// handles itself; never restores the default action, so a late signal finds
/// a harmless handler.
fn install(dumper: &mut Dumper, signal: i32) -> Result<(), Error> {
    if dumper.installed == Some(signal) {
        return Ok(());
    }
    // Not: signals that cannot be caught, the CPU profiler's, and the ones
    // the kernel raises for faults (a handler there would hide crashes).
    const UNUSABLE: [i32; 7] = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGPROF,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
    ];
    if !(1..=64).contains(&signal) || UNUSABLE.contains(&signal) {
        return Err(Error::Profiler(format!(
            "signal {signal} cannot serve thread dumps; choose another with Config::thread_signal"
        )));
    }
    // Run the unwinder's one-time set-up here, outside any signal handler.
    unwind::prepare();
    handler::install(signal, on_signal)?;
    dumper.installed = Some(signal);
    Ok(())
}

/// The signal handler: record this thread's stack into its slot, if a dump
/// is waiting for it. Async-signal-safe: atomics, `gettid`, the unwinder.
extern "C" fn on_signal(_: libc::c_int, _: *mut libc::siginfo_t, context: *mut libc::c_void) {
    handler::keeping_errno(|| record_stack(handler::interrupted_pc(context)));
}

fn record_stack(interrupted: Option<usize>) {
    let pool = POOL.load(Ordering::Acquire);
    if pool.is_null() {
        return;
    }
    // SAFETY: pools are leaked (`pool_for`), so a non-null pointer is valid
    // for the rest of the process.
    let pool = unsafe { &*pool };
    let tid = gettid();
    let Some(slot) = pool.slots.iter().find(|s| {
        s.tid.load(Ordering::Relaxed) == tid
            && s.state
                .compare_exchange(WAITING, WRITING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }) else {
        return;
    };
    // SAFETY: we are in the handler, on the thread being unwound, and
    // `install` ran `unwind::prepare` before any signal was sent.
    let (len, outcome) = unsafe { unwind::from_signal(interrupted, &slot.pcs) };
    slot.outcome.store(outcome as u8, Ordering::Relaxed);
    slot.labels
        .store(super::labels::retain_current(), Ordering::Relaxed);
    slot.len.store(len, Ordering::Release);
    slot.state.store(DONE, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[inline(never)]
    fn park_here_for_the_test(stop: &mpsc::Receiver<()>) {
        let _ = stop.recv_timeout(Duration::from_secs(30));
    }

    #[test]
    fn signals_that_must_not_be_taken_over_are_refused() {
        for signal in [0, libc::SIGPROF, libc::SIGSEGV, libc::SIGKILL, 65] {
            let refused = dump(signal, Duration::from_millis(10));
            assert!(
                matches!(&refused, Err(Error::Profiler(m)) if m.contains("cannot serve thread dumps")),
                "{signal}: {refused:?}"
            );
        }
    }

    #[test]
    fn every_thread_answers_with_its_stack_and_name() {
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
        let pcs = thread.pcs.clone().expect("it answered");
        let resolved = crate::symbols::symbolizer().resolve_all(pcs.iter().copied());
        let names: Vec<String> = pcs
            .iter()
            .filter_map(|pc| resolved.get(pc))
            .flat_map(|frames| frames.iter().map(|f| f.name.to_string()))
            .collect();
        assert!(
            names.iter().any(|n| n.ends_with("park_here_for_the_test")),
            "{names:?}"
        );
        let _ = tx.send(());
        parked.join().expect("join");
    }

    #[test]
    fn a_thread_blocking_the_signal_is_listed_without_a_stack_and_the_dump_completes() {
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
}
