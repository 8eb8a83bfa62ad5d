//! Dialects turn credentials into requests and frames into events. Actors are generic: they
//! never mention a vendor; everything vendor-specific lives in one module per dialect, in three
//! parts that map to the actors (session flow → GatewaySession and TokenManager, socket →
//! StreamConnection, subscriptions → Subscriptions).

pub mod ibkr;
pub mod route;
pub mod signalr;
pub mod ticket;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use futures_util::future::LocalBoxFuture;
use secrecy::{ExposeSecret, SecretString};

use crate::failure::{CompetingPolicy, Failure};
use crate::secret::SecretSource;
use crate::subscription::Subscription;
use crate::transport::Http;

/// A credential as issued by the dialect's source, before TokenManager gives it a generation.
pub struct Issued {
    /// The secret (IBKR: the gateway session id; a JWT; a bearer token).
    pub secret: SecretString,
    /// How long it is valid from now, if the source says so.
    pub expires_in: Option<Duration>,
    /// How long ago it was issued (non-zero for a cached credential), so its remaining share of
    /// life is known.
    pub age: Duration,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("secret", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Everything StreamConnection needs to dial: the URL and the headers. Both may carry secrets.
pub struct DialPlan {
    /// The setting the socket URL comes from (`url`, `socket_url`, or `negotiate redirect url`
    /// for a URL a SignalR hub supplied): the URL rule names it when it refuses the URL.
    pub key: &'static str,
    /// Socket URL (may contain a ticket: log it only through [`crate::transport::redact_url`]).
    pub url: String,
    /// Extra request headers (cookie, authorization).
    pub headers: Vec<(&'static str, SecretString)>,
}

impl fmt::Debug for DialPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialPlan")
            .field("key", &self.key)
            .field("url", &crate::transport::redact_url(&self.url))
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// How hard an establishment tries to repair a session the gateway claims is fine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Repair {
    /// Trust the session status: only initialise a session that is not authenticated.
    #[default]
    None,
    /// Reauthenticate even when the status says authenticated (IBKR `reauthenticate`).
    Reauthenticate,
    /// Initialise even when the status says authenticated (IBKR `ssodh/init`).
    Init,
}

/// What a keepalive learned.
#[derive(Default)]
pub struct KeepaliveOutcome {
    /// The credential the gateway currently associates with us (IBKR: tickle's `session`).
    /// A change means the socket must be rebuilt.
    pub observed: Option<SecretString>,
}

/// One decoded inbound socket message.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// The gateway confirmed that this socket is authenticated: the stream may become Ready.
    Authenticated,
    /// The socket reports a failure (IBKR `sts` `authenticated:false`, competing).
    Failure(Failure),
    /// A server heartbeat.
    Heartbeat,
    /// Data on a topic.
    Data {
        /// Routing topic (matches a subscription key).
        topic: Arc<str>,
        /// The parsed message.
        data: serde_json::Value,
    },
    /// Data on a topic whose JSON the consumers parse (see
    /// [`SocketDecoder::decode_frame_deferred`]): the decoder only routed it.
    Text {
        /// Routing topic (matches a subscription key).
        topic: Arc<str>,
        /// The message, routed on its type and channel but not parsed (the consumer's parse
        /// validates it): the received frame itself, shared, never copied.
        text: ByteString,
    },
    /// The gateway acknowledged a subscription (see [`Confirmation::Ack`]).
    Ack {
        /// The acknowledgement id.
        id: String,
    },
    /// The gateway refused a subscription by acknowledgement id.
    Nack {
        /// The acknowledgement id.
        id: String,
        /// What it said.
        message: String,
    },
    /// The server refused a topic (IBKR `Topic unknown`).
    TopicError {
        /// The topic (or command prefix) it names.
        topic: String,
        /// What it said.
        message: String,
    },
    /// A control message with no consequence (acks, `tic` replies, notices).
    Control,
    /// Not a message of this dialect (not JSON, wrong shape).
    Malformed,
}

/// How a subscription is confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// By the first data message on its topic.
    FirstMessage,
    /// Never acknowledged by the gateway: active once sent.
    Immediate,
    /// By an acknowledgement carrying this id ([`Inbound::Ack`]).
    Ack(String),
}

/// The wire form of a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionWire {
    /// Routing key: the topic data arrives on.
    pub key: Arc<str>,
    /// Text frame that subscribes.
    pub subscribe: String,
    /// Text frame that unsubscribes, if the channel has one.
    pub unsubscribe: Option<String>,
    /// Re-send a confirmed subscription this often (IBKR `smd` expiry).
    pub resend_every: Option<Duration>,
    /// How the gateway confirms it.
    pub confirmation: Confirmation,
}

/// Per-socket decoder state (e.g. IBKR `sts` split over several messages).
pub trait SocketDecoder {
    /// Decodes one text message (already reassembled, decoded lossily).
    fn decode(&mut self, text: &str) -> Inbound;

    /// Decodes one WebSocket message that may carry several protocol messages (SignalR's
    /// record-separated framing), appending them to `out`. Defaults to one message per frame.
    fn decode_frame(&mut self, text: &str, out: &mut Vec<Inbound>) {
        out.push(self.decode(text));
    }

    /// Like [`SocketDecoder::decode_frame`], but data may come out as [`Inbound::Text`]: routed
    /// on the cheapest look at the frame and parsed later, by the consumers, on their threads.
    /// Everything else decodes exactly as `decode_frame` does. Defaults to `decode_frame`.
    ///
    /// `text` is the frame as received (a shared buffer): data handed on as [`Inbound::Text`]
    /// is a cheap clone of it, not a copy.
    fn decode_frame_deferred(&mut self, text: &ByteString, out: &mut Vec<Inbound>) {
        self.decode_frame(text, out);
    }
}

/// A wire dialect. One instance per stream, shared by its actors.
pub trait Dialect {
    /// Short name for logs (`ibkr`).
    fn name(&self) -> &'static str;

    // --- session flow (GatewaySession, TokenManager) ---

    /// Makes sure the gateway session is established (IBKR: auth/status → ssodh/init → status).
    /// Defaults to nothing to establish: dialects whose credentials are the session.
    fn establish(
        &self,
        _http: Http,
        _repair: Repair,
    ) -> LocalBoxFuture<'static, Result<(), Failure>> {
        Box::pin(async { Ok(()) })
    }
    /// Keeps the session alive; called every [`Dialect::keepalive_interval`].
    fn keepalive(&self, _http: Http) -> LocalBoxFuture<'static, Result<KeepaliveOutcome, Failure>> {
        Box::pin(async { Ok(KeepaliveOutcome::default()) })
    }
    /// How often to call [`Dialect::keepalive`] (`None`, the default: never).
    fn keepalive_interval(&self) -> Option<Duration> {
        None
    }
    /// A credential kept from an earlier run (e.g. a cached JWT), tried before fetching one.
    /// `Err`: the kept credential must not be used (e.g. its file is readable by others).
    fn cached_credentials(&self) -> Result<Option<Issued>, Failure> {
        Ok(None)
    }
    /// Fetches a credential from the source, at the moment it is needed.
    fn fetch_credentials(&self, http: Http) -> LocalBoxFuture<'static, Result<Issued, Failure>>;
    /// Builds the dial plan for one attempt from the current credential.
    fn prepare_dial(
        &self,
        http: Http,
        secret: &SecretString,
    ) -> LocalBoxFuture<'static, Result<DialPlan, Failure>>;
    /// Ends the gateway session (on shutdown, when configured). Defaults to nothing to end.
    fn logout(&self, _http: Http) -> Option<LocalBoxFuture<'static, Result<(), Failure>>> {
        None
    }

    // --- socket (StreamConnection) ---

    /// A decoder for a new socket.
    fn decoder(&self) -> Box<dyn SocketDecoder>;
    /// A frame to write periodically, and how often (IBKR `tic`). Defaults to none.
    fn socket_keepalive(&self) -> Option<(Duration, String)> {
        None
    }

    /// Frames written right after the upgrade (SignalR's handshake request).
    fn opening_frames(&self) -> Vec<String> {
        Vec::new()
    }

    /// The socket is usable as soon as it is upgraded (no authentication message to wait for).
    fn ready_on_open(&self) -> bool {
        false
    }

    /// What a refused WebSocket upgrade means. Defaults to: 401/403 reject the credentials,
    /// anything else is an HTTP failure of the upgrade.
    fn upgrade_refused(&self, status: u16) -> Failure {
        match status {
            401 | 403 => Failure::Rejected {
                status,
                after_refresh: false,
            },
            _ => crate::failure::http_failure(crate::failure::Endpoint::Upgrade, status, None),
        }
    }

    // --- subscriptions (Subscriptions) ---

    /// The wire form of a subscription, or why this dialect cannot carry it.
    fn subscription(&self, sub: &Subscription) -> Result<SubscriptionWire, String>;

    /// The competing-session policy (for classification). Defaults to taking over.
    fn competing_policy(&self) -> CompetingPolicy {
        CompetingPolicy::Compete
    }
}

/// Text placed inside a JSON string literal (quotes and control characters escaped).
pub(crate) fn json_string_content(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted[1..quoted.len().saturating_sub(1)].to_string()
}

/// Renders a JSON request-body template: `{user}` becomes `user` and `{secret}` the secret read
/// from `secret` *now* (both JSON-escaped). `key` names the template in errors
/// (`token_body`, `login_body`); `secret_keys` names the settings that provide the secret.
pub(crate) fn render_body(
    key: &str,
    template: &str,
    user: Option<&str>,
    secret: Option<&SecretSource>,
    secret_keys: &str,
) -> Result<serde_json::Value, Failure> {
    let mut body = template.to_string();
    if let Some(user) = user {
        body = body.replace("{user}", &json_string_content(user));
    }
    if body.contains("{secret}") {
        let secret = secret
            .ok_or_else(|| Failure::Config {
                detail: format!(
                    "{key} uses {{secret}} but no secret is configured ({secret_keys})"
                ),
            })?
            .read()?;
        body = body.replace("{secret}", &json_string_content(secret.expose_secret()));
    }
    serde_json::from_str(&body).map_err(|e| Failure::Config {
        detail: format!("{key} is not JSON: {e}"),
    })
}

/// A dialect that can cross threads (dialects are plain data; their futures are not).
pub trait DialectSend: Dialect + Send + Sync {}
impl<T: Dialect + Send + Sync> DialectSend for T {}
