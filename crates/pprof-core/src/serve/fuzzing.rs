//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`); not an
//! API. Each runs one parser on arbitrary input and checks what must hold of
//! its result, panicking when it does not: a panic is what the fuzzer finds.

use http::Method;

use super::profile::ProfileRequest;
use super::request::{self, Route};
use crate::{Config, Error};

/// Parse a request line as the handler does, with the default limits, and
/// check that whatever was accepted respects them.
pub fn request(method: &[u8], path: &str, query: Option<&str>, form: Option<&str>) {
    let config = Config::default();
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    match request::parse(&config, &method, path, query, form) {
        Ok(parsed) => {
            assert_eq!(parsed.head_only, method == Method::HEAD);
            assert!(
                path.starts_with(config.get_prefix()),
                "accepted a path outside the prefix: {path:?}"
            );
            match parsed.route {
                Route::Profile(ProfileRequest {
                    delta,
                    debug,
                    window,
                    hz,
                    ..
                }) if window > std::time::Duration::ZERO => {
                    assert!(window <= config.max_duration);
                    assert!((config.min_hz..=config.max_hz).contains(&hz));
                    assert!(delta.is_none() && debug == 0);
                }
                Route::Profile(ProfileRequest {
                    delta: Some(delta),
                    debug,
                    ..
                }) => {
                    assert!(!delta.is_zero() && delta <= config.max_duration);
                    assert_eq!(debug, 0, "seconds with debug>0 was accepted");
                }
                Route::Redirect { location } => {
                    assert!(http::HeaderValue::from_str(&location).is_ok());
                }
                _ => {}
            }
        }
        Err(error) => {
            let status = error.status();
            assert!(
                status.is_client_error() || matches!(error, Error::TraceUnsupported),
                "parser error {error:?} is not a 4xx"
            );
            assert!(!error.to_string().contains('\n'));
        }
    }
}

/// Split and parse a `/symbol` request body as the handler does, and check
/// that each address it returns is one a token spelled.
pub fn symbol(input: &str) {
    let addresses = super::symbol::parse_addresses(input);
    assert!(addresses.len() <= input.split('+').count());
    assert!(addresses.iter().all(|&a| a != 0), "zero address kept");
}

/// Write a text answer through the handler's bounded writer, in pieces
/// cut at every `\n`, and check the verdict: whole when it fits, else the
/// 400 naming the limit; never more than `max` bytes held.
pub fn text_cap(text: &str, max: usize) {
    use std::fmt::Write;
    let mut out = crate::format::BoundedWriter::new(max);
    let written = text
        .split_inclusive('\n')
        .try_for_each(|piece| out.write_str(piece));
    match out.finish(written) {
        Ok(out) => assert!(text.len() <= max && out == text),
        Err(crate::format::WriteError::TooLarge(Error::TextTooLarge { limit })) => {
            assert!(limit == max && text.len() > max);
        }
        Err(other) => panic!("unexpected {other:?}"),
    }
    match crate::format::cap(text.to_owned(), max) {
        Ok(out) => assert!(text.len() <= max && out == text),
        Err(Error::TextTooLarge { limit }) => assert!(limit == max && text.len() > max),
        Err(other) => panic!("unexpected {other:?}"),
    }
}
