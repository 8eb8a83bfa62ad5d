//! The credential machine of TokenManager.
//!
//! * Every dial asks for credentials *at that moment* ([`TokenEvent::Get`]): nothing captures a
//!   token.
//! * Refreshes are single-flight: a second request while one fetch runs waits for it.
//! * A rejection names the generation it rejected; only a rejection of the *current* generation
//!   refreshes, so a thousand simultaneous 401s cause exactly one refresh.
//! * Credentials with a known expiry are refreshed before it (with jitter), and handed out only
//!   while they are not about to expire.
//!
//! The machine never sees a secret: the shell keeps the secret of each generation it installs.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Now;
use crate::failure::{Class, Failure};
use crate::ids::Generation;

/// Refresh credentials this long before they expire (at most a fifth of their lifetime).
pub const SKEW: Duration = Duration::from_secs(30);

/// The longest lifetime believed; a longer one (or an absurd one) is clamped to this.
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Proactive refreshes are at least this far apart, whatever the source says.
pub const REFRESH_FLOOR: Duration = Duration::from_secs(1);

/// A lifetime as stated by a server, made safe: zero means unknown (refresh on rejection only,
/// never on a timer of 0), absurd values are clamped to [`MAX_LIFETIME`].
pub fn believable(expires_in: Option<Duration>) -> Option<Duration> {
    expires_in
        .filter(|d| !d.is_zero())
        .map(|d| d.min(MAX_LIFETIME))
}

/// The refresh margin for a credential valid for `lifetime`.
fn skew(lifetime: Duration) -> Duration {
    SKEW.min(lifetime / 5)
}

/// What the machine knows of one credential generation (never the secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Its generation.
    pub generation: Generation,
    /// When it was issued.
    pub issued_at: Now,
    /// When it stops being valid, if known.
    pub expires_at: Option<Now>,
    /// Its whole lifetime from issue to expiry, if known (a cached credential issued before the
    /// stream started has a lifetime longer than what is left of it).
    pub lifetime: Option<Duration>,
    /// It replaced a generation that the gateway rejected.
    pub replaced_rejected: bool,
}

/// Where the machine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    /// Not fetching.
    Idle,
    /// One fetch is in flight; every request waits for it.
    Fetching,
    /// Stopped for good (shutdown or a hard failure) until resumed.
    Halted,
}

/// What happens to the machine.
#[derive(Debug)]
pub enum TokenEvent {
    /// A dial asks for credentials.
    Get,
    /// The credential source answered with a new credential.
    Issued {
        /// Its lifetime as the source stated it.
        expires_in: Option<Duration>,
        /// How long ago it was issued (non-zero for a cached credential).
        age: Duration,
    },
    /// The credential source failed.
    FetchFailed(Failure, Class),
    /// The gateway rejected this generation.
    Rejected(Generation),
    /// The session this generation belonged to is gone (IBKR `sts authenticated:false`, a login
    /// needed): fetch a fresh one, but it does not count as replacing a rejected credential.
    Stale(Generation),
    /// The gateway reported the credential it uses now (IBKR tickle); `differs` from the current one.
    Observed {
        /// It is not the current credential.
        differs: bool,
    },
    /// Forget this generation (rejected for good) without fetching now.
    Discard(Generation),
    /// The proactive refresh timer fired.
    RefreshDue,
    /// Stop for good.
    Halt,
    /// Start again after a halt.
    Resume,
}

/// What the shell must do.
#[derive(Debug, PartialEq)]
pub enum TokenEffect {
    /// Call the credential source.
    Fetch,
    /// Keep the secret just received (or observed) as this generation.
    Install(Held),
    /// Answer the request now with this generation.
    Give(Held),
    /// Park the request until [`TokenEffect::Answer`].
    Wait,
    /// Answer every parked request.
    Answer(Result<Held, Failure>),
    /// Fire [`TokenEvent::RefreshDue`] after this delay (replacing any armed one).
    ArmRefresh(Duration),
    /// Disarm the refresh timer.
    CancelRefresh,
    /// Tell GatewaySession the session is gone.
    SessionLost(Failure),
    /// Tell StreamConnection that a socket opened with an older generation must be rebuilt.
    Changed(Generation),
}

/// The credential machine.
#[derive(Debug)]
pub struct TokenMachine {
    state: TokenState,
    current: Option<Held>,
    last: Generation,
    replacing_rejected: bool,
    rng: StdRng,
}

impl TokenMachine {
    /// A machine whose next generation follows `last` (kept across a rebuilt actor).
    pub fn new(last: Generation, seed: u64) -> Self {
        Self {
            state: TokenState::Idle,
            current: None,
            last,
            replacing_rejected: false,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Where the machine is.
    pub fn state(&self) -> TokenState {
        self.state
    }

    /// The current generation, if any.
    pub fn current(&self) -> Option<Held> {
        self.current
    }

    /// The last generation issued.
    pub fn last_generation(&self) -> Generation {
        self.last
    }

    /// Feeds one event; returns what to do.
    pub fn on(&mut self, event: TokenEvent, now: Now) -> Vec<TokenEffect> {
        let mut fx = Vec::new();
        match event {
            TokenEvent::Get => match self.usable(now) {
                Some(held) => fx.push(TokenEffect::Give(held)),
                None if self.state == TokenState::Halted => {
                    fx.push(TokenEffect::Answer(Err(super::halted())));
                }
                None => {
                    fx.push(TokenEffect::Wait);
                    self.fetch(&mut fx);
                }
            },
            TokenEvent::Issued { expires_in, age } => {
                if self.state == TokenState::Fetching {
                    self.state = TokenState::Idle;
                }
                let held = self.install(now, expires_in, age, &mut fx);
                fx.push(TokenEffect::Answer(Ok(held)));
                self.schedule_refresh(now, &mut fx);
            }
            TokenEvent::FetchFailed(failure, class) => {
                if self.state == TokenState::Fetching {
                    self.state = TokenState::Idle;
                }
                if class == Class::Session {
                    fx.push(TokenEffect::SessionLost(failure.clone()));
                }
                fx.push(TokenEffect::Answer(Err(failure)));
            }
            TokenEvent::Rejected(generation) => {
                if self.current.is_some_and(|c| c.generation == generation) {
                    self.current = None;
                    self.replacing_rejected = true;
                    self.fetch(&mut fx);
                }
            }
            TokenEvent::Stale(generation) => {
                if self.current.is_some_and(|c| c.generation == generation) {
                    self.current = None;
                    self.fetch(&mut fx);
                }
            }
            TokenEvent::Observed { differs } => {
                if differs && self.state != TokenState::Fetching {
                    let had = self.current.is_some();
                    let held = self.install(now, None, Duration::ZERO, &mut fx);
                    if had {
                        fx.push(TokenEffect::Changed(held.generation));
                    }
                }
            }
            TokenEvent::Discard(generation) => {
                if self.current.is_some_and(|c| c.generation == generation) {
                    self.current = None;
                    self.replacing_rejected = true;
                }
            }
            TokenEvent::RefreshDue => self.fetch(&mut fx),
            TokenEvent::Halt => {
                self.state = TokenState::Halted;
                fx.push(TokenEffect::CancelRefresh);
            }
            TokenEvent::Resume => {
                if self.state == TokenState::Halted {
                    self.state = TokenState::Idle;
                }
            }
        }
        fx
    }

    /// The current credentials unless they expire within the skew: a credential about to expire
    /// is refreshed *before* a dial, never discovered by a failure after it.
    fn usable(&self, now: Now) -> Option<Held> {
        let c = self.current?;
        match (c.expires_at, c.lifetime) {
            (Some(exp), Some(lifetime)) if now.saturating_add(skew(lifetime)) >= exp => None,
            _ => Some(c),
        }
    }

    fn fetch(&mut self, fx: &mut Vec<TokenEffect>) {
        if self.state == TokenState::Idle {
            self.state = TokenState::Fetching;
            fx.push(TokenEffect::Fetch);
        }
    }

    fn install(
        &mut self,
        now: Now,
        expires_in: Option<Duration>,
        age: Duration,
        fx: &mut Vec<TokenEffect>,
    ) -> Held {
        self.last = self.last.next();
        let expires_in = believable(expires_in);
        let held = Held {
            generation: self.last,
            issued_at: now.saturating_sub(age),
            expires_at: expires_in.and_then(|d| now.checked_add(d)),
            lifetime: expires_in.map(|d| d.saturating_add(age)),
            replaced_rejected: self.replacing_rejected,
        };
        self.replacing_rejected = false;
        self.current = Some(held);
        fx.push(TokenEffect::Install(held));
        held
    }

    fn schedule_refresh(&mut self, now: Now, fx: &mut Vec<TokenEffect>) {
        fx.push(TokenEffect::CancelRefresh);
        let Some(exp) = self.current.and_then(|c| c.expires_at) else {
            return;
        };
        let lifetime = exp.saturating_sub(now);
        let skew = skew(lifetime);
        let spread = (skew.as_millis().min(5_000) as u64) / 2 + 1;
        let jitter = Duration::from_millis(self.rng.gen_range(0..=spread));
        let at = lifetime.saturating_sub(skew + jitter).max(REFRESH_FLOOR);
        fx.push(TokenEffect::ArmRefresh(at));
    }
}
