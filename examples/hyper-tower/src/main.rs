//! `cargo run -p hyper-tower-example -- --addr 127.0.0.1:3000`, then
//! `go tool pprof http://127.0.0.1:3000/debug/pprof/profile?seconds=10`.
//!
//! Any tower-shaped server (hyper, tonic, …) takes pprof-core's
//! `PprofLayer`: it answers `/debug/pprof/...` and passes the rest on.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

#[cfg(feature = "pprof")]
pprof_core::jemalloc_heap_profiling!();

async fn hello(
    _: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    Ok(http::Response::new(Full::new(Bytes::from_static(
        b"hello\n",
    ))))
}

/// Serve the app on `listener` until the process ends.
async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let service = tower::ServiceBuilder::new();
    #[cfg(feature = "pprof")]
    let service = service.layer(pprof_core::PprofLayer::new(pprof_core::Config::default()));
    let service = service.service(tower::service_fn(hello));
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // `--addr HOST:PORT`, default 127.0.0.1:3000.
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on http://{addr}/");
    serve(listener).await
}
