//! The pages in a real browser (headless Chromium through chromedriver) on
//! the practice program: every profile's flame graph, top and diff page
//! loads; each planted function is the
//! widest frame of its flame graph outside its own callers and heads its
//! top table; clicking a frame zooms; search highlights and says the share;
//! hovering shows function, file:line and value; diffs colour growth;
//! names that are markup stay text; the pages' scripts run under their
//! nonce policy while a script injected into them does not; a form
//! another site's page submits is refused, and a page reached by a
//! loopback name under `loopback_only` works; a screenshot of each page
//! lands in `target/tmp/ui-screenshots/`.
//!
//! Needs `chromium` and `chromium-driver` (Debian): under `CI=true` these
//! tests fail without them; elsewhere they are skipped with a loud message.
//! One test function, so one browser and one practice zoo serve them all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pprof_core::Config;
use pprof_tests::browser::Browser;
use pprof_tests::{Adapter, cpu_profiler_lock, get, practice};
use serde_json::json;

pprof_core::jemalloc_heap_profiling!();

/// Each profile's page and the function the practice zoo plants in it.
const PLANTED: &[(&str, &str, &str)] = &[
    ("profile", "&seconds=4", "practice::Tiger::eat"),
    ("heap", "", "practice::Mouse::steal"),
    ("allocs", "", "practice::Dog::run"),
    ("goroutine", "", "practice::Wolf::drink::{{closure}}"),
    ("threadcreate", "", "practice::Wolf::drink::{{closure}}"),
    ("mutex", "", "practice::Wolf::howl"),
    ("block", "", "practice::Cat::pee"),
];

/// Long enough for a CPU profile or a delta plus drawing, on a busy machine.
const PAGE_WAIT: Duration = Duration::from_secs(120);

fn shots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
}

fn url(addr: SocketAddr, page: &str) -> String {
    format!("http://{addr}/debug/pprof/{page}")
}

/// Wait for a page that is done: a flame graph drawn, a table, a chooser,
/// or an error page (which fails the test with its message).
fn wait_done(browser: &Browser, what: &str) {
    let state = browser.wait_for(
        "var e = document.getElementById('error');
         if (e) return 'error: ' + e.textContent;
         if (document.getElementById('frames')) return window.UI_READY ? 'graph' : '';
         if (document.getElementById('top')) return 'table';
         if (document.querySelector('.empty')) return 'empty';
         if (document.querySelector('form.choose') && !document.getElementById('run')) return 'chooser';
         if (document.title === '/debug/pprof/') return 'index';
         return '';",
        PAGE_WAIT,
    );
    assert!(
        !state.as_str().unwrap_or_default().starts_with("error"),
        "{what}: {state}"
    );
}

/// Every frame of the flame graph: name, position and width in samples.
#[derive(Debug, Clone)]
struct Frame {
    name: String,
    x: f64,
    w: f64,
    y: f64,
    width: String,
    fill: String,
}

fn frames(browser: &Browser) -> Vec<Frame> {
    let v = browser.run(
        "return Array.prototype.map.call(document.querySelectorAll('#frames > g'), function(g) {
           var r = g.querySelector('rect');
           return [g.querySelector('title').textContent.replace(/ \\([^(]*\\)$/, ''),
                   +r.getAttribute('fg:x'), +r.getAttribute('fg:w'), +r.getAttribute('y'),
                   r.getAttribute('width'), r.getAttribute('fill')];
         });",
        &[],
    );
    v.as_array()
        .map(|all| {
            all.iter()
                .map(|f| Frame {
                    name: f[0].as_str().unwrap_or_default().to_owned(),
                    x: f[1].as_f64().unwrap_or_default(),
                    w: f[2].as_f64().unwrap_or_default(),
                    y: f[3].as_f64().unwrap_or_default(),
                    width: f[4].as_str().unwrap_or_default().to_owned(),
                    fill: f[5].as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The planted function's widest frame, after checking that every frame
/// wider than it is one of its callers (nearer the root, spanning it): it
/// is the widest frame under its root.
fn assert_widest(frames: &[Frame], planted: &str, what: &str) -> Frame {
    let mine = frames
        .iter()
        .filter(|f| f.name == planted)
        .max_by(|a, b| a.w.total_cmp(&b.w))
        .unwrap_or_else(|| {
            let names: Vec<&str> = frames.iter().map(|f| f.name.as_str()).collect();
            panic!("{what}: no frame {planted} in {names:?}")
        })
        .clone();
    // Depth is the distance from the root frame's row (inferno's `all`),
    // whichever way the graph grows.
    let root = frames.iter().find(|f| f.name == "all").map_or(0.0, |f| f.y);
    let depth = |f: &Frame| (f.y - root).abs();
    for f in frames {
        let caller = depth(f) < depth(&mine) && f.x <= mine.x && f.x + f.w >= mine.x + mine.w;
        assert!(
            f.w <= mine.w || caller,
            "{what}: {} ({}) is wider than {planted} ({}) and not its caller",
            f.name,
            f.w,
            mine.w
        );
    }
    mine
}

/// Mark the planted frame so WebDriver can find it by CSS.
fn mark(browser: &Browser, planted: &Frame) {
    browser.run(
        "document.querySelectorAll('[data-test]').forEach(function(e) { e.removeAttribute('data-test'); });
         var gs = document.querySelectorAll('#frames > g');
         for (var i = 0; i < gs.length; i++) {
           var r = gs[i].querySelector('rect');
           if (+r.getAttribute('fg:x') === arguments[0] && +r.getAttribute('y') === arguments[1]) {
             gs[i].setAttribute('data-test', 'planted');
           }
         }",
        &[json!(planted.x), json!(planted.y)],
    );
}

#[test]
fn the_pages_in_a_real_browser() {
    let addr = practice();
    let Some(browser) = Browser::start() else {
        return;
    };
    let dir = shots();
    let started = std::time::Instant::now();

    // The index links every profile to its pages.
    browser.open(&url(addr, ""));
    wait_done(&browser, "index");
    let links = browser.run(
        "return document.querySelectorAll('a[href^=\"ui/flamegraph?profile=\"]').length",
        &[],
    );
    assert_eq!(links, json!(7), "a flame graph link per profile");
    browser.screenshot(&dir, "index");
    only_its_own_scripts_run(&browser, addr, "index");

    let _cpu = cpu_profiler_lock();
    for (name, extra, planted) in PLANTED {
        let what = format!("{name} flame graph");
        browser.open(&url(addr, &format!("ui/flamegraph?profile={name}{extra}")));
        if *name == "profile" {
            working_page_counts_down(&browser);
        }
        wait_done(&browser, &what);
        only_its_own_scripts_run(&browser, addr, &what);
        let all = frames(&browser);
        let mine = assert_widest(&all, planted, &what);
        browser.screenshot(&dir, &format!("flamegraph-{name}"));

        // Hover: function, file:line, value and share.
        mark(&browser, &mine);
        let element = browser.find("[data-test=planted] rect");
        browser.hover(&element);
        let card = browser.wait_for(
            "var c = document.getElementById('card'); return !c.hidden && c.innerText;",
            Duration::from_secs(10),
        );
        let card = card.as_str().unwrap_or_default();
        assert!(card.contains(planted), "{what}: card {card}");
        assert!(
            card.contains("examples/practice/src/lib.rs:"),
            "{what}: card {card}"
        );
        assert!(card.contains("% of "), "{what}: card {card}");

        // Click: a frame zooms to the full width. (The planted one, unless
        // it is the full width already, as in a profile of one stack.)
        let full = |f: &Frame| f.width.starts_with("100");
        if let Some(target) = std::iter::once(&mine)
            .chain(all.iter())
            .find(|f| !full(f))
            .cloned()
        {
            mark(&browser, &target);
            browser.click(&browser.find("[data-test=planted] rect"));
            let after = frames(&browser)
                .into_iter()
                .find(|f| f.x == target.x && f.y == target.y)
                .map(|f| f.width)
                .unwrap_or_default();
            assert_ne!(
                after, target.width,
                "{what}: width unchanged after the click"
            );
            assert!(after.starts_with("100"), "{what}: zoomed to {after}");
            if *name == "heap" {
                browser.screenshot(&dir, "flamegraph-heap-zoomed");
            }
            browser.run("unzoom();", &[]);
        }

        // Search: matches highlighted, their share said.
        let short = planted.trim_start_matches("practice::");
        let term = browser.find("#term");
        browser.type_into(&term, short.split("::{{").next().unwrap_or(short));
        browser.click(&browser.find("#find button"));
        let share = browser.wait_for(
            "return document.getElementById('share').textContent",
            Duration::from_secs(10),
        );
        assert!(
            share.as_str().unwrap_or_default().contains("matched"),
            "{what}: {share}"
        );
        // inferno keeps a highlighted frame's own colour in `fg:orig_fill`.
        let lit = browser.run(
            "return Array.prototype.filter.call(document.querySelectorAll('#frames rect'),
               function(r) { return r.getAttribute('fg:orig_fill') !== null; }).length",
            &[],
        );
        assert!(
            lit.as_u64().unwrap_or(0) >= 1,
            "{what}: nothing highlighted"
        );
        if *name == "profile" {
            browser.screenshot(&dir, "flamegraph-profile-search");
        }

        // The top table: the planted function first by flat, sortable.
        let what = format!("{name} top");
        browser.open(&url(addr, &format!("ui/top?profile={name}{extra}")));
        wait_done(&browser, &what);
        let first = |browser: &Browser| {
            browser.run(
                "return document.querySelector('#top tbody tr td:nth-child(6)').textContent",
                &[],
            )
        };
        assert_eq!(first(&browser), json!(planted), "{what}");
        browser.screenshot(&dir, &format!("top-{name}"));
        browser.click(&browser.find("#top th:nth-child(4)"));
        let cum_sorted = browser.run(
            "var v = Array.prototype.map.call(document.querySelectorAll('#top tbody td:nth-child(4)'),
                       function(td) { return Math.abs(+td.dataset.v); });
             for (var i = 1; i < v.length; i++) if (v[i] > v[i - 1]) return false;
             return v.length > 1;",
            &[],
        );
        assert_eq!(
            cum_sorted,
            json!(true),
            "{what}: sorted by cum after the click"
        );
    }

    diffs(&browser, addr, &dir);
    markup_stays_text(&browser, addr);
    another_sites_form_is_refused(&browser, addr);
    loopback_names_under_loopback_only(&browser, &dir);
    render_time(&browser, addr, &dir);
    eprintln!(
        "browser: every page checked in {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
}

/// The page's policy (its response's `Content-Security-Policy`, asked
/// again here) runs scripts and styles by nonce, not `'unsafe-inline'`,
/// and frames it nowhere; a script put into the page without the nonce
/// (as markup that slipped past escaping would be) does not run. (The
/// pages' own scripts ran: the caller waited for what they draw.)
fn only_its_own_scripts_run(browser: &Browser, addr: SocketAddr, what: &str) {
    let path = browser.run("return location.pathname + location.search", &[]);
    let again = get(addr, path.as_str().unwrap_or_default());
    let policy = again.header("content-security-policy").unwrap_or_default();
    assert!(
        policy.contains("'nonce-") && !policy.contains("unsafe-inline"),
        "{what}: {policy}"
    );
    assert!(
        policy.contains("frame-ancestors 'none'"),
        "{what}: {policy}"
    );
    let injected = browser.run(
        "var s = document.createElement('script');
         s.textContent = 'window.INJECTED = 1;';
         document.body.appendChild(s);
         return window.INJECTED === 1;",
        &[],
    );
    assert_eq!(injected, json!(false), "{what}: an injected script ran");
}

/// A page of another origin (here a `data:` page, as a malicious site
/// would be) submits a form that would hold the CPU profiler for 600 s:
/// Chromium marks it cross-site and the answer is the refusal.
fn another_sites_form_is_refused(browser: &Browser, addr: SocketAddr) {
    let target = url(addr, "ui/diff?profile=profile&seconds=300");
    browser.open(&format!(
        "data:text/html,<form method=post enctype=text/plain action='{target}'><input name=seconds value=300></form>"
    ));
    browser.wait_for(
        "return document.forms.length === 1",
        Duration::from_secs(30),
    );
    browser.run("document.forms[0].submit();", &[]);
    let text = browser.wait_for(
        "return location.protocol === 'http:' && document.body && document.body.innerText",
        Duration::from_secs(30),
    );
    assert!(
        text.as_str()
            .unwrap_or_default()
            .contains("refuse requests that a page of another site makes"),
        "{text}"
    );
    // Nothing started: the index counts no CPU profile running.
    let index = get(addr, "/debug/pprof/").text();
    assert!(
        index.contains("<tr><td>0</td><td><a href='profile?debug=1'>"),
        "{index}"
    );
}

/// Under `loopback_only`, the browser reaches the pages by 127.0.0.1 and
/// by `localhost` (it sends those names as `Host`), and a page's own
/// upload form still works.
fn loopback_names_under_loopback_only(browser: &Browser, dir: &Path) {
    let addr = Adapter::Axum.start_with(Config::default().loopback_only(true));
    for host in ["127.0.0.1", "localhost"] {
        let page = format!(
            "http://{host}:{}/debug/pprof/ui/flamegraph?profile=goroutine",
            addr.port()
        );
        browser.open(&page);
        wait_done(browser, &format!("loopback_only, {host}"));
        only_its_own_scripts_run(browser, addr, host);
    }
    let file = save(
        &pprof_tests::hostile::named_stacks(&[&["app::leaf", "app::main"][..]], |_| 3),
        "loopback-only.pb.gz",
    );
    submit_saved(browser, &file);
    let heading = browser.run("return document.querySelector('h1').textContent", &[]);
    assert!(
        heading
            .as_str()
            .unwrap_or_default()
            .contains("saved profile"),
        "{heading}"
    );
    browser.screenshot(dir, "loopback-only-saved-profile");
}

/// The CPU page before its profile is done: it says so and counts down.
fn working_page_counts_down(browser: &Browser) {
    let remaining = |browser: &Browser| {
        browser
            .run(
                "var r = document.getElementById('remaining'); return r ? r.textContent : null;",
                &[],
            )
            .as_str()
            .and_then(|t| t.split(' ').next().and_then(|n| n.parse::<u64>().ok()))
    };
    let first = browser.wait_for(
        "var r = document.getElementById('remaining'); return r && r.textContent;",
        Duration::from_secs(30),
    );
    assert!(
        first.as_str().unwrap_or_default().ends_with("s remain"),
        "{first}"
    );
    let Some(before) = remaining(browser) else {
        return;
    };
    browser.screenshot(&shots(), "flamegraph-profile-working");
    std::thread::sleep(Duration::from_millis(1500));
    // The result may already have replaced the page on a quick machine.
    if let Some(later) = remaining(browser) {
        assert!(
            later < before,
            "the countdown went from {before} to {later}"
        );
    }
}

/// The diff page: over time (a delta), and against an uploaded baseline.
fn diffs(browser: &Browser, addr: SocketAddr, dir: &Path) {
    // Allocations only grow: the dog's frame is red.
    browser.open(&url(addr, "ui/diff?profile=allocs&seconds=2"));
    wait_done(browser, "allocs delta diff");
    let all = frames(browser);
    let dog = assert_widest(&all, "practice::Dog::run", "allocs delta diff");
    let rgb: Vec<u32> = dog
        .fill
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    assert!(
        rgb.len() == 3 && rgb[0] > rgb[2],
        "grown is red: {}",
        dog.fill
    );
    browser.screenshot(dir, "diff-allocs");

    // A baseline saved earlier, uploaded through the page's form.
    let baseline = get(addr, "/debug/pprof/allocs");
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("allocs-baseline.pb.gz");
    std::fs::write(&file, &baseline.body).expect("save baseline");
    std::thread::sleep(Duration::from_secs(1));
    browser.open(&url(addr, "ui/diff?profile=allocs"));
    wait_done(browser, "diff chooser");
    browser.screenshot(dir, "diff-allocs-chooser");
    browser.type_into(
        &browser.find("input[name=baseline]"),
        &file.display().to_string(),
    );
    browser.click(&browser.find("#upload button"));
    browser.wait_for(
        "return document.getElementById('frames') && window.UI_READY",
        PAGE_WAIT,
    );
    let heading = browser.run("return document.querySelector('h1').textContent", &[]);
    assert!(
        heading
            .as_str()
            .unwrap_or_default()
            .contains("against the uploaded baseline"),
        "{heading}"
    );
    assert_widest(
        &frames(browser),
        "practice::Dog::run",
        "diff against a baseline",
    );
    browser.screenshot(dir, "diff-baseline");
}

/// A saved profile whose names are markup, opened in the page: the names
/// show as text and no element comes of them.
fn markup_stays_text(browser: &Browser, addr: SocketAddr) {
    let names = ["<img src=x onerror=alert(1)>", "Holder<Vec<u8>>::hold"];
    let file = save(
        &pprof_tests::hostile::named_stacks(&[&names[..]], |_| 1),
        "markup.pb.gz",
    );
    open_saved(browser, addr, "goroutine", &file);
    let seen = browser.run(
        "return [document.querySelectorAll('#graph img, main img').length,
                 Array.prototype.map.call(document.querySelectorAll('#frames title'),
                   function(t) { return t.textContent; }).join('\\n')];",
        &[],
    );
    assert_eq!(seen[0], json!(0), "no element from a name");
    // Spaces in names are drawn as no-break spaces (a folded stack's
    // counts are space-separated): they read the same.
    let titles = seen[1].as_str().unwrap_or_default().replace('\u{a0}', " ");
    for name in names {
        assert!(titles.contains(name), "{name} shown as text: {titles}");
    }
}

/// Render time of a flame graph of 10,000 distinct stacks, from the
/// browser's own clock (printed, not asserted: this machine's clock is
/// shared and noisy).
fn render_time(browser: &Browser, addr: SocketAddr, dir: &Path) {
    let mut stacks: Vec<Vec<String>> = Vec::with_capacity(10_000);
    for i in 0..10_000u32 {
        let mut stack = vec![
            format!("app::handler_{}::leaf", i % 7),
            "core::ptr::drop_in_place<alloc::vec::Vec<u8>>".to_owned(),
            "alloc::vec::Vec<T>::push".to_owned(),
        ];
        for level in 0..4 {
            let digit = i / 10u32.pow(level) % 10;
            stack.push(format!("app::level{level}::work{digit}<T>"));
        }
        stack.extend([
            "app::main".to_owned(),
            "std::rt::lang_start".to_owned(),
            "main".to_owned(),
        ]);
        stacks.push(stack);
    }
    let refs: Vec<Vec<&str>> = stacks
        .iter()
        .map(|s| s.iter().map(String::as_str).collect())
        .collect();
    let slices: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
    // Weights 1 to 100, spread over the stacks: some stacks are wide, most
    // are a fraction of a pixel (as in a real profile).
    let weight = |i: usize| 1 + (i as i64 * 7919) % 100;
    let file = save(
        &pprof_tests::hostile::named_stacks(&slices, weight),
        "ten-thousand-stacks.pb.gz",
    );
    for run in 1..=3 {
        open_saved(browser, addr, "goroutine", &file);
        let timing = browser.run(
            "var n = performance.getEntriesByType('navigation')[0];
             return [n.responseStart, n.responseEnd, n.domContentLoadedEventEnd, window.UI_READY,
                     document.querySelectorAll('#frames > g').length,
                     document.documentElement.outerHTML.length];",
            &[],
        );
        let ms = |i: usize| timing[i].as_f64().unwrap_or_default();
        let drawn = timing[4].as_u64().unwrap_or_default();
        assert!(drawn > 5_000, "the widest frames drawn: {drawn}");
        eprintln!(
            "browser: 10,000 distinct stacks, run {run}: {drawn} frames, {:.1} MB of HTML; \
             upload sent to first byte (server reads and draws) {:.0} ms; first to last byte \
             {:.0} ms; last byte to interactive (parsed, inferno's init \
             and layout done, painted) {:.0} ms, of which parsing to DOMContentLoaded {:.0} ms",
            timing[5].as_f64().unwrap_or_default() / 1e6,
            ms(0),
            ms(1) - ms(0),
            ms(3) - ms(1),
            ms(2) - ms(1)
        );
    }
    browser.screenshot(dir, "flamegraph-10000-stacks");
}

/// Open `file` as a saved profile through the flame graph page's form.
fn open_saved(browser: &Browser, addr: SocketAddr, name: &str, file: &Path) {
    browser.open(&url(addr, &format!("ui/flamegraph?profile={name}")));
    wait_done(browser, "before opening a saved profile");
    submit_saved(browser, file);
}

/// Send `file` through the open page's "Open a saved profile" form and
/// wait for its flame graph.
fn submit_saved(browser: &Browser, file: &Path) {
    browser.run("document.querySelector('details.open').open = true;", &[]);
    browser.type_into(
        &browser.find("details.open input[type=file]"),
        &file.display().to_string(),
    );
    browser.run(
        "window.UI_READY = 0; document.querySelector('details.open form').submit();",
        &[],
    );
    browser.wait_for(
        "return document.getElementById('frames') && window.UI_READY",
        PAGE_WAIT,
    );
}

fn save(bytes: &[u8], name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, bytes).expect("save profile");
    path
}
