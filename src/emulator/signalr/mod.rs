//! The emulator's ASP.NET Core SignalR market hub (JSON hub protocol over WebSockets) and its
//! login/validate token service, modelled on a futures broker's API.
//!
//! | endpoint | does |
//! |---|---|
//! | `POST /api/Auth/loginKey` `{"userName","apiKey"}` | `{"token","success":true,"errorCode":0,"errorMessage":null}`; a wrong key answers 200 with `success:false` |
//! | `POST /api/Auth/validate` (Bearer) | `{"success":true,"newToken":…}`; 401 for an unknown or expired token |
//! | `POST /hubs/market/negotiate?negotiateVersion=1` (Bearer) | a fresh, single-use `connectionToken` |
//! | `GET /hubs/market?id=<connectionToken>` (Bearer or `access_token`) | the WebSocket: handshake, pings, `SubscribeContractQuotes` → `GatewayQuote` stream |
//! | `POST /hubs/redirected/negotiate`, `GET /hubs/redirected?id=…` | the same hub as a negotiate redirect's target (`HubFault::RedirectNegotiate`): only the redirect's access token is accepted there |
//!
//! Faults ([`HubFault`]) are injected as `Fault::Hub(..)`; counters ([`HubCounters`]) are part
//! of the emulator's counters.

mod auth;
mod connection;
mod quotes;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use actix_web::web;
use tokio::sync::mpsc::UnboundedSender;

pub use crate::emulator::config::HubConfig;
pub use crate::emulator::counters::HubCounters;
pub use crate::emulator::faults::HubFault;
use crate::emulator::state::{deadline_after, Budget};

/// Path of the market hub.
pub(crate) const HUB_PATH: &str = "/hubs/market";
/// Path of the same hub as the target of a negotiate redirect (`HubFault::RedirectNegotiate`).
pub(crate) const REDIRECT_PATH: &str = "/hubs/redirected";

/// Where a negotiate or an upgrade arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HubPath {
    /// The market hub: tokens from login or validate.
    Market,
    /// The redirect target: only tokens handed out with a negotiate redirect.
    Redirected,
}

/// Who issued a token, which decides where it is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenKind {
    /// `loginKey` or `validate`: accepted at the market hub.
    Login,
    /// A negotiate redirect's `accessToken`: accepted at the redirect target only.
    Redirect,
}

impl HubPath {
    /// The kind of token accepted here.
    fn accepts(self) -> TokenKind {
        match self {
            HubPath::Market => TokenKind::Login,
            HubPath::Redirected => TokenKind::Redirect,
        }
    }
}

/// A successful negotiate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Negotiated {
    /// A new connection: `(connection id, connection token)`.
    Connect(String, String),
    /// Negotiate again at `url` with `access_token`.
    Redirect {
        /// Where.
        url: String,
        /// The token for there, if the redirect carries one.
        access_token: Option<String>,
    },
}

/// Unused negotiated connections are forgotten after this long.
const PENDING_TTL: Duration = Duration::from_secs(120);
/// At most this many negotiated connections wait for their socket (oldest forgotten first).
const MAX_PENDING: usize = 4096;
/// Longest hub timer (longer settings are clamped to it).
const MAX_TIMER: Duration = Duration::from_secs(365 * 24 * 3600);
/// At most this many tokens are live at once (expired ones are pruned first, then the oldest).
const MAX_TOKENS: usize = 65_536;

/// A command from the hub to one connection.
#[derive(Clone, Debug)]
pub(crate) enum HubCmd {
    /// Tokens expired: Close `Unauthorized`, allowReconnect.
    TokensExpired,
    /// Close with this message.
    Close {
        /// allowReconnect.
        allow_reconnect: bool,
        /// error.
        error: Option<String>,
    },
    /// Abort without any close.
    Drop,
    /// Go half-open.
    Silent,
    /// Split later messages across frames.
    SplitFrames,
}

/// A live token.
#[derive(Debug)]
struct TokenEntry {
    /// Its user.
    user: String,
    /// When it stops being accepted.
    expires_at: Instant,
    /// Who issued it.
    kind: TokenKind,
}

/// A negotiated connection, waiting for or holding its socket.
#[derive(Debug)]
struct Slot {
    /// When it was negotiated.
    created: Instant,
    /// The connection's command channel once its socket is open.
    socket: Option<UnboundedSender<HubCmd>>,
}

/// The hub's mutable state.
#[derive(Debug, Default)]
struct HubState {
    /// Live tokens.
    tokens: HashMap<String, TokenEntry>,
    /// Negotiated connections by the id the socket presents (`connectionToken`, or
    /// `connectionId` for negotiate version 0).
    slots: HashMap<String, Slot>,
    /// Negotiates to reject.
    reject_negotiate: Budget<u16>,
    /// Negotiates to answer with a redirect to this URL (with an access token or not).
    redirect_negotiate: Budget<(String, bool)>,
    /// Upgrades to reject.
    reject_upgrade: Budget<u16>,
    /// Handshakes to refuse.
    handshake_error: u32,
    /// Tokens negotiate answered 401 (a client must never present them again).
    refused_tokens: std::collections::HashSet<String>,
    /// Counters.
    counters: HubCounters,
}

/// Why an upgrade was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpgradeRefusal {
    /// A fault's status.
    Fault(u16),
    /// No, unknown or expired token: 401.
    Unauthorized,
    /// No `id`: 400.
    MissingId,
    /// Unknown `id`: 404.
    UnknownId,
    /// The id already has a socket: 409.
    InUse,
}

/// Timing and policy, sanitised from [`HubConfig`].
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Token lifetime.
    pub(crate) token_ttl: Duration,
    /// Ping interval.
    pub(crate) ping_interval: Duration,
    /// Client timeout.
    pub(crate) client_timeout: Duration,
    /// Handshake timeout.
    pub(crate) handshake_timeout: Duration,
    /// Quote interval.
    pub(crate) quote_interval: Duration,
    /// Close on token expiry.
    pub(crate) close_on_token_expiry: bool,
}

/// The hub's state, shared by its handlers.
pub(crate) struct Hub {
    /// Timing and policy.
    pub(crate) settings: Settings,
    /// API keys by user.
    api_keys: BTreeMap<String, String>,
    /// Mutable state.
    state: Mutex<HubState>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A fresh opaque random string (`bytes` random bytes as hex).
pub(crate) fn random_hex(bytes: usize) -> String {
    (0..bytes.div_ceil(16))
        .map(|_| format!("{:032x}", rand::random::<u128>()))
        .collect::<String>()
        .chars()
        .take(bytes * 2)
        .collect()
}

impl Hub {
    /// A hub for `config`.
    pub(crate) fn new(config: &HubConfig) -> Self {
        // Timers are kept between 1 ms and a year, so instant arithmetic cannot overflow.
        let clamp = |d: Duration| d.clamp(Duration::from_millis(1), MAX_TIMER);
        Self {
            settings: Settings {
                token_ttl: config.token_ttl,
                ping_interval: clamp(config.ping_interval),
                client_timeout: clamp(config.client_timeout),
                handshake_timeout: clamp(config.handshake_timeout),
                quote_interval: clamp(config.quote_interval),
                close_on_token_expiry: config.close_on_token_expiry,
            },
            api_keys: config.api_keys.clone(),
            state: Mutex::new(HubState::default()),
        }
    }

    /// Locks the state (a poisoned lock is recovered).
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a fault now.
    pub(crate) fn inject(&self, fault: HubFault) {
        let mut st = self.lock();
        match fault {
            HubFault::ExpireTokens => {
                st.tokens.clear();
                st.broadcast(&HubCmd::TokensExpired);
            }
            HubFault::RejectNegotiate { status, count } => {
                st.reject_negotiate = Budget {
                    value: status,
                    remaining: count,
                };
            }
            HubFault::RejectUpgrade { status, count } => {
                st.reject_upgrade = Budget {
                    value: status,
                    remaining: count,
                };
            }
            HubFault::Close {
                allow_reconnect,
                error,
            } => st.broadcast(&HubCmd::Close {
                allow_reconnect,
                error,
            }),
            HubFault::Drop => st.broadcast(&HubCmd::Drop),
            HubFault::Silent => st.broadcast(&HubCmd::Silent),
            HubFault::SplitFrames => st.broadcast(&HubCmd::SplitFrames),
            HubFault::HandshakeError { count } => st.handshake_error = count,
            HubFault::RedirectNegotiate {
                url,
                count,
                with_access_token,
            } => {
                st.redirect_negotiate = Budget {
                    value: (url, with_access_token),
                    remaining: count,
                };
            }
        }
    }

    /// A snapshot of the counters.
    pub(crate) fn counters(&self) -> HubCounters {
        let mut st = self.lock();
        st.slots
            .retain(|_, slot| !slot.socket.as_ref().is_some_and(UnboundedSender::is_closed));
        let open = st.slots.values().filter(|s| s.socket.is_some()).count();
        st.counters.open_connections = open as u64;
        st.counters.clone()
    }

    /// Updates a counter.
    pub(crate) fn count(&self, f: impl FnOnce(&mut HubCounters)) {
        f(&mut self.lock().counters);
    }

    // --- tokens ---

    /// Checks an API key; issues a token when it matches.
    pub(crate) fn login(&self, user: &str, key: &str) -> Option<String> {
        let ok = self.api_keys.get(user).is_some_and(|k| k == key);
        let mut st = self.lock();
        st.counters.logins += 1;
        if !ok {
            st.counters.logins_rejected += 1;
            return None;
        }
        Some(st.issue(user, self.settings.token_ttl, TokenKind::Login))
    }

    /// Exchanges a live token for a new one (the old one stays valid until it expires).
    pub(crate) fn validate(&self, token: Option<&str>) -> Option<String> {
        let mut st = self.lock();
        st.counters.validates += 1;
        let user = token.and_then(|t| st.live_user(t, TokenKind::Login));
        match user {
            Some(user) => Some(st.issue(&user, self.settings.token_ttl, TokenKind::Login)),
            None => {
                st.counters.validates_rejected += 1;
                None
            }
        }
    }

    // --- negotiate and upgrade ---

    /// A negotiate request at `path`: `Err(status)` when refused, a redirect while
    /// `HubFault::RedirectNegotiate` lasts, else the new connection's
    /// `(connection id, connection token)`; the socket presents the token (or, for negotiate
    /// version 0, the id).
    pub(crate) fn negotiate(
        &self,
        token: Option<&str>,
        version: u32,
        path: HubPath,
    ) -> Result<Negotiated, u16> {
        let mut st = self.lock();
        st.counters.negotiates += 1;
        if path == HubPath::Redirected {
            st.counters.redirected_negotiates += 1;
        }
        st.count_foreign_token(token, path);
        if token.is_some_and(|t| st.refused_tokens.contains(t)) {
            st.counters.refused_token_presented_again += 1;
        }
        let refusal = match st.reject_negotiate.take() {
            Some(status) => Err(status),
            None => token
                .and_then(|t| st.live_user(t, path.accepts()))
                .ok_or(401),
        };
        let user = match refusal {
            Ok(user) => user,
            Err(status) => {
                st.counters.negotiate_rejected += 1;
                if let (401 | 403, Some(t)) = (status, token) {
                    if st.refused_tokens.len() < 100_000 {
                        st.refused_tokens.insert(t.to_owned());
                    }
                }
                return Err(status);
            }
        };
        if path == HubPath::Market {
            if let Some((url, with_token)) = st.redirect_negotiate.take() {
                st.counters.negotiate_redirects += 1;
                let access_token = with_token
                    .then(|| st.issue(&user, self.settings.token_ttl, TokenKind::Redirect));
                return Ok(Negotiated::Redirect { url, access_token });
            }
        }
        st.prune_pending();
        let connection_id = random_hex(16);
        let connection_token = random_hex(16);
        let key = if version >= 1 {
            connection_token.clone()
        } else {
            connection_id.clone()
        };
        st.slots.insert(
            key,
            Slot {
                created: Instant::now(),
                socket: None,
            },
        );
        Ok(Negotiated::Connect(connection_id, connection_token))
    }

    /// Checks an upgrade at `path` before the WebSocket handshake: the token's expiry when it
    /// may go on.
    pub(crate) fn check_upgrade(
        &self,
        token: Option<&str>,
        id: Option<&str>,
        path: HubPath,
    ) -> Result<Instant, UpgradeRefusal> {
        let mut st = self.lock();
        st.count_foreign_token(token, path);
        let outcome = st.check_upgrade(token, id, path.accepts());
        match (&outcome, path) {
            (Err(_), _) => st.counters.upgrades_rejected += 1,
            (Ok(_), HubPath::Redirected) => st.counters.redirected_upgrades += 1,
            (Ok(_), HubPath::Market) => {}
        }
        outcome
    }

    /// Counts an upgrade that failed after the checks (a bad WebSocket request).
    pub(crate) fn upgrade_failed(&self) {
        self.lock().counters.upgrades_rejected += 1;
    }

    /// Attaches an accepted socket to its negotiated connection.
    pub(crate) fn attach(&self, id: &str, tx: UnboundedSender<HubCmd>) {
        let mut st = self.lock();
        st.counters.upgrades_accepted += 1;
        if let Some(slot) = st.slots.get_mut(id) {
            slot.socket = Some(tx);
        }
    }

    /// Forgets a connection whose socket ended (its token is single-use).
    pub(crate) fn detach(&self, id: &str) {
        self.lock().slots.remove(id);
    }

    /// Whether the next handshake must be refused (consumes one).
    pub(crate) fn take_handshake_error(&self) -> bool {
        let mut st = self.lock();
        if st.handshake_error == 0 {
            return false;
        }
        st.handshake_error -= 1;
        true
    }
}

impl HubState {
    /// Counts a token other than a redirect's access token presented at the redirect target.
    fn count_foreign_token(&mut self, token: Option<&str>, path: HubPath) {
        let Some(token) = token else { return };
        let redirect_token = self
            .tokens
            .get(token)
            .is_some_and(|e| e.kind == TokenKind::Redirect);
        if path == HubPath::Redirected && !redirect_token {
            self.counters.foreign_tokens_at_redirect += 1;
        }
    }

    /// Issues a token of `kind` for `user`.
    fn issue(&mut self, user: &str, ttl: Duration, kind: TokenKind) -> String {
        if self.tokens.len() >= MAX_TOKENS {
            let now = Instant::now();
            self.tokens.retain(|_, t| t.expires_at > now);
            if self.tokens.len() >= MAX_TOKENS {
                let oldest = self
                    .tokens
                    .iter()
                    .min_by_key(|(_, t)| t.expires_at)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.tokens.remove(&oldest);
                }
            }
        }
        let token = random_hex(32);
        crate::emulator::issued::remember(&token);
        self.tokens.insert(
            token.clone(),
            TokenEntry {
                user: user.to_owned(),
                expires_at: deadline_after(ttl),
                kind,
            },
        );
        token
    }

    /// The user of a live token of `kind` (an expired one is forgotten).
    fn live_user(&mut self, token: &str, kind: TokenKind) -> Option<String> {
        let entry = self.tokens.get(token)?;
        if entry.expires_at <= Instant::now() {
            self.tokens.remove(token);
            return None;
        }
        (entry.kind == kind).then(|| entry.user.clone())
    }

    /// Forgets stale negotiated connections that never got a socket, and the oldest beyond
    /// the cap.
    fn prune_pending(&mut self) {
        let now = Instant::now();
        self.slots.retain(|_, s| {
            s.socket.as_ref().map_or_else(
                || now.duration_since(s.created) < PENDING_TTL,
                |tx| !tx.is_closed(),
            )
        });
        while self.slots.values().filter(|s| s.socket.is_none()).count() >= MAX_PENDING {
            let oldest = self
                .slots
                .iter()
                .filter(|(_, s)| s.socket.is_none())
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => {
                    self.slots.remove(&key);
                }
                None => break,
            }
        }
    }

    /// The upgrade checks, in ASP.NET Core's order: fault, authentication, connection id.
    fn check_upgrade(
        &mut self,
        token: Option<&str>,
        id: Option<&str>,
        kind: TokenKind,
    ) -> Result<Instant, UpgradeRefusal> {
        if let Some(status) = self.reject_upgrade.take() {
            return Err(UpgradeRefusal::Fault(status));
        }
        let expires_at = token
            .and_then(|t| {
                self.live_user(t, kind)?;
                self.tokens.get(t).map(|e| e.expires_at)
            })
            .ok_or(UpgradeRefusal::Unauthorized)?;
        let id = id
            .filter(|i| !i.is_empty())
            .ok_or(UpgradeRefusal::MissingId)?;
        let slot = self.slots.get(id).ok_or(UpgradeRefusal::UnknownId)?;
        if slot.socket.is_some() {
            return Err(UpgradeRefusal::InUse);
        }
        Ok(expires_at)
    }

    /// Sends a command to every open connection.
    fn broadcast(&mut self, cmd: &HubCmd) {
        self.slots.retain(|_, slot| match &slot.socket {
            Some(tx) => tx.send(cmd.clone()).is_ok(),
            None => true,
        });
    }
}

/// Routes of the hub and token service, mounted at the gateway root.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/Auth/loginKey", web::post().to(auth::login_key))
        .route("/api/Auth/validate", web::post().to(auth::validate))
        .route(
            &format!("{HUB_PATH}/negotiate"),
            web::post().to(connection::negotiate),
        )
        .route(HUB_PATH, web::get().to(connection::upgrade))
        .route(
            &format!("{REDIRECT_PATH}/negotiate"),
            web::post().to(connection::negotiate_redirected),
        )
        .route(REDIRECT_PATH, web::get().to(connection::upgrade_redirected));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json_shapes() {
        let f: HubFault =
            serde_json::from_str(r#"{"hub_fault":"close","allow_reconnect":false}"#).unwrap();
        assert_eq!(
            f,
            HubFault::Close {
                allow_reconnect: false,
                error: None
            }
        );
        let f: HubFault = serde_json::from_str(r#"{"hub_fault":"drop"}"#).unwrap();
        assert_eq!(f, HubFault::Drop);
        let f: HubFault =
            serde_json::from_str(r#"{"hub_fault":"reject_negotiate","status":401}"#).unwrap();
        assert_eq!(
            f,
            HubFault::RejectNegotiate {
                status: 401,
                count: 1
            }
        );
        let f: super::super::Fault =
            serde_json::from_str(r#"{"fault":"hub","hub_fault":"handshake_error","count":2}"#)
                .unwrap();
        assert_eq!(
            f,
            super::super::Fault::Hub(HubFault::HandshakeError { count: 2 })
        );
    }

    #[test]
    fn tokens_expire_and_are_single_use_per_connection() {
        let hub = Hub::new(&HubConfig::default());
        assert!(hub.login("kwuser1", "wrong").is_none());
        let token = hub.login("kwuser1", "kw-demo-key").unwrap();
        assert_eq!(token.len(), 64);
        let Ok(Negotiated::Connect(_, ct)) = hub.negotiate(Some(&token), 1, HubPath::Market) else {
            panic!("a connection")
        };
        assert!(hub
            .check_upgrade(Some(&token), Some(&ct), HubPath::Market)
            .is_ok());
        assert_eq!(
            hub.check_upgrade(None, Some(&ct), HubPath::Market),
            Err(UpgradeRefusal::Unauthorized)
        );
        assert_eq!(
            hub.check_upgrade(Some(&token), Some("nope"), HubPath::Market),
            Err(UpgradeRefusal::UnknownId)
        );
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        hub.attach(&ct, tx);
        assert_eq!(
            hub.check_upgrade(Some(&token), Some(&ct), HubPath::Market),
            Err(UpgradeRefusal::InUse)
        );
        hub.detach(&ct);
        assert_eq!(
            hub.check_upgrade(Some(&token), Some(&ct), HubPath::Market),
            Err(UpgradeRefusal::UnknownId)
        );
        hub.inject(HubFault::ExpireTokens);
        assert_eq!(hub.negotiate(Some(&token), 1, HubPath::Market), Err(401));
        assert!(hub.validate(Some(&token)).is_none());
        let c = hub.counters();
        assert_eq!((c.logins, c.logins_rejected, c.negotiates), (2, 1, 2));
    }

    #[test]
    fn a_negotiate_redirect_carries_a_token_only_its_target_accepts() {
        let f: HubFault = serde_json::from_str(
            r#"{"hub_fault":"redirect_negotiate","url":"http://127.0.0.1:1/x"}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            HubFault::RedirectNegotiate {
                url: "http://127.0.0.1:1/x".into(),
                count: 1,
                with_access_token: true
            }
        );
        let hub = Hub::new(&HubConfig::default());
        let login = hub.login("kwuser1", "kw-demo-key").unwrap();
        hub.inject(HubFault::RedirectNegotiate {
            url: "http://127.0.0.1:1/hubs/redirected".into(),
            count: 1,
            with_access_token: true,
        });
        let Ok(Negotiated::Redirect {
            url,
            access_token: Some(access_token),
        }) = hub.negotiate(Some(&login), 1, HubPath::Market)
        else {
            panic!("a redirect with a token")
        };
        assert_eq!(url, "http://127.0.0.1:1/hubs/redirected");
        assert_ne!(access_token, login);
        // The login token is refused (and counted) at the target; the redirect token works.
        assert_eq!(
            hub.negotiate(Some(&login), 1, HubPath::Redirected),
            Err(401)
        );
        let Ok(Negotiated::Connect(_, ct)) =
            hub.negotiate(Some(&access_token), 1, HubPath::Redirected)
        else {
            panic!("a connection")
        };
        assert!(hub
            .check_upgrade(Some(&access_token), Some(&ct), HubPath::Redirected)
            .is_ok());
        // and the redirect token is no good at the market hub
        assert_eq!(
            hub.negotiate(Some(&access_token), 1, HubPath::Market),
            Err(401)
        );
        let c = hub.counters();
        assert_eq!(
            (
                c.negotiate_redirects,
                c.redirected_negotiates,
                c.redirected_upgrades,
                c.foreign_tokens_at_redirect
            ),
            (1, 2, 1, 1)
        );
    }

    #[test]
    fn random_hex_lengths() {
        assert_eq!(random_hex(16).len(), 32);
        assert_eq!(random_hex(32).len(), 64);
        assert_ne!(random_hex(16), random_hex(16));
    }
}
