//! Helpers for the workspace tests: start a server per adapter on loopback,
//! talk plain HTTP/1.1 to it (so a test can also hang up mid-request), decode
//! profiles, and run `go tool pprof`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use prost::Message;

pub use pprof_core::proto::Profile;

pub mod browser;
pub mod hostile;

/// The practice zoo, shrunk to test sizes, and its server, started once per
/// test binary; its address. (The binary must install jemalloc with
/// `pprof_core::jemalloc_heap_profiling!()` for the heap profiles.)
pub fn practice() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let sizes = practice::Sizes {
            tick: Duration::from_millis(20),
            eat: Duration::from_millis(60),
            steal_bytes: 1 << 20,
            steal_limit: 96 << 20,
            run_bytes: 4 << 20,
            drink: Duration::from_millis(300),
            howl: Duration::from_millis(100),
        };
        practice::spawn_zoo(sizes).expect("zoo");
        let addr = serve_on_own_runtime(|listener| async move {
            let _ = practice::serve(listener).await;
        });
        // Let the mouse hoard its fill and the dog run a few laps.
        std::thread::sleep(Duration::from_secs(3));
        addr
    })
}

/// A framework the conformance suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// `pprof_axum::routes_with(config)` merged into an axum `Router`.
    Axum,
    /// `pprof_actix::scope_with(mount, config)` on an actix-web `App`.
    Actix,
    /// `pprof_warp::routes_with(config)` after an app filter in an `or` chain.
    Warp,
    /// `pprof_core::PprofLayer` around a tower service, served by plain hyper 1.
    Tower,
}

impl Adapter {
    /// Every adapter; adding a framework means adding it here.
    pub const ALL: &'static [Adapter] =
        &[Adapter::Axum, Adapter::Actix, Adapter::Warp, Adapter::Tower];

    /// Start a service with the pprof routes (under `prefix`, which must end
    /// in `/pprof`; `/debug/pprof` when `None`) next to an app route
    /// `/hello`, on 127.0.0.1, on its own runtime.
    pub fn start(self, prefix: Option<&str>) -> SocketAddr {
        let prefix = prefix.unwrap_or("/debug/pprof");
        self.start_with(pprof_core::Config::default().prefix(prefix))
    }

    /// Like [`Adapter::start`], with the given settings (the prefix is the
    /// config's own). Each server tells the routes its peers' addresses,
    /// as the adapter's docs say to (axum: `ConnectInfo`; hyper: per
    /// connection `PeerAddr`).
    pub fn start_with(self, config: pprof_core::Config) -> SocketAddr {
        self.start_on("127.0.0.1:0", config)
    }

    /// Like [`Adapter::start_with`], listening on `bind` (`0.0.0.0:0` lets
    /// a test come in through a non-loopback address of this host).
    pub fn start_on(self, bind: &str, config: pprof_core::Config) -> SocketAddr {
        let prefix = config.get_prefix().to_owned();
        match self {
            Adapter::Axum => {
                let app = axum::Router::new()
                    .route("/hello", axum::routing::get(|| async { "hello\n" }))
                    .merge(pprof_axum::routes_with(config));
                serve_on(bind, move |listener| async move {
                    let app = app.into_make_service_with_connect_info::<SocketAddr>();
                    let _ = axum::serve(listener, app).await;
                })
            }
            Adapter::Actix => start_actix(bind, &prefix, config),
            Adapter::Warp => {
                use warp::Filter;
                let hello = warp::path("hello").and(warp::path::end()).map(|| "hello\n");
                let routes = hello.or(pprof_warp::routes_with(config));
                serve_on(bind, move |listener| async move {
                    warp::serve(routes).incoming(listener).run().await;
                })
            }
            Adapter::Tower => serve_on(bind, move |listener| serve_tower(listener, config)),
        }
    }
}

/// The route template [`Adapter::start_labeled`]'s burning route answers
/// on, as axum and actix-web name it.
pub const BURN_ROUTE: &str = "/burn/{ms}";

impl Adapter {
    /// A service with the pprof routes and `/burn/{ms}` (burns `ms` of CPU
    /// in [`burn_in_a_labeled_request`]), every request labeled with the
    /// framework's one line (`LabelRequests`), on 127.0.0.1.
    pub fn start_labeled(self) -> SocketAddr {
        let config = pprof_core::Config::default();
        match self {
            Adapter::Axum => {
                let app = axum::Router::new()
                    .route(
                        BURN_ROUTE,
                        axum::routing::get(
                            |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                                format!("{}\n", burn_in_a_labeled_request(ms))
                            },
                        ),
                    )
                    .merge(pprof_axum::routes_with(config))
                    .layer(pprof_axum::LabelRequests::new());
                serve_on("127.0.0.1:0", move |listener| async move {
                    let _ = axum::serve(listener, app).await;
                })
            }
            Adapter::Actix => {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let addr = listener.local_addr().expect("local addr");
                std::thread::spawn(move || {
                    actix_web::rt::System::new().block_on(async move {
                        let server = actix_web::HttpServer::new(move || {
                            actix_web::App::new()
                                .wrap(pprof_actix::LabelRequests)
                                .route(
                                    BURN_ROUTE,
                                    actix_web::web::get().to(
                                        |ms: actix_web::web::Path<u64>| async move {
                                            format!("{}\n", burn_in_a_labeled_request(*ms))
                                        },
                                    ),
                                )
                                .service(pprof_actix::scope_with("/debug", config.clone()))
                        })
                        .workers(2)
                        .on_connect(pprof_actix::on_connect)
                        .listen(listener)
                        .expect("listen")
                        .run();
                        let _ = server.await;
                    });
                });
                addr
            }
            Adapter::Warp => {
                use warp::Filter;
                let burn = warp::path!("burn" / u64)
                    .map(|ms: u64| format!("{}\n", burn_in_a_labeled_request(ms)));
                let routes = burn
                    .or(pprof_warp::routes_with(config))
                    .with(pprof_warp::label_requests());
                serve_on("127.0.0.1:0", move |listener| async move {
                    warp::serve(routes).incoming(listener).run().await;
                })
            }
            Adapter::Tower => serve_on("127.0.0.1:0", move |listener| {
                serve_tower_labeled(listener, config)
            }),
        }
    }

    /// The `http.route` a request to `/burn/{ms}` is labeled with: the
    /// template where the framework knows it, else the path.
    pub fn burn_route(self, ms: u64) -> String {
        match self {
            Adapter::Axum | Adapter::Actix => BURN_ROUTE.to_owned(),
            Adapter::Warp | Adapter::Tower => format!("/burn/{ms}"),
        }
    }
}

/// The work of a CPU-heavy request: `ms` of CPU in [`burn_cpu_here`].
#[inline(never)]
pub fn burn_in_a_labeled_request(ms: u64) -> u64 {
    burn_cpu_here(Duration::from_millis(ms))
}

async fn serve_tower_labeled(listener: tokio::net::TcpListener, config: pprof_core::Config) {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    let burn = tower::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
        let ms = request
            .uri()
            .path()
            .strip_prefix("/burn/")
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        let body = format!("{}\n", burn_in_a_labeled_request(ms));
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
    });
    let service = tower::ServiceBuilder::new()
        .layer(pprof_core::LabelRequestsLayer::new())
        .layer(pprof_core::PprofLayer::new(config))
        .service(burn);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn start_actix(bind: &str, prefix: &str, config: pprof_core::Config) -> SocketAddr {
    start_actix_on(bind, prefix, config, OnConnect::BeforeListen)
}

/// Where an actix-web server is given `pprof_actix::on_connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConnect {
    /// Before `listen`, as the README says.
    BeforeListen,
    /// After `listen`, where actix-web ignores it.
    AfterListen,
    /// Not at all.
    Never,
}

/// An actix-web server with the pprof scope under `/debug`, next to
/// `/hello`, given `on_connect` as `how` says.
pub fn start_actix_with(config: pprof_core::Config, how: OnConnect) -> SocketAddr {
    start_actix_on("127.0.0.1:0", "/debug/pprof", config, how)
}

fn start_actix_on(
    bind: &str,
    prefix: &str,
    config: pprof_core::Config,
    how: OnConnect,
) -> SocketAddr {
    let mount = prefix
        .strip_suffix("/pprof")
        .unwrap_or_else(|| panic!("actix mounts at {{mount}}/pprof; {prefix} does not end so"))
        .to_owned();
    let listener = std::net::TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    let addr = listener.local_addr().expect("local addr");
    std::thread::Builder::new()
        .name("test-actix".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let mut server = actix_web::HttpServer::new(move || {
                    actix_web::App::new()
                        .route("/hello", actix_web::web::get().to(|| async { "hello\n" }))
                        .service(pprof_actix::scope_with(&mount, config.clone()))
                })
                .workers(2);
                if how == OnConnect::BeforeListen {
                    server = server.on_connect(pprof_actix::on_connect);
                }
                let mut server = server.listen(listener).expect("listen");
                if how == OnConnect::AfterListen {
                    server = server.on_connect(pprof_actix::on_connect);
                }
                let _ = server.run().await;
            });
        })
        .expect("spawn actix");
    addr
}

async fn serve_tower(listener: tokio::net::TcpListener, config: pprof_core::Config) {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    let hello = tower::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
        let (status, body) = if request.uri().path() == "/hello" {
            (200, "hello\n")
        } else {
            (404, "not found\n")
        };
        let mut response = http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from_static(body.as_bytes()),
        ));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
        Ok::<_, std::convert::Infallible>(response)
    });
    let service = tower::ServiceBuilder::new()
        .layer(pprof_core::PprofLayer::new(config))
        .service(hello);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        // hyper tells no one the peer: add it per connection for the loopback guard.
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            service.clone(),
            move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(pprof_core::PeerAddr(peer));
                request
            },
        ));
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Run `serve` on a fresh two-worker runtime on its own thread, with a
/// listener bound to 127.0.0.1:0; returns the bound address.
pub fn serve_on_own_runtime<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    serve_on("127.0.0.1:0", serve)
}

/// [`serve_on_own_runtime`] with a listener bound to `bind`.
pub fn serve_on<F, Fut>(bind: &str, serve: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let bind = bind.to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("test-server".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&bind)
                    .await
                    .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
                tx.send(listener.local_addr().expect("local addr"))
                    .expect("report address");
                serve(listener).await;
            });
        })
        .expect("spawn server thread");
    rx.recv_timeout(Duration::from_secs(30))
        .expect("server started")
}

/// What came back from one request.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as a gunzipped, decoded profile.proto.
    pub fn profile(&self) -> Profile {
        decode_profile(&self.body)
    }
}

/// Go's error shape: this status, `text/plain; charset=utf-8`,
/// `X-Go-Pprof: 1`, `nosniff`, no attachment, one line containing `message`.
pub fn assert_go_error(r: &Response, status: u16, message: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{what}"
    );
    assert_eq!(r.header("x-go-pprof"), Some("1"), "{what}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("content-disposition"), None, "{what}");
    let text = r.text();
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "{what}: {text:?}"
    );
    assert!(text.contains(message), "{what}: {text:?} lacks {message:?}");
}

/// Send one HTTP/1.1 request (`Connection: close`) and read the whole answer.
pub fn request(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> Response {
    let mut stream = send(addr, method, target, body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw, method == "HEAD")
}

/// `GET target`.
pub fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, "GET", target, b"")
}

/// Like [`request`], with extra request headers.
pub fn request_with_headers(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = send_with_headers(addr, method, target, headers, body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw, method == "HEAD")
}

/// Write `raw` bytes as they are (any request line, headers and body) and
/// read the answer; `None` when the server closed the connection without
/// a complete response head. A write the server cut short is not an error:
/// it may answer before reading everything.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Option<Response> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone stream");
    let raw = raw.to_vec();
    // Write from another thread, so a server that answers early (and stops
    // reading) cannot leave both sides blocked.
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&raw);
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            // A reset after the answer (the server closed with unread bytes) ends it.
            Err(_) => break,
        }
    }
    let _ = writing.join();
    answer
        .windows(4)
        .any(|w| w == b"\r\n\r\n")
        .then(|| parse_response(&answer, false))
}

/// An address of this host that is not loopback (to reach a server as a
/// "remote" peer), if the host has one.
pub fn non_loopback_ip() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the source address.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    for probe in ["192.0.2.1:9", "10.255.255.255:9", "8.8.8.8:53"] {
        if socket.connect(probe).is_ok()
            && let Ok(local) = socket.local_addr()
            && !local.ip().is_loopback()
            && !local.ip().is_unspecified()
        {
            return Some(local.ip());
        }
    }
    None
}

/// Send a request and return the open connection without reading it (a
/// test can drop it to hang up mid-request).
pub fn send(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> TcpStream {
    send_with_headers(addr, method, target, &[], body)
}

fn send_with_headers(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    stream
}

fn parse_response(raw: &[u8], head_only: bool) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    // A HEAD answer has no body; whatever follows the head is kept, so a
    // test can see a server that wrongly sent one.
    let body = if chunked && !head_only {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 || rest.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[(eol + 4 + size).min(rest.len())..];
    }
}

/// Gunzip and decode a profile.proto body.
pub fn decode_profile(body: &[u8]) -> Profile {
    assert_eq!(body.get(..2), Some(&[0x1f, 0x8b][..]), "body is not gzip");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut raw)
        .expect("gunzip");
    Profile::decode(raw.as_slice()).expect("profile.proto decodes")
}

/// A string of the profile's string table.
pub fn string(p: &Profile, id: i64) -> &str {
    usize::try_from(id)
        .ok()
        .and_then(|i| p.string_table.get(i))
        .map_or("<bad string id>", String::as_str)
}

/// The profile's comments (what the sampler says it did), as text.
pub fn comments(p: &Profile) -> Vec<&str> {
    p.comment.iter().map(|c| string(p, *c)).collect()
}

/// This process's anonymous resident memory, from `/proc/self/status`.
pub fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The profile's sample types as `type/unit`.
pub fn sample_types(p: &Profile) -> Vec<String> {
    p.sample_type
        .iter()
        .map(|t| format!("{}/{}", string(p, t.ty), string(p, t.unit)))
        .collect()
}

/// Every function name that appears in any sample's stack.
pub fn function_names(p: &Profile) -> Vec<String> {
    p.function
        .iter()
        .map(|f| string(p, f.name).to_owned())
        .collect()
}

/// One sample as a reader sees it: function names leaf first (inlined
/// frames innermost first), string labels, and its values.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Function names, leaf first.
    pub functions: Vec<String>,
    /// String labels, `(key, value)`.
    pub labels: Vec<(String, String)>,
    /// The sample's values, in sample-type order.
    pub values: Vec<i64>,
}

impl Stack {
    /// The value of string label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether any frame's function name ends with `suffix`.
    pub fn has(&self, suffix: &str) -> bool {
        self.functions.iter().any(|f| f.ends_with(suffix))
    }
}

/// Every sample of `p`, with its stack resolved to names.
pub fn stacks(p: &Profile) -> Vec<Stack> {
    let function = |id: u64| {
        p.function
            .iter()
            .find(|f| f.id == id)
            .map_or("<no function>", |f| string(p, f.name))
            .to_owned()
    };
    p.sample
        .iter()
        .map(|s| Stack {
            functions: s
                .location_id
                .iter()
                .filter_map(|id| p.location.iter().find(|l| l.id == *id))
                .flat_map(|l| l.line.iter().map(|line| function(line.function_id)))
                .collect(),
            labels: s
                .label
                .iter()
                .filter(|l| l.str != 0)
                .map(|l| (string(p, l.key).to_owned(), string(p, l.str).to_owned()))
                .collect(),
            values: s.value.clone(),
        })
        .collect()
}

/// `go tool pprof ARGS`, or `None` (after saying so loudly) when `go` is
/// not installed outside CI. Under `CI=true` a missing `go` fails the test.
pub fn go_tool_pprof(args: &[&str]) -> Option<String> {
    let available = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        let message = "`go` is not installed: the go tool pprof checks need it \
                       (apt-get install -y golang-go)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{message}; CI=true requires them"
        );
        eprintln!("\n!!! SKIPPED: {message}\n");
        return None;
    }
    let tmp = std::env::temp_dir().join("pprof-tests-go");
    let _ = std::fs::create_dir_all(&tmp);
    let output = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .env("PPROF_TMPDIR", &tmp)
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| tmp.display().to_string()),
        )
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "go tool pprof {args:?} failed:\n{stderr}\n{stdout}"
    );
    Some(format!("{stdout}{stderr}"))
}

/// The function on the first row of `go tool pprof -top` output.
pub fn top_function(top_output: &str) -> Option<String> {
    let mut lines = top_output.lines().skip_while(|l| !l.contains("flat%"));
    lines.next()?;
    let row = lines.next()?;
    // flat flat% sum% cum cum% NAME... (the name may contain spaces)
    let name = row.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
    Some(name)
}

/// Write a response body to a fresh file under the temp dir; returns its path.
pub fn save(body: &[u8], name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("pprof-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write profile");
    path.display().to_string()
}

/// The CPU time the kernel counted for the calling thread, in nanoseconds
/// (from `/proc/thread-self/stat`, in clock ticks of 10 ms).
pub fn this_thread_cpu_ns() -> i64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: i64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<i64>().ok()))
        .sum();
    ticks * 10_000_000
}

/// Burn CPU on a thread named `name` in [`burn_cpu_here`] for `duration`.
pub fn burn_cpu_on_thread(name: &str, duration: Duration) -> std::thread::JoinHandle<u64> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || burn_cpu_here(duration))
        .expect("spawn burner")
}

/// A function with a known name that spends its time in itself.
#[inline(never)]
pub fn burn_cpu_here(duration: Duration) -> u64 {
    let start = std::time::Instant::now();
    let mut x = std::hint::black_box(0x2545_f491_4f6c_dd1d_u64);
    while start.elapsed() < duration {
        let mut n = 0u32;
        while n < 100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            n += 1;
        }
    }
    std::hint::black_box(x)
}

/// Tests in one binary run in parallel, but the process has one CPU
/// profiler: hold this while a test runs CPU profiles.
pub fn cpu_profiler_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The process has one heap-dump slot too (a second concurrent heap or
/// allocs request gets 409): hold this while a test fetches heap profiles
/// and expects them served.
pub fn heap_profiler_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The samples of `p` that repeat an earlier sample's stack (its location
/// ids) and labels (each key with its string or number, in any order), as
/// `go tool pprof` would have to merge them: described, for a message.
pub fn repeated_samples(p: &Profile) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let named = stacks(p);
    p.sample
        .iter()
        .zip(named)
        .filter_map(|(s, named)| {
            let mut labels: Vec<(&str, &str, i64)> = s
                .label
                .iter()
                .map(|l| (string(p, l.key), string(p, l.str), l.num))
                .collect();
            labels.sort_unstable();
            let key = (s.location_id.clone(), labels);
            (!seen.insert(key)).then(|| format!("{:?} {:?}", named.functions, named.labels))
        })
        .collect()
}
