//! Configuration of a keepwire supervisor: one [`StreamConfig`] per gateway connection.
//!
//! Everything here is plain data with defaults that suit a production IBKR gateway; the binary's
//! TOML loader (and tests) fill it in. Secrets never live here: credentials are fetched at dial
//! time by the dialect (see [`crate::dialect`]).

use std::sync::Arc;
use std::time::Duration;

pub use crate::backoff::BackoffConfig;
pub use crate::dialect::ibkr::IbkrConfig;
pub use crate::failure::CompetingPolicy;
pub use crate::secret::SecretSource;
pub use crate::tls::TlsConfig;

use crate::dialect::signalr::SignalRConfig;
use crate::dialect::ticket::TicketConfig;
use crate::dialect::{ibkr, signalr, ticket, DialectSend};
use crate::failure::Failure;
use crate::transport::ClientFactory;

/// Which wire dialect a stream speaks.
#[derive(Clone, Debug)]
pub enum DialectKind {
    /// IBKR Client Portal Gateway (REST session + `/v1/api/ws`).
    Ibkr(IbkrConfig),
    /// A WebSocket opened with a one-time ticket bought with a JWT (seed 004).
    Ticket(Box<TicketConfig>),
    /// An ASP.NET Core SignalR hub with a token factory (seed 003).
    SignalR(Box<SignalRConfig>),
}

/// Restart intensity: more than `max_restarts` restarts of one actor within `window` escalate to
/// a hard failure of the stream instead of looping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartIntensity {
    /// Restarts allowed inside the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for RestartIntensity {
    fn default() -> Self {
        Self {
            max_restarts: 20,
            window: Duration::from_secs(10),
        }
    }
}

/// One supervised stream: a gateway, its dialect and the limits that govern it.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Name used in status, metrics (`stream` label) and logs.
    pub name: String,
    /// Gateway base URL, e.g. `https://127.0.0.1:5000` (IBKR REST lives under `/v1/api`).
    pub url: String,
    /// The wire dialect.
    pub dialect: DialectKind,
    /// TLS verification.
    pub tls: TlsConfig,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// Slow polling interval while a person has to log in (2FA).
    pub login_poll_interval: Duration,
    /// No frame at all for this long means the socket is dead, whatever TCP says.
    pub heartbeat_timeout: Duration,
    /// How long the opening exchange (until the gateway confirms authentication) may take.
    pub auth_timeout: Duration,
    /// TCP connect + TLS handshake timeout, and REST request timeout.
    pub request_timeout: Duration,
    /// Largest WebSocket frame accepted.
    pub max_frame_size: usize,
    /// Largest reassembled (fragmented) message accepted.
    pub max_message_size: usize,
    /// How long a subscription may stay unconfirmed before it is re-sent.
    pub confirm_timeout: Duration,
    /// How many times a subscription is sent on one socket before it is marked failed.
    pub max_subscribe_attempts: u32,
    /// Capacity of each consumer's event queue (oldest events are dropped when full).
    pub consumer_capacity: usize,
    /// Malformed frames tolerated within `heartbeat_timeout` before the socket is rebuilt.
    pub malformed_burst: u32,
    /// Restart intensity per actor.
    pub restart_intensity: RestartIntensity,
}

impl StreamConfig {
    /// A stream to an IBKR Client Portal Gateway at `url` with default settings.
    pub fn ibkr(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            dialect: DialectKind::Ibkr(IbkrConfig::default()),
            tls: TlsConfig::default(),
            backoff: BackoffConfig::default(),
            login_poll_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
            max_frame_size: 1 << 20,
            max_message_size: 4 << 20,
            confirm_timeout: Duration::from_secs(10),
            max_subscribe_attempts: 3,
            consumer_capacity: 4096,
            malformed_burst: 100,
            restart_intensity: RestartIntensity::default(),
        }
    }

    /// A stream to a ticket-authenticated WebSocket API at `url` with default settings.
    pub fn ticket(name: impl Into<String>, url: impl Into<String>, ticket: TicketConfig) -> Self {
        Self {
            dialect: DialectKind::Ticket(Box::new(ticket)),
            ..Self::ibkr(name, url)
        }
    }

    /// A stream to the SignalR hub at `hub_url` (e.g. `https://host/hubs/market`): pings every
    /// 15 s, the socket presumed dead after 30 s of silence.
    pub fn signalr(
        name: impl Into<String>,
        hub_url: impl Into<String>,
        signalr: SignalRConfig,
    ) -> Self {
        let mut cfg = Self::ibkr(name, hub_url);
        cfg.heartbeat_timeout = Duration::from_secs(30);
        cfg.dialect = DialectKind::SignalR(Box::new(signalr));
        cfg
    }

    /// The IBKR settings, when this is an IBKR stream.
    pub fn ibkr_config_mut(&mut self) -> Option<&mut IbkrConfig> {
        match &mut self.dialect {
            DialectKind::Ibkr(c) => Some(c),
            _ => None,
        }
    }

    /// The SignalR settings, when this is a SignalR stream.
    pub fn signalr_config_mut(&mut self) -> Option<&mut SignalRConfig> {
        match &mut self.dialect {
            DialectKind::SignalR(c) => Some(c),
            _ => None,
        }
    }

    /// The ticket settings, when this is a ticket stream.
    pub fn ticket_config_mut(&mut self) -> Option<&mut TicketConfig> {
        match &mut self.dialect {
            DialectKind::Ticket(c) => Some(c),
            _ => None,
        }
    }
}

/// Builds the dialect of a stream: the dialect modules take their own settings and the gateway
/// URL, and know nothing of [`StreamConfig`].
pub fn build_dialect(config: &StreamConfig) -> Arc<dyn DialectSend> {
    match &config.dialect {
        DialectKind::Ibkr(c) => Arc::new(ibkr::Ibkr::new(&config.url, c.clone())),
        DialectKind::Ticket(c) => Arc::new(ticket::Ticket::new(&config.url, (**c).clone())),
        DialectKind::SignalR(c) => Arc::new(signalr::SignalR::new(&config.url, (**c).clone())),
    }
}

impl ClientFactory {
    /// Validates the stream's URL and TLS settings once (see [`ClientFactory::for_gateway`]).
    pub fn new(config: &StreamConfig) -> Result<Self, Failure> {
        Self::for_gateway(&config.url, &config.tls, config.request_timeout)
    }
}
