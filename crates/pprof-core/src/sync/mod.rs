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
/// Only the contended path touches `book`; the unlock path reads `waiters`.
struct Waiters {
    /// Mirrors `book.waiters`; read without the book's lock at every unlock.
    waiters: AtomicU32,
    book: std::sync::Mutex<Book>,
}

struct Book {
    /// Threads registered as waiting.
    waiters: u32,
    /// Of those, the ones no unlock has charged yet.
    new_waiters: u32,
    /// Sum over waiters of the time from which their delay is still owed:
    /// their start, or the last charge if later.
    owed_since_sum: u64,
    /// Time of the last charge, and how many charges there were.
    last_charge: u64,
    generation: u64,
}

/// A waiter's registration: when it started and which charge it saw.
struct Ticket {
    start: u64,
    generation: u64,
}

impl Waiters {
    const fn new() -> Self {
        Self {
            waiters: AtomicU32::new(0),
            book: std::sync::Mutex::new(Book {
                waiters: 0,
                new_waiters: 0,
                owed_since_sum: 0,
                last_charge: 0,
                generation: 0,
            }),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self) -> Ticket {
        let mut book = self.book();
        let start = now_nanos();
        book.waiters += 1;
        book.new_waiters += 1;
        book.owed_since_sum += start;
        self.waiters.store(book.waiters, Ordering::SeqCst);
        Ticket {
            start,
            generation: book.generation,
        }
    }

    fn deregister(&self, ticket: Ticket) {
        let mut book = self.book();
        book.waiters = book.waiters.saturating_sub(1);
        if ticket.generation == book.generation {
            // Never charged: it got the lock before any unlock saw it (its
            // wait stays in the block profile only).
            book.new_waiters = book.new_waiters.saturating_sub(1);
            book.owed_since_sum = book.owed_since_sum.saturating_sub(ticket.start);
        } else {
            book.owed_since_sum = book.owed_since_sum.saturating_sub(book.last_charge);
        }
        self.waiters.store(book.waiters, Ordering::SeqCst);
    }

    /// At unlock: take what the waiters are owed, `(new waiters, delay ns)`.
    #[inline]
    fn take_charge(&self) -> Option<(u64, u64)> {
        if self.waiters.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.take_charge_slow()
    }

    #[cold]
    fn take_charge_slow(&self) -> Option<(u64, u64)> {
        let mut book = self.book();
        if book.waiters == 0 {
            return None;
        }
        let now = now_nanos();
        let owed_until_now = u64::from(book.waiters).saturating_mul(now);
        let delay = owed_until_now.saturating_sub(book.owed_since_sum);
        let count = u64::from(book.new_waiters);
        book.new_waiters = 0;
        book.owed_since_sum = owed_until_now;
        book.last_charge = now;
        book.generation += 1;
        Some((count, delay))
    }

    /// Wait with `wait`, timing it and keeping the books, when a profile is
    /// on; the wait is returned for the block profile (recorded at unlock,
    /// once the lock is released, so no stack is taken while holding it).
    #[cold]
    #[inline(never)]
    /// Take a lock: `attempt` first (free: nothing recorded), then `block`
    /// if it would have blocked (timed and recorded by [`Waiters::wait`]).
    fn acquire<G>(
        &self,
        attempt: TryLockResult<G>,
        block: impl FnOnce() -> LockResult<G>,
    ) -> (LockResult<G>, Option<Duration>) {
        match attempt {
            Ok(guard) => (Ok(guard), None),
            Err(TryLockError::Poisoned(poisoned)) => (Err(poisoned), None),
            Err(TryLockError::WouldBlock) => self.wait(block),
        }
    }

    fn wait<G>(&self, wait: impl FnOnce() -> G) -> (G, Option<Duration>) {
        let mutex = events::mutex_enabled();
        let block = events::block_enabled();
        if !mutex && !block {
            return (wait(), None);
        }
        let started = Instant::now();
        let ticket = mutex.then(|| self.register());
        let guard = wait();
        let waited = started.elapsed();
        if let Some(ticket) = ticket {
            self.deregister(ticket);
        }
        (guard, block.then_some(waited))
    }
}

/// Release a lock: `unlock` releases it; then the caller's stack is charged
/// with what its waiters waited (mutex) and with its own wait (block).
#[inline]
fn release(waiters: &Waiters, waited: Option<Duration>, unlock: impl FnOnce()) {
    let charge = waiters.take_charge();
    unlock();
    if charge.is_some() || waited.is_some() {
        events::record_unlock(charge, waited);
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

/// `Deref` (and `DerefMut` when named), `Drop` (release, then record) and
/// `Debug` for a guard whose `inner` guard is `Some` until drop.
macro_rules! guard_impls {
    ($guard:ident, $($inner:ident)::+ $(, $mutable:ident)?) => {
        impl<'a, T: ?Sized> $guard<'a, T> {
            /// The guard of a lock taken after waiting `waited` (if timed).
            fn new(
                waiters: &'a Waiters,
                waited: Option<Duration>,
                inner: $($inner)::+<'a, T>,
            ) -> Self {
                Self {
                    waiters,
                    waited,
                    inner: Some(inner),
                }
            }
        }

        impl<T: ?Sized> Deref for $guard<'_, T> {
            type Target = T;

            fn deref(&self) -> &T {
                match &self.inner {
                    Some(guard) => guard,
                    None => unreachable!("a guard is only emptied by drop"),
                }
            }
        }

        $(
            impl<T: ?Sized> $mutable for $guard<'_, T> {
                fn deref_mut(&mut self) -> &mut T {
                    match &mut self.inner {
                        Some(guard) => guard,
                        None => unreachable!("a guard is only emptied by drop"),
                    }
                }
            }
        )?

        impl<T: ?Sized> Drop for $guard<'_, T> {
            #[inline]
            fn drop(&mut self) {
                let inner = &mut self.inner;
                release(self.waiters, self.waited, || drop(inner.take()));
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
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized> {
    waiters: &'a Waiters,
    /// How long this thread waited for the lock, if it did and the block
    /// profile is on.
    waited: Option<Duration>,
    /// Always `Some` until drop.
    inner: Option<std::sync::MutexGuard<'a, T>>,
}

impl<T: ?Sized> Mutex<T> {
    /// Acquire the lock, blocking until it is free. A wait is recorded in
    /// the block profile (this stack) and the mutex profile (the holder's).
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let (result, waited) = self
            .waiters
            .acquire(self.inner.try_lock(), || self.inner.lock());
        map_result(result, |guard| {
            MutexGuard::new(&self.waiters, waited, guard)
        })
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
/// Releasing the mutex to wait ends a critical section: threads waiting for
/// the mutex are charged to it in the mutex profile, with the stack taken
/// before the wait (while the lock is still held, and only when someone
/// waits for it).
#[derive(Debug, Default)]
pub struct Condvar {
    inner: std::sync::Condvar,
}

/// The parts of a guard, without running its `Drop` (the caller takes
/// over releasing the lock).
fn into_parts<T: ?Sized>(
    mut guard: MutexGuard<'_, T>,
) -> (&Waiters, Option<Duration>, std::sync::MutexGuard<'_, T>) {
    let (waiters, waited) = (guard.waiters, guard.waited);
    let inner = guard.inner.take();
    std::mem::forget(guard);
    match inner {
        Some(inner) => (waiters, waited, inner),
        None => unreachable!("a MutexGuard is only emptied by drop"),
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

    /// Record the critical section ending at the wait (and the guard's own
    /// earlier wait for the lock), run `wait` on the std guard and time it.
    fn start_waiting<'a, T>(
        guard: MutexGuard<'a, T>,
    ) -> (&'a Waiters, std::sync::MutexGuard<'a, T>, Option<Instant>) {
        let (waiters, waited, inner) = into_parts(guard);
        let charge = waiters.take_charge();
        if charge.is_some() || waited.is_some() {
            events::record_unlock(charge, waited);
        }
        (waiters, inner, events::block_enabled().then(Instant::now))
    }

    fn waiting<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        wait: impl FnOnce(std::sync::MutexGuard<'a, T>) -> LockResult<std::sync::MutexGuard<'a, T>>,
    ) -> LockResult<MutexGuard<'a, T>> {
        let (waiters, inner, started) = Self::start_waiting(guard);
        let result = wait(inner);
        let waited = started.map(|s| s.elapsed());
        map_result(result, |inner| MutexGuard::new(waiters, waited, inner))
    }

    fn waiting_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        wait: impl FnOnce(
            std::sync::MutexGuard<'a, T>,
        ) -> LockResult<(std::sync::MutexGuard<'a, T>, WaitTimeoutResult)>,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        let (waiters, inner, started) = Self::start_waiting(guard);
        let result = wait(inner);
        let waited = started.map(|s| s.elapsed());
        map_result(result, |(inner, timed_out)| {
            (MutexGuard::new(waiters, waited, inner), timed_out)
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
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    waiters: &'a Waiters,
    waited: Option<Duration>,
    inner: Option<std::sync::RwLockReadGuard<'a, T>>,
}

/// Exclusive access to an [`RwLock`]'s value, released on drop.
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    waiters: &'a Waiters,
    waited: Option<Duration>,
    inner: Option<std::sync::RwLockWriteGuard<'a, T>>,
}

impl<T: ?Sized> RwLock<T> {
    /// Shared access, blocking while a writer holds the lock.
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        let (result, waited) = self
            .waiters
            .acquire(self.inner.try_read(), || self.inner.read());
        map_result(result, |guard| {
            RwLockReadGuard::new(&self.waiters, waited, guard)
        })
    }

    /// Exclusive access, blocking while anyone holds the lock.
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        let (result, waited) = self
            .waiters
            .acquire(self.inner.try_write(), || self.inner.write());
        map_result(result, |guard| {
            RwLockWriteGuard::new(&self.waiters, waited, guard)
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
