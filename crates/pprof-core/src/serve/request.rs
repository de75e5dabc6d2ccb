//! Turning a method, path and query into a typed request, or the error that
//! says what was wrong with it. No I/O happens here.

use std::time::Duration;

use http::Method;

use super::params::{Named, Params};
use super::profile::ProfileRequest;
use crate::profiles::{self, Profile, Seconds};
use crate::{Config, Error};

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// The bare prefix: redirect to the index, relative to where we are mounted.
    Redirect {
        location: String,
    },
    Index,
    Cmdline,
    Symbol,
    Profile(ProfileRequest),
    /// A page for people (`ui/...`); a bad parameter is answered as a page too.
    #[cfg(feature = "ui")]
    Page(Result<super::ui::PageRequest, Error>),
}

pub(crate) struct Parsed {
    pub(crate) route: Route,
    pub(crate) head_only: bool,
}

/// The profile a path under the prefix names, if it names one.
fn named_profile(config: &Config, path: &str) -> Option<&'static dyn Profile> {
    let name = path
        .strip_prefix(config.prefix.as_str())?
        .strip_prefix('/')?;
    profiles::find(name)
}

/// Whether a POSTed form to `path` carries the request's parameters (the
/// window profiles take `seconds` from a form, as Go's `FormValue` does).
pub(crate) fn takes_form(config: &Config, path: &str) -> bool {
    named_profile(config, path).is_some_and(|p| p.about().seconds == Seconds::Window)
}

/// Parse one request line. `query` is the raw query string without `?`;
/// `form` a POSTed `application/x-www-form-urlencoded` body, whose values
/// win over the query's (Go's `ParseForm`).
pub(crate) fn parse(
    config: &Config,
    method: &Method,
    path: &str,
    query: Option<&str>,
    form: Option<&str>,
) -> Result<Parsed, Error> {
    let rest = path
        .strip_prefix(config.prefix.as_str())
        .ok_or(Error::UnknownProfile)?;
    let head_only = method == Method::HEAD;
    if rest.is_empty() {
        return Ok(Parsed {
            route: redirect_to_index(config),
            head_only,
        });
    }
    let name = rest.strip_prefix('/').ok_or(Error::UnknownProfile)?;
    let params = Params::new(form.unwrap_or_default(), query.unwrap_or_default());
    let (route, accepts_post) = match name {
        "" => (Route::Index, false),
        "cmdline" => (Route::Cmdline, false),
        "symbol" => (Route::Symbol, true),
        "trace" => return Err(Error::TraceUnsupported),
        #[cfg(feature = "ui")]
        page if page.starts_with("ui/") => (
            Route::Page(super::ui::parse(config, &page[3..], &params)),
            true,
        ),
        other => {
            let profile = profiles::find(other).ok_or(Error::UnknownProfile)?;
            let request = profile_request(config, profile, &params)?;
            (
                Route::Profile(request),
                profile.about().seconds == Seconds::Window,
            )
        }
    };
    let method_ok =
        method == Method::GET || method == Method::HEAD || (accepts_post && method == Method::POST);
    if !method_ok {
        return Err(Error::MethodNotAllowed);
    }
    Ok(Parsed { route, head_only })
}

/// The redirect from the bare prefix to the index, relative to the bare
/// prefix itself, so it is right under any mount point.
fn redirect_to_index(config: &Config) -> Route {
    let last = config.prefix.rsplit('/').next().unwrap_or_default();
    let location = if last.is_empty() {
        "./".to_owned()
    } else {
        format!("{last}/")
    };
    Route::Redirect { location }
}

/// A profile's parameters: a window profile's `seconds` (default
/// `default_duration`) and `hz`; a snapshot profile's `debug` and delta
/// `seconds`, not both.
fn profile_request(
    config: &Config,
    profile: &'static dyn Profile,
    params: &Params,
) -> Result<ProfileRequest, Error> {
    let mut request = ProfileRequest {
        profile: Named(profile),
        debug: 0,
        delta: None,
        window: Duration::ZERO,
        hz: 0,
    };
    match profile.about().seconds {
        Seconds::Window => {
            request.window = params
                .seconds(config.max_duration)?
                .unwrap_or(config.default_duration.min(config.max_duration));
            request.hz = params.hz(config)?;
        }
        Seconds::Delta => {
            request.debug = params.debug()?;
            request.delta = params.seconds(config.max_duration)?;
            if request.delta.is_some() && request.debug > 0 {
                return Err(Error::SecondsWithDebug);
            }
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Profiles are picked by what they are, never by name: the parser
    // knows them only through the registry.

    /// The window profile (CPU) and its path.
    fn window() -> (&'static dyn Profile, String) {
        let p = profiles::PROFILES
            .iter()
            .copied()
            .find(|p| p.about().seconds == Seconds::Window)
            .expect("a window profile is registered");
        (p, format!("/debug/pprof/{}", p.name()))
    }

    /// Every snapshot profile and its path.
    fn snapshots() -> Vec<(&'static dyn Profile, String)> {
        profiles::PROFILES
            .iter()
            .copied()
            .filter(|p| p.about().seconds == Seconds::Delta)
            .map(|p| (p, format!("/debug/pprof/{}", p.name())))
            .collect()
    }

    fn route(method: Method, path: &str, query: Option<&str>) -> Result<Route, Error> {
        parse(&Config::default(), &method, path, query, None).map(|p| p.route)
    }

    fn get(path: &str, query: Option<&str>) -> Result<Route, Error> {
        route(Method::GET, path, query)
    }

    /// The window profile's route, as parsing gives it.
    fn window_route(seconds: u64, hz: u32) -> Route {
        Route::Profile(ProfileRequest {
            profile: Named(window().0),
            debug: 0,
            delta: None,
            window: Duration::from_secs(seconds),
            hz,
        })
    }

    /// A snapshot profile's route, as parsing gives it.
    fn snapshot_route(profile: &'static dyn Profile, debug: u32, delta: Option<u64>) -> Route {
        Route::Profile(ProfileRequest {
            profile: Named(profile),
            debug,
            delta: delta.map(Duration::from_secs),
            window: Duration::ZERO,
            hz: 0,
        })
    }

    #[test]
    fn cpu_defaults_to_thirty_seconds_at_100_hz() {
        assert_eq!(get(&window().1, None), Ok(window_route(30, 100)));
    }

    #[test]
    fn bad_seconds_are_rejected_not_defaulted() {
        let mut paths: Vec<String> = snapshots().into_iter().map(|(_, path)| path).collect();
        paths.push(window().1);
        for path in &paths {
            for q in [
                "seconds=abc",
                "seconds=0",
                "seconds=-5",
                "seconds=",
                "seconds=1.5",
            ] {
                assert_eq!(get(path, Some(q)), Err(Error::InvalidSeconds), "{path}?{q}");
            }
            for q in ["seconds=301", "seconds=99999999999999999999999"] {
                assert_eq!(
                    get(path, Some(q)),
                    Err(Error::SecondsTooLong { limit: 300 }),
                    "{path}?{q}"
                );
            }
        }
    }

    #[test]
    fn first_of_repeated_params_wins() {
        assert_eq!(
            get(&window().1, Some("seconds=2&seconds=abc")),
            Ok(window_route(2, 100))
        );
    }

    #[test]
    fn posted_form_values_win_and_default_respects_the_limit() {
        let (_, path) = window();
        let parsed = parse(
            &Config::default(),
            &Method::POST,
            &path,
            Some("seconds=9"),
            Some("seconds=2"),
        )
        .map(|p| p.route);
        assert_eq!(parsed, Ok(window_route(2, 100)));
        assert!(takes_form(&Config::default(), &path));
        let short = Config::default().max_duration(Duration::from_secs(10));
        assert_eq!(
            parse(&short, &Method::GET, &path, None, None).map(|p| p.route),
            Ok(window_route(10, 100))
        );
    }

    #[test]
    fn hz_outside_range_is_rejected() {
        for q in ["hz=0", "hz=1001", "hz=x"] {
            assert_eq!(
                get(&window().1, Some(q)),
                Err(Error::InvalidHz { min: 1, max: 1000 })
            );
        }
    }

    #[test]
    fn snapshot_profiles_take_debug_or_seconds_but_not_both() {
        for (profile, path) in snapshots() {
            assert_eq!(
                get(&path, Some("debug=1&gc=1")),
                Ok(snapshot_route(profile, 1, None))
            );
            assert_eq!(
                get(&path, Some("seconds=5")),
                Ok(snapshot_route(profile, 0, Some(5)))
            );
            assert_eq!(
                get(&path, Some("seconds=5&debug=1")),
                Err(Error::SecondsWithDebug)
            );
            assert_eq!(get(&path, Some("debug=x")), Err(Error::InvalidDebug));
            assert!(!takes_form(&Config::default(), &path));
        }
    }

    #[test]
    fn unknown_paths_and_methods() {
        let (_, snapshot) = snapshots().remove(0);
        let name = snapshot.trim_start_matches("/debug/pprof/");
        for path in [
            "/debug/pprof/nope".to_owned(),
            format!("{snapshot}/"),
            format!("/debug/pprof/../{name}"),
            "/debug/pprofx".to_owned(),
            "/elsewhere".to_owned(),
        ] {
            assert_eq!(get(&path, None), Err(Error::UnknownProfile), "{path}");
        }
        for (_, path) in snapshots() {
            assert_eq!(
                route(Method::DELETE, &path, None),
                Err(Error::MethodNotAllowed)
            );
            assert_eq!(
                route(Method::POST, &path, None),
                Err(Error::MethodNotAllowed)
            );
        }
        assert!(route(Method::POST, "/debug/pprof/symbol", None).is_ok());
        assert!(route(Method::POST, &window().1, None).is_ok());
    }

    #[test]
    fn bare_prefix_redirects_relative_to_the_mount() {
        assert_eq!(
            get("/debug/pprof", None),
            Ok(Route::Redirect {
                location: "pprof/".into()
            })
        );
        let config = Config::default().prefix("/internal/prof/");
        assert_eq!(
            parse(&config, &Method::GET, "/internal/prof", None, None).map(|p| p.route),
            Ok(Route::Redirect {
                location: "prof/".into()
            })
        );
    }
}
