//! Turning answers and errors into responses: Go's headers for each kind
//! of answer, and the one mapping from an [`Error`] to a status, headers
//! and a one-line message.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::ResponseBody;
use crate::{Error, format};

/// What a route produced, before headers are decided.
#[derive(Debug, Clone)]
pub(super) enum Reply {
    /// The index: HTML whose one style carries `nonce`.
    Html {
        html: String,
        nonce: Nonce,
    },
    /// A page for people (`ui/`): HTML with this status, its scripts and
    /// styles carrying `nonce`, allowed nothing else and no external fetch
    /// by its `Content-Security-Policy`.
    #[cfg_attr(not(feature = "ui"), allow(dead_code))]
    Page {
        status: StatusCode,
        html: String,
        nonce: Nonce,
    },
    Text(String),
    /// A gzipped profile.proto, served as an attachment named `filename`.
    Profile {
        filename: String,
        body: Vec<u8>,
    },
    /// Headers of a profile without running it (HEAD).
    ProfileHead {
        filename: String,
    },
    Redirect(String),
}

const TEXT: &str = "text/plain; charset=utf-8";

/// A fresh, unguessable value for one response's `Content-Security-Policy`:
/// only the scripts and styles that carry it run, so markup that slipped
/// into a page unescaped (from a function name, say) could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Nonce(String);

impl Nonce {
    /// 128 bits from the kernel's random source, as hex.
    pub(super) fn fresh() -> Self {
        use std::hash::{BuildHasher, Hasher};
        use std::io::Read;
        let mut bytes = [0u8; 16];
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        if read.is_err() {
            // No /dev/urandom (a bare chroot): the standard library's own
            // per-process random keys, through SipHash, twice.
            for half in bytes.chunks_mut(8) {
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u128(
                    std::time::UNIX_EPOCH
                        .elapsed()
                        .unwrap_or_default()
                        .as_nanos(),
                );
                half.copy_from_slice(&hasher.finish().to_le_bytes());
            }
        }
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The index loads nothing and runs no script; its style carries the nonce.
fn index_policy(nonce: &Nonce) -> String {
    format!(
        "default-src 'none'; style-src 'nonce-{}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        nonce.0
    )
}

/// Pages carry their scripts and styles inline and load nothing: the
/// browser is told to run only those with this response's nonce, to refuse
/// any other source, to send forms and requests (a page posting itself
/// back) only here, and never to show the page in a frame.
fn page_policy(nonce: &Nonce) -> String {
    format!(
        "default-src 'none'; script-src 'nonce-{0}'; style-src 'nonce-{0}'; img-src data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        nonce.0
    )
}

impl Reply {
    /// Text answers longer than `max` are refused (see [`format::cap`]).
    pub(super) fn capped(self, max: usize) -> Result<Self, Error> {
        match self {
            Self::Text(body) => format::cap(body, max).map(Self::Text),
            other => Ok(other),
        }
    }

    pub(super) fn into_response(self) -> Response<ResponseBody> {
        let (builder, body) = match self {
            Self::Html { html, nonce } => {
                (html_base(StatusCode::OK, index_policy(&nonce)), html.into())
            }
            Self::Page {
                status,
                html,
                nonce,
            } => {
                let mut builder = html_base(status, page_policy(&nonce));
                // An error page is an error (go tool pprof shows its text
                // only with this header; people see the page).
                if !status.is_success() {
                    builder = builder.header("x-go-pprof", "1");
                }
                (builder, html.into())
            }
            Self::Text(text) => (base(StatusCode::OK, TEXT), text.into()),
            Self::Profile { filename, body } => (attachment(&filename), body),
            Self::ProfileHead { filename } => (attachment(&filename), Vec::new()),
            Self::Redirect(location) => (
                base(StatusCode::MOVED_PERMANENTLY, TEXT).header(
                    header::LOCATION,
                    HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("./")),
                ),
                Vec::new(),
            ),
        };
        builder
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| fallback())
    }
}

fn base(status: StatusCode, content_type: &'static str) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CACHE_CONTROL, "no-store")
}

/// An HTML answer under `policy`, never framed (older browsers read
/// `X-Frame-Options`, newer ones the policy's `frame-ancestors`).
fn html_base(status: StatusCode, policy: String) -> http::response::Builder {
    let policy = HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(
        "default-src 'none'; frame-ancestors 'none'",
    ));
    base(status, "text/html; charset=utf-8")
        .header(header::CONTENT_SECURITY_POLICY, policy)
        .header(header::X_FRAME_OPTIONS, "DENY")
}

fn attachment(filename: &str) -> http::response::Builder {
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    base(StatusCode::OK, "application/octet-stream")
        .header(header::CONTENT_DISPOSITION, disposition)
}

/// The response for an error: its status, `X-Go-Pprof: 1`, one line of text.
pub(crate) fn error_response(error: &Error) -> Response<ResponseBody> {
    let mut builder = base(error.status(), TEXT).header("x-go-pprof", "1");
    if let Some(challenge) = error.challenge() {
        builder = builder.header(header::WWW_AUTHENTICATE, challenge);
    }
    builder
        .body(Full::new(Bytes::from(format!(
            "{}\n",
            error.to_string().replace(['\r', '\n'], " ")
        ))))
        .unwrap_or_else(|_| fallback())
}

fn fallback() -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"internal error\n")));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownProfile => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidSeconds
            | Self::SecondsTooLong { .. }
            | Self::SecondsNotSupported
            | Self::SecondsWithDebug
            | Self::InvalidDebug
            | Self::InvalidHz { .. }
            | Self::BodyTooLarge { .. }
            | Self::TextTooLarge { .. }
            | Self::BadBody
            | Self::TooManyAddresses { .. }
            | Self::NoSuchProfile { .. }
            | Self::NoSuchSampleType { .. }
            | Self::InvalidRegex { .. }
            | Self::UploadTooLarge { .. }
            | Self::InvalidUpload(_) => StatusCode::BAD_REQUEST,
            Self::CpuProfilerBusy
            | Self::HeapDumpBusy
            | Self::DeltaBusy { .. }
            | Self::SymbolLookupsBusy { .. }
            | Self::CpuRateBusy { .. }
            | Self::SignalTaken { .. }
            | Self::UploadBusy
            | Self::UploadsArriving { .. } => StatusCode::CONFLICT,
            Self::UploadTooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::MissingToken => StatusCode::UNAUTHORIZED,
            Self::PeerNotLoopback
            | Self::PeerUnknown
            | Self::WrongToken
            | Self::Denied
            | Self::HostNotAllowed { .. }
            | Self::CrossSite { .. } => StatusCode::FORBIDDEN,
            Self::SwitchedOff | Self::UnknownPage(_) => StatusCode::NOT_FOUND,
            Self::HeapProfilingDisabled | Self::FeatureDisabled { .. } | Self::TraceUnsupported => {
                StatusCode::NOT_IMPLEMENTED
            }
            Self::Profiler(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `WWW-Authenticate` challenge sent with this error, if any.
    pub(crate) fn challenge(&self) -> Option<&'static str> {
        matches!(self, Self::MissingToken).then_some("Bearer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_a_4xx_or_5xx() {
        for error in crate::error::tests::one_of_each() {
            let status = error.status();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{error:?}"
            );
            let response = error_response(&error);
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()["x-go-pprof"], "1");
            // What the client reads: one line, whatever the error carried.
            let body = response.into_body();
            let text = futures_lite_block_on(http_body_util::BodyExt::collect(body))
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            assert!(
                text.ends_with('\n') && text.matches('\n').count() == 1,
                "{error:?}: {text:?}"
            );
        }
    }

    /// Poll a ready future to completion on this thread.
    fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }
}
