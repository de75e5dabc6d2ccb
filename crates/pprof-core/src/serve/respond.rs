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
    Html(String),
    /// A page for people (`ui/`): HTML with this status, allowed no
    /// external fetch by its `Content-Security-Policy`.
    #[cfg_attr(not(feature = "ui"), allow(dead_code))]
    Page {
        status: StatusCode,
        html: String,
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

/// Pages carry their scripts and styles inline and load nothing: the
/// browser is told to refuse any other source, and to send forms and
/// requests (a page posting itself back) only here.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'";

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
            Self::Html(html) => (
                base(StatusCode::OK, "text/html; charset=utf-8"),
                html.into(),
            ),
            Self::Page { status, html } => (
                base(status, "text/html; charset=utf-8")
                    .header(header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
                html.into(),
            ),
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
            | Self::UploadBusy => StatusCode::CONFLICT,
            Self::MissingToken => StatusCode::UNAUTHORIZED,
            Self::PeerNotLoopback | Self::PeerUnknown | Self::WrongToken | Self::Denied => {
                StatusCode::FORBIDDEN
            }
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
