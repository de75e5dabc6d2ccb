//! A real browser for the page tests: Debian's headless Chromium driven
//! through chromedriver's W3C WebDriver protocol (plain JSON over HTTP,
//! spoken over a plain socket: the handful of commands the
//! tests use need no WebDriver library and its dependency tree).
//!
//! [`Browser::start`] returns `None` (after saying so loudly) when
//! `chromium` or `chromedriver` is missing, and fails the test under
//! `CI=true`, as [`go_tool_pprof`](crate::go_tool_pprof) does for Go.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The key WebDriver wraps element references in.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Flags headless Chromium needs on a closed network: no sandbox as root,
/// no GPU, and none of its own connections to the outside.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
];

/// One chromedriver process and one browser session; both end on drop.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    /// The browser's own process, ended on drop if it outlives the session.
    browser_pid: Option<u64>,
    profile_dir: PathBuf,
}

/// An element of the page, as WebDriver names it.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Start chromedriver and a headless Chromium session, or `None` when
    /// they are not installed (outside CI).
    pub fn start() -> Option<Browser> {
        let installed = |bin: &str| {
            Command::new(bin)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !installed("chromedriver") || !Path::new(CHROMIUM).exists() {
            let message = "`chromium` and `chromedriver` are not installed: the browser checks \
                           of the pages need them (apt-get install -y chromium chromium-driver)";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{message}; CI=true requires them"
            );
            eprintln!("\n!!! SKIPPED: {message}\n");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile_dir = std::env::temp_dir().join(format!(
            "pprof-tests-chromium-{}-{port}",
            std::process::id()
        ));
        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile_dir.display()));
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            browser_pid: None,
            profile_dir,
        };
        let answer = browser.call(
            "POST",
            "/session",
            &json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                // Navigation commands return at once: the tests wait for what
                // they look for (a page may post itself and answer later).
                "pageLoadStrategy": "none",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                "timeouts": {"pageLoad": 300_000, "script": 120_000},
            }}}),
        );
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        browser.browser_pid = answer["capabilities"]["goog:processID"].as_u64();
        Some(browser)
    }

    /// One WebDriver command; its `value`. A WebDriver error panics with
    /// its message.
    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let (status, value) = self.send(method, path, body);
        if status != 200 {
            panic!("{method} {path}: {status} {}", value["value"]);
        }
        value["value"].clone()
    }

    /// One exchange with chromedriver: its status and JSON answer. (It
    /// keeps connections open whatever the request says, so the answer is
    /// read by its `Content-Length`.)
    fn send(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let body = if method == "GET" || method == "DELETE" {
            String::new()
        } else {
            body.to_string()
        };
        let mut stream = TcpStream::connect(self.addr).expect("connect to chromedriver");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(300)));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body.as_bytes()))
            .expect("write to chromedriver");
        let mut raw = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        let (split, length) = loop {
            let n = read(&mut stream, &mut chunk);
            assert!(
                n > 0,
                "chromedriver closed without answering {method} {path}"
            );
            raw.extend_from_slice(&chunk[..n]);
            if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (split + 4, length);
            }
        };
        while raw.len() < split + length {
            let n = read(&mut stream, &mut chunk);
            assert!(
                n > 0,
                "chromedriver cut its answer to {method} {path} short"
            );
            raw.extend_from_slice(&chunk[..n]);
        }
        let status = String::from_utf8_lossy(&raw[..split])
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let value = serde_json::from_slice(&raw[split..split + length])
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (status, value)
    }

    fn at(&self, command: &str) -> String {
        format!("/session/{}/{command}", self.session)
    }

    /// Load `url` (returns once its document has loaded).
    pub fn open(&self, url: &str) {
        self.call("POST", &self.at("url"), &json!({ "url": url }));
    }

    /// Run `script` (a function body; `arguments` are `args`) in the page.
    pub fn run(&self, script: &str, args: &[Value]) -> Value {
        self.call(
            "POST",
            &self.at("execute/sync"),
            &json!({"script": script, "args": args}),
        )
    }

    /// Like [`Browser::run`], but `None` while the page is between
    /// documents (a navigation in flight can make a script fail).
    fn try_run(&self, script: &str) -> Option<Value> {
        let body = json!({"script": script, "args": []});
        let (status, value) = self.send("POST", &self.at("execute/sync"), &body);
        (status == 200).then(|| value["value"].clone())
    }

    /// Wait until `script` returns something truthy (polling), up to `limit`.
    pub fn wait_for(&self, script: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            if let Some(v) = self.try_run(script)
                && !(v.is_null() || v == json!(false) || v == json!(""))
            {
                return v;
            }
            assert!(
                started.elapsed() < limit,
                "waited {limit:?} for {script}; page: {}",
                self.try_run("return document.body && document.body.innerText.slice(0, 400)")
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The first element matching a CSS selector.
    pub fn find(&self, css: &str) -> Element {
        let v = self.call(
            "POST",
            &self.at("element"),
            &json!({"using": "css selector", "value": css}),
        );
        Element(
            v[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("no element {css}: {v}"))
                .to_owned(),
        )
    }

    /// Click an element where a user would (its centre).
    pub fn click(&self, element: &Element) {
        self.call(
            "POST",
            &self.at(&format!("element/{}/click", element.0)),
            &json!({}),
        );
    }

    /// Type into an element (for a file input: the file's path).
    pub fn type_into(&self, element: &Element, text: &str) {
        self.call(
            "POST",
            &self.at(&format!("element/{}/value", element.0)),
            &json!({ "text": text }),
        );
    }

    /// Move the mouse over an element's centre.
    pub fn hover(&self, element: &Element) {
        self.call(
            "POST",
            &self.at("actions"),
            &json!({"actions": [{
                "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                "actions": [{"type": "pointerMove", "duration": 0, "x": 0, "y": 0,
                             "origin": {ELEMENT: element.0}}],
            }]}),
        );
    }

    /// Save a PNG of the window under `dir`; its path.
    pub fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let shot = self.call("GET", &self.at("screenshot"), &Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap_or_default())
            .expect("a screenshot is base64");
        std::fs::create_dir_all(dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.send("DELETE", &path, &Value::Null)
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if let Some(pid) = self.browser_pid {
            // Gone already after a clean session end; this only catches a leftover.
            let _ = Command::new("kill")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.profile_dir);
    }
}

/// One read, retried when a signal interrupts it (the test process is
/// itself profiled: SIGPROF, and the thread dump's signal, arrive anytime).
fn read(stream: &mut TcpStream, buf: &mut [u8]) -> usize {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other.expect("read from chromedriver"),
        }
    }
}

/// Debian's Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";
