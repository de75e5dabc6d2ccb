//! `cargo run -p axum-example -- --addr 127.0.0.1:3000`, then
//! `go tool pprof http://127.0.0.1:3000/debug/pprof/profile?seconds=10`.

use axum::{Router, routing::get};

#[cfg(feature = "pprof")]
pprof_axum::jemalloc_heap_profiling!();

fn app() -> Router {
    let app = Router::new().route("/", get(|| async { "hello\n" }));
    #[cfg(feature = "pprof")]
    let app = app.merge(pprof_axum::routes());
    app
}

/// Serve the app on `listener` until the process ends.
async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, app()).await
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
