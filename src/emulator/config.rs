//! Emulator configuration: listeners, TLS, timing and the IBKR behaviour variants to produce.

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
    pub hub: crate::emulator::signalr::HubConfig,
    /// The ticket API.
    pub ticket: crate::emulator::ticket::TicketConfig,
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
