//! The gateway-session machine of GatewaySession.
//!
//! IBKR: `auth/status` → `ssodh/init` → status → keepalive `tickle`. It knows whether the
//! brokerage session is really authenticated, waits (slowly, with a remedy) for a person to
//! approve 2FA, honours the competing-session policy, and re-establishes the session whenever
//! the socket or a keepalive reports it lost.

use std::time::Duration;

use super::Now;
use crate::backoff::Backoff;
use crate::config::{BackoffConfig, CompetingPolicy};
use crate::failure::{Class, Failure};
use crate::messages::SessionPhase;

pub use crate::dialect::Repair;

/// Where the session flow is.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionState {
    /// Not started.
    Idle,
    /// A REST handshake is in flight.
    Establishing,
    /// Waiting to retry.
    Backoff,
    /// A person must log in; polling slowly.
    AwaitingLogin,
    /// Established; keepalive running.
    Established,
    /// Stopped for good (shutdown or a hard failure) until resumed.
    Halted,
}

/// What happens to the machine.
#[derive(Debug)]
pub enum SessionEvent {
    /// The actor (re)started.
    Started,
    /// The REST handshake finished.
    Established(Result<(), Failure>),
    /// The retry or login-poll timer fired.
    RetryDue,
    /// The keepalive timer fired.
    KeepaliveDue,
    /// A keepalive failed (a success needs no decision).
    KeepaliveFailed(Failure),
    /// Another actor saw the session gone.
    Lost(Failure),
    /// The socket stayed healthy long enough: the session's retries start over.
    Healthy,
    /// Stop for good.
    Halt,
    /// Start again after a halt.
    Resume,
}

/// What the shell must do.
#[derive(Debug, PartialEq)]
pub enum SessionEffect {
    /// Run the dialect's REST handshake.
    Establish(Repair),
    /// Fire [`SessionEvent::RetryDue`] after this delay.
    ArmRetry(Duration),
    /// Fire [`SessionEvent::KeepaliveDue`] at the dialect's keepalive interval.
    StartKeepalive,
    /// Answer every caller waiting for the session.
    Answer(Result<(), Failure>),
    /// Publish the phase.
    Phase(SessionPhase),
    /// Report a failure to the supervisor.
    Report(Failure),
    /// Tell StreamConnection to drop its socket until the session is back.
    SessionDown,
    /// Cancel every timer and call in flight, then start again ([`SessionEvent::Started`]).
    Restart,
}

/// The gateway-session machine.
#[derive(Debug)]
pub struct SessionMachine {
    state: SessionState,
    backoff: Backoff,
    competing: CompetingPolicy,
    login_poll: Duration,
    /// Delay to wait after the next restart.
    next_delay: Option<Duration>,
    /// Sessions lost since the socket was last healthy: each asks for a stronger repair.
    losses: u32,
}

impl SessionMachine {
    /// A machine with this backoff, competing policy and login poll interval.
    pub fn new(
        backoff: BackoffConfig,
        competing: CompetingPolicy,
        login_poll: Duration,
        seed: u64,
    ) -> Self {
        Self {
            state: SessionState::Idle,
            backoff: Backoff::seeded(backoff, seed),
            competing,
            login_poll,
            next_delay: None,
            losses: 0,
        }
    }

    /// The repair the next establishment attempts: none at first, then `reauthenticate` and
    /// `ssodh/init` in turn while the session keeps failing on the socket.
    pub fn repair(&self) -> Repair {
        match self.losses {
            0 => Repair::None,
            n if n % 2 == 1 => Repair::Reauthenticate,
            _ => Repair::Init,
        }
    }

    /// Where the machine is.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// What a caller waiting for the session gets now: `Some` answers at once, `None` waits.
    pub fn await_session(&self) -> Option<Result<(), Failure>> {
        match self.state {
            SessionState::Established => Some(Ok(())),
            SessionState::Halted => Some(Err(super::halted())),
            _ => None,
        }
    }

    /// Feeds one event; returns what to do.
    pub fn on(&mut self, event: SessionEvent, _now: Now) -> Vec<SessionEffect> {
        let mut fx = Vec::new();
        match event {
            SessionEvent::Started => {
                if self.state == SessionState::Halted {
                    return fx;
                }
                self.state = SessionState::Idle;
                match self.next_delay.take() {
                    Some(delay) => {
                        self.state = SessionState::Backoff;
                        fx.push(SessionEffect::Phase(SessionPhase::Backoff { delay }));
                        fx.push(SessionEffect::ArmRetry(delay));
                    }
                    None => self.establish(&mut fx),
                }
            }
            SessionEvent::Established(res) => {
                if self.state != SessionState::Establishing {
                    return fx;
                }
                match res {
                    Ok(()) => {
                        // The backoff is not reset here: a session the socket then finds dead
                        // must not be rebuilt at the floor delay forever. It resets once the
                        // socket has stayed healthy ([`SessionEvent::Healthy`]).
                        self.state = SessionState::Established;
                        fx.push(SessionEffect::Phase(SessionPhase::Established));
                        fx.push(SessionEffect::Answer(Ok(())));
                        fx.push(SessionEffect::StartKeepalive);
                    }
                    Err(failure) => self.not_established(failure, &mut fx),
                }
            }
            SessionEvent::RetryDue => {
                if matches!(
                    self.state,
                    SessionState::Backoff | SessionState::AwaitingLogin
                ) {
                    self.state = SessionState::Backoff;
                    self.establish(&mut fx);
                }
            }
            SessionEvent::KeepaliveDue => {}
            SessionEvent::Healthy => {
                self.backoff.reset();
                self.losses = 0;
            }
            SessionEvent::KeepaliveFailed(failure) => {
                if self.state != SessionState::Established {
                    return fx;
                }
                match failure.class(self.competing) {
                    Class::Session | Class::NeedsLogin | Class::Hard => self.lost(failure, &mut fx),
                    _ => fx.push(SessionEffect::Report(failure)),
                }
            }
            SessionEvent::Lost(failure) => {
                // Several reporters may notice the same loss; one re-establishment is enough.
                if self.state == SessionState::Established {
                    self.lost(failure, &mut fx);
                }
            }
            SessionEvent::Halt => {
                self.state = SessionState::Halted;
                fx.push(SessionEffect::Answer(Err(super::halted())));
                fx.push(SessionEffect::Restart);
            }
            SessionEvent::Resume => {
                if self.state == SessionState::Halted {
                    self.state = SessionState::Idle;
                    self.backoff.reset();
                    self.losses = 0;
                    self.next_delay = None;
                    self.establish(&mut fx);
                }
            }
        }
        fx
    }

    /// Whether the keepalive should run now.
    pub fn keepalive_due(&self) -> bool {
        self.state == SessionState::Established
    }

    fn establish(&mut self, fx: &mut Vec<SessionEffect>) {
        if matches!(
            self.state,
            SessionState::Halted | SessionState::Establishing | SessionState::Established
        ) {
            return;
        }
        self.state = SessionState::Establishing;
        fx.push(SessionEffect::Phase(SessionPhase::Establishing));
        fx.push(SessionEffect::Establish(self.repair()));
    }

    fn not_established(&mut self, failure: Failure, fx: &mut Vec<SessionEffect>) {
        fx.push(SessionEffect::Report(failure.clone()));
        match failure.class(self.competing) {
            Class::Hard => {
                self.state = SessionState::Idle;
                fx.push(SessionEffect::Answer(Err(failure)));
            }
            Class::NeedsLogin => {
                self.state = SessionState::AwaitingLogin;
                let remedy = failure
                    .remedy()
                    .unwrap_or("log in at the gateway")
                    .to_string();
                fx.push(SessionEffect::Phase(SessionPhase::AwaitingLogin { remedy }));
                fx.push(SessionEffect::ArmRetry(self.login_poll));
            }
            Class::Soft | Class::Session | Class::Auth | Class::Ignore => {
                let delay = match failure {
                    // `no bridge` right after ssodh/init: the session is being built.
                    Failure::NoBridge => self.backoff.floor().max(Duration::from_millis(500)),
                    _ => self.backoff.next_delay_at_least(failure.retry_after()),
                };
                self.state = SessionState::Backoff;
                fx.push(SessionEffect::Phase(SessionPhase::Backoff { delay }));
                fx.push(SessionEffect::ArmRetry(delay));
            }
        }
    }

    /// The session is gone: tell the socket, then start over.
    fn lost(&mut self, failure: Failure, fx: &mut Vec<SessionEffect>) {
        let class = failure.class(self.competing);
        fx.push(SessionEffect::Report(failure));
        if class == Class::Hard {
            return;
        }
        self.losses = self.losses.saturating_add(1);
        self.next_delay = Some(self.backoff.next_delay_at_least(None));
        fx.push(SessionEffect::SessionDown);
        fx.push(SessionEffect::Restart);
    }
}
