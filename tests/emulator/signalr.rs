//! The SignalR market hub: token service, negotiate, upgrade checks, handshake, pings, quote
//! streams, every `HubFault`, token expiry.

use std::time::{Duration, Instant};

use awc::error::WsClientError;
use awc::ws::{Frame, Message};
use futures_util::SinkExt;
use keepwire::dialect::signalr::wire::{
    connect_url, Close, Completion, Framer, HandshakeRequest, HandshakeResponse, HubMessage,
    Invocation, Negotiation, Outcome,
};
use keepwire::emulator::signalr::{HubConfig, HubFault};
use keepwire::emulator::{EmulatorConfig, EmulatorHandle, Fault};
use serde_json::{json, Value};

use crate::support::{client, next, parse, start, wait_until, Got, Ws, SOON};

const CONTRACT: &str = "CON.F.US.EP.U25";

/// A config with fast hub timers.
fn hub_config() -> EmulatorConfig {
    EmulatorConfig {
        hub: HubConfig {
            ping_interval: Duration::from_millis(100),
            client_timeout: Duration::from_secs(5),
            quote_interval: Duration::from_millis(20),
            ..HubConfig::default()
        },
        ..EmulatorConfig::default()
    }
}

/// POSTs JSON (or nothing) to a URL with an optional bearer token.
async fn post(
    c: &awc::Client,
    url: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = c.post(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let mut res = match body {
        Some(body) => req.send_json(&body).await,
        None => req.send().await,
    }
    .expect("request");
    let body = res.body().await.expect("body");
    (res.status().as_u16(), parse(&body))
}

/// Logs in with the default demo key.
async fn login(c: &awc::Client, emu: &EmulatorHandle) -> String {
    let (status, body) = post(
        c,
        &format!("{}/Auth/loginKey", emu.api_url()),
        Some(json!({"userName":"kwuser1","apiKey":"kw-demo-key"})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true, "{body}");
    body["token"].as_str().expect("a token").to_owned()
}

/// Negotiates (version 1) with a token.
async fn negotiate(c: &awc::Client, emu: &EmulatorHandle, token: Option<&str>) -> (u16, Value) {
    post(
        c,
        &format!("{}/negotiate?negotiateVersion=1", emu.hub_url()),
        None,
        token,
    )
    .await
}

/// Negotiates and returns the connection token.
async fn connection_token(c: &awc::Client, emu: &EmulatorHandle, token: &str) -> String {
    let (status, body) = negotiate(c, emu, Some(token)).await;
    assert_eq!(status, 200, "{body}");
    match Negotiation::parse(body.to_string().as_bytes()).expect("a negotiate answer") {
        Negotiation::Connect(c) => c.connection_token,
        other => panic!("not a connect answer: {other:?}"),
    }
}

/// Dials the hub socket for a connection id, the token in the header.
async fn dial(
    c: &awc::Client,
    emu: &EmulatorHandle,
    token: Option<&str>,
    id: &str,
) -> Result<impl Ws, WsClientError> {
    let mut req = c.ws(connect_url(&emu.hub_url(), id, None));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.connect().await.map(|(_, ws)| ws)
}

/// The status of a refused upgrade.
fn refused<T>(result: Result<T, WsClientError>) -> u16 {
    match result {
        Err(WsClientError::InvalidResponseStatus(status)) => status.as_u16(),
        Err(other) => panic!("expected a refused upgrade, got {other:?}"),
        Ok(_) => panic!("expected a refused upgrade, got a socket"),
    }
}

/// What reading the hub gave.
#[derive(Debug)]
enum Read {
    /// One record.
    Record(Vec<u8>),
    /// The socket ended (close frame or end of stream).
    Ended,
    /// Nothing within the wait.
    Timeout,
}

/// A hub socket with record reassembly.
struct HubSocket<W> {
    /// The socket.
    ws: W,
    /// Record reassembly.
    framer: Framer,
    /// Text frames received.
    frames: usize,
    /// Text frames that did not end with a separator.
    partial_frames: usize,
}

impl<W: Ws> HubSocket<W> {
    fn new(ws: W) -> Self {
        Self {
            ws,
            framer: Framer::default(),
            frames: 0,
            partial_frames: 0,
        }
    }

    async fn send(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    async fn send_message(&mut self, message: HubMessage) {
        self.send(message.encode()).await;
    }

    /// The next record, waiting at most `wait`.
    async fn read(&mut self, wait: Duration) -> Read {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(record) = self.framer.next_record() {
                return Read::Record(record);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match next(&mut self.ws, left).await {
                Got::Frame(Frame::Text(bytes)) => {
                    self.frames += 1;
                    if bytes.last() != Some(&0x1e) {
                        self.partial_frames += 1;
                    }
                    self.framer.push(&bytes).expect("records within the cap");
                }
                Got::Frame(Frame::Close(_)) | Got::Ended | Got::Error(_) => return Read::Ended,
                Got::Frame(_) => {}
                Got::Timeout => return Read::Timeout,
            }
        }
    }

    /// Sends the handshake and returns the reply.
    async fn handshake(&mut self, request: &HandshakeRequest) -> HandshakeResponse {
        self.send(request.encode()).await;
        match self.read(SOON).await {
            Read::Record(record) => HandshakeResponse::parse(&record).expect("a handshake reply"),
            other => panic!("no handshake reply: {other:?}"),
        }
    }

    /// Reads until a hub message matching `pred` (skipping others); panics after [`SOON`].
    async fn expect(&mut self, pred: impl Fn(&HubMessage) -> bool) -> HubMessage {
        let deadline = Instant::now() + SOON;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left).await {
                Read::Record(record) => {
                    let message = HubMessage::parse(&record).expect("a hub message");
                    if pred(&message) {
                        return message;
                    }
                }
                other => panic!("expected a matching hub message, got {other:?}"),
            }
        }
    }

    /// Every hub message during `window`, and whether the socket ended.
    async fn collect(&mut self, window: Duration) -> (Vec<HubMessage>, bool) {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (out, false);
            }
            match self.read(left).await {
                Read::Record(record) => {
                    out.push(HubMessage::parse(&record).expect("a hub message"))
                }
                Read::Ended => return (out, true),
                Read::Timeout => {}
            }
        }
    }

    /// Reads until the socket ends (panics after [`SOON`]); returns the messages seen.
    async fn until_end(&mut self) -> Vec<HubMessage> {
        let (messages, ended) = self.collect(SOON).await;
        assert!(ended, "the socket did not end; got {messages:?}");
        messages
    }
}

/// A live connection: login, negotiate, dial, handshake.
async fn connect(c: &awc::Client, emu: &EmulatorHandle) -> HubSocket<impl Ws> {
    let token = login(c, emu).await;
    let id = connection_token(c, emu, &token).await;
    let mut hub = HubSocket::new(dial(c, emu, Some(&token), &id).await.expect("upgrade"));
    assert_eq!(
        hub.handshake(&HandshakeRequest::json()).await,
        HandshakeResponse::Ok
    );
    hub
}

fn is_quote(m: &HubMessage) -> bool {
    matches!(m, HubMessage::Invocation(i) if i.target == "GatewayQuote")
}

fn is_completion(m: &HubMessage, id: &str) -> bool {
    matches!(m, HubMessage::Completion(c) if c.invocation_id == id)
}

fn subscribe(id: &str) -> HubMessage {
    HubMessage::Invocation(Invocation::invoke(
        id,
        "SubscribeContractQuotes",
        vec![json!(CONTRACT)],
    ))
}

#[actix_rt::test]
async fn login_and_validate() {
    let emu = start(hub_config());
    let c = client(&emu);
    let login_url = format!("{}/Auth/loginKey", emu.api_url());
    let (status, body) = post(
        &c,
        &login_url,
        Some(json!({"userName":"kwuser1","apiKey":"wrong"})),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], false);
    assert_eq!(body["errorCode"], 3);
    assert!(body["token"].is_null());
    let (status, body) = post(&c, &login_url, Some(json!({"nope":1})), None).await;
    assert_eq!((status, &body["success"]), (200, &json!(false)));

    let token = login(&c, &emu).await;
    let validate_url = format!("{}/Auth/validate", emu.api_url());
    let (status, body) = post(&c, &validate_url, None, Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    assert_eq!(body["errorCode"], 0);
    let new_token = body["newToken"].as_str().unwrap();
    assert_ne!(new_token, token);
    // Both the new and (until it expires) the old token work.
    assert_eq!(negotiate(&c, &emu, Some(new_token)).await.0, 200);
    assert_eq!(negotiate(&c, &emu, Some(&token)).await.0, 200);
    assert_eq!(post(&c, &validate_url, None, Some("bogus")).await.0, 401);
    assert_eq!(post(&c, &validate_url, None, None).await.0, 401);

    let h = emu.counters().hub;
    assert_eq!((h.logins, h.logins_rejected), (3, 2));
    assert_eq!((h.validates, h.validates_rejected), (3, 2));
}

#[actix_rt::test]
async fn negotiate_requires_a_live_token() {
    let emu = start(hub_config());
    let c = client(&emu);
    assert_eq!(negotiate(&c, &emu, None).await.0, 401);
    assert_eq!(negotiate(&c, &emu, Some("bogus")).await.0, 401);
    let token = login(&c, &emu).await;
    let (status, body) = negotiate(&c, &emu, Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["negotiateVersion"], 1);
    assert_eq!(
        body["availableTransports"],
        json!([{"transport":"WebSockets","transferFormats":["Text","Binary"]}])
    );
    let Ok(Negotiation::Connect(v1)) = Negotiation::parse(body.to_string().as_bytes()) else {
        panic!("not a connect answer: {body}");
    };
    assert!(v1.offers_websockets_text());
    assert_ne!(v1.connection_id, v1.connection_token);

    // Version 0: no connectionToken; the socket presents the connectionId.
    let (status, v0) = post(
        &c,
        &format!("{}/negotiate", emu.hub_url()),
        None,
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert!(v0.get("connectionToken").is_none(), "{v0}");
    let id = v0["connectionId"].as_str().unwrap();
    let mut hub = HubSocket::new(dial(&c, &emu, Some(&token), id).await.expect("upgrade"));
    assert_eq!(
        hub.handshake(&HandshakeRequest::json()).await,
        HandshakeResponse::Ok
    );

    let h = emu.counters().hub;
    assert_eq!((h.negotiates, h.negotiate_rejected), (4, 2));
}

#[actix_rt::test]
async fn upgrade_checks_token_and_single_use_id() {
    let emu = start(hub_config());
    let c = client(&emu);
    let token = login(&c, &emu).await;
    let id = connection_token(&c, &emu, &token).await;
    assert_eq!(refused(dial(&c, &emu, None, &id).await), 401);
    assert_eq!(refused(dial(&c, &emu, Some("bogus"), &id).await), 401);
    assert_eq!(refused(dial(&c, &emu, Some(&token), "unknown").await), 404);

    // The token may also come as `access_token` (what browsers send).
    let url = connect_url(&emu.hub_url(), &id, Some(&token));
    let (_, ws) = c
        .ws(url)
        .connect()
        .await
        .expect("upgrade with access_token");
    let mut hub = HubSocket::new(ws);
    assert_eq!(refused(dial(&c, &emu, Some(&token), &id).await), 409);
    assert_eq!(
        hub.handshake(&HandshakeRequest::json()).await,
        HandshakeResponse::Ok
    );
    wait_until("one open connection", || {
        emu.counters().hub.open_connections == 1
    })
    .await;

    // The client leaves; its id is spent.
    hub.send_message(HubMessage::Close(Close::default())).await;
    hub.until_end().await;
    wait_until("no open connection", || {
        emu.counters().hub.open_connections == 0
    })
    .await;
    assert_eq!(refused(dial(&c, &emu, Some(&token), &id).await), 404);

    let h = emu.counters().hub;
    assert_eq!(h.upgrades_accepted, 1);
    assert_eq!(h.upgrades_rejected, 5);
    assert_eq!(h.closes_received, 1);
}

#[actix_rt::test]
async fn handshake_ping_subscribe_quotes_unsubscribe() {
    let emu = start(hub_config());
    let c = client(&emu);
    let mut hub = connect(&c, &emu).await;
    hub.send_message(HubMessage::Ping).await;
    hub.expect(|m| *m == HubMessage::Ping).await;

    hub.send_message(subscribe("1")).await;
    let done = hub.expect(|m| is_completion(m, "1")).await;
    assert_eq!(
        done,
        HubMessage::Completion(Completion::result("1", Value::Null))
    );
    let HubMessage::Invocation(quote) = hub.expect(is_quote).await else {
        unreachable!()
    };
    assert_eq!(quote.invocation_id, None);
    assert_eq!(quote.arguments[0], json!(CONTRACT));
    let payload = &quote.arguments[1];
    assert_eq!(payload["symbol"], "F.US.EP");
    for field in ["lastPrice", "bestBid", "bestAsk"] {
        assert!(payload[field].is_f64(), "{field} in {payload}");
    }
    assert!(payload["timestamp"].as_str().unwrap().ends_with('Z'));

    // Unknown methods: an error Completion with an id, nothing without one.
    hub.send_message(HubMessage::Invocation(Invocation::send("Nope", vec![])))
        .await;
    hub.send_message(HubMessage::Invocation(Invocation::invoke(
        "2",
        "Nope",
        vec![],
    )))
    .await;
    let HubMessage::Completion(err) = hub.expect(|m| matches!(m, HubMessage::Completion(_))).await
    else {
        unreachable!()
    };
    assert_eq!(err.invocation_id, "2");
    assert!(matches!(err.outcome, Outcome::Error(ref e) if e.contains("Nope")));
    // A subscribe without its argument fails with an error Completion.
    hub.send_message(HubMessage::Invocation(Invocation::invoke(
        "3",
        "SubscribeContractQuotes",
        vec![],
    )))
    .await;
    let HubMessage::Completion(err) = hub.expect(|m| is_completion(m, "3")).await else {
        unreachable!()
    };
    assert!(matches!(err.outcome, Outcome::Error(_)));

    hub.send_message(HubMessage::Invocation(Invocation::invoke(
        "4",
        "UnsubscribeContractQuotes",
        vec![json!(CONTRACT)],
    )))
    .await;
    hub.expect(|m| is_completion(m, "4")).await;
    let (after, ended) = hub.collect(Duration::from_millis(200)).await;
    assert!(!ended);
    assert!(!after.iter().any(is_quote), "{after:?}");
    assert!(after.contains(&HubMessage::Ping), "server pings: {after:?}");

    let h = emu.counters().hub;
    assert_eq!(h.handshakes, 1);
    assert_eq!(h.subscribe_invocations, 2);
    assert_eq!(h.unsubscribe_invocations, 1);
    assert_eq!(h.unknown_invocations, 2);
    assert_eq!(h.pings_received, 1);
    assert!(h.quotes_sent >= 1 && h.pings_sent >= 1, "{h:?}");
}

#[actix_rt::test]
async fn wrong_protocol_gets_an_error_reply_then_close() {
    let emu = start(hub_config());
    let c = client(&emu);
    for request in [
        HandshakeRequest {
            protocol: "messagepack".into(),
            version: 1,
        },
        HandshakeRequest {
            protocol: "json".into(),
            version: 7,
        },
    ] {
        let token = login(&c, &emu).await;
        let id = connection_token(&c, &emu, &token).await;
        let mut hub = HubSocket::new(dial(&c, &emu, Some(&token), &id).await.unwrap());
        let reply = hub.handshake(&request).await;
        assert!(matches!(reply, HandshakeResponse::Error(_)), "{reply:?}");
        hub.until_end().await;
    }
    let h = emu.counters().hub;
    assert_eq!((h.handshakes, h.handshake_errors), (0, 2));
}

#[actix_rt::test]
async fn a_silent_client_is_closed_after_the_client_timeout() {
    let mut config = hub_config();
    config.hub.client_timeout = Duration::from_millis(300);
    let emu = start(config);
    let c = client(&emu);
    let mut hub = connect(&c, &emu).await;
    let seen = hub.until_end().await;
    assert!(
        seen.iter().any(|m| matches!(
            m,
            HubMessage::Close(Close { error: Some(e), allow_reconnect: false }) if e.contains("timeout")
        )),
        "{seen:?}"
    );
    assert_eq!(emu.counters().hub.client_timeouts, 1);
}

#[actix_rt::test]
async fn expire_tokens_closes_with_unauthorized_and_refuses_old_tokens() {
    let emu = start(hub_config());
    let c = client(&emu);
    let token = login(&c, &emu).await;
    let id = connection_token(&c, &emu, &token).await;
    let mut hub = HubSocket::new(dial(&c, &emu, Some(&token), &id).await.unwrap());
    assert_eq!(
        hub.handshake(&HandshakeRequest::json()).await,
        HandshakeResponse::Ok
    );
    emu.inject(Fault::Hub(HubFault::ExpireTokens));
    let seen = hub.until_end().await;
    assert!(
        seen.contains(&HubMessage::Close(Close {
            error: Some("Unauthorized".into()),
            allow_reconnect: true
        })),
        "{seen:?}"
    );
    assert_eq!(negotiate(&c, &emu, Some(&token)).await.0, 401);
    let validate_url = format!("{}/Auth/validate", emu.api_url());
    assert_eq!(post(&c, &validate_url, None, Some(&token)).await.0, 401);
    // A fresh login works again.
    let fresh = login(&c, &emu).await;
    assert_eq!(negotiate(&c, &emu, Some(&fresh)).await.0, 200);
}

#[actix_rt::test]
async fn a_token_expiring_mid_stream_closes_its_connection() {
    let mut config = hub_config();
    config.hub.token_ttl = Duration::from_millis(400);
    let emu = start(config);
    let c = client(&emu);
    let token = login(&c, &emu).await;
    let mut hub = connect(&c, &emu).await;
    let seen = hub.until_end().await;
    assert!(
        seen.contains(&HubMessage::Close(Close {
            error: Some("Unauthorized".into()),
            allow_reconnect: true
        })),
        "{seen:?}"
    );
    assert_eq!(negotiate(&c, &emu, Some(&token)).await.0, 401);
}

#[actix_rt::test]
async fn reject_negotiate_and_reject_upgrade() {
    let emu = start(hub_config());
    let c = client(&emu);
    let token = login(&c, &emu).await;
    emu.inject(Fault::Hub(HubFault::RejectNegotiate {
        status: 503,
        count: 2,
    }));
    assert_eq!(negotiate(&c, &emu, Some(&token)).await.0, 503);
    assert_eq!(negotiate(&c, &emu, Some(&token)).await.0, 503);
    let id = connection_token(&c, &emu, &token).await;
    emu.inject(Fault::Hub(HubFault::RejectUpgrade {
        status: 403,
        count: 1,
    }));
    assert_eq!(refused(dial(&c, &emu, Some(&token), &id).await), 403);
    assert!(dial(&c, &emu, Some(&token), &id).await.is_ok());
    let h = emu.counters().hub;
    assert_eq!((h.negotiates, h.negotiate_rejected), (3, 2));
    assert_eq!((h.upgrades_accepted, h.upgrades_rejected), (1, 1));
}

#[actix_rt::test]
async fn close_fault_through_the_admin_api() {
    let emu = start(hub_config());
    let c = client(&emu);
    let mut hub = connect(&c, &emu).await;
    let (status, body) = post(
        &c,
        &format!("{}/admin/faults", emu.admin_url()),
        Some(json!({"fault":"hub","hub_fault":"close","allow_reconnect":false,"error":"maintenance"})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = hub.until_end().await;
    assert_eq!(
        seen.last(),
        Some(&HubMessage::Close(Close {
            error: Some("maintenance".into()),
            allow_reconnect: false
        }))
    );
    let counters: Value = {
        let mut res = c
            .get(format!("{}/admin/counters", emu.admin_url()))
            .send()
            .await
            .unwrap();
        parse(&res.body().await.unwrap())
    };
    assert_eq!(counters["hub"]["closes_sent"], 1, "{counters}");
}

#[actix_rt::test]
async fn drop_aborts_without_a_close() {
    let emu = start(hub_config());
    let c = client(&emu);
    let mut hub = connect(&c, &emu).await;
    hub.send_message(subscribe("1")).await;
    hub.expect(is_quote).await;
    emu.inject(Fault::Hub(HubFault::Drop));
    let seen = hub.until_end().await;
    assert!(
        !seen.iter().any(|m| matches!(m, HubMessage::Close(_))),
        "{seen:?}"
    );
    assert_eq!(emu.counters().hub.closes_sent, 0);
    wait_until("the dropped connection is forgotten", || {
        emu.counters().hub.open_connections == 0
    })
    .await;
}

#[actix_rt::test]
async fn silent_goes_half_open() {
    let emu = start(hub_config());
    let c = client(&emu);
    let mut hub = connect(&c, &emu).await;
    hub.send_message(subscribe("1")).await;
    hub.expect(is_quote).await;
    emu.inject(Fault::Hub(HubFault::Silent));
    // Whatever was already queued may still arrive; then nothing at all, and no close.
    hub.collect(Duration::from_millis(100)).await;
    hub.send_message(HubMessage::Invocation(Invocation::invoke(
        "2",
        "Nope",
        vec![],
    )))
    .await;
    let (seen, ended) = hub.collect(Duration::from_millis(500)).await;
    assert!(!ended, "a half-open socket does not close");
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(emu.counters().hub.open_connections, 1);
    // New connections are normal.
    let mut fresh = connect(&c, &emu).await;
    fresh.expect(|m| *m == HubMessage::Ping).await;
}

#[actix_rt::test]
async fn split_frames_cross_frame_boundaries() {
    let emu = start(hub_config());
    let c = client(&emu);
    let mut hub = connect(&c, &emu).await;
    hub.send_message(subscribe("1")).await;
    hub.expect(is_quote).await;
    emu.inject(Fault::Hub(HubFault::SplitFrames));
    // Let the fault land, then count frames from here on.
    hub.collect(Duration::from_millis(100)).await;
    let before = hub.partial_frames;
    let mut quotes = 0;
    while quotes < 5 {
        hub.expect(is_quote).await;
        quotes += 1;
    }
    assert!(
        hub.partial_frames > before,
        "messages must be split across frames ({} frames, {} partial)",
        hub.frames,
        hub.partial_frames
    );
}

#[actix_rt::test]
async fn handshake_error_fault_refuses_the_next_handshakes() {
    let emu = start(hub_config());
    let c = client(&emu);
    emu.inject(Fault::Hub(HubFault::HandshakeError { count: 1 }));
    let token = login(&c, &emu).await;
    let id = connection_token(&c, &emu, &token).await;
    let mut hub = HubSocket::new(dial(&c, &emu, Some(&token), &id).await.unwrap());
    let reply = hub.handshake(&HandshakeRequest::json()).await;
    assert!(matches!(reply, HandshakeResponse::Error(_)), "{reply:?}");
    hub.until_end().await;
    // The next one is normal.
    let _hub = connect(&c, &emu).await;
    let h = emu.counters().hub;
    assert_eq!((h.handshakes, h.handshake_errors), (1, 1));
}

#[actix_rt::test]
async fn several_records_per_frame_and_split_client_records() {
    let emu = start(hub_config());
    let c = client(&emu);
    let token = login(&c, &emu).await;
    let id = connection_token(&c, &emu, &token).await;
    let mut hub = HubSocket::new(dial(&c, &emu, Some(&token), &id).await.unwrap());
    // The handshake and the first invocation in one frame, the invocation's tail in the next.
    let mut first = HandshakeRequest::json().encode();
    let call = subscribe("1").encode();
    let (head, tail) = call.split_at(10);
    first.push_str(head);
    hub.send(first).await;
    hub.send(tail.to_owned()).await;
    match hub.read(SOON).await {
        Read::Record(record) => assert_eq!(
            HandshakeResponse::parse(&record).unwrap(),
            HandshakeResponse::Ok
        ),
        other => panic!("no handshake reply: {other:?}"),
    }
    hub.expect(|m| is_completion(m, "1")).await;
    // Garbage closes the connection with an error.
    hub.send("{not json\u{1e}".to_owned()).await;
    let seen = hub.until_end().await;
    assert!(
        seen.iter()
            .any(|m| matches!(m, HubMessage::Close(Close { error: Some(_), .. }))),
        "{seen:?}"
    );
    assert_eq!(emu.counters().hub.protocol_errors, 1);
}
