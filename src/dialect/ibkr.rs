//! The IBKR Client Portal Gateway dialect.
//!
//! * Session flow: `GET auth/status` → (not authenticated) `POST ssodh/init {"publish":true,"compete":…}`
//!   → status again → `reauthenticate` as a last resort → `iserver/accounts` preflight.
//!   Keepalive is `POST /tickle`; its `session` field is the credential that authenticates the socket.
//! * Socket: `…/v1/api/ws` with cookie `api={"session":"<id>"}`; Ready only after `sts` says
//!   `authenticated:true` (or a legacy `sts` without the field); `sts` `authenticated:false` is a
//!   lost session (IBKR never says true again on that socket).
//! * Subscriptions: `smd+<conid>+{"fields":[…]}` / `umd+<conid>+{}`, confirmed by the first message
//!   on `smd+<conid>`, re-sent every ~9 minutes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use awc::http::Method;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    Confirmation, DialPlan, Dialect, Inbound, Issued, KeepaliveOutcome, Repair, SocketDecoder,
    SubscriptionWire,
};
use crate::failure::{http_failure, server_text, CompetingPolicy, Endpoint, Failure};
use crate::secret::REDACTED;
use crate::subscription::Subscription;
use crate::transport::{call_json, redact_url, Http, JsonReply};

/// IBKR-specific settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IbkrConfig {
    /// What to do about a competing session.
    pub competing: CompetingPolicy,
    /// How often `/tickle` keeps the gateway session alive (IBKR asks for about once a minute).
    pub tickle_interval: Duration,
    /// How often `tic` is written on the socket.
    pub tic_interval: Duration,
    /// How often a confirmed `smd` subscription is re-sent (IBKR ends `smd` streams silently
    /// after 10–15 minutes since 2026).
    pub resubscribe_interval: Duration,
    /// Log out of the gateway when the supervisor shuts down.
    pub logout_on_shutdown: bool,
}

impl Default for IbkrConfig {
    fn default() -> Self {
        Self {
            competing: CompetingPolicy::Compete,
            tickle_interval: Duration::from_secs(60),
            tic_interval: Duration::from_secs(50),
            resubscribe_interval: Duration::from_secs(9 * 60),
            logout_on_shutdown: false,
        }
    }
}

/// The IBKR dialect of one stream. `Debug` shows its URLs redacted.
#[derive(Clone)]
pub struct Ibkr {
    api: Arc<str>,
    ws_url: Arc<str>,
    config: IbkrConfig,
}

impl fmt::Debug for Ibkr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ibkr")
            .field("api", &redact_url(&self.api))
            .field("ws_url", &redact_url(&self.ws_url))
            .field("config", &self.config)
            .finish()
    }
}

impl Ibkr {
    /// The REST base (`…/v1/api`).
    pub fn api(&self) -> Arc<str> {
        self.api.clone()
    }

    /// The socket URL.
    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }

    /// A dialect for the gateway at `base_url` (e.g. `https://127.0.0.1:5000`).
    pub fn new(base_url: &str, config: IbkrConfig) -> Self {
        let base = base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1/api").unwrap_or(base);
        let (ws_base, http_base) = (
            crate::transport::socket_url(base),
            crate::transport::http_url(base),
        );
        Self {
            api: format!("{http_base}/v1/api").into(),
            ws_url: format!("{ws_base}/v1/api/ws").into(),
            config,
        }
    }
}

/// The session fields shared by `auth/status`, `ssodh/init` and tickle's `iserver.authStatus`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct AuthStatus {
    /// Brokerage session authenticated.
    pub authenticated: bool,
    /// Connected to the backend.
    pub connected: bool,
    /// Another session competes.
    pub competing: bool,
    /// Free text.
    pub message: String,
    /// Failure text.
    pub fail: String,
}

impl AuthStatus {
    /// `authenticated && connected && !competing`.
    pub fn healthy(&self) -> bool {
        self.authenticated && self.connected && !self.competing
    }
}

/// Maps the error replies IBKR uses on any endpoint; `Ok(())` for a usable 2xx reply.
fn check(endpoint: Endpoint, reply: &JsonReply) -> Result<(), Failure> {
    let error = reply
        .str_field("error")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if error.contains("no bridge") {
        return Err(Failure::NoBridge);
    }
    if error.contains("no session") || error.contains("init session first") {
        return Err(Failure::SessionLost {
            detail: format!("{}: {}", endpoint.as_str(), server_text(&error)),
        });
    }
    match reply.status {
        200..=299 if error.is_empty() => Ok(()),
        200..=299 => Err(Failure::Transport {
            detail: format!("{}: {}", endpoint.as_str(), server_text(&error)),
        }),
        401 | 403 if endpoint == Endpoint::SessionInit => Err(Failure::NeedsLogin {
            detail: format!(
                "ssodh/init answered {}: login or 2FA not completed at the gateway",
                reply.status
            ),
        }),
        401 | 403 => Err(Failure::SessionLost {
            detail: format!("{} answered {}", endpoint.as_str(), reply.status),
        }),
        status => Err(http_failure(endpoint, status, reply.retry_after)),
    }
}

fn parse_status(reply: &JsonReply) -> AuthStatus {
    AuthStatus::deserialize(&reply.body).unwrap_or_default()
}

/// `GET iserver/auth/status` (never POST: newer gateways answer 400).
pub async fn auth_status(http: &Http, api: &str) -> Result<AuthStatus, Failure> {
    // GET: newer gateways answer POST with 400 (seed 001).
    let reply = call_json(
        http,
        Method::GET,
        "url",
        &format!("{api}/iserver/auth/status"),
        Endpoint::AuthStatus,
        None,
        &[],
    )
    .await?;
    check(Endpoint::AuthStatus, &reply)?;
    Ok(parse_status(&reply))
}

/// `POST iserver/reauthenticate`.
async fn reauthenticate(http: &Http, api: &str) -> Result<(), Failure> {
    let re = call_json(
        http,
        Method::POST,
        "url",
        &format!("{api}/iserver/reauthenticate"),
        Endpoint::Reauthenticate,
        None,
        &[],
    )
    .await?;
    check(Endpoint::Reauthenticate, &re)
}

/// The whole handshake: status → `ssodh/init` → status → `reauthenticate` → status → preflight.
///
/// `repair` distrusts a status that says authenticated (the socket found the session dead: a
/// half-dead gateway): [`Repair::Reauthenticate`] reauthenticates first, [`Repair::Init`] runs
/// `ssodh/init` whatever the status says.
pub async fn establish(
    http: Http,
    api: Arc<str>,
    policy: CompetingPolicy,
    repair: Repair,
) -> Result<(), Failure> {
    let status = auth_status(&http, &api).await?;
    if status.competing && policy == CompetingPolicy::Yield {
        return Err(Failure::Competing);
    }
    match repair {
        Repair::None if status.healthy() => return preflight(&http, &api).await,
        Repair::Reauthenticate if status.authenticated && !status.competing => {
            reauthenticate(&http, &api).await?;
            if auth_status(&http, &api).await?.healthy() {
                return preflight(&http, &api).await;
            }
        }
        _ => {}
    }
    let body = json!({"publish": true, "compete": policy == CompetingPolicy::Compete});
    let init = call_json(
        &http,
        Method::POST,
        "url",
        &format!("{api}/iserver/auth/ssodh/init"),
        Endpoint::SessionInit,
        Some(body),
        &[],
    )
    .await?;
    check(Endpoint::SessionInit, &init)?;
    let status = auth_status(&http, &api).await?;
    if status.healthy() {
        return preflight(&http, &api).await;
    }
    // Last resort while the SSO session may still be valid.
    reauthenticate(&http, &api).await?;
    let status = auth_status(&http, &api).await?;
    if status.healthy() {
        return preflight(&http, &api).await;
    }
    if status.competing {
        return Err(Failure::Competing);
    }
    let said = [status.message.as_str(), status.fail.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>();
    Err(Failure::NeedsLogin {
        detail: if said.is_empty() {
            "brokerage session still not authenticated after ssodh/init".into()
        } else {
            format!("gateway says: {}", server_text(&said.join("; ")))
        },
    })
}

async fn preflight(http: &Http, api: &str) -> Result<(), Failure> {
    let reply = call_json(
        http,
        Method::GET,
        "url",
        &format!("{api}/iserver/accounts"),
        Endpoint::Preflight,
        None,
        &[],
    )
    .await?;
    check(Endpoint::Preflight, &reply)
}

/// What a tickle says. `Debug` never shows the session id.
#[derive(PartialEq, Eq)]
pub struct Tickle {
    /// The session id that authenticates the socket.
    pub session: Option<String>,
    /// The brokerage session status, when present.
    pub auth: Option<AuthStatus>,
}

impl fmt::Debug for Tickle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tickle")
            .field("session", &self.session.as_ref().map(|_| REDACTED))
            .field("auth", &self.auth)
            .finish()
    }
}

/// Parses a tickle reply (after [`check`]).
pub fn parse_tickle(body: &Value) -> Tickle {
    let session = body
        .get("session")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let auth = body
        .get("iserver")
        .and_then(|i| i.get("authStatus"))
        .and_then(|a| AuthStatus::deserialize(a).ok());
    Tickle { session, auth }
}

/// `POST tickle`.
pub async fn tickle(http: Http, api: Arc<str>) -> Result<Tickle, Failure> {
    let reply = call_json(
        &http,
        Method::POST,
        "url",
        &format!("{api}/tickle"),
        Endpoint::Keepalive,
        None,
        &[],
    )
    .await?;
    check(Endpoint::Keepalive, &reply)?;
    Ok(parse_tickle(&reply.body))
}

impl Dialect for Ibkr {
    fn name(&self) -> &'static str {
        "ibkr"
    }

    fn establish(
        &self,
        http: Http,
        repair: Repair,
    ) -> LocalBoxFuture<'static, Result<(), Failure>> {
        establish(http, self.api.clone(), self.config.competing, repair).boxed_local()
    }

    fn keepalive(&self, http: Http) -> LocalBoxFuture<'static, Result<KeepaliveOutcome, Failure>> {
        let api = self.api.clone();
        async move {
            let t = tickle(http, api).await?;
            if let Some(auth) = &t.auth {
                if auth.competing {
                    return Err(Failure::Competing);
                }
                if !auth.authenticated {
                    return Err(Failure::SessionLost {
                        detail: "tickle: iserver authStatus authenticated:false".into(),
                    });
                }
            }
            Ok(KeepaliveOutcome {
                observed: t.session.map(SecretString::from),
            })
        }
        .boxed_local()
    }

    fn keepalive_interval(&self) -> Option<Duration> {
        Some(self.config.tickle_interval)
    }

    fn fetch_credentials(&self, http: Http) -> LocalBoxFuture<'static, Result<Issued, Failure>> {
        let api = self.api.clone();
        async move {
            let t = tickle(http, api).await?;
            match t.session {
                Some(s) => Ok(Issued {
                    secret: SecretString::from(s),
                    expires_in: None,
                    age: Duration::ZERO,
                }),
                None => Err(Failure::SessionLost {
                    detail: "tickle returned no session id".into(),
                }),
            }
        }
        .boxed_local()
    }

    fn prepare_dial(
        &self,
        _http: Http,
        secret: &SecretString,
    ) -> LocalBoxFuture<'static, Result<DialPlan, Failure>> {
        let cookie = format!("api={}", json!({"session": secret.expose_secret()}));
        let plan = DialPlan {
            key: "url",
            url: self.ws_url.to_string(),
            headers: vec![("cookie", SecretString::from(cookie))],
        };
        async move { Ok(plan) }.boxed_local()
    }

    fn logout(&self, http: Http) -> Option<LocalBoxFuture<'static, Result<(), Failure>>> {
        if !self.config.logout_on_shutdown {
            return None;
        }
        let api = self.api.clone();
        Some(
            async move {
                let reply = call_json(
                    &http,
                    Method::POST,
                    "url",
                    &format!("{api}/logout"),
                    Endpoint::Keepalive,
                    None,
                    &[],
                )
                .await?;
                check(Endpoint::Keepalive, &reply)
            }
            .boxed_local(),
        )
    }

    fn decoder(&self) -> Box<dyn SocketDecoder> {
        Box::new(IbkrDecoder::default())
    }

    fn socket_keepalive(&self) -> Option<(Duration, String)> {
        Some((self.config.tic_interval, "tic".to_string()))
    }

    fn subscription(&self, sub: &Subscription) -> Result<SubscriptionWire, String> {
        Ok(match sub {
            Subscription::MarketData { conid, fields } => SubscriptionWire {
                key: format!("smd+{conid}").into(),
                subscribe: format!("smd+{conid}+{}", json!({ "fields": fields })),
                unsubscribe: Some(format!("umd+{conid}+{{}}")),
                resend_every: Some(self.config.resubscribe_interval),
                confirmation: Confirmation::FirstMessage,
            },
            Subscription::Orders => SubscriptionWire {
                key: "sor".into(),
                subscribe: "sor+{}".into(),
                unsubscribe: Some("uor+{}".into()),
                resend_every: None,
                confirmation: Confirmation::Immediate,
            },
            Subscription::Pnl => SubscriptionWire {
                key: "spl".into(),
                subscribe: "spl+{}".into(),
                unsubscribe: Some("upl{}".into()),
                resend_every: None,
                confirmation: Confirmation::FirstMessage,
            },
            Subscription::AccountSummary { account } => SubscriptionWire {
                key: format!("ssd+{account}").into(),
                subscribe: format!("ssd+{account}"),
                unsubscribe: Some(format!("usd+{account}")),
                resend_every: None,
                confirmation: Confirmation::FirstMessage,
            },
            Subscription::Ledger { account } => SubscriptionWire {
                key: format!("sld+{account}").into(),
                subscribe: format!("sld+{account}"),
                unsubscribe: Some(format!("uld+{account}")),
                resend_every: None,
                confirmation: Confirmation::FirstMessage,
            },
            Subscription::Hub { method, .. } => {
                return Err(format!("IBKR has no hub method {method:?}: use market_data, orders, pnl, account_summary or ledger"))
            }
            Subscription::Channel { channel } => {
                return Err(format!("IBKR has no channel {channel:?}: use market_data, orders, pnl, account_summary or ledger"))
            }
        })
    }

    fn competing_policy(&self) -> CompetingPolicy {
        self.config.competing
    }
}

/// Per-socket IBKR decoder: remembers whether `sts` has spoken about authentication yet.
#[derive(Debug, Default)]
pub struct IbkrDecoder {
    authenticated: Option<bool>,
}

impl SocketDecoder for IbkrDecoder {
    fn decode(&mut self, text: &str) -> Inbound {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Inbound::Malformed;
        };
        let Some(obj) = value.as_object() else {
            return Inbound::Malformed;
        };
        let topic = obj.get("topic").and_then(Value::as_str).unwrap_or_default();
        if let Some(err) = obj.get("error").and_then(Value::as_str) {
            return Inbound::TopicError {
                topic: topic.to_string(),
                message: server_text(err),
            };
        }
        match topic {
            "sts" => self.sts(obj.get("args").and_then(Value::as_object).unwrap_or(obj)),
            "system" if obj.contains_key("hb") => Inbound::Heartbeat,
            "system" | "tic" | "act" | "ntf" | "blt" | "ech+hb" | "" => Inbound::Control,
            _ => {
                let topic: Arc<str> = Arc::from(topic);
                Inbound::Data { topic, data: value }
            }
        }
    }
}

impl IbkrDecoder {
    fn sts(&mut self, args: &serde_json::Map<String, Value>) -> Inbound {
        let competing = args.get("competing").and_then(Value::as_bool);
        match args.get("authenticated").and_then(Value::as_bool) {
            Some(false) => {
                self.authenticated = Some(false);
                if competing == Some(true) {
                    Inbound::Failure(Failure::Competing)
                } else {
                    Inbound::Failure(Failure::SessionLost {
                        detail: "socket sts authenticated:false".into(),
                    })
                }
            }
            Some(true) if competing == Some(true) => Inbound::Failure(Failure::Competing),
            Some(true) => {
                self.authenticated = Some(true);
                Inbound::Authenticated
            }
            None if competing == Some(true) => Inbound::Failure(Failure::Competing),
            // A split `sts` carrying other fields after authentication was stated.
            None if self.authenticated.is_some() => Inbound::Control,
            // Legacy `sts` without the field: the gateway considers the socket authenticated.
            None => {
                self.authenticated = Some(true);
                Inbound::Authenticated
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(msgs: &[&str]) -> Vec<Inbound> {
        let mut d = IbkrDecoder::default();
        msgs.iter().map(|m| d.decode(m)).collect()
    }

    #[test]
    fn sts_false_is_a_lost_session_not_a_success() {
        // seed 000: both the documented and the flat shape
        for m in [
            r#"{"topic":"sts","args":{"authenticated":false}}"#,
            r#"{"topic":"sts","authenticated":false}"#,
        ] {
            assert!(
                matches!(
                    decode_all(&[m])[0],
                    Inbound::Failure(Failure::SessionLost { .. })
                ),
                "{m}"
            );
        }
    }

    #[test]
    fn sts_true_whole_split_and_legacy_authenticate() {
        let whole =
            r#"{"topic":"sts","args":{"authenticated":true,"competing":false,"message":""}}"#;
        assert_eq!(decode_all(&[whole]), vec![Inbound::Authenticated]);
        let split = decode_all(&[
            r#"{"topic":"sts","args":{"authenticated":true}}"#,
            r#"{"topic":"sts","args":{"competing":false}}"#,
            r#"{"topic":"sts","args":{"message":""}}"#,
        ]);
        assert_eq!(
            split,
            vec![Inbound::Authenticated, Inbound::Control, Inbound::Control]
        );
        assert_eq!(
            decode_all(&[r#"{"topic":"sts","args":{"competing":false,"message":""}}"#]),
            vec![Inbound::Authenticated]
        );
    }

    #[test]
    fn split_sts_false_after_other_fields_still_fails() {
        let got = decode_all(&[
            r#"{"topic":"sts","args":{"authenticated":true}}"#,
            r#"{"topic":"sts","args":{"authenticated":false}}"#,
        ]);
        assert!(matches!(
            got[1],
            Inbound::Failure(Failure::SessionLost { .. })
        ));
    }

    #[test]
    fn competing_on_the_socket_is_reported() {
        let got =
            decode_all(&[r#"{"topic":"sts","args":{"authenticated":true,"competing":true}}"#]);
        assert_eq!(got, vec![Inbound::Failure(Failure::Competing)]);
    }

    #[test]
    fn heartbeats_data_errors_and_garbage() {
        let got = decode_all(&[
            r#"{"topic":"system","hb":1712596911593}"#,
            r#"{"topic":"smd+8314","31":"189.60","conid":8314}"#,
            r#"{"error":"Topic unknown 'smd+x'","code":1,"topic":"smd+x"}"#,
            "not json",
            "[1,2]",
            r#"{"topic":"tic","alive":true}"#,
        ]);
        assert_eq!(got[0], Inbound::Heartbeat);
        assert!(matches!(&got[1], Inbound::Data { topic, .. } if &**topic == "smd+8314"));
        assert!(matches!(&got[2], Inbound::TopicError { topic, .. } if topic == "smd+x"));
        assert_eq!(got[3], Inbound::Malformed);
        assert_eq!(got[4], Inbound::Malformed);
        assert_eq!(got[5], Inbound::Control);
    }

    #[test]
    fn urls_and_cookie() {
        let d = Ibkr::new("https://127.0.0.1:5000/", IbkrConfig::default());
        assert_eq!(&*d.api, "https://127.0.0.1:5000/v1/api");
        assert_eq!(&*d.ws_url, "wss://127.0.0.1:5000/v1/api/ws");
        let plan = d
            .prepare_dial(
                crate::transport::ClientFactory::for_gateway(
                    "http://127.0.0.1:9",
                    &crate::tls::TlsConfig::Verified,
                    Duration::from_secs(1),
                )
                .unwrap()
                .client(),
                &SecretString::from("abc123"),
            )
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(
            plan.headers[0].1.expose_secret(),
            r#"api={"session":"abc123"}"#
        );
        assert!(
            !format!("{plan:?}").contains("abc123"),
            "Debug never shows the session id"
        );
    }

    #[test]
    fn market_data_wire() {
        let d = Ibkr::new("http://127.0.0.1:1", IbkrConfig::default());
        let w = d
            .subscription(&Subscription::market_data(265598, ["31", "84"]))
            .unwrap();
        assert_eq!(&*w.key, "smd+265598");
        assert_eq!(w.subscribe, r#"smd+265598+{"fields":["31","84"]}"#);
        assert_eq!(w.unsubscribe.as_deref(), Some("umd+265598+{}"));
        assert_eq!(w.resend_every, Some(Duration::from_secs(540)));
    }

    #[test]
    fn tickle_fields() {
        let t = parse_tickle(
            &json!({"session":"s1","iserver":{"authStatus":{"authenticated":true,"connected":true}}}),
        );
        assert_eq!(t.session.as_deref(), Some("s1"));
        assert!(t.auth.unwrap().healthy());
    }

    #[test]
    fn error_bodies_map_to_the_table() {
        let r = |status, body: Value| JsonReply {
            status,
            retry_after: None,
            body,
        };
        assert!(matches!(
            check(Endpoint::Keepalive, &r(200, json!({"error":"no session"}))),
            Err(Failure::SessionLost { .. })
        ));
        assert_eq!(
            check(
                Endpoint::SessionInit,
                &r(400, json!({"error":"no bridge","statusCode":400}))
            ),
            Err(Failure::NoBridge)
        );
        assert!(matches!(
            check(Endpoint::SessionInit, &r(401, Value::Null)),
            Err(Failure::NeedsLogin { .. })
        ));
        assert!(matches!(
            check(Endpoint::Keepalive, &r(401, Value::Null)),
            Err(Failure::SessionLost { .. })
        ));
        assert!(matches!(
            check(Endpoint::AuthStatus, &r(503, Value::Null)),
            Err(Failure::Http { status: 503, .. })
        ));
    }
}
