//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`); not an
//! API. Each runs one parser on arbitrary input and checks what must hold of
//! its result, panicking when it does not: a panic is what the fuzzer finds.

use http::Method;

use super::profile::ProfileRequest;
use super::request::{self, Route};
use crate::{Config, Error};

/// An error that a client's bad input may cause: a 4xx with one line.
fn assert_client_error(error: &Error) {
    assert!(error.status().is_client_error(), "{error:?} is not a 4xx");
    assert!(!error.to_string().contains('\n'), "{error:?}");
}

/// Poll a future that never waits on I/O (everything it reads is in
/// memory) to its end on this thread.
#[cfg(feature = "ui")]
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..1_000_000 {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a future over in-memory input never finished");
}

/// Every page of an uploaded file, as the handler draws them: decoded
/// (within the default limits), resolved, then its flame graph, its top
/// table and a diff against itself, with `query` as the page's
/// parameters (`focus`, `ignore`, `sample_index`). Whatever the file, the
/// answer is the pages or a 4xx saying why; each page's scripts and
/// styles carry its nonce.
#[cfg(feature = "ui")]
pub fn page(query: &str, file: &[u8]) {
    match super::ui::draw_upload(&Config::default(), query, file) {
        Ok(pages) => {
            for html in pages {
                assert!(html.starts_with("<!DOCTYPE html>"));
                for tag in ["<script", "<style"] {
                    for element in html.split(tag).skip(1) {
                        let head = element.split('>').next().unwrap_or_default();
                        assert!(head.contains("nonce=\"fuzz\""), "{tag}{head}>");
                    }
                }
            }
        }
        Err(error) => assert_client_error(&error),
    }
}

/// Read an upload's body as the handler does (`multipart/form-data` with
/// `boundary`, else the bytes themselves): the file within the limit and
/// not empty, or a 4xx.
#[cfg(feature = "ui")]
pub fn multipart(boundary: &str, body: &[u8]) {
    let config = Config::default().upload_limits(4096, 1 << 20);
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let Ok(request) = http::Request::post("/debug/pprof/ui/diff?profile=heap")
        .header(http::header::CONTENT_TYPE, content_type)
        .body(())
    else {
        return;
    };
    let (parts, ()) = request.into_parts();
    // The handler reads a form only when it says it is one.
    let is_form = parts.headers[http::header::CONTENT_TYPE]
        .to_str()
        .is_ok_and(|v| v.starts_with("multipart/form-data"));
    if !is_form {
        return;
    }
    let body = http_body_util::Full::new(bytes::Bytes::copy_from_slice(body));
    match block_on(super::ui::read_form(&config, &parts, body)) {
        Ok((file, fields)) => {
            assert!(file > 0 && file <= 4096, "a file of {file} bytes");
            assert!(
                fields.len() <= 32 * 3 * (1000 + 64),
                "{} bytes of fields",
                fields.len()
            );
        }
        Err(error) => assert_client_error(&error),
    }
}

/// Parse a page's path (after `ui/`) and parameters as the handler does:
/// what is accepted keeps the limits.
#[cfg(feature = "ui")]
pub fn page_params(page: &str, query: &str, form: &str) {
    let config = Config::default();
    let params = super::params::Params::new(form, query);
    match super::ui::parse(&config, page, &params) {
        Ok(asked) => super::ui::assert_within_limits(&config, &asked),
        Err(error) => assert_client_error(&error),
    }
}

/// The access guards and the cross-site rules over a request head
/// (`METHOD PEER` then `Name: value` lines), with the loopback guard, a
/// configured host name and a bearer token on: whatever is admitted came
/// from loopback, named this host, carried the token and, if it is not a
/// GET or HEAD from a browser, came from this origin.
pub fn guards(head: &str) {
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default();
    let (method, peer) = first.split_once(' ').unwrap_or((first, ""));
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let mut request = http::Request::builder()
        .method(method.clone())
        .uri("/debug/pprof/cmdline");
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            request = request.header(name.trim(), value.trim());
        }
    }
    let Ok(mut request) = request.body(()) else {
        return;
    };
    if let Ok(peer) = peer.parse() {
        request
            .extensions_mut()
            .insert(super::guard::PeerAddr(peer));
    }
    let (parts, ()) = request.into_parts();
    let config = Config::default()
        .loopback_only(true)
        .allow_host("pprof.internal")
        .bearer_token("s3cret");
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    match super::guard::check(&config, &parts) {
        Ok(()) => {
            let peer = parts.extensions.get::<super::guard::PeerAddr>();
            assert!(peer.is_some_and(|p| p.0.ip().to_canonical().is_loopback()));
            assert_eq!(
                header("authorization")
                    .and_then(|a| a.trim().split_once(' '))
                    .map(|(_, token)| token.trim()),
                Some("s3cret")
            );
            // The host, without an optional port and final dot, is a name.
            let host = header("host").unwrap_or_default().to_ascii_lowercase();
            let host = match host.rsplit_once(':') {
                Some((name, port))
                    if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    name.to_owned()
                }
                _ => host,
            };
            let host = host.strip_suffix('.').unwrap_or(&host);
            assert!(
                ["localhost", "127.0.0.1", "[::1]", "pprof.internal"].contains(&host),
                "admitted Host {:?}",
                header("host")
            );
            if method != Method::GET && method != Method::HEAD {
                match (header("sec-fetch-site"), header("origin")) {
                    (Some(site), _) => assert!(site == "same-origin" || site == "none", "{site}"),
                    (None, Some(origin)) => {
                        let from = origin
                            .split_once("://")
                            .map(|(_, h)| h.trim_end_matches('/'));
                        assert!(
                            from.is_some_and(
                                |f| f.eq_ignore_ascii_case(header("host").unwrap_or_default())
                            ),
                            "{origin}"
                        );
                    }
                    (None, None) => {}
                }
            }
        }
        Err(error) => assert_client_error(&error),
    }
}

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
