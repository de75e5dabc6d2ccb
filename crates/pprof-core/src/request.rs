//! Turning a method, path and query into a typed request, or the error that
//! says what was wrong with it. No I/O happens here.

use std::time::Duration;

use http::Method;

use crate::{Config, Error};

/// A named profile: the ones Go serves under `/debug/pprof/NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Named {
    Heap,
    Allocs,
    Goroutine,
    Threadcreate,
    Mutex,
    Block,
}

impl Named {
    pub(crate) const ALL: [Named; 6] = [
        Named::Allocs,
        Named::Block,
        Named::Goroutine,
        Named::Heap,
        Named::Mutex,
        Named::Threadcreate,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Heap => "heap",
            Self::Allocs => "allocs",
            Self::Goroutine => "goroutine",
            Self::Threadcreate => "threadcreate",
            Self::Mutex => "mutex",
            Self::Block => "block",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Go's one-line description, shown on the index page.
    pub(crate) fn description(self) -> &'static str {
        match self {
            Self::Allocs => "A sampling of all past memory allocations",
            Self::Heap => {
                "A sampling of memory allocations of live objects. You can specify the gc GET parameter to run GC before taking the heap sample."
            }
            Self::Goroutine => {
                "Stack traces of all current goroutines (here: every OS thread). Use debug=2 as a query parameter to export in the same format as an unrecovered panic."
            }
            Self::Threadcreate => "Stack traces that led to the creation of new OS threads",
            Self::Block => {
                "Stack traces that led to blocking on synchronization primitives (pprof_core::sync locks, and polls that blocked a runtime worker)"
            }
            Self::Mutex => "Stack traces of holders of contended mutexes (pprof_core::sync locks)",
        }
    }
}

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
    Cpu {
        duration: Duration,
        hz: u32,
    },
    Named {
        profile: Named,
        debug: u32,
        delta: Option<Duration>,
    },
}

pub(crate) struct Parsed {
    pub(crate) route: Route,
    pub(crate) head_only: bool,
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
    if rest.is_empty() {
        // Relative to the bare prefix itself, so it is right under any mount point.
        let last = config.prefix.rsplit('/').next().unwrap_or_default();
        let location = if last.is_empty() {
            "./".to_owned()
        } else {
            format!("{last}/")
        };
        return Ok(Parsed {
            route: Route::Redirect { location },
            head_only: method == Method::HEAD,
        });
    }
    let name = rest.strip_prefix('/').ok_or(Error::UnknownProfile)?;
    let params = Params::new(form.unwrap_or_default(), query.unwrap_or_default());
    let accepts_post = matches!(name, "profile" | "symbol");
    let method_ok =
        method == Method::GET || method == Method::HEAD || (accepts_post && method == Method::POST);
    let route = match name {
        "" => Route::Index,
        "cmdline" => Route::Cmdline,
        "symbol" => Route::Symbol,
        "trace" => return Err(Error::TraceUnsupported),
        "profile" => Route::Cpu {
            duration: params
                .seconds(config.max_duration)?
                .unwrap_or(config.default_duration.min(config.max_duration)),
            hz: params.hz(config)?,
        },
        other => {
            let profile = Named::from_name(other).ok_or(Error::UnknownProfile)?;
            let debug = params.debug()?;
            let delta = params.seconds(config.max_duration)?;
            if delta.is_some() && debug > 0 {
                return Err(Error::SecondsWithDebug);
            }
            Route::Named {
                profile,
                debug,
                delta,
            }
        }
    };
    if !method_ok {
        return Err(Error::MethodNotAllowed);
    }
    Ok(Parsed {
        route,
        head_only: method == Method::HEAD,
    })
}

/// Query parameters, first value wins (as Go's `FormValue`).
struct Params(Vec<(String, String)>);

impl Params {
    fn new(form: &str, query: &str) -> Self {
        Self(
            form_urlencoded::parse(form.as_bytes())
                .chain(form_urlencoded::parse(query.as_bytes()))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn seconds(&self, max: Duration) -> Result<Option<Duration>, Error> {
        let Some(raw) = self.get("seconds") else {
            return Ok(None);
        };
        let seconds: u64 = raw.trim().parse().map_err(|_| {
            // A number too large for u64 is still a number: say it is too long.
            if !raw.trim().is_empty() && raw.trim().bytes().all(|b| b.is_ascii_digit()) {
                Error::SecondsTooLong {
                    limit: max.as_secs(),
                }
            } else {
                Error::InvalidSeconds
            }
        })?;
        if seconds == 0 {
            return Err(Error::InvalidSeconds);
        }
        let duration = Duration::from_secs(seconds);
        if duration > max {
            return Err(Error::SecondsTooLong {
                limit: max.as_secs(),
            });
        }
        Ok(Some(duration))
    }

    fn debug(&self) -> Result<u32, Error> {
        match self.get("debug").map(str::trim) {
            None | Some("") => Ok(0),
            Some(raw) => raw.parse().map_err(|_| Error::InvalidDebug),
        }
    }

    fn hz(&self, config: &Config) -> Result<u32, Error> {
        let (min, max) = (config.min_hz, config.max_hz);
        match self.get("hz").map(str::trim) {
            None | Some("") => Ok(config.default_hz.clamp(min, max)),
            Some(raw) => match raw.parse::<u32>() {
                Ok(hz) if (min..=max).contains(&hz) => Ok(hz),
                _ => Err(Error::InvalidHz { min, max }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str, query: Option<&str>) -> Result<Route, Error> {
        parse(&Config::default(), &method, path, query, None).map(|p| p.route)
    }

    fn get(path: &str, query: Option<&str>) -> Result<Route, Error> {
        route(Method::GET, path, query)
    }

    #[test]
    fn cpu_defaults_to_thirty_seconds_at_100_hz() {
        assert_eq!(
            get("/debug/pprof/profile", None),
            Ok(Route::Cpu {
                duration: Duration::from_secs(30),
                hz: 100
            })
        );
    }

    #[test]
    fn bad_seconds_are_rejected_not_defaulted() {
        for q in [
            "seconds=abc",
            "seconds=0",
            "seconds=-5",
            "seconds=",
            "seconds=1.5",
        ] {
            assert_eq!(
                get("/debug/pprof/profile", Some(q)),
                Err(Error::InvalidSeconds),
                "{q}"
            );
        }
        for q in ["seconds=301", "seconds=99999999999999999999999"] {
            assert_eq!(
                get("/debug/pprof/profile", Some(q)),
                Err(Error::SecondsTooLong { limit: 300 }),
                "{q}"
            );
        }
    }

    #[test]
    fn first_of_repeated_params_wins() {
        assert_eq!(
            get("/debug/pprof/profile", Some("seconds=2&seconds=abc")),
            Ok(Route::Cpu {
                duration: Duration::from_secs(2),
                hz: 100
            })
        );
    }

    #[test]
    fn posted_form_values_win_and_default_respects_the_limit() {
        let parsed = parse(
            &Config::default(),
            &Method::POST,
            "/debug/pprof/profile",
            Some("seconds=9"),
            Some("seconds=2"),
        )
        .map(|p| p.route);
        assert_eq!(
            parsed,
            Ok(Route::Cpu {
                duration: Duration::from_secs(2),
                hz: 100
            })
        );
        let short = Config::default().max_duration(Duration::from_secs(10));
        assert_eq!(
            parse(&short, &Method::GET, "/debug/pprof/profile", None, None).map(|p| p.route),
            Ok(Route::Cpu {
                duration: Duration::from_secs(10),
                hz: 100
            })
        );
    }

    #[test]
    fn hz_outside_range_is_rejected() {
        for q in ["hz=0", "hz=1001", "hz=x"] {
            assert_eq!(
                get("/debug/pprof/profile", Some(q)),
                Err(Error::InvalidHz { min: 1, max: 1000 })
            );
        }
    }

    #[test]
    fn named_profiles_take_debug_or_seconds_but_not_both() {
        assert_eq!(
            get("/debug/pprof/heap", Some("debug=1&gc=1")),
            Ok(Route::Named {
                profile: Named::Heap,
                debug: 1,
                delta: None
            })
        );
        assert_eq!(
            get("/debug/pprof/allocs", Some("seconds=5")),
            Ok(Route::Named {
                profile: Named::Allocs,
                debug: 0,
                delta: Some(Duration::from_secs(5))
            })
        );
        assert_eq!(
            get("/debug/pprof/heap", Some("seconds=5&debug=1")),
            Err(Error::SecondsWithDebug)
        );
        assert_eq!(
            get("/debug/pprof/heap", Some("debug=x")),
            Err(Error::InvalidDebug)
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        for path in [
            "/debug/pprof/nope",
            "/debug/pprof/heap/",
            "/debug/pprof/../heap",
            "/debug/pprofx",
            "/elsewhere",
        ] {
            assert_eq!(get(path, None), Err(Error::UnknownProfile), "{path}");
        }
        assert_eq!(
            route(Method::DELETE, "/debug/pprof/heap", None),
            Err(Error::MethodNotAllowed)
        );
        assert_eq!(
            route(Method::POST, "/debug/pprof/heap", None),
            Err(Error::MethodNotAllowed)
        );
        assert!(route(Method::POST, "/debug/pprof/symbol", None).is_ok());
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
