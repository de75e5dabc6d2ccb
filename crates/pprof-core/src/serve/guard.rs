//! Who may ask: the access guards every request passes before any work is
//! done (no body read, no profile started), and the rules that keep a web
//! page of another site, open in a developer's browser, from using the
//! routes through it (cross-site requests, DNS rebinding).

use std::net::SocketAddr;

use http::{Method, header, request::Parts};

use crate::{Config, Error};

/// The address of the client a request came from, as the server saw it.
///
/// The loopback guard ([`Config::loopback_only`]) reads it from the
/// request's extensions. `pprof-axum` (with `ConnectInfo<SocketAddr>`),
/// `pprof-actix` and `pprof-warp` insert it themselves; with the tower
/// service or [`PprofLayer`](crate::PprofLayer) on plain hyper, insert it
/// per connection:
///
/// ```
/// # let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
/// let mut request = http::Request::get("/debug/pprof/").body(()).unwrap();
/// request.extensions_mut().insert(pprof_core::PeerAddr(peer));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Apply the guards in order: peer and host name (with `loopback_only`),
/// the request's site, token, predicate, switch.
pub(crate) fn check(config: &Config, parts: &Parts) -> Result<(), Error> {
    if config.loopback_only {
        let peer = parts
            .extensions
            .get::<PeerAddr>()
            .ok_or(Error::PeerUnknown)?;
        if !peer.0.ip().to_canonical().is_loopback() {
            return Err(Error::PeerNotLoopback);
        }
        check_host(config, parts)?;
    }
    check_site(parts)?;
    if let Some(expected) = &config.bearer_token {
        let given = bearer(parts).ok_or(Error::MissingToken)?;
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return Err(Error::WrongToken);
        }
    }
    if let Some(allow) = &config.allow
        && !allow(parts)
    {
        return Err(Error::Denied);
    }
    if let Some(switch) = &config.switch
        && !switch.is_on()
    {
        return Err(Error::SwitchedOff);
    }
    Ok(())
}

/// The names a loopback client reaches this host by.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// A loopback peer must name this host as loopback clients do, or by a
/// name the service configured ([`Config::allow_host`]): a browser that
/// loaded `http://evil.example:6060/` and had that name rebound to
/// 127.0.0.1 is a loopback peer, but it says `Host: evil.example:6060`.
fn check_host(config: &Config, parts: &Parts) -> Result<(), Error> {
    let named = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
    });
    let host = named.and_then(host_name);
    let allowed = host.is_some_and(|host| {
        LOOPBACK_NAMES
            .iter()
            .copied()
            .chain(config.allowed_hosts.iter().map(String::as_str))
            .any(|name| name.eq_ignore_ascii_case(host))
    });
    if allowed {
        return Ok(());
    }
    Err(Error::HostNotAllowed {
        host: shorten(named.unwrap_or_default()),
    })
}

/// The name in a `Host` value (`name`, `name:port`, `[v6]:port`): without
/// its port and a final dot; `None` when it is empty or the port is not a
/// number.
fn host_name(value: &str) -> Option<&str> {
    let name = match value.rsplit_once(':') {
        // `[::1]` alone splits inside the brackets: no port there.
        Some((name, port)) if !name.starts_with('[') || name.ends_with(']') => {
            port.bytes().all(|b| b.is_ascii_digit()).then_some(name)?
        }
        _ => value,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    (!name.is_empty()).then_some(name)
}

/// What a browser says about where a request comes from, checked as Go's
/// `http.CrossOriginProtection` does: `Sec-Fetch-Site` when it is there
/// (every current browser sends it), else `Origin` against `Host`; a
/// request with neither is not from a browser (curl, `go tool pprof`, a
/// scraper) and passes. A POST (or any method but GET and HEAD) must come
/// from this origin or from the person (`none`: typed, bookmarked); a GET
/// from another site must be the person following a link (a top-level
/// navigation), never an image, a frame, a script or a fetch that a page
/// made, each of which could start a profile in the developer's name.
fn check_site(parts: &Parts) -> Result<(), Error> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let safe = parts.method == Method::GET || parts.method == Method::HEAD;
    if let Some(site) = header("sec-fetch-site") {
        if site == "same-origin" || site == "none" {
            return Ok(());
        }
        let followed = header("sec-fetch-mode") == Some("navigate")
            && header("sec-fetch-dest").is_none_or(|d| d == "document");
        if safe && followed {
            return Ok(());
        }
        let dest = header("sec-fetch-dest").unwrap_or("?");
        return Err(Error::CrossSite {
            seen: shorten(&format!("Sec-Fetch-Site: {site}, Sec-Fetch-Dest: {dest}")),
        });
    }
    let Some(origin) = header("origin") else {
        return Ok(());
    };
    if safe {
        return Ok(());
    }
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| header("host"));
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(Error::CrossSite {
            seen: shorten(&format!("Origin: {origin}")),
        }),
    }
}

/// At most 100 characters of what a client sent, for a message.
fn shorten(text: &str) -> String {
    text.chars().take(100).collect()
}

/// The token of an `Authorization: Bearer <token>` header (scheme
/// case-insensitive, RFC 6750), if there is one.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Equality whose running time depends on the lengths only, not on where
/// the first difference is: every byte is looked at, and the differences
/// are or-ed together instead of returning at the first one.
pub(crate) fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, &e) in expected.iter().enumerate() {
        // Past the end of `given`, compare against a byte that cannot make the
        // result equal (the length check already failed), keeping one load per byte.
        let g = given.get(i).copied().unwrap_or(!e);
        diff |= g ^ e;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Switch;

    fn parts(headers: &[(&str, &str)], peer: Option<&str>) -> Parts {
        let mut builder = http::Request::get("/debug/pprof/");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let mut request = builder.body(()).unwrap_or_default();
        if let Some(peer) = peer.and_then(|p| p.parse().ok()) {
            request.extensions_mut().insert(PeerAddr(peer));
        }
        request.into_parts().0
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret!", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn defaults_let_everyone_in() {
        assert_eq!(check(&Config::default(), &parts(&[], None)), Ok(()));
    }

    #[test]
    fn loopback_guard_fails_closed() {
        let config = Config::default().loopback_only(true);
        let host = [("host", "localhost:6060")];
        assert_eq!(check(&config, &parts(&host, Some("127.0.0.1:1"))), Ok(()));
        assert_eq!(check(&config, &parts(&host, Some("[::1]:1"))), Ok(()));
        assert_eq!(
            check(&config, &parts(&host, Some("[::ffff:127.0.0.1]:1"))),
            Ok(())
        );
        assert_eq!(
            check(&config, &parts(&host, Some("10.0.0.1:1"))),
            Err(Error::PeerNotLoopback)
        );
        assert_eq!(check(&config, &parts(&host, None)), Err(Error::PeerUnknown));
    }

    fn post(headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::post("/debug/pprof/ui/top?profile=heap");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.body(()).unwrap_or_default().into_parts().0
    }

    #[test]
    fn posts_come_from_this_origin_or_no_browser() {
        let config = Config::default();
        let site = |headers: &[(&str, &str)]| check(&config, &post(headers));
        assert_eq!(site(&[]), Ok(()));
        assert_eq!(site(&[("sec-fetch-site", "same-origin")]), Ok(()));
        assert_eq!(site(&[("sec-fetch-site", "none")]), Ok(()));
        assert_eq!(
            site(&[
                ("host", "127.0.0.1:6060"),
                ("origin", "http://127.0.0.1:6060")
            ]),
            Ok(())
        );
        for refused in [
            &[("sec-fetch-site", "cross-site")][..],
            &[("sec-fetch-site", "same-site")],
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
            ],
            &[
                ("host", "127.0.0.1:6060"),
                ("origin", "http://evil.example"),
            ],
            &[
                ("host", "127.0.0.1:6060"),
                ("origin", "http://127.0.0.1:6061"),
            ],
            &[("host", "127.0.0.1:6060"), ("origin", "null")],
            &[("origin", "http://127.0.0.1:6060")],
        ] {
            assert!(
                matches!(site(refused), Err(Error::CrossSite { .. })),
                "{refused:?}"
            );
        }
        // A GET from another site: a link followed, not a page's image.
        let followed = parts(
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
            ],
            None,
        );
        assert_eq!(check(&config, &followed), Ok(()));
        let image = parts(
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-dest", "image"),
            ],
            None,
        );
        assert!(matches!(
            check(&config, &image),
            Err(Error::CrossSite { .. })
        ));
    }

    #[test]
    fn loopback_requests_name_this_host() {
        let config = Config::default()
            .loopback_only(true)
            .allow_host("Pprof.Internal");
        let named = |host: &str| check(&config, &parts(&[("host", host)], Some("127.0.0.1:1")));
        for host in [
            "localhost",
            "localhost:6060",
            "LOCALHOST.",
            "127.0.0.1:6060",
            "[::1]:6060",
            "pprof.internal:80",
        ] {
            assert_eq!(named(host), Ok(()), "{host}");
        }
        for host in [
            "evil.example:6060",
            "127.0.0.2",
            "[::2]:6060",
            "",
            "localhost.evil",
        ] {
            assert!(
                matches!(named(host), Err(Error::HostNotAllowed { .. })),
                "{host}"
            );
        }
        // No Host at all: refused (fails closed, like an unknown peer).
        assert!(matches!(
            check(&config, &parts(&[], Some("127.0.0.1:1"))),
            Err(Error::HostNotAllowed { .. })
        ));
    }

    #[test]
    fn bearer_token_is_checked() {
        let config = Config::default().bearer_token("s3cret");
        assert_eq!(check(&config, &parts(&[], None)), Err(Error::MissingToken));
        assert_eq!(
            check(
                &config,
                &parts(&[("authorization", "Basic czNjcmV0")], None)
            ),
            Err(Error::MissingToken)
        );
        assert_eq!(
            check(&config, &parts(&[("authorization", "Bearer nope")], None)),
            Err(Error::WrongToken)
        );
        assert_eq!(
            check(&config, &parts(&[("authorization", "bearer s3cret")], None)),
            Ok(())
        );
    }

    #[test]
    fn predicate_and_switch() {
        let switch = Switch::new(true);
        let config = Config::default()
            .allow(|parts: &Parts| parts.headers.contains_key("x-admin"))
            .switch(&switch);
        assert_eq!(check(&config, &parts(&[], None)), Err(Error::Denied));
        assert_eq!(check(&config, &parts(&[("x-admin", "1")], None)), Ok(()));
        switch.set(false);
        assert_eq!(
            check(&config, &parts(&[("x-admin", "1")], None)),
            Err(Error::SwitchedOff)
        );
        // Denied clients learn nothing about the switch.
        assert_eq!(check(&config, &parts(&[], None)), Err(Error::Denied));
    }
}
