//! Malformed requests, table-driven, against every adapter: every answer is
//! a 4xx (never a 5xx, never a dropped connection), and the service keeps
//! answering afterwards.
//!
//! Requests that reach our routes get Go's error shape (`X-Go-Pprof: 1`,
//! `text/plain`, one line) with the status and message the core decides.
//! Requests that are not valid HTTP/1.1 at all (a NUL byte or a space in
//! the request line, a negative or doubled `Content-Length`) are refused
//! by the HTTP server itself (hyper for axum, warp and tower; actix-http
//! for actix) before any route runs: for those only "a 4xx, and the server
//! lives on" is asserted, as no handler of ours ever sees them.

use std::net::SocketAddr;

use pprof_tests::{Adapter, assert_go_error, exchange, get};

/// What a case must be answered with.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Our handler answers: this status, Go's error shape, a message containing this.
    Ours(u16, &'static str),
    /// Not HTTP the server parses: it answers some 4xx before any handler runs.
    Server,
}

struct Case {
    what: String,
    raw: Vec<u8>,
    expect: Expect,
}

const UNKNOWN: Expect = Expect::Ours(404, "Unknown profile");
const BAD_SECONDS: Expect = Expect::Ours(
    400,
    r#"invalid value for "seconds" - must be a positive integer"#,
);
const LONG_SECONDS: Expect = Expect::Ours(
    400,
    "profile duration exceeds server's limit of 300 seconds",
);
const BAD_HZ: Expect = Expect::Ours(
    400,
    r#"invalid value for "hz" - must be an integer from 1 to 1000"#,
);
const BAD_DEBUG: Expect = Expect::Ours(
    400,
    r#"invalid value for "debug" - must be a non-negative integer"#,
);
const METHOD: Expect = Expect::Ours(405, "Method not allowed");
const TOO_LARGE: Expect = Expect::Ours(400, "request body exceeds the limit of 65536 bytes");

fn raw(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{method} {target} HTTP/1.1\r\nHost: pprof.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    let framed = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !framed("content-length") && !framed("transfer-encoding") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn case(method: &str, target: &str, expect: Expect) -> Case {
    Case {
        what: format!("{method} {}", shorten(target)),
        raw: raw(method, target, &[], b""),
        expect,
    }
}

fn shorten(text: &str) -> String {
    if text.len() > 80 {
        format!("{}…({} bytes)", &text[..80], text.len())
    } else {
        text.to_owned()
    }
}

fn cases() -> Vec<Case> {
    let p = "/debug/pprof";
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let big = vec![b'1'; 200 * 1024];
    let cases = vec![
        // Unknown paths and traversal attempts under the prefix.
        case("GET", &format!("{p}/nope"), UNKNOWN),
        case("GET", &format!("{p}/HEAP"), UNKNOWN),
        case("GET", &format!("{p}/heap/"), UNKNOWN),
        case("GET", &format!("{p}//heap"), UNKNOWN),
        case("GET", &format!("{p}/../../etc/passwd"), UNKNOWN),
        case("GET", &format!("{p}/%2e%2e/%2e%2e/etc/passwd"), UNKNOWN),
        case("GET", &format!("{p}/..%2f..%2fetc%2fpasswd"), UNKNOWN),
        case("GET", &format!("{p}/%2E%2E%2Fcmdline"), UNKNOWN),
        case("GET", &format!("{p}/heap%00"), UNKNOWN),
        case("GET", &format!("{p}/%00"), UNKNOWN),
        case("GET", &format!("{p}/%ff%fe"), UNKNOWN),
        case("GET", &format!("{p}/{}", "a".repeat(6000)), UNKNOWN),
        // Bad and huge numbers.
        case("GET", &format!("{p}/profile?seconds=abc"), BAD_SECONDS),
        case("GET", &format!("{p}/profile?seconds=0"), BAD_SECONDS),
        case("GET", &format!("{p}/profile?seconds=-1"), BAD_SECONDS),
        case("GET", &format!("{p}/profile?seconds=1e3"), BAD_SECONDS),
        case("GET", &format!("{p}/profile?seconds=0x10"), BAD_SECONDS),
        case("GET", &format!("{p}/profile?seconds=1.5"), BAD_SECONDS),
        case("GET", &format!("{p}/profile?seconds=301"), LONG_SECONDS),
        case(
            "GET",
            &format!("{p}/profile?seconds=18446744073709551616"),
            LONG_SECONDS,
        ),
        case(
            "GET",
            &format!("{p}/profile?seconds={}", "9".repeat(400)),
            LONG_SECONDS,
        ),
        case("GET", &format!("{p}/profile?hz=0"), BAD_HZ),
        case("GET", &format!("{p}/profile?hz=-1"), BAD_HZ),
        case("GET", &format!("{p}/profile?hz=4294967296"), BAD_HZ),
        case("GET", &format!("{p}/profile?hz=1001"), BAD_HZ),
        case("GET", &format!("{p}/heap?debug=-1"), BAD_DEBUG),
        case(
            "GET",
            &format!("{p}/heap?debug=99999999999999999999"),
            BAD_DEBUG,
        ),
        case("GET", &format!("{p}/allocs?seconds=0"), BAD_SECONDS),
        case("GET", &format!("{p}/heap?seconds=99999"), LONG_SECONDS),
        case(
            "GET",
            &format!("{p}/heap?seconds=1&debug=1"),
            Expect::Ours(400, "seconds and debug params are incompatible"),
        ),
        // Bad percent-encoding: left as is or decoded lossily, never trusted.
        case("GET", &format!("{p}/profile?seconds=%zz"), BAD_SECONDS),
        case("GET", &format!("{p}/profile?seconds=%"), BAD_SECONDS),
        case("GET", &format!("{p}/profile?seconds=%ff%fe"), BAD_SECONDS),
        case("GET", &format!("{p}/profile?seconds=1%00"), BAD_SECONDS),
        case("GET", &format!("{p}/profile?hz=%31%30%30%30%30"), BAD_HZ),
        // Repeated parameters: the first one counts, as Go's FormValue.
        case(
            "GET",
            &format!("{p}/profile?seconds=abc&seconds=1"),
            BAD_SECONDS,
        ),
        case("GET", &format!("{p}/heap?debug=x&debug=1"), BAD_DEBUG),
        case("GET", &format!("{p}/profile?hz=0&hz=100&hz=100"), BAD_HZ),
        // A very long query, the bad value at its end.
        case(
            "GET",
            &format!("{p}/profile?{}seconds=bad", "pad=xxxxxxxx&".repeat(500)),
            BAD_SECONDS,
        ),
        // Wrong methods.
        case("DELETE", &format!("{p}/heap"), METHOD),
        case("PUT", &format!("{p}/profile"), METHOD),
        case("POST", &format!("{p}/cmdline"), METHOD),
        case("PATCH", &format!("{p}/"), METHOD),
        case("OPTIONS", &format!("{p}/symbol"), METHOD),
        case("BREW", &format!("{p}/allocs"), METHOD),
        // Oversized and bad bodies.
        Case {
            what: "POST /symbol, 200 KiB body".into(),
            raw: raw("POST", &format!("{p}/symbol"), &[], &big),
            expect: TOO_LARGE,
        },
        Case {
            what: "POST /symbol, 200 KiB chunked body (no length given)".into(),
            raw: {
                let mut body = format!("{:x}\r\n", big.len()).into_bytes();
                body.extend_from_slice(&big);
                body.extend_from_slice(b"\r\n0\r\n\r\n");
                raw(
                    "POST",
                    &format!("{p}/symbol"),
                    &[("Transfer-Encoding", "chunked")],
                    &body,
                )
            },
            expect: TOO_LARGE,
        },
        Case {
            what: "POST /symbol, 8193 addresses (in 32 KiB)".into(),
            raw: raw(
                "POST",
                &format!("{p}/symbol"),
                &[],
                "0x1+".repeat(8193).trim_end_matches('+').as_bytes(),
            ),
            expect: Expect::Ours(
                400,
                "the request asks for more than 8192 addresses, the server's limit (max_symbol_addresses)",
            ),
        },
        Case {
            what: "POST /profile, 200 KiB form".into(),
            raw: raw("POST", &format!("{p}/profile"), &form, &big),
            expect: TOO_LARGE,
        },
        Case {
            what: "POST /profile, form with bad seconds".into(),
            raw: raw("POST", &format!("{p}/profile"), &form, b"seconds=abc"),
            expect: BAD_SECONDS,
        },
        Case {
            what: "POST /profile, form with bad percent-encoding".into(),
            raw: raw("POST", &format!("{p}/profile"), &form, b"seconds=%G0&hz=%"),
            expect: BAD_SECONDS,
        },
        // Not HTTP/1.1 that any server parses: refused before any route.
        Case {
            // The `http` crate every server here uses takes URIs up to 64 KiB:
            // longer ones get 414 from the server (our own /symbol query limit
            // is checked too, for servers that pass such URIs on).
            what: "GET /symbol, 70 KiB query".into(),
            raw: raw(
                "GET",
                &format!("{p}/symbol?{}", "0x1+".repeat(17_500)),
                &[],
                b"",
            ),
            expect: Expect::Server,
        },
        Case {
            what: "NUL byte in the request line".into(),
            raw: raw("GET", &format!("{p}/heap\0"), &[], b""),
            expect: Expect::Server,
        },
        Case {
            what: "space in the request target".into(),
            raw: raw("GET", &format!("{p}/he ap"), &[], b""),
            expect: Expect::Server,
        },
        Case {
            what: "negative Content-Length".into(),
            raw: raw(
                "POST",
                &format!("{p}/symbol"),
                &[("Content-Length", "-1")],
                b"",
            ),
            expect: Expect::Server,
        },
        Case {
            what: "two different Content-Length headers".into(),
            raw: raw(
                "POST",
                &format!("{p}/symbol"),
                &[("Content-Length", "3"), ("Content-Length", "4")],
                b"0x1",
            ),
            expect: Expect::Server,
        },
    ];
    cases
}

fn assert_still_serving(addr: SocketAddr, what: &str) {
    assert_eq!(
        get(addr, "/hello").text(),
        "hello\n",
        "app route after {what}"
    );
    let r = get(addr, "/debug/pprof/cmdline");
    assert_eq!(r.status, 200, "pprof route after {what}");
}

#[test]
fn thirty_and_more_malformed_requests_get_4xx_on_every_adapter() {
    let cases = cases();
    let ours = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Ours(..)))
        .count();
    assert!(ours >= 30, "only {ours} cases reach our routes");
    for adapter in Adapter::ALL {
        let addr = adapter.start(None);
        for case in &cases {
            let what = format!("{adapter:?}: {}", case.what);
            let r = exchange(addr, &case.raw)
                .unwrap_or_else(|| panic!("{what}: connection closed without an answer"));
            assert!(
                (400..500).contains(&r.status),
                "{what}: {} {}",
                r.status,
                r.text()
            );
            if let Expect::Ours(status, message) = case.expect {
                assert_go_error(&r, status, message, &what);
            }
            assert_still_serving(addr, &what);
        }
    }
}
