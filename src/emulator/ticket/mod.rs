//! The emulator's ticket-authenticated WebSocket API (seed 004): a JWT token endpoint, a
//! one-time ticket endpoint (tickets live 30 s and are consumed by one upgrade), an Origin
//! allow-list, and a JSON channel stream.
//!
//! * `POST /api/v1/auth/token` `{"apiKey":…}` → `{"token":…,"expiresIn":…}` (401
//!   `{"code":"INVALID_CREDENTIALS"}` for a wrong key).
//! * `GET /api/v1/ws-ticket` with `Authorization: Bearer <JWT>` → `{"ticket":…,"expiresInSeconds":30}`;
//!   401 `{"code":"INVALID_TOKEN"}` (unknown, malformed or expired JWT), 401
//!   `{"code":"MISSING_SESSION"}`, 503 `{"code":"REDIS_UNAVAILABLE"}`.
//! * `GET /ws?ticket=…`: 401 for a missing, used or expired ticket; an Origin outside the
//!   allow-list is accepted, then closed with 1008 `ORIGIN_BLOCKED`. Then `{"type":"hello"}`,
//!   `{"type":"heartbeat"}` every second, and for `{"op":"subscribe","channel":…}` an ack
//!   `{"type":"subscribed","channel":…}` followed by `{"type":"data","channel":…,"seq":…,"price":…}`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix_http::ws::ProtocolError;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

pub use crate::emulator::config::TicketConfig;
pub use crate::emulator::counters::TicketCounters;
pub use crate::emulator::faults::TicketFault;
use crate::emulator::state::epoch_ms;
use crate::emulator::wsframe::{self, Incoming};
use crate::emulator::wsloop::{self, Connection, Flow};

/// What a socket task is told to do.
#[derive(Clone, Debug)]
enum Cmd {
    Drop,
    Close(u16),
}

#[derive(Debug)]
struct Jwt {
    expires: Instant,
}

#[derive(Debug)]
struct TicketEntry {
    expires: Instant,
    used: bool,
    presented: u32,
}

#[derive(Debug, Default)]
struct State {
    jwts: HashMap<String, Jwt>,
    tickets: HashMap<String, TicketEntry>,
    missing_session: bool,
    store_down_until: Option<Instant>,
    reuse_next: bool,
    origins_blocked: bool,
    /// The next ticket request is redirected: status and `Location`.
    redirect_ticket: Option<(u16, String)>,
    sockets: HashMap<u64, UnboundedSender<Cmd>>,
    counters: TicketCounters,
    /// The one-second window of the upgrade admission: its start and upgrades admitted in it.
    admission: Option<(Instant, u32)>,
    /// When every upgrade was attempted (at most [`MAX_ATTEMPTS_KEPT`]).
    attempts: Vec<Instant>,
    /// JWTs the ticket endpoint refused (a client must never present them again).
    refused_jwts: std::collections::HashSet<String>,
}

/// Upgrade attempt times kept for a storm's report.
const MAX_ATTEMPTS_KEPT: usize = 1 << 20;

/// The ticket API's state, shared by its handlers.
#[derive(Debug)]
pub(crate) struct TicketApi {
    config: TicketConfig,
    state: Mutex<State>,
    next_id: AtomicU64,
}

fn random_token(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let body: String = (0..32)
        .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
        .collect();
    format!("{prefix}{body}")
}

impl TicketApi {
    /// An API for `config`.
    pub(crate) fn new(config: &TicketConfig) -> Self {
        Self {
            config: config.clone(),
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a fault now.
    pub(crate) fn inject(&self, fault: TicketFault) {
        let mut st = self.lock();
        match fault {
            TicketFault::ExpireJwts => {
                let now = Instant::now();
                for jwt in st.jwts.values_mut() {
                    jwt.expires = now;
                }
            }
            TicketFault::MissingSession { on } => st.missing_session = on,
            TicketFault::StoreDown { millis } => {
                st.store_down_until = Instant::now().checked_add(Duration::from_millis(millis));
            }
            TicketFault::ReuseNextTicket => st.reuse_next = true,
            TicketFault::BlockOrigins { on } => st.origins_blocked = on,
            TicketFault::Drop => st.sockets.values().for_each(|s| drop(s.send(Cmd::Drop))),
            TicketFault::Close { code } => st
                .sockets
                .values()
                .for_each(|s| drop(s.send(Cmd::Close(code)))),
            TicketFault::RedirectTicket { status, location } => {
                st.redirect_ticket = Some((status, location));
            }
        }
    }

    /// A snapshot of the counters.
    /// When every socket upgrade so far was attempted (admitted or not).
    pub(crate) fn upgrade_attempts(&self) -> Vec<Instant> {
        self.lock().attempts.clone()
    }

    pub(crate) fn counters(&self) -> TicketCounters {
        let mut st = self.lock();
        st.sockets.retain(|_, s| !s.is_closed());
        st.counters.open_sockets = st.sockets.len() as u64;
        st.counters.clone()
    }
}

/// Routes of the ticket API, mounted at the gateway root.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/auth/token", web::post().to(token))
        .route("/api/v1/ws-ticket", web::get().to(ticket))
        .route("/ws", web::get().to(socket));
}

fn code(status: actix_web::http::StatusCode, code: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "code": code }))
}

async fn token(api: web::Data<TicketApi>, body: web::Bytes) -> HttpResponse {
    api.lock().counters.token_requests += 1;
    let given: Option<String> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("apiKey").and_then(Value::as_str).map(str::to_string));
    if given.as_deref() != Some(api.config.api_key.as_str()) {
        return code(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
        );
    }
    let jwt = random_token("eyJ.kw.");
    crate::emulator::issued::remember(&jwt);
    let ttl = api.config.jwt_ttl;
    api.lock().jwts.insert(
        jwt.clone(),
        Jwt {
            expires: Instant::now() + ttl,
        },
    );
    HttpResponse::Ok().json(json!({ "token": jwt, "expiresIn": ttl.as_secs() }))
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn ticket(req: HttpRequest, api: web::Data<TicketApi>) -> HttpResponse {
    use actix_web::http::StatusCode;
    let mut st = api.lock();
    st.counters.ticket_requests += 1;
    if let Some((status, location)) = st.redirect_ticket.take() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT);
        return HttpResponse::build(status)
            .insert_header(("location", location))
            .finish();
    }
    let now = Instant::now();
    if st.store_down_until.is_some_and(|until| now < until) {
        st.counters.store_unavailable += 1;
        return code(StatusCode::SERVICE_UNAVAILABLE, "REDIS_UNAVAILABLE");
    }
    let Some(jwt) = bearer(&req) else {
        st.counters.ticket_without_jwt += 1;
        return code(StatusCode::UNAUTHORIZED, "INVALID_TOKEN");
    };
    if st.refused_jwts.contains(jwt) {
        st.counters.refused_jwt_presented_again += 1;
    }
    if !st.jwts.get(jwt).is_some_and(|j| now < j.expires) {
        st.counters.invalid_token += 1;
        if st.refused_jwts.len() < 100_000 {
            st.refused_jwts.insert(jwt.to_owned());
        }
        return code(StatusCode::UNAUTHORIZED, "INVALID_TOKEN");
    }
    if st.missing_session {
        st.counters.missing_session += 1;
        return code(StatusCode::UNAUTHORIZED, "MISSING_SESSION");
    }
    let ticket = random_token("tk/");
    crate::emulator::issued::remember(&ticket);
    let used = std::mem::take(&mut st.reuse_next);
    st.tickets
        .retain(|_, t| now < t.expires + Duration::from_secs(60));
    st.tickets.insert(
        ticket.clone(),
        TicketEntry {
            expires: now + api.config.ticket_ttl,
            used,
            presented: 0,
        },
    );
    HttpResponse::Ok()
        .json(json!({ "ticket": ticket, "expiresInSeconds": api.config.ticket_ttl.as_secs() }))
}

fn query_ticket(req: &HttpRequest) -> Option<String> {
    req.query_string().split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "ticket").then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

async fn socket(
    req: HttpRequest,
    payload: web::Payload,
    api: web::Data<TicketApi>,
) -> HttpResponse {
    let origin_ok = {
        let mut st = api.lock();
        let now = Instant::now();
        if st.attempts.len() < MAX_ATTEMPTS_KEPT {
            st.attempts.push(now);
        }
        if let Some(limit) = api.config.upgrades_per_second {
            let (start, admitted) = match st.admission {
                Some((start, n))
                    if now.saturating_duration_since(start) < Duration::from_secs(1) =>
                {
                    (start, n)
                }
                _ => (now, 0),
            };
            if admitted >= limit {
                st.admission = Some((start, admitted));
                st.counters.upgrades_not_admitted += 1;
                return HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", "1"))
                    .json(json!({ "code": "TOO_MANY_UPGRADES" }));
            }
            st.admission = Some((start, admitted.saturating_add(1)));
        }
        let presented = query_ticket(&req).and_then(|t| {
            st.tickets.get_mut(&t).map(|e| {
                e.presented += 1;
                (e.used, e.expires, e.presented)
            })
        });
        if presented.is_some_and(|(_, _, n)| n > 1) {
            st.counters.ticket_presented_twice += 1;
        }
        let valid = match presented.map(|(used, expires, _)| (used, expires)) {
            Some((true, _)) => {
                st.counters.ticket_reused += 1;
                false
            }
            Some((false, expires)) => now < expires,
            None => false,
        };
        if !valid {
            st.counters.upgrades_rejected += 1;
            return code(actix_web::http::StatusCode::UNAUTHORIZED, "INVALID_TICKET");
        }
        if let Some(t) = query_ticket(&req) {
            if let Some(e) = st.tickets.get_mut(&t) {
                e.used = true; // consumed: one use only
            }
        }
        let origin = req.headers().get("origin").and_then(|o| o.to_str().ok());
        !st.origins_blocked
            && match &api.config.allowed_origins {
                None => true,
                Some(list) => origin.is_some_and(|o| list.iter().any(|a| a == o)),
            }
    };
    let (response, out) = match wsframe::accept(&req) {
        Ok(pair) => pair,
        Err(e) => {
            api.lock().counters.upgrades_rejected += 1;
            return HttpResponse::from_error(e);
        }
    };
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let id = api.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut st = api.lock();
        st.counters.upgrades_accepted += 1;
        st.sockets.insert(id, cmd_tx);
    }
    let task = SocketTask {
        id,
        api: api.into_inner(),
        out,
        channels: BTreeSet::new(),
        seq: 0,
    };
    actix_web::rt::spawn(task.run(payload, cmd_rx, origin_ok));
    response
}

/// One open socket (forgotten by the API when its task ends or is dropped with its worker).
struct SocketTask {
    /// Registry id.
    id: u64,
    /// The API.
    api: Arc<TicketApi>,
    /// Encoded frames to the client (the response body).
    out: UnboundedSender<Bytes>,
    /// Subscribed channels.
    channels: BTreeSet<String>,
    /// Sequence number of the last data message.
    seq: u64,
}

impl Drop for SocketTask {
    fn drop(&mut self) {
        self.api.lock().sockets.remove(&self.id);
    }
}

impl SocketTask {
    /// Sends one JSON message.
    fn send(&self, value: &Value) {
        self.push(wsframe::text(value.to_string().as_bytes()));
    }

    /// Serves the socket until the client leaves or a fault ends it (at once, with 1008
    /// `ORIGIN_BLOCKED`, for an origin outside the allow-list).
    async fn run(mut self, payload: web::Payload, cmds: UnboundedReceiver<Cmd>, origin_ok: bool) {
        if !origin_ok {
            self.api.lock().counters.origin_blocked += 1;
            self.push(wsframe::close(1008, "ORIGIN_BLOCKED"));
            return;
        }
        self.send(&json!({"type": "hello"}));
        let config = &self.api.config;
        let hb_every = config.heartbeat_interval.max(Duration::from_millis(10));
        let data_every = config.data_interval.max(Duration::from_millis(1));
        let hb = wsloop::timer(Instant::now(), hb_every);
        let data = wsloop::timer(Instant::now(), data_every);
        wsloop::serve(&mut self, payload, cmds, hb, data).await;
    }

    /// A subscribe or unsubscribe command.
    fn command(&mut self, text: &str) {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let op = v.get("op").and_then(Value::as_str).unwrap_or_default();
        let channel = v
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match op {
            "subscribe" if !channel.is_empty() => {
                self.api.lock().counters.subscribes += 1;
                self.send(&json!({"type": "subscribed", "channel": channel}));
                self.channels.insert(channel);
            }
            "unsubscribe" if !channel.is_empty() => {
                self.api.lock().counters.unsubscribes += 1;
                self.channels.remove(&channel);
                self.send(&json!({"type": "unsubscribed", "channel": channel}));
            }
            _ => self.send(&json!({"type": "error", "channel": channel, "message": format!("unknown command {op:?}")})),
        }
    }

    /// One data message per subscribed channel.
    fn tick(&mut self) {
        let n = self.channels.len() as u64;
        for channel in &self.channels {
            self.seq += 1;
            let price = 100.0 + (self.seq % 100) as f64 / 100.0;
            self.send(
                &json!({"type": "data", "channel": channel, "seq": self.seq, "price": price}),
            );
        }
        if n > 0 {
            self.api.lock().counters.data_sent += n;
        }
    }
}

impl Connection for SocketTask {
    type Cmd = Cmd;

    fn out(&self) -> &UnboundedSender<Bytes> {
        &self.out
    }

    fn on_message(&mut self, message: Incoming) -> Flow {
        match message {
            Incoming::Text(bytes) => self.command(&String::from_utf8_lossy(&bytes)),
            Incoming::Ping(payload) => self.push(wsframe::pong(&payload)),
            Incoming::Close(reason) => {
                self.push(wsframe::close_echo(reason.as_ref()));
                return Flow::End;
            }
            Incoming::Pong | Incoming::Binary(_) => {}
        }
        Flow::Continue
    }

    /// The socket just ends (no close frame).
    fn on_protocol_error(&mut self, _err: &ProtocolError) -> Flow {
        Flow::End
    }

    fn on_cmd(&mut self, cmd: Cmd) -> Flow {
        if let Cmd::Close(code) = cmd {
            self.push(wsframe::close(code, "closed by fault"));
        }
        Flow::End
    }

    fn on_keepalive(&mut self) -> Flow {
        self.send(&json!({"type": "heartbeat", "ts": epoch_ms()}));
        Flow::Continue
    }

    fn on_data_tick(&mut self) -> Flow {
        self.tick();
        Flow::Continue
    }
}
