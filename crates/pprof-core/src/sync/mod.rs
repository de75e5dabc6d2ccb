//! Drop-in replacements for [`std::sync::Mutex`] and [`std::sync::RwLock`]
//! that feed the `/mutex` and `/block` profiles, as Go's `sync.Mutex` does.
//!
//! ```
//! use pprof_core::sync::Mutex;
//!
//! let counter = Mutex::new(0);
//! *counter.lock().unwrap() += 1;
//! assert_eq!(counter.into_inner().unwrap(), 1);
//! ```
//!
//! The API is std's (`lock` returns a [`LockResult`], poisoning included),
//! so replacing `std::sync::Mutex` with `pprof_core::sync::Mutex` is a
//! one-line change. Each lock wraps the std lock of the same kind.
//!
//! # What is recorded
//!
//! - **Uncontended** (`try_lock` succeeds at once): nothing. Locking costs one
//!   `try_lock`; unlocking costs the std unlock plus one atomic load that
//!   finds no waiters (and a check that this thread did not wait).
//! - **Contended**: the waiter times its wait. The **block** profile charges
//!   the wait to the waiter's stack, taken where it releases the guard
//!   (normally the function that locked; Go takes it at the lock call). The
//!   **mutex** profile charges it, like Go, to the critical section that
//!   caused it: each unlock that finds waiters records, on the unlocker's
//!   stack (where the guard is dropped), the time those waiters have waited
//!   since they started or since the previous unlock, whichever is later;
//!   each waiter counts as one contention at the first unlock that finds it
//!   waiting. Stacks are raw return addresses (no symbolization on this
//!   path), captured once per unlock, after the lock is released, so no
//!   stack is ever taken while a lock is held.
//!
//! # Rates
//!
//! [`set_mutex_profile_fraction`] and [`set_block_profile_rate`] mirror Go's
//! `runtime.SetMutexProfileFraction` and `runtime.SetBlockProfileRate`;
//! recorded values are scaled back up by the rate.
//!
//! - The mutex profile is **off** by default
//!   ([`DEFAULT_MUTEX_PROFILE_FRACTION`] = 0), as in Go: each recorded
//!   contention takes a stack (10–30 µs with the unwinder this uses), which
//!   a lock contended at every unlock pays every time (measured in
//!   `docs/LOCKS.md`). Turn it on with `set_mutex_profile_fraction(n)`: 1
//!   records every contention, 100 costs busy locks a fraction of a µs per
//!   contention on average.
//! - The block profile is **on** by default at a 1 ms rate
//!   ([`DEFAULT_BLOCK_PROFILE_RATE`]): waits of 1 ms or more are all
//!   recorded, shorter ones with probability `wait / 1 ms` (values scaled
//!   back up), so the stack captures cost at most a few percent of the
//!   time threads already lost waiting. `set_block_profile_rate(0)` turns
//!   it off; `1` records every wait.
//!
//! [`Condvar`] works with [`Mutex`] as std's does with std's, and records
//! its waits in the block profile. With the cargo feature `tokio`, `pprof_core::sync::tokio` has the
//! same for `tokio::sync::Mutex` and `RwLock`.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};

pub use std::sync::WaitTimeoutResult;
use std::time::{Duration, Instant};

use events::now_nanos;
pub use events::{
    DEFAULT_BLOCK_PROFILE_RATE, DEFAULT_MUTEX_PROFILE_FRACTION, block_profile_rate,
    mutex_profile_fraction, set_block_profile_rate, set_mutex_profile_fraction,
};

pub(crate) mod events;
pub(crate) mod watch;

/// Who is waiting on one lock, for charging their delay at unlock.
///
/// Only the contended path and unlocks that found something pending touch
/// `book`; every unlock reads `pending`, before it unlocks.
struct Waiters {
    /// Mirrors `book.pending()`: waiters registered plus waits settled and
    /// not yet charged. Read without the book's lock at every unlock.
    pending: AtomicU32,
    /// Unlocks that found something pending and have not reached the book
    /// yet: a waiter that takes the lock meanwhile leaves its wait for them.
    visiting: AtomicU32,
    book: std::sync::Mutex<Book>,
}

/// The delay a lock's waiters are owed, kept so that each unlock that finds
/// some is charged what they waited since the previous charge. Times are
/// [`now_nanos`]; sums are `u128`, so no number of waiters or uptime
/// overflows them.
#[derive(Debug, Default)]
struct Book {
    /// Threads registered as waiting.
    waiters: u32,
    /// Of those, the ones no unlock has charged yet.
    new_waiters: u32,
    /// Sum over waiters of the time from which their delay is still owed:
    /// their start, or the last charge if later.
    owed_since_sum: u128,
    /// Time of the last charge, and how many charges there were.
    last_charge: u64,
    generation: u64,
    /// The next waiter's ticket number.
    next_ticket: u64,
    /// Waits that ended (the waiter took the lock) before the unlock that
    /// let them in reached the book, by ticket, with their delay: that
    /// unlock charges them (the waiter's own unlock leaves its own alone).
    settled: Vec<(u64, u64)>,
}

/// A waiter's registration: who, when it started and which charge it saw.
struct Ticket {
    id: u64,
    start: u64,
    generation: u64,
}

impl Book {
    const fn new() -> Self {
        Self {
            waiters: 0,
            new_waiters: 0,
            owed_since_sum: 0,
            last_charge: 0,
            generation: 0,
            next_ticket: 0,
            settled: Vec::new(),
        }
    }

    /// What an unlock must look at: anything non-zero sends it to the book.
    fn pending(&self) -> u32 {
        let settled = u32::try_from(self.settled.len()).unwrap_or(u32::MAX);
        self.waiters.saturating_add(settled)
    }

    /// A thread starts waiting at `now`.
    fn register(&mut self, now: u64) -> Ticket {
        self.waiters = self.waiters.saturating_add(1);
        self.new_waiters = self.new_waiters.saturating_add(1);
        self.owed_since_sum += u128::from(now);
        self.next_ticket += 1;
        Ticket {
            id: self.next_ticket,
            start: now,
            generation: self.generation,
        }
    }

    /// The thread of `ticket` got the lock at `now`. If no unlock has
    /// charged it yet and one is on its way (`visiting`), its wait is
    /// settled for that one: `Some(ticket)`, which its own unlock excludes.
    /// With none on its way, its wait began after the last unlock looked
    /// (a few instructions) and is dropped.
    fn deregister(&mut self, ticket: &Ticket, now: u64, visiting: bool) -> Option<u64> {
        if self.waiters == 0 {
            return None;
        }
        self.waiters -= 1;
        if ticket.generation == self.generation {
            self.new_waiters = self.new_waiters.saturating_sub(1);
            self.owed_since_sum = self.owed_since_sum.saturating_sub(u128::from(ticket.start));
            if visiting {
                self.settled
                    .push((ticket.id, now.saturating_sub(ticket.start)));
                return Some(ticket.id);
            }
        } else {
            // Charged up to the last unlock; the moment between that unlock
            // and taking the lock is the scheduler's, not a critical
            // section's, and is not charged to anyone.
            self.owed_since_sum = self
                .owed_since_sum
                .saturating_sub(u128::from(self.last_charge));
        }
        None
    }

    /// At an unlock, at `now`: `(new waiters, delay ns)` owed since the
    /// previous charge, or `None` when nobody waited. The wait settled
    /// under ticket `own` (the unlocking thread's) is left for the unlock
    /// that let it in.
    fn charge(&mut self, now: u64, own: Option<u64>) -> Option<(u64, u64)> {
        let mut settled_count = 0u64;
        let mut settled_delay = 0u128;
        self.settled.retain(|&(ticket, delay)| {
            if Some(ticket) == own {
                return true;
            }
            settled_count += 1;
            settled_delay += u128::from(delay);
            false
        });
        if self.waiters == 0 && settled_count == 0 {
            return None;
        }
        let owed_until_now = u128::from(self.waiters) * u128::from(now);
        let delay = owed_until_now.saturating_sub(self.owed_since_sum) + settled_delay;
        let count = u64::from(self.new_waiters) + settled_count;
        self.new_waiters = 0;
        self.owed_since_sum = owed_until_now;
        self.last_charge = now;
        self.generation += 1;
        Some((count, u64::try_from(delay).unwrap_or(u64::MAX)))
    }
}

impl Waiters {
    const fn new() -> Self {
        Self {
            pending: AtomicU32::new(0),
            visiting: AtomicU32::new(0),
            book: std::sync::Mutex::new(Book::new()),
        }
    }

    /// Run `f` on the book, keeping `pending` in step.
    fn with_book<R>(&self, f: impl FnOnce(&mut Book) -> R) -> R {
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut book);
        self.pending.store(book.pending(), Ordering::SeqCst);
        out
    }

    fn register(&self) -> Ticket {
        self.with_book(|book| book.register(now_nanos()))
    }

    /// The waiter got the lock; `Some(ticket)` when its wait was settled
    /// for the unlock on its way.
    fn deregister(&self, ticket: &Ticket) -> Option<u64> {
        self.with_book(|book| {
            let visiting = self.visiting.load(Ordering::SeqCst) > 0;
            book.deregister(ticket, now_nanos(), visiting)
        })
    }

    /// Whether anyone waits or a settled wait awaits its charge: what an
    /// unlock looks at first.
    #[inline(always)]
    fn anyone_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst) != 0
    }

    /// Before an unlock: whether it must go to the book afterwards (there
    /// are waiters, or settled waits); if so it is counted as on its way.
    fn will_visit(&self) -> bool {
        let pending = self.anyone_pending();
        if pending {
            self.visiting.fetch_add(1, Ordering::SeqCst);
        }
        pending
    }

    /// After an unlock that [`will_visit`](Self::will_visit): what the
    /// waiters are owed now, `(new waiters, delay ns)`, except the caller's
    /// own settled wait (`own`).
    fn visit(&self, own: Option<u64>) -> Option<(u64, u64)> {
        self.with_book(|book| {
            let charge = book.charge(now_nanos(), own);
            self.visiting.fetch_sub(1, Ordering::SeqCst);
            charge
        })
    }

    /// Take a lock: `attempt` first (free: nothing recorded), then `block`
    /// if it would have blocked, between [`start_waiting`](Self::start_waiting)
    /// and [`stop_waiting`](Self::stop_waiting). Inlined, with the guard
    /// made here rather than returned by an out-of-line call, so that it
    /// stays in registers: the uncontended path is one `try_lock` and a
    /// match.
    #[inline]
    fn acquire<G>(
        &self,
        attempt: TryLockResult<G>,
        block: impl FnOnce() -> LockResult<G>,
    ) -> (LockResult<G>, Owing) {
        match attempt {
            Ok(guard) => (Ok(guard), None),
            Err(TryLockError::Poisoned(poisoned)) => (Err(poisoned), None),
            Err(TryLockError::WouldBlock) => {
                let waiting = self.start_waiting();
                let result = blocking(block);
                (result, self.stop_waiting(waiting))
            }
        }
    }

    /// A wait begins: timed, and registered with the book for the mutex
    /// profile, when a profile is on.
    #[cold]
    #[inline(never)]
    fn start_waiting(&self) -> Option<Waiting> {
        let mutex = events::mutex_enabled();
        let block = events::block_enabled();
        (mutex || block).then(|| Waiting {
            started: Instant::now(),
            ticket: mutex.then(|| self.register()),
            block,
        })
    }

    /// The wait ended (the lock is taken): what the guard owes at its
    /// release, recorded then, once the lock is free, so that no stack is
    /// taken while holding it.
    #[cold]
    #[inline(never)]
    fn stop_waiting(&self, waiting: Option<Waiting>) -> Owing {
        let waiting = waiting?;
        let waited = waiting.started.elapsed();
        let settled = waiting.ticket.and_then(|ticket| self.deregister(&ticket));
        Owed {
            waited: waiting.block.then_some(waited),
            charge: None,
            settled,
        }
        .owing()
    }
}

/// Call `block`, out of line: the blocking lock call stays out of the
/// callers' fast path, and what it returns comes back in registers.
#[cold]
#[inline(never)]
fn blocking<G>(block: impl FnOnce() -> G) -> G {
    block()
}

/// A wait for a lock in progress, from [`Waiters::start_waiting`].
struct Waiting {
    started: Instant,
    /// Its registration with the book (mutex profile on).
    ticket: Option<Ticket>,
    /// The block profile is on.
    block: bool,
}

/// What a guard's release records besides what the lock's waiters are owed
/// then: its own wait for the lock (block) and, after a [`Condvar`] wait,
/// the critical section that ended at the wait (mutex), kept until the lock
/// is released so that no stack is taken while it is held; and the ticket
/// under which its own wait was settled for the unlock that let it in.
#[derive(Debug, Clone, Copy, Default)]
struct Owed {
    waited: Option<Duration>,
    charge: Option<(u64, u64)>,
    settled: Option<u64>,
}

/// What a guard owes, boxed: `None` (one word) on the uncontended path,
/// so the guard stays small and its release inlines.
type Owing = Option<Box<Owed>>;

impl Owed {
    /// Boxed, or `None` when there is nothing in it.
    fn owing(self) -> Owing {
        let empty = self.waited.is_none() && self.charge.is_none() && self.settled.is_none();
        (!empty).then(|| Box::new(self))
    }
}

/// Two charges to the same stack, as one.
fn add_charges(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<(u64, u64)> {
    match (a, b) {
        (Some((c1, d1)), Some((c2, d2))) => Some((c1.saturating_add(c2), d1.saturating_add(d2))),
        (a, b) => a.or(b),
    }
}

/// What a guard's release records besides unlocking, kept in fields
/// without drop glue so that the guard's one `Drop` is all its drop does
/// (small enough to inline, no unwinding cleanup): the lock's waiters, to
/// charge what they waited to the caller's stack, and what the guard
/// itself owes. Its owed part is a `ManuallyDrop`, which
/// [`Release::unlock`] (or [`Release::take_owed`], for a [`Condvar`])
/// always takes out.
struct Release<'a> {
    waiters: &'a Waiters,
    owed: ManuallyDrop<Owing>,
}

impl<'a> Release<'a> {
    fn new(waiters: &'a Waiters, owed: Owing) -> Self {
        Self {
            waiters,
            owed: ManuallyDrop::new(owed),
        }
    }

    /// Unlock by dropping `inner`. When nothing is owed and nobody waits
    /// (one atomic load), that is all; otherwise the slow path.
    #[inline(always)]
    fn unlock<G>(&mut self, inner: G) {
        if self.owed.is_none() && !self.waiters.anyone_pending() {
            drop(inner);
        } else {
            unlock_and_record(self.waiters, self.owed.take(), inner);
        }
    }

    /// What the guard owes, taken out (the caller records it).
    fn take_owed(&mut self) -> Owing {
        self.owed.take()
    }
}

/// Unlock by dropping `inner`, then record, outside the critical section,
/// what the waiters found before the unlock are owed and what the guard
/// owes. Arguments by value, so that the guard's fast path keeps it in
/// registers.
#[cold]
#[inline(never)]
fn unlock_and_record<G>(waiters: &Waiters, owed: Owing, inner: G) {
    let visiting = waiters.will_visit();
    drop(inner);
    let owed = owed.map_or_else(Owed::default, |owed| *owed);
    let found = if visiting {
        waiters.visit(owed.settled)
    } else {
        None
    };
    let charge = add_charges(found, owed.charge);
    if charge.is_some() || owed.waited.is_some() {
        events::record_unlock(charge, owed.waited);
    }
}

/// `new`, `into_inner` and the poisoning methods of a lock wrapping the
/// std lock of the same name.
macro_rules! std_lock_impls {
    ($($lock:ident => $std:ident, $what:literal);+ $(;)?) => {$(
        impl<T> $lock<T> {
            #[doc = concat!("A new unlocked ", $what, " holding `value`; `const`, so it can be a `static`.")]
            pub const fn new(value: T) -> Self {
                Self {
                    waiters: Waiters::new(),
                    inner: std::sync::$std::new(value),
                }
            }

            #[doc = concat!("Consume the ", $what, " and return its value (`Err` if poisoned).")]
            pub fn into_inner(self) -> LockResult<T> {
                self.inner.into_inner()
            }
        }

        impl<T: ?Sized> $lock<T> {
            /// Whether a thread panicked while holding the (write) lock.
            pub fn is_poisoned(&self) -> bool {
                self.inner.is_poisoned()
            }

            /// Clear the poisoned state.
            pub fn clear_poison(&self) {
                self.inner.clear_poison();
            }

            /// A mutable reference to the value; no locking needed.
            pub fn get_mut(&mut self) -> LockResult<&mut T> {
                self.inner.get_mut()
            }
        }

    )+};
}

/// `Default`, `From<T>` and std's `Debug` for lock types with a `const fn
/// new(T)` and an `inner` lock.
macro_rules! lock_impls {
    ($($lock:ident),+) => {$(
        impl<T: Default> Default for $lock<T> {
            fn default() -> Self {
                Self::new(T::default())
            }
        }

        impl<T> From<T> for $lock<T> {
            fn from(value: T) -> Self {
                Self::new(value)
            }
        }

        impl<T: ?Sized + fmt::Debug> fmt::Debug for $lock<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // The wrapped lock's format (std: `Mutex { data: .., poisoned: .., .. }`).
                self.inner.fmt(f)
            }
        }
    )+};
}

/// Reached only if a guard emptied by its `Drop` (or by a [`Condvar`]
/// taking its inner guard over) were read, which cannot happen. Declared
/// `extern "C"`, so the compiler knows it never unwinds (a panic in it
/// aborts): a caller's guard then needs no unwinding cleanup, and stays in
/// registers, not on the stack.
#[cold]
#[inline(never)]
pub(crate) extern "C" fn emptied_guard_used() -> ! {
    unreachable!("a guard is only emptied by drop")
}

/// `Deref` (and `DerefMut` when named), `Drop` (release, then record) and
/// `Debug` for a guard whose `inner` guard is `Some` until drop (or until
/// a [`Condvar`] takes it over), beside its [`Release`]. Both are fields
/// without drop glue, so dropping a guard is its `Drop` alone: look whether
/// anyone waits, unlock, then record if something is owed.
macro_rules! guard_impls {
    ($guard:ident, $($inner:ident)::+ $(, $mutable:ident)?) => {
        impl<'a, T: ?Sized> $guard<'a, T> {
            /// The guard of a lock, owing `owed` at its release.
            fn new(waiters: &'a Waiters, owed: Owing, inner: $($inner)::+<'a, T>) -> Self {
                Self {
                    inner: ManuallyDrop::new(Some(inner)),
                    release: Release::new(waiters, owed),
                }
            }
        }

        impl<T: ?Sized> Deref for $guard<'_, T> {
            type Target = T;

            fn deref(&self) -> &T {
                match &*self.inner {
                    Some(guard) => guard,
                    None => $crate::sync::emptied_guard_used(),
                }
            }
        }

        $(
            impl<T: ?Sized> $mutable for $guard<'_, T> {
                fn deref_mut(&mut self) -> &mut T {
                    match &mut *self.inner {
                        Some(guard) => guard,
                        None => $crate::sync::emptied_guard_used(),
                    }
                }
            }
        )?

        impl<T: ?Sized> Drop for $guard<'_, T> {
            /// Take the inner guard out of its `ManuallyDrop` (nothing
            /// else drops it) and unlock: when nothing is owed and nobody
            /// waits, one atomic load and std's unlock.
            #[inline(always)]
            fn drop(&mut self) {
                if let Some(inner) = self.inner.take() {
                    self.release.unlock(inner);
                }
            }
        }

        impl<T: ?Sized + fmt::Debug> fmt::Debug for $guard<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&**self, f)
            }
        }
    };
}

/// A mutual exclusion lock that records contention: [`std::sync::Mutex`]'s
/// API (poisoning included). See the [module docs](self).
pub struct Mutex<T: ?Sized> {
    waiters: Waiters,
    inner: std::sync::Mutex<T>,
}

/// The guard of a [`Mutex`]; the lock is released when it is dropped.
///
/// Like std's, it is `Sync` but not `Send`: the thread that locked must
/// unlock. This does not compile:
///
/// ```compile_fail,E0277
/// fn on_another_thread<T: Send>(_: T) {}
/// let lock = pprof_core::sync::Mutex::new(0);
/// on_another_thread(lock.lock().unwrap());
/// ```
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized> {
    /// `Some` until its `Drop` unlocks it (or a `Condvar` takes it over).
    inner: ManuallyDrop<Option<std::sync::MutexGuard<'a, T>>>,
    /// What its release records, once the lock is free: how long this
    /// thread waited for the lock (if it did and the block profile is on),
    /// and a Condvar wait's charge.
    release: Release<'a>,
}

impl<T: ?Sized> Mutex<T> {
    /// Acquire the lock, blocking until it is free. A wait is recorded in
    /// the block profile (this stack) and the mutex profile (the holder's).
    #[inline]
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let (result, owed) = self
            .waiters
            .acquire(self.inner.try_lock(), || self.inner.lock());
        map_result(result, |guard| MutexGuard::new(&self.waiters, owed, guard))
    }

    /// Acquire the lock if it is free now; records nothing.
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        map_try(self.inner.try_lock(), |guard| {
            MutexGuard::new(&self.waiters, None, guard)
        })
    }
}

fn map_try<G, H>(result: TryLockResult<G>, wrap: impl FnOnce(G) -> H) -> TryLockResult<H> {
    match result {
        Ok(guard) => Ok(wrap(guard)),
        Err(TryLockError::WouldBlock) => Err(TryLockError::WouldBlock),
        Err(TryLockError::Poisoned(p)) => Err(TryLockError::Poisoned(PoisonError::new(wrap(
            p.into_inner(),
        )))),
    }
}

fn map_result<G, H>(result: LockResult<G>, wrap: impl FnOnce(G) -> H) -> LockResult<H> {
    match result {
        Ok(guard) => Ok(wrap(guard)),
        Err(poisoned) => Err(PoisonError::new(wrap(poisoned.into_inner()))),
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// A condition variable for [`Mutex`]: [`std::sync::Condvar`]'s API.
///
/// A wait is a blocking event: its whole duration (the wait for a
/// notification and the re-lock) goes to the block profile, on the stack
/// where the returned guard is released, as Go records `sync.Cond.Wait`.
/// Releasing the mutex to wait ends a critical section: what threads
/// waiting for the mutex were owed then is charged to it in the mutex
/// profile. Nothing is recorded while the mutex is held: both are recorded
/// when the returned guard is released, on that stack (a guard that waited
/// for the lock and then on the condition variable records the two waits
/// as one blocking event).
#[derive(Debug, Default)]
pub struct Condvar {
    inner: std::sync::Condvar,
}

/// The parts of a guard, which is left empty so that its `Drop` does
/// nothing (the caller takes over releasing the lock).
fn into_parts<T: ?Sized>(
    mut guard: MutexGuard<'_, T>,
) -> (&Waiters, Owed, std::sync::MutexGuard<'_, T>) {
    // Emptied, the guard's drop does nothing: the lock stays held, by the
    // returned inner guard.
    let (waiters, owed) = (guard.release.waiters, guard.release.take_owed());
    match guard.inner.take() {
        Some(inner) => (
            waiters,
            owed.map_or_else(Owed::default, |owed| *owed),
            inner,
        ),
        None => emptied_guard_used(),
    }
}

impl Condvar {
    /// A new condition variable; `const`, so it can be a `static`.
    pub const fn new() -> Self {
        Self {
            inner: std::sync::Condvar::new(),
        }
    }

    /// Release the guard's lock and wait for a notification (it can wake
    /// spuriously), then lock again.
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        self.waiting(guard, |inner| self.inner.wait(inner))
    }

    /// Wait until `condition` is false.
    pub fn wait_while<'a, T, F>(
        &self,
        guard: MutexGuard<'a, T>,
        condition: F,
    ) -> LockResult<MutexGuard<'a, T>>
    where
        F: FnMut(&mut T) -> bool,
    {
        self.waiting(guard, |inner| self.inner.wait_while(inner, condition))
    }

    /// Wait for a notification or until `timeout` has passed.
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        self.waiting_timeout(guard, |inner| self.inner.wait_timeout(inner, timeout))
    }

    /// Wait until `condition` is false or `timeout` has passed.
    pub fn wait_timeout_while<'a, T, F>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
        condition: F,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)>
    where
        F: FnMut(&mut T) -> bool,
    {
        self.waiting_timeout(guard, |inner| {
            self.inner.wait_timeout_while(inner, timeout, condition)
        })
    }

    /// Wake one waiting thread.
    pub fn notify_one(&self) {
        self.inner.notify_one();
    }

    /// Wake every waiting thread.
    pub fn notify_all(&self) {
        self.inner.notify_all();
    }

    /// Take what the critical section ending at the wait owes its
    /// waiters (a few arithmetic steps under the lock's book; no stack is
    /// taken while the user's mutex is held), and start timing the wait.
    fn start_waiting<'a, T>(
        guard: MutexGuard<'a, T>,
    ) -> (
        &'a Waiters,
        Owed,
        std::sync::MutexGuard<'a, T>,
        Option<Instant>,
    ) {
        let (waiters, mut owed, inner) = into_parts(guard);
        if waiters.will_visit() {
            owed.charge = add_charges(owed.charge, waiters.visit(owed.settled));
        }
        let started = events::block_enabled().then(Instant::now);
        (waiters, owed, inner, started)
    }

    /// The guard after the wait: it owes, at its release, the charge taken
    /// at the wait and the thread's waits (for the lock, then on the
    /// condition variable) as one blocking event.
    fn after_waiting<'a, T>(
        waiters: &'a Waiters,
        mut owed: Owed,
        started: Option<Instant>,
        inner: std::sync::MutexGuard<'a, T>,
    ) -> MutexGuard<'a, T> {
        if let Some(started) = started {
            owed.waited = Some(owed.waited.unwrap_or_default() + started.elapsed());
        }
        MutexGuard::new(waiters, owed.owing(), inner)
    }

    fn waiting<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        wait: impl FnOnce(std::sync::MutexGuard<'a, T>) -> LockResult<std::sync::MutexGuard<'a, T>>,
    ) -> LockResult<MutexGuard<'a, T>> {
        let (waiters, owed, inner, started) = Self::start_waiting(guard);
        let result = wait(inner);
        map_result(result, |inner| {
            Self::after_waiting(waiters, owed, started, inner)
        })
    }

    fn waiting_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        wait: impl FnOnce(
            std::sync::MutexGuard<'a, T>,
        ) -> LockResult<(std::sync::MutexGuard<'a, T>, WaitTimeoutResult)>,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        let (waiters, owed, inner, started) = Self::start_waiting(guard);
        let result = wait(inner);
        map_result(result, |(inner, timed_out)| {
            (
                Self::after_waiting(waiters, owed, started, inner),
                timed_out,
            )
        })
    }
}

/// A reader-writer lock that records contention: [`std::sync::RwLock`]'s
/// API (poisoning included). Readers waiting on a writer and writers waiting
/// on readers are both recorded; each release that finds waiters is charged
/// the time they waited since the previous release. See the [module docs](self).
pub struct RwLock<T: ?Sized> {
    waiters: Waiters,
    inner: std::sync::RwLock<T>,
}

/// Shared access to an [`RwLock`]'s value, released on drop.
///
/// Not `Send`, like std's:
///
/// ```compile_fail,E0277
/// fn on_another_thread<T: Send>(_: T) {}
/// let lock = pprof_core::sync::RwLock::new(0);
/// on_another_thread(lock.read().unwrap());
/// ```
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    inner: ManuallyDrop<Option<std::sync::RwLockReadGuard<'a, T>>>,
    release: Release<'a>,
}

/// Exclusive access to an [`RwLock`]'s value, released on drop.
///
/// Not `Send`, like std's:
///
/// ```compile_fail,E0277
/// fn on_another_thread<T: Send>(_: T) {}
/// let lock = pprof_core::sync::RwLock::new(0);
/// on_another_thread(lock.write().unwrap());
/// ```
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    inner: ManuallyDrop<Option<std::sync::RwLockWriteGuard<'a, T>>>,
    release: Release<'a>,
}

impl<T: ?Sized> RwLock<T> {
    /// Shared access, blocking while a writer holds the lock.
    #[inline]
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        let (result, owed) = self
            .waiters
            .acquire(self.inner.try_read(), || self.inner.read());
        map_result(result, |guard| {
            RwLockReadGuard::new(&self.waiters, owed, guard)
        })
    }

    /// Exclusive access, blocking while anyone holds the lock.
    #[inline]
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        let (result, owed) = self
            .waiters
            .acquire(self.inner.try_write(), || self.inner.write());
        map_result(result, |guard| {
            RwLockWriteGuard::new(&self.waiters, owed, guard)
        })
    }

    /// Shared access if available now; records nothing.
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        map_try(self.inner.try_read(), |guard| {
            RwLockReadGuard::new(&self.waiters, None, guard)
        })
    }

    /// Exclusive access if available now; records nothing.
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        map_try(self.inner.try_write(), |guard| {
            RwLockWriteGuard::new(&self.waiters, None, guard)
        })
    }
}

std_lock_impls!(Mutex => Mutex, "mutex"; RwLock => RwLock, "lock");
lock_impls!(Mutex, RwLock);
guard_impls!(MutexGuard, std::sync::MutexGuard, DerefMut);
guard_impls!(RwLockReadGuard, std::sync::RwLockReadGuard);
guard_impls!(RwLockWriteGuard, std::sync::RwLockWriteGuard, DerefMut);

#[cfg(feature = "tokio")]
pub mod tokio;

#[cfg(test)]
mod tests;
