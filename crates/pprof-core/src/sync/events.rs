//! The event tables behind the mutex and block profiles: process-wide,
//! keyed by raw stack, fed by this module's locks and by poll watching,
//! with Go's sampling rules.
//!
//! Values are scaled when they are recorded, as Go (≥ 1.21) does: a mutex
//! event sampled at fraction `n` adds `n` contentions and `n ×` its delay; a
//! block event shorter than the rate `r` is kept with probability
//! `delay / r` and then adds `r / delay` contentions and `r` nanoseconds.
//! The tables hold at most [`MAX_STACKS`] stacks each; events on further
//! stacks are counted as dropped and otherwise ignored.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::labels::{self, Labels};

/// Distinct stacks each table keeps.
pub(crate) const MAX_STACKS: usize = 4096;

/// Frames kept per stack (leaf first); deeper callers are cut.
const MAX_DEPTH: usize = 64;

/// Which of the two profiles an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Delay charged to the critical section that caused it (`/mutex`).
    Mutex,
    /// Time a thread (or a runtime worker) spent blocked (`/block`).
    Block,
}

/// Default mutex profile fraction: off, as in Go (see `docs/LOCKS.md` for
/// what turning it on costs).
pub const DEFAULT_MUTEX_PROFILE_FRACTION: u64 = 0;
/// Default block profile rate in nanoseconds: every blocking event of 1 ms
/// or more is recorded, shorter ones with probability `duration / 1 ms`, so
/// the stack captures (10–30 µs each) cost at most a few percent of the
/// time threads already spent waiting.
pub const DEFAULT_BLOCK_PROFILE_RATE: u64 = 1_000_000;

static MUTEX_FRACTION: AtomicU64 = AtomicU64::new(DEFAULT_MUTEX_PROFILE_FRACTION);
static BLOCK_RATE: AtomicU64 = AtomicU64::new(DEFAULT_BLOCK_PROFILE_RATE);

/// Like Go's `runtime.SetMutexProfileFraction`: on average 1 in `fraction`
/// contention events of [`sync`](crate::sync) locks is recorded in the mutex
/// profile (its values scaled up by `fraction`); `0` turns the mutex profile
/// off. Returns the previous fraction. The default is
/// [`DEFAULT_MUTEX_PROFILE_FRACTION`].
pub fn set_mutex_profile_fraction(fraction: u64) -> u64 {
    MUTEX_FRACTION.swap(fraction, Ordering::Relaxed)
}

/// The current mutex profile fraction (see [`set_mutex_profile_fraction`]).
pub fn mutex_profile_fraction() -> u64 {
    MUTEX_FRACTION.load(Ordering::Relaxed)
}

/// Like Go's `runtime.SetBlockProfileRate`: blocking events of at least
/// `rate_ns` nanoseconds are all recorded in the block profile, shorter
/// ones with probability `duration / rate_ns` (and then scaled back up);
/// `1` records every event, `0` turns the block profile off. Returns the
/// previous rate. The default is [`DEFAULT_BLOCK_PROFILE_RATE`].
pub fn set_block_profile_rate(rate_ns: u64) -> u64 {
    BLOCK_RATE.swap(rate_ns, Ordering::Relaxed)
}

/// The current block profile rate in nanoseconds (see [`set_block_profile_rate`]).
pub fn block_profile_rate() -> u64 {
    BLOCK_RATE.load(Ordering::Relaxed)
}

pub(crate) fn mutex_enabled() -> bool {
    mutex_profile_fraction() > 0
}

pub(crate) fn block_enabled() -> bool {
    block_profile_rate() > 0
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    count: f64,
    delay: f64,
}

/// A recorded stack (lookup addresses, leaf first) and the labels in
/// force where it was recorded.
type StackKey = (Box<[u64]>, Labels);

#[derive(Debug, Default)]
struct Table {
    stacks: Mutex<HashMap<StackKey, Totals>>,
    dropped: AtomicU64,
}

fn table(kind: Kind) -> &'static Table {
    static MUTEX: OnceLock<Table> = OnceLock::new();
    static BLOCK: OnceLock<Table> = OnceLock::new();
    match kind {
        Kind::Mutex => MUTEX.get_or_init(Table::default),
        Kind::Block => BLOCK.get_or_init(Table::default),
    }
}

impl Table {
    /// Add to the totals of a stack and the labels in force with it.
    fn add(&self, pcs: &[u64], labels: Labels, count: f64, delay: f64) {
        let key = (Box::<[u64]>::from(pcs), labels);
        let mut stacks = self.stacks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(totals) = stacks.get_mut(&key) {
            totals.count += count;
            totals.delay += delay;
        } else if stacks.len() < MAX_STACKS {
            stacks.insert(key, Totals { count, delay });
        } else {
            drop(stacks);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A fast per-thread random number in `[0, 1)` (xorshift64*), for sampling.
fn random_unit() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            // Seed from the clock and this thread's slot address.
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            x = (u64::from(nanos) << 20) ^ (state as *const Cell<u64> as u64) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        #[allow(clippy::cast_precision_loss)]
        let unit = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        unit
    })
}

/// Monotonic nanoseconds since the first call in this process.
pub(crate) fn now_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let nanos = EPOCH.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// Record, at unlock and after the lock is released, what the caller's
/// stack is charged with: `mutex`, `(count, delay ns)` by which the critical
/// section just left delayed waiters (`count` of them for the first time),
/// sampled at the mutex fraction; `block`, how long this thread waited to
/// get the lock, sampled at the block rate. The stack is captured once, and
/// only if some event is sampled.
#[inline(never)]
pub(crate) fn record_unlock(mutex: Option<(u64, u64)>, block: Option<Duration>) {
    record_at_rates(mutex, block, mutex_profile_fraction(), block_profile_rate());
}

/// [`record_unlock`] at the given fraction and block rate.
#[inline(never)]
pub(crate) fn record_at_rates(
    mutex: Option<(u64, u64)>,
    block: Option<Duration>,
    fraction: u64,
    block_rate: u64,
) {
    #[allow(clippy::cast_precision_loss)]
    let scale = fraction as f64;
    let mutex = mutex.filter(|&(count, delay)| {
        fraction > 0 && (count > 0 || delay > 0) && (fraction == 1 || random_unit() * scale < 1.0)
    });
    let block = block.and_then(|waited| block_sample(waited, block_rate, random_unit));
    if mutex.is_none() && block.is_none() {
        return;
    }
    // The first frames are the capture machinery itself; the encoder
    // trims them after symbolization.
    let mut buf = [0; MAX_DEPTH];
    let n = crate::signals::stack_here(&mut buf);
    if let Some((count, delay)) = mutex {
        #[allow(clippy::cast_precision_loss)]
        table(Kind::Mutex).add(
            &buf[..n],
            labels::current(),
            count as f64 * scale,
            delay as f64 * scale,
        );
    }
    if let Some((count, delay)) = block {
        table(Kind::Block).add(&buf[..n], labels::current(), count, delay);
    }
}

/// Record one blocking event of `waited` whose time went to several stacks
/// captured elsewhere (a worker's stacks taken by the poll watchdog, each
/// with the labels in force then and the time charged to it; lookup
/// addresses, leaf first). The event is sampled once, at the block rate;
/// its scaled delay is split between the stacks by their time, and its
/// count goes to the stack with the most (one event, counted once, where
/// it mostly waited).
pub(crate) fn record_block_stacks(stacks: &[(Vec<u64>, Labels, u64)], waited: Duration) {
    let Some((count, delay)) = block_sample(waited, block_profile_rate(), random_unit) else {
        return;
    };
    #[allow(clippy::cast_precision_loss)]
    let total = stacks.iter().map(|(_, _, time)| *time).sum::<u64>().max(1) as f64;
    let most = stacks
        .iter()
        .enumerate()
        .max_by_key(|(_, (_, _, time))| *time)
        .map(|(i, _)| i);
    for (i, (pcs, labels, time)) in stacks.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let share = *time as f64 / total;
        let counted = if Some(i) == most { count } else { 0.0 };
        let pcs = &pcs[..pcs.len().min(MAX_DEPTH)];
        table(Kind::Block).add(pcs, labels.clone(), counted, delay * share);
    }
}

/// Go's `blockevent` rule: `None` when not sampled, else the scaled
/// `(contentions, delay ns)` to add.
fn block_sample(waited: Duration, rate: u64, random: impl FnOnce() -> f64) -> Option<(f64, f64)> {
    if rate == 0 {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let (nanos, rate) = (waited.as_nanos().max(1) as f64, rate as f64);
    if nanos >= rate {
        Some((1.0, nanos))
    } else if random() * rate < nanos {
        Some((rate / nanos, rate))
    } else {
        None
    }
}

/// Number of distinct stacks recorded so far (the index page's count).
pub(crate) fn stack_count(kind: Kind) -> usize {
    table(kind)
        .stacks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len()
}

/// Events not recorded because the table was full.
pub(crate) fn dropped(kind: Kind) -> u64 {
    table(kind).dropped.load(Ordering::Relaxed)
}

/// Every recorded stack (lookup addresses, leaf first) with the labels in
/// force where it was recorded and its scaled `(contentions, delay ns)` so far.
pub(crate) fn recorded(kind: Kind) -> Vec<(Vec<u64>, Labels, [i64; 2])> {
    table(kind)
        .stacks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|((pcs, labels), totals)| {
            #[allow(clippy::cast_possible_truncation)]
            let values = [totals.count.round() as i64, totals.delay.round() as i64];
            (pcs.to_vec(), labels.clone(), values)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sampling_follows_go() {
        let ms = Duration::from_millis;
        // Off.
        assert_eq!(block_sample(ms(5), 0, || 0.0), None);
        // At or above the rate: always, unscaled.
        assert_eq!(block_sample(ms(5), 1_000, || 0.99), Some((1.0, 5e6)));
        // Below: kept when random × rate < duration, then scaled to the rate.
        let short = Duration::from_nanos(250);
        assert_eq!(block_sample(short, 1_000, || 0.2), Some((4.0, 1_000.0)));
        assert_eq!(block_sample(short, 1_000, || 0.3), None);
    }

    #[test]
    fn random_unit_is_in_range_and_varies() {
        let draws: Vec<f64> = (0..1000).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }

    #[test]
    fn table_is_bounded_and_counts_what_it_drops() {
        let t = Table::default();
        for i in 0..(MAX_STACKS as u64 + 10) {
            t.add(&[i, 1], Labels::none(), 1.0, 10.0);
        }
        t.add(&[0, 1], Labels::none(), 1.0, 10.0);
        let stacks = t.stacks.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(stacks.len(), MAX_STACKS);
        let key = (Box::<[u64]>::from([0u64, 1]), Labels::none());
        assert_eq!(stacks.get(&key).map(|t| t.count), Some(2.0));
        assert_eq!(t.dropped.load(Ordering::Relaxed), 10);
    }
}
