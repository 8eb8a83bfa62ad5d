//! The TOML configuration of `keepwire run` / `keepwire doctor`, validated up front.
//!
//! Every error names the key, the value and the fix. Unknown keys are errors. Durations are
//! strings with a unit (`"250ms"`, `"60s"`, `"5m"`). Secrets never live in the file: a key that
//! needs one names an environment variable (`…_env`) or a file (`…_file`) instead.
//!
//! ```toml
//! [http]
//! listen = "127.0.0.1:9464"
//!
//! [[streams]]
//! name = "ibkr"
//! dialect = "ibkr"
//! url = "https://127.0.0.1:5000"
//! ca_file = "gateway-cert.pem"
//! tickle_interval = "60s"
//! heartbeat_timeout = "30s"
//! competing = "compete"
//! [streams.backoff]
//! initial = "250ms"
//! max = "5s"
//! [[streams.subscriptions]]
//! market_data = { conid = 265598, fields = ["31", "84", "86"] }
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::SecretSource;
use crate::config::{
    BackoffConfig, CompetingPolicy, ConfigProblem, DialectKind, HaConfig, IbkrConfig, StreamConfig,
    TlsConfig,
};
use crate::dialect::signalr::{SignalRConfig, TokenTransport};
use crate::dialect::ticket::TicketConfig;
use crate::secret::redact_userinfo;
use crate::subscription::Subscription;
use crate::tls::CertificatePin;
use crate::transport::url_host;

/// A configuration error: what is wrong, where, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A duration written with a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// Parses `"250ms"`, `"60s"`, `"5m"`, `"1h"` (also `"1.5s"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "" => {
            return Err(format!(
                "duration {text:?} has no unit: write e.g. \"{num}s\" or \"{num}ms\""
            ))
        }
        other => {
            return Err(format!(
                "duration {text:?} has an unknown unit {other:?}: use ms, s, m or h"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// `[http]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Where `/metrics`, `/healthz`, `/readyz` and `/status` are served.
    pub listen: Option<String>,
}

/// `[metrics]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Labels added to every keepwire series, e.g. `{ supervisor = "eu-1" }` (needed when several
    /// keepwire processes' series meet in one Prometheus job, or several supervisors share one
    /// registry).
    #[serde(default)]
    pub const_labels: std::collections::BTreeMap<String, String>,
}

/// `[ha]`: active/standby replicas on an etcd lease (needs the `ha` feature).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSection {
    /// etcd endpoints, e.g. `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// The election's name (default `"keepwire"`).
    pub election: Option<String>,
    /// Lease TTL (default `"10s"`; whole seconds).
    pub lease_ttl: Option<HumanDuration>,
    /// This replica's id, unique among the replicas (e.g. the host name).
    pub replica_id: String,
}

/// `[streams.backoff]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BackoffSection {
    /// First delay.
    pub initial: Option<HumanDuration>,
    /// Largest delay.
    pub max: Option<HumanDuration>,
    /// Growth per attempt.
    pub multiplier: Option<f64>,
    /// Jitter factor (0–1).
    pub randomization: Option<f64>,
    /// Healthy time before the attempt counter resets.
    pub reset_after: Option<HumanDuration>,
}

/// One `[[streams.subscriptions]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SubscriptionEntry {
    /// `market_data = { conid = 265598, fields = ["31"] }`
    MarketData {
        /// Contract id.
        conid: u64,
        /// Field ids.
        fields: Vec<String>,
    },
    /// `orders = {}`
    Orders {},
    /// `pnl = {}`
    Pnl {},
    /// `account_summary = { account = "DU123" }`
    AccountSummary {
        /// Account id.
        account: String,
    },
    /// `ledger = { account = "DU123" }`
    Ledger {
        /// Account id.
        account: String,
    },
    /// `channel = "trades.BTC-USD"` (ticket dialect)
    Channel(String),
    /// `hub = { method = "SubscribeContractQuotes", args = ["CON.F.US.EP.M25"], unsubscribe = "UnsubscribeContractQuotes", event = "GatewayQuote" }`
    Hub {
        /// Hub method that subscribes.
        method: String,
        /// Its arguments.
        #[serde(default)]
        args: Vec<serde_json::Value>,
        /// Hub method that unsubscribes.
        unsubscribe: Option<String>,
        /// Client method the data arrives as.
        event: String,
    },
}

impl From<SubscriptionEntry> for Subscription {
    fn from(e: SubscriptionEntry) -> Self {
        match e {
            SubscriptionEntry::MarketData { conid, fields } => {
                Subscription::MarketData { conid, fields }
            }
            SubscriptionEntry::Orders {} => Subscription::Orders,
            SubscriptionEntry::Pnl {} => Subscription::Pnl,
            SubscriptionEntry::AccountSummary { account } => {
                Subscription::AccountSummary { account }
            }
            SubscriptionEntry::Ledger { account } => Subscription::Ledger { account },
            SubscriptionEntry::Channel(channel) => Subscription::Channel { channel },
            SubscriptionEntry::Hub {
                method,
                args,
                unsubscribe,
                event,
            } => Subscription::Hub {
                method,
                args: serde_json::Value::Array(args).to_string(),
                unsubscribe,
                event,
            },
        }
    }
}

/// `[[streams]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSection {
    /// Unique name.
    pub name: String,
    /// `"ibkr"`.
    pub dialect: String,
    /// Gateway base URL.
    pub url: String,
    /// PEM file with the gateway's certificate or CA.
    pub ca_file: Option<PathBuf>,
    /// Skip TLS verification (loopback gateways only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// With `[ha]`: only the leader runs this stream (default: true for IBKR streams).
    pub exclusive: Option<bool>,
    /// Trust exactly the gateway certificate with this SHA-256 (hex, colons optional).
    pub pin_sha256: Option<String>,
    /// IBKR keepalive interval.
    pub tickle_interval: Option<HumanDuration>,
    /// IBKR socket `tic` interval.
    pub tic_interval: Option<HumanDuration>,
    /// Silence after which the socket is presumed dead.
    pub heartbeat_timeout: Option<HumanDuration>,
    /// Time allowed for the gateway to confirm socket authentication.
    pub auth_timeout: Option<HumanDuration>,
    /// REST and connect timeout.
    pub request_timeout: Option<HumanDuration>,
    /// Poll interval while waiting for a person to log in.
    pub login_poll_interval: Option<HumanDuration>,
    /// Re-send interval of confirmed `smd` subscriptions.
    pub resubscribe_interval: Option<HumanDuration>,
    /// `"compete"` or `"yield"`.
    pub competing: Option<String>,
    /// Log out of the gateway on shutdown.
    #[serde(default)]
    pub logout_on_shutdown: bool,
    /// Largest WebSocket frame accepted, bytes.
    pub max_frame_size: Option<usize>,
    /// Reconnect backoff.
    #[serde(default)]
    pub backoff: BackoffSection,
    /// Ticket dialect: JWT endpoint (default `{url}/api/v1/auth/token`).
    pub token_url: Option<String>,
    /// Ticket dialect: JSON body of the token request; `{secret}` is replaced by the secret.
    pub token_body: Option<String>,
    /// Ticket dialect: environment variable holding the token secret.
    pub token_secret_env: Option<String>,
    /// Ticket dialect: file holding the token secret.
    pub token_secret_file: Option<PathBuf>,
    /// Ticket dialect: JSON pointer to the JWT in the token reply.
    pub token_pointer: Option<String>,
    /// Ticket dialect: JSON pointer to the JWT's lifetime in seconds.
    pub expires_in_pointer: Option<String>,
    /// Ticket dialect: ticket endpoint (default `{url}/api/v1/ws-ticket`).
    pub ticket_url: Option<String>,
    /// Ticket dialect: JSON pointer to the ticket.
    pub ticket_pointer: Option<String>,
    /// Ticket dialect: socket URL without the ticket (default `{ws url}/ws`).
    pub socket_url: Option<String>,
    /// Ticket dialect: `Origin` header of the upgrade.
    pub origin: Option<String>,
    /// Ticket dialect: keep the JWT in this file between runs (mode 0600).
    pub jwt_cache: Option<PathBuf>,
    /// Ticket dialect: subscribe command template (`{channel}` is replaced).
    pub subscribe_template: Option<String>,
    /// Ticket dialect: unsubscribe command template.
    pub unsubscribe_template: Option<String>,
    /// Ticket dialect: JSON pointer to a message's type.
    pub type_pointer: Option<String>,
    /// Ticket dialect: JSON pointer to a message's channel.
    pub channel_pointer: Option<String>,
    /// Ticket dialect: type of a subscription acknowledgement (`""`: confirm by first data).
    pub ack_type: Option<String>,
    /// Ticket dialect: type of an error message.
    pub error_type: Option<String>,
    /// Ticket dialect: heartbeat message types.
    pub heartbeat_types: Option<Vec<String>>,
    /// Ticket dialect: type of the message that makes the socket usable (`""`: on upgrade).
    pub ready_type: Option<String>,
    /// SignalR dialect: login endpoint (default `{origin}/api/Auth/loginKey`).
    pub login_url: Option<String>,
    /// SignalR dialect: login body; `{user}` and `{secret}` are replaced.
    pub login_body: Option<String>,
    /// SignalR dialect: user name.
    pub user: Option<String>,
    /// SignalR dialect: environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// SignalR dialect: file holding the API key.
    pub api_key_file: Option<PathBuf>,
    /// SignalR dialect: validate (renew) endpoint (default `{origin}/api/Auth/validate`; `""`: always log in).
    pub validate_url: Option<String>,
    /// SignalR dialect: JSON pointer to the renewed token.
    pub validate_pointer: Option<String>,
    /// SignalR dialect: how long a token lives when the service does not say.
    pub token_lifetime: Option<HumanDuration>,
    /// SignalR dialect: `"query"` (`access_token=`) or `"header"` (`Authorization: Bearer`).
    pub token_transport: Option<String>,
    /// SignalR dialect: client Ping interval.
    pub ping_interval: Option<HumanDuration>,
    /// What to subscribe to.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionEntry>,
}

/// The whole file, as parsed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[http]`.
    #[serde(default)]
    pub http: HttpSection,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// `[[streams]]`.
    #[serde(default)]
    pub streams: Vec<StreamSection>,
    /// `[ha]`.
    pub ha: Option<HaSection>,
}

/// A validated configuration, ready to start.
#[derive(Debug)]
pub struct RunConfig {
    /// Where to serve HTTP (`None`: no HTTP server).
    pub listen: Option<SocketAddr>,
    /// Streams and their subscriptions.
    pub streams: Vec<(StreamConfig, Vec<Subscription>)>,
    /// Const labels for every metric.
    pub const_labels: std::collections::BTreeMap<String, String>,
    /// `[ha]`, validated.
    pub ha: Option<HaConfig>,
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<RunConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read the configuration file {}: {e}",
            path.display()
        ))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

/// Whether a key's name says it holds a secret (`api_key`, `password`, `token`, `jwt`…).
fn looks_secret(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    let last = lower.rsplit(['.', '_']).next().unwrap_or(&lower);
    ["password", "secret", "token", "apikey", "key", "jwt"].contains(&last)
        || lower.ends_with("api_key")
}

/// Whether an error about this key must not quote its value: a secret, a request body that may
/// hold one written inline, a URL that may carry `user:password@`.
fn value_is_sensitive(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    looks_secret(&lower)
        || lower.ends_with("body")
        || lower.ends_with("url")
        || lower.ends_with("origin")
}

/// The key written on a line (`key = value`), if it has one.
fn key_of_line(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_start_matches('{').trim();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"');
    (!key.is_empty() && key.chars().all(plain)).then_some(key)
}

fn secret_key_hint(text: &str) -> Option<String> {
    // A key that looks like it holds a secret, written inline: refuse and say how to do it,
    // naming the key and its line, never its value.
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let Some(key) = key_of_line(line) else {
            continue;
        };
        if looks_secret(key) {
            return Some(format!(
                "line {}: key `{key}` holds a secret in the configuration text; secrets never go in the file: use `{key}_env = \"VAR\"` (an environment variable) or `{key}_file = \"path\"` instead",
                n + 1
            ));
        }
    }
    None
}

/// A TOML error by line, column and key. The toml crate's own rendering quotes the offending
/// line, which may hold a secret or a URL's `user:password@`: only its message is kept, with URL
/// userinfo removed, and with quoted values removed too when the key may hold a secret (or is
/// not known).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let mut at = String::new();
    let mut sensitive = true;
    if let Some(span) = e.span() {
        let start = (0..=span.start.min(text.len()))
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        let before = &text[..start];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = text[line_start..].lines().next().unwrap_or("");
        at = format!(
            " at line {}, column {}",
            before.matches('\n').count() + 1,
            before[line_start..].chars().count() + 1
        );
        if let Some(key) = key_of_line(line) {
            at.push_str(&format!(" (key `{}`)", key.trim_matches('"')));
            sensitive = value_is_sensitive(key.trim_matches('"'));
        }
    }
    let mut message = redact_userinfo(e.message().trim());
    if sensitive {
        message = without_quoted(&message);
    }
    format!("invalid configuration{at}: {message}")
}

/// Text with every `"…"` quotation replaced by `"<redacted>"`.
fn without_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str("\"<redacted>\"");
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

/// Parses and validates configuration text; relative paths are resolved against `base`. An
/// error names the key and its position (`line N, column M`, or `streams[i]`), never a secret's
/// value: values of keys that may hold one are not quoted, and no URL's `user:password@` is
/// shown.
pub fn parse(text: &str, base: &Path) -> Result<RunConfig, ConfigError> {
    parse_unredacted(text, base).map_err(|e| ConfigError(redact_userinfo(&e.0)))
}

fn parse_unredacted(text: &str, base: &Path) -> Result<RunConfig, ConfigError> {
    if let Some(hint) = secret_key_hint(text) {
        return Err(ConfigError(hint));
    }
    let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError(toml_error(text, &e)))?;
    let listen = match &file.http.listen {
        None => None,
        Some(l) => Some(l.parse::<SocketAddr>().map_err(|_| {
            ConfigError(format!(
                "[http] listen = {l:?} is not an address: write it like \"127.0.0.1:9464\""
            ))
        })?),
    };
    if file.streams.is_empty() {
        return Err(ConfigError(
            "no [[streams]] configured: add at least one (see the README)".into(),
        ));
    }
    let mut names = BTreeSet::new();
    let mut streams = Vec::new();
    for (i, s) in file.streams.into_iter().enumerate() {
        let at = format!("streams[{i}] ({:?})", s.name);
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError(format!(
                "{at}: name {:?} must be non-empty letters, digits, '-' or '_'",
                s.name
            )));
        }
        if !names.insert(s.name.clone()) {
            return Err(ConfigError(format!(
                "{at}: name {:?} is used twice; stream names must be unique",
                s.name
            )));
        }
        streams.push(stream(s, &at, base)?);
    }
    for (name, value) in &file.metrics.const_labels {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with("__");
        if !valid || value.is_empty() {
            return Err(ConfigError(format!(
                "[metrics] const_labels: {name:?} = {value:?} is not a usable label: names are letters, digits and '_' (not starting with a digit or \"__\"), values non-empty"
            )));
        }
    }
    let ha = match file.ha {
        None => None,
        Some(h) => {
            let mut config = HaConfig::new(
                h.endpoints,
                h.election.unwrap_or_else(|| "keepwire".into()),
                h.replica_id,
            );
            if let Some(ttl) = h.lease_ttl {
                config.lease_ttl = ttl.0;
            }
            config.validate().map_err(|problems| {
                ConfigError(
                    problems
                        .iter()
                        .map(|p| {
                            let field = p.field.strip_prefix("ha.").unwrap_or(&p.field);
                            format!(
                                "[ha] {}",
                                ConfigProblem {
                                    field: field.into(),
                                    ..p.clone()
                                }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            })?;
            Some(config)
        }
    };
    Ok(RunConfig {
        listen,
        streams,
        const_labels: file.metrics.const_labels,
        ha,
    })
}

/// `pin_sha256`: alone (with neither `ca_file` nor `insecure_skip_verify`), and a SHA-256.
fn pinned(pin: &str, other: &TlsConfig, at: &str) -> Result<TlsConfig, ConfigError> {
    if *other != TlsConfig::Verified {
        return Err(ConfigError(format!(
            "{at}: pin_sha256 and {} are both set: keep one (pin_sha256 trusts exactly the pinned certificate)",
            if *other == TlsConfig::InsecureSkipVerifyLoopbackOnly {
                "insecure_skip_verify"
            } else {
                "ca_file"
            }
        )));
    }
    CertificatePin::parse(pin)
        .map(TlsConfig::PinSha256)
        .map_err(|why| {
            ConfigError(format!(
                "{at}: pin_sha256 = {pin:?} is not a certificate's SHA-256 ({why}): paste the line `keepwire doctor` prints (64 hex digits, colons optional)"
            ))
        })
}

fn stream(
    s: StreamSection,
    at: &str,
    base: &Path,
) -> Result<(StreamConfig, Vec<Subscription>), ConfigError> {
    if !["ibkr", "ticket", "signalr"].contains(&s.dialect.as_str()) {
        return Err(ConfigError(format!(
            "{at}: dialect = {:?} is not supported: use \"ibkr\", \"ticket\" or \"signalr\"",
            s.dialect
        )));
    }
    s.check_dialect_keys(at)?;
    let url = crate::url_rule::check("url", &s.url)
        .map_err(|problem| ConfigError(format!("{at}: {problem}")))?;
    let host = url_host(&s.url).unwrap_or_default();
    let mut cfg = StreamConfig::ibkr(&s.name, &s.url);
    cfg.tls = match (&s.ca_file, s.insecure_skip_verify) {
        (Some(_), true) => {
            return Err(ConfigError(format!(
                "{at}: ca_file and insecure_skip_verify are both set: keep ca_file (verification with the gateway's certificate)"
            )))
        }
        (Some(f), false) => {
            let path = if f.is_absolute() { f.clone() } else { base.join(f) };
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "{at}: ca_file = {:?} does not exist (looked at {}): give the path of the gateway's PEM certificate",
                    f.display(),
                    path.display()
                )));
            }
            TlsConfig::CaFile(path)
        }
        (None, true) if !url.loopback => {
            return Err(ConfigError(format!(
                "{at}: insecure_skip_verify = true is allowed only for a loopback gateway, not {host}: set ca_file to the gateway's certificate"
            )))
        }
        (None, true) => TlsConfig::InsecureSkipVerifyLoopbackOnly,
        (None, false) => TlsConfig::Verified,
    };
    if let Some(pin) = &s.pin_sha256 {
        cfg.tls = pinned(pin, &cfg.tls, at)?;
    }
    let d = IbkrConfig::default();
    if s.dialect == "ticket" {
        cfg.dialect = DialectKind::Ticket(Box::new(ticket_config(&s, at, base)?));
    } else if s.dialect == "signalr" {
        cfg.heartbeat_timeout = Duration::from_secs(30);
        cfg.dialect = DialectKind::SignalR(Box::new(signalr_config(&s, at, base)?));
    } else {
        let competing = match s.competing.as_deref() {
            None | Some("compete") => CompetingPolicy::Compete,
            Some("yield") => CompetingPolicy::Yield,
            Some(other) => {
                return Err(ConfigError(format!(
                    "{at}: competing = {other:?} is not a policy: use \"compete\" or \"yield\""
                )))
            }
        };
        cfg.dialect = DialectKind::Ibkr(IbkrConfig {
            competing,
            tickle_interval: s.tickle_interval.map_or(d.tickle_interval, |h| h.0),
            tic_interval: s.tic_interval.map_or(d.tic_interval, |h| h.0),
            resubscribe_interval: s
                .resubscribe_interval
                .map_or(d.resubscribe_interval, |h| h.0),
            logout_on_shutdown: s.logout_on_shutdown,
        });
    }
    let set = |target: &mut Duration, v: Option<HumanDuration>| {
        if let Some(h) = v {
            *target = h.0;
        }
    };
    cfg.exclusive = s.exclusive;
    set(&mut cfg.heartbeat_timeout, s.heartbeat_timeout);
    set(&mut cfg.auth_timeout, s.auth_timeout);
    set(&mut cfg.request_timeout, s.request_timeout);
    set(&mut cfg.login_poll_interval, s.login_poll_interval);
    if let Some(m) = s.max_frame_size {
        cfg.max_frame_size = m.max(1024);
    }
    let b = BackoffConfig::default();
    cfg.backoff = BackoffConfig {
        initial: s.backoff.initial.map_or(b.initial, |h| h.0),
        max: s.backoff.max.map_or(b.max, |h| h.0),
        multiplier: s.backoff.multiplier.unwrap_or(b.multiplier),
        randomization: s.backoff.randomization.unwrap_or(b.randomization),
        reset_after: s.backoff.reset_after.map_or(b.reset_after, |h| h.0),
    };
    cfg.validate().map_err(|problems| {
        ConfigError(
            problems
                .iter()
                .map(|p| format!("{at}: {}", toml_problem(p)))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let subs = s
        .subscriptions
        .into_iter()
        .map(Subscription::from)
        .collect();
    Ok((cfg, subs))
}

/// The TOML spelling of a [`StreamConfig`] field: dialect settings sit directly in
/// `[[streams]]` (`ibkr.tic_interval` → `tic_interval`); backoff keys as dotted keys
/// (`backoff.max`, i.e. `max` in `[streams.backoff]`).
fn toml_key(field: &str) -> &str {
    field
        .strip_prefix("ibkr.")
        .or_else(|| field.strip_prefix("signalr."))
        .or_else(|| field.strip_prefix("ticket."))
        .unwrap_or(field)
}

/// A [`ConfigProblem`] in the file's terms: `key = value: reason; remedy`, with every field
/// named by its TOML key.
fn toml_problem(p: &ConfigProblem) -> String {
    let text = |t: &str| t.replace("ibkr.", "").replace("signalr.", "");
    ConfigProblem {
        field: toml_key(&p.field).to_string(),
        value: p.value.clone(),
        reason: text(&p.reason),
        remedy: text(&p.remedy),
    }
    .to_string()
}

impl StreamSection {
    /// Keys that belong to one dialect are errors on another.
    fn check_dialect_keys(&self, at: &str) -> Result<(), ConfigError> {
        const IBKR: &[&str] = &["ibkr"];
        const TICKET: &[&str] = &["ticket"];
        const SIGNALR: &[&str] = &["signalr"];
        const TOKENS: &[&str] = &["ticket", "signalr"];
        let keys: [(&str, bool, &[&str]); 34] = [
            ("tickle_interval", self.tickle_interval.is_some(), IBKR),
            ("tic_interval", self.tic_interval.is_some(), IBKR),
            (
                "resubscribe_interval",
                self.resubscribe_interval.is_some(),
                IBKR,
            ),
            ("competing", self.competing.is_some(), IBKR),
            ("logout_on_shutdown", self.logout_on_shutdown, IBKR),
            (
                "login_poll_interval",
                self.login_poll_interval.is_some(),
                IBKR,
            ),
            ("token_url", self.token_url.is_some(), TICKET),
            ("token_body", self.token_body.is_some(), TICKET),
            ("token_secret_env", self.token_secret_env.is_some(), TICKET),
            (
                "token_secret_file",
                self.token_secret_file.is_some(),
                TICKET,
            ),
            ("token_pointer", self.token_pointer.is_some(), TOKENS),
            (
                "expires_in_pointer",
                self.expires_in_pointer.is_some(),
                TICKET,
            ),
            ("ticket_url", self.ticket_url.is_some(), TICKET),
            ("ticket_pointer", self.ticket_pointer.is_some(), TICKET),
            ("socket_url", self.socket_url.is_some(), TICKET),
            ("origin", self.origin.is_some(), TICKET),
            ("jwt_cache", self.jwt_cache.is_some(), TICKET),
            (
                "subscribe_template",
                self.subscribe_template.is_some(),
                TICKET,
            ),
            (
                "unsubscribe_template",
                self.unsubscribe_template.is_some(),
                TICKET,
            ),
            ("type_pointer", self.type_pointer.is_some(), TICKET),
            ("channel_pointer", self.channel_pointer.is_some(), TICKET),
            ("ack_type", self.ack_type.is_some(), TICKET),
            ("error_type", self.error_type.is_some(), TICKET),
            ("heartbeat_types", self.heartbeat_types.is_some(), TICKET),
            ("ready_type", self.ready_type.is_some(), TICKET),
            ("login_url", self.login_url.is_some(), SIGNALR),
            ("login_body", self.login_body.is_some(), SIGNALR),
            ("user", self.user.is_some(), SIGNALR),
            ("api_key_env", self.api_key_env.is_some(), SIGNALR),
            ("api_key_file", self.api_key_file.is_some(), SIGNALR),
            (
                "validate_url",
                self.validate_url.is_some() || self.validate_pointer.is_some(),
                SIGNALR,
            ),
            ("token_lifetime", self.token_lifetime.is_some(), SIGNALR),
            ("token_transport", self.token_transport.is_some(), SIGNALR),
            ("ping_interval", self.ping_interval.is_some(), SIGNALR),
        ];
        match keys
            .iter()
            .find(|(_, set, dialects)| *set && !dialects.contains(&self.dialect.as_str()))
        {
            Some((key, _, dialects)) => Err(ConfigError(format!(
                "{at}: {key} applies to dialect = {} only, not {:?}: remove it",
                dialects
                    .iter()
                    .map(|d| format!("\"{d}\""))
                    .collect::<Vec<_>>()
                    .join(" or "),
                self.dialect
            ))),
            None => Ok(()),
        }
    }
}

fn signalr_config(s: &StreamSection, at: &str, base: &Path) -> Result<SignalRConfig, ConfigError> {
    let d = SignalRConfig::default();
    let secret = match (&s.api_key_env, &s.api_key_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(format!(
                "{at}: set api_key_env or api_key_file, not both"
            )))
        }
        (Some(var), None) => Some(SecretSource::Env(var.clone())),
        (None, Some(f)) => {
            let path = if f.is_absolute() {
                f.clone()
            } else {
                base.join(f)
            };
            crate::secret::check_private_file(&path, "api_key_file")
                .map_err(|e| ConfigError(format!("{at}: {e}")))?;
            Some(SecretSource::File(path))
        }
        (None, None) => None,
    };
    let login_body = s.login_body.clone().unwrap_or(d.login_body);
    if login_body.contains("{secret}") && secret.is_none() {
        return Err(ConfigError(format!(
            "{at}: login_body uses {{secret}} but no API key is configured: set api_key_env = \"VAR\" or api_key_file = \"path\""
        )));
    }
    let token_transport = match s.token_transport.as_deref() {
        None | Some("query") => TokenTransport::Query,
        Some("header") => TokenTransport::Header,
        Some(other) => {
            return Err(ConfigError(format!(
                "{at}: token_transport = {other:?}: use \"query\" or \"header\""
            )))
        }
    };
    Ok(SignalRConfig {
        login_url: s.login_url.clone(),
        login_body,
        user: s.user.clone().unwrap_or_default(),
        secret,
        token_pointer: s.token_pointer.clone().unwrap_or(d.token_pointer),
        validate_url: s.validate_url.clone(),
        validate: s.validate_url.as_deref() != Some(""),
        validate_pointer: s.validate_pointer.clone().unwrap_or(d.validate_pointer),
        token_lifetime: s.token_lifetime.map(|h| h.0),
        token_transport,
        ping_interval: s.ping_interval.map_or(d.ping_interval, |h| h.0),
    })
}

fn ticket_config(s: &StreamSection, at: &str, base: &Path) -> Result<TicketConfig, ConfigError> {
    let d = TicketConfig::default();
    let resolve = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let token_secret = match (&s.token_secret_env, &s.token_secret_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(format!(
                "{at}: set token_secret_env or token_secret_file, not both"
            )))
        }
        (Some(var), None) => Some(SecretSource::Env(var.clone())),
        (None, Some(file)) => {
            let path = resolve(file);
            crate::secret::check_private_file(&path, "token_secret_file")
                .map_err(|e| ConfigError(format!("{at}: {e}")))?;
            Some(SecretSource::File(path))
        }
        (None, None) => None,
    };
    let token_body = s.token_body.clone().unwrap_or(d.token_body);
    if serde_json::from_str::<serde_json::Value>(&token_body.replace("{secret}", "x")).is_err() {
        // Not quoted: a body may hold a secret written inline.
        return Err(ConfigError(format!(
            "{at}: token_body is not JSON: write it like '{{\"apiKey\":\"{{secret}}\"}}'"
        )));
    }
    if token_body.contains("{secret}") && token_secret.is_none() {
        return Err(ConfigError(format!(
            "{at}: token_body uses {{secret}} but no secret is configured: set token_secret_env = \"VAR\" or token_secret_file = \"path\""
        )));
    }
    for (key, pointer) in [
        ("token_pointer", &s.token_pointer),
        ("ticket_pointer", &s.ticket_pointer),
        ("type_pointer", &s.type_pointer),
        ("channel_pointer", &s.channel_pointer),
        ("expires_in_pointer", &s.expires_in_pointer),
    ] {
        if let Some(p) = pointer {
            if !p.starts_with('/') {
                return Err(ConfigError(format!(
                    "{at}: {key} = {p:?} is not a JSON pointer: write it like \"/token\""
                )));
            }
        }
    }
    let non_empty = |v: &Option<String>, default: Option<String>| match v {
        Some(t) if t.is_empty() => None,
        Some(t) => Some(t.clone()),
        None => default,
    };
    Ok(TicketConfig {
        token_url: s.token_url.clone(),
        token_body,
        token_secret,
        token_pointer: s.token_pointer.clone().unwrap_or(d.token_pointer),
        expires_in_pointer: non_empty(&s.expires_in_pointer, d.expires_in_pointer),
        ticket_url: s.ticket_url.clone(),
        ticket_pointer: s.ticket_pointer.clone().unwrap_or(d.ticket_pointer),
        socket_url: s.socket_url.clone(),
        origin: s.origin.clone(),
        jwt_cache: s.jwt_cache.as_ref().map(resolve),
        subscribe_template: s.subscribe_template.clone().unwrap_or(d.subscribe_template),
        unsubscribe_template: non_empty(&s.unsubscribe_template, d.unsubscribe_template),
        type_pointer: s.type_pointer.clone().unwrap_or(d.type_pointer),
        channel_pointer: s.channel_pointer.clone().unwrap_or(d.channel_pointer),
        ack_type: non_empty(&s.ack_type, d.ack_type),
        error_type: s.error_type.clone().unwrap_or(d.error_type),
        heartbeat_types: s.heartbeat_types.clone().unwrap_or(d.heartbeat_types),
        ready_type: non_empty(&s.ready_type, d.ready_type),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[http]
listen = "127.0.0.1:9464"

[[streams]]
name = "ibkr"
dialect = "ibkr"
url = "https://127.0.0.1:5000"
insecure_skip_verify = true
tickle_interval = "60s"
heartbeat_timeout = "30s"
competing = "compete"
[streams.backoff]
initial = "250ms"
max = "5s"

[[streams.subscriptions]]
market_data = { conid = 265598, fields = ["31", "84", "86"] }
"#;

    fn err(text: &str) -> String {
        parse(text, Path::new(".")).unwrap_err().0
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parse(GOOD, Path::new(".")).unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:9464".parse().unwrap()));
        let (s, subs) = &c.streams[0];
        assert_eq!(s.backoff.initial, Duration::from_millis(250));
        assert_eq!(s.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(s.tls, TlsConfig::InsecureSkipVerifyLoopbackOnly);
        assert_eq!(
            subs,
            &vec![Subscription::market_data(265598, ["31", "84", "86"])]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("60").unwrap_err().contains("no unit"));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let e = err(&GOOD.replace("competing = \"compete\"", "competeing = \"compete\""));
        assert!(e.contains("competeing"), "{e}");
    }

    #[test]
    fn a_bad_duration_names_key_value_and_fix() {
        let e = err(&GOOD.replace("\"60s\"", "\"60\""));
        assert!(
            e.contains("tickle_interval") && e.contains("\"60\"") && e.contains("60s"),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_refused_in_the_text() {
        let e = err(&GOOD.replace("competing = \"compete\"", "api_key = \"hunter2\""));
        assert!(e.contains("api_key_env") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_malformed_line_with_a_secret_is_reported_by_line_and_key_without_the_secret() {
        for line in [
            "api_key = \"sekrit-4711",
            "api_key = \"sekrit-4711\" x",
            "token_body = '{\"apiKey\":\"sekrit-4711\"",
            "token_body = 5sekrit-4711",
            "login_body = \"sekrit-4711\" \"again\"",
            "origin = { sekrit-4711 }",
        ] {
            let text = GOOD.replace("competing = \"compete\"", line);
            let e = err(&text);
            let key = line.split(' ').next().unwrap();
            assert!(!e.contains("sekrit"), "{line}: {e}");
            assert!(e.contains("line 12"), "{line}: the line is named: {e}");
            assert!(e.contains(key), "{line}: the key is named: {e}");
        }
    }

    #[test]
    fn a_url_with_userinfo_is_never_echoed() {
        for (url, expect) in [
            (
                "https://user:pw@gw.example.com:5000",
                "insecure_skip_verify",
            ),
            ("ftp://user:pw@127.0.0.1:5000", "url"),
            ("http://user:pw@gw.example.com", "unencrypted"),
        ] {
            let e = err(&GOOD.replace("https://127.0.0.1:5000", url));
            assert!(!e.contains("user:pw") && !e.contains("pw@"), "{e}");
            assert!(e.contains(expect), "{e}");
        }
        // Malformed: the line is named, the userinfo is not shown.
        let e = err(&GOOD.replace(
            "url = \"https://127.0.0.1:5000\"",
            "url = \"https://user:pw@127.0.0.1:5000",
        ));
        assert!(!e.contains("user:pw") && !e.contains("pw@"), "{e}");
        assert!(e.contains("line 8") && e.contains("url"), "{e}");
        let e = err(&GOOD.replace(
            "url = \"https://127.0.0.1:5000\"",
            "url = [\"https://user:pw@127.0.0.1:5000\"]",
        ));
        assert!(!e.contains("user:pw") && !e.contains("pw@"), "{e}");
        assert!(e.contains("line 8") && e.contains("url"), "{e}");
    }

    #[test]
    fn skipping_verification_for_a_remote_gateway_is_refused() {
        let e = err(&GOOD.replace("https://127.0.0.1:5000", "https://gw.example.com:5000"));
        assert!(
            e.contains("insecure_skip_verify") && e.contains("ca_file"),
            "{e}"
        );
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert!(parse(&GOOD.replace("https://", "http://"), Path::new(".")).is_ok());
        let e = err(&GOOD
            .replace("https://127.0.0.1", "http://10.1.2.3")
            .replace("insecure_skip_verify = true\n", ""));
        assert!(e.contains("unencrypted"), "{e}");
    }

    #[test]
    fn a_missing_ca_file_and_bad_policy_name_the_fix() {
        let e = err(&GOOD.replace("insecure_skip_verify = true", "ca_file = \"nope.pem\""));
        assert!(e.contains("ca_file") && e.contains("nope.pem"), "{e}");
        let e = err(&GOOD.replace("\"compete\"", "\"fight\""));
        assert!(e.contains("\"yield\""), "{e}");
    }

    #[test]
    fn backoff_bounds_are_checked() {
        let e = err(&GOOD.replace("initial = \"250ms\"", "initial = \"10s\""));
        assert!(e.contains("at most max"), "{e}");
    }

    #[test]
    fn a_zero_interval_is_an_error_naming_the_key_the_value_and_the_floor() {
        let e = err(&GOOD.replace("tickle_interval = \"60s\"", "tic_interval = \"0s\""));
        assert!(
            e.contains("streams[0] (\"ibkr\"): tic_interval = \"0s\"")
                && e.contains("set tic_interval to at least \"100ms\""),
            "{e}"
        );
        assert!(
            !e.contains("ibkr.tic_interval"),
            "named as in the file: {e}"
        );
    }

    #[test]
    fn every_range_problem_of_a_stream_is_listed() {
        let e = err(&GOOD
            .replace("max = \"5s\"", "max = \"0s\"\nreset_after = \"0s\"")
            .replace("heartbeat_timeout = \"30s\"", "heartbeat_timeout = \"0s\""));
        for key in [
            "backoff.max = \"0s\"",
            "backoff.reset_after = \"0s\"",
            "heartbeat_timeout = \"0s\"",
        ] {
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = err(&GOOD.replace("max = \"5s\"", "max = \"5s\"\nrandomization = nan"));
        assert!(e.contains("backoff.randomization = NaN"), "{e}");
    }

    #[test]
    fn a_signalr_ping_must_come_before_the_heartbeat_timeout() {
        let text = "[[streams]]\nname = \"hub\"\ndialect = \"signalr\"\nurl = \"https://api.example.com/hub\"\napi_key_env = \"K\"\nping_interval = \"0s\"\n";
        let e = err(text);
        assert!(e.contains("ping_interval = \"0s\""), "{e}");
        let e = err(&text.replace("\"0s\"", "\"40s\""));
        assert!(
            e.contains("heartbeat_timeout = \"30s\"") && e.contains("ping_interval = \"40s\""),
            "{e}"
        );
        let e = err(&GOOD.replace("competing = \"compete\"", "ping_interval = \"5s\""));
        assert!(
            e.contains("ping_interval applies to dialect = \"signalr\" only"),
            "{e}"
        );
    }

    const TICKET: &str = r#"
[[streams]]
name = "feed"
dialect = "ticket"
url = "https://api.example.com"
origin = "https://app.example.com"
token_secret_env = "FEED_API_KEY"
jwt_cache = "/tmp/feed-jwt.json"

[[streams.subscriptions]]
channel = "trades.BTC-USD"
"#;

    #[test]
    fn a_ticket_stream_parses() {
        let c = parse(TICKET, Path::new(".")).unwrap();
        let (s, subs) = &c.streams[0];
        let DialectKind::Ticket(t) = &s.dialect else {
            panic!("not a ticket stream")
        };
        assert_eq!(t.origin.as_deref(), Some("https://app.example.com"));
        assert!(matches!(&t.token_secret, Some(SecretSource::Env(v)) if v == "FEED_API_KEY"));
        assert_eq!(
            subs,
            &vec![Subscription::Channel {
                channel: "trades.BTC-USD".into()
            }]
        );
    }

    #[test]
    fn a_cleartext_token_url_to_a_remote_host_is_an_error_naming_the_key() {
        let e = err(&TICKET.replace(
            "origin = ",
            "token_url = \"http://example.com/api/v1/auth/token\"\norigin = ",
        ));
        assert!(
            e.contains("token_url = \"http://example.com/api/v1/auth/token\"")
                && e.contains("cleartext")
                && e.contains("use https://"),
            "{e}"
        );
        assert!(!e.contains("ticket."), "named as in the file: {e}");
        let e = err(&TICKET.replace(
            "origin = ",
            "socket_url = \"ws://user:pw@feed.example.com/ws\"\norigin = ",
        ));
        assert!(
            e.contains("socket_url = \"ws://feed.example.com/ws\""),
            "{e}"
        );
        assert!(!e.contains("pw@"), "{e}");
        // A loopback test gateway may use http://.
        let ok = TICKET.replace(
            "origin = ",
            "token_url = \"http://127.0.0.1:5002/api/v1/auth/token\"\norigin = ",
        );
        assert!(parse(&ok, Path::new(".")).is_ok());
    }

    #[test]
    fn keys_of_another_dialect_are_errors() {
        let e = err(&TICKET.replace("origin = ", "tickle_interval = \"60s\"\norigin = "));
        assert!(
            e.contains("tickle_interval applies to dialect = \"ibkr\" only"),
            "{e}"
        );
        let e = err(&GOOD.replace("competing = \"compete\"", "origin = \"https://x\""));
        assert!(
            e.contains("origin applies to dialect = \"ticket\" only"),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_readable_by_others_is_refused_at_load_naming_chmod_600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir();
        let key = dir.join(format!("kw-config-key-{}", std::process::id()));
        std::fs::write(&key, "hunter2").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = TICKET.replace(
            "token_secret_env = \"FEED_API_KEY\"",
            &format!("token_secret_file = {:?}", key.display().to_string()),
        );
        let refused = parse(&text, &dir).map(|_| ()).unwrap_err().0;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let accepted = parse(&text, &dir).map(|_| ());
        let _ = std::fs::remove_file(&key);
        assert!(
            refused.contains(&format!("chmod 600 {}", key.display()))
                && refused.contains("token_secret_file")
                && !refused.contains("hunter2"),
            "{refused}"
        );
        assert_eq!(accepted, Ok(()));
    }

    #[test]
    fn a_secret_placeholder_needs_a_secret_source() {
        let e = err(&TICKET.replace("token_secret_env = \"FEED_API_KEY\"\n", ""));
        assert!(e.contains("token_secret_env"), "{e}");
        let e = err(&TICKET.replace("token_secret_env", "token_secret"));
        assert!(e.contains("token_secret_env = "), "{e}");
    }

    #[test]
    fn a_signalr_stream_parses() {
        let text = r#"
[[streams]]
name = "hub"
dialect = "signalr"
url = "https://api.example.com/hubs/market"
user = "trader"
api_key_env = "HUB_API_KEY"
token_lifetime = "24h"

[[streams.subscriptions]]
hub = { method = "SubscribeContractQuotes", args = ["CON.F.US.EP.M25"], unsubscribe = "UnsubscribeContractQuotes", event = "GatewayQuote" }
"#;
        let c = parse(text, Path::new(".")).unwrap();
        let (s, subs) = &c.streams[0];
        let DialectKind::SignalR(h) = &s.dialect else {
            panic!("not signalr")
        };
        assert_eq!(h.user, "trader");
        assert_eq!(h.token_lifetime, Some(Duration::from_secs(86_400)));
        assert_eq!(subs, &vec![Subscription::hub_quotes("CON.F.US.EP.M25")]);
        let e = err(&text.replace("user = ", "origin = \"x\"\nuser = "));
        assert!(
            e.contains("origin applies to dialect = \"ticket\" only"),
            "{e}"
        );
    }

    #[test]
    fn const_labels_are_read_and_checked() {
        let c = parse(
            &format!("[metrics]\nconst_labels = {{ supervisor = \"eu-1\" }}\n{GOOD}"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            c.const_labels.get("supervisor").map(String::as_str),
            Some("eu-1")
        );
        let e = err(&format!(
            "[metrics]\nconst_labels = {{ \"bad-name\" = \"x\" }}\n{GOOD}"
        ));
        assert!(e.contains("bad-name"), "{e}");
    }

    #[test]
    fn ha_is_parsed_with_its_defaults_and_ibkr_streams_are_exclusive_by_default() {
        let text =
            format!("{GOOD}\n[ha]\nendpoints = [\"http://127.0.0.1:2379\"]\nreplica_id = \"a\"\n");
        let c = parse(&text, Path::new(".")).unwrap();
        let ha = c.ha.unwrap();
        assert_eq!(ha.endpoints, vec!["http://127.0.0.1:2379".to_string()]);
        assert_eq!(ha.election, "keepwire");
        assert_eq!(ha.lease_ttl, Duration::from_secs(10));
        assert_eq!(ha.replica_id, "a");
        assert!(c.streams[0].0.is_exclusive());
        let opted_out = text.replace(
            "insecure_skip_verify = true\n",
            "insecure_skip_verify = true\nexclusive = false\n",
        );
        assert!(!parse(&opted_out, Path::new(".")).unwrap().streams[0]
            .0
            .is_exclusive());
    }

    #[test]
    fn ha_out_of_range_names_the_key_and_the_fix() {
        let e = err(&format!(
            "{GOOD}\n[ha]\nendpoints = []\nreplica_id = \"a b\"\nlease_ttl = \"1s\"\n"
        ));
        assert!(e.contains("[ha] endpoints = []"), "{e}");
        assert!(e.contains("[ha] replica_id = \"a b\""), "{e}");
        assert!(e.contains("[ha] lease_ttl = \"1s\""), "{e}");
        assert!(e.contains("set ha.lease_ttl to"), "{e}");
    }
}
