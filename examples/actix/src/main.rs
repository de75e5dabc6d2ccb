//! `cargo run -p actix-example -- --addr 127.0.0.1:3000`, then
//! `go tool pprof http://127.0.0.1:3000/debug/pprof/profile?seconds=10`.

use actix_web::{App, HttpServer, web};

#[cfg(feature = "pprof")]
pprof_actix::jemalloc_heap_profiling!();

/// Serve the app on `listener` until the process ends.
async fn serve(listener: std::net::TcpListener) -> std::io::Result<()> {
    HttpServer::new(|| {
        let app = App::new().route("/", web::get().to(|| async { "hello\n" }));
        // Serves /debug/pprof/..., like chi's r.Mount("/debug", middleware.Profiler()).
        #[cfg(feature = "pprof")]
        let app = app.service(pprof_actix::scope("/debug"));
        app
    })
    // Lets a CPU profile stop as soon as its client hangs up.
    .on_connect(pprof_on_connect)
    .listen(listener)?
    .run()
    .await
}

#[cfg(feature = "pprof")]
use pprof_actix::on_connect as pprof_on_connect;
#[cfg(not(feature = "pprof"))]
fn pprof_on_connect(_: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {}

fn main() -> std::io::Result<()> {
    // `--addr HOST:PORT`, default 127.0.0.1:3000.
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = std::net::TcpListener::bind(&addr)?;
    eprintln!("listening on http://{addr}/");
    actix_web::rt::System::new().block_on(serve(listener))
}
