//! The one error type: every way a request can fail, in words. Which HTTP
//! status each is answered with is decided in `serve/`.

use std::fmt;

/// Why a pprof request was not answered with a profile.
///
/// Each variant maps to one HTTP status ([`Error::status`]) and one line of
/// text (the `Display` impl); the handler answers it with
/// `Content-Type: text/plain; charset=utf-8` and `X-Go-Pprof: 1`, so that
/// `go tool pprof` prints the message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The path names no profile this server serves.
    UnknownProfile,
    /// The method is not one the route accepts (GET and HEAD everywhere; POST on `profile` and `symbol`).
    MethodNotAllowed,
    /// `seconds` is not a positive integer.
    InvalidSeconds,
    /// `seconds` is longer than the configured limit.
    SecondsTooLong {
        /// The configured limit, in seconds.
        limit: u64,
    },
    /// `seconds` was given to a profile that has no delta form.
    SecondsNotSupported,
    /// `seconds` and `debug>0` were given together.
    SecondsWithDebug,
    /// `debug` is not a non-negative integer.
    InvalidDebug,
    /// `hz` is not an integer inside the configured range.
    InvalidHz {
        /// Lowest accepted rate.
        min: u32,
        /// Highest accepted rate.
        max: u32,
    },
    /// Another CPU profile is running in this process.
    CpuProfilerBusy,
    /// The request body (for `/symbol`) is larger than the configured limit.
    BodyTooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The request body could not be read.
    BadBody,
    /// A `debug>0` text answer is larger than the configured limit (writing
    /// it stopped there, so its whole size is not known).
    TextTooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// jemalloc's heap profiler is not switched on in this process.
    HeapProfilingDisabled,
    /// This build of pprof-core was compiled without the feature a profile needs.
    FeatureDisabled {
        /// The profile that was asked for.
        profile: &'static str,
        /// The cargo feature that provides it.
        feature: &'static str,
    },
    /// `/trace`: Go's execution trace has no Rust equivalent that `go tool trace` reads.
    TraceUnsupported,
    /// A profiler failed; the text says which and why.
    Profiler(String),
    /// The loopback guard is on and the peer is not on this host.
    PeerNotLoopback,
    /// The loopback guard is on and the server told us no peer address
    /// (see [`PeerAddr`](crate::PeerAddr)): denied, as we cannot tell.
    PeerUnknown,
    /// A bearer token is required and the request carries none
    /// (answered 401 with `WWW-Authenticate: Bearer`).
    MissingToken,
    /// The request's bearer token is not the configured one.
    WrongToken,
    /// The loopback guard is on and the request names another host than
    /// this one's loopback names or a configured one (DNS rebinding).
    HostNotAllowed {
        /// The host the request named (shortened), empty when none.
        host: String,
    },
    /// A page of another web site made this request through a browser
    /// (a POST from it, or an image, frame or fetch of a route).
    CrossSite {
        /// What the browser said about it (`Sec-Fetch-Site: cross-site, …`
        /// or `Origin: …`), shortened.
        seen: String,
    },
    /// The configured access predicate turned the request down.
    Denied,
    /// The routes are switched off at run time (see [`Switch`](crate::Switch)).
    SwitchedOff,
    /// Another heap or allocs profile is being dumped in this process.
    HeapDumpBusy,
    /// As many delta profiles (`?seconds=N`) of this profile as the server
    /// allows are in flight.
    DeltaBusy {
        /// The profile that was asked for.
        profile: &'static str,
        /// The configured limit (`Config::max_delta_requests`).
        limit: usize,
    },
    /// A `/symbol` request asks for more addresses than the server looks up
    /// in one request.
    TooManyAddresses {
        /// The configured limit (`Config::max_symbol_addresses`).
        limit: usize,
    },
    /// As many `/symbol` lookups as the server runs at once are in progress.
    SymbolLookupsBusy {
        /// How many run at once.
        limit: usize,
    },
    /// A CPU profile at another rate is running; profiles share one sampler.
    CpuRateBusy {
        /// The running sampler's rate.
        running_hz: u32,
    },
    /// The signal a profiler needs already has another handler in this
    /// process (another profiler?); pprof-core never replaces it.
    SignalTaken {
        /// The signal's name.
        signal: &'static str,
        /// What needs it.
        user: &'static str,
    },
    /// A page (`ui/...?profile=NAME`) names a profile this server does not serve.
    NoSuchProfile {
        /// The name asked for.
        name: String,
        /// The names served, comma-separated.
        known: String,
    },
    /// A page's `sample_index` names no sample type of the profile.
    NoSuchSampleType {
        /// What was asked for.
        asked: String,
        /// The profile's sample types, comma-separated.
        known: String,
    },
    /// A page's `focus` or `ignore` is not a valid regular expression.
    InvalidRegex {
        /// The parameter.
        param: &'static str,
        /// What the regex parser said.
        why: String,
    },
    /// No page of that name under `ui/`.
    UnknownPage(String),
    /// An uploaded profile is over the configured limit.
    UploadTooLarge {
        /// The limit, in bytes.
        limit: usize,
        /// Whether the limit is on the decompressed size (else the upload's own).
        decompressed: bool,
    },
    /// An uploaded profile could not be read; the text says why.
    InvalidUpload(String),
    /// Another uploaded profile is being decoded or drawn in this process.
    UploadBusy,
    /// As many uploads as the server receives at once are arriving.
    UploadsArriving {
        /// How many may arrive at once.
        limit: usize,
    },
    /// An upload did not arrive whole within the server's deadline.
    UploadTooSlow {
        /// The deadline, in seconds.
        seconds: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownProfile => f.write_str("Unknown profile"),
            Self::MethodNotAllowed => f.write_str("Method not allowed"),
            Self::InvalidSeconds => {
                f.write_str(r#"invalid value for "seconds" - must be a positive integer"#)
            }
            Self::SecondsTooLong { limit } => write!(
                f,
                "profile duration exceeds server's limit of {limit} seconds"
            ),
            Self::SecondsNotSupported => {
                f.write_str(r#""seconds" parameter is not supported for this profile type"#)
            }
            Self::SecondsWithDebug => f.write_str("seconds and debug params are incompatible"),
            Self::InvalidDebug => {
                f.write_str(r#"invalid value for "debug" - must be a non-negative integer"#)
            }
            Self::InvalidHz { min, max } => write!(
                f,
                r#"invalid value for "hz" - must be an integer from {min} to {max}"#
            ),
            Self::CpuProfilerBusy => {
                f.write_str("Could not enable CPU profiling: cpu profiling already in use")
            }
            Self::BodyTooLarge { limit } => {
                write!(f, "request body exceeds the limit of {limit} bytes")
            }
            Self::BadBody => f.write_str("could not read the request body"),
            Self::TextTooLarge { limit } => write!(
                f,
                "text profile is over the server's limit of {limit} (max_text_bytes) bytes; ask without debug for the protobuf form"
            ),
            Self::HeapProfilingDisabled => f.write_str(
                "heap profiling is not enabled in this process: add `pprof_core::jemalloc_heap_profiling!();` \
                 to the crate root of the binary (it installs jemalloc with prof:true)",
            ),
            Self::FeatureDisabled { profile, feature } => write!(
                f,
                "the {profile} profile needs pprof-core's cargo feature \"{feature}\""
            ),
            Self::TraceUnsupported => f.write_str(
                "execution traces are a Go runtime feature with no Rust equivalent here; \
                 use /debug/pprof/profile for CPU time",
            ),
            Self::Profiler(why) => f.write_str(why),
            Self::PeerNotLoopback => {
                f.write_str("pprof endpoints answer clients on this host (loopback) only")
            }
            Self::PeerUnknown => f.write_str(
                "pprof endpoints answer clients on this host (loopback) only, \
                 and the server did not tell who this client is",
            ),
            Self::MissingToken => f.write_str(
                "pprof endpoints need an Authorization: Bearer token; none was given",
            ),
            Self::WrongToken => f.write_str("the bearer token is not valid for pprof endpoints"),
            Self::HostNotAllowed { host } => write!(
                f,
                "pprof endpoints answer loopback clients that name this host localhost, 127.0.0.1 or [::1] (or a name set with Config::allow_host); this request names the host {host:?}"
            ),
            Self::CrossSite { seen } => write!(
                f,
                "pprof endpoints refuse requests that a page of another site makes through a browser ({seen}); open the routes and pages directly"
            ),
            Self::Denied => f.write_str("the server's access policy denies this pprof request"),
            Self::SwitchedOff => f.write_str("pprof endpoints are switched off on this server"),
            Self::HeapDumpBusy => f.write_str(
                "Could not dump the heap profile: another heap or allocs dump is in progress; try again",
            ),
            Self::DeltaBusy { profile, limit } => write!(
                f,
                "Could not start a delta {profile} profile: {limit} are in progress, the server's limit (max_delta_requests); try again"
            ),
            Self::TooManyAddresses { limit } => write!(
                f,
                "the request asks for more than {limit} addresses, the server's limit (max_symbol_addresses); ask in smaller batches"
            ),
            Self::SymbolLookupsBusy { limit } => write!(
                f,
                "Could not look up symbols: {limit} lookups are in progress, the server's limit; try again"
            ),
            Self::CpuRateBusy { running_hz } => write!(
                f,
                "Could not enable CPU profiling: a CPU profile at {running_hz} Hz is running; ask with hz={running_hz} to share it, or wait"
            ),
            Self::SignalTaken { signal, user } => write!(
                f,
                "{signal} already has a handler in this process (another profiler?); pprof-core does not replace it, so {user} are unavailable"
            ),
            Self::NoSuchProfile { name, known } => {
                write!(f, "no profile is named {name:?}; the profiles are {known}")
            }
            Self::NoSuchSampleType { asked, known } => write!(
                f,
                "this profile has no sample type {asked:?}; its sample types are {known}"
            ),
            Self::InvalidRegex { param, why } => {
                write!(f, "{param:?} is not a valid regular expression: {why}")
            }
            Self::UnknownPage(page) => write!(
                f,
                "no page ui/{page}; the pages are ui/flamegraph, ui/top and ui/diff"
            ),
            Self::UploadTooLarge {
                limit,
                decompressed: false,
            } => write!(f, "the uploaded profile is over the limit of {limit} bytes"),
            Self::UploadTooLarge {
                limit,
                decompressed: true,
            } => write!(
                f,
                "the uploaded profile decompresses to more than the limit of {limit} bytes"
            ),
            Self::InvalidUpload(why) => write!(f, "the uploaded file is not a usable profile: {why}"),
            Self::UploadBusy => f.write_str(
                "another uploaded profile is being read or drawn; try again in a moment",
            ),
            Self::UploadsArriving { limit } => write!(
                f,
                "Could not receive the upload: {limit} are arriving, the server's limit; try again in a moment"
            ),
            Self::UploadTooSlow { seconds } => write!(
                f,
                "the upload did not arrive within {seconds} s, the server's limit; send it again from nearer"
            ),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `one_of_each` and the match that proves it has every variant, from
    /// one list: each entry is a variant's pattern and an example of it.
    /// The match has no wildcard, so a new variant does not compile until
    /// it is listed, and each example is checked against its own pattern.
    macro_rules! every_variant {
        ($($pattern:pat => $example:expr),+ $(,)?) => {
            /// One error of every variant.
            pub(crate) fn one_of_each() -> Vec<Error> {
                #[allow(dead_code, reason = "only has to compile: it is exhaustive")]
                fn exhaustive(error: &Error) {
                    match error {
                        $($pattern => {})+
                    }
                }
                let all = vec![$($example),+];
                let patterns = [$(stringify!($pattern)),+];
                for (i, (error, pattern)) in all.iter().zip(patterns).enumerate() {
                    let matched = [$(matches!(error, $pattern)),+];
                    assert!(matched[i], "{error:?} is not an example of {pattern}");
                }
                all
            }
        };
    }

    every_variant! {
        Error::UnknownProfile => Error::UnknownProfile,
        Error::MethodNotAllowed => Error::MethodNotAllowed,
        Error::InvalidSeconds => Error::InvalidSeconds,
        Error::SecondsTooLong { .. } => Error::SecondsTooLong { limit: 300 },
        Error::SecondsNotSupported => Error::SecondsNotSupported,
        Error::SecondsWithDebug => Error::SecondsWithDebug,
        Error::InvalidDebug => Error::InvalidDebug,
        Error::InvalidHz { .. } => Error::InvalidHz { min: 1, max: 1000 },
        Error::CpuProfilerBusy => Error::CpuProfilerBusy,
        Error::BodyTooLarge { .. } => Error::BodyTooLarge { limit: 10 },
        Error::BadBody => Error::BadBody,
        Error::TextTooLarge { .. } => Error::TextTooLarge { limit: 10 },
        Error::HeapProfilingDisabled => Error::HeapProfilingDisabled,
        Error::FeatureDisabled { .. } => Error::FeatureDisabled {
            profile: "heap",
            feature: "tikv-jemallocator",
        },
        Error::TraceUnsupported => Error::TraceUnsupported,
        Error::Profiler(_) => Error::Profiler("x\ny".into()),
        Error::PeerNotLoopback => Error::PeerNotLoopback,
        Error::PeerUnknown => Error::PeerUnknown,
        Error::MissingToken => Error::MissingToken,
        Error::WrongToken => Error::WrongToken,
        Error::HostNotAllowed { .. } => Error::HostNotAllowed {
            host: "evil.example:6060".into(),
        },
        Error::CrossSite { .. } => Error::CrossSite {
            seen: "Sec-Fetch-Site: cross-site, Sec-Fetch-Dest: empty".into(),
        },
        Error::Denied => Error::Denied,
        Error::SwitchedOff => Error::SwitchedOff,
        Error::HeapDumpBusy => Error::HeapDumpBusy,
        Error::DeltaBusy { .. } => Error::DeltaBusy {
            profile: "goroutine",
            limit: 4,
        },
        Error::TooManyAddresses { .. } => Error::TooManyAddresses { limit: 8192 },
        Error::SymbolLookupsBusy { .. } => Error::SymbolLookupsBusy { limit: 2 },
        Error::CpuRateBusy { .. } => Error::CpuRateBusy { running_hz: 100 },
        Error::SignalTaken { .. } => Error::SignalTaken {
            signal: "SIGPROF",
            user: "CPU profiles",
        },
        Error::NoSuchProfile { .. } => Error::NoSuchProfile {
            name: "x".into(),
            known: "heap".into(),
        },
        Error::NoSuchSampleType { .. } => Error::NoSuchSampleType {
            asked: "x".into(),
            known: "delay".into(),
        },
        Error::InvalidRegex { .. } => Error::InvalidRegex {
            param: "focus",
            why: "unclosed group".into(),
        },
        Error::UnknownPage(_) => Error::UnknownPage("x".into()),
        Error::UploadTooLarge { .. } => Error::UploadTooLarge {
            limit: 10,
            decompressed: true,
        },
        Error::InvalidUpload(_) => Error::InvalidUpload("bad".into()),
        Error::UploadBusy => Error::UploadBusy,
        Error::UploadsArriving { .. } => Error::UploadsArriving { limit: 4 },
        Error::UploadTooSlow { .. } => Error::UploadTooSlow { seconds: 30 },
    }

    #[test]
    fn every_message_is_one_line() {
        for e in one_of_each() {
            let text = e.to_string();
            // A `Profiler` text may carry what a library said, newlines
            // included (the handler flattens it: see `respond`'s test);
            // every message of our own is one line already.
            if !matches!(e, Error::Profiler(_)) {
                assert!(!text.contains('\n'), "{text:?}");
            }
            assert!(!text.is_empty() && !text.ends_with('\n'), "{text:?}");
        }
    }
}
