//! Helpers shared by the emulator tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::ws::ProtocolError;
use awc::error::WsClientError;
use awc::ws::{Frame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use keepwire::emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::Value;

/// A client socket (awc's `Framed`, whose type is not nameable without actix-codec).
pub trait Ws:
    Stream<Item = Result<Frame, ProtocolError>> + Sink<Message, Error = ProtocolError> + Unpin
{
}

impl<T> Ws for T where
    T: Stream<Item = Result<Frame, ProtocolError>> + Sink<Message, Error = ProtocolError> + Unpin
{
}

/// Generous upper bound for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(3);

/// A config with fast heartbeats and market data.
pub fn fast_config() -> EmulatorConfig {
    EmulatorConfig {
        heartbeat_interval: Duration::from_millis(100),
        market_data_interval: Duration::from_millis(20),
        ..EmulatorConfig::default()
    }
}

/// Starts an emulator.
pub fn start(config: EmulatorConfig) -> EmulatorHandle {
    Emulator::start(config).expect("emulator starts")
}

/// An awc client for the emulator (trusting its certificate when it serves TLS).
pub fn client(emu: &EmulatorHandle) -> awc::Client {
    let connector = match emu.ca_pem() {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            awc::Connector::new().rustls_0_23(Arc::new(cfg))
        }
        None => awc::Connector::new(),
    };
    awc::Client::builder()
        .connector(connector)
        .timeout(Duration::from_secs(5))
        .finish()
}

/// GET a JSON endpoint under `/v1/api`.
pub async fn get(c: &awc::Client, emu: &EmulatorHandle, path: &str) -> (u16, Value) {
    let mut res = c
        .get(format!("{}/v1/api{path}", emu.base_url()))
        .send()
        .await
        .expect("request");
    let body = res.body().await.expect("body");
    (res.status().as_u16(), parse(&body))
}

/// POST to an endpoint under `/v1/api`, with a JSON body or none.
pub async fn post(
    c: &awc::Client,
    emu: &EmulatorHandle,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let req = c.post(format!("{}/v1/api{path}", emu.base_url()));
    let mut res = match body {
        Some(body) => req.send_json(&body).await,
        None => req.send().await,
    }
    .expect("request");
    let body = res.body().await.expect("body");
    (res.status().as_u16(), parse(&body))
}

/// Parses a body as JSON, or wraps it as a string.
pub fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// The cookie that authenticates a socket.
pub fn cookie(session: &str) -> String {
    format!(r#"api={{"session":"{session}"}}"#)
}

/// Dials the socket, with an optional `Cookie` header.
pub async fn try_connect(
    c: &awc::Client,
    emu: &EmulatorHandle,
    cookie: Option<&str>,
) -> Result<impl Ws, WsClientError> {
    let mut req = c.ws(emu.ws_url()).max_frame_size(1 << 20);
    if let Some(cookie) = cookie {
        req = req.header("Cookie", cookie);
    }
    req.connect().await.map(|(_, ws)| ws)
}

/// Dials the socket with the current session cookie and reads the greeting up to `act`.
pub async fn connect_live(c: &awc::Client, emu: &EmulatorHandle) -> impl Ws {
    let mut ws = try_connect(c, emu, Some(&cookie(&emu.session_id())))
        .await
        .expect("upgrade");
    expect_json(&mut ws, |v| v["topic"] == "act").await;
    ws
}

/// What reading a socket gave.
#[derive(Debug)]
pub enum Got {
    /// A frame.
    Frame(Frame),
    /// The stream ended (connection closed).
    Ended,
    /// A protocol error (shown through `Debug` in failure messages).
    Error(#[allow(dead_code)] ProtocolError),
    /// Nothing within the wait.
    Timeout,
}

/// Reads the next frame, waiting at most `wait`.
pub async fn next(ws: &mut impl Ws, wait: Duration) -> Got {
    match actix_rt::time::timeout(wait, ws.next()).await {
        Err(_) => Got::Timeout,
        Ok(None) => Got::Ended,
        Ok(Some(Err(err))) => Got::Error(err),
        Ok(Some(Ok(frame))) => Got::Frame(frame),
    }
}

/// Reads until a JSON text message matching `pred` (skipping others); panics after [`SOON`].
pub async fn expect_json(ws: &mut impl Ws, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + SOON;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next(ws, left).await {
            Got::Frame(Frame::Text(bytes)) => {
                let value = parse(&bytes);
                if pred(&value) {
                    return value;
                }
            }
            Got::Frame(_) => {}
            other => panic!("expected a matching message, got {other:?}"),
        }
    }
}

/// Every JSON text message received during `window` (panics if the socket ends).
pub async fn collect_json(ws: &mut impl Ws, window: Duration) -> Vec<Value> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        match next(ws, left).await {
            Got::Frame(Frame::Text(bytes)) => out.push(parse(&bytes)),
            Got::Frame(_) | Got::Timeout => {}
            other => panic!("socket ended while collecting: {other:?}"),
        }
    }
}

/// Sends a text message.
pub async fn send(ws: &mut impl Ws, text: &str) {
    ws.send(Message::Text(text.to_owned().into()))
        .await
        .expect("send");
}

/// Whether a message is smd data for a conid.
pub fn is_smd(v: &Value, conid: u64) -> bool {
    v["topic"] == format!("smd+{conid}")
}

/// Polls `cond` until it holds; panics after [`SOON`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + SOON;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}
