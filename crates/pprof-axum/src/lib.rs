#![doc = include_str!("../README.md")]

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::response::{IntoResponse, Response};
#[cfg(feature = "tikv-jemallocator")]
pub use pprof_core::jemalloc_heap_profiling;
pub use pprof_core::{self, Config, Switch};

/// Go's pprof routes under `/debug/pprof`, as a `Router` to merge into an app.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes_with(Config::default())
}

/// The pprof routes with the given settings (prefix, limits, guards).
///
/// The loopback guard needs the peer address: serve the app with
/// `into_make_service_with_connect_info::<SocketAddr>()`, whose
/// `ConnectInfo<SocketAddr>` becomes pprof-core's `PeerAddr`.
pub fn routes_with<S>(config: Config) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let pprof = pprof_core::Pprof::new(config);
    let prefix = pprof.config().get_prefix().to_owned();
    let handler = move |request: Request| {
        let pprof = pprof.clone();
        async move { serve(&pprof, request).await }
    };
    let mut router = Router::new()
        .route(&format!("{prefix}/"), axum::routing::any(handler.clone()))
        .route(
            &format!("{prefix}/{{*rest}}"),
            axum::routing::any(handler.clone()),
        );
    if !prefix.is_empty() {
        router = router.route(&prefix, axum::routing::any(handler));
    }
    router
}

async fn serve(pprof: &pprof_core::Pprof, mut request: Request) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let peer = pprof_core::PeerAddr(*peer);
        request.extensions_mut().insert(peer);
    }
    pprof.handle(request).await.into_response()
}

/// Label every request's samples with `http.route` (axum's matched route
/// template, `/users/{id}`; none for a request a fallback serves, such as
/// `ServeDir`'s files) and `http.request.method`, and watch its polls
/// (a handler that blocks its worker shows in `/block`):
/// `app.layer(pprof_axum::LabelRequests::new())`. As a `Router::layer` it
/// runs after routing, so the template is known.
#[derive(Clone, Debug)]
pub struct LabelRequests(pprof_core::LabelRequestsLayer);

impl LabelRequests {
    /// The layer, taking routes from `MatchedPath`.
    pub fn new() -> Self {
        Self(
            pprof_core::LabelRequestsLayer::new()
                .route_from(|ext| ext.get::<MatchedPath>().map(|m| m.as_str().to_owned())),
        )
    }
}

impl Default for LabelRequests {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> tower_layer::Layer<S> for LabelRequests {
    type Service = pprof_core::LabelRequestsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.0.layer(inner)
    }
}
