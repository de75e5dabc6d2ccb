//! The tutorial program: a zoo whose animals live in a loop, each with one
//! planted problem to find with `go tool pprof` (a Rust port of the Go
//! pprof practice program).
//!
//! | animal | problem | found in |
//! |---|---|---|
//! | [`Tiger::eat`] | burns CPU | `/debug/pprof/profile` |
//! | [`Mouse::steal`] | keeps a growing buffer alive | `/debug/pprof/heap` |
//! | [`Dog::run`] | allocates and drops 16 MiB per call | `/debug/pprof/allocs` |
//! | [`Wolf::drink`] | starts 10 threads per call that sleep for 30 s | `/debug/pprof/goroutine` |

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

/// How hard the animals misbehave. The defaults mirror the Go program; the
/// tests shrink them.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Time between two rounds of the zoo.
    pub tick: Duration,
    /// CPU time `Tiger::eat` burns per round.
    pub eat: Duration,
    /// Bytes `Mouse::steal` keeps per round.
    pub steal_bytes: usize,
    /// Bytes after which `Mouse::steal` stops growing.
    pub steal_limit: usize,
    /// Bytes `Dog::run` allocates (and drops) per round.
    pub run_bytes: usize,
    /// How long each thread `Wolf::drink` starts sleeps.
    pub drink: Duration,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            eat: Duration::from_millis(500),
            steal_bytes: 1 << 20,
            steal_limit: 1 << 30,
            run_bytes: 16 << 20,
            drink: Duration::from_secs(30),
        }
    }
}

/// An animal of the zoo; each round it lives once.
pub trait Animal: Send {
    /// One round of the animal's life.
    fn live(&mut self, sizes: &Sizes);
}

/// Eats CPU.
#[derive(Debug, Default)]
pub struct Tiger;

impl Tiger {
    /// The planted CPU hog: spins for `sizes.eat`. The loop body is plain
    /// arithmetic, so the time is spent in this function itself (flat), in
    /// debug and release builds alike.
    #[inline(never)]
    pub fn eat(&self, sizes: &Sizes) {
        let start = Instant::now();
        let mut x = black_box(0x9e37_79b9_7f4a_7c15_u64);
        while start.elapsed() < sizes.eat {
            let mut n = 0u32;
            while n < 200_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                n += 1;
            }
        }
        black_box(x);
    }
}

impl Animal for Tiger {
    fn live(&mut self, sizes: &Sizes) {
        self.eat(sizes);
    }
}

/// Hoards memory.
#[derive(Debug, Default)]
pub struct Mouse {
    buffer: Vec<Box<[u8]>>,
    held: usize,
}

impl Mouse {
    /// The planted leak: keeps another `sizes.steal_bytes` alive every round,
    /// until `sizes.steal_limit`.
    #[inline(never)]
    pub fn steal(&mut self, sizes: &Sizes) {
        if self.held + sizes.steal_bytes <= sizes.steal_limit {
            let block = vec![1u8; sizes.steal_bytes].into_boxed_slice();
            self.held += block.len();
            self.buffer.push(black_box(block));
        }
    }
}

impl Animal for Mouse {
    fn live(&mut self, sizes: &Sizes) {
        self.steal(sizes);
    }
}

/// Churns memory.
#[derive(Debug, Default)]
pub struct Dog;

impl Dog {
    /// The planted churn: allocates `sizes.run_bytes` and drops it at once.
    #[inline(never)]
    pub fn run(&self, sizes: &Sizes) {
        let block = vec![0u8; sizes.run_bytes];
        black_box(&block);
    }
}

impl Animal for Dog {
    fn live(&mut self, sizes: &Sizes) {
        self.run(sizes);
    }
}

/// Leaks threads.
#[derive(Debug, Default)]
pub struct Wolf;

impl Wolf {
    /// The planted thread leak: every call starts 10 threads (the Rust
    /// analog of Go's goroutines) that each sleep for `sizes.drink`, so
    /// with the defaults about 300 of them are alive at any time.
    #[inline(never)]
    pub fn drink(&self, sizes: &Sizes) {
        for _ in 0..10 {
            let nap = sizes.drink;
            // A thread that cannot start is simply not leaked this round.
            let _ = std::thread::Builder::new()
                .name("wolf".to_owned())
                .spawn(move || std::thread::sleep(nap));
        }
    }
}

impl Animal for Wolf {
    fn live(&mut self, sizes: &Sizes) {
        self.drink(sizes);
    }
}

/// Start the zoo on its own thread (named `zoo`); it lives until the process ends.
pub fn spawn_zoo(sizes: Sizes) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("zoo".to_owned())
        .spawn(move || {
            let mut zoo: Vec<Box<dyn Animal>> = vec![
                Box::new(Tiger),
                Box::new(Mouse::default()),
                Box::new(Dog),
                Box::new(Wolf),
            ];
            loop {
                for animal in &mut zoo {
                    animal.live(&sizes);
                }
                std::thread::sleep(sizes.tick);
            }
        })
}

/// The practice server: a greeting at `/` and the pprof routes.
pub fn app() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { "the zoo is open: see /debug/pprof/\n" }),
        )
        .merge(pprof_axum::routes())
}

/// Serve [`app`] on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    axum::serve(listener, app()).await
}
