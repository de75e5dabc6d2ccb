//! Noticing a client that hangs up, for servers that keep running a
//! handler after that (actix-web): see [`Pprof::handle_until`](crate::Pprof::handle_until).

use std::net::{SocketAddr, TcpStream};
use std::os::fd::RawFd;
use std::time::Duration;

/// A client's connection, watched for the client closing it.
///
/// Made from the descriptor number the server accepted the connection on
/// (recorded at accept time, which holds nothing) when a request arrives
/// that should stop if its client leaves: only then is the descriptor
/// duplicated, and only until the request ends, so a server with 10 000
/// open connections does not need 20 000 descriptors.
#[derive(Debug)]
pub struct ClientSocket {
    socket: TcpStream,
}

impl ClientSocket {
    /// The connection on descriptor `fd`, if it is still the one from
    /// `peer` (a descriptor number may have been closed and reused).
    pub fn from_fd(fd: RawFd, peer: SocketAddr) -> Option<Self> {
        let socket = TcpStream::from(crate::signals::duplicate_fd(fd)?);
        (socket.peer_addr().ok() == Some(peer)).then_some(Self { socket })
    }

    /// Completes once the client has closed the connection (looked at
    /// every 200 ms); never while it is open.
    pub async fn closed(self) {
        let mut probe = [0u8; 1];
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // The server's socket is non-blocking, and so is this duplicate
            // (they share the open file): 0 bytes means the client's FIN,
            // WouldBlock open and quiet, data open.
            match self.socket.peek(&mut probe) {
                Ok(0) => return,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return,
                _ => {}
            }
        }
    }
}

/// A line for the people who read the index page, put on the request by
/// an adapter that noticed something wrong with how the routes are
/// mounted (pprof-actix: `on_connect` missing, so a profile whose client
/// hangs up runs to its end). The index page shows it above the table.
#[derive(Debug, Clone)]
pub struct MountNotice(pub &'static str);
