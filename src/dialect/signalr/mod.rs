//! The ASP.NET Core SignalR hub dialect (JSON hub protocol over WebSockets), with the token
//! factory of seed 003.
//!
//! * Credentials (TokenManager): a bearer token from a login endpoint (`POST …/api/Auth/loginKey`
//!   style), renewed through a validate endpoint (`POST …/api/Auth/validate` style) while the
//!   current token is still accepted, with configurable JSON pointers. Every negotiate and every
//!   dial asks TokenManager for the token *at that moment*: nothing captures a token, and a token
//!   that expires within the skew is refreshed before connecting.
//! * Dial plan (GatewaySession): `POST {hub}/negotiate?negotiateVersion=1` with the bearer token
//!   (negotiate redirects followed with their own access token, at most 10, each URL checked; version 0 answers; `{"error":…}` stops), then the socket
//!   `{hub}?id=<connectionToken>` with the token as `access_token` query or `Authorization` header.
//! * Socket (StreamConnection): the handshake (`{"protocol":"json","version":1}` + 0x1E), record
//!   separator framing (messages split across frames or several per frame), Ping both ways,
//!   Close honouring `allowReconnect`, Invocations as data, Completions as acknowledgements.
//!
//! | what happens | failure | class |
//! |---|---|---|
//! | 401 on negotiate or on the upgrade, handshake error or Close saying `Unauthorized` | `Rejected` | refresh once, reconnect (again with a fresh token: hard) |
//! | 403 on negotiate or on the upgrade | `Refused` | hard |
//! | negotiate `{"error":…}` | `Refused` | hard |
//! | Close without `allowReconnect` | `ServerClose` | hard |
//! | Close with `allowReconnect`, 404/409 on the upgrade, 5xx | soft | reconnect (a new connection: subscriptions are replayed) |

pub mod wire;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use awc::http::Method;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{Confirmation, DialPlan, Dialect, Inbound, Issued, SocketDecoder, SubscriptionWire};
use crate::failure::{http_failure, server_text, Endpoint, Failure};
use crate::secret::{SecretSource, REDACTED};
use crate::subscription::Subscription;
use crate::transport::{call_json, redact_url, Http};
use wire::{
    Framer, HandshakeRequest, HandshakeResponse, HubMessage, Invocation, Negotiation, Outcome,
};

/// How the token reaches the hub's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TokenTransport {
    /// `&access_token=<token>` in the socket URL (what browsers and most market hubs use).
    #[default]
    Query,
    /// `Authorization: Bearer <token>` on the upgrade.
    Header,
}

/// Settings of the SignalR dialect. The stream's `url` is the hub URL (`https://host/hubs/market`).
#[derive(Clone)]
pub struct SignalRConfig {
    /// Login endpoint; default `{origin}/api/Auth/loginKey`.
    pub login_url: Option<String>,
    /// Login body; `{user}` and `{secret}` are replaced.
    pub login_body: String,
    /// The user name for `{user}`.
    pub user: String,
    /// The secret for `{secret}` (an API key).
    pub secret: Option<SecretSource>,
    /// JSON pointer to the token in the login reply.
    pub token_pointer: String,
    /// Validate (renew) endpoint; default `{origin}/api/Auth/validate`; `None` with
    /// `validate = false` always logs in again.
    pub validate_url: Option<String>,
    /// Renew through the validate endpoint while the current token is still accepted.
    pub validate: bool,
    /// JSON pointer to the new token in the validate reply.
    pub validate_pointer: String,
    /// How long a token lives, when the service does not say (refreshed before that).
    pub token_lifetime: Option<Duration>,
    /// How the token reaches the socket.
    pub token_transport: TokenTransport,
    /// Client Ping interval (the server closes after 30 s of silence).
    pub ping_interval: Duration,
}

impl fmt::Debug for SignalRConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalRConfig")
            .field("login_url", &self.login_url.as_deref().map(redact_url))
            .field("login_body", &REDACTED)
            .field("user", &self.user)
            .field("secret", &self.secret)
            .field("token_pointer", &self.token_pointer)
            .field(
                "validate_url",
                &self.validate_url.as_deref().map(redact_url),
            )
            .field("validate", &self.validate)
            .field("validate_pointer", &self.validate_pointer)
            .field("token_lifetime", &self.token_lifetime)
            .field("token_transport", &self.token_transport)
            .field("ping_interval", &self.ping_interval)
            .finish()
    }
}

impl Default for SignalRConfig {
    fn default() -> Self {
        Self {
            login_url: None,
            login_body: r#"{"userName":"{user}","apiKey":"{secret}"}"#.into(),
            user: String::new(),
            secret: None,
            token_pointer: "/token".into(),
            validate_url: None,
            validate: true,
            validate_pointer: "/newToken".into(),
            token_lifetime: None,
            token_transport: TokenTransport::Query,
            ping_interval: Duration::from_secs(15),
        }
    }
}

/// The SignalR dialect of one stream. `Debug` shows its URLs redacted, never the last token.
pub struct SignalR {
    hub_url: Arc<str>,
    login_url: Arc<str>,
    validate_url: Arc<str>,
    config: Arc<SignalRConfig>,
    /// The last token issued, for renewal through the validate endpoint.
    last: Arc<Mutex<Option<SecretString>>>,
}

impl fmt::Debug for SignalR {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalR")
            .field("hub_url", &redact_url(&self.hub_url))
            .field("login_url", &redact_url(&self.login_url))
            .field("validate_url", &redact_url(&self.validate_url))
            .field("config", &self.config)
            .field("last", &REDACTED)
            .finish()
    }
}

fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

impl SignalR {
    /// A SignalR dialect for the hub at `hub_url`.
    pub fn new(hub_url: &str, config: SignalRConfig) -> Self {
        let hub = hub_url.trim_end_matches('/');
        let origin = origin_of(hub);
        Self {
            login_url: config
                .login_url
                .clone()
                .unwrap_or_else(|| format!("{origin}/api/Auth/loginKey"))
                .into(),
            validate_url: config
                .validate_url
                .clone()
                .unwrap_or_else(|| format!("{origin}/api/Auth/validate"))
                .into(),
            hub_url: hub.into(),
            config: Arc::new(config),
            last: Arc::default(),
        }
    }

    /// The routing key of data for an event and its first argument.
    fn key_of(event: &str, first_arg: Option<&Value>) -> String {
        match first_arg {
            Some(Value::String(s)) => format!("{event}:{s}"),
            Some(Value::Null) | None => event.to_string(),
            Some(other) => format!("{event}:{other}"),
        }
    }
}

async fn login(http: &Http, url: &str, config: &SignalRConfig) -> Result<SecretString, Failure> {
    let json = super::render_body(
        "login_body",
        &config.login_body,
        Some(&config.user),
        config.secret.as_ref(),
        "api_key_env or api_key_file",
    )?;
    let reply = call_json(
        http,
        Method::POST,
        "login_url",
        url,
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
                    "login answered HTTP {}: check the user name and API key",
                    reply.status
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
    // Market APIs answer a bad key with 200 and success:false.
    if reply.body.get("success").and_then(Value::as_bool) == Some(false) {
        let code = reply
            .body
            .get("errorCode")
            .map(|v| server_text(&v.to_string()))
            .unwrap_or_default();
        return Err(Failure::Refused {
            endpoint: Endpoint::Credentials,
            detail: format!("login refused (errorCode {code}): check the user name and API key"),
        });
    }
    reply
        .body
        .pointer(&config.token_pointer)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| SecretString::from(t.to_string()))
        .ok_or_else(|| Failure::Transport {
            detail: format!("login reply has no token at {}", config.token_pointer),
        })
}

async fn validate(
    http: &Http,
    url: &str,
    config: &SignalRConfig,
    current: &SecretString,
) -> Option<SecretString> {
    let auth = format!("Bearer {}", current.expose_secret());
    let reply = call_json(
        http,
        Method::POST,
        "validate_url",
        url,
        Endpoint::Credentials,
        None,
        &[("authorization", auth)],
    )
    .await
    .ok()?;
    if !(200..300).contains(&reply.status)
        || reply.body.get("success").and_then(Value::as_bool) == Some(false)
    {
        return None;
    }
    reply
        .body
        .pointer(&config.validate_pointer)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| SecretString::from(t.to_string()))
}

fn rejected_or_refused(endpoint: Endpoint, status: u16, retry_after: Option<Duration>) -> Failure {
    match status {
        401 => Failure::Rejected {
            status,
            after_refresh: false,
        },
        403 => Failure::Refused {
            endpoint,
            detail: "HTTP 403: the token is not allowed on this hub".into(),
        },
        _ => http_failure(endpoint, status, retry_after),
    }
}

/// The key a URL supplied by a hub's negotiate redirect is named by in errors.
pub const NEGOTIATE_REDIRECT_KEY: &str = "negotiate redirect url";

/// Negotiates (following negotiate redirects, at most [`wire::MAX_NEGOTIATE_REDIRECTS`]) and
/// builds the socket's dial plan.
///
/// A redirect `{"url":…,"accessToken":…}` is followed the way the official clients do: negotiate
/// again at that URL with the reply's access token, which then also opens the socket. The
/// original bearer never goes to another origin: a redirect to another origin without an access
/// token is negotiated without any. Every URL passes the URL rule when it is used
/// ([`call_json`], [`crate::transport::Http::ws`]); a redirect's is named
/// [`NEGOTIATE_REDIRECT_KEY`].
async fn negotiate(
    http: Http,
    hub_url: Arc<str>,
    token: SecretString,
    transport: TokenTransport,
) -> Result<DialPlan, Failure> {
    let mut hub = hub_url.to_string();
    let mut key: &'static str = "url";
    let mut bearer = Some(token);
    for followed in 0..=wire::MAX_NEGOTIATE_REDIRECTS {
        let mut headers = vec![("x-requested-with", "XMLHttpRequest".to_string())];
        if let Some(b) = &bearer {
            headers.push(("authorization", format!("Bearer {}", b.expose_secret())));
        }
        let reply = call_json(
            &http,
            Method::POST,
            key,
            &wire::negotiate_url(&hub),
            Endpoint::SessionInit,
            None,
            &headers,
        )
        .await?;
        if !(200..300).contains(&reply.status) {
            return Err(rejected_or_refused(
                Endpoint::SessionInit,
                reply.status,
                reply.retry_after,
            ));
        }
        let body = serde_json::to_vec(&reply.body).unwrap_or_default();
        match Negotiation::parse(&body) {
            Ok(Negotiation::Connect(c)) => {
                if !c.available_transports.is_empty() && !c.offers_websockets_text() {
                    return Err(Failure::Refused {
                        endpoint: Endpoint::SessionInit,
                        detail: "the hub does not offer WebSockets with text frames".into(),
                    });
                }
                let secret = bearer.as_ref().map(ExposeSecret::expose_secret);
                let (url, headers) = match (transport, secret) {
                    (TokenTransport::Query, _) => {
                        (wire::connect_url(&hub, &c.connection_token, secret), vec![])
                    }
                    (TokenTransport::Header, Some(t)) => (
                        wire::connect_url(&hub, &c.connection_token, None),
                        vec![("authorization", SecretString::from(format!("Bearer {t}")))],
                    ),
                    (TokenTransport::Header, None) => {
                        (wire::connect_url(&hub, &c.connection_token, None), vec![])
                    }
                };
                return Ok(DialPlan { key, url, headers });
            }
            Ok(Negotiation::Redirect {
                url: next,
                access_token,
            }) => {
                if followed == wire::MAX_NEGOTIATE_REDIRECTS {
                    break;
                }
                // Checked before the token is chosen or anything is sent (call_json checks again).
                crate::url_rule::check(NEGOTIATE_REDIRECT_KEY, &next)?;
                bearer = match access_token {
                    Some(t) => Some(SecretString::from(t)),
                    None if crate::url_rule::same_origin(&hub, &next) => bearer,
                    None => None,
                };
                hub = next;
                key = NEGOTIATE_REDIRECT_KEY;
            }
            Ok(Negotiation::Error(e)) => {
                return Err(Failure::Refused {
                    endpoint: Endpoint::SessionInit,
                    detail: format!("negotiate: {}", server_text(&e)),
                })
            }
            Err(e) => {
                return Err(Failure::Transport {
                    detail: format!("negotiate: {}", server_text(&e.to_string())),
                })
            }
        }
    }
    Err(Failure::Transport {
        detail: format!(
            "negotiate redirected more than {} times",
            wire::MAX_NEGOTIATE_REDIRECTS
        ),
    })
}

impl Dialect for SignalR {
    fn name(&self) -> &'static str {
        "signalr"
    }

    fn fetch_credentials(&self, http: Http) -> LocalBoxFuture<'static, Result<Issued, Failure>> {
        let (login_url, validate_url, config, last) = (
            self.login_url.clone(),
            self.validate_url.clone(),
            self.config.clone(),
            self.last.clone(),
        );
        async move {
            let previous = last.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let renewed = match (&previous, config.validate) {
                (Some(current), true) => validate(&http, &validate_url, &config, current).await,
                _ => None,
            };
            let token = match renewed {
                Some(t) => t,
                None => login(&http, &login_url, &config).await?,
            };
            *last.lock().unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
            Ok(Issued {
                secret: token,
                expires_in: config.token_lifetime,
                age: Duration::ZERO,
            })
        }
        .boxed_local()
    }

    fn prepare_dial(
        &self,
        http: Http,
        secret: &SecretString,
    ) -> LocalBoxFuture<'static, Result<DialPlan, Failure>> {
        negotiate(
            http,
            self.hub_url.clone(),
            secret.clone(),
            self.config.token_transport,
        )
        .boxed_local()
    }

    fn decoder(&self) -> Box<dyn SocketDecoder> {
        Box::new(HubDecoder {
            framer: Framer::default(),
            handshaken: false,
        })
    }

    fn socket_keepalive(&self) -> Option<(Duration, String)> {
        Some((self.config.ping_interval, wire::ping_record().to_string()))
    }

    fn opening_frames(&self) -> Vec<String> {
        vec![HandshakeRequest::json().encode()]
    }

    fn upgrade_refused(&self, status: u16) -> Failure {
        match status {
            // The connection token is unknown or already has a socket: negotiate again.
            404 | 409 => Failure::TicketRejected { status },
            _ => rejected_or_refused(Endpoint::Upgrade, status, None),
        }
    }

    fn subscription(&self, sub: &Subscription) -> Result<SubscriptionWire, String> {
        let Subscription::Hub {
            method,
            args,
            unsubscribe,
            event,
        } = sub
        else {
            return Err(format!(
                "the SignalR dialect carries hub invocations, not {sub}"
            ));
        };
        let arguments: Vec<Value> = serde_json::from_str(args)
            .map_err(|e| format!("hub arguments {args:?} are not a JSON array: {e}"))?;
        let key = Self::key_of(event, arguments.first());
        let subscribe = HubMessage::Invocation(Invocation::invoke(
            key.clone(),
            method.clone(),
            arguments.clone(),
        ))
        .encode();
        let unsubscribe = unsubscribe.as_ref().map(|m| {
            HubMessage::Invocation(Invocation::send(m.clone(), arguments.clone())).encode()
        });
        Ok(SubscriptionWire {
            key: key.as_str().into(),
            subscribe,
            unsubscribe,
            resend_every: None,
            confirmation: Confirmation::Ack(key),
        })
    }
}

/// Per-connection decoder: the handshake reply first, then record-separated hub messages.
struct HubDecoder {
    framer: Framer,
    handshaken: bool,
}

fn unauthorized(text: &str) -> bool {
    text.to_ascii_lowercase().contains("unauthorized")
}

impl HubDecoder {
    fn message(&mut self, record: &[u8], out: &mut Vec<Inbound>) {
        if !self.handshaken {
            self.handshaken = true;
            out.push(match HandshakeResponse::parse(record) {
                Ok(HandshakeResponse::Ok) => Inbound::Authenticated,
                Ok(HandshakeResponse::Error(e)) if unauthorized(&e) => {
                    Inbound::Failure(Failure::Rejected {
                        status: 401,
                        after_refresh: false,
                    })
                }
                Ok(HandshakeResponse::Error(e)) => Inbound::Failure(Failure::ServerClose {
                    allow_reconnect: false,
                    error: format!("handshake: {}", server_text(&e)),
                }),
                Err(_) => Inbound::Malformed,
            });
            return;
        }
        out.push(match HubMessage::parse(record) {
            Ok(HubMessage::Ping) => Inbound::Heartbeat,
            Ok(HubMessage::Invocation(inv)) => {
                let topic = SignalR::key_of(&inv.target, inv.arguments.first());
                Inbound::Data {
                    topic: topic.into(),
                    data: Value::Array(inv.arguments),
                }
            }
            Ok(HubMessage::StreamItem {
                invocation_id,
                item,
                ..
            }) => Inbound::Data {
                topic: invocation_id.into(),
                data: item,
            },
            Ok(HubMessage::Completion(c)) => match c.outcome {
                Outcome::Error(message) => Inbound::Nack {
                    id: c.invocation_id,
                    message: server_text(&message),
                },
                Outcome::Void | Outcome::Result(_) => Inbound::Ack {
                    id: c.invocation_id,
                },
            },
            Ok(HubMessage::Close(close)) => {
                let error = close.error.unwrap_or_default();
                if unauthorized(&error) {
                    // Token expiry mid-stream: refresh, then reconnect.
                    Inbound::Failure(Failure::Rejected {
                        status: 401,
                        after_refresh: false,
                    })
                } else {
                    Inbound::Failure(Failure::ServerClose {
                        allow_reconnect: close.allow_reconnect,
                        error: server_text(&error),
                    })
                }
            }
            Ok(HubMessage::StreamInvocation(_) | HubMessage::CancelInvocation { .. }) => {
                Inbound::Control
            }
            Err(_) => Inbound::Malformed,
        });
    }
}

impl SocketDecoder for HubDecoder {
    fn decode(&mut self, text: &str) -> Inbound {
        let mut out = Vec::new();
        self.decode_frame(text, &mut out);
        out.into_iter().next().unwrap_or(Inbound::Control)
    }

    fn decode_frame(&mut self, text: &str, out: &mut Vec<Inbound>) {
        if self.framer.push(text.as_bytes()).is_err() {
            out.push(Inbound::Failure(Failure::Oversized {
                limit: self.framer.max_message_size(),
            }));
            return;
        }
        while let Some(record) = self.framer.next_record() {
            self.message(&record, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> SignalR {
        SignalR::new(
            "https://127.0.0.1:7000/hubs/market",
            SignalRConfig::default(),
        )
    }

    #[test]
    fn token_endpoints_default_to_the_hubs_origin() {
        let d = hub();
        assert_eq!(&*d.login_url, "https://127.0.0.1:7000/api/Auth/loginKey");
        assert_eq!(&*d.validate_url, "https://127.0.0.1:7000/api/Auth/validate");
    }

    fn decode(d: &mut HubDecoder, frame: &str) -> Vec<Inbound> {
        let mut out = Vec::new();
        d.decode_frame(frame, &mut out);
        out
    }

    #[test]
    fn handshake_then_messages_split_and_batched() {
        let mut d = HubDecoder {
            framer: Framer::default(),
            handshaken: false,
        };
        let got = decode(
            &mut d,
            "{}\u{1e}{\"type\":6}\u{1e}{\"type\":1,\"target\":\"GatewayQuote\",\"argu",
        );
        assert_eq!(got, vec![Inbound::Authenticated, Inbound::Heartbeat]);
        let got = decode(&mut d, "ments\":[\"CON.F\",{\"lastPrice\":1}]}\u{1e}");
        assert!(
            matches!(&got[..], [Inbound::Data { topic, .. }] if &**topic == "GatewayQuote:CON.F"),
            "{got:?}"
        );
    }

    #[test]
    fn handshake_errors_and_closes_follow_the_table() {
        let mut d = HubDecoder {
            framer: Framer::default(),
            handshaken: false,
        };
        assert!(matches!(
            decode(&mut d, "{\"error\":\"Unauthorized\"}\u{1e}")[0],
            Inbound::Failure(Failure::Rejected { .. })
        ));
        let mut d = HubDecoder {
            framer: Framer::default(),
            handshaken: true,
        };
        let closes = decode(
            &mut d,
            "{\"type\":7,\"error\":\"bye\"}\u{1e}{\"type\":7,\"allowReconnect\":true}\u{1e}",
        );
        assert_eq!(
            closes[0],
            Inbound::Failure(Failure::ServerClose {
                allow_reconnect: false,
                error: "bye".into()
            })
        );
        assert_eq!(
            closes[1],
            Inbound::Failure(Failure::ServerClose {
                allow_reconnect: true,
                error: String::new()
            })
        );
        let expired = decode(&mut d, "{\"type\":7,\"error\":\"Connection closed with an error. Unauthorized\",\"allowReconnect\":true}\u{1e}");
        assert!(matches!(
            expired[0],
            Inbound::Failure(Failure::Rejected { status: 401, .. })
        ));
    }

    #[test]
    fn completions_acknowledge_by_invocation_id() {
        let mut d = HubDecoder {
            framer: Framer::default(),
            handshaken: true,
        };
        let got = decode(&mut d, "{\"type\":3,\"invocationId\":\"k\"}\u{1e}{\"type\":3,\"invocationId\":\"j\",\"error\":\"no\"}\u{1e}");
        assert_eq!(got[0], Inbound::Ack { id: "k".into() });
        assert_eq!(
            got[1],
            Inbound::Nack {
                id: "j".into(),
                message: "no".into()
            }
        );
    }

    #[test]
    fn a_subscription_is_an_invocation_keyed_by_event_and_first_argument() {
        let sub = Subscription::Hub {
            method: "SubscribeContractQuotes".into(),
            args: r#"["CON.F.US.EP.M25"]"#.into(),
            unsubscribe: Some("UnsubscribeContractQuotes".into()),
            event: "GatewayQuote".into(),
        };
        let w = hub().subscription(&sub).unwrap();
        assert_eq!(&*w.key, "GatewayQuote:CON.F.US.EP.M25");
        assert!(w.subscribe.ends_with('\u{1e}'));
        assert!(
            w.subscribe
                .contains("\"invocationId\":\"GatewayQuote:CON.F.US.EP.M25\""),
            "{}",
            w.subscribe
        );
        assert_eq!(
            w.confirmation,
            Confirmation::Ack("GatewayQuote:CON.F.US.EP.M25".into())
        );
        assert!(!w.unsubscribe.unwrap().contains("invocationId"));
    }

    #[test]
    fn refused_upgrades_follow_the_table() {
        let d = hub();
        assert!(matches!(
            d.upgrade_refused(401),
            Failure::Rejected { status: 401, .. }
        ));
        assert!(matches!(d.upgrade_refused(403), Failure::Refused { .. }));
        assert_eq!(
            d.upgrade_refused(404),
            Failure::TicketRejected { status: 404 }
        );
    }
}
