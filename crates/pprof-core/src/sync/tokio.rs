//! Drop-in replacements for `tokio::sync::Mutex` and `tokio::sync::RwLock`
//! that record contention like their [std counterparts](super): a task
//! that has to wait for the lock is timed; its wait goes to the block
//! profile (its stack where it releases the guard) and, when the mutex
//! profile is on, to the mutex profile of the task whose critical section
//! made it wait (where that guard is dropped). Uncontended: one `try_lock`.
//!
//! Stacks of async code are the polling stacks: the async functions show as
//! `my_fn::{{closure}}` frames.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let counter = pprof_core::sync::tokio::Mutex::new(0);
//! *counter.lock().await += 1;
//! assert_eq!(counter.into_inner(), 1);
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};

pub use ::tokio::sync::TryLockError;

use ::tokio::sync as tokio_sync;

use super::{Owing, Release, Waiters, Waiting};

/// A task's wait for a lock; deregistered from the book if the wait is
/// cancelled (the acquiring future dropped).
struct Registration<'a> {
    waiters: &'a Waiters,
    waiting: Option<Waiting>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.waiting.take().and_then(|waiting| waiting.ticket) {
            self.waiters.deregister(&ticket);
        }
    }
}

impl Waiters {
    /// Await `acquire`, timing it and keeping the books when a profile is on.
    async fn wait_async<G>(&self, acquire: impl Future<Output = G>) -> (G, Owing) {
        let mut registration = Registration {
            waiters: self,
            waiting: self.start_waiting(),
        };
        let guard = acquire.await;
        (guard, self.stop_waiting(registration.waiting.take()))
    }
}

/// An async mutex that records contention: `tokio::sync::Mutex`'s API.
pub struct Mutex<T: ?Sized> {
    waiters: Waiters,
    inner: ::tokio::sync::Mutex<T>,
}

/// The guard of a [`Mutex`]; the lock is released when it is dropped.
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized> {
    inner: ManuallyDrop<Option<::tokio::sync::MutexGuard<'a, T>>>,
    release: Release<'a>,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex holding `value`; `const`, so it can be a `static`.
    pub const fn new(value: T) -> Self {
        Self {
            waiters: Waiters::new(),
            inner: ::tokio::sync::Mutex::const_new(value),
        }
    }

    /// Consume the mutex and return its value.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Lock, waiting (asynchronously) while another task holds it; a wait
    /// is recorded. Cancel-safe as tokio's.
    pub async fn lock(&self) -> MutexGuard<'_, T> {
        let (guard, owed) = match self.inner.try_lock() {
            Ok(guard) => (guard, None),
            Err(_) => self.waiters.wait_async(self.inner.lock()).await,
        };
        MutexGuard::new(&self.waiters, owed, guard)
    }

    /// Lock if free now; records nothing.
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, TryLockError> {
        self.inner
            .try_lock()
            .map(|guard| MutexGuard::new(&self.waiters, None, guard))
    }

    /// A mutable reference to the value; no locking needed.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

/// Shared access to an [`RwLock`]'s value, released on drop.
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    inner: ManuallyDrop<Option<::tokio::sync::RwLockReadGuard<'a, T>>>,
    release: Release<'a>,
}

/// Exclusive access to an [`RwLock`]'s value, released on drop.
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    inner: ManuallyDrop<Option<::tokio::sync::RwLockWriteGuard<'a, T>>>,
    release: Release<'a>,
}

/// An async reader-writer lock that records contention:
/// `tokio::sync::RwLock`'s API.
pub struct RwLock<T: ?Sized> {
    waiters: Waiters,
    inner: ::tokio::sync::RwLock<T>,
}

impl<T> RwLock<T> {
    /// A new unlocked lock holding `value`; `const`, so it can be a `static`.
    pub const fn new(value: T) -> Self {
        Self {
            waiters: Waiters::new(),
            inner: ::tokio::sync::RwLock::const_new(value),
        }
    }

    /// Consume the lock and return its value.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Shared access, waiting while a writer holds or awaits the lock.
    pub async fn read(&self) -> RwLockReadGuard<'_, T> {
        let (guard, owed) = match self.inner.try_read() {
            Ok(guard) => (guard, None),
            Err(_) => self.waiters.wait_async(self.inner.read()).await,
        };
        RwLockReadGuard::new(&self.waiters, owed, guard)
    }

    /// Exclusive access, waiting while anyone holds the lock.
    pub async fn write(&self) -> RwLockWriteGuard<'_, T> {
        let (guard, owed) = match self.inner.try_write() {
            Ok(guard) => (guard, None),
            Err(_) => self.waiters.wait_async(self.inner.write()).await,
        };
        RwLockWriteGuard::new(&self.waiters, owed, guard)
    }

    /// Shared access if available now; records nothing.
    pub fn try_read(&self) -> Result<RwLockReadGuard<'_, T>, TryLockError> {
        self.inner
            .try_read()
            .map(|guard| RwLockReadGuard::new(&self.waiters, None, guard))
    }

    /// Exclusive access if available now; records nothing.
    pub fn try_write(&self) -> Result<RwLockWriteGuard<'_, T>, TryLockError> {
        self.inner
            .try_write()
            .map(|guard| RwLockWriteGuard::new(&self.waiters, None, guard))
    }

    /// A mutable reference to the value; no locking needed.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

lock_impls!(Mutex, RwLock);
guard_impls!(MutexGuard, tokio_sync::MutexGuard, DerefMut);
guard_impls!(RwLockReadGuard, tokio_sync::RwLockReadGuard);
guard_impls!(RwLockWriteGuard, tokio_sync::RwLockWriteGuard, DerefMut);

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::profiles::contention_leaves as leaves;
    use crate::sync::events::Kind;

    async fn hold_the_async_lock(lock: Arc<Mutex<u32>>, held: ::tokio::sync::oneshot::Sender<()>) {
        let mut guard = lock.lock().await;
        let _ = held.send(());
        ::tokio::time::sleep(Duration::from_millis(200)).await;
        *guard += 1;
    }

    async fn wait_for_the_async_lock(lock: Arc<Mutex<u32>>) {
        *lock.lock().await += 1;
    }

    #[test]
    fn a_task_waiting_for_an_async_lock_is_recorded() {
        super::super::set_mutex_profile_fraction(1);
        super::super::set_block_profile_rate(1);
        let runtime = ::tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let lock = Arc::new(Mutex::new(0));
        runtime.block_on(async {
            let (held, holding) = ::tokio::sync::oneshot::channel();
            let holder = ::tokio::spawn(hold_the_async_lock(lock.clone(), held));
            let _ = holding.await;
            wait_for_the_async_lock(lock.clone()).await;
            holder.await.expect("holder");
        });
        assert_eq!(*lock.try_lock().expect("free"), 2);
        let in_range = |v: &[i64]| v[0] == 1 && (150_000_000..2_000_000_000).contains(&v[1]);
        let mutex = leaves(Kind::Mutex);
        assert!(
            mutex
                .iter()
                .any(|(f, v)| f.contains("hold_the_async_lock") && in_range(v)),
            "{mutex:?}"
        );
        let block = leaves(Kind::Block);
        assert!(
            block
                .iter()
                .any(|(f, v)| f.contains("wait_for_the_async_lock") && in_range(v)),
            "{block:?}"
        );
    }
}
