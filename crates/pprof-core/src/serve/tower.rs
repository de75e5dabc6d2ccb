//! The tower face: [`Pprof`] as a `Service`, a `Layer` that answers the
//! pprof prefix and passes every other request through, and a `Layer` that
//! watches the polls of every request future.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::Either;

use super::{BoxError, ResponseBody};
use crate::labels::Labeled;
use crate::sync::watch::{WatchPolls, threshold_nanos};
use crate::{Config, Pprof};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<B> tower_service::Service<Request<B>> for Pprof
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request).await) })
    }
}

/// A `tower::Layer` that serves the pprof routes in front of any service:
/// requests under the prefix are answered by [`Pprof`], all others go to
/// the inner service untouched. Put your own auth layer outside it to guard
/// the routes with the app's existing auth.
///
/// ```
/// use tower_layer::Layer;
///
/// # #[derive(Clone)] struct App;
/// let layer = pprof_core::PprofLayer::new(pprof_core::Config::default());
/// let service = layer.layer(App); // a PprofService<App>
/// # let _ = service;
/// ```
#[derive(Clone, Debug)]
pub struct PprofLayer {
    pprof: Pprof,
}

impl PprofLayer {
    /// A layer serving the routes with these settings.
    pub fn new(config: Config) -> Self {
        Self {
            pprof: Pprof::new(config),
        }
    }
}

impl<S> tower_layer::Layer<S> for PprofLayer {
    type Service = PprofService<S>;

    fn layer(&self, inner: S) -> PprofService<S> {
        PprofService {
            pprof: self.pprof.clone(),
            inner,
        }
    }
}

/// The service [`PprofLayer`] makes: pprof under its prefix, `S` elsewhere.
/// Its responses carry either body (`Either::Left` for pprof's).
#[derive(Clone, Debug)]
pub struct PprofService<S> {
    pprof: Pprof,
    inner: S,
}

impl<S, B, ResBody> tower_service::Service<Request<B>> for PprofService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Either<ResponseBody, ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.pprof.serves(request.uri().path()) {
            let pprof = self.pprof.clone();
            Box::pin(async move { Ok(pprof.handle(request).await.map(Either::Left)) })
        } else {
            let response = self.inner.call(request);
            Box::pin(async move { Ok(response.await?.map(Either::Right)) })
        }
    }
}

/// A `tower::Layer` that watches the polls of every request future of the
/// service it wraps ([`watch_polls`](crate::watch_polls) for each call).
///
/// ```
/// use tower_layer::Layer;
///
/// # #[derive(Clone)] struct App;
/// let layer = pprof_core::WatchPollsLayer::new()
///     .threshold(std::time::Duration::from_millis(20));
/// let service = layer.layer(App); // a WatchPollsService<App>
/// # let _ = service;
/// ```
#[derive(Clone, Debug, Default)]
pub struct WatchPollsLayer {
    threshold_ns: Option<u64>,
}

impl WatchPollsLayer {
    /// A layer using the process-wide threshold
    /// ([`set_slow_poll_threshold`](crate::set_slow_poll_threshold)).
    pub fn new() -> Self {
        Self::default()
    }

    /// Use `threshold` for this service's requests (under 1 ms, zero
    /// included, is raised to 1 ms).
    pub fn threshold(mut self, threshold: Duration) -> Self {
        self.threshold_ns = Some(threshold_nanos(threshold));
        self
    }
}

impl<S> tower_layer::Layer<S> for WatchPollsLayer {
    type Service = WatchPollsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WatchPollsService {
            inner,
            threshold_ns: self.threshold_ns,
        }
    }
}

/// The service [`WatchPollsLayer`] makes: the inner one, its futures watched.
#[derive(Clone, Debug)]
pub struct WatchPollsService<S> {
    inner: S,
    threshold_ns: Option<u64>,
}

impl<S, R> tower_service::Service<R> for WatchPollsService<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = WatchPolls<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        WatchPolls::with_threshold_ns(self.inner.call(request), self.threshold_ns)
    }
}

/// A request future with its labels in force and its polls watched; see
/// [`label_request`].
pub type LabeledRequest<F> = Labeled<WatchPolls<F>>;

/// `future`, the work of one request, with the labels `http.route` (its
/// route template: `Some("/users/{id}")`, or a plain `"/users/{id}"`) and
/// `http.request.method` in force during its polls, and its polls watched
/// (a poll that blocks its worker shows in `/block`, with the request's
/// labels). The one building block of every framework's `LabelRequests`.
///
/// A request no route template matched (`None`, or an empty template)
/// carries no `http.route` at all, as OpenTelemetry says: not an empty
/// value, and not its path, which would make one label set per path.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let route = pprof_core::label_request("GET", "/users/{id}", async {
///     pprof_core::labels::current().get("http.route").map(str::to_owned)
/// })
/// .await;
/// assert_eq!(route.as_deref(), Some("/users/{id}"));
/// let fallback = pprof_core::label_request("GET", None, async {
///     let now = pprof_core::labels::current();
///     (now.get("http.route").is_none(), now.get("http.request.method") == Some("GET"))
/// })
/// .await;
/// assert_eq!(fallback, (true, true));
/// # });
/// ```
pub fn label_request<'r, F: Future>(
    method: &str,
    route: impl Into<Option<&'r str>>,
    future: F,
) -> LabeledRequest<F> {
    let labels = crate::labels::request_labels(method, route.into());
    Labeled::new(labels, WatchPolls::with_threshold_ns(future, None))
}

/// Where [`LabelRequestsLayer`] finds a request's route template.
type RouteOf = std::sync::Arc<dyn Fn(&http::Extensions) -> Option<String> + Send + Sync>;

/// A `tower::Layer` that labels every request of the service it wraps
/// with `http.route` and `http.request.method` and watches its polls
/// ([`label_request`] for each call). The route is the path (a bare tower
/// service has no route templates) unless
/// [`route_from`](LabelRequestsLayer::route_from) says where templates
/// are (the axum adapter reads `MatchedPath` so): then a request without
/// one carries no `http.route`.
///
/// ```
/// use tower_layer::Layer;
///
/// # #[derive(Clone)] struct App;
/// let service = pprof_core::LabelRequestsLayer::new().layer(App);
/// # let _ = service;
/// ```
#[derive(Clone, Default)]
pub struct LabelRequestsLayer {
    route: Option<RouteOf>,
}

impl std::fmt::Debug for LabelRequestsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelRequestsLayer")
            .field("route_from", &self.route.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

impl LabelRequestsLayer {
    /// A layer labelling each request with its path and method.
    pub fn new() -> Self {
        Self::default()
    }

    /// Take `http.route` from the request's extensions: the template
    /// `find` finds there; none (no `http.route`) where it finds none, as
    /// for requests a router's fallback serves.
    pub fn route_from(
        mut self,
        find: impl Fn(&http::Extensions) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.route = Some(std::sync::Arc::new(find));
        self
    }
}

impl<S> tower_layer::Layer<S> for LabelRequestsLayer {
    type Service = LabelRequestsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LabelRequestsService {
            inner,
            route: self.route.clone(),
        }
    }
}

/// The service [`LabelRequestsLayer`] makes: the inner one, each request labeled.
#[derive(Clone)]
pub struct LabelRequestsService<S> {
    inner: S,
    route: Option<RouteOf>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for LabelRequestsService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelRequestsService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> tower_service::Service<Request<B>> for LabelRequestsService<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = LabeledRequest<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = match &self.route {
            Some(find) => find(request.extensions()),
            None => Some(request.uri().path().to_owned()),
        };
        let method = request.method().clone();
        label_request(method.as_str(), route.as_deref(), self.inner.call(request))
    }
}
