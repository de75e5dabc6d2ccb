#![doc = include_str!("../README.md")]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
#[cfg(feature = "tikv-jemallocator")]
pub use pprof_core::jemalloc_heap_profiling;
pub use pprof_core::{self, Config};
use warp::filters::path::FullPath;
use warp::{Buf, Filter, Rejection, Reply, Stream};

/// Go's pprof routes under `/debug/pprof`, as a filter to `or` with an app's.
pub fn routes() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    routes_with(Config::default())
}

/// The pprof routes with the given settings (prefix, limits). Requests
/// outside the prefix are rejected as not found, so the next filter runs.
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
        .and(warp::body::stream())
        .and_then(
            move |path: FullPath, method, query: String, headers, body| {
                let pprof = pprof.clone();
                async move {
                    let target = if query.is_empty() {
                        path.as_str().to_owned()
                    } else {
                        format!("{}?{query}", path.as_str())
                    };
                    let mut request = http::Request::builder()
                        .method(method)
                        .uri(target)
                        .body(Full::new(
                            read_at_most(body, pprof.config().get_max_body_bytes() + 1).await,
                        ))
                        .unwrap_or_default();
                    *request.headers_mut() = headers;
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

/// The body, cut one byte past `limit` (the core then says it was too large).
async fn read_at_most<S, B>(body: S, limit: usize) -> Bytes
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while out.len() < limit {
        match std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
            Some(Ok(mut chunk)) => {
                while chunk.has_remaining() && out.len() < limit {
                    let piece = chunk.chunk();
                    let take = piece.len().min(limit - out.len());
                    out.extend_from_slice(&piece[..take]);
                    chunk.advance(take);
                }
            }
            _ => break,
        }
    }
    Bytes::from(out)
}
