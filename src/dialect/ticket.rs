//! The ticket dialect (seed 004): a JWT buys a one-time WebSocket ticket.
//!
//! * Credentials (TokenManager): the JWT, from `POST …/api/v1/auth/token` (URL, request body and
//!   JSON pointers configurable), cached in memory and optionally in a file, refreshed before it
//!   expires and when the ticket endpoint says `INVALID_TOKEN`.
//! * Dial plan (GatewaySession): a fresh ticket for *every* dial (`GET …/api/v1/ws-ticket`,
//!   Bearer JWT); a ticket is never reused, not even after a failed dial. No ticket is ever asked
//!   for before a JWT exists: dials always fetch credentials first.
//! * Socket (StreamConnection): `…/ws?ticket=<urlencoded>` with a configurable Origin; the ticket
//!   is redacted wherever the URL is logged.
//! * Subscriptions: JSON commands from templates, confirmed by a configurable acknowledgement.
//!
//! | what happens | failure | class |
//! |---|---|---|
//! | ticket request 401 `INVALID_TOKEN` | `Rejected` | refresh the JWT once, retry (again with a fresh JWT: hard) |
//! | ticket request 401 `MISSING_SESSION` | `Refused` | hard: no further attempts |
//! | ticket request 503 `REDIS_UNAVAILABLE` | `Http 503` | soft: backoff 250 ms → 5 s cap, jitter |
//! | upgrade refused (no, used or expired ticket) | `TicketRejected` | soft: new ticket |
//! | close 1008 `ORIGIN_BLOCKED` | `Closed 1008` | hard |

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use awc::http::Method;
use bytestring::ByteString;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use secrecy::{ExposeSecret, SecretString};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::route::{self, Topics};
use super::{Confirmation, DialPlan, Dialect, Inbound, Issued, SocketDecoder, SubscriptionWire};
use crate::failure::{http_failure, server_text, Endpoint, Failure};
use crate::secret::REDACTED;
use crate::subscription::Subscription;
use crate::transport::{call_json, redact_url, Http, JsonReply};

pub use crate::secret::SecretSource;

/// Settings of the ticket dialect. URLs default to the stream's base URL. `Debug` shows URLs
/// redacted and never the token body (it may hold the secret when written inline).
#[derive(Clone)]
pub struct TicketConfig {
    /// JWT endpoint (`POST`); default `{base}/api/v1/auth/token`.
    pub token_url: Option<String>,
    /// JSON body of the token request; the string `{secret}` anywhere in it is replaced by the secret.
    pub token_body: String,
    /// The secret for `{secret}`, if the body needs one.
    pub token_secret: Option<SecretSource>,
    /// JSON pointer to the JWT in the token reply.
    pub token_pointer: String,
    /// JSON pointer to the JWT's lifetime in seconds in the token reply.
    pub expires_in_pointer: Option<String>,
    /// Ticket endpoint (`GET`, Bearer JWT); default `{base}/api/v1/ws-ticket`.
    pub ticket_url: Option<String>,
    /// JSON pointer to the ticket in the ticket reply.
    pub ticket_pointer: String,
    /// Socket URL without the ticket; default `{ws-base}/ws`.
    pub socket_url: Option<String>,
    /// `Origin` header of the upgrade.
    pub origin: Option<String>,
    /// Keep the JWT (and its expiry) in this file between runs (written with mode 0600).
    pub jwt_cache: Option<PathBuf>,
    /// Subscribe command; `{channel}` is replaced.
    pub subscribe_template: String,
    /// Unsubscribe command; `{channel}` is replaced.
    pub unsubscribe_template: Option<String>,
    /// JSON pointer to a message's type.
    pub type_pointer: String,
    /// JSON pointer to a message's channel (the routing key of data).
    pub channel_pointer: String,
    /// Type of a subscription acknowledgement.
    pub ack_type: Option<String>,
    /// Type of an error about a channel.
    pub error_type: String,
    /// Types that are heartbeats.
    pub heartbeat_types: Vec<String>,
    /// Type of the message that says the socket is usable; `None`: usable once upgraded.
    pub ready_type: Option<String>,
}

fn redacted_opt(url: &Option<String>) -> Option<String> {
    url.as_deref().map(redact_url)
}

impl fmt::Debug for TicketConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketConfig")
            .field("token_url", &redacted_opt(&self.token_url))
            .field("token_body", &REDACTED)
            .field("token_secret", &self.token_secret)
            .field("token_pointer", &self.token_pointer)
            .field("expires_in_pointer", &self.expires_in_pointer)
            .field("ticket_url", &redacted_opt(&self.ticket_url))
            .field("ticket_pointer", &self.ticket_pointer)
            .field("socket_url", &redacted_opt(&self.socket_url))
            .field("origin", &redacted_opt(&self.origin))
            .field("jwt_cache", &self.jwt_cache)
            .field("subscribe_template", &self.subscribe_template)
            .field("unsubscribe_template", &self.unsubscribe_template)
            .field("type_pointer", &self.type_pointer)
            .field("channel_pointer", &self.channel_pointer)
            .field("ack_type", &self.ack_type)
            .field("error_type", &self.error_type)
            .field("heartbeat_types", &self.heartbeat_types)
            .field("ready_type", &self.ready_type)
            .finish()
    }
}

impl Default for TicketConfig {
    fn default() -> Self {
        Self {
            token_url: None,
            token_body: r#"{"apiKey":"{secret}"}"#.into(),
            token_secret: None,
            token_pointer: "/token".into(),
            expires_in_pointer: Some("/expiresIn".into()),
            ticket_url: None,
            ticket_pointer: "/ticket".into(),
            socket_url: None,
            origin: None,
            jwt_cache: None,
            subscribe_template: r#"{"op":"subscribe","channel":"{channel}"}"#.into(),
            unsubscribe_template: Some(r#"{"op":"unsubscribe","channel":"{channel}"}"#.into()),
            type_pointer: "/type".into(),
            channel_pointer: "/channel".into(),
            ack_type: Some("subscribed".into()),
            error_type: "error".into(),
            heartbeat_types: vec!["heartbeat".into(), "ping".into()],
            ready_type: Some("hello".into()),
        }
    }
}

/// The ticket dialect of one stream. `Debug` shows its URLs redacted.
pub struct Ticket {
    token_url: Arc<str>,
    ticket_url: Arc<str>,
    socket_url: Arc<str>,
    config: Arc<TicketConfig>,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("token_url", &redact_url(&self.token_url))
            .field("ticket_url", &redact_url(&self.ticket_url))
            .field("socket_url", &redact_url(&self.socket_url))
            .field("config", &self.config)
            .finish()
    }
}

impl Ticket {
    /// A ticket dialect for the API at `base_url` (e.g. `https://api.example.com`).
    pub fn new(base_url: &str, config: TicketConfig) -> Self {
        let base = base_url.trim_end_matches('/');
        Self {
            token_url: config
                .token_url
                .clone()
                .unwrap_or_else(|| format!("{base}/api/v1/auth/token"))
                .into(),
            ticket_url: config
                .ticket_url
                .clone()
                .unwrap_or_else(|| format!("{base}/api/v1/ws-ticket"))
                .into(),
            socket_url: config
                .socket_url
                .clone()
                .unwrap_or_else(|| format!("{}/ws", crate::transport::socket_url(base)))
                .into(),
            config: Arc::new(config),
        }
    }

    fn render(template: &str, channel: &str) -> String {
        template.replace("{channel}", &super::json_string_content(channel))
    }
}

fn pointer_str<'a>(body: &'a Value, pointer: &str) -> Option<&'a str> {
    body.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The error code of a reply (`code` or `error`), as server text (capped).
fn error_code(reply: &JsonReply) -> String {
    server_text(
        reply
            .str_field("code")
            .or_else(|| reply.str_field("error"))
            .unwrap_or_default(),
    )
}

/// The error for a JWT cache path that is a symbolic link.
fn symlink_refused(path: &Path) -> String {
    format!(
        "jwt_cache {} is a symbolic link, refused: keepwire neither reads nor writes a cached JWT through a link (it could point anywhere); point jwt_cache at a regular file, or remove the link",
        path.display()
    )
}

/// Reads `{"token":…,"expires_at":<unix secs>}` from the cache file. No file, or one that is not
/// a cache, is `Ok(None)`; a symbolic link, or a file that group or others may access, is a
/// configuration error (the latter names `chmod 600 <path>`): the JWT in it may have leaked.
fn read_cache(path: &Path) -> Result<Option<Issued>, Failure> {
    let refuse = |detail: String| Failure::Config { detail };
    let Ok(link) = std::fs::symlink_metadata(path) else {
        return Ok(None);
    };
    if link.file_type().is_symlink() {
        return Err(refuse(symlink_refused(path)));
    }
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(None);
    };
    let meta = file
        .metadata()
        .map_err(|e| refuse(format!("jwt_cache {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (meta.dev(), meta.ino()) != (link.dev(), link.ino()) {
            return Err(refuse(symlink_refused(path)));
        }
    }
    crate::secret::ensure_private(path, &meta, "jwt_cache").map_err(refuse)?;
    let mut text = String::new();
    if std::io::Read::read_to_string(&mut file, &mut text).is_err() {
        return Ok(None);
    }
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return Ok(None);
    };
    let Some(token) = v.get("token").and_then(Value::as_str) else {
        return Ok(None);
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let expires_in = v
        .get("expires_at")
        .and_then(Value::as_u64)
        .map(|at| Duration::from_secs(at.saturating_sub(now)));
    let age = v
        .get("issued_at")
        .and_then(Value::as_u64)
        .map_or(0, |at| now.saturating_sub(at));
    Ok(Some(Issued {
        secret: SecretString::from(token.to_string()),
        expires_in,
        age: Duration::from_secs(age),
    }))
}

/// Writes the cache: a new temporary file in the same directory (created exclusively, mode
/// 0600), synced, then renamed over `path`. A reader sees the old or the new cache, never half of
/// one; the JWT is never written into an existing file, so neither through a symbolic link nor
/// into a file whose permissions someone loosened. A symbolic link at `path` is refused.
fn write_cache(
    path: &Path,
    token: &SecretString,
    expires_in: Option<Duration>,
) -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let body = serde_json::json!({
        "token": token.expose_secret(),
        "issued_at": now.as_secs(),
        "expires_at": expires_in.and_then(|d| now.checked_add(d)).map(|at| at.as_secs()),
    });
    let is_link = || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link() {
        return Err(symlink_refused(path));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "jwt-cache".into(), |n| n.to_string_lossy());
    let io = |e: std::io::Error| format!("jwt_cache {}: {e}", path.display());
    // tempfile creates the file with O_EXCL and mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    std::io::Write::write_all(&mut tmp, body.to_string().as_bytes()).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    if is_link() {
        return Err(symlink_refused(path));
    }
    // rename(2) replaces the directory entry: were a link swapped in meanwhile, the link itself
    // is replaced, nothing is written where it points.
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

async fn fetch_jwt(
    http: Http,
    url: Arc<str>,
    config: Arc<TicketConfig>,
) -> Result<Issued, Failure> {
    let json = super::render_body(
        "token_body",
        &config.token_body,
        None,
        config.token_secret.as_ref(),
        "token_secret_env or token_secret_file",
    )?;
    let reply = call_json(
        &http,
        Method::POST,
        "token_url",
        &url,
        Endpoint::Credentials,
        Some(json),
        &[],
    )
    .await?;
    match reply.status {
        200..=299 => {}
        401 | 403 => {
            return Err(Failure::Refused {
                endpoint: Endpoint::Credentials,
                detail: format!(
                    "HTTP {} {}: check the token secret",
                    reply.status,
                    error_code(&reply)
                ),
            })
        }
        status => {
            return Err(http_failure(
                Endpoint::Credentials,
                status,
                reply.retry_after,
            ))
        }
    }
    let token =
        pointer_str(&reply.body, &config.token_pointer).ok_or_else(|| Failure::Transport {
            detail: format!("token reply has no string at {}", config.token_pointer),
        })?;
    let expires_in = config
        .expires_in_pointer
        .as_deref()
        .and_then(|p| reply.body.pointer(p))
        .and_then(Value::as_u64)
        .map(Duration::from_secs);
    let secret = SecretString::from(token.to_string());
    if let Some(path) = &config.jwt_cache {
        if let Err(e) = write_cache(path, &secret, expires_in) {
            tracing::warn!(error = %e, "cannot write the JWT cache");
        }
    }
    Ok(Issued {
        secret,
        expires_in,
        age: Duration::ZERO,
    })
}

async fn buy_ticket(
    http: Http,
    ticket_url: Arc<str>,
    socket_url: Arc<str>,
    jwt: SecretString,
    config: Arc<TicketConfig>,
) -> Result<DialPlan, Failure> {
    let auth = format!("Bearer {}", jwt.expose_secret());
    let reply = call_json(
        &http,
        Method::GET,
        "ticket_url",
        &ticket_url,
        Endpoint::Credentials,
        None,
        &[("authorization", auth)],
    )
    .await?;
    let code = error_code(&reply);
    match (reply.status, code.as_str()) {
        (200..=299, _) => {}
        (401, "MISSING_SESSION") => {
            return Err(Failure::Refused {
                endpoint: Endpoint::Credentials,
                detail:
                    "ticket endpoint: MISSING_SESSION (the JWT lacks its session); sign in again"
                        .into(),
            })
        }
        (401 | 403, _) => {
            return Err(Failure::Rejected {
                status: reply.status,
                after_refresh: false,
            })
        }
        (status, _) => {
            return Err(http_failure(
                Endpoint::Credentials,
                status,
                reply.retry_after,
            ))
        }
    }
    let ticket =
        pointer_str(&reply.body, &config.ticket_pointer).ok_or_else(|| Failure::Transport {
            detail: format!("ticket reply has no string at {}", config.ticket_pointer),
        })?;
    let sep = if socket_url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{socket_url}{sep}ticket={}",
        crate::transport::encode_query_value(ticket)
    );
    let mut headers = Vec::new();
    if let Some(origin) = &config.origin {
        headers.push(("origin", SecretString::from(origin.clone())));
    }
    Ok(DialPlan {
        key: "socket_url",
        url,
        headers,
    })
}

impl Dialect for Ticket {
    fn name(&self) -> &'static str {
        "ticket"
    }

    fn cached_credentials(&self) -> Result<Option<Issued>, Failure> {
        match &self.config.jwt_cache {
            Some(path) => read_cache(path),
            None => Ok(None),
        }
    }

    fn fetch_credentials(&self, http: Http) -> LocalBoxFuture<'static, Result<Issued, Failure>> {
        fetch_jwt(http, self.token_url.clone(), self.config.clone()).boxed_local()
    }

    fn prepare_dial(
        &self,
        http: Http,
        secret: &SecretString,
    ) -> LocalBoxFuture<'static, Result<DialPlan, Failure>> {
        buy_ticket(
            http,
            self.ticket_url.clone(),
            self.socket_url.clone(),
            secret.clone(),
            self.config.clone(),
        )
        .boxed_local()
    }

    fn decoder(&self) -> Box<dyn SocketDecoder> {
        Box::new(TicketDecoder::new(self.config.clone()))
    }

    fn upgrade_refused(&self, status: u16) -> Failure {
        match status {
            // The ticket was missing, used or expired: a new one is bought for the next dial.
            400 | 401 | 403 | 404 | 410 => Failure::TicketRejected { status },
            _ => http_failure(Endpoint::Upgrade, status, None),
        }
    }

    fn ready_on_open(&self) -> bool {
        self.config.ready_type.is_none()
    }

    fn subscription(&self, sub: &Subscription) -> Result<SubscriptionWire, String> {
        let Subscription::Channel { channel } = sub else {
            return Err(format!(
                "the ticket dialect carries channel subscriptions, not {sub}"
            ));
        };
        Ok(SubscriptionWire {
            key: channel.as_str().into(),
            subscribe: Self::render(&self.config.subscribe_template, channel),
            unsubscribe: self
                .config
                .unsubscribe_template
                .as_deref()
                .map(|t| Self::render(t, channel)),
            resend_every: None,
            confirmation: match &self.config.ack_type {
                Some(_) => Confirmation::Ack(channel.clone()),
                None => Confirmation::FirstMessage,
            },
        })
    }
}

/// Decodes the JSON messages of a ticket socket by their type and channel fields.
struct TicketDecoder {
    config: Arc<TicketConfig>,
    ready: bool,
    /// The top-level keys of the type and channel pointers, when both are one segment deep
    /// (the defaults are): data is then routed without building a `Value` (by
    /// [`route::top_level_fields`], else [`scan_head`]).
    route: Option<(String, String)>,
    /// The topics of data messages, each made once.
    topics: Topics,
}

impl TicketDecoder {
    fn new(config: Arc<TicketConfig>) -> Self {
        let route = top_level_key(&config.type_pointer).zip(top_level_key(&config.channel_pointer));
        Self {
            ready: config.ready_type.is_none(),
            config,
            route,
            topics: Topics::default(),
        }
    }
}

/// The key a one-segment JSON pointer (`/type`) names, unescaped (`~1` → `/`, `~0` → `~`).
fn top_level_key(pointer: &str) -> Option<String> {
    let key = pointer.strip_prefix('/')?;
    (!key.contains('/')).then(|| key.replace("~1", "/").replace("~0", "~"))
}

impl SocketDecoder for TicketDecoder {
    fn decode(&mut self, text: &str) -> Inbound {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Inbound::Malformed;
        };
        if !value.is_object() {
            return Inbound::Malformed;
        }
        let c = &self.config;
        let kind = pointer_str(&value, &c.type_pointer).unwrap_or_default();
        let channel = pointer_str(&value, &c.channel_pointer);
        if !self.ready {
            if c.ready_type.as_deref() == Some(kind) {
                self.ready = true;
                return Inbound::Authenticated;
            }
            return Inbound::Control;
        }
        if c.heartbeat_types.iter().any(|h| h == kind) {
            return Inbound::Heartbeat;
        }
        match channel {
            Some(ch) if c.ack_type.as_deref() == Some(kind) => Inbound::Ack { id: ch.into() },
            Some(ch) if kind == c.error_type => {
                let message = server_text(
                    value
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("refused"),
                );
                Inbound::Nack {
                    id: ch.into(),
                    message,
                }
            }
            Some(ch) => Inbound::Data {
                topic: ch.into(),
                data: value,
            },
            None => Inbound::Control,
        }
    }

    fn decode_frame_deferred(&mut self, text: &ByteString, out: &mut Vec<Inbound>) {
        if let (true, Some((type_key, channel_key))) = (self.ready, &self.route) {
            // The cheap look first; the validating scan when it cannot tell.
            let head = match route::top_level_fields(text, type_key, channel_key) {
                Some(fields) => Head {
                    kind: fields.first.map(Cow::Borrowed),
                    channel: fields.second.map(Cow::Borrowed),
                },
                None => match scan_head(text, type_key, channel_key) {
                    Ok(head) => head,
                    Err(_) => return out.push(Inbound::Malformed),
                },
            };
            let c = &self.config;
            let kind = head.kind.as_deref().unwrap_or_default();
            if c.heartbeat_types.iter().any(|h| h == kind) {
                // A heartbeat only says the gateway is alive: nothing in it is read, so it is
                // not parsed (an idle stream's whole traffic).
                return out.push(Inbound::Heartbeat);
            }
            let data = c.ack_type.as_deref() != Some(kind) && kind != c.error_type;
            if let (true, Some(channel)) = (data, head.channel.as_deref()) {
                return out.push(Inbound::Text {
                    topic: self.topics.intern(channel),
                    text: text.clone(),
                });
            }
        }
        // Everything but data (and every message before the socket is usable) as before.
        out.push(self.decode(text));
    }
}

/// The routing fields of a message: the non-empty strings at two top-level keys.
#[derive(Debug, Default, PartialEq)]
struct Head<'de> {
    kind: Option<Cow<'de, str>>,
    channel: Option<Cow<'de, str>>,
}

/// Reads a message's type and channel without building a `Value` (nothing is allocated unless
/// one of the two has escapes), accepting exactly the texts `serde_json::from_str::<Value>`
/// accepts as an object: every value is still parsed (numbers, nesting depth), just not kept.
fn scan_head<'de>(
    text: &'de str,
    type_key: &str,
    channel_key: &str,
) -> Result<Head<'de>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let head = HeadSeed {
        type_key,
        channel_key,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(head)
}

struct HeadSeed<'k> {
    type_key: &'k str,
    channel_key: &'k str,
}

impl<'de> DeserializeSeed<'de> for HeadSeed<'_> {
    type Value = Head<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Head<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for HeadSeed<'_> {
    type Value = Head<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head<'de>, A::Error> {
        let mut head = Head::default();
        while let Some((is_type, is_channel)) = map.next_key_seed(KeySeed(&self))? {
            if !is_type && !is_channel {
                map.next_value::<Skip>()?;
                continue;
            }
            // Like `Value::pointer(..).and_then(Value::as_str)`, and the last duplicate wins.
            let value = map
                .next_value::<StrOrSkip<'de>>()?
                .0
                .filter(|s| !s.is_empty());
            if is_type {
                head.kind = value.clone();
            }
            if is_channel {
                head.channel = value;
            }
        }
        Ok(head)
    }
}

/// Which of the two routing keys an object key is.
struct KeySeed<'a, 'k>(&'a HeadSeed<'k>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = (bool, bool);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(bool, bool), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = (bool, bool);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<(bool, bool), E> {
        Ok((key == self.0.type_key, key == self.0.channel_key))
    }
}

/// Any JSON value, parsed and thrown away (unlike `IgnoredAny`, numbers are range-checked and
/// nesting is depth-limited, as when building a `Value`).
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// A JSON value kept only when it is a string (borrowed from the text when it has no escapes).
struct StrOrSkip<'de>(Option<Cow<'de, str>>);

impl<'de> Deserialize<'de> for StrOrSkip<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrSkip<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrSkip(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(StrOrSkip(Some(Cow::Owned(s.to_owned()))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(StrOrSkip(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(StrOrSkip(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(StrOrSkip(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(StrOrSkip(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(StrOrSkip(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                SkipVisitor.visit_seq(seq).map(|_| StrOrSkip(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                SkipVisitor.visit_map(map).map(|_| StrOrSkip(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect() -> Ticket {
        Ticket::new("http://127.0.0.1:8080/", TicketConfig::default())
    }

    #[test]
    fn urls_default_to_the_base() {
        let d = dialect();
        assert_eq!(&*d.token_url, "http://127.0.0.1:8080/api/v1/auth/token");
        assert_eq!(&*d.ticket_url, "http://127.0.0.1:8080/api/v1/ws-ticket");
        assert_eq!(&*d.socket_url, "ws://127.0.0.1:8080/ws");
    }

    #[test]
    fn channel_commands_are_rendered_as_json() {
        let w = dialect()
            .subscription(&Subscription::Channel {
                channel: "trades\"x".into(),
            })
            .unwrap();
        assert_eq!(w.subscribe, r#"{"op":"subscribe","channel":"trades\"x"}"#);
        assert!(serde_json::from_str::<Value>(&w.subscribe).is_ok());
        assert_eq!(w.confirmation, Confirmation::Ack("trades\"x".into()));
    }

    #[test]
    fn messages_are_classified_by_type_and_channel() {
        let mut d = dialect().decoder();
        assert_eq!(
            d.decode(r#"{"type":"data","channel":"a"}"#),
            Inbound::Control,
            "nothing counts before hello"
        );
        assert_eq!(d.decode(r#"{"type":"hello"}"#), Inbound::Authenticated);
        assert_eq!(
            d.decode(r#"{"type":"heartbeat","ts":1}"#),
            Inbound::Heartbeat
        );
        assert_eq!(
            d.decode(r#"{"type":"subscribed","channel":"a"}"#),
            Inbound::Ack { id: "a".into() }
        );
        assert!(matches!(
            d.decode(r#"{"type":"error","channel":"a","message":"no"}"#),
            Inbound::Nack { .. }
        ));
        assert!(matches!(
            d.decode(r#"{"type":"data","channel":"a","p":1}"#),
            Inbound::Data { .. }
        ));
        assert_eq!(d.decode("nope"), Inbound::Malformed);
    }

    /// What `decode_frame_deferred` makes of `text` on a usable socket.
    fn deferred(d: &mut Box<dyn SocketDecoder>, text: &str) -> Inbound {
        let mut out = Vec::new();
        d.decode_frame_deferred(&ByteString::from(text), &mut out);
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    #[test]
    fn deferred_decoding_routes_data_as_text_and_decodes_everything_else_as_before() {
        let mut lazy = dialect().decoder();
        let mut eager = dialect().decoder();
        for d in [&mut lazy, &mut eager] {
            assert_eq!(d.decode(r#"{"type":"hello"}"#), Inbound::Authenticated);
        }
        let data = [
            r#"{"type":"data","channel":"a","p":1}"#,
            r#"{"channel":"a","type":"trade","nested":{"type":"x","channel":"b"},"l":[1,{"c":2}]}"#,
            r#"{"type":"data","channel":"a\u0062"}"#,
            r#"{"channel":"x","type":"data","channel":"a"}"#,
            r#"{"channel":"a"}"#,
            r#" {"type":7,"channel":"a"} "#,
        ];
        for text in data {
            let Inbound::Data { topic, data } = eager.decode(text) else {
                panic!("{text} is data");
            };
            assert_eq!(
                deferred(&mut lazy, text),
                Inbound::Text {
                    topic: topic.clone(),
                    text: text.into()
                },
                "{text}"
            );
            assert_eq!(serde_json::from_str::<Value>(text).unwrap(), data);
        }
        let others = [
            r#"{"type":"heartbeat","channel":"a"}"#,
            r#"{"type":"heartbeat"}"#,
            r#"{"type":"subscribed","channel":"a"}"#,
            r#"{"type":"error","channel":"a","message":"no"}"#,
            r#"{"type":"data"}"#,
            r#"{"type":"data","channel":""}"#,
            r#"{"type":"data","channel":5}"#,
            r#"{"type":"data","channel":null}"#,
            r#"{"type":"data","channel":"a"} x"#,
            r#"{"type":"data","channel":"a""#,
            r#"[{"type":"data","channel":"a"}]"#,
            r#""data""#,
            "nope",
        ];
        for text in others {
            assert_eq!(deferred(&mut lazy, text), eager.decode(text), "{text}");
        }
        // Routed without a parse, data that does not parse reaches the consumer's parse, which
        // refuses it: the queue skips and counts it (a decode error), as the eager decoder
        // would have.
        let deep = format!(
            r#"{{"type":"data","channel":"a","x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for text in [
            r#"{"type":"data","channel":"a","x":1e400}"#,
            &deep,
            r#"{"type":"data","channel":"a","x":01}"#,
        ] {
            assert_eq!(eager.decode(text), Inbound::Malformed, "{text}");
            let Inbound::Text { text, .. } = deferred(&mut lazy, text) else {
                panic!("{text} is routed as data");
            };
            // What the consumer's parse (`messages::Queued::Text`) will say.
            assert!(serde_json::from_str::<Value>(&text).is_err());
        }
        // A heartbeat is read no further than its type (an idle stream's whole traffic is not
        // parsed): one the eager parse refuses is still a sign of life, not a decode error.
        let odd = r#"{"type":"heartbeat","ts":1e400}"#;
        assert_eq!(eager.decode(odd), Inbound::Malformed);
        assert_eq!(deferred(&mut lazy, odd), Inbound::Heartbeat);
    }

    #[test]
    fn deferred_decoding_waits_for_hello_and_honours_nested_pointers() {
        let mut d = dialect().decoder();
        let early = r#"{"type":"data","channel":"a"}"#;
        assert_eq!(deferred(&mut d, early), Inbound::Control);
        assert_eq!(
            deferred(&mut d, r#"{"type":"hello"}"#),
            Inbound::Authenticated
        );
        let nested = Ticket::new(
            "http://127.0.0.1:8080",
            TicketConfig {
                channel_pointer: "/arg/channel".into(),
                ..TicketConfig::default()
            },
        );
        let mut d = nested.decoder();
        assert_eq!(d.decode(r#"{"type":"hello"}"#), Inbound::Authenticated);
        assert!(matches!(
            deferred(&mut d, r#"{"type":"data","arg":{"channel":"a"}}"#),
            Inbound::Data { topic, .. } if &*topic == "a"
        ));
    }

    #[test]
    fn a_refused_upgrade_is_a_ticket_problem_not_a_credential_problem() {
        assert_eq!(
            dialect().upgrade_refused(401),
            Failure::TicketRejected { status: 401 }
        );
        assert!(matches!(
            dialect().upgrade_refused(503),
            Failure::Http { status: 503, .. }
        ));
    }

    fn cache_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kw-jwt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_jwt_cache_round_trips_with_expiry() {
        let dir = cache_dir("roundtrip");
        let path = dir.join("jwt.json");
        write_cache(
            &path,
            &SecretString::from("abc"),
            Some(Duration::from_secs(600)),
        )
        .unwrap();
        let got = read_cache(&path).unwrap().unwrap();
        assert_eq!(got.secret.expose_secret(), "abc");
        assert!(got.expires_in.unwrap() > Duration::from_secs(590));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left behind"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_huge_lifetime_does_not_overflow_the_cache() {
        let dir = cache_dir("huge");
        let path = dir.join("jwt.json");
        write_cache(&path, &SecretString::from("abc"), Some(Duration::MAX)).unwrap();
        assert!(read_cache(&path).unwrap().is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[cfg(unix)]
    #[test]
    fn the_jwt_cache_is_replaced_by_rename_never_rewritten_in_place() {
        use std::os::unix::fs::PermissionsExt;
        let dir = cache_dir("rename");
        let path = dir.join("jwt.json");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // A second name for the old file: rewriting in place would show through it.
        let other = dir.join("other-name");
        std::fs::hard_link(&path, &other).unwrap();
        write_cache(&path, &SecretString::from("new-jwt"), None).unwrap();
        let other_text = std::fs::read_to_string(&other).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let now = read_cache(&path).unwrap().unwrap();
        let _ = std::fs::remove_dir_all(dir);
        assert_eq!(other_text, "old", "the old file was written in place");
        assert_eq!(mode, 0o600);
        assert_eq!(now.secret.expose_secret(), "new-jwt");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_jwt_cache_is_refused_and_nothing_is_written_through_it() {
        let dir = cache_dir("symlink");
        let victim = dir.join("victim");
        std::fs::write(&victim, "victim").unwrap();
        let path = dir.join("jwt.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let written = write_cache(&path, &SecretString::from("new-jwt"), None);
        let read = read_cache(&path).map(|_| ());
        let victim_text = std::fs::read_to_string(&victim).unwrap();
        let still_link = std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink();
        let _ = std::fs::remove_dir_all(dir);
        assert_eq!(
            victim_text, "victim",
            "the JWT was written through the link"
        );
        assert!(still_link);
        assert!(written.unwrap_err().contains("symbolic link"));
        let Err(Failure::Config { detail }) = read else {
            panic!("a symlinked cache is read: {read:?}")
        };
        assert!(detail.contains("symbolic link"), "{detail}");
    }

    #[cfg(unix)]
    #[test]
    fn a_jwt_cache_readable_by_others_is_refused_naming_chmod_600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = cache_dir("mode");
        let path = dir.join("jwt.json");
        std::fs::write(&path, r#"{"token":"leaked-jwt","expires_at":null}"#).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let read = read_cache(&path).map(|_| ());
        let _ = std::fs::remove_dir_all(dir);
        let Err(Failure::Config { detail }) = read else {
            panic!("a world-readable cache is used: {read:?}")
        };
        assert!(
            detail.contains(&format!("chmod 600 {}", path.display())),
            "{detail}"
        );
        assert!(!detail.contains("leaked-jwt"), "{detail}");
    }
}
