#![doc = include_str!("../README.md")]

use std::any::Any;
use std::os::fd::AsRawFd;

use actix_web::dev::{Extensions, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{HttpRequest, HttpResponse, Scope, web};
use http_body_util::BodyExt;
#[cfg(feature = "tikv-jemallocator")]
pub use pprof_core::jemalloc_heap_profiling;
pub use pprof_core::{self, Config, Switch};

/// Go's pprof routes under `{mount}/pprof/`, as chi's `r.Mount("/debug", middleware.Profiler())`:
/// `scope("/debug")` serves `/debug/pprof/...`.
pub fn scope(mount: &str) -> Scope {
    scope_with(mount, Config::default())
}

/// The routes under `{mount}/pprof/` with the given settings; the config's
/// own prefix is replaced by `{mount}/pprof`.
pub fn scope_with(mount: &str, config: Config) -> Scope {
    let mount = mount.trim_end_matches('/');
    let pprof = pprof_core::Pprof::new(config.prefix(format!("{mount}/pprof")));
    web::scope(mount).service(web::resource(["/pprof", "/pprof/", "/pprof/{tail:.*}"]).to(
        move |req, payload| {
            let pprof = pprof.clone();
            async move { serve(&pprof, req, payload).await }
        },
    ))
}

async fn serve(pprof: &pprof_core::Pprof, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    // actix-web speaks http 0.2; the core speaks http 1. Convert here only.
    let mut request = http::Request::builder()
        .method(req.method().as_str())
        .uri(req.uri().to_string());
    for (name, value) in req.headers() {
        request = request.header(name.as_str(), value.as_bytes());
    }
    if let Some(peer) = req.peer_addr() {
        request = request.extension(pprof_core::PeerAddr(peer));
    }
    // The body streams into the core, which reads it only when a route needs it.
    // A request actix accepted always converts; a default one would get 404.
    let mut request = request
        .body(pprof_core::StreamBody::new(payload))
        .unwrap_or_else(|_| http::Request::new(pprof_core::StreamBody::empty()));
    // actix-web keeps running a handler after its client hung up; with
    // `on_connect` installed we watch the socket and stop the profile then.
    let connection = req.conn_data::<Connection>().map(|c| c.0);
    if connection.is_none() {
        request
            .extensions_mut()
            .insert(pprof_core::MountNotice(NO_ON_CONNECT));
    }
    let watch = connection.zip(req.peer_addr());
    let client_gone = async move {
        match watch.and_then(|(fd, peer)| pprof_core::ClientSocket::from_fd(fd, peer)) {
            Some(socket) => socket.closed().await,
            None => std::future::pending().await,
        }
    };
    let Some(response) = pprof.handle_until(request, client_gone).await else {
        return HttpResponse::new(actix_web::http::StatusCode::NO_CONTENT); // nobody reads it
    };
    let (parts, body) = response.into_parts();
    let status = actix_web::http::StatusCode::from_u16(parts.status.as_u16())
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = HttpResponse::build(status);
    for (name, value) in &parts.headers {
        out.insert_header((name.as_str(), value.as_bytes()));
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    out.body(body)
}

/// The descriptor a connection was accepted on, kept in its connection
/// data by [`on_connect`]; no second descriptor is held.
#[derive(Clone, Copy, Debug)]
struct Connection(std::os::fd::RawFd);

/// What the index page says when [`on_connect`] is not in effect.
const NO_ON_CONNECT: &str = "pprof_actix::on_connect is not installed on this server \
(or was added after bind/listen, where actix-web ignores it): a profile whose client \
hangs up runs to its end. Add .on_connect(pprof_actix::on_connect) before .bind()/.listen().";

/// Let the pprof routes notice a client that hangs up in the middle of a
/// profile, so the profile (and the blocking work behind it) stops at once
/// and the profiler is free again (actix-web itself keeps running the
/// handler until it ends). Add it to the server **before** `bind` or
/// `listen`, which capture it:
/// `HttpServer::new(..).on_connect(pprof_actix::on_connect).bind(..)`.
/// Without it everything works, but a profile whose client left runs to
/// the end of its `seconds`; the index page then says so.
///
/// It records the connection's descriptor number only: a pprof request
/// duplicates it while it runs, so idle connections cost no descriptor.
pub fn on_connect(connection: &dyn Any, data: &mut Extensions) {
    if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        data.insert(Connection(tcp.as_raw_fd()));
    }
}

/// Label every request's samples with `http.route` (actix-web's matched
/// pattern, `/users/{id}`; none for a request no pattern matched, such as
/// one a `default_service` or `Files` at the root serves) and
/// `http.request.method`, and watch its polls
/// (a handler that blocks its worker shows in `/block`):
/// `App::new().wrap(pprof_actix::LabelRequests)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LabelRequests;

impl<S, B> Transform<S, ServiceRequest> for LabelRequests
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = LabelRequestsService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(LabelRequestsService { inner: service }))
    }
}

/// The service [`LabelRequests`] makes: the inner one, each request labeled.
#[derive(Debug)]
pub struct LabelRequestsService<S> {
    inner: S,
}

impl<S, B> Service<ServiceRequest> for LabelRequestsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = pprof_core::LabeledRequest<S::Future>;

    actix_web::dev::forward_ready!(inner);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let route = request.match_pattern();
        let method = request.method().as_str().to_owned();
        pprof_core::label_request(&method, route.as_deref(), self.inner.call(request))
    }
}
