//! The scenarios that `keepwire demo` and `keepwire chaos` share: for each dialect, the faults
//! of the failure table the emulator can inject (and what "recovered" means for each), the
//! subscriptions a stream makes, its settings tuned for fast recovery, and the emulator's.

use std::time::Duration;

use keepwire::config::SecretSource;
use keepwire::dialect::signalr::SignalRConfig;
use keepwire::dialect::ticket::TicketConfig;
use keepwire::emulator::signalr::{HubConfig, HubFault};
use keepwire::emulator::ticket::{TicketConfig as TicketApiConfig, TicketFault};
use keepwire::emulator::{EmulatorConfig, EmulatorHandle, Fault};
use keepwire::{BackoffConfig, StreamConfig, Subscription};

const CONIDS: [u64; 4] = [265598, 8314, 756733, 4815747];

/// The dialects the demo can run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// IBKR Client Portal Gateway.
    Ibkr,
    /// A WebSocket opened with a one-time ticket bought with a JWT.
    Ticket,
    /// An ASP.NET Core SignalR market hub with a token factory.
    Signalr,
}

/// One scripted fault: what to inject, and what "recovered" means for it.
pub struct Scripted {
    pub name: &'static str,
    pub faults: Vec<Fault>,
    /// A person approves 2FA after this long.
    pub approve_after: Option<Duration>,
    /// The fault takes the socket down, so recovery means a completed reconnect.
    pub disconnects: bool,
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
            "half-dead gateway (REST authenticated, sockets sts false)",
            vec![Fault::HalfDead],
        ),
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

pub fn script(dialect: Dialect) -> Vec<Scripted> {
    match dialect {
        Dialect::Ibkr => ibkr_script(),
        Dialect::Ticket => ticket_script(),
        Dialect::Signalr => signalr_script(),
    }
}

pub fn subscriptions(dialect: Dialect) -> Vec<Subscription> {
    match dialect {
        Dialect::Ibkr => CONIDS
            .iter()
            .map(|&c| Subscription::market_data(c, ["31", "84", "86"]))
            .collect(),
        Dialect::Ticket => [
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
        Dialect::Signalr => [
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

pub fn stream_config(dialect: Dialect, name: &str, emu: &EmulatorHandle) -> StreamConfig {
    let mut cfg = match dialect {
        Dialect::Ibkr => StreamConfig::ibkr(name, emu.base_url()),
        Dialect::Ticket => StreamConfig::ticket(
            name,
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
        Dialect::Signalr => {
            let (user, key) = HubConfig::default()
                .api_keys
                .into_iter()
                .next()
                .unwrap_or_default();
            let mut cfg = StreamConfig::signalr(
                name,
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

/// A subscription none of [`subscriptions`] makes, for probing subscribe and unsubscribe.
pub fn probe(dialect: Dialect) -> Subscription {
    match dialect {
        Dialect::Ibkr => Subscription::market_data(12087792, ["31"]),
        Dialect::Ticket => Subscription::Channel {
            channel: "trades.SOL-USD".to_string(),
        },
        Dialect::Signalr => Subscription::hub_quotes("CON.F.US.MYM.M25"),
    }
}

/// The `p` quantile (0..=1) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
/// The emulator tuned for fast recovery: heartbeats every 300 ms, data every 50 ms.
pub fn emulator_config() -> EmulatorConfig {
    EmulatorConfig {
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
    }
}
