//! One module per profile family Go serves, each a [`Profile`]: what it is
//! called, what its samples measure, how requests for it are admitted, how
//! to collect it and how to write its text form.
//!
//! The HTTP face (`serve/`) works from [`PROFILES`] alone and never names a
//! profile; collectors know nothing of HTTP. Adding a profile is one module
//! here and one line in [`PROFILES`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::Error;
use crate::format::{StackProfile, ValueType};

mod contention;
mod cpu;
mod goroutine;
mod heap;
mod tasks;

#[cfg(test)]
pub(crate) use contention::tests::{
    leaves as contention_leaves, stacks as contention_stacks, text as contention_text,
};
/// The thread-dump profiles, for the handler's tests of shared dumps and
/// delta places (tests name them through these, not by their names).
#[cfg(test)]
pub(crate) use goroutine::{GOROUTINE, THREADCREATE};

/// Every profile served, in no particular order (the index sorts by name).
pub(crate) static PROFILES: &[&dyn Profile] = &[
    &cpu::CPU,
    &heap::HEAP,
    &heap::ALLOCS,
    &goroutine::GOROUTINE,
    &goroutine::THREADCREATE,
    &contention::MUTEX,
    &contention::BLOCK,
];

/// The profile served under `name`, if any.
pub(crate) fn find(name: &str) -> Option<&'static dyn Profile> {
    PROFILES.iter().copied().find(|p| p.name() == name)
}

/// What a profile is: everything the index page, the parser and the
/// pages know of it without collecting it.
#[derive(Debug)]
pub(crate) struct About {
    /// Go's name: the route (`/debug/pprof/NAME`) and the attachment's file name.
    pub(crate) name: &'static str,
    /// The index page's line about it.
    pub(crate) description: &'static str,
    /// Further links on the index page, `(relative href, text)`.
    pub(crate) index_links: &'static [(&'static str, &'static str)],
    /// Its sample types, in profile.proto's order.
    pub(crate) sample_types: &'static [ValueType],
    /// What one unit of `period` is.
    pub(crate) period_type: ValueType,
    /// What `?seconds=N` means for it.
    pub(crate) seconds: Seconds,
}

/// One profile type Go serves.
pub(crate) trait Profile: Sync {
    /// Its name, types and index entry.
    fn about(&self) -> &About;

    /// Go's name (shorthand for `about().name`).
    fn name(&self) -> &'static str {
        self.about().name
    }

    /// How many requests may work on it at once.
    fn admission(&self) -> Admission;

    /// `Ok` when this process can serve it at all (asked before answering HEAD).
    fn available(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Collect one profile: a snapshot now, or for a [`Seconds::Window`]
    /// profile the window `ask` names. Blocking work runs off the async
    /// workers and holds `working` until it is done, even if the request
    /// that asked is gone. With `ask.debug > 0` the samples are what the
    /// text form prints (raw counts where the profile is sampled, every
    /// thread on its own for `debug=2`).
    fn collect(&'static self, ask: Ask, working: Working) -> Collecting;

    /// The `debug=N` text form of a collected profile (Go's legacy formats).
    /// Blocking (it symbolizes).
    fn text(&self, profile: &StackProfile, debug: u32, out: &mut dyn fmt::Write) -> fmt::Result;

    /// The index page's count: stacks recorded, threads alive, profiles
    /// running. Blocking allowed (the heap's takes a dump): the index asks
    /// on a blocking thread, at most once a second, and shares the answer.
    fn count(&self) -> usize;
}

/// A profile being collected.
pub(crate) type Collecting = Pin<Box<dyn Future<Output = Result<StackProfile, Error>> + Send>>;

/// What `?seconds=N` asks of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seconds {
    /// Collect for N seconds (default: `Config::default_duration`), at the
    /// request's `hz`; no text form. The CPU profile.
    Window,
    /// Two snapshots N seconds apart, subtracted; without it, one snapshot.
    Delta,
}

/// How many requests may work on a profile at once. Whatever the
/// admission, delta requests (`?seconds=N`) of one profile in flight are
/// capped by `Config::max_delta_requests` (409 beyond).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Admission {
    /// Any number: collecting is cheap or bounded by the profile itself.
    Shared,
    /// One at a time in the whole process: another request meanwhile is
    /// refused at once (409) with the slot's error, never queued.
    OneAtATime(&'static Slot),
    /// Requests that ask for the same answer while it is being made share
    /// it: one collection and one encoding serve them all, so a burst of
    /// requests costs one dump (per kind of answer) at a time.
    Coalesced,
}

/// The right of one request at a time to work on a profile.
#[derive(Debug)]
pub(crate) struct Slot {
    permits: tokio::sync::Semaphore,
    busy: Error,
}

/// A held [`Slot`], freed when the last clone is dropped; `None` for
/// [`Admission::Shared`] profiles.
pub(crate) type Working = Option<Arc<Permit>>;

/// Proof of holding a [`Slot`].
#[derive(Debug)]
pub(crate) struct Permit {
    _permit: tokio::sync::SemaphorePermit<'static>,
}

impl Slot {
    /// A free slot; a request refused because it is taken gets `busy`.
    pub(crate) const fn new(busy: Error) -> Self {
        Self::limited(1, busy)
    }

    /// Room for `n` requests at once; one more gets `busy`.
    pub(crate) const fn limited(n: usize, busy: Error) -> Self {
        Self {
            permits: tokio::sync::Semaphore::const_new(n),
            busy,
        }
    }

    /// The slot if it is free now, else its busy error.
    pub(crate) fn try_claim(&'static self) -> Result<Permit, Error> {
        self.permits
            .try_acquire()
            .map(|permit| Permit { _permit: permit })
            .map_err(|_| self.busy.clone())
    }

    /// How many more requests it would let in now (tests).
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        self.permits.available_permits()
    }

    /// The slot once it is free: for work already admitted (the second
    /// snapshot of a delta profile).
    pub(crate) async fn claim(&'static self) -> Permit {
        loop {
            // The semaphore is never closed; should it be, try again.
            if let Ok(permit) = self.permits.acquire().await {
                return Permit { _permit: permit };
            }
            tokio::task::yield_now().await;
        }
    }
}

/// What a request asks a profile for, beyond its name.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    /// `debug=N`: 0 for profile.proto, more for a text form.
    pub(crate) debug: u32,
    /// A [`Seconds::Window`] profile's length.
    pub(crate) window: Duration,
    /// A [`Seconds::Window`] profile's sampling rate.
    pub(crate) hz: u32,
    /// The signal and timeout of thread dumps.
    pub(crate) thread_signal: i32,
    pub(crate) thread_timeout: Duration,
    /// How long a dump waits for tokio's task dump.
    pub(crate) task_dump_timeout: Duration,
    /// Set once nobody waits for the answer: blocking work stops at its
    /// next step.
    pub(crate) cancel: Cancel,
    /// How many window profiles may share the sampler.
    pub(crate) max_cpu_profiles: usize,
    /// How many delta requests of one profile may be in flight.
    pub(crate) max_delta_requests: usize,
}

impl Ask {
    /// A request with `config`'s thread-dump settings, `debug=N`, and (for
    /// a window profile) its length and rate.
    pub(crate) fn new(
        config: &crate::config::Config,
        debug: u32,
        window: Duration,
        hz: u32,
    ) -> Self {
        Self {
            debug,
            window,
            hz,
            thread_signal: config.thread_signal,
            thread_timeout: config.thread_timeout,
            task_dump_timeout: config.task_dump_timeout,
            cancel: Cancel::default(),
            max_cpu_profiles: config.max_cpu_profiles,
            max_delta_requests: config.max_delta_requests,
        }
    }
}

/// Whether anybody still waits for a piece of work: set when the last
/// request that asked for it has gone (its client hung up). Blocking work
/// (dumps, symbolization, encoding, text) checks it between steps and
/// stops. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Nobody waits any longer.
    pub(crate) fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether nobody waits any longer.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err` once cancelled: the next step is not worth doing. Nobody
    /// reads the error.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.is_cancelled() {
            Err(Error::Profiler(
                "abandoned: nobody waits for this answer any longer".to_owned(),
            ))
        } else {
            Ok(())
        }
    }

    /// A guard that cancels when dropped (with the request that holds it).
    pub(crate) fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

/// Cancels its [`Cancel`] when dropped.
#[derive(Debug)]
pub(crate) struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Run blocking work (dumps, symbolization, encoding) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Profiler(format!("profile task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_profile_has_types() {
        let mut names: Vec<&str> = PROFILES.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROFILES.len());
        for p in PROFILES {
            assert!(!p.about().sample_types.is_empty(), "{}", p.name());
            assert!(!p.about().description.is_empty(), "{}", p.name());
            assert_eq!(find(p.name()).map(|f| f.name()), Some(p.name()));
        }
        assert!(find("nope").is_none());
    }
}
