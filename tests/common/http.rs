//! Blocking HTTP/1.1 on loopback and polling, for tests that talk to `keepwire run`'s endpoints
//! and the emulator's admin API without an HTTP client dependency.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Calls `f` every 20 ms until it returns `Some`, or panics after `secs` naming `what`.
pub fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[path = "../../src/cli/chaos/loopback_http.rs"]
pub mod loopback_http;

fn request(addr: SocketAddr, head: &str, body: &str) -> Option<(u16, String)> {
    loopback_http::request(
        addr,
        head,
        body,
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
}

/// `GET path`: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    request(addr, &format!("GET {path} HTTP/1.1\r\n"), "")
}

/// `POST path` with a JSON body: (status, body).
pub fn http_post(addr: SocketAddr, path: &str, json: &str) -> Option<(u16, String)> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        json.len()
    );
    request(addr, &head, json)
}
