//! What a service may tune: where the routes live and how far a request may go.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A user's access rule over the request head.
pub(crate) type Predicate = Arc<dyn Fn(&http::request::Parts) -> bool + Send + Sync>;

/// Settings of a [`Pprof`](crate::Pprof) handler.
///
/// The defaults serve Go's paths under `/debug/pprof` with Go's defaults
/// (30 s CPU profiles at 100 Hz) and bounds that keep a stray request from
/// tying up the service. The access guards are off by default (as in Go):
/// turn on [`loopback_only`](Config::loopback_only), a
/// [`bearer_token`](Config::bearer_token) or your own
/// [`allow`](Config::allow) rule before exposing the routes beyond the host.
/// Every guard is checked before any other work, in that order, then the
/// [`switch`](Config::switch).
///
/// ```
/// use std::time::Duration;
///
/// let config = pprof_core::Config::default()
///     .prefix("/internal/pprof")
///     .max_duration(Duration::from_secs(120));
/// assert_eq!(config.get_prefix(), "/internal/pprof");
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) prefix: String,
    pub(crate) default_duration: Duration,
    pub(crate) max_duration: Duration,
    pub(crate) default_hz: u32,
    pub(crate) min_hz: u32,
    pub(crate) max_hz: u32,
    pub(crate) max_body_bytes: usize,
    pub(crate) thread_signal: i32,
    pub(crate) thread_timeout: Duration,
    pub(crate) task_dump_timeout: Duration,
    pub(crate) max_cpu_profiles: usize,
    pub(crate) max_text_bytes: usize,
    pub(crate) max_delta_requests: usize,
    pub(crate) max_symbol_addresses: usize,
    pub(crate) max_upload_bytes: usize,
    pub(crate) max_upload_decoded_bytes: usize,
    pub(crate) loopback_only: bool,
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) bearer_token: Option<Arc<str>>,
    pub(crate) allow: Option<Predicate>,
    pub(crate) switch: Option<Switch>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("prefix", &self.prefix)
            .field("default_duration", &self.default_duration)
            .field("max_duration", &self.max_duration)
            .field("default_hz", &self.default_hz)
            .field("min_hz", &self.min_hz)
            .field("max_hz", &self.max_hz)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_text_bytes", &self.max_text_bytes)
            .field("max_delta_requests", &self.max_delta_requests)
            .field("max_symbol_addresses", &self.max_symbol_addresses)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("max_upload_decoded_bytes", &self.max_upload_decoded_bytes)
            .field("thread_signal", &self.thread_signal)
            .field("thread_timeout", &self.thread_timeout)
            .field("task_dump_timeout", &self.task_dump_timeout)
            .field("max_cpu_profiles", &self.max_cpu_profiles)
            .field("loopback_only", &self.loopback_only)
            .field("allowed_hosts", &self.allowed_hosts)
            // Never print the secret itself.
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("allow", &self.allow.as_ref().map(|_| "<fn>"))
            .field("switch", &self.switch)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            prefix: "/debug/pprof".to_owned(),
            default_duration: Duration::from_secs(30),
            max_duration: Duration::from_secs(300),
            default_hz: 100,
            min_hz: 1,
            max_hz: 1000,
            max_body_bytes: 64 * 1024,
            thread_signal: libc::SIGURG,
            thread_timeout: Duration::from_millis(250),
            task_dump_timeout: Duration::from_secs(1),
            max_cpu_profiles: 4,
            max_text_bytes: 16 * 1024 * 1024,
            max_delta_requests: 4,
            max_symbol_addresses: 8192,
            max_upload_bytes: 8 * 1024 * 1024,
            max_upload_decoded_bytes: 32 * 1024 * 1024,
            loopback_only: false,
            allowed_hosts: Vec::new(),
            bearer_token: None,
            allow: None,
            switch: None,
        }
    }
}

impl Config {
    /// The path under which the routes are served (default `/debug/pprof`).
    /// A trailing `/` is ignored; an empty prefix serves the routes at the root.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        while prefix.ends_with('/') {
            prefix.pop();
        }
        if !prefix.is_empty() && !prefix.starts_with('/') {
            prefix.insert(0, '/');
        }
        self.prefix = prefix;
        self
    }

    /// The longest `seconds` a CPU or delta profile may ask for (default 300 s).
    pub fn max_duration(mut self, max: Duration) -> Self {
        self.max_duration = max;
        self
    }

    /// The sampling rate of CPU profiles when the request names none (default 100 Hz, as Go).
    pub fn default_hz(mut self, hz: u32) -> Self {
        self.default_hz = hz;
        self
    }

    /// The range of `hz` a request may ask for (default 1 to 1000).
    pub fn hz_range(mut self, min: u32, max: u32) -> Self {
        self.min_hz = min.max(1);
        self.max_hz = max.max(self.min_hz);
        self
    }

    /// The largest request body `/symbol` reads (default 64 KiB).
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// The signal that interrupts a thread to take its stack: for the
    /// goroutine and threadcreate profiles, and for poll watching (see
    /// [`watch_polls`](crate::watch_polls); the process has one such
    /// signal, the one of the last [`Pprof`](crate::Pprof) created).
    /// Default `SIGURG`, whose default action is to ignore it, so a stray
    /// one never kills the process. Only signals that do no harm once
    /// handled and that applications rarely use are accepted: `SIGURG`,
    /// `SIGUSR1`, `SIGUSR2` and the real-time signals (`libc::SIGRTMIN()`
    /// to `libc::SIGRTMAX()`); any other (`SIGTERM`, `SIGINT`, `SIGHUP`,
    /// `SIGPIPE`, `SIGCHLD`, `SIGPROF`, …) makes dumps answer 500 saying so.
    ///
    /// pprof-core installs its handler on the first dump and keeps it. If
    /// the application handles that signal itself, dumps fail with a
    /// message saying so; the current handler is read again before each
    /// dump, so an application that installs its own later gets that
    /// message too, never a stream of signals. Threads interrupted in a
    /// system call resume it (`SA_RESTART`); calls the kernel never
    /// restarts (`epoll_wait`, `nanosleep`, timed futex waits) return
    /// `EINTR` once, as they do under the CPU profiler's `SIGPROF`.
    pub fn thread_signal(mut self, signal: i32) -> Self {
        self.thread_signal = signal;
        self
    }

    /// How long a thread dump waits for all threads to answer (default
    /// 250 ms). A thread that has the signal blocked, or is stuck in the
    /// kernel, is listed without a stack.
    pub fn thread_timeout(mut self, timeout: Duration) -> Self {
        self.thread_timeout = timeout;
        self
    }

    /// How many CPU profiles may run at once (default 4). They share one
    /// sampler (at one rate: a request for another `hz` while one runs is
    /// refused with 409 naming the running rate); each answer holds the
    /// samples of its own window. Beyond this number a request gets 409
    /// with Go's message. A scraper taking a CPU profile every few seconds
    /// (Grafana Alloy: 14 s of every 15) leaves room for a person to take
    /// one too.
    pub fn max_cpu_profiles(mut self, max: usize) -> Self {
        self.max_cpu_profiles = max.max(1);
        self
    }

    /// How long the goroutine profile waits for tokio's task dump (feature
    /// `tokio-taskdump`; default 1 s). tokio's dump never finishes while a
    /// worker is blocked; past this time the profile holds the threads and
    /// one sample saying the tasks are missing.
    pub fn task_dump_timeout(mut self, timeout: Duration) -> Self {
        self.task_dump_timeout = timeout;
        self
    }

    /// The largest text answer (`debug=1`, `debug=2`) the handler sends
    /// (default 16 MiB). Text is written through a writer that stops at
    /// the limit, so a longer answer is never built: it is answered `400`
    /// with a message naming the limit. The protobuf form (`debug=0`) has
    /// no such limit.
    pub fn max_text_bytes(mut self, max: usize) -> Self {
        self.max_text_bytes = max;
        self
    }

    /// How many delta profiles (`?seconds=N`) of one profile may be in
    /// flight at once in the process (default 4; at least 1). Each holds
    /// its first snapshot while it waits; one more is answered `409`.
    pub fn max_delta_requests(mut self, max: usize) -> Self {
        self.max_delta_requests = max.max(1);
        self
    }

    /// The most addresses one `/symbol` request may ask for (default 8192;
    /// `go tool pprof` asks in one request for what a profile lacks). More
    /// is answered `400`. At most two lookups run at once in the process;
    /// a third meanwhile gets `409`.
    pub fn max_symbol_addresses(mut self, max: usize) -> Self {
        self.max_symbol_addresses = max;
        self
    }

    /// The largest profile a page accepts as an upload (a diff's baseline,
    /// or a saved profile to view): `compressed` bytes as sent (default
    /// 8 MiB) and `decompressed` bytes once gunzipped (default 32 MiB).
    /// Either over its limit is a `400`; nothing uploaded is ever stored.
    pub fn upload_limits(mut self, compressed: usize, decompressed: usize) -> Self {
        self.max_upload_bytes = compressed;
        self.max_upload_decoded_bytes = decompressed;
        self
    }

    /// Answer only clients on this host: peers on a loopback address
    /// (`127.0.0.0/8`, `::1`, `::ffff:127.0.0.1`). Others get `403`. The
    /// peer comes from the [`PeerAddr`](crate::PeerAddr) request extension;
    /// when the server supplied none the request is denied too (fail closed).
    ///
    /// A loopback peer must also name this host as loopback clients do
    /// (`Host: localhost`, `127.0.0.1` or `[::1]`, any port) or by a name
    /// given to [`allow_host`](Config::allow_host): a web page whose own
    /// name an attacker points at 127.0.0.1 (DNS rebinding) sends its own
    /// name and is refused (`403`).
    pub fn loopback_only(mut self, on: bool) -> Self {
        self.loopback_only = on;
        self
    }

    /// One more name (without the port) that [`loopback_only`](Config::loopback_only)
    /// accepts in a request's `Host`, besides `localhost`, `127.0.0.1`
    /// and `[::1]`: an alias in `/etc/hosts`, or the name a proxy on this
    /// host forwards (compared without regard to case; call again for more).
    ///
    /// ```
    /// let config = pprof_core::Config::default()
    ///     .loopback_only(true)
    ///     .allow_host("pprof.internal");
    /// # drop(config);
    /// ```
    pub fn allow_host(mut self, name: impl Into<String>) -> Self {
        self.allowed_hosts.push(name.into());
        self
    }

    /// Require `Authorization: Bearer <token>`. A request without one gets
    /// `401` with `WWW-Authenticate: Bearer`; a wrong token `403`. The
    /// comparison takes the same time wherever the tokens differ.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(Arc::from(token.into()));
        self
    }

    /// Your own access rule over the request head (method, URI, headers,
    /// extensions your middleware put there): `false` answers `403`.
    ///
    /// ```
    /// let config = pprof_core::Config::default()
    ///     .allow(|parts: &http::request::Parts| parts.headers.contains_key("x-internal"));
    /// # drop(config);
    /// ```
    pub fn allow(
        mut self,
        rule: impl Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.allow = Some(Arc::new(rule));
        self
    }

    /// Turn every route off and on at run time with a shared [`Switch`];
    /// while off, routes answer `404` (`pprof endpoints are switched off on this server`).
    pub fn switch(mut self, switch: &Switch) -> Self {
        self.switch = Some(switch.clone());
        self
    }

    /// The path under which the routes are served, without trailing `/`.
    pub fn get_prefix(&self) -> &str {
        &self.prefix
    }

    /// The largest request body the handler reads.
    pub fn get_max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }
}

/// A run-time on/off switch for every pprof route, shared by clones.
///
/// Give one to [`Config::switch`] and keep a clone: [`Switch::set`]
/// turns the routes off and on without a restart. While off, every route
/// answers `404` with `X-Go-Pprof: 1` and
/// `pprof endpoints are switched off on this server` (after the access
/// guards, so a client that may not ask learns nothing about the switch).
///
/// ```
/// let switch = pprof_core::Switch::new(false); // off until an operator needs it
/// let config = pprof_core::Config::default().switch(&switch);
/// // later, from an admin route or a signal handler thread:
/// switch.set(true);
/// assert!(switch.is_on());
/// # drop(config);
/// ```
#[derive(Debug, Clone)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    /// A switch, on or off.
    pub fn new(on: bool) -> Self {
        Self(Arc::new(AtomicBool::new(on)))
    }

    /// Turn the routes on (`true`) or off (`false`) for every handler sharing this switch.
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Release);
    }

    /// Whether the routes are on.
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Default for Switch {
    /// On.
    fn default() -> Self {
        Self::new(true)
    }
}
