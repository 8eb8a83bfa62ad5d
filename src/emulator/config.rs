//! Emulator configuration: listeners, TLS, timing, the IBKR behaviour variants to produce, and
//! the settings of the SignalR hub ([`HubConfig`]) and the ticket API ([`TicketConfig`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How the emulated gateway serves TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP and `ws://` (the default; handy for tests that do not care about TLS).
    #[default]
    Plain,
    /// A fresh self-signed certificate generated with rcgen for `127.0.0.1` and `localhost`;
    /// its PEM is available from [`EmulatorHandle::ca_pem`](super::EmulatorHandle::ca_pem).
    SelfSigned,
    /// A certificate chain and private key read from PEM files.
    Files {
        /// PEM file holding the certificate chain (leaf first).
        cert: PathBuf,
        /// PEM file holding the private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

/// Which of the `sts` message variants seen in the wild the socket sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StsStyle {
    /// One `sts` message carrying every arg.
    #[default]
    Whole,
    /// One `sts` message per arg, `authenticated` first.
    Split,
    /// One `sts` message without the `authenticated` field.
    Legacy,
}

/// Everything the emulator needs to start.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Gateway listener (REST + WebSocket). Must be a loopback address; default `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// Admin listener (plain HTTP); separate so it survives `GatewayDown`. Default `127.0.0.1:0`.
    pub admin_bind: SocketAddr,
    /// TLS mode of the gateway listener.
    pub tls: TlsMode,
    /// Interval of the socket's system heartbeat (`{"topic":"system","hb":…}`); default 10 s.
    pub heartbeat_interval: Duration,
    /// One `smd` update per subscribed conid every this often; default 100 ms.
    pub market_data_interval: Duration,
    /// An `smd` stream ends silently this long after its last (re)subscribe; `None` = never.
    pub smd_expiry: Option<Duration>,
    /// `true` (default): the brokerage session is authenticated at start. `false`: 2FA not yet
    /// approved; `auth/status` says `authenticated:false` and `ssodh/init` fails until
    /// [`Fault::ApproveLogin`](super::Fault::ApproveLogin).
    pub login_approved: bool,
    /// `POST /iserver/auth/status` answers 400 "Bad Request" (GET always works).
    pub auth_status_post_rejected: bool,
    /// Shape of the `sts` messages.
    pub sts_style: StsStyle,
    /// User name reported by the socket and REST.
    pub username: String,
    /// The SignalR hub.
    pub hub: HubConfig,
    /// The ticket API.
    pub ticket: TicketConfig,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Self {
            bind: loopback,
            admin_bind: loopback,
            tls: TlsMode::Plain,
            heartbeat_interval: Duration::from_secs(10),
            market_data_interval: Duration::from_millis(100),
            smd_expiry: None,
            login_approved: true,
            auth_status_post_rejected: false,
            sts_style: StsStyle::Whole,
            username: "kwuser1".to_owned(),
            hub: Default::default(),
            ticket: Default::default(),
        }
    }
}

/// Settings of the hub and its token service.
#[derive(Clone)]
pub struct HubConfig {
    /// Lifetime of a token from `loginKey` or `validate`; default 10 minutes.
    pub token_ttl: Duration,
    /// Accepted API keys by user name; default `kwuser1` → `kw-demo-key`.
    pub api_keys: BTreeMap<String, String>,
    /// The server sends a Ping this often; default 15 s.
    pub ping_interval: Duration,
    /// The server closes a connection it heard nothing from for this long; default 30 s.
    pub client_timeout: Duration,
    /// A client that sent no handshake within this long is disconnected; default 15 s.
    pub handshake_timeout: Duration,
    /// One `GatewayQuote` per subscribed contract this often; default 100 ms.
    pub quote_interval: Duration,
    /// When the token a connection was opened with expires, the hub sends Close with error
    /// `Unauthorized` and `allowReconnect:true` (ASP.NET Core's `CloseOnAuthenticationExpiration`);
    /// default `true`.
    pub close_on_token_expiry: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(600),
            api_keys: BTreeMap::from([("kwuser1".to_owned(), "kw-demo-key".to_owned())]),
            ping_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(15),
            quote_interval: Duration::from_millis(100),
            close_on_token_expiry: true,
        }
    }
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("token_ttl", &self.token_ttl)
            .field("api_keys", &self.api_keys.keys().collect::<Vec<_>>())
            .field("ping_interval", &self.ping_interval)
            .field("client_timeout", &self.client_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("quote_interval", &self.quote_interval)
            .field("close_on_token_expiry", &self.close_on_token_expiry)
            .finish()
    }
}

/// Settings of the ticket API.
#[derive(Clone, Debug)]
pub struct TicketConfig {
    /// The API key the token endpoint accepts.
    pub api_key: String,
    /// Lifetime of a JWT.
    pub jwt_ttl: Duration,
    /// Lifetime of a ticket.
    pub ticket_ttl: Duration,
    /// Origins allowed on the socket (`None`: any, including none).
    pub allowed_origins: Option<Vec<String>>,
    /// Heartbeat interval on the socket.
    pub heartbeat_interval: Duration,
    /// One data message per subscribed channel this often.
    pub data_interval: Duration,
    /// Admit at most this many socket upgrades per second; beyond it, 429 with `Retry-After: 1`
    /// (a gateway protecting itself from a reconnect storm). `None`: no limit.
    pub upgrades_per_second: Option<u32>,
}

impl Default for TicketConfig {
    fn default() -> Self {
        Self {
            api_key: "kw-ticket-key".into(),
            jwt_ttl: Duration::from_secs(900),
            ticket_ttl: Duration::from_secs(30),
            allowed_origins: Some(vec!["https://app.example.test".into()]),
            heartbeat_interval: Duration::from_secs(1),
            data_interval: Duration::from_millis(100),
            upgrades_per_second: None,
        }
    }
}
