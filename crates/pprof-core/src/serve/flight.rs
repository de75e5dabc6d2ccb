//! Answers that concurrent requests share: the first request for a key
//! starts the work on its own task; requests for the same key that arrive
//! before it ends wait for the same answer instead of starting their own.
//! When the last request waiting has gone (its client hung up), the work's
//! [`Cancel`] is set, so its blocking steps stop; a request arriving after
//! that starts afresh.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::watch;

use super::respond::Reply;
use crate::Error;
use crate::profiles::Cancel;

/// The answer of one piece of work, once there is one.
type Answer = Option<Result<Reply, Error>>;

/// The work in flight, by key.
#[derive(Debug)]
pub(super) struct Flights<K> {
    running: Mutex<HashMap<K, Flight>>,
}

#[derive(Debug)]
struct Flight {
    /// The requests waiting for it; none left means cancelled.
    interest: Weak<Interest>,
    answer: watch::Receiver<Answer>,
}

/// Held by each request waiting for a flight; the last one dropped
/// cancels the work.
#[derive(Debug)]
struct Interest(Cancel);

impl Drop for Interest {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> Flights<K> {
    pub(super) fn new() -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
        }
    }

    /// How many requests wait for the flight of `key` now (tests).
    #[cfg(test)]
    pub(super) fn waiting(&self, key: &K) -> usize {
        self.lock()
            .get(key)
            .map_or(0, |flight| flight.interest.strong_count())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Flight>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer for `key`: the one being made, or a new one that `work`
    /// makes on a task of its own (it gets the flight's [`Cancel`]).
    pub(super) async fn join<W, F>(&'static self, key: K, work: W) -> Result<Reply, Error>
    where
        W: FnOnce(Cancel) -> F,
        F: Future<Output = Result<Reply, Error>> + Send + 'static,
    {
        let (_interest, mut answer) = self.interest_in(key, work);
        match answer.wait_for(Option::is_some).await {
            Ok(done) => done.clone().unwrap_or_else(|| Err(gone())),
            // The task ended without an answer (the runtime is shutting down).
            Err(_) => Err(gone()),
        }
    }

    fn interest_in<W, F>(&'static self, key: K, work: W) -> (Arc<Interest>, watch::Receiver<Answer>)
    where
        W: FnOnce(Cancel) -> F,
        F: Future<Output = Result<Reply, Error>> + Send + 'static,
    {
        let mut running = self.lock();
        if let Some(flight) = running.get(&key)
            && let Some(interest) = flight.interest.upgrade()
        {
            return (interest, flight.answer.clone());
        }
        let cancel = Cancel::default();
        let interest = Arc::new(Interest(cancel.clone()));
        let (send, answer) = watch::channel(None);
        running.insert(
            key.clone(),
            Flight {
                interest: Arc::downgrade(&interest),
                answer: answer.clone(),
            },
        );
        drop(running);
        let making = work(cancel);
        let ours = answer.clone();
        tokio::spawn(async move {
            let made = making.await;
            // Later requests start afresh (unless a newer flight took the key).
            let mut running = self.lock();
            if running
                .get(&key)
                .is_some_and(|flight| flight.answer.same_channel(&ours))
            {
                running.remove(&key);
            }
            drop(running);
            let _ = send.send(Some(made));
        });
        (interest, answer)
    }
}

fn gone() -> Error {
    Error::Profiler("the profile task ended without an answer".to_owned())
}
