//! `cargo run -p warp-example -- --addr 127.0.0.1:3000`, then
//! `go tool pprof http://127.0.0.1:3000/debug/pprof/profile?seconds=10`.

use warp::Filter;

#[cfg(feature = "pprof")]
pprof_warp::jemalloc_heap_profiling!();

/// Serve the app on `listener` until the process ends.
async fn serve(listener: tokio::net::TcpListener) {
    let hello = warp::path::end().map(|| "hello\n");
    #[cfg(feature = "pprof")]
    let hello = hello.or(pprof_warp::routes());
    warp::serve(hello).incoming(listener).run().await;
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
    serve(listener).await;
    Ok(())
}
