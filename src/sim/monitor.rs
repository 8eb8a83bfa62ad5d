//! The invariants, checked after every step of a simulated run.

use std::collections::VecDeque;
use std::time::Duration;

use super::schedule::{FaultKind, Schedule};
use crate::backoff::RETRY_AFTER_CAP;
use crate::config::CompetingPolicy;
use crate::failure::{Class, Failure};

/// Request kinds whose pace is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// A credential fetch (token endpoint, IBKR tickle for the session id).
    Token,
    /// A REST session handshake.
    Session,
    /// A ticket purchase or SignalR negotiate.
    Prepare,
    /// A WebSocket upgrade.
    Upgrade,
}

const KINDS: usize = 4;

/// The window over which request pace is checked.
const WINDOW: Duration = Duration::from_secs(10);

/// The proactive refresh floor: at most one a second.
const REFRESH_FLOOR: Duration = Duration::from_secs(1);

/// What the monitor checks and remembers.
#[derive(Debug)]
pub struct Monitor {
    competing: CompetingPolicy,
    /// How long after the last fault healed the stream must be Ready again.
    pub ready_bound: Duration,
    /// How long a hard condition alone may go unrecognised.
    pub hard_bound: Duration,
    /// Requests allowed by the backoff schedule inside [`WINDOW`].
    schedule_allows: usize,
    requests: [VecDeque<Duration>; KINDS],
    fault_times: VecDeque<Duration>,
    revokes: VecDeque<Duration>,
    hard_windows: Vec<(Duration, Duration)>,
    /// Since when nothing is in force.
    pub calm_since: Duration,
    /// Since when a hard condition is the only thing in force.
    pub hard_alone_since: Option<Duration>,
    /// Since when requests must have stopped (a hard failure was delivered to every actor).
    pub quiet_from: Option<Duration>,
    /// The last time the backoff reset after a healthy period.
    healthy_at: Duration,
    /// Panics injected (none in this simulator: restart intensity has nothing to escalate).
    pub panics: u32,
}

impl Monitor {
    /// A monitor for `schedule`.
    pub fn new(s: &Schedule) -> Self {
        let hard_windows = s
            .faults
            .iter()
            .filter(|f| f.kind.is_hard(s.competing))
            .map(|f| (f.at, f.at + f.lasts))
            .collect();
        let slack = s.max_latency * 40 + Duration::from_secs(1);
        let ready_bound = RETRY_AFTER_CAP.max(s.backoff.max)
            + s.backoff.max * 3
            + s.login_poll
            + s.keepalive
            + s.heartbeat_timeout
            + s.auth_timeout
            + slack;
        let hard_bound =
            s.backoff.max * 3 + s.keepalive + s.auth_timeout + s.heartbeat_timeout + slack;
        Self {
            competing: s.competing,
            ready_bound,
            hard_bound,
            schedule_allows: schedule_allows(s),
            requests: Default::default(),
            fault_times: VecDeque::new(),
            revokes: VecDeque::new(),
            hard_windows,
            calm_since: Duration::ZERO,
            hard_alone_since: None,
            quiet_from: None,
            healthy_at: Duration::ZERO,
            panics: 0,
        }
    }

    /// A fault started or ended.
    pub fn fault(&mut self, kind: FaultKind, now: Duration) {
        self.fault_times.push_back(now);
        if kind == FaultKind::Revoke {
            self.revokes.push_back(now);
        }
    }

    /// The backoff reset after a healthy period.
    pub fn healthy(&mut self, now: Duration) {
        self.healthy_at = now;
    }

    /// A request starts. Returns a violation, if any.
    pub fn request(&mut self, kind: Request, now: Duration) -> Option<String> {
        if self.quiet_from.is_some_and(|t| now > t) {
            return Some(format!(
                "{kind:?} request after the stream stopped on a hard failure"
            ));
        }
        let since = now.saturating_sub(WINDOW).max(self.healthy_at);
        let log = &mut self.requests[kind as usize];
        log.push_back(now);
        while log.front().is_some_and(|t| *t < since) {
            log.pop_front();
        }
        while self.fault_times.front().is_some_and(|t| *t + WINDOW < now) {
            self.fault_times.pop_front();
        }
        let faults = self.fault_times.iter().filter(|t| **t >= since).count();
        let mut allowed = self.schedule_allows + 2 * faults + 3;
        if kind == Request::Token {
            allowed += (WINDOW.as_millis() / REFRESH_FLOOR.as_millis()) as usize;
        }
        (log.len() > allowed).then(|| {
            format!(
                "{} {kind:?} requests in {} ms without a healthy period; the backoff schedule and {faults} faults allow {allowed}",
                log.len(),
                now.saturating_sub(since).as_millis()
            )
        })
    }

    /// The stream stopped on `failure`. Returns a violation when it should not have.
    pub fn stopped(&mut self, failure: &Failure, now: Duration) -> Option<String> {
        if matches!(failure, Failure::RestartIntensity { .. }) && self.panics == 0 {
            return Some(format!(
                "stream stopped by restart intensity though no actor died: {failure}"
            ));
        }
        if failure.class(self.competing) != Class::Hard {
            return Some(format!(
                "stream stopped on a failure that is not hard: {failure}"
            ));
        }
        let grace = self.hard_bound;
        let hard_cause = self
            .hard_windows
            .iter()
            .any(|(from, to)| now >= *from && now <= *to + grace);
        let revoked_twice = matches!(
            failure,
            Failure::Rejected {
                after_refresh: true,
                ..
            }
        ) && self
            .revokes
            .iter()
            .any(|t| *t + grace + crate::machine::connection::FRESH >= now);
        (!hard_cause && !revoked_twice)
            .then(|| format!("stream stopped without a hard cause: {failure}"))
    }
}

/// How many requests the backoff schedule allows inside [`WINDOW`]: the count of lower bounds
/// of successive delays that fit in it, plus the first request.
fn schedule_allows(s: &Schedule) -> usize {
    let b = &s.backoff;
    let r = b.randomization.clamp(0.0, 0.99);
    let floor = b.initial.mul_f64(1.0 - r).max(Duration::from_millis(1));
    let mut base = b.initial;
    let mut spent = Duration::ZERO;
    let mut n = 1;
    while n < 10_000 {
        let least = base.mul_f64(1.0 - r).clamp(floor, b.max.max(floor));
        spent += least;
        if spent > WINDOW {
            break;
        }
        n += 1;
        base = base.mul_f64(b.multiplier.max(1.0)).min(b.max);
    }
    n
}
