//! The IBKR WebSocket (`GET /v1/api/ws`): upgrade checks, then one task per socket that owns
//! every frame it writes (so it can send non-UTF-8 text, fragments, any close code, or vanish).

use std::sync::Arc;

use actix_http::ws::ProtocolError;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use super::rest::{error_json, too_many_requests};
use super::smd::{parse_fields, MarketBook};
use crate::emulator::config::StsStyle;
use crate::emulator::cookie::api_session;
use crate::emulator::state::{
    deadline_after, epoch_ms, Shared, SocketCmd, ACCOUNT_ID, SERVER_NAME, SERVER_VERSION,
};
use crate::emulator::wsframe::{self, Incoming};
use crate::emulator::wsloop::{self, Connection, Flow};

/// `GET /v1/api/ws`: applies the upgrade faults and the cookie check, then hands the connection
/// to a socket task.
pub(super) async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let cookie = api_session(req.headers());
    if let Some(rejection) = check_upgrade(&shared, cookie.as_deref()) {
        shared.lock().counters.ws_upgrades_rejected += 1;
        return rejection;
    }
    let (response, out_tx) = match wsframe::accept(&req) {
        Ok(accepted) => accepted,
        Err(err) => {
            shared.lock().counters.ws_upgrades_rejected += 1;
            return HttpResponse::from_error(err);
        }
    };
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let replica = super::rest::replica_of(&req);
    shared
        .lock()
        .claim(replica.as_deref(), super::rest::token_of(&req));
    let id = shared.register_socket(cmd_tx, replica.clone());
    shared.lock().counters.ws_upgrades_accepted += 1;
    tracing::debug!(id, cookie = cookie.is_some(), "emulator: socket accepted");
    let task = SocketTask {
        id,
        shared: shared.into_inner(),
        out: out_tx,
        phase: Phase::AwaitingSession,
        book: MarketBook::default(),
        fragment_next: false,
        replica,
    };
    actix_web::rt::spawn(task.run(payload, cmd_rx, cookie.is_some()));
    response
}

/// The answer to an upgrade that must not succeed (penalty box, server error, rejection fault,
/// wrong session cookie), if any.
fn check_upgrade(shared: &Shared, cookie: Option<&str>) -> Option<HttpResponse> {
    let mut st = shared.lock();
    if let Some(left) = st.penalty_left() {
        st.counters.rate_limited += 1;
        return Some(too_many_requests(left));
    }
    if let Some(status) = st.budgets.upgrade_error.take() {
        return Some(error_json(status, "Service Unavailable"));
    }
    if let Some(status) = st.budgets.reject_upgrade.take() {
        return Some(error_json(status, "upgrade rejected"));
    }
    match cookie {
        Some(session) if session != st.session_id => Some(error_json(401, "not authenticated")),
        _ => None,
    }
}

/// Where a socket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Opened without a cookie: waiting for `{"session":"<id>"}`.
    AwaitingSession,
    /// Authenticated: data flows.
    Live,
    /// Saw `authenticated:false`: heartbeats and replies only, never data again.
    Deauthenticated,
    /// Half-open: sends nothing at all, ever.
    HalfOpen,
}

/// One open socket (unregistered when its task ends or is dropped with its worker).
struct SocketTask {
    /// Registry id.
    id: u64,
    /// Shared state.
    shared: Arc<Shared>,
    /// Encoded frames to the client (the response body).
    out: UnboundedSender<Bytes>,
    /// Life-cycle phase.
    phase: Phase,
    /// Active smd streams.
    book: MarketBook,
    /// Send the next smd message in fragments.
    fragment_next: bool,
    /// The replica that opened it (`X-Keepwire-Replica`), if it named one.
    replica: Option<String>,
}

impl Drop for SocketTask {
    fn drop(&mut self) {
        self.shared.unregister_socket(self.id);
    }
}

impl SocketTask {
    /// Serves the socket until the client leaves or a fault ends it.
    async fn run(
        mut self,
        payload: web::Payload,
        cmds: UnboundedReceiver<SocketCmd>,
        cookie_ok: bool,
    ) {
        if cookie_ok {
            self.greet();
        } else {
            self.send_json(&json!({ "message": "waiting for session" }));
        }
        let hb_every = self.shared.heartbeat_interval;
        let md_every = self.shared.market_data_interval;
        let hb = wsloop::timer(Instant::from_std(deadline_after(hb_every)), hb_every);
        let md = wsloop::timer(Instant::from_std(deadline_after(md_every)), md_every);
        wsloop::serve(&mut self, payload, cmds, hb, md).await;
        tracing::debug!(id = self.id, "emulator: socket ended");
    }

    /// Sends one text message (any bytes) unless half-open.
    fn send_raw(&self, payload: &[u8]) {
        if self.phase != Phase::HalfOpen {
            self.push(wsframe::text(payload));
            self.shared.count_sent(1);
        }
    }

    /// Sends one JSON message unless half-open.
    fn send_json(&self, value: &Value) {
        self.send_raw(value.to_string().as_bytes());
    }

    /// The connect sequence: system, sts (per style), and act when authenticated.
    fn greet(&mut self) {
        let brokerage = self.shared.lock().brokerage_for(self.replica.as_deref());
        self.send_json(&json!({
            "topic": "system",
            "success": self.shared.username,
            "isFT": false,
            "isPaper": true,
        }));
        for sts in sts_messages(
            self.shared.sts_style,
            brokerage.socket_authenticated(),
            brokerage.competing(),
            &self.shared.username,
        ) {
            self.send_json(&sts);
        }
        if brokerage.socket_authenticated() {
            self.send_json(&json!({
                "topic": "act",
                "args": {
                    "accounts": [ACCOUNT_ID],
                    "acctProps": { ACCOUNT_ID: { "hasChildAccounts": false, "supportsCashQty": true } },
                    "aliases": { ACCOUNT_ID: ACCOUNT_ID },
                    "allowFeatures": { "showGFIS": true },
                    "chartPeriods": {},
                    "groups": [],
                    "profiles": [],
                    "selectedAccount": ACCOUNT_ID,
                    "serverInfo": { "serverName": SERVER_NAME, "serverVersion": SERVER_VERSION },
                    "sessionId": self.shared.lock().session_id,
                    "isFT": false,
                    "isPaper": true,
                },
            }));
            self.phase = Phase::Live;
        } else {
            self.phase = Phase::Deauthenticated;
        }
    }

    /// Handles one text command.
    fn on_text(&mut self, text: &str) {
        if text == "tic" {
            self.on_tic();
            return;
        }
        if self.phase == Phase::AwaitingSession {
            let current = self.shared.lock().session_id.clone();
            let offered = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.get("session")?.as_str().map(str::to_owned));
            if offered.as_deref() == Some(current.as_str()) {
                self.greet();
            } else {
                self.send_json(&json!({ "message": "waiting for session" }));
            }
            return;
        }
        if text.starts_with("ech+") {
            self.send_json(&json!({ "topic": text, "alive": true, "lastAccessed": epoch_ms() }));
        } else if let Some(rest) = text.strip_prefix("smd+") {
            self.on_smd(rest);
        } else if let Some(rest) = text.strip_prefix("umd+") {
            self.shared.lock().counters.umd += 1;
            if let Some(conid) = conid_of(rest) {
                self.book.unsubscribe(conid);
            }
        } else {
            self.topic_unknown(text);
        }
    }

    /// `tic`: the keepalive reply.
    fn on_tic(&self) {
        let session = {
            let mut st = self.shared.lock();
            st.counters.tic += 1;
            st.session_id.clone()
        };
        self.send_json(&json!({
            "topic": "tic",
            "alive": true,
            "id": session,
            "lastAccessed": epoch_ms(),
        }));
    }

    /// `smd+<conid>+{args}`: start or refresh a stream (ignored unless live).
    fn on_smd(&mut self, rest: &str) {
        self.shared.lock().counters.smd_subscribe += 1;
        let Some(conid) = conid_of(rest) else {
            self.topic_unknown(&format!("smd+{rest}"));
            return;
        };
        if self.phase == Phase::Live {
            let args = rest.split_once('+').map_or("", |(_, args)| args);
            self.book.subscribe(conid, parse_fields(args));
        }
    }

    /// The IBKR answer to anything it does not know (the topic is the first 3 characters).
    fn topic_unknown(&self, text: &str) {
        let topic: String = text.chars().take(3).collect();
        self.send_json(&json!({
            "error": format!("Topic unknown '{topic}'"),
            "code": 1,
            "topic": topic,
        }));
    }
}

impl Connection for SocketTask {
    type Cmd = SocketCmd;

    fn out(&self) -> &UnboundedSender<Bytes> {
        &self.out
    }

    /// A client broke the protocol: close with 1002 (or vanish when half-open).
    fn on_protocol_error(&mut self, err: &ProtocolError) -> Flow {
        tracing::debug!(id = self.id, %err, "emulator: client protocol error");
        if self.phase != Phase::HalfOpen {
            self.push(wsframe::close(1002, "protocol error"));
        }
        Flow::End
    }

    /// Handles one complete client message.
    fn on_message(&mut self, message: Incoming) -> Flow {
        if self.phase == Phase::HalfOpen {
            return Flow::Continue;
        }
        match message {
            Incoming::Ping(payload) => self.push(wsframe::pong(&payload)),
            Incoming::Pong => self.shared.lock().counters.pongs_received += 1,
            Incoming::Binary(_) => {}
            Incoming::Close(reason) => {
                self.push(wsframe::close_echo(reason.as_ref()));
                return Flow::End;
            }
            Incoming::Text(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                self.on_text(text.trim());
            }
        }
        Flow::Continue
    }

    /// Handles a command from the emulator.
    fn on_cmd(&mut self, cmd: SocketCmd) -> Flow {
        match cmd {
            SocketCmd::Drop => return Flow::End,
            SocketCmd::Close { code, reason } => {
                self.push(wsframe::close(code, &reason));
                return Flow::End;
            }
            SocketCmd::Deauthenticate { competing } => {
                if matches!(self.phase, Phase::Live | Phase::Deauthenticated) {
                    self.book.clear();
                    self.phase = Phase::Deauthenticated;
                    for sts in sts_messages(
                        self.shared.sts_style,
                        false,
                        competing,
                        &self.shared.username,
                    ) {
                        self.send_json(&sts);
                    }
                }
            }
            SocketCmd::Silence => {
                self.book.clear();
                self.phase = Phase::HalfOpen;
            }
            SocketCmd::EndStreams => self.book.clear(),
            SocketCmd::NonUtf8 => {
                self.send_raw(b"{\"topic\":\"blt\",\"args\":{\"message\":\"price \x99 alert\"}}");
            }
            SocketCmd::FragmentNext => self.fragment_next = true,
            SocketCmd::Oversized(bytes) => self.send_raw(&oversized(bytes)),
            SocketCmd::Ping => self.push(wsframe::ping(b"kw")),
            SocketCmd::Malformed => self.send_raw(b"{\"topic\":\"smd+8314\",\"31\":189.6"),
        }
        Flow::Continue
    }

    /// The system heartbeat (not while half-open).
    fn on_keepalive(&mut self) -> Flow {
        self.send_json(&json!({ "topic": "system", "hb": epoch_ms() }));
        Flow::Continue
    }

    /// One smd update per active stream (only while live).
    fn on_data_tick(&mut self) -> Flow {
        if self.phase != Phase::Live || self.book.is_empty() {
            return Flow::Continue;
        }
        for message in self.book.tick(self.shared.smd_expiry) {
            if std::mem::take(&mut self.fragment_next) {
                self.push(wsframe::fragmented(message.as_bytes(), 3));
                self.shared.count_sent(1);
            } else {
                self.send_raw(message.as_bytes());
            }
        }
        Flow::Continue
    }
}

/// The conid at the start of `<conid>[+args]`.
fn conid_of(rest: &str) -> Option<u64> {
    let conid = rest.split('+').next()?.trim();
    conid.parse().ok()
}

/// A JSON text payload of exactly `bytes` bytes (plain filler when too short for JSON).
fn oversized(bytes: usize) -> Vec<u8> {
    const HEAD: &[u8] = b"{\"topic\":\"blt\",\"args\":{\"message\":\"";
    const TAIL: &[u8] = b"\"}}";
    if bytes < HEAD.len() + TAIL.len() {
        return vec![b'x'; bytes];
    }
    let mut payload = Vec::with_capacity(bytes);
    payload.extend_from_slice(HEAD);
    payload.resize(bytes - TAIL.len(), b'x');
    payload.extend_from_slice(TAIL);
    payload
}

/// The `sts` message(s) for an auth state, in the configured style.
fn sts_messages(style: StsStyle, authenticated: bool, competing: bool, user: &str) -> Vec<Value> {
    let message = if competing { "competing session" } else { "" };
    let mut args: Vec<(&str, Value)> = vec![
        ("authenticated", authenticated.into()),
        ("competing", competing.into()),
        ("message", message.into()),
        ("fail", "".into()),
        ("serverName", SERVER_NAME.into()),
        ("serverVersion", SERVER_VERSION.into()),
        ("username", user.into()),
    ];
    let wrap = |pairs: Vec<(&str, Value)>| {
        let args: serde_json::Map<String, Value> =
            pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        json!({ "topic": "sts", "args": args })
    };
    match style {
        StsStyle::Whole => vec![wrap(args)],
        StsStyle::Split => args.into_iter().map(|pair| wrap(vec![pair])).collect(),
        StsStyle::Legacy => {
            args.remove(0);
            vec![wrap(args)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_styles() {
        let whole = sts_messages(StsStyle::Whole, true, false, "u");
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0]["args"]["authenticated"], true);
        let split = sts_messages(StsStyle::Split, false, true, "u");
        assert_eq!(split.len(), 7);
        assert_eq!(split[0]["args"], json!({ "authenticated": false }));
        let legacy = sts_messages(StsStyle::Legacy, true, false, "u");
        assert!(legacy[0]["args"].get("authenticated").is_none());
    }

    #[test]
    fn oversized_is_exact() {
        for n in [0, 5, 37, 38, 100_000] {
            assert_eq!(oversized(n).len(), n);
        }
        assert!(serde_json::from_slice::<Value>(&oversized(1000)).is_ok());
    }

    #[test]
    fn conids() {
        assert_eq!(conid_of("8314+{}"), Some(8314));
        assert_eq!(conid_of("8314"), Some(8314));
        assert_eq!(conid_of("abc+{}"), None);
    }
}
