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

    /// The path under which the routes are served, without trailing `/`.
    pub fn get_prefix(&self) -> &str {
        &self.prefix
    }

    /// The largest request body the handler reads.
    pub fn get_max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }
}
