//! The failure table: every way a stream can fail, how it is classified, and what keepwire does.
//!
//! This is the only place that decides whether a failure is retried, refreshes credentials,
//! re-establishes the gateway session, waits for a person, or stops for good. Dialects translate
//! wire responses into [`Failure`]s; actors act on [`Failure::class`].
//!
//! | what happened | [`Class`] | what keepwire does |
//! |---|---|---|
//! | 401/403 on the socket handshake | `Auth` | TokenManager refreshes (generation-guarded), StreamConnection alone restarts |
//! | the same, again, with just-refreshed credentials | `Hard` | stop; Status `Failed` |
//! | `sts` `authenticated:false`, auth/status false, tickle `no session` / 401 | `Session` | GatewaySession re-establishes, credentials refreshed, socket rebuilt, subscriptions replayed |
//! | 2FA not completed, no SSO session at the gateway | `NeedsLogin` | Status `AwaitingLogin` with a remedy, slow poll |
//! | competing session | `Competing` | policy `compete`: take over; `yield`: hard until resumed |
//! | connection refused, timeouts, 5xx, 429, close 1000/1001/1006/1011–1013, heartbeat silence, oversized frame, `no bridge`, a gateway that stops reading (outgoing queue full) | `Soft` | reconnect with jittered exponential backoff (429 honours Retry-After) |
//! | close 1008 (policy), 1009 (too big), restart intensity exceeded, configuration errors | `Hard` | stop; Status `Failed{reason}`; logged once |
//! | the gateway's certificate fails verification (untrusted, another than the pinned one, expired) | `Hard` | stop; the reason names the presented certificate's `pin_sha256` and the remedy |
//! | any other TLS error (an alert, a handshake cut short) | `Soft` | reconnect with backoff |
//! | an HTTP endpoint answers 3xx (redirects are never followed) | `Hard` | stop: the configured URL is not the endpoint's address (or the server sends credentials elsewhere); retrying gets the same answer, and following would re-send a login body or bearer token to an origin nobody configured |
//! | a URL breaks the URL rule at the moment it is used (`http://`/`ws://` to a non-loopback host, no host, another scheme), including a SignalR negotiate redirect | `Hard` | stop before sending anything: no retry makes a cleartext URL safe |
//! | one malformed frame | `Ignore` | counted and skipped (a burst is `Soft`) |

use std::fmt;
use std::time::Duration;

/// What to do when the gateway reports a competing brokerage session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CompetingPolicy {
    /// Take the session over (`ssodh/init` with `compete:true`).
    #[default]
    Compete,
    /// Leave the other session alone: a hard failure until `Handle::resume` is called.
    Yield,
}

/// The least a 429 answered without `Retry-After` is waited out.
pub const RATE_LIMIT_FLOOR: Duration = Duration::from_secs(1);

/// Why the gateway's certificate was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertificateProblem {
    /// Not issued by a trusted CA, not valid for the host, or not one of `ca_file`'s certificates.
    Untrusted,
    /// Another certificate than the one `pin_sha256` names.
    PinMismatch,
    /// Expired or not yet valid.
    OutsideValidity,
}

/// How a failure is handled. See the module docs for the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// The credentials were rejected: refresh them (once per generation) and redial.
    Auth,
    /// The gateway session is gone: re-establish it, then redial and resubscribe.
    Session,
    /// A person must log in (2FA): wait, poll slowly, tell the user how.
    NeedsLogin,
    /// Transient: redial after a jittered backoff.
    Soft,
    /// Retrying cannot help: stop and say why.
    Hard,
    /// Count it and carry on.
    Ignore,
}

/// Where a REST call went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Session status (IBKR `auth/status`).
    AuthStatus,
    /// Brokerage session handshake (IBKR `ssodh/init`).
    SessionInit,
    /// Re-authentication (IBKR `reauthenticate`).
    Reauthenticate,
    /// Keepalive (IBKR `tickle`).
    Keepalive,
    /// Credential source (token endpoint).
    Credentials,
    /// Brokerage preflight (IBKR `iserver/accounts`).
    Preflight,
    /// The WebSocket upgrade.
    Upgrade,
}

impl Endpoint {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::AuthStatus => "auth/status",
            Endpoint::SessionInit => "ssodh/init",
            Endpoint::Reauthenticate => "reauthenticate",
            Endpoint::Keepalive => "tickle",
            Endpoint::Credentials => "credentials",
            Endpoint::Preflight => "iserver/accounts",
            Endpoint::Upgrade => "websocket upgrade",
        }
    }
}

/// Something that went wrong with a stream. Never carries a secret.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// Nothing listens at the gateway address (connection refused).
    Unreachable {
        /// What the OS said.
        detail: String,
    },
    /// Connect, TLS handshake or request timed out.
    Timeout {
        /// Which call.
        endpoint: Endpoint,
    },
    /// TLS failed for a reason other than the certificate (an alert, a handshake cut short):
    /// transient, retried.
    Tls {
        /// What rustls said.
        detail: String,
    },
    /// The gateway's certificate failed verification: retrying cannot help.
    Certificate {
        /// What is wrong with it.
        problem: CertificateProblem,
        /// What the verifier said.
        detail: String,
        /// The SHA-256 of the presented certificate (lowercase hex), when it was seen.
        presented_sha256: Option<String>,
    },
    /// Any other transport error.
    Transport {
        /// What happened.
        detail: String,
    },
    /// An HTTP status that the dialect did not map to something more specific.
    Http {
        /// Which call.
        endpoint: Endpoint,
        /// The status code.
        status: u16,
        /// `Retry-After`, when given (429, 503).
        retry_after: Option<Duration>,
    },
    /// The gateway rejected the credentials on the socket handshake (401/403).
    Rejected {
        /// 401 or 403.
        status: u16,
        /// True when these credentials were fetched to replace rejected ones.
        after_refresh: bool,
    },
    /// The gateway says the brokerage session is not authenticated (`sts`, auth/status, tickle).
    SessionLost {
        /// Where it was seen, in words.
        detail: String,
    },
    /// A person has to log in at the gateway and approve 2FA.
    NeedsLogin {
        /// What the gateway said.
        detail: String,
    },
    /// Another platform holds the brokerage session.
    Competing,
    /// IBKR `no bridge` right after `ssodh/init`: the session is being built, retry shortly.
    NoBridge,
    /// The server refused this client for a reason retrying cannot fix (e.g. a ticket endpoint's
    /// `MISSING_SESSION`).
    Refused {
        /// Which call.
        endpoint: Endpoint,
        /// The server's code or message.
        detail: String,
    },
    /// The upgrade was refused for a one-time ticket (used or expired): buy a new one and retry.
    TicketRejected {
        /// The HTTP status of the upgrade.
        status: u16,
    },
    /// The server ended the connection with a protocol-level close (SignalR `Close`).
    ServerClose {
        /// The server allows reconnecting.
        allow_reconnect: bool,
        /// Its error text, if any.
        error: String,
    },
    /// The server closed the socket.
    Closed {
        /// The close code, if any.
        code: Option<u16>,
        /// The close reason text.
        reason: String,
    },
    /// The socket ended without a close frame.
    Dropped,
    /// No frame arrived for longer than the heartbeat timeout.
    HeartbeatSilence {
        /// How long it was silent.
        silent_for: Duration,
    },
    /// The opening exchange did not confirm authentication in time.
    AuthTimeout,
    /// A frame or reassembled message was larger than allowed.
    Oversized {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The gateway stopped reading while frames for it kept coming (pongs to a ping flood,
    /// subscriptions): the outgoing queue reached its bound and the socket is given up.
    Backpressure {
        /// Frames waiting to be sent.
        frames: usize,
        /// Their size in bytes.
        bytes: usize,
    },
    /// Too many malformed frames in a row.
    MalformedBurst {
        /// How many.
        count: u32,
    },
    /// One actor restarted more often than the restart intensity allows.
    RestartIntensity {
        /// Which actor.
        actor: &'static str,
        /// Restarts inside the window.
        restarts: u32,
        /// The window.
        window: Duration,
    },
    /// An HTTP endpoint answered with a redirect, which keepwire never follows (a redirect would
    /// carry a login body or a bearer token to an origin nobody configured).
    Redirected {
        /// Which call.
        endpoint: Endpoint,
        /// The 3xx status.
        status: u16,
        /// The origin (`scheme://host:port`) of the `Location` header, never its path or query;
        /// `None` when absent or unreadable (a refused WebSocket upgrade loses its headers).
        location: Option<String>,
    },
    /// A URL broke the URL rule when it was about to be used (see [`crate::url_rule`]): nothing
    /// was sent to it.
    UrlRefused {
        /// The setting it comes from (`token_url`), or `negotiate redirect url` for a URL a
        /// SignalR hub supplied.
        key: String,
        /// What is wrong with it (the URL shown without userinfo or query values).
        detail: String,
    },
    /// The configuration cannot work (bad URL, TLS skip for a non-loopback host…).
    Config {
        /// What is wrong and how to fix it.
        detail: String,
    },
}

impl Failure {
    /// The class of this failure under the given competing-session policy.
    pub fn class(&self, competing: CompetingPolicy) -> Class {
        match self {
            Failure::Rejected {
                after_refresh: false,
                ..
            } => Class::Auth,
            Failure::Rejected {
                after_refresh: true,
                ..
            } => Class::Hard,
            Failure::SessionLost { .. } => Class::Session,
            Failure::NeedsLogin { .. } => Class::NeedsLogin,
            Failure::Competing => match competing {
                CompetingPolicy::Compete => Class::Session,
                CompetingPolicy::Yield => Class::Hard,
            },
            Failure::Closed {
                code: Some(1008 | 1009),
                ..
            } => Class::Hard,
            Failure::Http {
                status: 408 | 429, ..
            } => Class::Soft,
            Failure::Http {
                status: 400..=499, ..
            } => Class::Hard,
            Failure::RestartIntensity { .. }
            | Failure::Config { .. }
            | Failure::Refused { .. }
            | Failure::Redirected { .. }
            | Failure::UrlRefused { .. } => Class::Hard,
            Failure::ServerClose {
                allow_reconnect: false,
                ..
            } => Class::Hard,
            Failure::ServerClose {
                allow_reconnect: true,
                ..
            }
            | Failure::TicketRejected { .. } => Class::Soft,
            Failure::Certificate { .. } => Class::Hard,
            Failure::Unreachable { .. }
            | Failure::Tls { .. }
            | Failure::Timeout { .. }
            | Failure::Transport { .. }
            | Failure::Http { .. }
            | Failure::NoBridge
            | Failure::Closed { .. }
            | Failure::Dropped
            | Failure::HeartbeatSilence { .. }
            | Failure::AuthTimeout
            | Failure::Oversized { .. }
            | Failure::Backpressure { .. }
            | Failure::MalformedBurst { .. } => Class::Soft,
        }
    }

    /// A delay the server asked for (429/503 `Retry-After`), to be honoured over the backoff.
    /// A 429 without `Retry-After` (awc loses the headers of a refused WebSocket upgrade) waits
    /// at least [`RATE_LIMIT_FLOOR`]: pacing limits are per second, and redialing inside the
    /// penalty window only extends it.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Http {
                retry_after: Some(d),
                ..
            } => Some(*d),
            Failure::Http {
                status: 429,
                retry_after: None,
                ..
            } => Some(RATE_LIMIT_FLOOR),
            _ => None,
        }
    }

    /// Every value [`Failure::reason`] can return: the closed label set of the `reason` labels
    /// (`keepwire_hard_failures_total`, `keepwire_reconnects_total`, `keepwire_keepalives_total`),
    /// whose series start at 0 when a stream starts.
    pub const REASONS: [&'static str; 26] = [
        "unreachable",
        "timeout",
        "tls",
        "transport",
        "rate_limited",
        "server_error",
        "http_error",
        "credentials_rejected",
        "session_lost",
        "needs_login",
        "competing_session",
        "no_bridge",
        "refused",
        "ticket_rejected",
        "server_close",
        "closed",
        "dropped",
        "heartbeat_silence",
        "auth_timeout",
        "oversized",
        "malformed",
        "backpressure",
        "restart_intensity",
        "redirected",
        "url_refused",
        "config",
    ];

    /// A short, stable, bounded label for metrics and logs (`reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Unreachable { .. } => "unreachable",
            Failure::Timeout { .. } => "timeout",
            Failure::Tls { .. } | Failure::Certificate { .. } => "tls",
            Failure::Transport { .. } => "transport",
            Failure::Http { status: 429, .. } => "rate_limited",
            Failure::Http {
                status: 500..=599, ..
            } => "server_error",
            Failure::Http { .. } => "http_error",
            Failure::Rejected { .. } => "credentials_rejected",
            Failure::SessionLost { .. } => "session_lost",
            Failure::NeedsLogin { .. } => "needs_login",
            Failure::Competing => "competing_session",
            Failure::NoBridge => "no_bridge",
            Failure::Refused { .. } => "refused",
            Failure::TicketRejected { .. } => "ticket_rejected",
            Failure::ServerClose { .. } => "server_close",
            Failure::Closed { .. } => "closed",
            Failure::Dropped => "dropped",
            Failure::HeartbeatSilence { .. } => "heartbeat_silence",
            Failure::AuthTimeout => "auth_timeout",
            Failure::Oversized { .. } => "oversized",
            Failure::Backpressure { .. } => "backpressure",
            Failure::MalformedBurst { .. } => "malformed",
            Failure::RestartIntensity { .. } => "restart_intensity",
            Failure::Redirected { .. } => "redirected",
            Failure::UrlRefused { .. } => "url_refused",
            Failure::Config { .. } => "config",
        }
    }

    /// What a person can do about it, in plain words, where there is something to do.
    pub fn remedy(&self) -> Option<&'static str> {
        match self {
            Failure::Unreachable { .. } => {
                Some("start the gateway (IBKR: bin/run.sh root/conf.yaml) or fix the url")
            }
            Failure::Certificate {
                problem: CertificateProblem::Untrusted,
                ..
            } => Some(
                "if this is your gateway's own certificate, trust it: ca_file = its PEM file (or its CA's), or pin_sha256 = its SHA-256 as shown (keepwire doctor prints the line), then resume",
            ),
            Failure::Certificate {
                problem: CertificateProblem::PinMismatch,
                ..
            } => Some(
                "the gateway presented another certificate than pin_sha256 names: if the gateway's certificate was replaced, set pin_sha256 to the new one as shown (keepwire doctor prints the line), then resume",
            ),
            Failure::Certificate {
                problem: CertificateProblem::OutsideValidity,
                ..
            } => Some(
                "the gateway's certificate is expired or not yet valid (check this machine's clock): renew the certificate, update ca_file or pin_sha256, then resume",
            ),
            Failure::NeedsLogin { .. } => Some(
                "log in at the gateway in a browser and approve the 2FA notification on your phone; keepwire continues by itself",
            ),
            Failure::Competing => Some(
                "close the other session (TWS, mobile app, another browser) or set competing = \"compete\", then resume",
            ),
            Failure::Rejected { after_refresh: true, .. } => {
                Some("the gateway rejects freshly issued credentials: check the account, the session and the gateway logs")
            }
            Failure::Closed { code: Some(1008), .. } => {
                Some("the server refused this client by policy (origin, permissions): fix the configuration, then resume")
            }
            Failure::Closed { code: Some(1009), .. } => Some("a message was too large for the server"),
            Failure::Refused { .. } => Some(
                "the server refuses these credentials for good (e.g. the token lacks its session): sign in again to get new credentials, then resume",
            ),
            Failure::ServerClose { allow_reconnect: false, .. } => {
                Some("the server closed the connection and does not allow reconnecting: see its error, fix the cause, then resume")
            }
            Failure::RestartIntensity { .. } => {
                Some("an actor kept failing immediately after restart: see the last failure and the logs, then resume")
            }
            Failure::Config { .. } => Some("fix the configuration and restart keepwire"),
            Failure::Redirected { .. } => Some(
                "keepwire follows no HTTP redirects: set the URL to the address the endpoint really answers at (the redirect's target, if you trust it), then resume",
            ),
            Failure::UrlRefused { .. } => Some(
                "use https:// (wss:// for sockets) for every host that is not this machine; http:// and ws:// are only for loopback test gateways (127.0.0.1, ::1, localhost)",
            ),
            Failure::Http { status: 401 | 403, .. } => Some("the gateway refuses this client: check credentials and permissions"),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unreachable { detail } => {
                write!(f, "gateway unreachable (not running?): {detail}")
            }
            Failure::Timeout { endpoint } => write!(f, "timed out: {}", endpoint.as_str()),
            Failure::Tls { detail } => write!(f, "TLS failed: {detail}"),
            Failure::Certificate {
                detail,
                presented_sha256,
                ..
            } => {
                write!(f, "gateway certificate refused: {detail}")?;
                if let Some(hash) = presented_sha256 {
                    write!(
                        f,
                        "; the gateway presented the certificate pin_sha256 = \"{hash}\""
                    )?;
                }
                Ok(())
            }
            Failure::Transport { detail } => write!(f, "transport error: {detail}"),
            Failure::Http {
                endpoint,
                status,
                retry_after,
            } => {
                write!(f, "{} answered HTTP {status}", endpoint.as_str())?;
                if let Some(d) = retry_after {
                    write!(f, " (retry after {} ms)", d.as_millis())?;
                }
                Ok(())
            }
            Failure::Rejected {
                status,
                after_refresh,
            } => {
                write!(
                    f,
                    "credentials rejected on the socket handshake (HTTP {status})"
                )?;
                if *after_refresh {
                    write!(f, " right after a refresh")?;
                }
                Ok(())
            }
            Failure::SessionLost { detail } => {
                write!(f, "gateway session not authenticated: {detail}")
            }
            Failure::NeedsLogin { detail } => {
                write!(f, "waiting for a person to log in (2FA): {detail}")
            }
            Failure::Competing => write!(f, "another session competes for the brokerage session"),
            Failure::NoBridge => write!(f, "gateway has no bridge yet (session being built)"),
            Failure::Refused { endpoint, detail } => {
                write!(f, "{} refused: {detail}", endpoint.as_str())
            }
            Failure::TicketRejected { status } => {
                write!(f, "socket upgrade refused the one-time ticket or connection token (HTTP {status}); a new one is obtained")
            }
            Failure::ServerClose {
                allow_reconnect,
                error,
            } => write!(
                f,
                "server closed the connection ({}){}",
                if *allow_reconnect {
                    "reconnect allowed"
                } else {
                    "reconnect not allowed"
                },
                if error.is_empty() {
                    String::new()
                } else {
                    format!(": {error}")
                }
            ),
            Failure::Closed { code, reason } => match code {
                Some(c) => write!(f, "socket closed by server with code {c} ({reason})"),
                None => write!(f, "socket closed by server without a code"),
            },
            Failure::Dropped => write!(f, "socket dropped without a close frame"),
            Failure::HeartbeatSilence { silent_for } => {
                write!(
                    f,
                    "no heartbeat or data for {} ms: socket presumed dead",
                    silent_for.as_millis()
                )
            }
            Failure::AuthTimeout => {
                write!(f, "gateway did not confirm socket authentication in time")
            }
            Failure::Oversized { limit } => write!(f, "frame or message larger than {limit} bytes"),
            Failure::Backpressure { frames, bytes } => write!(
                f,
                "the gateway stopped reading: {frames} frames ({bytes} bytes) were waiting to be sent; socket given up"
            ),
            Failure::MalformedBurst { count } => write!(f, "{count} malformed frames in a row"),
            Failure::RestartIntensity {
                actor,
                restarts,
                window,
            } => write!(
                f,
                "{actor} restarted {restarts} times within {} ms: escalated",
                window.as_millis()
            ),
            Failure::Redirected {
                endpoint,
                status,
                location,
            } => write!(
                f,
                "{} answered HTTP {status}, a redirect to {}, which is not followed",
                endpoint.as_str(),
                location.as_deref().unwrap_or("an unknown location")
            ),
            Failure::UrlRefused { key, detail } => write!(f, "{key} refused: {detail}"),
            Failure::Config { detail } => write!(f, "configuration error: {detail}"),
        }?;
        if let Some(r) = self.remedy() {
            write!(f, " — {r}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// The most characters of server-supplied text kept anywhere it is shown.
pub const SERVER_TEXT_MAX_CHARS: usize = 200;

/// Server-supplied text (a Close reason, a negotiate or handshake error, a ticket error code, an
/// error field of an HTTP reply) as keepwire keeps and shows it, in errors, logs and `/status`:
/// at most [`SERVER_TEXT_MAX_CHARS`] characters (then `…`), control characters (line breaks
/// that could forge log lines, escape sequences) replaced by spaces. Every place where text from
/// a server enters a [`Failure`] or an event goes through this function.
pub fn server_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(SERVER_TEXT_MAX_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(SERVER_TEXT_MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Classifies a WebSocket close code sent by the server.
pub fn close_failure(code: Option<u16>, reason: &str) -> Failure {
    Failure::Closed {
        code,
        reason: server_text(reason),
    }
}

/// Maps an HTTP status on `endpoint` to a failure, for statuses the dialect has no special meaning for.
pub fn http_failure(endpoint: Endpoint, status: u16, retry_after: Option<Duration>) -> Failure {
    Failure::Http {
        endpoint,
        status,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(f: Failure) -> Class {
        f.class(CompetingPolicy::Compete)
    }

    #[test]
    fn handshake_rejection_refreshes_once_then_is_hard() {
        assert_eq!(
            class(Failure::Rejected {
                status: 401,
                after_refresh: false
            }),
            Class::Auth
        );
        assert_eq!(
            class(Failure::Rejected {
                status: 403,
                after_refresh: true
            }),
            Class::Hard
        );
    }

    #[test]
    fn policy_and_size_closes_are_hard_others_soft() {
        for code in [1008, 1009] {
            assert_eq!(class(close_failure(Some(code), "x")), Class::Hard, "{code}");
        }
        for code in [1000, 1001, 1006, 1011, 1012, 1013] {
            assert_eq!(class(close_failure(Some(code), "x")), Class::Soft, "{code}");
        }
        assert_eq!(class(close_failure(None, "")), Class::Soft);
    }

    #[test]
    fn server_errors_and_rate_limits_are_soft_client_errors_hard() {
        for status in [500, 502, 503, 429, 408] {
            assert_eq!(
                class(http_failure(Endpoint::AuthStatus, status, None)),
                Class::Soft,
                "{status}"
            );
        }
        for status in [400, 404, 405] {
            assert_eq!(
                class(http_failure(Endpoint::AuthStatus, status, None)),
                Class::Hard,
                "{status}"
            );
        }
    }

    /// One failure of every variant (a new variant breaks this match until it is listed).
    fn one_of_each() -> Vec<Failure> {
        let all = vec![
            Failure::Unreachable { detail: "x".into() },
            Failure::Timeout {
                endpoint: Endpoint::Upgrade,
            },
            Failure::Tls { detail: "x".into() },
            Failure::Transport { detail: "x".into() },
            http_failure(Endpoint::Upgrade, 429, None),
            http_failure(Endpoint::Upgrade, 503, None),
            http_failure(Endpoint::Upgrade, 404, None),
            Failure::Rejected {
                status: 401,
                after_refresh: false,
            },
            Failure::SessionLost { detail: "x".into() },
            Failure::NeedsLogin { detail: "x".into() },
            Failure::Competing,
            Failure::NoBridge,
            Failure::Refused {
                endpoint: Endpoint::Credentials,
                detail: "x".into(),
            },
            Failure::TicketRejected { status: 403 },
            Failure::ServerClose {
                allow_reconnect: true,
                error: "x".into(),
            },
            close_failure(Some(1000), "x"),
            Failure::Dropped,
            Failure::HeartbeatSilence {
                silent_for: Duration::ZERO,
            },
            Failure::AuthTimeout,
            Failure::Oversized { limit: 1 },
            Failure::Backpressure {
                frames: 1,
                bytes: 1,
            },
            Failure::MalformedBurst { count: 1 },
            Failure::RestartIntensity {
                actor: "x",
                restarts: 1,
                window: Duration::ZERO,
            },
            Failure::Certificate {
                problem: CertificateProblem::Untrusted,
                detail: "x".into(),
                presented_sha256: None,
            },
            Failure::Redirected {
                endpoint: Endpoint::Credentials,
                status: 307,
                location: None,
            },
            Failure::UrlRefused {
                key: "token_url".into(),
                detail: "x".into(),
            },
            Failure::Config { detail: "x".into() },
        ];
        for f in &all {
            // Exhaustive: adding a variant fails to compile here until it is added above.
            match f {
                Failure::Unreachable { .. }
                | Failure::Timeout { .. }
                | Failure::Tls { .. }
                | Failure::Certificate { .. }
                | Failure::Redirected { .. }
                | Failure::UrlRefused { .. }
                | Failure::Transport { .. }
                | Failure::Http { .. }
                | Failure::Rejected { .. }
                | Failure::SessionLost { .. }
                | Failure::NeedsLogin { .. }
                | Failure::Competing
                | Failure::NoBridge
                | Failure::Refused { .. }
                | Failure::TicketRejected { .. }
                | Failure::ServerClose { .. }
                | Failure::Closed { .. }
                | Failure::Dropped
                | Failure::HeartbeatSilence { .. }
                | Failure::AuthTimeout
                | Failure::Oversized { .. }
                | Failure::Backpressure { .. }
                | Failure::MalformedBurst { .. }
                | Failure::RestartIntensity { .. }
                | Failure::Config { .. } => {}
            }
        }
        all
    }

    #[test]
    fn reasons_lists_exactly_the_reason_of_every_failure() {
        let seen: std::collections::BTreeSet<&str> =
            one_of_each().iter().map(Failure::reason).collect();
        let listed: std::collections::BTreeSet<&str> = Failure::REASONS.into_iter().collect();
        assert_eq!(seen, listed);
        assert_eq!(listed.len(), Failure::REASONS.len(), "no duplicates");
    }

    #[test]
    fn a_gateway_that_stops_reading_is_soft() {
        let f = Failure::Backpressure {
            frames: 1024,
            bytes: 9000,
        };
        assert_eq!(class(f.clone()), Class::Soft);
        assert_eq!(f.reason(), "backpressure");
        assert!(f.to_string().contains("stopped reading"), "{f}");
    }

    #[test]
    fn server_text_is_capped_at_200_chars_and_loses_its_control_characters() {
        let long = "é".repeat(10_000);
        let t = server_text(&long);
        assert_eq!(t.chars().count(), SERVER_TEXT_MAX_CHARS + 1);
        assert!(t.ends_with('…'));
        assert_eq!(server_text("a\nb\u{1b}[31m"), "a b [31m");
        assert_eq!(server_text(&"x".repeat(200)), "x".repeat(200));
        let closed = close_failure(Some(1011), &long).to_string();
        assert!(closed.chars().count() < 400, "{}", closed.len());
    }

    #[test]
    fn competing_follows_policy() {
        assert_eq!(
            Failure::Competing.class(CompetingPolicy::Compete),
            Class::Session
        );
        assert_eq!(
            Failure::Competing.class(CompetingPolicy::Yield),
            Class::Hard
        );
    }

    #[test]
    fn needs_login_names_a_remedy_and_is_not_hard() {
        let f = Failure::NeedsLogin {
            detail: "2FA pending".into(),
        };
        assert_eq!(class(f.clone()), Class::NeedsLogin);
        assert!(f.to_string().contains("approve the 2FA"));
    }
}
