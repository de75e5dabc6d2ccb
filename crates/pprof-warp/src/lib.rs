#![doc = include_str!("../README.md")]

use std::net::SocketAddr;

use http_body_util::BodyExt;
#[cfg(feature = "tikv-jemallocator")]
pub use pprof_core::jemalloc_heap_profiling;
pub use pprof_core::{self, Config, Switch};
use warp::filters::path::FullPath;
use warp::{Filter, Rejection, Reply};

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
                        .body(pprof_core::StreamBody::new(body))
                        .unwrap_or_else(|_| http::Request::new(pprof_core::StreamBody::empty()));
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
