//! The wire contract of SPEC.md, checked over loopback against every adapter:
//! status codes, headers, bodies and the decoded profiles.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pprof_tests::{
    Adapter, Response, burn_cpu_on_thread, cpu_profiler_lock, function_names, get,
    heap_profiler_lock, request, sample_types, send, string,
};

// Heap profiles need jemalloc with its profiler on in this test process.
pprof_core::jemalloc_heap_profiling!();

fn servers() -> Vec<(Adapter, SocketAddr)> {
    Adapter::ALL.iter().map(|a| (*a, a.start(None))).collect()
}

fn assert_nosniff(r: &Response, what: &str) {
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
}

/// Go's error shape: status, text/plain, X-Go-Pprof: 1, no attachment, one line.
fn assert_error(r: &Response, status: u16, message: &str, what: &str) {
    pprof_tests::assert_go_error(r, status, message, what);
}

fn assert_profile_headers(r: &Response, filename: &str, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/octet-stream"),
        "{what}"
    );
    assert_eq!(
        r.header("content-disposition"),
        Some(format!("attachment; filename=\"{filename}\"").as_str()),
        "{what}"
    );
    assert_eq!(r.header("content-encoding"), None, "{what}");
    assert_nosniff(r, what);
    assert_eq!(r.body.get(..2), Some(&[0x1f, 0x8b][..]), "{what}: not gzip");
}

#[test]
fn index_lists_every_served_profile_with_relative_links() {
    for (adapter, addr) in servers() {
        let r = get(addr, "/debug/pprof/");
        assert_eq!(r.status, 200, "{adapter:?}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_nosniff(&r, "index");
        let html = r.text();
        assert!(html.contains("<title>/debug/pprof/</title>"), "{html}");
        let mut last = 0;
        for name in [
            "allocs",
            "block",
            "cmdline",
            "goroutine",
            "heap",
            "mutex",
            "profile",
            "threadcreate",
        ] {
            let at = html
                .find(&format!("<a href='{name}?debug=1'>{name}</a>"))
                .unwrap_or_else(|| panic!("{adapter:?}: no link to {name}"));
            assert!(at > last, "{name} out of order");
            last = at;
        }
        // The heap count is the number of stacks jemalloc has sampled: real, not 0.
        let heap_row = html
            .lines()
            .find(|l| l.contains("href='heap?debug=1'"))
            .unwrap_or_default();
        assert!(!heap_row.starts_with("<tr><td>0<"), "{heap_row}");

        let head = request(addr, "HEAD", "/debug/pprof/", b"");
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
    }
}

#[test]
fn bare_prefix_redirects_to_the_index() {
    for (adapter, addr) in servers() {
        let r = get(addr, "/debug/pprof");
        assert_eq!(r.status, 301, "{adapter:?}");
        assert_eq!(r.header("location"), Some("pprof/"));
        // The app's own routes are untouched.
        assert_eq!(get(addr, "/hello").text(), "hello\n");
    }
}

#[test]
fn cmdline_is_the_arguments_joined_by_nul() {
    let expected = std::env::args().collect::<Vec<_>>().join("\0");
    for (_, addr) in servers() {
        let r = get(addr, "/debug/pprof/cmdline");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.text(), expected);
    }
}

#[test]
fn symbol_answers_get_and_post_and_skips_junk() {
    let address = burn_marker as fn() as usize;
    for (adapter, addr) in servers() {
        let r = get(addr, "/debug/pprof/symbol");
        assert_eq!((r.status, r.text().as_str()), (200, "num_symbols: 1\n"));

        let body = format!("junk+0+{address:#x}+0xzz+12");
        let r = request(addr, "POST", "/debug/pprof/symbol", body.as_bytes());
        assert_eq!(r.status, 200, "{adapter:?}");
        let text = r.text();
        assert!(text.starts_with("num_symbols: 1\n"), "{text}");
        let line = format!("{address:#x} conformance::burn_marker\n");
        assert!(text.contains(&line), "{text} lacks {line}");

        let r = get(addr, &format!("/debug/pprof/symbol?{address:#x}+junk"));
        assert!(r.text().contains(&line), "GET form: {}", r.text());

        let r = request(
            addr,
            "POST",
            "/debug/pprof/symbol",
            b"this is not an address",
        );
        assert_eq!(r.text(), "num_symbols: 1\n");

        let huge = vec![b'1'; 100 * 1024];
        let r = request(addr, "POST", "/debug/pprof/symbol", &huge);
        assert_error(
            &r,
            400,
            "request body exceeds the limit of 65536 bytes",
            "huge symbol body",
        );
    }
}

#[inline(never)]
fn burn_marker() {
    std::hint::black_box(());
}

#[test]
fn bad_requests_get_go_error_shape() {
    let cases: &[(&str, &str, u16, &str)] = &[
        ("GET", "/debug/pprof/nope", 404, "Unknown profile"),
        ("GET", "/debug/pprof/heap/extra", 404, "Unknown profile"),
        ("GET", "/debug/pprof/../cmdline", 404, "Unknown profile"),
        (
            "GET",
            "/debug/pprof/profile?seconds=abc",
            400,
            r#"invalid value for "seconds" - must be a positive integer"#,
        ),
        (
            "GET",
            "/debug/pprof/profile?seconds=0",
            400,
            r#"invalid value for "seconds""#,
        ),
        (
            "GET",
            "/debug/pprof/profile?seconds=-3",
            400,
            r#"invalid value for "seconds""#,
        ),
        (
            "GET",
            "/debug/pprof/profile?seconds=100000",
            400,
            "profile duration exceeds server's limit of 300 seconds",
        ),
        (
            "GET",
            "/debug/pprof/profile?seconds=99999999999999999999999",
            400,
            "exceeds server's limit",
        ),
        (
            "GET",
            "/debug/pprof/profile?hz=0",
            400,
            r#"invalid value for "hz""#,
        ),
        (
            "GET",
            "/debug/pprof/profile?hz=100000",
            400,
            r#"invalid value for "hz""#,
        ),
        (
            "GET",
            "/debug/pprof/heap?seconds=1&debug=1",
            400,
            "seconds and debug params are incompatible",
        ),
        (
            "GET",
            "/debug/pprof/heap?seconds=x",
            400,
            r#"invalid value for "seconds""#,
        ),
        (
            "GET",
            "/debug/pprof/allocs?debug=yes",
            400,
            r#"invalid value for "debug""#,
        ),
        ("DELETE", "/debug/pprof/heap", 405, "Method not allowed"),
        ("POST", "/debug/pprof/allocs", 405, "Method not allowed"),
        ("GET", "/debug/pprof/trace", 501, "no Rust equivalent"),
    ];
    for (adapter, addr) in servers() {
        for (method, target, status, message) in cases {
            let r = request(addr, method, target, b"");
            assert_error(
                &r,
                *status,
                message,
                &format!("{adapter:?} {method} {target}"),
            );
        }
    }
}

#[test]
fn cpu_profile_is_go_shaped_and_names_the_busy_function() {
    let _cpu = cpu_profiler_lock();
    for (adapter, addr) in servers() {
        let burner = burn_cpu_on_thread("burner", Duration::from_millis(1500));
        let r = get(addr, "/debug/pprof/profile?seconds=1&hz=250");
        let _ = burner.join();
        assert_profile_headers(&r, "profile", &format!("{adapter:?} cpu"));
        let p = r.profile();
        assert_eq!(sample_types(&p), ["samples/count", "cpu/nanoseconds"]);
        let period_type = p.period_type.clone().unwrap_or_default();
        assert_eq!(
            (string(&p, period_type.ty), string(&p, period_type.unit)),
            ("cpu", "nanoseconds")
        );
        assert_eq!(p.period, 4_000_000, "1e9 / 250 Hz");
        assert_eq!(p.default_sample_type, 0);
        assert!(p.duration_nanos >= 1_000_000_000, "{}", p.duration_nanos);
        assert_eq!(p.string_table[0], "");
        let exe = std::env::current_exe().expect("exe");
        let main = &p.mapping[0];
        assert_eq!(string(&p, main.filename), exe.to_string_lossy());
        assert!(main.has_functions && main.has_filenames && main.has_line_numbers);
        assert!(!string(&p, main.build_id).is_empty(), "build id");
        assert!(p.sample.iter().all(|s| s.value.len() == 2));
        assert!(p.sample.iter().all(|s| s.value[1] == s.value[0] * p.period));
        let names = function_names(&p);
        assert!(
            names.iter().any(|n| n == "pprof_tests::burn_cpu_here"),
            "{adapter:?}: burner not found in {names:?}"
        );
        assert!(
            !names.iter().any(|n| n.contains("perf_signal_handler")),
            "signal frames left in"
        );
        // Every sample in the burner carries its thread name.
        let burner_fn = p
            .function
            .iter()
            .find(|f| string(&p, f.name) == "pprof_tests::burn_cpu_here")
            .map(|f| f.id);
        let burner_samples: Vec<_> = p
            .sample
            .iter()
            .filter(|s| {
                s.location_id.iter().any(|id| {
                    p.location.iter().find(|l| l.id == *id).is_some_and(|l| {
                        l.line
                            .iter()
                            .any(|line| Some(line.function_id) == burner_fn)
                    })
                })
            })
            .collect();
        assert!(!burner_samples.is_empty());
        for s in burner_samples {
            let thread = s
                .label
                .iter()
                .find(|l| string(&p, l.key) == "thread")
                .map(|l| string(&p, l.str));
            assert_eq!(thread, Some("burner"));
        }

        let head = request(addr, "HEAD", "/debug/pprof/profile", b"");
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-disposition"),
            Some("attachment; filename=\"profile\"")
        );
    }
}

#[test]
fn cpu_profile_takes_a_posted_form() {
    let _cpu = cpu_profiler_lock();
    for (adapter, addr) in servers() {
        let started = Instant::now();
        let r = pprof_tests::request_with_headers(
            addr,
            "POST",
            "/debug/pprof/profile",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"seconds=1",
        );
        assert_profile_headers(&r, "profile", &format!("{adapter:?} POST form"));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "seconds=1 from the form was used"
        );
        let p = r.profile();
        assert!((1_000_000_000..3_000_000_000).contains(&p.duration_nanos));
    }
}

#[test]
fn concurrent_cpu_profiles_share_the_sampler_up_to_the_limit() {
    let _cpu = cpu_profiler_lock();
    for adapter in Adapter::ALL {
        let what = |w: &str| format!("{adapter:?} {w}");
        // One at a time, as Go: the second gets Go's message.
        let addr = adapter.start_with(pprof_core::Config::default().max_cpu_profiles(1));
        let first = std::thread::spawn(move || get(addr, "/debug/pprof/profile?seconds=2"));
        std::thread::sleep(Duration::from_millis(500));
        let second = get(addr, "/debug/pprof/profile?seconds=1");
        assert_error(
            &second,
            409,
            "Could not enable CPU profiling: cpu profiling already in use",
            &what("second of one"),
        );
        assert_profile_headers(&first.join().expect("first"), "profile", &what("first"));
        // By default several share it; another rate is refused by name.
        let addr = adapter.start(None);
        let first = std::thread::spawn(move || get(addr, "/debug/pprof/profile?seconds=2"));
        std::thread::sleep(Duration::from_millis(500));
        let other_rate = get(addr, "/debug/pprof/profile?seconds=1&hz=250");
        assert_error(
            &other_rate,
            409,
            "a CPU profile at 100 Hz is running; ask with hz=100",
            &what("other rate"),
        );
        let second = get(addr, "/debug/pprof/profile?seconds=1");
        assert_profile_headers(&second, "profile", &what("second"));
        assert_profile_headers(&first.join().expect("first"), "profile", &what("first"));
    }
}

#[test]
fn client_hanging_up_stops_the_profile_at_once() {
    let _cpu = cpu_profiler_lock();
    for (adapter, addr) in servers() {
        let started = Instant::now();
        let connection = send(addr, "GET", "/debug/pprof/profile?seconds=60", b"");
        std::thread::sleep(Duration::from_millis(500));
        drop(connection);
        // The profiler must be free again long before the 60 s would end.
        let mut last = None;
        // Hyper notices the closed connection and drops the handler, which
        // stops the sampler: well within a few seconds of the hang-up.
        while started.elapsed() < Duration::from_secs(5) {
            let r = get(addr, "/debug/pprof/profile?seconds=1");
            if r.status == 200 {
                last = Some(r);
                break;
            }
            assert_eq!(r.status, 409, "{}", r.text());
            std::thread::sleep(Duration::from_millis(200));
        }
        let r =
            last.unwrap_or_else(|| panic!("{adapter:?}: profiler still busy 5 s after hang-up"));
        assert_profile_headers(&r, "profile", &format!("{adapter:?} after hang-up"));
    }
}

#[test]
fn late_sigprof_after_a_profile_does_not_kill_the_process() {
    let _cpu = cpu_profiler_lock();
    let (_, addr) = servers().remove(0);
    let r = get(addr, "/debug/pprof/profile?seconds=1");
    assert_eq!(r.status, 200);
    // The default action of SIGPROF terminates the process; the sampler
    // must leave it ignored, not default, when it stops.
    // SAFETY-free: `kill` on our own pid with a signal number is a plain syscall.
    let pid = std::process::id();
    let status = std::process::Command::new("kill")
        .args(["-PROF", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        get(addr, "/hello").text(),
        "hello\n",
        "still alive and serving"
    );
}

#[test]
fn heap_and_allocs_are_go_shaped() {
    let _heap = heap_profiler_lock();
    // Something live and sizeable to find: 3 × 16 MiB, each certain to be
    // sampled at a 512 KiB period.
    let keep = keep_alive_for_heap_test();
    for (adapter, addr) in servers() {
        for (name, default_type) in [("heap", None), ("allocs", Some("alloc_space"))] {
            let r = get(addr, &format!("/debug/pprof/{name}"));
            assert_profile_headers(&r, name, &format!("{adapter:?} {name}"));
            let p = r.profile();
            assert_eq!(
                sample_types(&p),
                [
                    "alloc_objects/count",
                    "alloc_space/bytes",
                    "inuse_objects/count",
                    "inuse_space/bytes"
                ]
            );
            let period_type = p.period_type.clone().unwrap_or_default();
            assert_eq!(
                (string(&p, period_type.ty), string(&p, period_type.unit)),
                ("space", "bytes")
            );
            assert_eq!(p.period, 1 << 19, "lg_prof_sample:19");
            assert_eq!(
                (p.default_sample_type != 0).then(|| string(&p, p.default_sample_type)),
                default_type
            );
            assert!(!p.sample.is_empty());
            assert!(p.sample.iter().all(|s| s.value.len() == 4));
            assert!(p.sample.iter().all(|s| {
                s.label
                    .iter()
                    .any(|l| string(&p, l.key) == "bytes" && l.num > 0)
            }));
            assert!(p.mapping[0].has_functions);
            let ours = p
                .sample
                .iter()
                .find(|s| {
                    let leaf = p
                        .location
                        .iter()
                        .find(|l| Some(&l.id) == s.location_id.first());
                    leaf.and_then(|l| l.line.first())
                        .and_then(|line| p.function.iter().find(|f| f.id == line.function_id))
                        .is_some_and(|f| {
                            string(&p, f.name).starts_with("conformance::keep_alive_for_heap_test")
                        })
                })
                .unwrap_or_else(|| {
                    panic!("{name}: keep_alive_for_heap_test not on top of any stack")
                });
            assert_eq!(ours.value[2], 3, "{name}: inuse_objects");
            assert_eq!(ours.value[3], 3 * (16 << 20), "{name}: inuse_space");
            // The allocation machinery is trimmed: no sample starts inside it.
            for s in &p.sample {
                let leaf = p
                    .location
                    .iter()
                    .find(|l| Some(&l.id) == s.location_id.first());
                let leaf_fn = leaf
                    .and_then(|l| l.line.first())
                    .and_then(|line| p.function.iter().find(|f| f.id == line.function_id))
                    .map(|f| string(&p, f.name).to_owned())
                    .unwrap_or_default();
                assert!(
                    !leaf_fn.starts_with("alloc::")
                        && !leaf_fn.contains("jemalloc")
                        && !leaf_fn.contains("__rust_alloc"),
                    "{name}: allocator frame on top: {leaf_fn}"
                );
            }
        }
    }
    drop(keep);
}

#[inline(never)]
fn keep_alive_for_heap_test() -> Vec<Vec<u8>> {
    (0..3).map(|i| vec![i as u8 + 1; 16 << 20]).collect()
}

#[test]
fn heap_text_and_delta_forms() {
    let _heap = heap_profiler_lock();
    for (adapter, addr) in servers() {
        let r = get(addr, "/debug/pprof/heap?debug=1");
        assert_eq!(r.status, 200, "{adapter:?}");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        let text = r.text();
        assert!(
            text.starts_with("heap profile: "),
            "{}",
            &text[..text.len().min(200)]
        );
        assert!(
            text.lines()
                .next()
                .unwrap_or_default()
                .ends_with("@ heap/1048576")
        );
        assert!(text.contains("\n#\t0x"), "frame lines");
        assert!(
            text.contains("# jemalloc stats\n# allocated = "),
            "stats block"
        );

        let started = Instant::now();
        let r = get(addr, "/debug/pprof/allocs?seconds=1");
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_profile_headers(&r, "allocs-delta", "allocs delta");
        let p = r.profile();
        assert!(p.duration_nanos >= 1_000_000_000, "{}", p.duration_nanos);
        assert_eq!(sample_types(&p).len(), 4);

        let head = request(addr, "HEAD", "/debug/pprof/heap?seconds=5", b"");
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-disposition"),
            Some("attachment; filename=\"heap-delta\"")
        );
    }
}

#[test]
fn routes_follow_a_custom_prefix() {
    for adapter in Adapter::ALL {
        let addr = adapter.start(Some("/internal/pprof"));
        assert_eq!(get(addr, "/debug/pprof/").status, 404, "{adapter:?}");
        let index = get(addr, "/internal/pprof/");
        assert_eq!(index.status, 200, "{adapter:?}");
        assert!(index.text().contains("<title>/internal/pprof/</title>"));
        // The index's relative links resolve under the prefix.
        assert_eq!(get(addr, "/internal/pprof/cmdline?debug=1").status, 200);
        let r = get(addr, "/internal/pprof");
        assert_eq!(
            (r.status, r.header("location")),
            (301, Some("pprof/")),
            "{adapter:?}"
        );
        assert_eq!(get(addr, "/hello").text(), "hello\n", "{adapter:?}");
    }
}

#[test]
fn go_tool_pprof_reads_every_profile_from_every_adapter() {
    let _cpu = cpu_profiler_lock();
    let _heap = heap_profiler_lock();
    for (adapter, addr) in servers() {
        for (path, types) in [
            ("profile?seconds=1", "samples/count cpu/nanoseconds"),
            (
                "heap",
                "alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes",
            ),
            (
                "allocs",
                // [dflt]: allocs names alloc_space its default sample type.
                "alloc_objects/count alloc_space/bytes[dflt] inuse_objects/count inuse_space/bytes",
            ),
            (
                "heap?seconds=1",
                "alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes",
            ),
            ("goroutine", "goroutine/count"),
            ("threadcreate", "threadcreate/count"),
            ("mutex", "contentions/count delay/nanoseconds"),
            ("block", "contentions/count delay/nanoseconds"),
            ("block?seconds=1", "contentions/count delay/nanoseconds"),
        ] {
            let url = format!("http://{addr}/debug/pprof/{path}");
            let Some(raw) = pprof_tests::go_tool_pprof(&["-raw", &url]) else {
                return;
            };
            assert!(raw.contains(types), "{adapter:?} {path}: {raw}");
        }
        // A bare host:port makes go tool pprof fetch /debug/pprof/profile.
        let top = pprof_tests::go_tool_pprof(&["-seconds", "1", "-top", &addr.to_string()])
            .unwrap_or_default();
        assert!(top.contains("Type: cpu"), "{adapter:?}: {top}");
    }
}

/// A thread named `conf-park` waiting in a known function until the
/// returned sender is dropped.
fn park_a_thread() -> std::sync::mpsc::Sender<()> {
    let (stop, parked) = std::sync::mpsc::channel::<()>();
    let (started, ready) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("conf-park".to_owned())
        .spawn(move || {
            let _ = started.send(());
            wait_in_known_function_for_goroutine_test(&parked);
        })
        .expect("spawn");
    let _ = ready.recv();
    std::thread::sleep(Duration::from_millis(20));
    stop
}

#[inline(never)]
fn wait_in_known_function_for_goroutine_test(stop: &std::sync::mpsc::Receiver<()>) {
    let _ = stop.recv_timeout(Duration::from_secs(120));
}

/// A sample's leaf function, its string labels and its first value.
type Leaf = (String, Vec<(String, String)>, i64);

/// The leaf function of each sample, with the sample's string labels.
fn leaf_functions(p: &pprof_tests::Profile) -> Vec<Leaf> {
    p.sample
        .iter()
        .map(|s| {
            let leaf = p
                .location
                .iter()
                .find(|l| Some(&l.id) == s.location_id.first())
                .and_then(|l| l.line.first())
                .and_then(|line| p.function.iter().find(|f| f.id == line.function_id))
                .map(|f| string(p, f.name).to_owned())
                .unwrap_or_default();
            let labels = s
                .label
                .iter()
                .filter(|l| l.str != 0)
                .map(|l| (string(p, l.key).to_owned(), string(p, l.str).to_owned()))
                .collect();
            (leaf, labels, s.value[0])
        })
        .collect()
}

#[test]
fn goroutine_and_threadcreate_are_go_shaped() {
    let stop = park_a_thread();
    for (adapter, addr) in servers() {
        let threads = || std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count()) as i64;
        let before = threads();
        let r = get(addr, "/debug/pprof/goroutine");
        let after = threads();
        assert_profile_headers(&r, "goroutine", &format!("{adapter:?} goroutine"));
        let p = r.profile();
        assert_eq!(sample_types(&p), ["goroutine/count"]);
        let period_type = p.period_type.clone().unwrap_or_default();
        assert_eq!(
            (
                string(&p, period_type.ty),
                string(&p, period_type.unit),
                p.period
            ),
            ("goroutine", "count", 1)
        );
        assert!(p.mapping[0].has_functions);
        let leaves = leaf_functions(&p);
        // The parked thread, under its name, with the function it waits in on
        // top (the channel and futex machinery above it is trimmed).
        let parked = leaves
            .iter()
            .find(|(_, labels, _)| labels.contains(&("thread".to_owned(), "conf-park".to_owned())))
            .unwrap_or_else(|| panic!("{adapter:?}: parked thread missing: {leaves:?}"));
        assert_eq!(
            parked.0, "conformance::wait_in_known_function_for_goroutine_test",
            "{adapter:?}"
        );
        // Sleeping, unless another test's dump woke it for its signal just now.
        assert!(
            parked
                .1
                .contains(&("state".to_owned(), "sleeping".to_owned()))
                || parked
                    .1
                    .contains(&("state".to_owned(), "running".to_owned())),
            "{parked:?}"
        );
        // Every thread of the process is counted once: the total lies within
        // what /proc counted just before and just after (other tests start
        // and stop threads meanwhile).
        let total: i64 = leaves.iter().map(|(_, _, n)| n).sum();
        assert!(
            (before.min(after) - 2..=before.max(after) + 2).contains(&total),
            "{adapter:?}: {total} samples for {before}..{after} threads"
        );

        let r = get(addr, "/debug/pprof/threadcreate");
        assert_profile_headers(&r, "threadcreate", &format!("{adapter:?} threadcreate"));
        let p = r.profile();
        assert_eq!(sample_types(&p), ["threadcreate/count"]);
        let created = leaf_functions(&p);
        let parked = created
            .iter()
            .find(|(_, labels, _)| labels.contains(&("thread".to_owned(), "conf-park".to_owned())))
            .unwrap_or_else(|| panic!("{adapter:?}: parked thread missing: {created:?}"));
        // Cut to where the thread began: the closure passed to spawn.
        assert_eq!(parked.0, "conformance::park_a_thread::{{closure}}");
    }
    drop(stop);
}

#[test]
fn goroutine_text_forms_and_delta() {
    let stop = park_a_thread();
    for (adapter, addr) in servers() {
        let r = get(addr, "/debug/pprof/goroutine?debug=1");
        assert_eq!(r.status, 200, "{adapter:?}");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        let text = r.text();
        assert!(text.starts_with("goroutine profile: total "), "{text}");
        assert!(
            text.contains("# labels: {\"thread\":\"conf-park\", \"state\":\""),
            "{text}"
        );
        assert!(
            text.contains("\tconformance::wait_in_known_function_for_goroutine_test\t"),
            "{text}"
        );

        let text = get(addr, "/debug/pprof/goroutine?debug=2").text();
        let block = text
            .split("\n\n")
            .find(|b| b.contains("\"conf-park\" ["))
            .unwrap_or_else(|| panic!("{adapter:?}: no block for the parked thread: {text}"));
        assert!(block.starts_with("thread "), "{block}");
        assert!(
            block.contains("\nconformance::wait_in_known_function_for_goroutine_test\n\t"),
            "{block}"
        );
        assert!(block.contains("tests/tests/conformance.rs:"), "{block}");

        let text = get(addr, "/debug/pprof/threadcreate?debug=1").text();
        assert!(text.starts_with("threadcreate profile: total "), "{text}");

        let r = get(addr, "/debug/pprof/goroutine?seconds=1");
        assert_profile_headers(&r, "goroutine-delta", "goroutine delta");
        assert!(r.profile().duration_nanos >= 1_000_000_000);
        let index = get(addr, "/debug/pprof/").text();
        assert!(
            index.contains("<a href='goroutine?debug=2'>full goroutine stack dump</a>"),
            "{index}"
        );
        let threads_row = index
            .lines()
            .find(|l| l.contains("href='goroutine?debug=1'"))
            .unwrap_or_default();
        assert!(!threads_row.starts_with("<tr><td>0<"), "{threads_row}");
    }
    drop(stop);
}

/// Hold a profiled lock for 200 ms while this thread waits for it: one
/// contention charged to `hold_the_den` (mutex) and to `wait_for_the_den` (block).
fn contend_once() {
    pprof_core::sync::set_mutex_profile_fraction(1);
    static DEN: pprof_core::sync::Mutex<()> = pprof_core::sync::Mutex::new(());
    let held = std::sync::Arc::new(std::sync::Barrier::new(2));
    let holder = {
        let held = held.clone();
        std::thread::spawn(move || hold_the_den(&DEN, &held))
    };
    held.wait();
    wait_for_the_den(&DEN);
    holder.join().expect("holder");
}

#[inline(never)]
fn hold_the_den(den: &pprof_core::sync::Mutex<()>, held: &std::sync::Barrier) {
    let guard = den.lock();
    held.wait();
    std::thread::sleep(Duration::from_millis(200));
    drop(guard);
}

#[inline(never)]
fn wait_for_the_den(den: &pprof_core::sync::Mutex<()>) {
    let _guard = den.lock();
}

/// The leaf function's name of every sample, with the sample's values.
fn leaves(p: &pprof_tests::Profile) -> Vec<(String, Vec<i64>)> {
    leaf_functions(p)
        .into_iter()
        .zip(&p.sample)
        .map(|((leaf, ..), s)| (leaf, s.value.clone()))
        .collect()
}

#[test]
fn mutex_and_block_are_go_shaped() {
    contend_once();
    for (adapter, addr) in servers() {
        for (name, leaf, header) in [
            ("mutex", "conformance::hold_the_den", "--- mutex:\n"),
            (
                "block",
                "conformance::wait_for_the_den",
                "--- contention:\n",
            ),
        ] {
            let what = format!("{adapter:?} {name}");
            let r = get(addr, &format!("/debug/pprof/{name}"));
            assert_profile_headers(&r, name, &what);
            let p = r.profile();
            assert_eq!(
                sample_types(&p),
                ["contentions/count", "delay/nanoseconds"],
                "{what}"
            );
            let period_type = p.period_type.clone().unwrap_or_default();
            assert_eq!(
                (string(&p, period_type.ty), string(&p, period_type.unit)),
                ("contentions", "count"),
                "{what}"
            );
            assert_eq!((p.period, p.default_sample_type), (1, 0), "{what}");
            assert!(p.mapping[0].has_functions, "{what}");
            // The known contention, on the known function, about 200 ms.
            let ours: Vec<_> = leaves(&p).into_iter().filter(|(f, _)| f == leaf).collect();
            assert_eq!(ours.len(), 1, "{what}: {:?}", leaves(&p));
            let values = &ours[0].1;
            assert_eq!(values[0], 1, "{what}: one contention");
            assert!(
                (100_000_000..2_000_000_000).contains(&values[1]),
                "{what}: delay {}",
                values[1]
            );

            let text = get(addr, &format!("/debug/pprof/{name}?debug=1"));
            assert_eq!(text.status, 200, "{what}");
            assert_eq!(
                text.header("content-type"),
                Some("text/plain; charset=utf-8")
            );
            let body = text.text();
            assert!(body.starts_with(header), "{what}: {body}");
            assert!(body.contains("\ncycles/second=1000000000\n"), "{what}");
            assert!(body.contains(&format!("\t{leaf}\t")), "{what}: {body}");

            let r = get(addr, &format!("/debug/pprof/{name}?seconds=1"));
            assert_profile_headers(&r, &format!("{name}-delta"), &what);
            let delta = r.profile();
            assert!(delta.duration_nanos >= 1_000_000_000, "{what}");
            // Nothing contended in between: the known event cancels out.
            assert!(
                !leaves(&delta).iter().any(|(f, _)| f == leaf),
                "{what}: {:?}",
                leaves(&delta)
            );

            let head = request(addr, "HEAD", &format!("/debug/pprof/{name}?seconds=5"), b"");
            assert_eq!(head.status, 200, "{what}");
            assert!(head.body.is_empty(), "{what}");
            assert_eq!(
                head.header("content-disposition"),
                Some(format!("attachment; filename=\"{name}-delta\"").as_str())
            );
        }
        // The index counts the recorded stacks.
        let html = get(addr, "/debug/pprof/").text();
        for name in ["mutex", "block"] {
            let row = html
                .lines()
                .find(|l| l.contains(&format!("href='{name}?debug=1'")))
                .unwrap_or_default();
            assert!(
                row.starts_with("<tr><td>") && !row.starts_with("<tr><td>0<"),
                "{adapter:?}: {row}"
            );
        }
    }
}
