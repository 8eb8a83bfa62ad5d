//! `keepwire demo`: the emulator and a supervisor in one process. Every IBKR fault of the failure
//! table is injected in turn; after each, the demo waits until the stream is Ready with every
//! subscription active and data flowing again on every contract, and records how long that took.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use keepwire::config::SecretSource;
use keepwire::dialect::signalr::SignalRConfig;
use keepwire::dialect::ticket::TicketConfig;
use keepwire::emulator::signalr::{HubConfig, HubFault};
use keepwire::emulator::ticket::{TicketConfig as TicketApiConfig, TicketFault};
use keepwire::emulator::{Emulator, EmulatorConfig, Fault};
use keepwire::{BackoffConfig, Event, Handle, StreamConfig, StreamStatus, Subscription};
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const STREAM: &str = "ibkr";
const CONIDS: [u64; 4] = [265598, 8314, 756733, 4815747];

/// Options of `keepwire demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How long to run, in seconds (every fault is injected at least once regardless).
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Seed for the fault order and timing.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print the summary as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
    /// Which dialect to run.
    #[arg(long, value_enum, default_value_t = DemoDialect::Ibkr)]
    pub dialect: DemoDialect,
}

/// The dialects the demo can run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoDialect {
    /// IBKR Client Portal Gateway.
    Ibkr,
    /// A WebSocket opened with a one-time ticket bought with a JWT.
    Ticket,
    /// An ASP.NET Core SignalR market hub with a token factory.
    Signalr,
}

/// One scripted fault: what to inject, and what "recovered" means for it.
struct Scripted {
    name: &'static str,
    faults: Vec<Fault>,
    /// A person approves 2FA after this long.
    approve_after: Option<Duration>,
    /// The fault takes the socket down, so recovery means a completed reconnect.
    disconnects: bool,
}

impl Scripted {
    /// A fault that takes the socket down.
    fn disconnecting(name: &'static str, faults: Vec<Fault>) -> Self {
        Self {
            name,
            faults,
            approve_after: None,
            disconnects: true,
        }
    }

    /// A fault the socket survives (recovery means data keeps flowing).
    fn quiet(name: &'static str, faults: Vec<Fault>) -> Self {
        Self {
            name,
            faults,
            approve_after: None,
            disconnects: false,
        }
    }
}

fn ibkr_script() -> Vec<Scripted> {
    let s = Scripted::disconnecting;
    let quiet = Scripted::quiet;
    vec![
        s("sts authenticated:false", vec![Fault::SessionLost]),
        s(
            "401 on the socket handshake",
            vec![
                Fault::RejectUpgrade {
                    status: 401,
                    count: 1,
                },
                Fault::DropSockets,
            ],
        ),
        s(
            "403 on the socket handshake",
            vec![
                Fault::RejectUpgrade {
                    status: 403,
                    count: 1,
                },
                Fault::DropSockets,
            ],
        ),
        s(
            "tickle: no session",
            vec![Fault::TickleNoSession { count: 1 }],
        ),
        s("tickle: 401", vec![Fault::TickleUnauthorized { count: 1 }]),
        Scripted {
            name: "2FA not approved yet",
            faults: vec![Fault::RequireLogin],
            approve_after: Some(Duration::from_millis(1500)),
            disconnects: true,
        },
        s(
            "no bridge after ssodh/init",
            vec![Fault::NoBridge { count: 2 }, Fault::SessionLost],
        ),
        s("competing session", vec![Fault::CompetingSession]),
        s(
            "gateway down (connection refused)",
            vec![Fault::GatewayDown { millis: 1500 }],
        ),
        s(
            "5xx",
            vec![
                Fault::ServerError {
                    status: 503,
                    count: 2,
                },
                Fault::DropSockets,
            ],
        ),
        s(
            "429 penalty",
            vec![Fault::RateLimit { millis: 1000 }, Fault::DropSockets],
        ),
        s(
            "heartbeat silence (half-open)",
            vec![Fault::HeartbeatSilence],
        ),
        quiet("smd stream ends silently", vec![Fault::SmdSilentEnd]),
        s("session id rotation", vec![Fault::RotateSession]),
        quiet("non-UTF-8 text frame", vec![Fault::NonUtf8Frame]),
        quiet("fragmented message", vec![Fault::FragmentedMessage]),
        s(
            "oversized frame",
            vec![Fault::OversizedFrame { bytes: 2 << 20 }],
        ),
        quiet("malformed frame", vec![Fault::MalformedFrame]),
        s(
            "close 1001",
            vec![Fault::CloseSockets {
                code: 1001,
                reason: "going away".into(),
            }],
        ),
        s(
            "close 1011",
            vec![Fault::CloseSockets {
                code: 1011,
                reason: "server error".into(),
            }],
        ),
        s("socket dropped", vec![Fault::DropSockets]),
    ]
}

fn ticket_script() -> Vec<Scripted> {
    let s = Scripted::disconnecting;
    let t = Fault::Ticket;
    vec![
        s(
            "JWT expired (401 INVALID_TOKEN)",
            vec![t(TicketFault::ExpireJwts), t(TicketFault::Drop)],
        ),
        s(
            "ticket store down (503)",
            vec![
                t(TicketFault::StoreDown { millis: 1500 }),
                t(TicketFault::Drop),
            ],
        ),
        s(
            "ticket already used (upgrade refused)",
            vec![t(TicketFault::ReuseNextTicket), t(TicketFault::Drop)],
        ),
        s("socket dropped", vec![t(TicketFault::Drop)]),
        s("close 1001", vec![t(TicketFault::Close { code: 1001 })]),
        s("close 1011", vec![t(TicketFault::Close { code: 1011 })]),
        s(
            "JWT expired, then the store down",
            vec![
                t(TicketFault::ExpireJwts),
                t(TicketFault::StoreDown { millis: 800 }),
                t(TicketFault::Drop),
            ],
        ),
    ]
}

fn signalr_script() -> Vec<Scripted> {
    let s = Scripted::disconnecting;
    let quiet = Scripted::quiet;
    let h = Fault::Hub;
    vec![
        s(
            "token expired mid-stream (Close: Unauthorized)",
            vec![h(HubFault::ExpireTokens)],
        ),
        s(
            "401 on negotiate",
            vec![
                h(HubFault::RejectNegotiate {
                    status: 401,
                    count: 1,
                }),
                h(HubFault::Drop),
            ],
        ),
        s(
            "401 on the upgrade",
            vec![
                h(HubFault::RejectUpgrade {
                    status: 401,
                    count: 1,
                }),
                h(HubFault::Drop),
            ],
        ),
        s(
            "503 on negotiate",
            vec![
                h(HubFault::RejectNegotiate {
                    status: 503,
                    count: 2,
                }),
                h(HubFault::Drop),
            ],
        ),
        s(
            "Close with allowReconnect",
            vec![h(HubFault::Close {
                allow_reconnect: true,
                error: Some("restart".into()),
            })],
        ),
        s("connection dropped", vec![h(HubFault::Drop)]),
        s("silent hub (no pings)", vec![h(HubFault::Silent)]),
        quiet(
            "messages split across frames",
            vec![h(HubFault::SplitFrames)],
        ),
    ]
}

fn script(dialect: DemoDialect) -> Vec<Scripted> {
    match dialect {
        DemoDialect::Ibkr => ibkr_script(),
        DemoDialect::Ticket => ticket_script(),
        DemoDialect::Signalr => signalr_script(),
    }
}

fn subscriptions(dialect: DemoDialect) -> Vec<Subscription> {
    match dialect {
        DemoDialect::Ibkr => CONIDS
            .iter()
            .map(|&c| Subscription::market_data(c, ["31", "84", "86"]))
            .collect(),
        DemoDialect::Ticket => [
            "trades.BTC-USD",
            "trades.ETH-USD",
            "book.BTC-USD",
            "book.ETH-USD",
        ]
        .iter()
        .map(|c| Subscription::Channel {
            channel: (*c).to_string(),
        })
        .collect(),
        DemoDialect::Signalr => [
            "CON.F.US.EP.M25",
            "CON.F.US.ENQ.M25",
            "CON.F.US.MES.M25",
            "CON.F.US.MNQ.M25",
        ]
        .iter()
        .map(|c| Subscription::hub_quotes(c))
        .collect(),
    }
}

fn stream_config(dialect: DemoDialect, emu: &keepwire::emulator::EmulatorHandle) -> StreamConfig {
    let mut cfg = match dialect {
        DemoDialect::Ibkr => StreamConfig::ibkr(STREAM, emu.base_url()),
        DemoDialect::Ticket => StreamConfig::ticket(
            STREAM,
            emu.base_url(),
            TicketConfig {
                token_secret: Some(SecretSource::Value(
                    TicketApiConfig::default().api_key.into(),
                )),
                origin: TicketApiConfig::default()
                    .allowed_origins
                    .and_then(|o| o.first().cloned()),
                ..TicketConfig::default()
            },
        ),
        DemoDialect::Signalr => {
            let (user, key) = HubConfig::default()
                .api_keys
                .into_iter()
                .next()
                .unwrap_or_default();
            let mut cfg = StreamConfig::signalr(
                STREAM,
                emu.hub_url(),
                SignalRConfig {
                    user,
                    secret: Some(SecretSource::Value(key.into())),
                    ping_interval: Duration::from_millis(500),
                    token_lifetime: Some(Duration::from_secs(20)),
                    ..SignalRConfig::default()
                },
            );
            cfg.heartbeat_timeout = Duration::from_millis(1500);
            cfg
        }
    };
    cfg.backoff = BackoffConfig {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        multiplier: 2.0,
        randomization: 0.5,
        reset_after: Duration::from_secs(3),
    };
    cfg.heartbeat_timeout = Duration::from_millis(1500);
    cfg.login_poll_interval = Duration::from_millis(500);
    cfg.max_frame_size = 1 << 20;
    if let Some(ibkr) = cfg.ibkr_config_mut() {
        ibkr.tickle_interval = Duration::from_millis(500);
        ibkr.tic_interval = Duration::from_secs(5);
        ibkr.resubscribe_interval = Duration::from_secs(2);
    }
    cfg
}

/// When each subscription (by index) last delivered data.
type LastData = Arc<Mutex<BTreeMap<usize, Instant>>>;

fn data_since(last: &LastData, count: usize, t0: Instant) -> bool {
    let m = last.lock().unwrap_or_else(|e| e.into_inner());
    (0..count).all(|i| m.get(&i).is_some_and(|t| *t > t0))
}

fn line(s: &StreamStatus, done: usize, total: usize) -> String {
    format!(
        "[{done:>2}/{total}] {:<14} attempt {:>2}  subs {}/{}  msgs {:>7}  recoveries {:>2}  restarts {:?}",
        s.state.as_str(),
        s.attempt,
        s.subscriptions.active,
        s.subscriptions.desired,
        s.messages_received,
        s.recoveries,
        s.restarts.values().sum::<u64>(),
    )
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> ExitCode {
    let emu_cfg = EmulatorConfig {
        heartbeat_interval: Duration::from_millis(300),
        market_data_interval: Duration::from_millis(50),
        smd_expiry: Some(Duration::from_secs(3)),
        hub: HubConfig {
            ping_interval: Duration::from_millis(300),
            quote_interval: Duration::from_millis(50),
            token_ttl: Duration::from_secs(20),
            ..HubConfig::default()
        },
        ticket: TicketApiConfig {
            heartbeat_interval: Duration::from_millis(300),
            data_interval: Duration::from_millis(50),
            ..TicketApiConfig::default()
        },
        ..EmulatorConfig::default()
    };
    let emu = match Emulator::start(emu_cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("keepwire demo: cannot start the emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let kw = match Handle::builder()
        .stream(stream_config(args.dialect, &emu))
        .start()
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("keepwire demo: cannot start keepwire: {e}");
            return ExitCode::FAILURE;
        }
    };
    let last: LastData = Arc::default();
    let subs = subscriptions(args.dialect);
    let sub_count = subs.len();
    for (index, sub) in subs.into_iter().enumerate() {
        let mut rx = match kw.subscribe(STREAM, sub).await {
            Ok(rx) => rx,
            Err(e) => {
                eprintln!("keepwire demo: {e}");
                return ExitCode::FAILURE;
            }
        };
        let last = last.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if matches!(ev, Event::Data { .. }) {
                    last.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(index, Instant::now());
                }
            }
        });
    }

    let tty = std::io::stderr().is_terminal();
    let mut status = kw.status();
    let started = Instant::now();
    let total_time = Duration::from_secs(args.duration.max(1));
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut faults = script(args.dialect);
    // seeded order
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.gen_range(0..=i));
    }
    let n = faults.len();
    let slot = total_time / n as u32;

    let ready = |s: &keepwire::Status| s.stream(STREAM).is_some_and(|s| s.is_fully_ready());
    if tokio::time::timeout(Duration::from_secs(20), status.wait_for(ready))
        .await
        .is_err()
    {
        eprintln!("keepwire demo: the stream never became ready");
    }
    let mut recovery_ms = Vec::new();
    let mut unrecovered = Vec::new();
    let mut faults_injected = 0u64;
    for (i, f) in faults.iter().enumerate() {
        let due = started
            + slot * i as u32
            + Duration::from_millis(rng.gen_range(0..=slot.as_millis() as u64 / 4));
        tokio::time::sleep_until(due).await;
        let t0 = Instant::now();
        let recoveries_before = status.borrow().stream(STREAM).map_or(0, |s| s.recoveries);
        for fault in &f.faults {
            emu.inject(fault.clone());
        }
        faults_injected += 1;
        if let Some(after) = f.approve_after {
            let emu = emu.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                emu.inject(Fault::ApproveLogin);
            });
        }
        // recovered = fully ready again and every contract delivered data after the fault
        let deadline = t0 + Duration::from_secs(30);
        let mut recovered = false;
        while Instant::now() < deadline {
            let s = status.borrow().stream(STREAM).cloned().unwrap_or_default();
            let reconnected = !f.disconnects || s.recoveries > recoveries_before;
            if reconnected && s.is_fully_ready() && data_since(&last, sub_count, t0) {
                recovered = true;
                break;
            }
            if tty {
                eprint!("\r{}   ", line(&s, i, n));
                let _ = std::io::stderr().flush();
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), status.changed()).await;
        }
        let took = t0.elapsed().as_millis() as u64;
        if recovered {
            recovery_ms.push(took);
        } else {
            unrecovered.push(f.name);
        }
        let verdict = if recovered {
            format!("recovered in {took} ms")
        } else {
            "NOT recovered".to_string()
        };
        if tty {
            eprint!("\r{}\r", " ".repeat(100));
        }
        eprintln!("fault {:>2}/{n}  {:<36} {verdict}", i + 1, f.name);
    }
    if let Some(rest) = (started + total_time).checked_duration_since(Instant::now()) {
        tokio::time::sleep(rest).await;
    }

    let s = status.borrow().stream(STREAM).cloned().unwrap_or_default();
    let mut sorted = recovery_ms.clone();
    sorted.sort_unstable();
    let c = emu.counters();
    let ok = unrecovered.is_empty() && s.hard_failures == 0 && s.is_fully_ready();
    let summary = serde_json::json!({
        "ok": ok,
        "duration_s": started.elapsed().as_secs_f64(),
        "seed": args.seed,
        "dialect": format!("{:?}", args.dialect).to_lowercase(),
        "faults_injected": faults_injected,
        "recoveries": recovery_ms.len(),
        "unrecovered": unrecovered,
        "hard_failures": s.hard_failures,
        "subscriptions_desired": s.subscriptions.desired,
        "subscriptions_active": s.subscriptions.active,
        "messages_received": s.messages_received,
        "events_dropped": s.events_dropped,
        "recovery_p50_ms": percentile(&sorted, 0.5),
        "recovery_p99_ms": percentile(&sorted, 0.99),
        "recovery_max_ms": sorted.last().copied().unwrap_or(0),
        "socket_reconnects": s.epoch.saturating_sub(1),
        "actor_restarts": s.restarts,
        "gateway": match args.dialect {
            DemoDialect::Ibkr => serde_json::json!({ "tickles": c.tickle, "ssodh_init": c.ssodh_init, "upgrades": c.ws_upgrades_accepted, "smd_subscribes": c.smd_subscribe }),
            DemoDialect::Ticket => serde_json::to_value(&c.ticket).unwrap_or_default(),
            DemoDialect::Signalr => serde_json::to_value(&c.hub).unwrap_or_default(),
        },
    });
    eprintln!(
        "\n{}: {} faults injected, {} recovered (p50 {} ms, p99 {} ms), {} hard failures, subscriptions {}/{} active, {} messages",
        if ok { "PASS" } else { "FAIL" },
        faults_injected,
        recovery_ms.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        s.hard_failures,
        s.subscriptions.active,
        s.subscriptions.desired,
        s.messages_received
    );
    if args.json {
        println!("{summary}");
    }
    kw.shutdown().await;
    emu.stop();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
