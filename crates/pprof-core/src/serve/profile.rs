//! A request for one profile: admitted, collected (twice, for a delta),
//! then encoded or written as text, all through the [`Profile`] trait.

use std::sync::Arc;
use std::time::Duration;

use super::request::ProfileRequest;
use super::respond::Reply;
use crate::format::StackProfile;
use crate::profiles::{Admission, Ask, Profile, Seconds, Working, blocking};
use crate::{Config, Error, format};

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
pub(super) async fn serve(config: &Config, asked: ProfileRequest) -> Result<Reply, Error> {
    let profile = asked.profile.0;
    let ask = Ask::new(config, asked.debug, asked.window, asked.hz);
    let Collected {
        first,
        later,
        working,
    } = collect(profile, ask, asked.delta).await?;
    let collected = match later {
        Some(later) => first.delta_to(later),
        None => first,
    };
    debug_assert!(
        collected.sample_types == profile.about().sample_types
            && collected.period_type == profile.about().period_type,
        "{} collected other types than it declares",
        profile.name()
    );
    let filename = filename(profile, &asked);
    let debug = asked.debug;
    blocking(move || {
        let _working = working;
        if debug == 0 {
            let body = format::gzip_proto(&format::to_proto(&collected));
            return Ok(Reply::Profile { filename, body });
        }
        let mut text = String::new();
        profile
            .text(&collected, debug, &mut text)
            .map_err(|_| Error::Profiler(format!("{} has no text form", profile.name())))?;
        Ok(Reply::Text(text))
    })
    .await
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
pub(super) async fn collect(
    profile: &'static dyn Profile,
    ask: Ask,
    delta: Option<Duration>,
) -> Result<Collected, Error> {
    // A busy profile refuses the request (409) instead of queueing it.
    let mut working = admit(profile.admission())?;
    let first = profile.collect(ask, working.clone()).await?;
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
        Admission::Shared => Ok(None),
        Admission::OneAtATime(slot) => slot.try_claim().map(|permit| Some(Arc::new(permit))),
    }
}

/// The right to work, once it is free: for a request already admitted.
async fn readmit(admission: Admission) -> Working {
    match admission {
        Admission::Shared => None,
        Admission::OneAtATime(slot) => Some(Arc::new(slot.claim().await)),
    }
}

#[cfg(test)]
mod tests {
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
}
