//! `bench-locks [--quick]`: the cost of `pprof_core::sync` locks next to
//! `std::sync::Mutex` and `parking_lot::Mutex`, and of a watched poll.
//! Prints markdown tables (medians over rounds). Not a test: nothing is
//! asserted. Run it in release (`cargo xtask bench` does).
//!
//! - uncontended: one thread locks, increments and unlocks, N times (a
//!   `Mutex`, and the write side of an `RwLock`);
//! - contended: T threads do the same on one lock (optionally spinning
//!   inside and outside the critical section), wall time per operation;
//! - a stack capture, what each recorded event pays;
//! - async: tokio's mutex and ours, uncontended;
//! - polls: a task polled N times (`yield_now`), plain, watched
//!   (`pprof_core::watch_polls`), labeled (`pprof_core::labels::scope`), and
//!   both (`pprof_core::label_request`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

/// A lock the benchmark can use: run `f` on the value under the lock.
trait Lock: Send + Sync + 'static {
    fn with(&self, f: impl FnOnce(&mut u64));
}

impl Lock for std::sync::Mutex<u64> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

impl Lock for parking_lot::Mutex<u64> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self.lock());
    }
}

impl Lock for pprof_core::sync::Mutex<u64> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// The write side of a reader-writer lock, as a [`Lock`].
struct Write<L>(L);

impl Lock for Write<std::sync::RwLock<u64>> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

impl Lock for Write<parking_lot::RwLock<u64>> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self.0.write());
    }
}

impl Lock for Write<pprof_core::sync::RwLock<u64>> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// Profile settings of a pprof_core run: (label, mutex fraction, block rate ns).
const SETTINGS: &[(&str, u64, u64)] = &[
    ("pprof_core, both off", 0, 0),
    (
        "pprof_core, mutex off, block rate 1 ms (defaults)",
        0,
        1_000_000,
    ),
    ("pprof_core, mutex off, block rate 10 µs", 0, 10_000),
    ("pprof_core, mutex fraction 10, block off", 10, 0),
    ("pprof_core, mutex fraction 1, block off", 1, 0),
    ("pprof_core, mutex off, block rate 1 ns (every wait)", 0, 1),
    (
        "pprof_core, mutex fraction 1, block rate 1 ns (everything)",
        1,
        1,
    ),
];

/// The row names of the locks ours is compared with.
const MUTEXES: [&str; 2] = ["std::sync::Mutex", "parking_lot::Mutex"];
const RWLOCKS: [&str; 2] = ["std::sync::RwLock", "parking_lot::RwLock"];

fn spin(iterations: u32) {
    for i in 0..iterations {
        black_box(i);
    }
}

/// Nanoseconds per lock+unlock, one thread.
fn uncontended<L: Lock>(lock: &L, n: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        lock.with(|v| *v += 1);
    }
    black_box(lock);
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Wall nanoseconds per operation with `threads` threads on one lock.
fn contended<L: Lock>(
    lock: Arc<L>,
    threads: usize,
    per_thread: u64,
    inside: u32,
    outside: u32,
) -> f64 {
    let barrier = Arc::new(std::sync::Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (lock, barrier) = (lock.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..per_thread {
                    lock.with(|v| {
                        *v += 1;
                        spin(inside);
                    });
                    spin(outside);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for w in workers {
        let _ = w.join();
    }
    start.elapsed().as_nanos() as f64 / (threads as u64 * per_thread) as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Every lock kind and setting measured by `measure`, interleaved: each
/// round runs all of them once, so drift on a shared machine spreads over
/// all rows. One row per kind, the median over rounds.
fn table(title: &str, rounds: usize, others: [&str; 2], measure: &dyn Fn(Kind) -> f64) {
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    for _ in 0..rounds {
        let mut i = 0;
        let mut push = |label: &str, value: f64| {
            if rows.len() <= i {
                rows.push((label.to_owned(), Vec::new()));
            }
            rows[i].1.push(value);
            i += 1;
        };
        push(others[0], measure(Kind::Std));
        push(others[1], measure(Kind::ParkingLot));
        for (label, fraction, rate) in SETTINGS {
            pprof_core::sync::set_mutex_profile_fraction(*fraction);
            pprof_core::sync::set_block_profile_rate(*rate);
            push(label, measure(Kind::Ours));
        }
    }
    pprof_core::sync::set_mutex_profile_fraction(pprof_core::sync::DEFAULT_MUTEX_PROFILE_FRACTION);
    pprof_core::sync::set_block_profile_rate(pprof_core::sync::DEFAULT_BLOCK_PROFILE_RATE);
    println!("\n### {title}\n");
    println!("| lock | ns per operation (median of {rounds}) | vs std |");
    println!("|---|---|---|");
    let std_ns = median(rows[0].1.clone());
    for (label, values) in rows {
        let m = median(values);
        println!("| {label} | {m:.1} | {:.2} |", m / std_ns);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Std,
    ParkingLot,
    Ours,
}

fn run_uncontended(kind: Kind, n: u64) -> f64 {
    match kind {
        Kind::Std => uncontended(&std::sync::Mutex::new(0), n),
        Kind::ParkingLot => uncontended(&parking_lot::Mutex::new(0), n),
        Kind::Ours => uncontended(&pprof_core::sync::Mutex::new(0), n),
    }
}

fn run_uncontended_rwlock(kind: Kind, n: u64) -> f64 {
    match kind {
        Kind::Std => uncontended(&Write(std::sync::RwLock::new(0)), n),
        Kind::ParkingLot => uncontended(&Write(parking_lot::RwLock::new(0)), n),
        Kind::Ours => uncontended(&Write(pprof_core::sync::RwLock::new(0)), n),
    }
}

fn run_contended(kind: Kind, threads: usize, n: u64, inside: u32, outside: u32) -> f64 {
    match kind {
        Kind::Std => contended(
            Arc::new(std::sync::Mutex::new(0)),
            threads,
            n,
            inside,
            outside,
        ),
        Kind::ParkingLot => contended(
            Arc::new(parking_lot::Mutex::new(0)),
            threads,
            n,
            inside,
            outside,
        ),
        Kind::Ours => contended(
            Arc::new(pprof_core::sync::Mutex::new(0)),
            threads,
            n,
            inside,
            outside,
        ),
    }
}

/// How a benchmarked task is wrapped.
#[derive(Clone, Copy)]
enum Wrap {
    Plain,
    Watched,
    /// `labels::scope` with two labels.
    Labeled,
    /// `label_request`: labels and poll watching, as `LabelRequests` makes it.
    Request,
}

/// Nanoseconds per poll of a task that yields `n` times, on a
/// current-thread runtime.
fn polls(n: u32, wrap: Wrap) -> f64 {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return f64::NAN;
    };
    let task = async move {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    };
    let start = Instant::now();
    match wrap {
        Wrap::Plain => runtime.block_on(task),
        Wrap::Watched => runtime.block_on(pprof_core::watch_polls(task)),
        Wrap::Labeled => runtime.block_on(pprof_core::labels::scope(
            [
                ("http.route", "/users/{id}"),
                ("http.request.method", "GET"),
            ],
            task,
        )),
        Wrap::Request => runtime.block_on(pprof_core::label_request("GET", "/users/{id}", task)),
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

/// Nanoseconds per `lock().await` + unlock of an uncontended async mutex.
fn async_uncontended(n: u64, ours: bool) -> f64 {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return f64::NAN;
    };
    runtime.block_on(async move {
        let start = Instant::now();
        if ours {
            let lock = pprof_core::sync::tokio::Mutex::new(0u64);
            for _ in 0..n {
                *lock.lock().await += 1;
            }
            black_box(&lock);
        } else {
            let lock = tokio::sync::Mutex::new(0u64);
            for _ in 0..n {
                *lock.lock().await += 1;
            }
            black_box(&lock);
        }
        start.elapsed().as_nanos() as f64 / n as f64
    })
}

/// Nanoseconds to capture the stack `depth` frames below here, as each
/// recorded contention event does (raw return addresses via `backtrace`).
fn capture_at_depth(depth: u32, n: u32) -> f64 {
    if depth > 0 {
        return black_box(capture_at_depth(depth - 1, n));
    }
    let start = Instant::now();
    for _ in 0..n {
        let mut frames = 0usize;
        backtrace::trace(|frame| {
            black_box(frame.ip());
            frames += 1;
            frames < 64
        });
        black_box(frames);
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (r, n, m) = if quick {
        (1, 1_000_000, 20_000)
    } else {
        (5, 20_000_000, 500_000)
    };
    println!(
        "## bench-locks{}\n\n{} threads available; release build; medians of {r} rounds.",
        if quick { " --quick" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    table(
        &format!("Uncontended: one thread, lock + increment + unlock, {n} times"),
        r,
        MUTEXES,
        &|kind| run_uncontended(kind, n),
    );
    table(
        &format!("Uncontended RwLock: one thread, write + increment + unlock, {n} times"),
        r,
        RWLOCKS,
        &|kind| run_uncontended_rwlock(kind, n),
    );
    table(
        &format!("Contended, short critical section: 2 threads × {m} increments"),
        r,
        MUTEXES,
        &|kind| run_contended(kind, 2, m, 0, 0),
    );
    table(
        &format!(
            "Contended, 4 threads × {} increments, ~200 ns of work inside and outside the lock",
            m / 4
        ),
        r,
        MUTEXES,
        &|kind| run_contended(kind, 4, m / 4, 200, 200),
    );
    table(
        &format!(
            "Contended at every handoff: 2 threads × {} increments, ~2 µs of work inside the lock, none outside",
            m / 20
        ),
        r,
        MUTEXES,
        &|kind| run_contended(kind, 2, m / 20, 2_000, 0),
    );

    println!("\n### What one recorded event pays: a stack capture\n");
    println!("| stack depth below main | ns per capture (median of {r}) |");
    println!("|---|---|");
    for depth in [10, 30] {
        let mut values = Vec::new();
        for _ in 0..r {
            values.push(capture_at_depth(depth, if quick { 1_000 } else { 20_000 }));
        }
        println!("| ~{depth} frames | {:.0} |", median(values));
    }

    let n_async = n / 10;
    println!(
        "\n### Async, uncontended: one task, `lock().await` + increment + unlock, {n_async} times\n"
    );
    println!("| lock | ns per operation (median of {r}) |");
    println!("|---|---|");
    let (mut plain, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..r {
        plain.push(async_uncontended(n_async, false));
        ours.push(async_uncontended(n_async, true));
    }
    println!("| tokio::sync::Mutex | {:.1} |", median(plain));
    println!("| pprof_core::sync::tokio::Mutex | {:.1} |", median(ours));

    let n_polls = if quick { 100_000 } else { 5_000_000 };
    println!(
        "\n### Poll watching: one task polled {n_polls} times (yield_now), current-thread runtime\n"
    );
    println!("| future | ns per poll (median of {r}) |");
    println!("|---|---|");
    let wraps = [
        ("plain", Wrap::Plain),
        ("pprof_core::watch_polls", Wrap::Watched),
        ("pprof_core::labels::scope (two labels)", Wrap::Labeled),
        (
            "pprof_core::label_request (labels + watching)",
            Wrap::Request,
        ),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); wraps.len()];
    for _ in 0..r {
        for (i, (_, wrap)) in wraps.iter().enumerate() {
            times[i].push(polls(n_polls, *wrap));
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    let plain = medians[0];
    println!("| plain | {plain:.1} |");
    for ((name, _), ns) in wraps.iter().zip(&medians).skip(1) {
        println!("| {name} | {ns:.1} (+{:.1}) |", ns - plain);
    }
}
