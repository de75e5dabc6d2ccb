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
//! | [`Wolf::howl`] | holds the den's lock for a second while the cat waits | `/debug/pprof/mutex` |
//! | [`Cat::pee`] | waits a second for the den the wolf holds | `/debug/pprof/block` |
//! | [`Sloth::nap`] | blocks a runtime worker for 100 ms every half second | `/debug/pprof/block` (poll watching) |
//!
//! Everything each animal does carries its label (`animal=tiger`, …), and
//! every HTTP request its route and method: `go tool pprof -tagfocus
//! animal=tiger` keeps the tiger's samples.

use std::hint::black_box;
use std::sync::PoisonError;
use std::sync::mpsc::{Receiver, Sender, channel};
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
    /// How long `Wolf::howl` holds the den (while the cat waits for it).
    pub howl: Duration,
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
            howl: Duration::from_secs(1),
        }
    }
}

/// An animal of the zoo; each round it lives once.
pub trait Animal: Send {
    /// Its kind, the `animal` label of everything it does.
    fn name(&self) -> &'static str;

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
    fn name(&self) -> &'static str {
        "tiger"
    }

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
    fn name(&self) -> &'static str {
        "mouse"
    }

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
    fn name(&self) -> &'static str {
        "dog"
    }

    fn live(&mut self, sizes: &Sizes) {
        self.run(sizes);
    }
}

/// Leaks threads and hogs the den.
#[derive(Debug, Default)]
pub struct Wolf {
    /// Tells the cat the den is taken; see [`spawn_zoo`].
    cat: Option<Sender<()>>,
}

/// The den wolf and cat share: a profiled lock, a drop-in for
/// `std::sync::Mutex`, so its contention shows in `/mutex` and `/block`.
static DEN: pprof_core::sync::Mutex<()> = pprof_core::sync::Mutex::new(());

impl Wolf {
    /// A wolf that calls `cat` each time it takes the den.
    pub fn new(cat: Sender<()>) -> Self {
        Self { cat: Some(cat) }
    }

    /// The planted lock hog: takes the den, calls the cat (who then waits
    /// for the den) and howls for `sizes.howl` before leaving. The mutex
    /// profile charges the cat's wait to this critical section, as Go does.
    #[inline(never)]
    pub fn howl(&self, sizes: &Sizes) {
        let den = DEN.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cat) = &self.cat {
            let _ = cat.send(());
        }
        std::thread::sleep(sizes.howl);
        drop(den);
    }

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
    fn name(&self) -> &'static str {
        "wolf"
    }

    fn live(&mut self, sizes: &Sizes) {
        self.drink(sizes);
        self.howl(sizes);
    }
}

/// Waits on locks.
#[derive(Debug, Default)]
pub struct Cat;

impl Cat {
    /// The planted blocked thread: needs the den, which the wolf holds, so
    /// it waits (blocks its thread) until the wolf stops howling.
    #[inline(never)]
    pub fn pee(&self) {
        let den = DEN.lock().unwrap_or_else(PoisonError::into_inner);
        black_box(&*den);
    }

    /// The cat's life on its own thread: pee whenever the wolf calls.
    fn live_on(self, calls: Receiver<()>) {
        while calls.recv().is_ok() {
            self.pee();
        }
    }
}

/// Start the zoo on its own thread (named `zoo`); it lives until the process ends.
/// The cat lives on a thread of its own (named `cat`), called by the wolf.
///
/// Like Go's practice program, it turns the mutex and block profiles on at
/// full rate (every contention, every wait); the mutex profile is off by
/// default.
pub fn spawn_zoo(sizes: Sizes) -> std::io::Result<std::thread::JoinHandle<()>> {
    pprof_core::sync::set_mutex_profile_fraction(1);
    pprof_core::sync::set_block_profile_rate(1);
    let (call_cat, cat_calls) = channel();
    std::thread::Builder::new()
        .name("cat".to_owned())
        .spawn(move || pprof_core::labels::with([("animal", "cat")], || Cat.live_on(cat_calls)))?;
    std::thread::Builder::new()
        .name("zoo".to_owned())
        .spawn(move || {
            let mut zoo: Vec<Box<dyn Animal>> = vec![
                Box::new(Tiger),
                Box::new(Mouse::default()),
                Box::new(Dog),
                Box::new(Wolf::new(call_cat)),
            ];
            loop {
                for animal in &mut zoo {
                    // Everything it does is labeled with its kind.
                    pprof_core::labels::with([("animal", animal.name())], || animal.live(&sizes));
                }
                std::thread::sleep(sizes.tick);
            }
        })
}

/// The practice server: a greeting at `/` and the pprof routes, every
/// request labeled with its route and method (`pprof_axum::LabelRequests`).
pub fn app() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { "the zoo is open: see /debug/pprof/\n" }),
        )
        .merge(pprof_axum::routes())
        .layer(pprof_axum::LabelRequests::new())
}

/// Blocks the async runtime.
#[derive(Debug, Default)]
pub struct Sloth;

impl Sloth {
    /// How long one nap blocks its worker thread.
    pub const NAP: Duration = Duration::from_millis(100);

    /// The planted blocking call in async code: a synchronous sleep that
    /// holds a runtime worker thread for [`Sloth::NAP`], so no other task
    /// can run on it meanwhile.
    #[inline(never)]
    pub fn nap(&self) {
        std::thread::sleep(Self::NAP);
    }

    /// The sloth's life as a task: a nap every half second. Its polls are
    /// watched ([`pprof_core::watch_polls`]), so each nap, a poll far over
    /// the 10 ms threshold, lands in the block profile with the worker's
    /// stack caught mid-nap.
    async fn live(self) {
        loop {
            self.nap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Serve [`app`] on `listener` until the process ends, with the sloth
/// napping on the same runtime.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    tokio::spawn(pprof_core::labels::scope(
        [("animal", "sloth")],
        pprof_core::watch_polls(Sloth.live()),
    ));
    axum::serve(listener, app()).await
}
