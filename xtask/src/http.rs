//! The bit of HTTP the harnesses share: one request on its own
//! connection, and reading the whole response.

use std::io::{Read, Write};
use std::net::TcpStream;

/// The status code and body of a whole HTTP/1.1 response (`Connection:
/// close`), de-chunked when it came chunked (Go's server chunks profiles).
pub(crate) fn split_response(raw: &[u8]) -> (u16, Vec<u8>) {
    let status = String::from_utf8_lossy(raw.get(9..12).unwrap_or_default())
        .parse()
        .unwrap_or(0);
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (status, Vec::new());
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return (status, body.to_vec());
    }
    let (mut out, mut rest) = (Vec::new(), body);
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 || rest.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[(eol + 4 + size).min(rest.len())..];
    }
    (status, out)
}

/// Send `request` and read the whole answer (`Connection: close`).
pub(crate) fn exchange(addr: &str, request: &str) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    Ok(split_response(&raw))
}
