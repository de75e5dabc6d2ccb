#![doc = include_str!("../README.md")]

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
#[cfg(feature = "tikv-jemallocator")]
pub use pprof_core::jemalloc_heap_profiling;
pub use pprof_core::{self, Config, Switch};
use warp::filters::path::FullPath;
use warp::{Buf, Filter, Rejection, Reply, Stream};

/// Go's pprof routes under `/debug/pprof`, as a filter to `or` with an app's.
pub fn routes() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    routes_with(Config::default())
}

/// The pprof routes with the given settings (prefix, limits, guards).
/// Requests outside the prefix are rejected as not found, so the next
/// filter runs.
pub fn routes_with(
    config: Config,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let pprof = pprof_core::Pprof::new(config);
    let ours = pprof.clone();
    warp::path::full()
        .and_then(move |path: FullPath| {
            let serves = ours.serves(path.as_str());
            async move {
                if serves {
                    Ok(path)
                } else {
                    Err(warp::reject::not_found())
                }
            }
        })
        .and(warp::method())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::body::stream())
        .and_then(
            move |path: FullPath,
                  method,
                  query: String,
                  headers,
                  peer: Option<SocketAddr>,
                  body| {
                let pprof = pprof.clone();
                async move {
                    let target = if query.is_empty() {
                        path.as_str().to_owned()
                    } else {
                        format!("{}?{query}", path.as_str())
                    };
                    // The body streams into the core, which reads it only when a route needs it.
                    let mut request = http::Request::builder()
                        .method(method)
                        .uri(target)
                        .body(StreamBody(Some(Box::pin(body))))
                        .unwrap_or_else(|_| http::Request::new(StreamBody(None)));
                    *request.headers_mut() = headers;
                    if let Some(peer) = peer {
                        request.extensions_mut().insert(pprof_core::PeerAddr(peer));
                    }
                    let response = pprof.handle(request).await;
                    let (parts, body) = response.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    Ok::<_, Rejection>(http::Response::from_parts(parts, body))
                }
            },
        )
}

/// warp's body stream as an `http_body::Body` (`None`: empty).
struct StreamBody<S>(Option<Pin<Box<S>>>);

impl<S, B> http_body::Body for StreamBody<S>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    type Data = Bytes;
    type Error = warp::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, warp::Error>>> {
        let Some(stream) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        stream.as_mut().poll_next(cx).map(|chunk| {
            chunk.map(|chunk| {
                chunk.map(|mut b| http_body::Frame::data(b.copy_to_bytes(b.remaining())))
            })
        })
    }
}

/// Label every request's samples with `http.route` (the path: warp has no
/// route templates) and `http.request.method`, and watch its polls (a
/// handler that blocks its worker shows in `/block`):
/// `let app = app.with(pprof_warp::label_requests());`. It instruments each
/// request with a `tracing` span of pprof-core's own, so it needs no
/// subscriber and leaves the application's alone.
pub fn label_requests()
-> warp::trace::Trace<impl Fn(warp::trace::Info<'_>) -> tracing::Span + Clone> {
    warp::trace(|info: warp::trace::Info<'_>| {
        pprof_core::labels::tracing::request_span(info.method().as_str(), info.path())
    })
}
