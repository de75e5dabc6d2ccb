//! `cargo run -p practice -- [--addr 127.0.0.1:6060] [--tick-ms N] [--eat-ms N]
//! [--steal-kib N] [--steal-limit-mib N] [--run-kib N] [--drink-ms N] [--howl-ms N]`

use std::time::Duration;

use practice::Sizes;

// jemalloc with its heap profiler on, so /heap and /allocs have data.
pprof_axum::jemalloc_heap_profiling!();

const USAGE: &str = "usage: practice [--addr HOST:PORT] [--tick-ms N] [--eat-ms N] [--steal-kib N] [--steal-limit-mib N] [--run-kib N] [--drink-ms N] [--howl-ms N]";

fn parse_args() -> Result<(String, Sizes), String> {
    let mut addr = "127.0.0.1:6060".to_owned();
    let mut sizes = Sizes::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--addr" => addr.clone_from(&value),
            "--tick-ms" => sizes.tick = Duration::from_millis(number()?),
            "--eat-ms" => sizes.eat = Duration::from_millis(number()?),
            "--steal-kib" => {
                sizes.steal_bytes = usize::try_from(number()? << 10).map_err(|e| e.to_string())?
            }
            "--steal-limit-mib" => {
                sizes.steal_limit = usize::try_from(number()? << 20).map_err(|e| e.to_string())?
            }
            "--run-kib" => {
                sizes.run_bytes = usize::try_from(number()? << 10).map_err(|e| e.to_string())?
            }
            "--drink-ms" => sizes.drink = Duration::from_millis(number()?),
            "--howl-ms" => sizes.howl = Duration::from_millis(number()?),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok((addr, sizes))
}

#[tokio::main]
async fn main() {
    let (addr, sizes) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("practice: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = practice::spawn_zoo(sizes) {
        eprintln!("practice: cannot start the zoo: {e}");
        std::process::exit(1);
    }
    eprintln!("practice: the zoo is open; pprof at http://{addr}/debug/pprof/");
    if let Err(e) = practice::serve(listener).await {
        eprintln!("practice: server failed: {e}");
        std::process::exit(1);
    }
}
