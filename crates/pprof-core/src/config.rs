//! What a service may tune: where the routes live and how far a request may go.

use std::time::Duration;

/// Settings of a [`Pprof`](crate::Pprof) handler.
///
/// The defaults serve Go's paths under `/debug/pprof` with Go's defaults
/// (30 s CPU profiles at 100 Hz) and bounds that keep a stray request from
/// tying up the service.
///
/// ```
/// use std::time::Duration;
///
/// let config = pprof_core::Config::default()
///     .prefix("/internal/pprof")
///     .max_duration(Duration::from_secs(120));
/// assert_eq!(config.get_prefix(), "/internal/pprof");
/// ```
#[derive(Debug, Clone)]
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

    /// The signal that interrupts each thread for the goroutine and
    /// threadcreate profiles (default `SIGURG`, whose default action is to
    /// ignore it, so a stray one never kills the process). pprof-core
    /// installs a handler for it on the first dump and keeps it; if the
    /// application already handles that signal, dumps fail with a message
    /// saying so. Threads interrupted in a system call resume it
    /// (`SA_RESTART`); calls the kernel never restarts (`epoll_wait`,
    /// `nanosleep`, timed futex waits) return `EINTR` once, as they do under
    /// the CPU profiler's `SIGPROF`.
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

    /// How long the goroutine profile waits for tokio's task dump (feature
    /// `tokio-taskdump`; default 1 s). tokio's dump never finishes while a
    /// worker is blocked; past this time the profile holds the threads and
    /// one sample saying the tasks are missing.
    pub fn task_dump_timeout(mut self, timeout: Duration) -> Self {
        self.task_dump_timeout = timeout;
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
