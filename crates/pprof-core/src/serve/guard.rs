//! Who may ask: the access guards every request passes before any work is
//! done (no body read, no profile started).

use std::net::SocketAddr;

use http::{header, request::Parts};

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

/// Apply the guards in order: peer, token, predicate, switch.
pub(crate) fn check(config: &Config, parts: &Parts) -> Result<(), Error> {
    if config.loopback_only {
        let peer = parts
            .extensions
            .get::<PeerAddr>()
            .ok_or(Error::PeerUnknown)?;
        if !peer.0.ip().to_canonical().is_loopback() {
            return Err(Error::PeerNotLoopback);
        }
    }
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
        assert_eq!(check(&config, &parts(&[], Some("127.0.0.1:1"))), Ok(()));
        assert_eq!(check(&config, &parts(&[], Some("[::1]:1"))), Ok(()));
        assert_eq!(
            check(&config, &parts(&[], Some("[::ffff:127.0.0.1]:1"))),
            Ok(())
        );
        assert_eq!(
            check(&config, &parts(&[], Some("10.0.0.1:1"))),
            Err(Error::PeerNotLoopback)
        );
        assert_eq!(check(&config, &parts(&[], None)), Err(Error::PeerUnknown));
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
