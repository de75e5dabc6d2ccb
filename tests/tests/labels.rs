//! Labels as a reader sees them: `http.route` and `http.request.method` on
//! every adapter's CPU samples (`go tool pprof -tagfocus` keeps them,
//! `-tagignore` drops them), a labeled future's labels across threads,
//! threads' labels in dumps, sets that outlive their request, and
//! `tracing` spans as labels.

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pprof_tests::{
    Adapter, Stack, burn_cpu_here, cpu_profiler_lock, get, go_tool_pprof, save, stacks,
    top_function,
};

/// The samples of a CPU profile of `seconds` from `addr`, and its body.
fn cpu_profile(addr: std::net::SocketAddr, seconds: u64) -> (Vec<Stack>, Vec<u8>) {
    let r = get(addr, &format!("/debug/pprof/profile?seconds={seconds}"));
    assert_eq!(r.status, 200, "{}", r.text());
    (stacks(&r.profile()), r.body)
}

fn cpu_of(stacks: &[Stack], keep: impl Fn(&Stack) -> bool) -> i64 {
    stacks.iter().filter(|s| keep(s)).map(|s| s.values[1]).sum()
}

#[test]
fn a_cpu_heavy_route_carries_its_route_and_method_on_every_adapter() {
    let _cpu = cpu_profiler_lock();
    for adapter in Adapter::ALL {
        let addr = adapter.start_labeled();
        let route = adapter.burn_route(1000);
        // The profile first, then the request inside its window (a request
        // that blocks its worker can hold up the runtime's next accept).
        let profile = std::thread::spawn(move || cpu_profile(addr, 3));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(get(addr, "/burn/1000").status, 200);
        let (stacks, body) = profile.join().expect("profile");
        let burning = |s: &Stack| s.has("burn_in_a_labeled_request");
        let total = cpu_of(&stacks, burning);
        assert!(
            total > 0,
            "{adapter:?}: the route's work was not sampled: {:#?}",
            stacks
                .iter()
                .filter(|s| s.has("burn_cpu_here"))
                .collect::<Vec<_>>()
        );
        let labeled = cpu_of(&stacks, |s| {
            burning(s)
                && s.label("http.route") == Some(route.as_str())
                && s.label("http.request.method") == Some("GET")
        });
        assert_eq!(
            labeled, total,
            "{adapter:?}: every tick of the route is labeled {route}"
        );
        // What go tool pprof makes of it.
        let file = save(&body, &format!("labels-{adapter:?}.pb.gz"));
        let focus = format!("-tagfocus=http.route={}", regex_quote(&route));
        let Some(kept) = go_tool_pprof(&["-top", &focus, &file]) else {
            continue;
        };
        assert_eq!(
            top_function(&kept).as_deref(),
            Some("pprof_tests::burn_cpu_here"),
            "{adapter:?}: {kept}"
        );
        let ignore = format!("-tagignore=http.route={}", regex_quote(&route));
        let dropped = go_tool_pprof(&["-top", &ignore, &file]).unwrap_or_default();
        assert!(
            !dropped.contains("burn_in_a_labeled_request"),
            "{adapter:?}: {dropped}"
        );
        let shown = go_tool_pprof(&["-tags", &file]).unwrap_or_default();
        assert!(
            shown.contains("http.route") && shown.contains(&route),
            "{shown}"
        );
    }
}

/// `text` as a regular expression that matches it literally (pprof's tag
/// filters are regexes: `{` and `}` would be repetition).
fn regex_quote(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escape = "\\.+*?()|[]{}^$".contains(c);
            escape.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

#[inline(never)]
fn burn_in_a_hopping_future(ms: u64) -> u64 {
    burn_cpu_here(Duration::from_millis(ms))
}

/// A future that burns `ms` of CPU in each of `polls` polls.
struct Burns {
    left: u32,
    ms: u64,
}

impl Future for Burns {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.left == 0 {
            return Poll::Ready(());
        }
        burn_in_a_hopping_future(self.ms);
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn a_labeled_future_keeps_its_labels_on_every_thread_that_polls_it() {
    let _cpu = cpu_profiler_lock();
    let addr = Adapter::Axum.start(None);
    let profile = std::thread::spawn(move || cpu_profile(addr, 3));
    std::thread::sleep(Duration::from_millis(200));
    // One future, polled on one thread, then moved to another and polled
    // there: as a multi-thread runtime moves a task between workers.
    let future = Box::pin(pprof_core::labels::scope(
        [("job", "hop")],
        Burns { left: 8, ms: 100 },
    ));
    type Hopping = std::pin::Pin<Box<pprof_core::labels::Labeled<Burns>>>;
    let poll_some = |mut future: Hopping, polls: usize| {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..polls {
            let _ = Future::poll(future.as_mut(), &mut cx);
        }
        future
    };
    let future = std::thread::Builder::new()
        .name("first-poller".into())
        .spawn(move || poll_some(future, 4))
        .expect("spawn")
        .join()
        .expect("first");
    let done = std::thread::Builder::new()
        .name("second-poller".into())
        .spawn(move || poll_some(future, 5))
        .expect("spawn")
        .join()
        .expect("second");
    drop(done);
    let (stacks, _) = profile.join().expect("profile");
    let burning: Vec<&Stack> = stacks
        .iter()
        .filter(|s| s.has("burn_in_a_hopping_future"))
        .collect();
    for thread in ["first-poller", "second-poller"] {
        assert!(
            burning.iter().any(|s| s.label("thread") == Some(thread)),
            "{thread} not sampled: {burning:#?}"
        );
    }
    assert!(
        burning.iter().all(|s| s.label("job") == Some("hop")),
        "{burning:#?}"
    );
    // Outside the future, the same threads' other work carries no job.
    assert!(
        stacks
            .iter()
            .filter(|s| s.label("job").is_some())
            .all(|s| s.has("burn_in_a_hopping_future")),
        "labels leaked past the future's polls"
    );
}

#[inline(never)]
fn wait_here_with_labels(stop: &std::sync::mpsc::Receiver<()>) {
    let _ = stop.recv_timeout(Duration::from_secs(30));
}

#[test]
fn a_thread_dump_shows_each_threads_labels() {
    let addr = Adapter::Warp.start(None);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let waiter = std::thread::Builder::new()
        .name("labeled-waiter".into())
        .spawn(move || {
            pprof_core::labels::with([("job", "dump"), ("tenant", "acme")], || {
                wait_here_with_labels(&rx);
            });
        })
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(100));
    let r = get(addr, "/debug/pprof/goroutine");
    assert_eq!(r.status, 200);
    let dumped = stacks(&r.profile());
    let ours = dumped
        .iter()
        .find(|s| s.label("thread") == Some("labeled-waiter"))
        .unwrap_or_else(|| panic!("no labeled-waiter in {dumped:#?}"));
    assert_eq!(ours.label("job"), Some("dump"));
    assert_eq!(ours.label("tenant"), Some("acme"));
    let text = get(addr, "/debug/pprof/goroutine?debug=1").text();
    assert!(
        text.contains(r#""job":"dump""#) && text.contains(r#""tenant":"acme""#),
        "{text}"
    );
    let full = get(addr, "/debug/pprof/goroutine?debug=2").text();
    let block = full
        .split("\n\n")
        .find(|b| b.contains("\"labeled-waiter\""))
        .unwrap_or_else(|| panic!("no block: {full}"));
    let header = block.lines().next().unwrap_or_default();
    assert!(
        header.contains(r#"labels: {"job":"dump", "tenant":"acme"}"#),
        "{header}"
    );
    let _ = tx.send(());
    let _ = waiter.join();
}

#[test]
fn labels_of_a_request_that_ended_mid_profile_are_intact_in_the_profile() {
    let _cpu = cpu_profiler_lock();
    for adapter in [Adapter::Actix, Adapter::Tower] {
        let addr = adapter.start_labeled();
        let profile = std::thread::spawn(move || cpu_profile(addr, 3));
        std::thread::sleep(Duration::from_millis(200));
        // The request ends a second into the profile; its label set is
        // freed from the app's side. New sets churn the allocator after it.
        assert_eq!(get(addr, "/burn/700").status, 200);
        for i in 0..5000 {
            pprof_core::labels::with([("http.route", format!("/churn/{i}"))], || {});
        }
        let (stacks, _) = profile.join().expect("profile");
        let route = adapter.burn_route(700);
        let burning: Vec<&Stack> = stacks
            .iter()
            .filter(|s| s.has("burn_in_a_labeled_request"))
            .collect();
        assert!(!burning.is_empty(), "{adapter:?}");
        assert!(
            burning
                .iter()
                .all(|s| s.label("http.route") == Some(route.as_str())),
            "{adapter:?}: {burning:#?}"
        );
    }
}

#[inline(never)]
fn burn_in_a_traced_span(ms: u64) -> u64 {
    burn_cpu_here(Duration::from_millis(ms))
}

/// `LabelLayer` in an application's own subscriber: the CPU a span's code
/// burns carries `span` and the chosen fields, and `-tagfocus span=…`
/// keeps it.
#[test]
fn a_tracing_span_labels_the_cpu_burnt_inside_it() {
    use tracing_subscriber::layer::SubscriberExt;
    let _cpu = cpu_profiler_lock();
    let addr = Adapter::Axum.start(None);
    let profile = std::thread::spawn(move || cpu_profile(addr, 3));
    std::thread::sleep(Duration::from_millis(300));
    std::thread::Builder::new()
        .name("traced".into())
        .spawn(|| {
            let layer = pprof_core::labels::tracing::LabelLayer::new().fields(["tenant"]);
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, || {
                let span = tracing::info_span!("reindex", tenant = "acme", batch = 7);
                let _entered = span.enter();
                burn_in_a_traced_span(1500);
            });
            // After the span: the same thread's work carries no span.
            burn_in_a_labeled_thread_after_its_span();
        })
        .expect("spawn")
        .join()
        .expect("traced thread");
    let (stacks, body) = profile.join().expect("profile");
    let traced = |s: &Stack| s.has("burn_in_a_traced_span");
    let total = cpu_of(&stacks, traced);
    assert!(total > 0, "the span's work was not sampled");
    let labeled = cpu_of(&stacks, |s| {
        traced(s)
            && s.label("span") == Some("reindex")
            && s.label("tenant") == Some("acme")
            && s.label("batch").is_none()
    });
    assert_eq!(labeled, total, "every tick inside the span is labeled");
    assert_eq!(
        cpu_of(&stacks, |s| s
            .has("burn_in_a_labeled_thread_after_its_span")
            && s.label("span").is_some()),
        0,
        "the span's labels leaked past its exit"
    );
    let file = save(&body, "labels-tracing.pb.gz");
    if let Some(kept) = go_tool_pprof(&["-top", "-tagfocus=span=reindex", &file]) {
        assert!(kept.contains("burn_in_a_traced_span"), "{kept}");
        assert!(
            !kept.contains("burn_in_a_labeled_thread_after_its_span"),
            "{kept}"
        );
    }
}

#[inline(never)]
fn burn_in_a_labeled_thread_after_its_span() -> u64 {
    burn_cpu_here(Duration::from_millis(500))
}

/// A tiny deterministic generator (xorshift64), one per stressing thread.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

/// What a stressing thread holds on to between steps, for its drop: a span
/// entered (a guard kept, as `let _e = span.enter()` across code that ends
/// first), or a labeled future suspended with a span entered across its
/// `.await`.
type Held = Box<dyn std::any::Any>;

type Pairs = Vec<(String, String)>;

/// `below` with `pairs` on top (the inner value wins), sorted by key.
fn merged(below: &Pairs, pairs: &[(&str, String)]) -> Pairs {
    let mut all = below.clone();
    for (key, value) in pairs {
        all.retain(|(k, _)| k != key);
        all.push(((*key).to_owned(), value.clone()));
    }
    all.sort();
    all
}

fn in_force() -> Pairs {
    pprof_core::labels::current()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[inline(never)]
fn burn_under_stressed_labels() -> u64 {
    burn_cpu_here(Duration::from_micros(200))
}

/// Random steps of `with`, `scope`, spans entered and exited in any order,
/// futures suspended with a span entered across an `.await` and dropped
/// later, against a model of what must be in force after each step: the
/// latest-entered set still held (each carrying what was in force when it
/// was made), or nothing.
fn stress_labels(seed: u64, until: std::time::Instant) -> u64 {
    use tracing_subscriber::layer::SubscriberExt;
    let layer = pprof_core::labels::tracing::LabelLayer::new().fields(["n"]);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let mut dice = Dice(seed);
        // Held things with their model entries: (held, its labels).
        let mut held: Vec<(Held, Pairs)> = Vec::new();
        let mut steps = 0u64;
        let top = |held: &[(Held, Pairs)]| held.last().map(|(_, p)| p.clone()).unwrap_or_default();
        let mut cx = Context::from_waker(Waker::noop());
        while std::time::Instant::now() < until {
            steps += 1;
            let n = format!("s{}", dice.roll(8));
            let span = || tracing::info_span!("stress", n = n.as_str());
            let spanned =
                |below: &Pairs| merged(below, &[("span", "stress".to_owned()), ("n", n.clone())]);
            match dice.roll(6) {
                0 | 1 if held.len() < 24 => {
                    let labels = spanned(&top(&held));
                    held.push((Box::new(span().entered()), labels));
                }
                2 if !held.is_empty() => {
                    let at = usize::try_from(dice.roll(held.len() as u64)).unwrap_or(0);
                    let (gone, _) = held.remove(at);
                    drop(gone);
                }
                3 if held.len() < 24 => {
                    let w = format!("w{}", dice.roll(8));
                    let keep_span = dice.roll(2) == 0;
                    let expected = merged(&top(&held), &[("w", w.clone())]);
                    let inside = pprof_core::labels::with([("w", w.as_str())], || {
                        assert_eq!(in_force(), expected, "inside with");
                        burn_under_stressed_labels();
                        keep_span.then(|| span().entered())
                    });
                    if let Some(entered) = inside {
                        held.push((Box::new(entered), spanned(&expected)));
                    }
                }
                4 if held.len() < 24 => {
                    let job = format!("j{}", dice.roll(8));
                    let expected = merged(&top(&held), &[("job", job.clone())]);
                    let entered_across_an_await = span();
                    let mut future =
                        Box::pin(pprof_core::labels::scope([("job", job)], async move {
                            let _entered = entered_across_an_await.entered();
                            std::future::pending::<()>().await;
                        }));
                    assert!(future.as_mut().poll(&mut cx).is_pending());
                    held.push((Box::new(future), spanned(&expected)));
                }
                _ => {
                    let job = format!("j{}", dice.roll(8));
                    let expected = merged(&top(&held), &[("job", job.clone())]);
                    let mut future =
                        std::pin::pin!(pprof_core::labels::scope([("job", job)], async {
                            burn_under_stressed_labels();
                            in_force()
                        }));
                    let Poll::Ready(seen) = future.as_mut().poll(&mut cx) else {
                        panic!("ready at once");
                    };
                    assert_eq!(seen, expected, "inside a labeled poll");
                }
            }
            assert_eq!(in_force(), top(&held), "after step {steps}");
        }
        // Everything let go, in a random order: nothing is in force.
        while !held.is_empty() {
            let at = usize::try_from(dice.roll(held.len() as u64)).unwrap_or(0);
            drop(held.remove(at));
            assert_eq!(in_force(), top(&held), "while letting go");
        }
        assert!(pprof_core::labels::current().is_empty());
        steps
    })
}

/// The label slot holds only sets it owns: threads interleave `with`,
/// `scope`, spans and drops in random orders while a 1000 Hz CPU profile
/// and thread dumps read their labels from signal handlers. Every step
/// finds what the model says in force, every sample carries a whole set of
/// the labels the threads made (or none), and the service lives on.
#[test]
fn labels_stay_sound_while_scopes_spans_and_drops_interleave_under_profiling() {
    let _cpu = cpu_profiler_lock();
    let addr = Adapter::Axum.start(None);
    let profile = std::thread::spawn(move || {
        let r = get(addr, "/debug/pprof/profile?seconds=3&hz=1000");
        assert_eq!(r.status, 200, "{}", r.text());
        stacks(&r.profile())
    });
    std::thread::sleep(Duration::from_millis(200));
    let until = std::time::Instant::now() + Duration::from_millis(2500);
    let stressing: Vec<_> = (0..3u64)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("label-stress-{i}"))
                .spawn(move || stress_labels(0x9e37_79b9_7f4a_7c15 ^ (i + 1), until))
                .expect("spawn")
        })
        .collect();
    let mut dumped = Vec::new();
    while std::time::Instant::now() < until {
        let r = get(addr, "/debug/pprof/goroutine");
        assert_eq!(r.status, 200);
        dumped.extend(stacks(&r.profile()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let steps: u64 = stressing
        .into_iter()
        .map(|t| t.join().expect("a stressing thread failed"))
        .sum();
    assert!(steps > 1000, "{steps} steps");
    let sampled = profile.join().expect("profile");
    let stressed: Vec<&Stack> = sampled
        .iter()
        .chain(&dumped)
        .filter(|s| {
            s.label("thread")
                .is_some_and(|t| t.starts_with("label-stress-"))
        })
        .collect();
    let whole = |s: &Stack| {
        s.labels.iter().all(|(k, v)| match k.as_str() {
            "span" => v == "stress",
            "n" => v.len() == 2 && v.starts_with('s'),
            "w" => v.len() == 2 && v.starts_with('w'),
            "job" => v.len() == 2 && v.starts_with('j'),
            _ => true,
        })
    };
    assert!(
        stressed.iter().all(|s| whole(s)),
        "{:#?}",
        stressed.iter().filter(|s| !whole(s)).collect::<Vec<_>>()
    );
    let labeled = stressed
        .iter()
        .filter(|s| s.label("span").is_some() || s.label("job").is_some())
        .count();
    assert!(
        labeled > 0,
        "no sample of the stressing threads carried their labels: {stressed:#?}"
    );
}

/// The labels in force in the code serving a request, as text: `key=value`
/// per label, by key, joined with `,`.
fn labels_in_force() -> String {
    pprof_core::labels::current()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[inline(never)]
fn burn_in_an_unrouted_request(ms: u64) -> u64 {
    burn_cpu_here(Duration::from_millis(ms))
}

/// The answer of a request no route matched: burn `/burn/{ms}`'s ms, then
/// the labels in force.
fn unrouted(path: &str) -> String {
    if let Some(ms) = path.strip_prefix("/burn/").and_then(|ms| ms.parse().ok()) {
        burn_in_an_unrouted_request(ms);
    }
    labels_in_force()
}

/// axum with `LabelRequests`: `/users/{id}`, and requests no route matched
/// go to a fallback handler (`fallback_service` when `as_service`: what
/// `ServeDir` is mounted with).
fn start_axum_with_a_fallback(as_service: bool) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/users/{id}",
        axum::routing::get(|| async { labels_in_force() }),
    );
    let app = if as_service {
        app.fallback_service(tower::service_fn(
            |request: axum::extract::Request| async move {
                Ok::<_, std::convert::Infallible>(unrouted(request.uri().path()))
            },
        ))
    } else {
        app.fallback(|uri: http::Uri| async move { unrouted(uri.path()) })
    };
    let app = app
        .merge(pprof_axum::routes())
        .layer(pprof_axum::LabelRequests::new());
    pprof_tests::serve_on("127.0.0.1:0", move |listener| async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// actix-web with `LabelRequests`: `/users/{id}`, and requests no pattern
/// matched go to `Files` mounted at the root (whose pattern is `""`) when
/// `files` holds a directory, else to the app's `default_service`. Every
/// answer carries the labels in force while it was made in `x-labels`.
fn start_actix_with_a_default(files: Option<std::path::PathBuf>) -> std::net::SocketAddr {
    use actix_web::{App, HttpResponse, web};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(move || {
                let app = App::new()
                    .wrap_fn(|request, service| {
                        use actix_web::dev::Service;
                        let response = service.call(request);
                        async move {
                            // Polled inside LabelRequests' future.
                            let labels = labels_in_force();
                            let mut response = response.await?;
                            response.headers_mut().insert(
                                actix_web::http::header::HeaderName::from_static("x-labels"),
                                actix_web::http::header::HeaderValue::from_str(&labels)
                                    .expect("header"),
                            );
                            Ok(response)
                        }
                    })
                    .wrap(pprof_actix::LabelRequests)
                    .route("/users/{id}", web::get().to(|| async { labels_in_force() }))
                    .service(pprof_actix::scope("/debug"));
                let unrouted_answer = |request: actix_web::HttpRequest| async move {
                    HttpResponse::Ok().body(unrouted(request.path()))
                };
                match &files {
                    Some(dir) => app.service(
                        actix_files::Files::new("/", dir).default_handler(web::to(unrouted_answer)),
                    ),
                    None => app.default_service(web::to(unrouted_answer)),
                }
            })
            .workers(1)
            .listen(listener)
            .expect("listen")
            .run();
            let _ = server.await;
        });
    });
    addr
}

/// OpenTelemetry's rule: a request no route template matched carries no
/// `http.route` (not an empty one, which profile.proto cannot tell from a
/// number, nor its raw path, one label set per path); its method it does.
#[test]
fn requests_no_route_matched_carry_no_http_route_on_axum_and_actix() {
    let _cpu = cpu_profiler_lock();
    let dir = std::env::temp_dir().join(format!("pprof-tests-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("page.html"), "<p>static</p>\n").expect("file");
    let servers = [
        ("axum fallback", start_axum_with_a_fallback(false)),
        ("axum fallback_service", start_axum_with_a_fallback(true)),
        ("actix default_service", start_actix_with_a_default(None)),
        (
            "actix Files at /",
            start_actix_with_a_default(Some(dir.clone())),
        ),
    ];
    for (what, addr) in servers {
        let routed = get(addr, "/users/7");
        assert_eq!(routed.status, 200, "{what}");
        let labels = routed
            .header("x-labels")
            .map_or_else(|| routed.text(), str::to_owned);
        assert_eq!(
            labels, "http.request.method=GET,http.route=/users/{id}",
            "{what}: a matched route carries its template"
        );
        for path in ["/no/such/page", "/page.html"] {
            let r = get(addr, path);
            let labels = r.header("x-labels").map_or_else(|| r.text(), str::to_owned);
            assert_eq!(labels, "http.request.method=GET", "{what} {path}: {r:?}");
        }
    }
    // What a profile then holds: the unrouted requests' CPU, labeled with
    // the method alone.
    let (axum, actix) = (servers[0].1, servers[2].1);
    let profile = std::thread::spawn(move || cpu_profile(axum, 2));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(axum, "/burn/600").status, 200);
    assert_eq!(get(actix, "/burn/600").status, 200);
    let (_, body) = profile.join().expect("profile");
    let p = pprof_tests::decode_profile(&body);
    let burning: Vec<_> = p
        .sample
        .iter()
        .zip(stacks(&p))
        .filter(|(_, s)| s.has("burn_in_an_unrouted_request"))
        .collect();
    assert!(
        !burning.is_empty(),
        "the unrouted requests were not sampled"
    );
    for (sample, named) in burning {
        assert_eq!(named.label("http.request.method"), Some("GET"), "{named:?}");
        let keys: Vec<&str> = sample
            .label
            .iter()
            .map(|l| pprof_tests::string(&p, l.key))
            .collect();
        assert!(!keys.contains(&"http.route"), "{keys:?}: {named:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
