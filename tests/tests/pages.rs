//! The pages for people (`ui/`), as HTTP sees them on every adapter:
//! headers, what the HTML holds, the errors, the guards, the uploads, and
//! names that would break unescaped HTML. (What a browser makes of them is
//! in `browser.rs`.)

use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use pprof_core::Config;
use pprof_tests::{Adapter, Response, cpu_profiler_lock, get, request, request_with_headers};
use prost::Message;

pprof_core::jemalloc_heap_profiling!();

/// Every adapter, serving the default routes.
fn servers() -> &'static [(Adapter, SocketAddr)] {
    static SERVERS: OnceLock<Vec<(Adapter, SocketAddr)>> = OnceLock::new();
    SERVERS.get_or_init(|| Adapter::ALL.iter().map(|a| (*a, a.start(None))).collect())
}

/// A page's headers: HTML, never cached, never sniffed, fetching nothing.
fn assert_page(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{what}"
    );
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    let html = r.text();
    assert_nonce_policy(r, &html, what);
    assert!(html.starts_with("<!DOCTYPE html>"), "{what}");
    assert!(!html.contains("javascript:"), "{what}: a javascript: URL");
    // One response per page: nothing to load from anywhere.
    for external in ["<link", " src=", "<iframe", "<img", "@import", "url(http"] {
        assert!(!html.contains(external), "{what}: has {external}");
    }
}

/// An HTML answer's policy: nothing but its own nonce's scripts and
/// styles (never `'unsafe-inline'`), never framed; and every script and
/// style of the HTML carries that nonce.
fn assert_nonce_policy(r: &Response, html: &str, what: &str) {
    let policy = r.header("content-security-policy").unwrap_or_default();
    assert!(policy.starts_with("default-src 'none'"), "{what}: {policy}");
    assert!(
        policy.contains("frame-ancestors 'none'"),
        "{what}: {policy}"
    );
    assert!(!policy.contains("unsafe-inline"), "{what}: {policy}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("{what}: no nonce in {policy}"));
    assert!(nonce.len() >= 32, "{what}: a short nonce {nonce}");
    for tag in ["<script", "<style"] {
        for element in html.split(tag).skip(1) {
            let head = element.split('>').next().unwrap_or_default();
            assert!(
                head.contains(&format!("nonce=\"{nonce}\"")),
                "{what}: {tag}{head}> lacks the nonce"
            );
        }
    }
}

/// The message of an error page.
fn error_message(r: &Response) -> String {
    let html = r.text();
    html.split("<p class=error id=error>")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_else(|| panic!("no error message in {html}"))
        .to_owned()
}

#[test]
fn every_snapshot_profile_has_a_flame_graph_and_a_top_table_on_every_adapter() {
    let _heap = pprof_tests::heap_profiler_lock();
    for (adapter, addr) in servers() {
        for name in [
            "heap",
            "allocs",
            "goroutine",
            "threadcreate",
            "mutex",
            "block",
        ] {
            let what = format!("{adapter:?} {name}");
            let r = get(*addr, &format!("/debug/pprof/ui/flamegraph?profile={name}"));
            assert_page(&r, 200, &what);
            let html = r.text();
            assert!(html.contains("<title>"), "{what}");
            assert!(
                html.contains("<svg") || html.contains("Nothing was sampled"),
                "{what}"
            );
            // The sample-type switch offers the profile's own types.
            if name == "heap" {
                for t in [
                    "alloc_objects",
                    "alloc_space",
                    "inuse_objects",
                    "inuse_space",
                ] {
                    assert!(html.contains(&format!("<option value=\"{t}\"")), "{t}");
                }
                assert!(html.contains("<option value=\"inuse_space\" selected>"));
            }
            let r = get(*addr, &format!("/debug/pprof/ui/top?profile={name}"));
            assert_page(&r, 200, &what);
            let html = r.text();
            assert!(html.contains("<table id=top>"), "{what}");
            for column in ["flat", "flat%", "sum%", "cum", "cum%"] {
                assert!(
                    html.contains(&format!(">{column}</th>")),
                    "{what}: {column}"
                );
            }
        }
        // The Go routes are as they were.
        let r = get(*addr, "/debug/pprof/goroutine");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(r.body.get(..2), Some(&[0x1f, 0x8b][..]));
    }
}

#[test]
fn allocs_shows_alloc_space_and_the_switch_changes_it() {
    let _heap = pprof_tests::heap_profiler_lock();
    let (_, addr) = servers()[0];
    let html = get(addr, "/debug/pprof/ui/top?profile=allocs").text();
    assert!(html.contains("top of alloc_space"), "{html}");
    let html = get(
        addr,
        "/debug/pprof/ui/top?profile=allocs&sample_index=alloc_objects",
    )
    .text();
    assert!(html.contains("top of alloc_objects"), "{html}");
    let html = get(addr, "/debug/pprof/ui/top?profile=mutex&sample_index=0").text();
    assert!(html.contains("top of contentions"), "{html}");
}

#[test]
fn the_index_links_every_profile_to_its_pages() {
    for (adapter, addr) in servers() {
        let html = get(*addr, "/debug/pprof/").text();
        for name in [
            "allocs",
            "block",
            "goroutine",
            "heap",
            "mutex",
            "profile",
            "threadcreate",
        ] {
            for page in ["flamegraph", "top", "diff"] {
                let link = format!("<a href=\"ui/{page}?profile={name}\">");
                assert!(html.contains(&link), "{adapter:?}: no {link}");
            }
            // Go's own row is kept as it was, the links follow it.
            assert!(html.contains(&format!("<a href='{name}?debug=1'>{name}</a></td><td>")));
        }
        assert!(!html.contains("ui/flamegraph?profile=cmdline"));
        let again = get(*addr, "/debug/pprof/");
        assert_nonce_policy(&again, &again.text(), &format!("{adapter:?} index"));
        // A new nonce for each answer.
        assert_ne!(
            again.header("content-security-policy"),
            get(*addr, "/debug/pprof/").header("content-security-policy")
        );
    }
}

#[test]
fn bad_parameters_are_pages_that_say_which() {
    for (adapter, addr) in servers() {
        let cases = [
            (
                "flamegraph?profile=nope",
                400,
                "no profile is named \"nope\"",
            ),
            (
                "top?profile=",
                400,
                "the profiles are allocs, block, goroutine",
            ),
            (
                "flamegraph?profile=heap&sample_index=delay",
                400,
                "no sample type \"delay\"; its sample types are alloc_objects, alloc_space, inuse_objects, inuse_space",
            ),
            (
                "top?profile=heap&sample_index=9",
                400,
                "no sample type \"9\"",
            ),
            (
                "flamegraph?profile=mutex&focus=Wolf(",
                400,
                "\"focus\" is not a valid regular expression",
            ),
            (
                "top?profile=block&ignore=[x",
                400,
                "\"ignore\" is not a valid regular expression",
            ),
            (
                "flamegraph?profile=heap&seconds=abc",
                400,
                "invalid value for \"seconds\"",
            ),
            (
                "flamegraph?profile=profile&seconds=9999",
                400,
                "exceeds server's limit of 300",
            ),
            ("graph?profile=heap", 404, "no page ui/graph"),
        ];
        for (page, status, says) in cases {
            let what = format!("{adapter:?} {page}");
            let r = get(*addr, &format!("/debug/pprof/ui/{page}"));
            assert_page(&r, status, &what);
            let message = error_message(&r);
            // The page's text is escaped HTML: compare it unescaped.
            let message = message.replace("&#34;", "\"").replace("&#39;", "'");
            assert!(message.contains(says), "{what}: {message}");
        }
        // The service keeps serving.
        assert_eq!(
            get(*addr, "/debug/pprof/ui/top?profile=goroutine").status,
            200
        );
    }
}

#[test]
fn a_denied_client_gets_no_page() {
    let config = Config::default().bearer_token("s3cret");
    for adapter in Adapter::ALL {
        let addr = adapter.start_with(config.clone());
        for target in [
            "/debug/pprof/ui/flamegraph?profile=goroutine",
            "/debug/pprof/ui/top?profile=goroutine",
            "/debug/pprof/ui/diff?profile=goroutine&seconds=1",
            "/debug/pprof/ui/flamegraph?profile=nope",
        ] {
            for token in [None, Some("wrong")] {
                let header = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
                let headers: Vec<(&str, &str)> = token
                    .map(|_| vec![("authorization", header.as_str())])
                    .unwrap_or_default();
                let r = request_with_headers(addr, "GET", target, &headers, b"");
                let status = if token.is_some() { 403 } else { 401 };
                assert_eq!(r.status, status, "{adapter:?} {target}");
                assert_eq!(r.header("x-go-pprof"), Some("1"));
                assert!(!r.text().contains("<svg") && !r.text().contains("<table"));
            }
        }
        let r = request_with_headers(
            addr,
            "GET",
            "/debug/pprof/ui/flamegraph?profile=goroutine",
            &[("authorization", "Bearer s3cret")],
            b"",
        );
        assert_page(&r, 200, &format!("{adapter:?} with the token"));
        assert!(r.text().contains("<svg"));
    }
}

/// A value type whose methods show up as `…Holder<T>::burn`: a generic
/// name that would open an element if it were written unescaped.
struct Holder<T>(T);

impl<T: Copy + Into<u64>> Holder<T> {
    #[inline(never)]
    fn burn(&self, duration: Duration) -> u64 {
        let start = std::time::Instant::now();
        let mut x = std::hint::black_box(self.0.into() | 1);
        while start.elapsed() < duration {
            for _ in 0..100_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
        }
        std::hint::black_box(x)
    }
}

#[test]
fn a_cpu_page_counts_down_then_shows_the_profile_escaped() {
    let _cpu = cpu_profiler_lock();
    // One CPU profile at a time here, so a second page is turned away.
    let addr = Adapter::Axum.start_with(Config::default().max_cpu_profiles(1));
    // GET: a page that says it is working and counts down, and posts itself.
    let r = get(addr, "/debug/pprof/ui/flamegraph?profile=profile&seconds=2");
    assert_page(&r, 200, "working page");
    let html = r.text();
    assert!(html.contains("Taking a 2 s CPU profile"), "{html}");
    assert!(
        html.contains("<output id=remaining>2 s remain</output>"),
        "{html}"
    );
    assert!(html.contains("<form id=run method=post>"), "{html}");
    // The GET started nothing: the profiler is free.
    let index = get(addr, "/debug/pprof/").text();
    let row = index
        .lines()
        .find(|l| l.contains("href='profile?debug=1'"))
        .unwrap_or_default();
    assert!(row.starts_with("<tr><td>0<"), "{row}");

    // Without seconds, the page asks for them.
    let html = get(addr, "/debug/pprof/ui/top?profile=profile").text();
    assert!(
        html.contains("How long?") && html.contains("name=seconds"),
        "{html}"
    );

    // POST: the work, here while a generic function burns the CPU.
    let burner = std::thread::spawn(|| Holder(7u32).burn(Duration::from_millis(2500)));
    let page = std::thread::spawn(move || {
        request(
            addr,
            "POST",
            "/debug/pprof/ui/flamegraph?profile=profile&seconds=2",
            b"",
        )
    });
    // Once that profile runs, another page that needs the profiler is refused.
    let asked = std::time::Instant::now();
    while !get(addr, "/debug/pprof/")
        .text()
        .contains("<tr><td>1</td><td><a href='profile?debug=1'>")
    {
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "the page's CPU profile never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let top = request(
        addr,
        "POST",
        "/debug/pprof/ui/top?profile=profile&seconds=1",
        b"",
    );
    let r = page.join().expect("page");
    let _ = burner.join();
    assert_page(&r, 200, "CPU flame graph");
    let html = r.text();
    assert!(html.contains("Holder&lt;T&gt;::burn"), "escaped in the SVG");
    assert!(
        !html.contains("Holder<"),
        "a raw generic name would open an element"
    );
    assert!(html.contains("data-loc=\"") && html.contains("tests/tests/pages.rs:"));
    // The top table was asked while the flame graph's profile ran: this
    // server allows one CPU profile at a time, and the page says so (Go's
    // message), as the data route would.
    assert_page(&top, 409, "busy CPU profiler");
    assert!(error_message(&top).contains("cpu profiling already in use"));

    let r = request(
        addr,
        "POST",
        "/debug/pprof/ui/top?profile=profile&seconds=1",
        b"",
    );
    assert_page(&r, 200, "CPU top");
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = gz.write_all(raw);
    gz.finish().unwrap_or_default()
}

/// A multipart form with one file field.
fn form(field: &str, file: &[u8], extra: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "----pprof-tests-boundary";
    let mut body = Vec::new();
    for (k, v) in extra {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"base.pb.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn post_form(addr: SocketAddr, target: &str, field: &str, file: &[u8]) -> Response {
    let (content_type, body) = form(field, file, &[]);
    request_with_headers(
        addr,
        "POST",
        target,
        &[("content-type", &content_type)],
        &body,
    )
}

/// A small profile whose function names are markup.
fn hostile_profile() -> Vec<u8> {
    use pprof_core::proto::{Function, Line, Location, Profile, Sample, ValueType};
    let strings = [
        "",
        "goroutine",
        "count",
        "<script>alert(1)</script>",
        "Holder<Vec<u8>>::hold",
        "x.rs\"><b>",
    ];
    let p = Profile {
        sample_type: vec![ValueType { ty: 1, unit: 2 }],
        function: vec![
            Function {
                id: 1,
                name: 3,
                system_name: 3,
                filename: 5,
                start_line: 0,
            },
            Function {
                id: 2,
                name: 4,
                system_name: 4,
                filename: 5,
                start_line: 0,
            },
        ],
        location: vec![
            Location {
                id: 1,
                line: vec![Line {
                    function_id: 1,
                    line: 3,
                }],
                ..Default::default()
            },
            Location {
                id: 2,
                line: vec![Line {
                    function_id: 2,
                    line: 4,
                }],
                ..Default::default()
            },
        ],
        sample: vec![Sample {
            location_id: vec![1, 2],
            value: vec![5],
            label: vec![],
        }],
        string_table: strings.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    gzip(&p.encode_to_vec())
}

#[test]
fn uploads_are_bounded_checked_escaped_and_the_service_keeps_running() {
    let (_, addr) = servers()[1];
    let diff = "/debug/pprof/ui/diff?profile=goroutine";

    // A saved profile with markup for names is shown, escaped.
    let r = post_form(
        addr,
        "/debug/pprof/ui/flamegraph?profile=goroutine",
        "profile",
        &hostile_profile(),
    );
    assert_page(&r, 200, "saved profile");
    let html = r.text();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("Holder&lt;Vec&lt;u8&gt;&gt;::hold"));
    assert!(!html.contains("<script>alert") && !html.contains("\"><b>"));
    assert!(html.contains("&gt;&lt;b&gt;:3"), "the file, escaped");
    let r = post_form(
        addr,
        "/debug/pprof/ui/top?profile=goroutine",
        "profile",
        &hostile_profile(),
    );
    assert_page(&r, 200, "saved profile's top");
    assert!(!r.text().contains("<script>alert") && !r.text().contains("\"><b>"));

    // A baseline: now against it.
    let r = post_form(addr, diff, "baseline", &hostile_profile());
    assert_page(&r, 200, "diff against a baseline");
    assert!(r.text().contains("against the uploaded baseline"));
    let r = request_with_headers(
        addr,
        "POST",
        diff,
        &[("content-type", "application/octet-stream")],
        &hostile_profile(),
    );
    assert_page(&r, 200, "diff against raw bytes");

    // A gzip bomb: a few KiB that unfold to 64 MiB.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    let r = post_form(addr, diff, "baseline", &bomb);
    assert_page(&r, 400, "gzip bomb");
    assert!(error_message(&r).contains("decompresses to more than the limit"));
    // Junk, a truncated profile, no file at all.
    for (file, says) in [
        (&b"not a profile"[..], "not a profile.proto"),
        (&hostile_profile()[..40], "gzip"),
        (&b""[..], "no file was chosen"),
    ] {
        let r = post_form(addr, diff, "baseline", file);
        assert_page(&r, 400, says);
        assert!(error_message(&r).contains(says), "{}", error_message(&r));
    }
    // Over the compressed limit.
    let small = Adapter::Axum.start_with(Config::default().upload_limits(1024, 4096));
    let r = post_form(small, diff, "baseline", &vec![7u8; 4096]);
    assert_page(&r, 400, "over the upload limit");
    assert!(error_message(&r).contains("over the limit of 1024 bytes"));
    // Still serving.
    assert_page(
        &get(addr, "/debug/pprof/ui/top?profile=goroutine"),
        200,
        "after",
    );
}

#[test]
fn a_delta_diff_counts_down_then_compares_two_snapshots() {
    let (_, addr) = servers()[2];
    let r = get(addr, "/debug/pprof/ui/diff?profile=goroutine");
    assert_page(&r, 200, "diff chooser");
    let html = r.text();
    assert!(html.contains("enctype=multipart/form-data") && html.contains("name=baseline"));
    let r = get(addr, "/debug/pprof/ui/diff?profile=goroutine&seconds=1");
    assert!(r.text().contains("Taking two goroutine profiles 1 s apart"));
    let spawned = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(1500)));
    let r = request(
        addr,
        "POST",
        "/debug/pprof/ui/diff?profile=goroutine&seconds=1",
        b"",
    );
    let _ = spawned.join();
    assert_page(&r, 200, "delta diff");
    let html = r.text();
    assert!(
        html.contains("<svg") && html.contains("Change per function"),
        "{html}"
    );
    assert!(html.contains("before (1 s earlier)"), "{html}");
}

/// POST `body` as a saved profile (`application/octet-stream`) to `page`.
fn post_raw(addr: SocketAddr, page: &str, body: &[u8]) -> Response {
    request_with_headers(
        addr,
        "POST",
        &format!("/debug/pprof/ui/{page}?profile=goroutine"),
        &[("content-type", "application/octet-stream")],
        body,
    )
}

/// Issue 20's uploads that ask for far more than they weigh: each is a
/// `400` page that says what is too large, answered before the work (a
/// few kilobytes that asked for 10¹² frames once killed the service),
/// and the service keeps serving.
#[test]
fn uploads_that_ask_too_much_are_400_pages_and_the_service_keeps_serving() {
    use pprof_tests::hostile;
    let cases = [
        (
            "point 1: a location of 10⁶ lines named 10⁶ times",
            hostile::location_named_many_times(1_000_000, 1_000_000),
            "records, more than the",
        ),
        (
            "a location of 10³ lines named 10⁶ times",
            hostile::location_named_many_times(1_000, 1_000_000),
            "frames deep, more than the",
        ),
        (
            "point 2: one sample 10⁶ frames deep",
            hostile::deep_sample(1_000_000),
            "one sample is 1000000 frames deep, more than the",
        ),
        (
            "600 samples 4,000 frames deep",
            hostile::distinct_deep_stacks(600, 4_000),
            "2400000 frames in all, more than the",
        ),
        (
            "point 3: 10⁶ empty labels in one sample",
            hostile::nested_labels(1_000_000),
            "records, more than the",
        ),
    ];
    for (what, body, _) in &cases {
        assert!(body.len() < 600 << 10, "{what}: {} bytes", body.len());
    }
    for (adapter, addr) in servers() {
        for (what, body, says) in &cases {
            for page in ["flamegraph", "top", "diff"] {
                let what = format!("{adapter:?} {page}: {what}");
                let r = post_raw(*addr, page, body);
                assert_page(&r, 400, &what);
                assert_eq!(r.header("x-go-pprof"), Some("1"), "{what}");
                let message = error_message(&r);
                assert!(
                    message.starts_with("the uploaded file is not a usable profile: ")
                        && message.contains(says),
                    "{what}: {message}"
                );
            }
        }
        assert_page(
            &get(*addr, "/debug/pprof/ui/top?profile=goroutine"),
            200,
            &format!("{adapter:?} still serving"),
        );
    }
}

/// Issue 20, point 5: values at `i64::MAX` (their sums overflow) and line
/// numbers at the extremes draw a page; nothing panics.
#[test]
fn extreme_values_draw_a_page() {
    let body = pprof_tests::hostile::extreme_values();
    for (adapter, addr) in servers() {
        for page in ["flamegraph", "top", "diff"] {
            let what = format!("{adapter:?} {page}");
            let r = post_raw(*addr, page, &body);
            assert_page(&r, 200, &what);
            let html = r.text();
            assert!(html.contains("main"), "{what}: {html}");
        }
    }
}
