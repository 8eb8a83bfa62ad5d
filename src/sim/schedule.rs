//! Fault schedules: what the model gateway is told to do, and when. One seed, one schedule.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{BackoffConfig, CompetingPolicy, RestartIntensity};

/// The dialect a simulated stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimDialect {
    /// IBKR: REST session, session-id credentials, `sts` on the socket.
    Ibkr,
    /// A one-time ticket bought with a JWT.
    Ticket,
    /// A SignalR hub: negotiate with a bearer, handshake on the socket.
    SignalR,
}

/// One fault of the model gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The server drops the socket without a close frame.
    Drop,
    /// The server closes the socket with 1011.
    CloseServerError,
    /// The socket goes silent (half-open).
    Silence,
    /// Nothing listens (connection refused) for a while.
    Down,
    /// Every HTTP endpoint answers 503 for a while.
    ServerErrors,
    /// Every endpoint answers 429 with this `Retry-After` (`None`: unparsable) for a while.
    RateLimited(Option<Duration>),
    /// Every credential issued so far is revoked (the next use is a 401).
    Revoke,
    /// The token endpoint answers `expiresIn: 0` for a while.
    ExpiresZero,
    /// The token endpoint answers a huge `expiresIn` for a while.
    ExpiresHuge,
    /// IBKR: the brokerage session is lost until re-initialised.
    SessionLost,
    /// IBKR: REST says authenticated while every socket says `sts authenticated:false`, until
    /// `reauthenticate` or `ssodh/init` repairs it.
    HalfDead,
    /// IBKR: a person must log in for a while.
    NeedsLogin,
    /// IBKR: another session competes for the brokerage session.
    Competing,
    /// Upgrades hang this long for a while.
    UpgradeHang(Duration),
    /// Hard: every credential is refused on use for a while (SignalR: after the handshake).
    RefuseAccount,
    /// Hard: the server closes the socket with 1008 (policy).
    PolicyClose,
}

impl FaultKind {
    /// Retrying cannot help: the stream must stop and say why.
    pub fn is_hard(self, competing: CompetingPolicy) -> bool {
        match self {
            FaultKind::RefuseAccount | FaultKind::PolicyClose => true,
            FaultKind::Competing => competing == CompetingPolicy::Yield,
            _ => false,
        }
    }

    /// Whether the fault is a condition with a duration (the others happen once).
    pub fn lasts(self) -> bool {
        !matches!(
            self,
            FaultKind::Drop
                | FaultKind::CloseServerError
                | FaultKind::Silence
                | FaultKind::Revoke
                | FaultKind::PolicyClose
        )
    }
}

/// One fault at a time, for a duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// When it starts.
    pub at: Duration,
    /// What it is.
    pub kind: FaultKind,
    /// How long it lasts (conditions only).
    pub lasts: Duration,
}

/// What the user of the stream does meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserAction {
    /// Subscribes to a topic (again, if already desired: a further consumer).
    Subscribe(&'static str),
    /// Unsubscribes from a topic.
    Unsubscribe(&'static str),
}

/// The topics the user picks from.
pub const TOPICS: [&str; 3] = ["a", "b", "c"];

/// Everything one simulated run needs: the stream's settings, the faults and the user's actions.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The seed it was drawn from.
    pub seed: u64,
    /// The dialect.
    pub dialect: SimDialect,
    /// Backoff settings of the stream.
    pub backoff: BackoffConfig,
    /// Competing policy.
    pub competing: CompetingPolicy,
    /// Restart intensity.
    pub intensity: RestartIntensity,
    /// Login poll interval.
    pub login_poll: Duration,
    /// Keepalive interval (IBKR tickle).
    pub keepalive: Duration,
    /// Heartbeat timeout.
    pub heartbeat_timeout: Duration,
    /// Opening-exchange timeout.
    pub auth_timeout: Duration,
    /// Normal credential lifetime.
    pub token_lifetime: Duration,
    /// Longest latency of one request or message.
    pub max_latency: Duration,
    /// The faults, by start time.
    pub faults: Vec<Fault>,
    /// The user's subscribes and unsubscribes, by time (the first two at 0).
    pub actions: Vec<(Duration, UserAction)>,
}

impl Schedule {
    /// Draws the schedule of `seed` with `faults` faults.
    pub fn draw(seed: u64, faults: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let dialect = match rng.gen_range(0..3) {
            0 => SimDialect::Ibkr,
            1 => SimDialect::Ticket,
            _ => SimDialect::SignalR,
        };
        let initial = Duration::from_millis(rng.gen_range(20..400));
        let backoff = BackoffConfig {
            initial,
            max: initial.max(Duration::from_millis(rng.gen_range(500..8_000))),
            multiplier: [1.5, 2.0, 3.0][rng.gen_range(0..3)],
            randomization: [0.0, 0.2, 0.5][rng.gen_range(0..3)],
            reset_after: Duration::from_millis(rng.gen_range(1_000..20_000)),
        };
        let competing = if rng.gen_bool(0.5) {
            CompetingPolicy::Compete
        } else {
            CompetingPolicy::Yield
        };
        let mut kinds = vec![
            FaultKind::Drop,
            FaultKind::CloseServerError,
            FaultKind::Silence,
            FaultKind::Down,
            FaultKind::ServerErrors,
            FaultKind::RateLimited(Some(Duration::from_secs(1))),
            FaultKind::RateLimited(None),
            FaultKind::RateLimited(Some(Duration::from_secs(99_999_999))),
            FaultKind::Revoke,
            FaultKind::ExpiresZero,
            FaultKind::ExpiresHuge,
            FaultKind::UpgradeHang(Duration::from_millis(rng.gen_range(500..4_000))),
            FaultKind::RefuseAccount,
            FaultKind::PolicyClose,
        ];
        if dialect == SimDialect::Ibkr {
            kinds.extend([
                FaultKind::SessionLost,
                FaultKind::HalfDead,
                FaultKind::NeedsLogin,
                FaultKind::Competing,
            ]);
        }
        let mut at = Duration::from_millis(rng.gen_range(0..2_000));
        let mut list = Vec::with_capacity(faults);
        for _ in 0..faults {
            let kind = kinds[rng.gen_range(0..kinds.len())];
            let lasts = if kind.lasts() {
                Duration::from_millis(rng.gen_range(100..6_000))
            } else {
                Duration::ZERO
            };
            list.push(Fault { at, kind, lasts });
            // Gaps short enough that faults overlap: a 401 during a reconnect, a drop while
            // the session is being rebuilt, a hard failure during a dial.
            at += Duration::from_millis(rng.gen_range(0..4_000));
        }
        // Drawn from a generator of their own, so that the faults of a seed stay what they were
        // before the user's actions were modelled (the regression seeds keep their schedules).
        let mut user = StdRng::seed_from_u64(seed ^ 0x05ab_5c71_be00_0000);
        let end = list.last().map_or(Duration::ZERO, |f| f.at + f.lasts);
        let mut actions = vec![
            (Duration::ZERO, UserAction::Subscribe(TOPICS[0])),
            (Duration::ZERO, UserAction::Subscribe(TOPICS[1])),
        ];
        for _ in 0..6 {
            let at = Duration::from_millis(user.gen_range(0..=end.as_millis() as u64));
            let topic = TOPICS[user.gen_range(0..TOPICS.len())];
            let action = if user.gen_bool(0.5) {
                UserAction::Subscribe(topic)
            } else {
                UserAction::Unsubscribe(topic)
            };
            actions.push((at, action));
        }
        actions.sort_by_key(|(at, _)| *at);
        Self {
            seed,
            dialect,
            backoff,
            competing,
            intensity: RestartIntensity::default(),
            login_poll: Duration::from_millis(rng.gen_range(500..5_000)),
            keepalive: Duration::from_millis(rng.gen_range(1_000..10_000)),
            heartbeat_timeout: Duration::from_millis(rng.gen_range(1_000..10_000)),
            auth_timeout: Duration::from_millis(rng.gen_range(1_000..5_000)),
            token_lifetime: Duration::from_secs(rng.gen_range(5..600)),
            max_latency: Duration::from_millis(rng.gen_range(1..60)),
            faults: list,
            actions,
        }
    }

    /// When the last fault is over.
    pub fn end_of_faults(&self) -> Duration {
        self.faults
            .iter()
            .map(|f| f.at + f.lasts)
            .max()
            .unwrap_or_default()
    }
}
