//! `keepwire doctor --config keepwire.toml`: seed 001's troubleshooting checklist, run for you.
//!
//! For each stream: gateway reachable? TLS ok? auth/status authenticated / competing /
//! connected? ssodh/init completes the handshake? the socket says `authenticated`? one
//! subscription confirmed? Each line ✓ or ✗ with the remedy in plain words. For a TLS gateway
//! it also shows the certificate the gateway presents (subject, SANs, validity, SHA-256) and the
//! `pin_sha256 = "…"` line that pins it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use awc::ws::{Frame, Message};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use keepwire::config::DialectKind;
use keepwire::config_file;
use keepwire::dialect::ibkr::{self, Ibkr};
use keepwire::dialect::{Confirmation, Dialect, Inbound, Repair};
use keepwire::failure::Failure;
use keepwire::tls::{CertificateInfo, TlsConfig, Verification};
use keepwire::transport::{ClientFactory, Http};
use keepwire::{StreamConfig, Subscription};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

/// Options of `keepwire doctor`.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One line of the checklist.
#[derive(Debug, Serialize)]
struct Check {
    stream: String,
    check: &'static str,
    ok: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    remedy: Option<String>,
    /// The gateway's certificate (on the "gateway certificate" line).
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<CertificateInfo>,
    /// The configuration line that pins that certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    config_line: Option<String>,
}

struct Checklist {
    stream: String,
    lines: Vec<Check>,
}

impl Checklist {
    fn pass(&mut self, check: &'static str, detail: impl Into<String>) {
        self.lines.push(Check {
            stream: self.stream.clone(),
            check,
            ok: true,
            detail: detail.into(),
            remedy: None,
            certificate: None,
            config_line: None,
        });
    }

    fn fail(&mut self, check: &'static str, detail: impl Into<String>, remedy: impl Into<String>) {
        self.lines.push(Check {
            stream: self.stream.clone(),
            check,
            ok: false,
            detail: detail.into(),
            remedy: Some(remedy.into()),
            certificate: None,
            config_line: None,
        });
    }

    fn fail_with(&mut self, check: &'static str, failure: &Failure, fallback: &str) {
        let remedy = failure.remedy().unwrap_or(fallback).to_string();
        let detail = failure.to_string();
        let detail = detail.split(" — ").next().unwrap_or(&detail).to_string();
        self.fail(check, detail, remedy);
    }
}

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

async fn check_stream(cfg: &StreamConfig, subs: &[Subscription]) -> Vec<Check> {
    let mut list = Checklist {
        stream: cfg.name.clone(),
        lines: Vec::new(),
    };
    let DialectKind::Ibkr(ibkr_cfg) = &cfg.dialect else {
        generic_checks(cfg, subs, &mut list).await;
        return list.lines;
    };
    let dialect = Ibkr::new(&cfg.url, ibkr_cfg.clone());
    let clients = match ClientFactory::new(cfg) {
        Ok(c) => c,
        Err(f) => {
            list.fail_with("configuration", &f, "fix the configuration");
            return list.lines;
        }
    };
    let http = clients.client();
    let api = dialect.api();

    // 1 + 2: reachable, TLS
    let status = ibkr::auth_status(&http, &api).await;
    match &status {
        Err(f @ (Failure::Unreachable { .. } | Failure::Timeout { .. })) => {
            list.fail_with("gateway reachable", f, "start the gateway");
            return list.lines;
        }
        _ => {
            list.pass("gateway reachable", format!("{} answers", cfg.url));
            if !tls_checks(cfg, &mut list).await {
                return list.lines;
            }
        }
    }

    // 3: auth/status
    let healthy = match &status {
        Ok(s) => {
            let detail = format!(
                "authenticated={} competing={} connected={}",
                s.authenticated, s.competing, s.connected
            );
            if s.healthy() {
                list.pass("auth/status (GET)", detail);
            } else if s.competing {
                list.fail(
                    "auth/status (GET)",
                    detail,
                    "another session (TWS, mobile app, another browser) holds the brokerage session: close it, or set competing = \"compete\"",
                );
            } else {
                list.fail(
                    "auth/status (GET)",
                    detail,
                    "the brokerage session is not authenticated yet: the next check tries ssodh/init",
                );
            }
            s.healthy()
        }
        Err(f) => {
            list.fail_with("auth/status (GET)", f, "check the gateway logs");
            false
        }
    };

    // 4: ssodh/init
    if healthy {
        list.pass("ssodh/init handshake", "not needed: already authenticated");
    } else {
        match tokio::time::timeout(
            STEP_TIMEOUT,
            ibkr::establish(http.clone(), api.clone(), ibkr_cfg.competing, Repair::None),
        )
        .await
        {
            Ok(Ok(())) => list.pass(
                "ssodh/init handshake",
                "completed: the brokerage session is authenticated",
            ),
            Ok(Err(f @ Failure::NeedsLogin { .. })) => {
                let remedy = format!(
                    "open {} in a browser, log in and approve the 2FA notification on your phone, then run doctor again",
                    cfg.url
                );
                list.fail_with("ssodh/init handshake", &f, &remedy);
                if let Some(last) = list.lines.last_mut() {
                    last.remedy = Some(remedy);
                }
                return list.lines;
            }
            Ok(Err(f)) => {
                list.fail_with("ssodh/init handshake", &f, "check the gateway logs");
                return list.lines;
            }
            Err(_) => {
                list.fail(
                    "ssodh/init handshake",
                    "no answer within 10 s",
                    "check the gateway logs and its load",
                );
                return list.lines;
            }
        }
    }

    // 5 + 6: the socket, and one subscription
    let session = match ibkr::tickle(http.clone(), api.clone())
        .await
        .map(|t| t.session)
    {
        Ok(Some(s)) => SecretString::from(s),
        Ok(None) => {
            list.fail(
                "socket authenticated",
                "tickle returned no session id",
                "log in at the gateway again",
            );
            return list.lines;
        }
        Err(f) => {
            list.fail_with("socket authenticated", &f, "log in at the gateway again");
            return list.lines;
        }
    };
    let sub = subs
        .iter()
        .find(|s| matches!(s, Subscription::MarketData { .. }))
        .cloned()
        .unwrap_or_else(|| Subscription::market_data(265598, ["31"]));
    match tokio::time::timeout(
        STEP_TIMEOUT * 2,
        socket_checks(&dialect, &http, &session, &sub, &mut list),
    )
    .await
    {
        Ok(()) => {}
        Err(_) => list.fail(
            "socket authenticated",
            "the socket did not answer within 20 s",
            "check the gateway logs; the socket may be half-open",
        ),
    }
    list.lines
}

/// `https://host[:port]/…` (or `wss://`) → host and port; `None` for a plain URL.
fn tls_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("wss://"))?;
    let host = keepwire::transport::url_host(url)?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let port = match authority.strip_prefix(host)?.strip_prefix(':') {
        Some(p) => p.parse().ok()?,
        None => 443,
    };
    Some((host.to_string(), port))
}

/// What verified the certificate, in the configuration's words.
fn trusted_by(tls: &TlsConfig) -> String {
    match tls {
        TlsConfig::Verified => "by the public CAs".into(),
        TlsConfig::CaFile(p) => format!("with ca_file {}", p.display()),
        TlsConfig::CaPem(_) => "with the configured CA PEM".into(),
        TlsConfig::PinSha256(_) => "by pin_sha256".into(),
        TlsConfig::InsecureSkipVerifyLoopbackOnly => "(not: verification skipped)".into(),
    }
}

/// The TLS lines: the certificate the gateway presents, with the line that pins it, and whether
/// the stream's settings trust it. `false` when the checklist cannot go on.
async fn tls_checks(cfg: &StreamConfig, list: &mut Checklist) -> bool {
    let Some((host, port)) = tls_host_port(&cfg.url) else {
        list.pass(
            "TLS",
            "plain HTTP (allowed for a loopback test gateway only)",
        );
        return true;
    };
    let tls = cfg.tls.clone();
    let probe = match tokio::task::spawn_blocking(move || {
        keepwire::tls::probe(&tls, &host, port, STEP_TIMEOUT)
    })
    .await
    {
        Ok(p) => p,
        Err(e) => {
            list.fail("TLS", format!("the TLS check failed: {e}"), "try again");
            return false;
        }
    };
    match probe.presented {
        Some(Ok(info)) => {
            let sans = if info.sans.is_empty() {
                "none".to_string()
            } else {
                info.sans.join(", ")
            };
            let line = format!("pin_sha256 = \"{}\"", info.sha256);
            list.pass(
                "gateway certificate",
                format!(
                    "subject {}; SANs {sans}; not before {}; not after {}; SHA-256 {}",
                    info.subject, info.not_before, info.not_after, info.sha256
                ),
            );
            if let Some(last) = list.lines.last_mut() {
                last.certificate = Some(info);
                last.config_line = Some(line);
            }
        }
        Some(Err(why)) => list.fail(
            "gateway certificate",
            why,
            "the gateway presents a certificate that cannot be read: check its configuration",
        ),
        None => {}
    }
    match probe.outcome {
        Ok(Verification::Verified) => {
            list.pass(
                "TLS",
                format!("certificate verified {}", trusted_by(&cfg.tls)),
            );
            true
        }
        Ok(Verification::Skipped) => {
            list.pass(
                "TLS",
                "verification skipped (insecure_skip_verify): the certificate was not checked; pin it with the pin_sha256 line above instead",
            );
            true
        }
        Err(f @ (Failure::Unreachable { .. } | Failure::Timeout { .. })) => {
            list.fail_with("gateway reachable", &f, "start the gateway or fix the url");
            false
        }
        Err(f) => {
            list.fail_with(
                "TLS",
                &f,
                "trust the gateway's certificate with ca_file or pin_sha256 (the line above)",
            );
            false
        }
    }
}

async fn socket_checks(
    dialect: &Ibkr,
    http: &Http,
    session: &SecretString,
    sub: &Subscription,
    list: &mut Checklist,
) {
    match dialect.prepare_dial(http.clone(), session).await {
        Ok(plan) => socket_and_subscription(dialect, http, plan, sub, list).await,
        Err(f) => list.fail_with("socket authenticated", &f, "check the configuration"),
    }
}

async fn generic_checks(cfg: &StreamConfig, subs: &[Subscription], list: &mut Checklist) {
    let dialect = keepwire::config::build_dialect(cfg);
    let clients = match ClientFactory::new(cfg) {
        Ok(c) => c,
        Err(f) => return list.fail_with("configuration", &f, "fix the configuration"),
    };
    let http = clients.client();
    if !tls_checks(cfg, list).await {
        return;
    }
    if let Err(f) = dialect.establish(http.clone(), Repair::None).await {
        return list.fail_with("gateway session", &f, "check the gateway");
    }
    let issued = match tokio::time::timeout(STEP_TIMEOUT, dialect.fetch_credentials(http.clone()))
        .await
    {
        Ok(Ok(i)) => i,
        Ok(Err(f @ (Failure::Unreachable { .. } | Failure::Timeout { .. }))) => {
            return list.fail_with("gateway reachable", &f, "start the service or fix the url")
        }
        Ok(Err(f)) => return list.fail_with("credentials", &f, "check the credential settings"),
        Err(_) => {
            return list.fail(
                "credentials",
                "no answer within 10 s",
                "check the token endpoint",
            )
        }
    };
    list.pass("gateway reachable", format!("{} answers", cfg.url));
    list.pass(
        "credentials",
        match issued.expires_in {
            Some(d) => format!("issued, valid for {} s", d.as_secs()),
            None => "issued".to_string(),
        },
    );
    let plan = match dialect.prepare_dial(http.clone(), &issued.secret).await {
        Ok(p) => p,
        Err(f) => return list.fail_with("dial plan", &f, "check the credentials and the service"),
    };
    list.pass(
        "dial plan",
        format!("socket at {}", keepwire::transport::redact_url(&plan.url)),
    );
    let Some(sub) = subs.first().cloned() else {
        return list.fail(
            "subscription confirmed",
            "no subscription configured",
            "add a [[streams.subscriptions]] entry",
        );
    };
    socket_and_subscription(&*dialect, &http, plan, &sub, list).await;
}

/// Dials the planned socket, waits until it is usable, subscribes to `sub` and waits for its
/// confirmation (data or an acknowledgement); then unsubscribes and closes.
async fn socket_and_subscription(
    dialect: &dyn Dialect,
    http: &Http,
    plan: keepwire::dialect::DialPlan,
    sub: &Subscription,
    list: &mut Checklist,
) {
    let wire = match dialect.subscription(sub) {
        Ok(w) => w,
        Err(e) => {
            return list.fail(
                "subscription confirmed",
                e,
                "fix the subscription in the configuration",
            )
        }
    };
    let mut req = match http.ws(plan.key, &plan.url) {
        Ok(req) => req,
        Err(f) => return list.fail_with("socket authenticated", &f, "fix the URL"),
    };
    for (k, v) in &plan.headers {
        req = req.header(*k, v.expose_secret());
    }
    let mut socket = match req.connect().await {
        Ok((_, framed)) => framed,
        Err(e) => {
            let f = keepwire::transport::ws_failure(&e, |s| dialect.upgrade_refused(s));
            return list.fail_with("socket authenticated", &f, "check the gateway logs");
        }
    };
    for frame in dialect.opening_frames() {
        let _ = socket.send(Message::Text(frame.into())).await;
    }
    let mut decoder = dialect.decoder();
    let mut authenticated = false;
    let mut out = Vec::new();
    let step = async {
        if dialect.ready_on_open() {
            authenticated = true;
            list.pass("socket authenticated", "upgraded");
            let _ = socket
                .send(Message::Text(wire.subscribe.clone().into()))
                .await;
        }
        while let Some(frame) = socket.next().await {
            let text = match frame {
                Ok(Frame::Text(b) | Frame::Binary(b)) => String::from_utf8_lossy(&b).into_owned(),
                Ok(Frame::Ping(p)) => {
                    let _ = socket.send(Message::Pong(p)).await;
                    continue;
                }
                Ok(Frame::Close(reason)) => {
                    let f = keepwire::failure::close_failure(
                        reason.as_ref().map(|r| u16::from(r.code)),
                        reason
                            .as_ref()
                            .and_then(|r| r.description.as_deref())
                            .unwrap_or(""),
                    );
                    let check = if authenticated {
                        "subscription confirmed"
                    } else {
                        "socket authenticated"
                    };
                    return list.fail_with(check, &f, "check the gateway logs");
                }
                Ok(_) => continue,
                Err(e) => {
                    return list.fail(
                        "socket authenticated",
                        format!("websocket error: {e}"),
                        "try again",
                    )
                }
            };
            decoder.decode_frame(&text, &mut out);
            for m in out.drain(..) {
                match m {
                    Inbound::Authenticated if !authenticated => {
                        authenticated = true;
                        list.pass(
                            "socket authenticated",
                            "the server confirmed the connection",
                        );
                        let _ = socket
                            .send(Message::Text(wire.subscribe.clone().into()))
                            .await;
                    }
                    Inbound::Failure(f) => {
                        return list.fail_with("socket authenticated", &f, "check the gateway logs")
                    }
                    Inbound::Data { topic, .. } if authenticated && *topic == *wire.key => {
                        if let Some(unsub) = &wire.unsubscribe {
                            let _ = socket.send(Message::Text(unsub.clone().into())).await;
                        }
                        return list
                            .pass("subscription confirmed", format!("{sub} delivered data"));
                    }
                    Inbound::Ack { id }
                        if authenticated && wire.confirmation == Confirmation::Ack(id.clone()) =>
                    {
                        return list.pass("subscription confirmed", format!("{sub} acknowledged"));
                    }
                    Inbound::Nack { message, .. } | Inbound::TopicError { message, .. }
                        if authenticated =>
                    {
                        return list.fail(
                            "subscription confirmed",
                            format!("the server refused {sub}: {message}"),
                            "check the channel name and your permissions",
                        );
                    }
                    _ => {}
                }
            }
        }
        list.fail(
            "socket authenticated",
            "the socket ended",
            "check the gateway logs",
        )
    };
    if tokio::time::timeout(STEP_TIMEOUT * 2, step).await.is_err() {
        list.fail(
            "subscription confirmed",
            "no confirmation within 20 s",
            "check the gateway logs",
        );
    }
    let _ = socket.close().await;
}

/// Runs the checklist; exit status 0 only when every check passes.
pub async fn run(args: DoctorArgs) -> ExitCode {
    let config = match config_file::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keepwire doctor: {e}");
            return ExitCode::from(2);
        }
    };
    let mut all = Vec::new();
    for (stream, subs) in &config.streams {
        all.extend(check_stream(stream, subs).await);
    }
    let ok = all.iter().all(|c| c.ok);
    if args.json {
        println!("{}", serde_json::json!({"ok": ok, "checks": all}));
    } else {
        for c in &all {
            println!(
                "{} [{}] {}: {}",
                if c.ok { "✓" } else { "✗" },
                c.stream,
                c.check,
                c.detail
            );
            if let Some(line) = &c.config_line {
                println!("    to pin it, add to the stream in the configuration: {line}");
            }
            if let Some(r) = &c.remedy {
                println!("    → {r}");
            }
        }
        println!(
            "{}",
            if ok {
                "all checks passed"
            } else {
                "some checks failed: see the remedies above"
            }
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
