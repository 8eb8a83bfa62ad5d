//! Configuration of a keepwire supervisor: one [`StreamConfig`] per gateway connection.
//!
//! Everything here is plain data with defaults that suit a production IBKR gateway; the binary's
//! TOML loader (and tests) fill it in. Secrets never live here: credentials are fetched at dial
//! time by the dialect (see [`crate::dialect`]).

use std::fmt;
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
use crate::secret::redact_userinfo;
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

/// One supervised stream: a gateway, its dialect and the limits that govern it. `Debug` shows
/// the URL redacted (no `user:password@`, no query values).
#[derive(Clone)]
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
    /// With [`HaConfig`] (active/standby replicas): whether only the replica holding the lease
    /// runs this stream. `None` is the default: exclusive for IBKR streams (one brokerage session
    /// per user), not for the others. Ignored without `[ha]`.
    pub exclusive: Option<bool>,
}

impl fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamConfig")
            .field("name", &self.name)
            .field("url", &crate::transport::redact_url(&self.url))
            .field("dialect", &self.dialect)
            .field("tls", &self.tls)
            .field("backoff", &self.backoff)
            .field("login_poll_interval", &self.login_poll_interval)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("auth_timeout", &self.auth_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_frame_size", &self.max_frame_size)
            .field("max_message_size", &self.max_message_size)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("max_subscribe_attempts", &self.max_subscribe_attempts)
            .field("consumer_capacity", &self.consumer_capacity)
            .field("malformed_burst", &self.malformed_burst)
            .field("restart_intensity", &self.restart_intensity)
            .finish()
    }
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
            exclusive: None,
        }
    }

    /// Whether this stream runs only on the replica holding the HA lease (see
    /// [`StreamConfig::exclusive`]).
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
            .unwrap_or(matches!(self.dialect, DialectKind::Ibkr(_)))
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

impl StreamConfig {
    /// Every URL this stream's configuration names, with its setting: `url`, and per dialect
    /// `ticket.token_url`, `ticket.ticket_url`, `ticket.socket_url`, `signalr.login_url`,
    /// `signalr.validate_url` when set. (URLs derived from `url` share its scheme and host.)
    pub fn urls(&self) -> Vec<(&'static str, &str)> {
        let mut urls = vec![("url", self.url.as_str())];
        match &self.dialect {
            DialectKind::Ibkr(_) => {}
            DialectKind::Ticket(t) => {
                for (field, url) in [
                    ("ticket.token_url", &t.token_url),
                    ("ticket.ticket_url", &t.ticket_url),
                    ("ticket.socket_url", &t.socket_url),
                ] {
                    if let Some(url) = url {
                        urls.push((field, url.as_str()));
                    }
                }
            }
            DialectKind::SignalR(h) => {
                if let Some(url) = &h.login_url {
                    urls.push(("signalr.login_url", url.as_str()));
                }
                if let Some(url) = h
                    .validate_url
                    .as_deref()
                    .filter(|u| h.validate && !u.is_empty())
                {
                    urls.push(("signalr.validate_url", url));
                }
            }
        }
        urls
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

/// The shortest first reconnect delay (`backoff.initial`): below it a mass reconnect is a storm.
pub const MIN_BACKOFF_INITIAL: Duration = Duration::from_millis(10);
/// The shortest timeout (`heartbeat_timeout`, `auth_timeout`, `request_timeout`,
/// `confirm_timeout`): anything shorter fails healthy gateways and redials in a loop.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// The shortest periodic interval (IBKR `tickle_interval` and `tic_interval`,
/// `login_poll_interval`, SignalR `ping_interval`). Production values are seconds to a minute;
/// the floor is low enough for the fast test and demo gateways and still ≤ 10 timer wake-ups a
/// second on the thread every stream shares (`0s` would be a busy loop).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The shortest slow period (`backoff.reset_after`, IBKR `resubscribe_interval`,
/// `restart_intensity.window`, SignalR `token_lifetime`).
pub const MIN_SLOW_INTERVAL: Duration = Duration::from_secs(1);
/// The longest duration of any setting (a year): beyond it `Instant + Duration` can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);
/// The largest `backoff.multiplier`.
pub const MAX_MULTIPLIER: f64 = 100.0;

/// One thing wrong with a [`StreamConfig`], found by [`StreamConfig::validate`].
///
/// `value` is rendered from numbers and durations only, and every text is passed through a
/// redaction of URL userinfo when shown: no problem ever prints a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The setting, as a path into [`StreamConfig`]: `backoff.max`, `ibkr.tic_interval`,
    /// `signalr.ping_interval`, `heartbeat_timeout`.
    pub field: String,
    /// The value found, as written in a configuration file (`"0s"`, `"250ms"`, `NaN`).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
    /// How to fix it.
    pub remedy: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {}: {}; {}",
            redact_userinfo(&self.field),
            redact_userinfo(&self.value),
            redact_userinfo(&self.reason),
            redact_userinfo(&self.remedy)
        )
    }
}

impl std::error::Error for ConfigProblem {}

/// A duration as a configuration file writes it: `"0s"`, `"250ms"`, `"1.5s"`, `"9m"`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if d.subsec_nanos() % 1_000_000 != 0 {
        format!("\"{}s\"", d.as_secs_f64())
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("\"{}m\"", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("\"{}s\"", ms / 1000)
    } else {
        format!("\"{ms}ms\"")
    }
}

/// Active/standby replicas (`[ha]`, [`crate::Handle`]'s `Builder::ha`): the replicas of one
/// service elect a leader on an etcd lease; only the leader runs the exclusive streams
/// ([`StreamConfig::exclusive`]), the others keep them in `standby`. Needs the `ha` feature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaConfig {
    /// etcd v3 endpoints, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The election's name (the etcd key prefix every replica campaigns on).
    pub election: String,
    /// Lease TTL: how long a dead leader keeps the lease on the server (default 10 s). A leader
    /// without a successful keepalive for half of it fences itself.
    pub lease_ttl: Duration,
    /// This replica's id (unique among the replicas; shown in logs and sent to the gateway in
    /// the `X-Keepwire-Replica` header).
    pub replica_id: String,
}

/// The shortest `[ha] lease_ttl` (etcd's own minimum is a few seconds).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// The longest `[ha] lease_ttl`.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);

impl HaConfig {
    /// `[ha]` with the default TTL (10 s).
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        election: impl Into<String>,
        replica_id: impl Into<String>,
    ) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            election: election.into(),
            lease_ttl: Duration::from_secs(10),
            replica_id: replica_id.into(),
        }
    }

    /// Checks every setting; `Err` lists every problem with its field (`ha.…`), value and fix.
    pub fn validate(&self) -> Result<(), Vec<ConfigProblem>> {
        let mut p = Problems::default();
        if self.endpoints.is_empty() {
            p.push(
                "ha.endpoints",
                "[]".into(),
                "is empty: replicas elect their leader on etcd".into(),
                "list the etcd endpoints, e.g. [\"http://127.0.0.1:2379\"]".into(),
            );
        }
        for e in &self.endpoints {
            let scheme_ok = e.starts_with("http://") || e.starts_with("https://");
            if !scheme_ok || crate::transport::url_host(e).is_none_or_empty() {
                p.push(
                    "ha.endpoints",
                    format!("\"{e}\""),
                    "is not an http(s) URL with a host".into(),
                    "write it like \"http://127.0.0.1:2379\"".into(),
                );
            }
        }
        let ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        };
        if !ident(&self.election) {
            p.push(
                "ha.election",
                format!("{:?}", self.election),
                "must be 1 to 128 letters, digits, '-', '_', '.' or '/'".into(),
                "set ha.election to e.g. \"keepwire/ibkr\"".into(),
            );
        }
        if !ident(&self.replica_id) {
            p.push(
                "ha.replica_id",
                format!("{:?}", self.replica_id),
                "must be 1 to 128 letters, digits, '-', '_', '.' or '/'".into(),
                "set ha.replica_id to e.g. the host name".into(),
            );
        }
        if self.lease_ttl < MIN_LEASE_TTL
            || self.lease_ttl > MAX_LEASE_TTL
            || self.lease_ttl.subsec_nanos() != 0
        {
            p.push(
                "ha.lease_ttl",
                human_duration(self.lease_ttl),
                format!(
                    "must be whole seconds between {} and {}",
                    human_duration(MIN_LEASE_TTL),
                    human_duration(MAX_LEASE_TTL)
                ),
                "set ha.lease_ttl to e.g. \"10s\"".into(),
            );
        }
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(p.0)
        }
    }
}

/// `Option<&str>` that is `None` or empty.
trait NoneOrEmpty {
    fn is_none_or_empty(&self) -> bool;
}

impl NoneOrEmpty for Option<&str> {
    fn is_none_or_empty(&self) -> bool {
        self.map_or(true, str::is_empty)
    }
}

/// Collects problems while [`StreamConfig::validate`] walks the settings.
#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn push(&mut self, field: &str, value: String, reason: String, remedy: String) {
        self.0.push(ConfigProblem {
            field: field.to_string(),
            value,
            reason,
            remedy,
        });
    }

    /// A duration within `[min, MAX_DURATION]`; `what` says what a too-small value would cause.
    fn duration(&mut self, field: &str, d: Duration, min: Duration, what: &str) {
        if d < min {
            self.push(
                field,
                human_duration(d),
                format!("is below the floor of {} ({what})", human_duration(min)),
                format!("set {field} to at least {}", human_duration(min)),
            );
        } else if d > MAX_DURATION {
            self.push(
                field,
                human_duration(d),
                "is longer than a year".into(),
                format!("set {field} to at most \"8760h\""),
            );
        }
    }

    fn positive(&mut self, field: &str, n: u64, what: &str) {
        if n == 0 {
            self.push(
                field,
                "0".into(),
                format!("must be above zero ({what})"),
                format!("set {field} to a positive number"),
            );
        }
    }
}

impl StreamConfig {
    /// Checks every setting against its floor and range; `Err` lists every problem found, each
    /// naming the field, the value and the fix. [`crate::Handle`]'s builder runs it for every
    /// stream, and so does the TOML loader, so a library user gets the same checks as a file.
    ///
    /// Floors: [`MIN_BACKOFF_INITIAL`] for `backoff.initial`; [`MIN_TIMEOUT`] for the timeouts;
    /// [`MIN_INTERVAL`] for periodic intervals; [`MIN_SLOW_INTERVAL`] for `backoff.reset_after`,
    /// `ibkr.resubscribe_interval`, `restart_intensity.window`, `signalr.token_lifetime`; every
    /// duration at most [`MAX_DURATION`]. Also: `backoff.max ≥ backoff.initial`, a finite
    /// `backoff.multiplier` in `[1, MAX_MULTIPLIER]`, a finite `backoff.randomization` in
    /// `[0, 1)`, sizes and counts above zero, and a SignalR `heartbeat_timeout` longer than
    /// `signalr.ping_interval`. Every URL the stream will call ([`StreamConfig::urls`]) obeys
    /// the URL rule ([`crate::url_rule::check`]), and `insecure_skip_verify` needs a loopback
    /// `url`; the same rule runs again whenever a URL is used.
    pub fn validate(&self) -> Result<(), Vec<ConfigProblem>> {
        let mut p = Problems::default();
        for (field, url) in self.urls() {
            match crate::url_rule::check(field, url) {
                Err(problem) => p.push(
                    field,
                    format!("\"{}\"", problem.shown),
                    problem.reason,
                    problem.remedy,
                ),
                Ok(checked)
                    if field == "url"
                        && !checked.loopback
                        && self.tls == TlsConfig::InsecureSkipVerifyLoopbackOnly =>
                {
                    p.push(
                        "insecure_skip_verify",
                        "true".into(),
                        "skips certificate verification for a host that is not this machine".into(),
                        "trust the gateway's certificate with a CA file (ca_file) instead".into(),
                    )
                }
                Ok(_) => {}
            }
        }
        if self.name.trim().is_empty() {
            p.push(
                "name",
                "\"\"".into(),
                "is empty (it labels status, metrics and logs)".into(),
                "give the stream a name, e.g. \"ibkr\"".into(),
            );
        }
        let b = &self.backoff;
        p.duration(
            "backoff.initial",
            b.initial,
            MIN_BACKOFF_INITIAL,
            "a reconnect storm",
        );
        if b.max < b.initial {
            p.push(
                "backoff.max",
                human_duration(b.max),
                format!(
                    "is below backoff.initial = {}: initial must be at most max",
                    human_duration(b.initial)
                ),
                format!(
                    "set backoff.max to at least {} (e.g. \"5s\")",
                    human_duration(b.initial.max(MIN_BACKOFF_INITIAL))
                ),
            );
        } else {
            p.duration(
                "backoff.max",
                b.max,
                MIN_BACKOFF_INITIAL,
                "a reconnect storm",
            );
        }
        if !b.multiplier.is_finite() || !(1.0..=MAX_MULTIPLIER).contains(&b.multiplier) {
            p.push(
                "backoff.multiplier",
                b.multiplier.to_string(),
                format!("must be a number from 1 to {MAX_MULTIPLIER}"),
                "set backoff.multiplier to e.g. 2".into(),
            );
        }
        if !b.randomization.is_finite() || !(0.0..1.0).contains(&b.randomization) {
            p.push(
                "backoff.randomization",
                b.randomization.to_string(),
                "must be a number from 0 up to (not including) 1".into(),
                "set backoff.randomization to e.g. 0.5".into(),
            );
        }
        p.duration(
            "backoff.reset_after",
            b.reset_after,
            MIN_SLOW_INTERVAL,
            "a gateway that accepts and drops at once would be redialled without backoff",
        );
        p.duration(
            "login_poll_interval",
            self.login_poll_interval,
            MIN_INTERVAL,
            "a busy poll",
        );
        for (field, d) in [
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("auth_timeout", self.auth_timeout),
            ("request_timeout", self.request_timeout),
            ("confirm_timeout", self.confirm_timeout),
        ] {
            p.duration(field, d, MIN_TIMEOUT, "healthy gateways would time out");
        }
        p.positive(
            "max_frame_size",
            self.max_frame_size as u64,
            "no frame would be accepted",
        );
        p.positive(
            "max_message_size",
            self.max_message_size as u64,
            "no message would be accepted",
        );
        p.positive(
            "consumer_capacity",
            self.consumer_capacity as u64,
            "consumers would receive nothing",
        );
        p.positive(
            "max_subscribe_attempts",
            u64::from(self.max_subscribe_attempts),
            "no subscription would be sent",
        );
        p.duration(
            "restart_intensity.window",
            self.restart_intensity.window,
            MIN_SLOW_INTERVAL,
            "restart intensity would never trip",
        );
        match &self.dialect {
            DialectKind::Ibkr(c) => {
                p.duration(
                    "ibkr.tickle_interval",
                    c.tickle_interval,
                    MIN_INTERVAL,
                    "a busy keepalive loop",
                );
                p.duration(
                    "ibkr.tic_interval",
                    c.tic_interval,
                    MIN_INTERVAL,
                    "a busy keepalive loop",
                );
                p.duration(
                    "ibkr.resubscribe_interval",
                    c.resubscribe_interval,
                    MIN_SLOW_INTERVAL,
                    "subscriptions re-sent in a loop",
                );
            }
            DialectKind::SignalR(c) => {
                p.duration(
                    "signalr.ping_interval",
                    c.ping_interval,
                    MIN_INTERVAL,
                    "a busy ping loop",
                );
                if let Some(life) = c.token_lifetime {
                    p.duration(
                        "signalr.token_lifetime",
                        life,
                        MIN_SLOW_INTERVAL,
                        "tokens fetched in a loop",
                    );
                }
                if self.heartbeat_timeout <= c.ping_interval {
                    p.push(
                        "heartbeat_timeout",
                        human_duration(self.heartbeat_timeout),
                        format!(
                            "is not longer than signalr.ping_interval = {}: a healthy hub would be declared dead between pings",
                            human_duration(c.ping_interval)
                        ),
                        format!(
                            "set heartbeat_timeout to about twice signalr.ping_interval ({})",
                            human_duration(c.ping_interval.saturating_mul(2))
                        ),
                    );
                }
            }
            DialectKind::Ticket(_) => {}
        }
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(p.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha_config_is_validated_like_streams() {
        assert_eq!(
            HaConfig::new(["http://127.0.0.1:2379"], "keepwire/ibkr", "replica-1").validate(),
            Ok(())
        );
        let mut bad = HaConfig::new(["127.0.0.1:2379"], "", "");
        bad.lease_ttl = Duration::from_millis(1500);
        let fields: Vec<_> = bad
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(
            fields,
            [
                "ha.endpoints",
                "ha.election",
                "ha.replica_id",
                "ha.lease_ttl"
            ]
        );
    }

    #[test]
    fn only_ibkr_streams_are_exclusive_by_default() {
        let mut s = StreamConfig::ibkr("a", "https://127.0.0.1:5000");
        assert!(s.is_exclusive());
        s.exclusive = Some(false);
        assert!(!s.is_exclusive());
        let t = StreamConfig::signalr("b", "https://127.0.0.1:5000/hub", Default::default());
        assert!(!t.is_exclusive());
    }
    use crate::dialect::signalr::SignalRConfig;

    fn ibkr() -> StreamConfig {
        StreamConfig::ibkr("gw", "https://127.0.0.1:5000")
    }

    fn signalr() -> StreamConfig {
        StreamConfig::signalr(
            "hub",
            "https://127.0.0.1:5001/hub",
            SignalRConfig::default(),
        )
    }

    fn problems(cfg: &StreamConfig) -> Vec<ConfigProblem> {
        cfg.validate().err().unwrap_or_default()
    }

    #[test]
    fn the_defaults_of_every_dialect_are_valid() {
        assert_eq!(ibkr().validate(), Ok(()));
        assert_eq!(signalr().validate(), Ok(()));
        let ticket = StreamConfig::ticket("t", "https://127.0.0.1:5002", TicketConfig::default());
        assert_eq!(ticket.validate(), Ok(()));
    }

    type Edit = fn(&mut StreamConfig);
    /// A base config, an edit that breaks one field, the field, a fragment of the value shown.
    type Row = (fn() -> StreamConfig, Edit, &'static str, &'static str);

    /// Each row: a base config, one bad value, the field that must be named and a fragment of
    /// the value as shown.
    #[test]
    fn every_zero_or_absurd_value_is_named_with_its_value_and_a_fix() {
        let rows: Vec<Row> = vec![
            (
                ibkr,
                |c| c.backoff.initial = Duration::from_millis(1),
                "backoff.initial",
                "\"1ms\"",
            ),
            (
                ibkr,
                |c| c.backoff.max = Duration::ZERO,
                "backoff.max",
                "\"0s\"",
            ),
            (
                ibkr,
                |c| c.backoff.multiplier = 0.5,
                "backoff.multiplier",
                "0.5",
            ),
            (
                ibkr,
                |c| c.backoff.multiplier = f64::INFINITY,
                "backoff.multiplier",
                "inf",
            ),
            (
                ibkr,
                |c| c.backoff.randomization = f64::NAN,
                "backoff.randomization",
                "NaN",
            ),
            (
                ibkr,
                |c| c.backoff.randomization = 1.0,
                "backoff.randomization",
                "1",
            ),
            (
                ibkr,
                |c| c.backoff.randomization = -0.1,
                "backoff.randomization",
                "-0.1",
            ),
            (
                ibkr,
                |c| c.backoff.reset_after = Duration::ZERO,
                "backoff.reset_after",
                "\"0s\"",
            ),
            (
                ibkr,
                |c| c.login_poll_interval = Duration::ZERO,
                "login_poll_interval",
                "\"0s\"",
            ),
            (
                ibkr,
                |c| c.heartbeat_timeout = Duration::from_millis(50),
                "heartbeat_timeout",
                "\"50ms\"",
            ),
            (
                ibkr,
                |c| c.auth_timeout = Duration::ZERO,
                "auth_timeout",
                "\"0s\"",
            ),
            (
                ibkr,
                |c| c.request_timeout = Duration::ZERO,
                "request_timeout",
                "\"0s\"",
            ),
            (
                ibkr,
                |c| c.confirm_timeout = Duration::ZERO,
                "confirm_timeout",
                "\"0s\"",
            ),
            (
                ibkr,
                |c| c.request_timeout = Duration::MAX,
                "request_timeout",
                "s\"",
            ),
            (ibkr, |c| c.max_frame_size = 0, "max_frame_size", "0"),
            (ibkr, |c| c.max_message_size = 0, "max_message_size", "0"),
            (ibkr, |c| c.consumer_capacity = 0, "consumer_capacity", "0"),
            (
                ibkr,
                |c| c.max_subscribe_attempts = 0,
                "max_subscribe_attempts",
                "0",
            ),
            (
                ibkr,
                |c| c.restart_intensity.window = Duration::ZERO,
                "restart_intensity.window",
                "\"0s\"",
            ),
            (ibkr, |c| c.name = String::new(), "name", "\"\""),
            (
                ibkr,
                |c| set_ibkr(c, |i| i.tic_interval = Duration::ZERO),
                "ibkr.tic_interval",
                "\"0s\"",
            ),
            (
                ibkr,
                |c| set_ibkr(c, |i| i.tickle_interval = Duration::from_millis(10)),
                "ibkr.tickle_interval",
                "\"10ms\"",
            ),
            (
                ibkr,
                |c| set_ibkr(c, |i| i.resubscribe_interval = Duration::ZERO),
                "ibkr.resubscribe_interval",
                "\"0s\"",
            ),
            (
                signalr,
                |c| set_hub(c, |h| h.ping_interval = Duration::ZERO),
                "signalr.ping_interval",
                "\"0s\"",
            ),
            (
                signalr,
                |c| set_hub(c, |h| h.token_lifetime = Some(Duration::ZERO)),
                "signalr.token_lifetime",
                "\"0s\"",
            ),
            (
                signalr,
                |c| c.heartbeat_timeout = Duration::from_secs(15),
                "heartbeat_timeout",
                "\"15s\"",
            ),
        ];
        for (base, edit, field, value) in rows {
            let mut cfg = base();
            edit(&mut cfg);
            let found = problems(&cfg);
            assert_eq!(found.len(), 1, "{field}: {found:?}");
            let p = &found[0];
            assert_eq!(p.field, field, "{p}");
            assert!(p.value.contains(value), "{field}: value {:?}", p.value);
            let shown = p.to_string();
            assert!(
                shown.starts_with(field) && shown.contains(&p.remedy) && !p.remedy.is_empty(),
                "{shown}"
            );
        }
    }

    fn ticket_with(f: fn(&mut TicketConfig)) -> StreamConfig {
        let mut t = TicketConfig::default();
        f(&mut t);
        StreamConfig::ticket("t", "https://127.0.0.1:5002", t)
    }

    #[test]
    fn a_cleartext_url_to_a_remote_host_is_refused_naming_its_key() {
        let cfg =
            ticket_with(|t| t.token_url = Some("http://example.com/api/v1/auth/token".into()));
        let found = problems(&cfg);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "ticket.token_url");
        let shown = found[0].to_string();
        assert!(
            shown.contains("http://example.com/api/v1/auth/token")
                && shown.contains("cleartext")
                && shown.contains("use https://"),
            "{shown}"
        );
        for (cfg, field) in [
            (
                ticket_with(|t| t.ticket_url = Some("http://10.1.2.3/t".into())),
                "ticket.ticket_url",
            ),
            (
                ticket_with(|t| t.socket_url = Some("ws://feed.example.com/ws".into())),
                "ticket.socket_url",
            ),
            (
                StreamConfig::ibkr("gw", "http://gw.example.com:5000"),
                "url",
            ),
        ] {
            let found = problems(&cfg);
            assert_eq!(found.len(), 1, "{field}: {found:?}");
            assert_eq!(found[0].field, field);
        }
        let mut hub = signalr();
        set_hub(&mut hub, |h| {
            h.login_url = Some("http://login.example.com/api".into())
        });
        assert_eq!(problems(&hub)[0].field, "signalr.login_url");
        set_hub(&mut hub, |h| {
            h.login_url = None;
            h.validate_url = Some("ftp://x.example.com/validate".into());
        });
        assert_eq!(problems(&hub)[0].field, "signalr.validate_url");
    }

    #[test]
    fn tls_urls_anywhere_and_cleartext_to_loopback_are_accepted() {
        let cfg = ticket_with(|t| {
            t.token_url = Some("https://auth.example.com/token".into());
            t.socket_url = Some("ws://127.0.0.1:5002/ws".into());
        });
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn skipping_verification_needs_a_loopback_url() {
        let mut cfg = StreamConfig::ibkr("gw", "https://gw.example.com:5000");
        cfg.tls = TlsConfig::InsecureSkipVerifyLoopbackOnly;
        assert_eq!(problems(&cfg)[0].field, "insecure_skip_verify");
        cfg.url = "https://127.0.0.1:5000".into();
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn a_url_problem_never_shows_userinfo_or_query_values() {
        let cfg =
            ticket_with(|t| t.token_url = Some("http://bob:hunter2@example.com/t?key=abc".into()));
        let shown = problems(&cfg)[0].to_string();
        assert!(
            !shown.contains("hunter2") && !shown.contains("bob") && !shown.contains("abc"),
            "{shown}"
        );
    }

    fn set_ibkr(c: &mut StreamConfig, f: fn(&mut IbkrConfig)) {
        if let Some(i) = c.ibkr_config_mut() {
            f(i);
        }
    }

    fn set_hub(c: &mut StreamConfig, f: fn(&mut SignalRConfig)) {
        if let Some(h) = c.signalr_config_mut() {
            f(h);
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut cfg = ibkr();
        cfg.backoff.max = Duration::ZERO;
        cfg.backoff.randomization = f64::NAN;
        set_ibkr(&mut cfg, |i| i.tic_interval = Duration::ZERO);
        let fields: Vec<String> = problems(&cfg).into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["backoff.max", "backoff.randomization", "ibkr.tic_interval"]
        );
    }

    #[test]
    fn the_floors_themselves_are_accepted() {
        let mut cfg = ibkr();
        cfg.backoff.initial = MIN_BACKOFF_INITIAL;
        cfg.backoff.max = MIN_BACKOFF_INITIAL;
        cfg.backoff.reset_after = MIN_SLOW_INTERVAL;
        cfg.heartbeat_timeout = MIN_TIMEOUT;
        cfg.login_poll_interval = MIN_INTERVAL;
        set_ibkr(&mut cfg, |i| i.tic_interval = MIN_INTERVAL);
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn a_problem_never_shows_url_userinfo() {
        let p = ConfigProblem {
            field: "url".into(),
            value: "\"https://alice:hunter2@gw.example.com:5000/v1?x=1\"".into(),
            reason: "see wss://bob:pw@h/ws".into(),
            remedy: "write https://gw.example.com".into(),
        };
        let shown = p.to_string();
        assert!(
            !shown.contains("hunter2") && !shown.contains("alice") && !shown.contains("pw@"),
            "{shown}"
        );
        assert!(
            shown.contains("https://***@gw.example.com:5000/v1"),
            "{shown}"
        );
        assert!(shown.contains("https://gw.example.com"), "{shown}");
    }

    #[test]
    fn durations_are_shown_as_a_file_writes_them() {
        assert_eq!(human_duration(Duration::ZERO), "\"0s\"");
        assert_eq!(human_duration(Duration::from_millis(250)), "\"250ms\"");
        assert_eq!(human_duration(Duration::from_secs(50)), "\"50s\"");
        assert_eq!(human_duration(Duration::from_secs(540)), "\"9m\"");
        assert_eq!(human_duration(Duration::from_micros(1500)), "\"0.0015s\"");
    }
}
