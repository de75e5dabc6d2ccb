//! pprof-actix's connection watch as a user meets it: it costs no
//! descriptor per idle connection, and a server where it is missing (or
//! added after `listen`, where actix-web ignores it) says so on the index.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pprof_core::Config;
use pprof_tests::{OnConnect, get, start_actix_with};

/// The two tests start servers (threads, sockets, epoll descriptors):
/// one at a time, so the count of one is not the other's.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Descriptors open in this process (the servers run in it).
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// [`open_descriptors`] once it has stopped moving (the same over 100 ms,
/// for at most 3 s): a connection the server has answered and is still
/// closing is not counted, or not counted in a later reading.
fn settled_descriptors() -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = open_descriptors();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = open_descriptors();
        if now == seen || Instant::now() > deadline {
            return now;
        }
        seen = now;
    }
}

/// A keep-alive connection that has been answered once (so the server
/// accepted it and ran `on_connect`).
fn answered_connection(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .write_all(format!("GET /hello HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("write");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.ends_with(b"hello\n") {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "closed early");
        answer.extend_from_slice(&chunk[..n]);
    }
    stream
}

#[test]
fn idle_connections_cost_one_descriptor_each_not_two() {
    let _one = one_at_a_time();
    let addr = start_actix_with(Config::default(), OnConnect::BeforeListen);
    assert_eq!(get(addr, "/hello").status, 200);
    // The server may still be closing that request's socket.
    let before = settled_descriptors();
    let connections: Vec<TcpStream> = (0..100).map(|_| answered_connection(addr)).collect();
    // Each connection is two sockets here (the client's and the server's);
    // a duplicate per connection made it three.
    let grown = open_descriptors() - before;
    assert!(
        (200..240).contains(&grown),
        "100 connections opened {grown} descriptors"
    );
    drop(connections);
}

#[test]
fn the_index_says_when_on_connect_is_missing_or_too_late() {
    let _one = one_at_a_time();
    let notice = "pprof_actix::on_connect is not installed on this server";
    for (how, shown) in [
        (OnConnect::BeforeListen, false),
        (OnConnect::AfterListen, true),
        (OnConnect::Never, true),
    ] {
        let addr = start_actix_with(Config::default(), how);
        let index = get(addr, "/debug/pprof/");
        assert_eq!(index.status, 200);
        assert_eq!(
            index.text().contains(notice),
            shown,
            "{how:?}: {}",
            index.text()
        );
    }
}
