//! Negotiate and the hub's WebSocket: upgrade checks, then one task per connection that owns
//! every frame it writes (so faults can split messages, go silent or vanish).

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_http::ws::ProtocolError;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use super::auth::{bearer, query_param};
use super::quotes::QuoteWalk;
use super::{Hub, HubCmd, HubPath, Negotiated, UpgradeRefusal};
use crate::dialect::signalr::wire::{
    AvailableTransport, Close, Completion, Framer, HandshakeRequest, HandshakeResponse, HubMessage,
    Invocation, NegotiateConnect, Negotiation, WireError,
};
use crate::emulator::wsframe::{self, Incoming};
use crate::emulator::wsloop::{self, Connection, Flow};

/// Hub method that starts a quote stream.
const SUBSCRIBE: &str = "SubscribeContractQuotes";
/// Hub method that stops a quote stream.
const UNSUBSCRIBE: &str = "UnsubscribeContractQuotes";
/// Client method the quotes are sent to.
const QUOTE_TARGET: &str = "GatewayQuote";
/// Largest record a client may send.
const MAX_CLIENT_RECORD: usize = 1 << 20;
/// The error of the Close sent when a connection's token expired.
const UNAUTHORIZED: &str = "Unauthorized";

/// An error answer as ASP.NET Core gives it (plain text).
fn status_answer(status: u16, text: &str) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(text.to_owned())
}

/// `POST /hubs/market/negotiate?negotiateVersion=1` (Bearer token required).
pub(crate) async fn negotiate(req: HttpRequest, hub: web::Data<Hub>) -> HttpResponse {
    negotiate_at(req, hub, HubPath::Market)
}

/// `POST /hubs/redirected/negotiate?negotiateVersion=1` (a redirect's access token required).
pub(crate) async fn negotiate_redirected(req: HttpRequest, hub: web::Data<Hub>) -> HttpResponse {
    negotiate_at(req, hub, HubPath::Redirected)
}

fn negotiate_at(req: HttpRequest, hub: web::Data<Hub>, path: HubPath) -> HttpResponse {
    let token = bearer(&req);
    let version = query_param(&req, "negotiateVersion")
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(0, |v| v.min(1));
    match hub.negotiate(token.as_deref(), version, path) {
        Ok(Negotiated::Redirect { url, access_token }) => HttpResponse::Ok()
            .content_type("application/json")
            .body(Negotiation::Redirect { url, access_token }.encode()),
        Ok(Negotiated::Connect(connection_id, connection_token)) => {
            let body = Negotiation::Connect(NegotiateConnect {
                negotiate_version: version,
                connection_id,
                connection_token,
                available_transports: vec![AvailableTransport::websockets()],
                use_stateful_reconnect: false,
            });
            HttpResponse::Ok()
                .content_type("application/json")
                .body(body.encode())
        }
        Err(401) => HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer"))
            .finish(),
        Err(status) => status_answer(status, "negotiate rejected"),
    }
}

/// `GET /hubs/market?id=…`: the upgrade checks, then a connection task.
pub(crate) async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    hub: web::Data<Hub>,
) -> HttpResponse {
    upgrade_at(req, payload, hub, HubPath::Market)
}

/// `GET /hubs/redirected?id=…`: the same, at the redirect target.
pub(crate) async fn upgrade_redirected(
    req: HttpRequest,
    payload: web::Payload,
    hub: web::Data<Hub>,
) -> HttpResponse {
    upgrade_at(req, payload, hub, HubPath::Redirected)
}

fn upgrade_at(
    req: HttpRequest,
    payload: web::Payload,
    hub: web::Data<Hub>,
    path: HubPath,
) -> HttpResponse {
    let token = bearer(&req);
    let id = query_param(&req, "id");
    let token_expires = match hub.check_upgrade(token.as_deref(), id.as_deref(), path) {
        Ok(expires) => expires,
        Err(refusal) => {
            tracing::debug!(?refusal, "emulator hub: upgrade refused");
            return match refusal {
                UpgradeRefusal::Fault(status) => status_answer(status, "upgrade rejected"),
                UpgradeRefusal::Unauthorized => HttpResponse::Unauthorized()
                    .insert_header(("WWW-Authenticate", "Bearer"))
                    .finish(),
                UpgradeRefusal::MissingId => status_answer(400, "Connection ID required"),
                UpgradeRefusal::UnknownId => status_answer(404, "No Connection with that ID"),
                UpgradeRefusal::InUse => status_answer(409, "Connection ID already in use"),
            };
        }
    };
    let id = id.unwrap_or_default();
    let (response, out_tx) = match wsframe::accept(&req) {
        Ok(accepted) => accepted,
        Err(err) => {
            hub.upgrade_failed();
            return HttpResponse::from_error(err);
        }
    };
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    hub.attach(&id, cmd_tx);
    let hub = hub.into_inner();
    let settings = hub.settings.clone();
    let task = ConnectionTask {
        id,
        hub,
        out: out_tx,
        phase: Phase::AwaitingHandshake,
        split: false,
        framer: Framer::new(MAX_CLIENT_RECORD),
        quotes: BTreeMap::new(),
        last_received: Instant::now(),
        handshake_deadline: Instant::now() + settings.handshake_timeout,
        token_expires: settings
            .close_on_token_expiry
            .then(|| Instant::from_std(token_expires)),
    };
    actix_web::rt::spawn(task.run(payload, cmd_rx));
    response
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the handshake request.
    AwaitingHandshake,
    /// Handshake done: hub messages flow.
    Live,
    /// Half-open: sends nothing at all, ever.
    Silent,
}

/// One subscribed contract.
#[derive(Debug)]
struct QuoteStream {
    /// The contract id as the client sent it (echoed in `GatewayQuote`).
    contract: Value,
    /// Its quote.
    walk: QuoteWalk,
}

/// One open hub connection (detached from the hub when its task ends or is dropped with its
/// worker).
struct ConnectionTask {
    /// The id the socket presented.
    id: String,
    /// The hub.
    hub: Arc<Hub>,
    /// Encoded frames to the client (the response body).
    out: UnboundedSender<Bytes>,
    /// Life-cycle phase.
    phase: Phase,
    /// Split later messages across frames.
    split: bool,
    /// Reassembles client records.
    framer: Framer,
    /// Quote streams by contract key.
    quotes: BTreeMap<String, QuoteStream>,
    /// When the client was last heard from.
    last_received: Instant,
    /// When the handshake must have arrived.
    handshake_deadline: Instant,
    /// When the connection's token expires (if the hub closes on expiry).
    token_expires: Option<Instant>,
}

/// Which deadline fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// No handshake in time.
    Handshake,
    /// The client went silent.
    ClientTimeout,
    /// The token expired.
    TokenExpired,
}

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.hub.detach(&self.id);
    }
}

impl ConnectionTask {
    /// Serves the connection until the client leaves or a fault ends it.
    async fn run(mut self, payload: web::Payload, cmds: UnboundedReceiver<HubCmd>) {
        let hub = &self.hub.settings;
        let (ping_every, quote_every) = (hub.ping_interval, hub.quote_interval);
        let ping = wsloop::timer(Instant::now() + ping_every, ping_every);
        let quote = wsloop::timer(Instant::now() + quote_every, quote_every);
        wsloop::serve(&mut self, payload, cmds, ping, quote).await;
        tracing::debug!(id = %short(&self.id), "emulator hub: connection ended");
    }

    /// The earliest pending deadline.
    fn next_deadline(&self) -> Option<(Instant, Deadline)> {
        let candidates = match self.phase {
            Phase::AwaitingHandshake => vec![(self.handshake_deadline, Deadline::Handshake)],
            Phase::Live => {
                let mut c = vec![(
                    self.last_received + self.hub.settings.client_timeout,
                    Deadline::ClientTimeout,
                )];
                if let Some(at) = self.token_expires {
                    c.push((at, Deadline::TokenExpired));
                }
                c
            }
            Phase::Silent => Vec::new(),
        };
        candidates.into_iter().min_by_key(|(at, _)| *at)
    }

    /// Sends records (each with its separator) in one frame, or split across frames when the
    /// fault asks for it; nothing when silent.
    fn send_records(&self, records: &[String]) {
        if self.phase == Phase::Silent || records.is_empty() {
            return;
        }
        if !self.split {
            self.push(wsframe::text(records.concat().as_bytes()));
            return;
        }
        // Each record is cut in two; a record's tail shares a frame with the next one's head.
        let mut carry = String::new();
        for record in records {
            let mut mid = record.len() / 2;
            while !record.is_char_boundary(mid) {
                mid += 1;
            }
            let (head, tail) = record.split_at(mid.max(1).min(record.len()));
            carry.push_str(head);
            self.push(wsframe::text(carry.as_bytes()));
            carry = tail.to_owned();
        }
        if !carry.is_empty() {
            self.push(wsframe::text(carry.as_bytes()));
        }
    }

    /// Sends hub messages.
    fn send_messages(&self, messages: &[HubMessage]) {
        let records: Vec<String> = messages.iter().map(HubMessage::encode).collect();
        self.send_records(&records);
    }

    /// Sends a Close message, then a WebSocket close (1000), and ends.
    fn close(&self, error: Option<String>, allow_reconnect: bool) -> Flow {
        if self.phase != Phase::Silent {
            self.send_messages(&[HubMessage::Close(Close {
                error,
                allow_reconnect,
            })]);
            self.hub.count(|c| c.closes_sent += 1);
            self.push(wsframe::close(1000, ""));
        }
        Flow::End
    }

    /// Feeds client data to the framer and handles every complete record.
    fn on_data(&mut self, bytes: &[u8]) -> Flow {
        if let Err(err) = self.framer.push(bytes) {
            return self.protocol_error(&err);
        }
        while let Some(record) = self.framer.next_record() {
            let flow = match self.phase {
                Phase::AwaitingHandshake => self.on_handshake(&record),
                Phase::Live => self.on_record(&record),
                Phase::Silent => Flow::Continue,
            };
            if flow == Flow::End {
                return Flow::End;
            }
        }
        Flow::Continue
    }

    /// A record the hub cannot read: Close with an error, as ASP.NET Core does.
    fn protocol_error(&self, err: &WireError) -> Flow {
        tracing::debug!(%err, "emulator hub: bad client record");
        self.hub.count(|c| c.protocol_errors += 1);
        if self.phase == Phase::AwaitingHandshake {
            self.hub.count(|c| c.handshake_errors += 1);
            self.send_records(&[HandshakeResponse::Error(format!(
                "An error occurred during the handshake: {err}"
            ))
            .encode()]);
            self.push(wsframe::close(1000, ""));
            return Flow::End;
        }
        self.close(
            Some(format!("Connection closed with an error. {err}")),
            false,
        )
    }

    /// The handshake request.
    fn on_handshake(&mut self, record: &[u8]) -> Flow {
        let request = match HandshakeRequest::parse(record) {
            Ok(request) => request,
            Err(err) => return self.protocol_error(&err),
        };
        let mut reply = request.check_json();
        if reply == HandshakeResponse::Ok && self.hub.take_handshake_error() {
            reply = HandshakeResponse::Error(
                "Handshake was rejected by the server (injected fault).".to_owned(),
            );
        }
        self.send_records(&[reply.encode()]);
        if let HandshakeResponse::Error(error) = reply {
            tracing::debug!(%error, "emulator hub: handshake refused");
            self.hub.count(|c| c.handshake_errors += 1);
            self.push(wsframe::close(1000, ""));
            return Flow::End;
        }
        self.hub.count(|c| c.handshakes += 1);
        self.phase = Phase::Live;
        Flow::Continue
    }

    /// One hub message from the client.
    fn on_record(&mut self, record: &[u8]) -> Flow {
        let message = match HubMessage::parse(record) {
            Ok(message) => message,
            // Newer protocol versions may add types: ignore them, as ASP.NET Core does.
            Err(WireError::UnknownType(_)) => return Flow::Continue,
            Err(err) => return self.protocol_error(&err),
        };
        match message {
            HubMessage::Ping => self.hub.count(|c| c.pings_received += 1),
            HubMessage::Invocation(invocation) => self.on_invocation(invocation),
            HubMessage::StreamInvocation(stream) => {
                self.hub.count(|c| c.unknown_invocations += 1);
                self.send_messages(&[HubMessage::Completion(Completion::error(
                    stream.invocation_id,
                    format!("Unknown hub method '{}'", stream.target),
                ))]);
            }
            HubMessage::Close(_) => {
                self.hub.count(|c| c.closes_received += 1);
                self.push(wsframe::close(1000, ""));
                return Flow::End;
            }
            HubMessage::StreamItem { .. }
            | HubMessage::Completion(_)
            | HubMessage::CancelInvocation { .. } => {}
        }
        Flow::Continue
    }

    /// A hub method call.
    fn on_invocation(&mut self, invocation: Invocation) {
        let outcome = match invocation.target.as_str() {
            SUBSCRIBE => {
                self.hub.count(|c| c.subscribe_invocations += 1);
                self.contract_arg(&invocation).map(|(key, contract)| {
                    self.quotes
                        .entry(key.clone())
                        .or_insert_with(|| QuoteStream {
                            contract,
                            walk: QuoteWalk::new(&key),
                        });
                })
            }
            UNSUBSCRIBE => {
                self.hub.count(|c| c.unsubscribe_invocations += 1);
                self.contract_arg(&invocation).map(|(key, _)| {
                    self.quotes.remove(&key);
                })
            }
            other => {
                self.hub.count(|c| c.unknown_invocations += 1);
                Err(format!("Unknown hub method '{other}'"))
            }
        };
        let Some(id) = invocation.invocation_id else {
            return;
        };
        let completion = match outcome {
            Ok(()) => Completion::result(id, Value::Null),
            Err(error) => Completion::error(id, error),
        };
        self.send_messages(&[HubMessage::Completion(completion)]);
    }

    /// The one contract-id argument of a (un)subscribe call: its key and the value as sent.
    fn contract_arg(&self, invocation: &Invocation) -> Result<(String, Value), String> {
        let failed = |why: String| {
            format!(
                "Failed to invoke '{}' due to an error on the server. InvalidDataException: {why}",
                invocation.target
            )
        };
        let [contract] = invocation.arguments.as_slice() else {
            return Err(failed(format!(
                "Invocation provides {} argument(s) but target expects 1.",
                invocation.arguments.len()
            )));
        };
        match contract {
            Value::String(s) if !s.is_empty() => Ok((s.clone(), contract.clone())),
            Value::Number(n) => Ok((n.to_string(), contract.clone())),
            _ => Err(failed("Error binding arguments: contractId".to_owned())),
        }
    }

    /// A deadline passed.
    fn deadline_passed(&mut self, which: Deadline) -> Flow {
        match which {
            Deadline::Handshake => {
                self.hub.count(|c| c.handshake_errors += 1);
                self.push(wsframe::close(1000, ""));
                Flow::End
            }
            Deadline::ClientTimeout => {
                self.hub.count(|c| c.client_timeouts += 1);
                self.close(
                    Some(
                        "Server timeout elapsed without receiving a message from the client."
                            .to_owned(),
                    ),
                    false,
                )
            }
            Deadline::TokenExpired => self.close(Some(UNAUTHORIZED.to_owned()), true),
        }
    }
}

impl Connection for ConnectionTask {
    type Cmd = HubCmd;

    fn out(&self) -> &UnboundedSender<Bytes> {
        &self.out
    }

    /// Handles one WebSocket message.
    fn on_message(&mut self, message: Incoming) -> Flow {
        self.last_received = Instant::now();
        match message {
            Incoming::Ping(payload) => {
                if self.phase != Phase::Silent {
                    self.push(wsframe::pong(&payload));
                }
                Flow::Continue
            }
            Incoming::Pong => Flow::Continue,
            Incoming::Close(reason) => {
                if self.phase != Phase::Silent {
                    self.push(wsframe::close_echo(reason.as_ref()));
                }
                Flow::End
            }
            Incoming::Text(bytes) | Incoming::Binary(bytes) => self.on_data(&bytes),
        }
    }

    /// A WebSocket protocol error: close with 1002 (unless silent).
    fn on_protocol_error(&mut self, err: &ProtocolError) -> Flow {
        tracing::debug!(%err, "emulator hub: client WebSocket protocol error");
        if self.phase != Phase::Silent {
            self.push(wsframe::close(1002, "protocol error"));
        }
        Flow::End
    }

    /// A command from the hub (fault or token expiry).
    fn on_cmd(&mut self, cmd: HubCmd) -> Flow {
        match cmd {
            HubCmd::TokensExpired => {
                if self.phase == Phase::Silent {
                    return Flow::Continue;
                }
                self.close(Some(UNAUTHORIZED.to_owned()), true)
            }
            HubCmd::Close {
                allow_reconnect,
                error,
            } => {
                if self.phase == Phase::Silent {
                    return Flow::Continue;
                }
                self.close(error, allow_reconnect)
            }
            HubCmd::Drop => Flow::End,
            HubCmd::Silent => {
                self.quotes.clear();
                self.phase = Phase::Silent;
                Flow::Continue
            }
            HubCmd::SplitFrames => {
                self.split = true;
                Flow::Continue
            }
        }
    }

    /// The server's keepalive.
    fn on_keepalive(&mut self) -> Flow {
        if self.phase == Phase::Live {
            self.send_records(&[crate::dialect::signalr::wire::ping_record().to_owned()]);
            self.hub.count(|c| c.pings_sent += 1);
        }
        Flow::Continue
    }

    /// One quote per subscribed contract, in one frame.
    fn on_data_tick(&mut self) -> Flow {
        if self.phase != Phase::Live || self.quotes.is_empty() {
            return Flow::Continue;
        }
        let messages: Vec<HubMessage> = self
            .quotes
            .values_mut()
            .map(|stream| {
                HubMessage::Invocation(Invocation::send(
                    QUOTE_TARGET,
                    vec![stream.contract.clone(), stream.walk.next_quote()],
                ))
            })
            .collect();
        let n = messages.len() as u64;
        self.send_messages(&messages);
        self.hub.count(|c| c.quotes_sent += n);
        Flow::Continue
    }

    fn deadline(&self) -> Option<Instant> {
        self.next_deadline().map(|(at, _)| at)
    }

    fn on_deadline(&mut self) -> Flow {
        match self.next_deadline() {
            Some((_, which)) => self.deadline_passed(which),
            None => Flow::Continue,
        }
    }
}

/// The first characters of a connection id, for logs.
pub(crate) fn short(id: &str) -> String {
    id.chars().take(6).collect()
}
