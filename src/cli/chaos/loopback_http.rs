//! Blocking HTTP/1.1 on loopback without an HTTP client: what `keepwire chaos --ha` asks its
//! replicas' endpoints, and what the tests ask `keepwire run` and the emulator's admin API
//! (`tests/common/http.rs` and `tests/ha.rs` include this file).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || body.len() < eol.saturating_add(2).saturating_add(size) {
            return out;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[(eol + 4 + size).min(body.len())..];
    }
}

/// Sends `head` (request line and headers, each ending in CRLF; `Host` and `Connection: close`
/// are added) and `body` to `addr`: (status, body), or `None` when it did not answer in time.
pub fn request(
    addr: SocketAddr,
    head: &str,
    body: &str,
    connect: Duration,
    answer: Duration,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, connect).ok()?;
    s.set_read_timeout(Some(answer)).ok()?;
    s.set_write_timeout(Some(answer)).ok()?;
    write!(s, "{head}Host: {addr}\r\nConnection: close\r\n\r\n{body}").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &raw[split + 4..];
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Some((status, String::from_utf8_lossy(&body).to_string()))
}

/// `GET path` answered within `timeout`: (status, body).
pub fn get_within(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, String)> {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\n"),
        "",
        timeout,
        timeout,
    )
}
