//! A request for one profile: admitted, collected (twice, for a delta),
//! then encoded or written as text, all through the [`Profile`] trait.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use super::flight::Flights;
use super::params::Named;
use super::respond::Reply;
use crate::format::{BoundedWriter, StackProfile, WriteError};
use crate::profiles::{Admission, Ask, Cancel, Profile, Seconds, Working, blocking};
use crate::{Config, Error, format};

/// A request for one of the [`profiles`](crate::profiles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProfileRequest {
    pub(crate) profile: Named,
    /// `debug=N` (0 for profile.proto).
    pub(crate) debug: u32,
    /// For a delta profile, the gap between its two snapshots.
    pub(crate) delta: Option<Duration>,
    /// For a window profile (CPU), its length and rate.
    pub(crate) window: Duration,
    pub(crate) hz: u32,
}

/// HEAD: the headers a GET would get, without collecting anything.
pub(super) fn head(asked: &ProfileRequest) -> Result<Reply, Error> {
    let profile = asked.profile.0;
    profile.available()?;
    Ok(if asked.debug > 0 {
        Reply::Text(String::new())
    } else {
        Reply::ProfileHead {
            filename: filename(profile, asked),
        }
    })
}

/// GET (or a POSTed form): the profile, as profile.proto or text.
///
/// Admission first: a snapshot of an [`Admission::Coalesced`] profile
/// joins the answer being made for the same question, if any; a delta
/// request takes one of the profile's `max_delta_requests` places (409
/// when none is free); then the profile's own [`Admission`]. Dropping the
/// returned future (the client went away) frees what the request held and
/// stops its blocking work.
pub(super) async fn serve(config: &Config, asked: ProfileRequest) -> Result<Reply, Error> {
    let profile = asked.profile.0;
    let mut ask = Ask::new(config, asked.debug, asked.window, asked.hz);
    let answer = Answering {
        profile,
        debug: asked.debug,
        filename: filename(profile, &asked),
        max_text: config.max_text_bytes,
    };
    if asked.delta.is_none() && matches!(profile.admission(), Admission::Coalesced) {
        let key = SnapshotKey {
            name: profile.name(),
            debug: asked.debug,
            max_text: config.max_text_bytes,
            thread_signal: ask.thread_signal,
            thread_timeout: ask.thread_timeout,
            task_dump_timeout: ask.task_dump_timeout,
        };
        return SNAPSHOTS
            .join(key, move |cancel| {
                ask.cancel = cancel;
                async move {
                    let collected = profile.collect(ask.clone(), None).await?;
                    answer.blocking(collected, ask.cancel, None).await
                }
            })
            .await;
    }
    let cancel = ask.cancel.clone();
    let _cancel_when_gone = cancel.on_drop();
    let Collected {
        first,
        later,
        working,
    } = collect(profile, ask, asked.delta).await?;
    let collected = match later {
        Some(later) => first.delta_to(later),
        None => first,
    };
    answer.blocking(collected, cancel, working).await
}

/// What a request collected: one profile, or the two a delta compares,
/// with its admission held until this is dropped.
pub(super) struct Collected {
    pub(super) first: StackProfile,
    pub(super) later: Option<StackProfile>,
    pub(super) working: Working,
}

/// Admit a request and collect: one profile, or with `delta` a second one
/// that much later (a window profile's second window follows its first).
/// A delta holds one of the profile's `max_delta_requests` places until
/// both are collected (409 when none is free).
pub(super) async fn collect(
    profile: &'static dyn Profile,
    ask: Ask,
    delta: Option<Duration>,
) -> Result<Collected, Error> {
    let _place = delta
        .map(|_| DeltaPlace::take(profile.name(), ask.max_delta_requests))
        .transpose()?;
    // A busy profile refuses the request (409) instead of queueing it.
    let mut working = admit(profile.admission())?;
    let first = profile.collect(ask.clone(), working.clone()).await?;
    let later = match delta {
        None => None,
        Some(_) if profile.about().seconds == Seconds::Window => {
            Some(profile.collect(ask, working.clone()).await?)
        }
        Some(wait) => {
            // Waiting is not working: free the slot for others meanwhile, then
            // queue for it (a request once admitted is not turned away).
            drop(working.take());
            tokio::time::sleep(wait).await;
            working = readmit(profile.admission()).await;
            Some(profile.collect(ask, working.clone()).await?)
        }
    };
    Ok(Collected {
        first,
        later,
        working,
    })
}

/// How a collected profile becomes the answer.
struct Answering {
    profile: &'static dyn Profile,
    debug: u32,
    filename: String,
    max_text: usize,
}

impl Answering {
    /// Encode (debug=0) or write the text of `collected` on a blocking
    /// thread, holding `working`; stops between steps once `cancel` is set,
    /// and the text at `max_text` bytes.
    async fn blocking(
        self,
        collected: StackProfile,
        cancel: Cancel,
        working: Working,
    ) -> Result<Reply, Error> {
        let Self {
            profile,
            debug,
            filename,
            max_text,
        } = self;
        debug_assert!(
            collected.sample_types == profile.about().sample_types
                && collected.period_type == profile.about().period_type,
            "{} collected other types than it declares",
            profile.name()
        );
        blocking(move || {
            let _working = working;
            cancel.check()?;
            if debug == 0 {
                let proto = format::to_proto(&collected);
                cancel.check()?;
                let body = format::gzip_proto(&proto);
                return Ok(Reply::Profile { filename, body });
            }
            let stop = || cancel.is_cancelled();
            let mut out = BoundedWriter::new(max_text).stopping_when(&stop);
            let written = profile.text(&collected, debug, &mut out);
            match out.finish(written) {
                Ok(text) => Ok(Reply::Text(text)),
                Err(WriteError::TooLarge(error)) => Err(error),
                Err(WriteError::Stopped) => cancel.check().map(|()| Reply::Text(String::new())),
                Err(WriteError::Failed) => Err(Error::Profiler(format!(
                    "{} has no text form",
                    profile.name()
                ))),
            }
        })
        .await
    }
}

/// What makes two snapshot requests ask for the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SnapshotKey {
    name: &'static str,
    debug: u32,
    max_text: usize,
    thread_signal: i32,
    thread_timeout: Duration,
    task_dump_timeout: Duration,
}

/// Snapshots of [`Admission::Coalesced`] profiles being made.
static SNAPSHOTS: LazyLock<Flights<SnapshotKey>> = LazyLock::new(Flights::new);

/// One of a profile's places for delta requests in flight, freed on drop.
struct DeltaPlace(&'static str);

/// Delta requests in flight, by profile.
static DELTAS: Mutex<BTreeMap<&'static str, usize>> = Mutex::new(BTreeMap::new());

impl DeltaPlace {
    /// A place among `limit` for a delta request of `profile`, or the 409.
    fn take(profile: &'static str, limit: usize) -> Result<Self, Error> {
        let mut deltas = DELTAS.lock().unwrap_or_else(PoisonError::into_inner);
        let in_flight = deltas.entry(profile).or_default();
        if *in_flight >= limit {
            return Err(Error::DeltaBusy { profile, limit });
        }
        *in_flight += 1;
        Ok(Self(profile))
    }
}

impl Drop for DeltaPlace {
    fn drop(&mut self) {
        let mut deltas = DELTAS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(in_flight) = deltas.get_mut(self.0) {
            *in_flight = in_flight.saturating_sub(1);
        }
    }
}

/// The attachment's name: the profile's, `-delta` for a delta profile.
fn filename(profile: &dyn Profile, asked: &ProfileRequest) -> String {
    match asked.delta {
        Some(_) => format!("{}-delta", profile.name()),
        None => profile.name().to_owned(),
    }
}

/// The right to work now, or the profile's busy error.
fn admit(admission: Admission) -> Result<Working, Error> {
    match admission {
        Admission::Shared | Admission::Coalesced => Ok(None),
        Admission::OneAtATime(slot) => slot.try_claim().map(|permit| Some(Arc::new(permit))),
    }
}

/// The right to work, once it is free: for a request already admitted.
async fn readmit(admission: Admission) -> Working {
    match admission {
        Admission::Shared | Admission::Coalesced => None,
        Admission::OneAtATime(slot) => Some(Arc::new(slot.claim().await)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::PoisonError;

    use bytes::Bytes;
    use http::StatusCode;
    use http_body_util::BodyExt;

    use crate::profiles::{Admission, PROFILES};
    use crate::{Config, Pprof};

    /// The only test that takes the process-wide slots (tests run in
    /// parallel): while a one-at-a-time profile's slot is held, a request
    /// for it, proto or text, gets 409 and the slot's message, not a queue.
    #[tokio::test]
    async fn a_request_for_a_busy_profile_gets_409_not_a_queue() {
        let pprof = Pprof::new(Config::default());
        let get = |target: String| {
            let request = http::Request::get(target)
                .body(http_body_util::Empty::<Bytes>::new())
                .expect("request");
            pprof.handle(request)
        };
        let mut checked = 0;
        for p in PROFILES {
            let Admission::OneAtATime(slot) = p.admission() else {
                continue;
            };
            let working = slot.try_claim().expect("slot free");
            let busy = slot.try_claim().expect_err("slot taken");
            for query in ["", "?debug=1"] {
                let response = get(format!("/debug/pprof/{}{query}", p.name())).await;
                assert_eq!(response.status(), StatusCode::CONFLICT, "{}", p.name());
                assert_eq!(response.headers()["x-go-pprof"], "1");
                let body = response.into_body().collect().await.map(|b| b.to_bytes());
                let text = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                assert_eq!(text, format!("{busy}\n"));
            }
            drop(working);
            // Free again: the next request is not refused as busy (this
            // binary has no jemalloc profiler, so heap answers "not
            // enabled").
            let response = get(format!("/debug/pprof/{}?seconds=1", p.name())).await;
            assert_ne!(response.status(), StatusCode::CONFLICT, "{}", p.name());
            assert!(slot.try_claim().is_ok());
            checked += 1;
        }
        assert!(
            checked >= 2,
            "heap, allocs and the CPU profile are one at a time"
        );
    }

    async fn body_of(response: http::Response<crate::ResponseBody>) -> (StatusCode, Bytes) {
        let status = response.status();
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        (status, body.unwrap_or_default())
    }

    /// While one dump cannot finish (the dump lock is held), eight requests
    /// for the goroutine profile all wait for it: one dump, one encoding,
    /// the same answer for each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(
        clippy::await_holding_lock,
        reason = "holding the dump lock across the waits is the point"
    )]
    async fn concurrent_goroutine_requests_share_one_dump() {
        let held = crate::signals::hold_dumps();
        let name = crate::profiles::Profile::name(&crate::profiles::GOROUTINE);
        let requests: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(async move {
                    let pprof = Pprof::new(Config::default());
                    let request = http::Request::get(format!("/debug/pprof/{name}"))
                        .body(http_body_util::Empty::<Bytes>::new())
                        .expect("request");
                    body_of(pprof.handle(request).await).await
                })
            })
            .collect();
        let config = Config::default();
        let key = super::SnapshotKey {
            name,
            debug: 0,
            max_text: config.max_text_bytes,
            thread_signal: config.thread_signal,
            thread_timeout: config.thread_timeout,
            task_dump_timeout: config.task_dump_timeout,
        };
        // Not a timing assertion: wait (up to 20 s) until all eight wait.
        for _ in 0..2000 {
            if super::SNAPSHOTS.waiting(&key) == 8 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(super::SNAPSHOTS.waiting(&key), 8);
        drop(held);
        let mut bodies = Vec::new();
        for request in requests {
            let (status, body) = request.await.expect("task");
            assert_eq!(status, StatusCode::OK);
            bodies.push(body);
        }
        assert!(bodies.iter().all(|b| *b == bodies[0]), "one answer for all");
        // Once answered, the next request makes a new dump.
        assert_eq!(super::SNAPSHOTS.waiting(&key), 0);
    }

    /// The delta places of `threadcreate` (no other test takes them): one
    /// more than `max_delta_requests` in flight is a 409; a request that
    /// goes away gives its place back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delta_requests_beyond_the_limit_get_409_and_a_dropped_one_frees_its_place() {
        let pprof = Pprof::new(Config::default().max_delta_requests(2));
        let name = crate::profiles::Profile::name(&crate::profiles::THREADCREATE);
        let get = |target: String| {
            let request = http::Request::get(target)
                .body(http_body_util::Empty::<Bytes>::new())
                .expect("request");
            let pprof = pprof.clone();
            async move { body_of(pprof.handle(request).await).await }
        };
        let waiting: Vec<_> = (0..2)
            .map(|_| tokio::spawn(get(format!("/debug/pprof/{name}?seconds=60"))))
            .collect();
        let in_flight = || {
            let deltas = super::DELTAS.lock().unwrap_or_else(PoisonError::into_inner);
            deltas.get(name).copied().unwrap_or(0)
        };
        // Not a timing assertion: wait (up to 20 s) until both are in flight.
        for _ in 0..2000 {
            if in_flight() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (status, body) = get(format!("/debug/pprof/{name}?seconds=1")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            body,
            format!(
                "Could not start a delta {name} profile: 2 are in progress, the server's limit (max_delta_requests); try again\n"
            )
        );
        for w in &waiting {
            w.abort();
        }
        for w in waiting {
            let _ = w.await;
        }
        assert_eq!(
            in_flight(),
            0,
            "the dropped requests gave their places back"
        );
        let (status, _) = get(format!("/debug/pprof/{name}?seconds=1")).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn symbol_lookups_beyond_two_at_once_get_409_and_too_many_addresses_400() {
        let pprof = Pprof::new(Config::default().max_symbol_addresses(3));
        let post = |body: &'static str| {
            let request = http::Request::post("/debug/pprof/symbol")
                .body(http_body_util::Full::new(Bytes::from_static(
                    body.as_bytes(),
                )))
                .expect("request");
            let pprof = pprof.clone();
            async move { body_of(pprof.handle(request).await).await }
        };
        let (status, body) = post("0x1+0x2+0x3+0x4").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            "the request asks for more than 3 addresses, the server's limit (max_symbol_addresses); ask in smaller batches\n"
        );
        let (status, _) = post("0x1+0x2+0x3").await;
        assert_eq!(status, StatusCode::OK);
        let held = [
            super::super::symbol::hold_lookup(),
            super::super::symbol::hold_lookup(),
        ];
        let (status, body) = post("0x1").await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            body,
            "Could not look up symbols: 2 lookups are in progress, the server's limit; try again\n"
        );
        // HEAD runs no lookup (issue 20, point 8): it is answered while
        // both places are taken, with a text answer's headers.
        let head = http::Request::head("/debug/pprof/symbol?0x1+0x2")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let response = pprof.handle(head).await;
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; charset=utf-8"
        );
        assert_eq!(body_of(response).await, (StatusCode::OK, Bytes::new()));
        drop(held);
        assert_eq!(post("0x1").await.0, StatusCode::OK);
    }
}
