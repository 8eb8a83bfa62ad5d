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

use crate::config::{
    BackoffConfig, CompetingPolicy, DialectKind, IbkrConfig, StreamConfig, TlsConfig,
};
use crate::subscription::Subscription;
use crate::tls::is_loopback_host;
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
    /// `[[streams]]`.
    #[serde(default)]
    pub streams: Vec<StreamSection>,
}

/// A validated configuration, ready to start.
#[derive(Debug)]
pub struct RunConfig {
    /// Where to serve HTTP (`None`: no HTTP server).
    pub listen: Option<SocketAddr>,
    /// Streams and their subscriptions.
    pub streams: Vec<(StreamConfig, Vec<Subscription>)>,
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

fn secret_key_hint(text: &str) -> Option<String> {
    // A key that looks like it holds a secret, written inline: refuse and say how to do it.
    for line in text.lines() {
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let lower = key.to_ascii_lowercase();
        let secretish = ["password", "secret", "token", "api_key", "apikey"]
            .iter()
            .any(|w| lower.contains(w));
        if secretish && !lower.ends_with("_env") && !lower.ends_with("_file") {
            return Some(format!(
                "key `{key}` holds a secret in the configuration text; secrets never go in the file: use `{key}_env = \"VAR\"` (an environment variable) or `{key}_file = \"path\"` instead"
            ));
        }
    }
    None
}

/// Parses and validates configuration text; relative paths are resolved against `base`.
pub fn parse(text: &str, base: &Path) -> Result<RunConfig, ConfigError> {
    if let Some(hint) = secret_key_hint(text) {
        return Err(ConfigError(hint));
    }
    let file: FileConfig =
        toml::from_str(text).map_err(|e| ConfigError(format!("invalid configuration: {e}")))?;
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
    Ok(RunConfig { listen, streams })
}

fn stream(
    s: StreamSection,
    at: &str,
    base: &Path,
) -> Result<(StreamConfig, Vec<Subscription>), ConfigError> {
    if s.dialect != "ibkr" {
        return Err(ConfigError(format!(
            "{at}: dialect = {:?} is not supported: use \"ibkr\"",
            s.dialect
        )));
    }
    let scheme_ok = ["https://", "http://", "wss://", "ws://"]
        .iter()
        .any(|p| s.url.starts_with(p));
    let host = url_host(&s.url).filter(|h| !h.is_empty());
    let Some(host) = host.filter(|_| scheme_ok) else {
        return Err(ConfigError(format!(
            "{at}: url = {:?} is not a gateway URL: write it like \"https://127.0.0.1:5000\"",
            s.url
        )));
    };
    let plain = s.url.starts_with("http://") || s.url.starts_with("ws://");
    if plain && !is_loopback_host(host) {
        return Err(ConfigError(format!(
            "{at}: url = {:?} is unencrypted; http:// and ws:// are allowed only for loopback test gateways: use https://",
            s.url
        )));
    }
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
        (None, true) if !is_loopback_host(host) => {
            return Err(ConfigError(format!(
                "{at}: insecure_skip_verify = true is allowed only for a loopback gateway, not {host}: set ca_file to the gateway's certificate"
            )))
        }
        (None, true) => TlsConfig::InsecureSkipVerifyLoopbackOnly,
        (None, false) => TlsConfig::Verified,
    };
    let competing = match s.competing.as_deref() {
        None | Some("compete") => CompetingPolicy::Compete,
        Some("yield") => CompetingPolicy::Yield,
        Some(other) => {
            return Err(ConfigError(format!(
                "{at}: competing = {other:?} is not a policy: use \"compete\" or \"yield\""
            )))
        }
    };
    let d = IbkrConfig::default();
    cfg.dialect = DialectKind::Ibkr(IbkrConfig {
        competing,
        tickle_interval: s.tickle_interval.map_or(d.tickle_interval, |h| h.0),
        tic_interval: s.tic_interval.map_or(d.tic_interval, |h| h.0),
        resubscribe_interval: s
            .resubscribe_interval
            .map_or(d.resubscribe_interval, |h| h.0),
        logout_on_shutdown: s.logout_on_shutdown,
    });
    let set = |target: &mut Duration, v: Option<HumanDuration>| {
        if let Some(h) = v {
            *target = h.0;
        }
    };
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
    if cfg.backoff.initial.is_zero() || cfg.backoff.initial > cfg.backoff.max {
        return Err(ConfigError(format!(
            "{at}: backoff initial = {:?} must be above zero and at most max = {:?}",
            cfg.backoff.initial, cfg.backoff.max
        )));
    }
    if !(0.0..=1.0).contains(&cfg.backoff.randomization) || cfg.backoff.multiplier < 1.0 {
        return Err(ConfigError(format!(
            "{at}: backoff randomization must be within 0–1 and multiplier at least 1 (got {} and {})",
            cfg.backoff.randomization, cfg.backoff.multiplier
        )));
    }
    let tickle = cfg
        .ibkr_config_mut()
        .map_or(d.tickle_interval, |c| c.tickle_interval);
    for (key, v) in [
        ("heartbeat_timeout", cfg.heartbeat_timeout),
        ("tickle_interval", tickle),
    ] {
        if v < Duration::from_millis(100) {
            return Err(ConfigError(format!(
                "{at}: {key} = {v:?} is too short: use at least \"100ms\""
            )));
        }
    }
    let subs = s
        .subscriptions
        .into_iter()
        .map(Subscription::from)
        .collect();
    Ok((cfg, subs))
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
}
