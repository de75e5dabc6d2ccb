//! `lock-loop std|ours|ours-rw|std-rw N`: lock, increment and unlock one
//! uncontended lock N times, nothing else. For counting instructions, not
//! timing: `valgrind --tool=callgrind lock-loop ours 1000000` against the
//! same with 2000000, so that start-up cancels out (docs/LOCKS.md).

use std::hint::black_box;
use std::sync::PoisonError;

/// Lock `$lock` with `.$acquire()`, increment and unlock, `$n` times; the count.
macro_rules! count {
    ($lock:expr, $acquire:ident, $n:expr) => {{
        let lock = $lock;
        for _ in 0..$n {
            *black_box(&lock)
                .$acquire()
                .unwrap_or_else(PoisonError::into_inner) += 1;
        }
        lock.into_inner().unwrap_or_default()
    }};
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_default();
    let n: u64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let total = match which.as_str() {
        "std" => count!(std::sync::Mutex::new(0u64), lock, n),
        "ours" => count!(pprof_core::sync::Mutex::new(0u64), lock, n),
        "std-rw" => count!(std::sync::RwLock::new(0u64), write, n),
        "ours-rw" => count!(pprof_core::sync::RwLock::new(0u64), write, n),
        other => {
            eprintln!("lock-loop: std, ours, std-rw or ours-rw, not {other:?}");
            std::process::exit(2);
        }
    };
    println!("{total}");
}
