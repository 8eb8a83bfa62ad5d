//! Configuration of a keepwire supervisor: one [`StreamConfig`] per gateway connection.
//!
//! Everything here is plain data with defaults that suit a production IBKR gateway; the binary's
//! TOML loader (and tests) fill it in. Secrets never live here: credentials are fetched at dial
//! time by the dialect (see [`crate::dialect`]).

use std::path::PathBuf;
use std::time::Duration;

/// Which wire dialect a stream speaks.
#[derive(Clone, Debug)]
pub enum DialectKind {
    /// IBKR Client Portal Gateway (REST session + `/v1/api/ws`).
    Ibkr(IbkrConfig),
    /// A WebSocket opened with a one-time ticket bought with a JWT (seed 004).
    Ticket(Box<crate::dialect::ticket::TicketConfig>),
    /// An ASP.NET Core SignalR hub with a token factory (seed 003).
    SignalR(Box<crate::dialect::signalr::SignalRConfig>),
}

/// What to do when the gateway reports a competing brokerage session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CompetingPolicy {
    /// Take the session over (`ssodh/init` with `compete:true`).
    #[default]
    Compete,
    /// Leave the other session alone: a hard failure until [`crate::Handle::resume`] is called.
    Yield,
}

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

/// Exponential backoff with jitter (see [`crate::backoff`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffConfig {
    /// First delay (before jitter).
    pub initial: Duration,
    /// Upper bound of any delay, jitter included.
    pub max: Duration,
    /// Growth factor per attempt.
    pub multiplier: f64,
    /// Jitter: each delay is drawn from `[d·(1−r), d·(1+r)]`, then clamped.
    pub randomization: f64,
    /// How long a connection must stay healthy before the attempt counter resets.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            randomization: 0.5,
            reset_after: Duration::from_secs(30),
        }
    }
}

/// How the gateway's TLS certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TlsConfig {
    /// Verify against the bundled public roots (webpki-roots).
    #[default]
    Verified,
    /// Verify against this PEM file (the gateway's self-signed certificate or its CA).
    CaFile(PathBuf),
    /// Verify against this PEM text.
    CaPem(String),
    /// Do not verify. Refused unless the host is loopback (`127.0.0.0/8`, `::1`, `localhost`).
    InsecureSkipVerifyLoopbackOnly,
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
    pub fn ticket(
        name: impl Into<String>,
        url: impl Into<String>,
        ticket: crate::dialect::ticket::TicketConfig,
    ) -> Self {
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
        signalr: crate::dialect::signalr::SignalRConfig,
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
    pub fn signalr_config_mut(&mut self) -> Option<&mut crate::dialect::signalr::SignalRConfig> {
        match &mut self.dialect {
            DialectKind::SignalR(c) => Some(c),
            _ => None,
        }
    }

    /// The ticket settings, when this is a ticket stream.
    pub fn ticket_config_mut(&mut self) -> Option<&mut crate::dialect::ticket::TicketConfig> {
        match &mut self.dialect {
            DialectKind::Ticket(c) => Some(c),
            _ => None,
        }
    }
}

/// Where a secret comes from. Never from configuration text.
#[derive(Clone, Debug)]
pub enum SecretSource {
    /// An environment variable, read at each fetch.
    Env(String),
    /// A file, read at each fetch (trailing whitespace trimmed).
    File(PathBuf),
    /// Given by the embedding program.
    Value(secrecy::SecretString),
}

impl SecretSource {
    /// Reads the secret now (each fetch reads it again, so a rotated secret is picked up).
    pub fn read(&self) -> Result<secrecy::SecretString, crate::failure::Failure> {
        match self {
            SecretSource::Env(var) => std::env::var(var).map(secrecy::SecretString::from).map_err(|_| crate::failure::Failure::Config {
                detail: format!("environment variable {var} (token secret) is not set: export it before starting keepwire"),
            }),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| secrecy::SecretString::from(s.trim_end().to_string()))
                .map_err(|e| crate::failure::Failure::Config { detail: format!("token secret file {}: {e}", path.display()) }),
            SecretSource::Value(v) => Ok(v.clone()),
        }
    }
}
