//! The socket machine of StreamConnection.
//!
//! It dials with what GatewaySession and TokenManager give it *now*, declares the socket Ready
//! only when the gateway confirmed authentication, and sends every failure through the failure
//! table: a hard failure closes the socket and stops; anything else closes it and redials after
//! a jittered backoff (credentials rejected: refresh first; session lost: re-establish first).

use std::time::Duration;

use super::Now;
use crate::backoff::Backoff;
use crate::config::{BackoffConfig, CompetingPolicy};
use crate::failure::{Class, Failure};
use crate::ids::{Epoch, Generation};
use crate::messages::ConnPhase;

/// The credentials a dial used, as TokenManager described them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presented {
    /// Their generation.
    pub generation: Generation,
    /// They replaced a generation that the gateway rejected.
    pub replaced_rejected: bool,
    /// When they were issued.
    pub issued_at: Now,
}

/// A rejection of credentials that replaced rejected ones counts as "rejected right after a
/// refresh" (hard) only while they are this fresh; older ones may simply have been revoked while
/// the stream waited (a long `Retry-After`), and are refreshed once more.
pub const FRESH: Duration = Duration::from_secs(60);

/// Where the socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Nothing in progress.
    Idle,
    /// Waiting out a backoff delay.
    Backoff,
    /// Waiting for the session and credentials, then the upgrade.
    Dialing,
    /// Upgraded; waiting for the gateway to confirm authentication.
    Opening {
        /// The socket.
        epoch: Epoch,
        /// The credentials it was opened with.
        presented: Presented,
    },
    /// Authenticated and usable.
    Ready {
        /// The socket.
        epoch: Epoch,
        /// The credentials it was opened with.
        presented: Presented,
    },
    /// Stopped for good (shutdown or a hard failure) until resumed.
    Halted,
}

/// What happens to the machine.
#[derive(Debug)]
pub enum ConnEvent {
    /// The actor (re)started.
    Started,
    /// The backoff delay is over.
    BackoffElapsed,
    /// The dial failed before the socket opened.
    DialFailed {
        /// What happened.
        failure: Failure,
        /// The credentials it used, if it got that far.
        presented: Option<Presented>,
    },
    /// The upgrade succeeded: socket `epoch` is open.
    Opened {
        /// The new socket.
        epoch: Epoch,
        /// The credentials it was opened with.
        presented: Presented,
    },
    /// The gateway confirmed authentication on the open socket.
    Authenticated,
    /// The open socket failed (close, drop, silence, a failure frame…).
    SocketFailed(Failure),
    /// The gateway session went down.
    SessionDown,
    /// A newer credential generation exists.
    CredentialsChanged(Generation),
    /// The watchdog's check: the Ready socket may have been healthy long enough (see
    /// [`ConnMachine::reset_due`]).
    Watchdog,
    /// Stop for good.
    Halt,
    /// Start again after a halt.
    Resume,
}

/// What the shell must do.
#[derive(Debug, PartialEq)]
pub enum ConnEffect {
    /// Start a dial: await the session, get credentials, prepare, upgrade.
    Dial,
    /// Fire [`ConnEvent::BackoffElapsed`] after this delay.
    ArmBackoff(Duration),
    /// Close socket `epoch` and tell Subscriptions it is gone.
    Close(Epoch),
    /// Tell Subscriptions socket `epoch` is Ready.
    Up(Epoch),
    /// Tell TokenManager this generation was rejected (it refreshes).
    Reject(Generation),
    /// Tell TokenManager this generation belonged to a session that is gone (it refreshes; not
    /// a rejection of the credential).
    Stale(Generation),
    /// Tell TokenManager to forget this generation without refreshing now (the stream stops).
    Discard(Generation),
    /// Abandon the dial in flight: nothing it opens may outlive a halt.
    CancelDial,
    /// Tell GatewaySession the session is gone.
    SessionLost(Failure),
    /// Publish the phase.
    Phase(ConnPhase),
    /// Report a failure to the supervisor.
    Report(Failure),
    /// The socket stayed healthy long enough: retries start over.
    Healthy,
    /// Cancel every timer, stream and call in flight, then start again ([`ConnEvent::Started`]).
    Restart,
}

/// The socket machine.
#[derive(Debug)]
pub struct ConnMachine {
    state: ConnState,
    backoff: Backoff,
    competing: CompetingPolicy,
    /// Delay to wait after the next restart.
    next_delay: Option<Duration>,
    /// The last generation the gateway accepted on a socket.
    accepted: Option<Generation>,
}

impl ConnMachine {
    /// A machine with this backoff and competing policy.
    pub fn new(backoff: BackoffConfig, competing: CompetingPolicy, seed: u64) -> Self {
        Self {
            state: ConnState::Idle,
            backoff: Backoff::seeded(backoff, seed),
            competing,
            next_delay: None,
            accepted: None,
        }
    }

    /// Where the machine is.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// Attempts since the last healthy period.
    pub fn attempt(&self) -> u32 {
        self.backoff.attempt()
    }

    /// The open socket's epoch, Ready or not.
    pub fn open_epoch(&self) -> Option<Epoch> {
        match self.state {
            ConnState::Opening { epoch, .. } | ConnState::Ready { epoch, .. } => Some(epoch),
            _ => None,
        }
    }

    /// The Ready socket's epoch.
    pub fn ready_epoch(&self) -> Option<Epoch> {
        match self.state {
            ConnState::Ready { epoch, .. } => Some(epoch),
            _ => None,
        }
    }

    /// When [`ConnEvent::Watchdog`] will next have an effect: the Ready socket will have been
    /// healthy for the backoff's `reset_after`, and retries start over. `None` when no socket is
    /// Ready or the counter was already reset. A shell arms one timer for it.
    pub fn reset_due(&self) -> Option<Now> {
        self.ready_epoch()?;
        self.backoff.reset_due()
    }

    /// Feeds one event; returns what to do.
    pub fn on(&mut self, event: ConnEvent, now: Now) -> Vec<ConnEffect> {
        let mut fx = Vec::new();
        match event {
            ConnEvent::Started => {
                if self.state == ConnState::Halted {
                    return fx;
                }
                match self.next_delay.take() {
                    Some(delay) if !delay.is_zero() => {
                        self.state = ConnState::Backoff;
                        fx.push(ConnEffect::Phase(ConnPhase::Backoff { delay }));
                        fx.push(ConnEffect::ArmBackoff(delay));
                    }
                    _ => {
                        fx.push(ConnEffect::Phase(ConnPhase::Waiting));
                        self.dial(&mut fx);
                    }
                }
            }
            ConnEvent::BackoffElapsed => {
                if self.state == ConnState::Backoff {
                    self.dial(&mut fx);
                }
            }
            ConnEvent::DialFailed { failure, presented } => {
                let failure = match presented {
                    Some(p) => self.mark_after_refresh(failure, p, now),
                    None => failure,
                };
                self.fail(failure, presented.map(|p| p.generation), &mut fx);
            }
            ConnEvent::Opened { epoch, presented } => {
                if self.state == ConnState::Dialing {
                    self.state = ConnState::Opening { epoch, presented };
                } else {
                    // A dial that finished after a halt or a restart: close what it opened.
                    fx.push(ConnEffect::Close(epoch));
                }
            }
            ConnEvent::Authenticated => {
                if let ConnState::Opening { epoch, presented } = self.state {
                    self.state = ConnState::Ready { epoch, presented };
                    self.accepted = Some(presented.generation);
                    self.backoff.healthy(now);
                    fx.push(ConnEffect::Phase(ConnPhase::Ready));
                    fx.push(ConnEffect::Up(epoch));
                }
            }
            ConnEvent::SocketFailed(failure) => {
                if let ConnState::Opening { presented, .. } | ConnState::Ready { presented, .. } =
                    self.state
                {
                    // A rejection in the opening exchange (SignalR's handshake) counts like one
                    // on the upgrade: twice with fresh credentials is hard.
                    let failure = self.mark_after_refresh(failure, presented, now);
                    self.fail(failure, Some(presented.generation), &mut fx);
                }
            }
            ConnEvent::SessionDown => {
                if matches!(
                    self.state,
                    ConnState::Opening { .. } | ConnState::Ready { .. } | ConnState::Dialing
                ) {
                    self.restart_after(Duration::ZERO, &mut fx);
                }
            }
            ConnEvent::CredentialsChanged(generation) => {
                if let ConnState::Opening { presented, .. } | ConnState::Ready { presented, .. } =
                    self.state
                {
                    if presented.generation < generation {
                        let delay = self.backoff.floor();
                        self.restart_after(delay, &mut fx);
                    }
                }
            }
            ConnEvent::Watchdog => {
                if self.ready_epoch().is_some() && self.backoff.maybe_reset(now) {
                    fx.push(ConnEffect::Phase(ConnPhase::Ready));
                    fx.push(ConnEffect::Healthy);
                }
            }
            ConnEvent::Halt => {
                if self.state == ConnState::Dialing {
                    fx.push(ConnEffect::CancelDial);
                }
                self.teardown(&mut fx);
                self.state = ConnState::Halted;
                fx.push(ConnEffect::Phase(ConnPhase::Waiting));
            }
            ConnEvent::Resume => {
                if self.state == ConnState::Halted {
                    self.state = ConnState::Idle;
                    self.backoff.reset();
                    self.next_delay = None;
                    fx.push(ConnEffect::Restart);
                }
            }
        }
        fx
    }

    fn dial(&mut self, fx: &mut Vec<ConnEffect>) {
        if self.state != ConnState::Halted {
            self.state = ConnState::Dialing;
            fx.push(ConnEffect::Dial);
        }
    }

    /// A rejection of credentials that replaced rejected ones, before the gateway ever accepted
    /// them, is the "second 401 with a fresh token" of the failure table: hard.
    fn mark_after_refresh(&self, failure: Failure, presented: Presented, now: Now) -> Failure {
        match failure {
            Failure::Rejected { status, .. } => Failure::Rejected {
                status,
                after_refresh: presented.replaced_rejected
                    && self.accepted != Some(presented.generation)
                    && now.saturating_sub(presented.issued_at) <= FRESH,
            },
            other => other,
        }
    }

    /// Handles a failure through the failure table, then restarts.
    fn fail(&mut self, failure: Failure, generation: Option<Generation>, fx: &mut Vec<ConnEffect>) {
        if self.state == ConnState::Halted {
            return;
        }
        let class = failure.class(self.competing);
        let retry_after = failure.retry_after();
        let delay = match class {
            Class::Hard => {
                if let (Failure::Rejected { .. }, Some(g)) = (&failure, generation) {
                    fx.push(ConnEffect::Discard(g));
                }
                fx.push(ConnEffect::Report(failure));
                self.teardown(fx);
                return;
            }
            Class::Auth => {
                fx.push(ConnEffect::Report(failure));
                fx.extend(generation.map(ConnEffect::Reject));
                // The fresh credentials are worth trying soon, but never in a hot loop.
                self.backoff.floor()
            }
            Class::Session | Class::NeedsLogin => {
                fx.push(ConnEffect::Report(failure.clone()));
                // The session is gone, not the credential refused: the next one is fetched, but
                // a rejection of it is not "rejected again right after a refresh".
                fx.extend(generation.map(ConnEffect::Stale));
                fx.push(ConnEffect::SessionLost(failure));
                // A session that keeps failing on the socket (a half-dead gateway) is paced
                // like any other repeated failure: the delay grows to its maximum.
                self.backoff.next_delay()
            }
            Class::Soft | Class::Ignore => {
                fx.push(ConnEffect::Report(failure));
                self.backoff.next_delay_at_least(retry_after)
            }
        };
        self.restart_after(delay, fx);
    }

    /// Closes the open socket, if any.
    fn teardown(&mut self, fx: &mut Vec<ConnEffect>) {
        if let Some(epoch) = self.open_epoch() {
            fx.push(ConnEffect::Close(epoch));
        }
        self.state = ConnState::Idle;
    }

    fn restart_after(&mut self, delay: Duration, fx: &mut Vec<ConnEffect>) {
        self.teardown(fx);
        self.next_delay = Some(delay);
        fx.push(ConnEffect::Restart);
    }
}
