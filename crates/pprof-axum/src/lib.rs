#![doc = include_str!("../README.md")]

use axum::Router;
#[cfg(feature = "tikv-jemallocator")]
pub use pprof_core::jemalloc_heap_profiling;
pub use pprof_core::{self, Config};

/// Go's pprof routes under `/debug/pprof`, as a `Router` to merge into an app.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes_with(Config::default())
}

/// The pprof routes with the given settings (prefix, limits).
pub fn routes_with<S>(config: Config) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let pprof = pprof_core::Pprof::new(config);
    let prefix = pprof.config().get_prefix().to_owned();
    let mut router = Router::new()
        .route_service(&format!("{prefix}/"), pprof.clone())
        .route_service(&format!("{prefix}/{{*rest}}"), pprof.clone());
    if !prefix.is_empty() {
        router = router.route_service(&prefix, pprof);
    }
    router
}
