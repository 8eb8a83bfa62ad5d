//! One simulated stream: the four machines, thin shells that perform their effects against the
//! model gateway, a virtual clock and one seeded generator for latencies and interleavings.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::gateway::{Gateway, Upgrade};
use super::monitor::{Monitor, Request};
use super::schedule::{Schedule, SimDialect, UserAction};
use crate::config::CompetingPolicy;
use crate::dialect::{Confirmation, SubscriptionWire};
use crate::failure::{Class, Failure};
use crate::ids::{Epoch, Generation};
use crate::machine::connection::{ConnEffect, ConnEvent, ConnMachine, ConnState, Presented};
use crate::machine::intensity::{Cause, Intensity};
use crate::machine::session::{Repair, SessionEffect, SessionEvent, SessionMachine};
use crate::machine::subscriptions::{SubsEffect, SubsEvent, SubsMachine};
use crate::machine::token::{Held, TokenEffect, TokenEvent, TokenMachine};
use crate::status::ActorKind;
use crate::subscription::SubscriptionState;

/// How often the model gateway sends a message on every topic subscribed on its socket.
const PUMP: Duration = Duration::from_millis(250);

/// How often Subscriptions checks confirmations (the actor's tick).
const SUBS_TICK: Duration = Duration::from_secs(1);

/// How long after anything happens (a fault, a user action, a socket up or down) the gateway
/// keeps pumping data and Subscriptions keeps ticking: past every confirmation timeout. After
/// that the run is quiet, and simulating a quiet stream would only cost time.
const BUSY: Duration = Duration::from_secs(35);

/// The receivers of messages (each a FIFO mailbox).
#[derive(Clone, Copy, Debug)]
enum To {
    Token = 0,
    Session = 1,
    Conn = 2,
    Supervisor = 3,
    Subs = 4,
}

/// A step of a dial in flight.
#[derive(Debug)]
enum DialStep {
    Session(Result<(), Failure>),
    Credentials(Result<Held, Failure>),
    Prepared(Result<Option<u64>, Failure>),
    Upgraded(Result<Duration, Failure>),
}

#[derive(Debug)]
enum Ev {
    FaultOn(usize),
    FaultOff(usize),
    Token(TokenEvent),
    Session(SessionEvent),
    Conn(ConnEvent),
    Hard(Failure),
    RefreshTimer(u64),
    SessionTimer(u64, bool),
    ConnTimer(u64),
    Watchdog(u64),
    Dial(u64, DialStep),
    Socket(Epoch, Result<(), Failure>),
    AuthTimeout(Epoch),
    AwaitSession(u64),
    Resume,
    Probe,
    /// The user's action number `n` of the schedule.
    User(usize),
    Subs(SubsEvent),
    SubsTick,
    /// A frame reaches the model gateway on socket `epoch`.
    GwFrame(Epoch, String),
    /// The model gateway sends data on every subscribed topic.
    Pump,
}

/// The dial in flight.
#[derive(Debug)]
struct Dial {
    id: u64,
    presented: Option<Presented>,
    ticket: Option<u64>,
}

/// What a run ended with.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The first violation, if any.
    pub violation: Option<String>,
    /// The trace (only when asked for).
    pub trace: Vec<String>,
    /// Events processed.
    pub steps: u64,
    /// Messages that reached Subscriptions for a topic after its unsubscribe returned (the
    /// race the no-data-after-unsubscribe invariant is about).
    pub raced_unsubscribe: u64,
}

/// One simulated stream.
pub struct World<'s> {
    s: &'s Schedule,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    slots: Vec<Option<Ev>>,
    free: Vec<usize>,
    mailbox: [Duration; 5],
    rng: StdRng,
    /// Latencies of Subscriptions' traffic, apart from `rng` so that the other actors'
    /// interleavings stay what they were before subscriptions were modelled.
    subs_rng: StdRng,
    token: TokenMachine,
    session: SessionMachine,
    conn: ConnMachine,
    intensity: Intensity,
    subs: SubsMachine,
    gateway: Gateway,
    /// Topics the user desires: subscribe returned, unsubscribe not (yet).
    wanted: BTreeSet<Arc<str>>,
    /// When the user last subscribed or unsubscribed.
    last_user_action: Duration,
    /// The topics subscribed at the gateway on its socket `gw_epoch`.
    gw_topics: BTreeSet<Arc<str>>,
    gw_epoch: Epoch,
    /// A socket the gateway went silent on.
    silent: Option<Epoch>,
    /// When the last frame written to the socket reaches the gateway: frames on one socket
    /// arrive in the order they were written.
    frames_lane: Duration,
    /// Since when the stream is Ready.
    ready_since: Option<Duration>,
    /// How long a desired subscription may take to be Active once the stream is Ready.
    subs_bound: Duration,
    /// Until when the data pump and Subscriptions' tick run.
    busy_until: Duration,
    /// Whether a pump is scheduled.
    pump_armed: bool,
    /// Whether a tick is scheduled.
    tick_armed: bool,
    monitor: Monitor,
    refresh_timer: u64,
    session_instance: u64,
    conn_instance: u64,
    dial: Option<Dial>,
    dial_seq: u64,
    session_waiters: Vec<u64>,
    token_waiters: Vec<u64>,
    epoch: Epoch,
    hard: Option<Failure>,
    faults_on: u32,
    tracing: bool,
    outcome: Outcome,
}

impl<'s> World<'s> {
    /// A world for `schedule`; `tracing` records every event.
    pub fn new(s: &'s Schedule, tracing: bool) -> Self {
        let competing = s.competing;
        Self {
            s,
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::with_capacity(64),
            slots: Vec::with_capacity(64),
            free: Vec::new(),
            mailbox: [Duration::ZERO; 5],
            rng: StdRng::seed_from_u64(s.seed ^ 0x5eed),
            subs_rng: StdRng::seed_from_u64(s.seed ^ 0x5ab5),
            token: TokenMachine::new(Generation::NONE, s.seed.wrapping_add(1)),
            session: SessionMachine::new(
                s.backoff.clone(),
                competing,
                s.login_poll,
                s.seed.wrapping_add(2),
            ),
            conn: ConnMachine::new(s.backoff.clone(), competing, s.seed.wrapping_add(3)),
            intensity: Intensity::new(s.intensity),
            subs: SubsMachine::default(),
            gateway: Gateway::new(s.dialect, s.token_lifetime),
            wanted: BTreeSet::new(),
            last_user_action: Duration::ZERO,
            gw_topics: BTreeSet::new(),
            gw_epoch: Epoch::NONE,
            silent: None,
            frames_lane: Duration::ZERO,
            ready_since: None,
            subs_bound: PUMP * 2 + SUBS_TICK + s.max_latency * 8,
            busy_until: Duration::ZERO,
            pump_armed: false,
            tick_armed: false,
            monitor: Monitor::new(s),
            refresh_timer: 0,
            session_instance: 0,
            conn_instance: 0,
            dial: None,
            dial_seq: 0,
            session_waiters: Vec::new(),
            token_waiters: Vec::new(),
            epoch: Epoch::NONE,
            hard: None,
            faults_on: 0,
            tracing,
            outcome: Outcome::default(),
        }
    }

    /// Runs the schedule to its end (or the first violation).
    pub fn run(mut self) -> Outcome {
        for (i, f) in self.s.faults.iter().enumerate() {
            self.at(f.at, Ev::FaultOn(i));
            if f.kind.lasts() {
                self.at(f.at + f.lasts, Ev::FaultOff(i));
            }
        }
        let end = self.s.end_of_faults() + self.monitor.ready_bound + Duration::from_secs(1);
        self.at(Duration::from_secs(1), Ev::Probe);
        for (i, (at, _)) in self.s.actions.iter().enumerate() {
            self.at(*at, Ev::User(i));
        }

        self.at(Duration::ZERO, Ev::Session(SessionEvent::Started));
        self.at(Duration::ZERO, Ev::Conn(ConnEvent::Started));
        while let Some(Reverse((t, _, slot))) = self.queue.pop() {
            if t > end || self.outcome.violation.is_some() {
                break;
            }
            let Some(ev) = self.slots[slot].take() else {
                continue;
            };
            self.free.push(slot);
            self.now = t;
            self.outcome.steps += 1;
            if self.tracing {
                self.outcome
                    .trace
                    .push(format!("{:>9.3}s {ev:?}", t.as_secs_f64()));
            }
            self.step(ev);
            self.check();
        }
        if self.outcome.violation.is_none()
            && self.hard.is_none()
            && self.conn.ready_epoch().is_none()
        {
            self.violate(format!(
                "not Ready {} ms after the last fault ended",
                self.monitor.ready_bound.as_millis()
            ));
        }
        self.outcome
    }

    fn at(&mut self, t: Duration, ev: Ev) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(ev);
                i
            }
            None => {
                self.slots.push(Some(ev));
                self.slots.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, slot)));
    }

    fn after(&mut self, d: Duration, ev: Ev) {
        self.at(self.now.saturating_add(d), ev);
    }

    /// A message to a mailbox: a random latency, but never overtaking an earlier message to it.
    fn send(&mut self, to: To, ev: Ev) {
        let quarter = (self.s.max_latency / 4).as_micros() as u64;
        let latency = Duration::from_micros(self.rng.gen_range(0..=quarter));
        self.post(to, latency, ev);
    }

    /// Puts `ev` in mailbox `to` after `latency`, never overtaking an earlier message to it.
    fn post(&mut self, to: To, latency: Duration, ev: Ev) {
        let t = (self.now + latency).max(self.mailbox[to as usize]);
        self.mailbox[to as usize] = t;
        self.at(t, ev);
    }

    /// A network round trip.
    fn latency(&mut self) -> Duration {
        let max = self.s.max_latency.as_micros() as u64;
        Duration::from_micros(self.rng.gen_range(1..=max.max(1)))
    }

    fn violate(&mut self, what: String) {
        if self.outcome.violation.is_none() {
            self.outcome.violation = Some(what);
        }
    }

    fn request(&mut self, kind: Request) {
        if let Some(v) = self.monitor.request(kind, self.now) {
            self.violate(v);
        }
    }

    fn check(&mut self) {
        let now = self.now;
        if self.monitor.quiet_from.is_some_and(|t| now > t) {
            if let Some(e) = self.gateway.open {
                self.violate(format!(
                    "socket {e} open at the gateway after the stream stopped on a hard failure"
                ));
            }
        }
        let ready = self.conn.ready_epoch().is_some();
        if self.hard.is_none() {
            if self.faults_on == 0
                && !self.gateway.faulty()
                && !ready
                && now > self.monitor.calm_since + self.monitor.ready_bound
            {
                self.violate(format!(
                    "not Ready {} ms after the last fault ended",
                    self.monitor.ready_bound.as_millis()
                ));
            }
            self.check_subscriptions();
            if let Some(since) = self.monitor.hard_alone_since {
                if now > since + self.monitor.hard_bound {
                    self.violate(format!(
                        "a hard condition went unrecognised for {} ms: the stream neither stopped nor said why",
                        now.saturating_sub(since).as_millis()
                    ));
                }
            }
        }
    }

    /// Once the stream has been Ready (and nothing in force) for `subs_bound`, every topic the
    /// user desires is Active.
    fn check_subscriptions(&mut self) {
        if self.faults_on > 0 || self.gateway.faulty() {
            return;
        }
        let (Some(epoch), Some(ready)) = (self.conn.ready_epoch(), self.ready_since) else {
            return;
        };
        let from = ready
            .max(self.monitor.calm_since)
            .max(self.last_user_action);
        if self.now <= from + self.subs_bound || self.silent == Some(epoch) {
            return;
        }
        let stuck = self
            .wanted
            .iter()
            .find_map(|key| match self.subs.state(key) {
                Some(SubscriptionState::Active) => None,
                other => Some(format!("{key} is {other:?}")),
            });
        if let Some(stuck) = stuck {
            self.violate(format!(
                "a desired subscription is not active {} ms after the stream became Ready: {stuck}",
                self.now.saturating_sub(from).as_millis()
            ));
        }
    }

    /// Something happened: the pump and the tick run for [`BUSY`] more.
    fn busy(&mut self) {
        self.busy_until = self.now + BUSY;
        if !self.pump_armed {
            self.pump_armed = true;
            self.after(PUMP, Ev::Pump);
        }
        if !self.tick_armed {
            self.tick_armed = true;
            self.after(SUBS_TICK, Ev::SubsTick);
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::FaultOn(i) => self.fault(i, true),
            Ev::FaultOff(i) => self.fault(i, false),
            Ev::Probe => {
                self.after(Duration::from_secs(1), Ev::Probe);
            }
            Ev::Token(e) => self.token(e),
            Ev::Session(e) => self.session(e),
            Ev::Conn(e) => self.conn(e),
            Ev::Hard(f) => self.stop_hard(f),
            Ev::RefreshTimer(id) => {
                if id == self.refresh_timer {
                    self.token(TokenEvent::RefreshDue);
                }
            }
            Ev::SessionTimer(instance, keepalive) => {
                if instance != self.session_instance {
                    return;
                }
                if keepalive {
                    if self.session.keepalive_due() {
                        let res = self.gateway.keepalive();
                        let k = self.s.keepalive;
                        self.after(k, Ev::SessionTimer(instance, true));
                        if let Err(f) = res {
                            let l = self.latency();
                            self.after(l, Ev::Session(SessionEvent::KeepaliveFailed(f)));
                        }
                    }
                } else {
                    self.session(SessionEvent::RetryDue);
                }
            }
            Ev::ConnTimer(instance) => {
                if instance == self.conn_instance {
                    self.conn(ConnEvent::BackoffElapsed);
                }
            }
            Ev::Watchdog(instance) => {
                if instance == self.conn_instance {
                    self.conn(ConnEvent::Watchdog);
                    if self.conn.ready_epoch().is_some() {
                        let d = self.s.backoff.reset_after / 4 + Duration::from_millis(10);
                        self.after(d, Ev::Watchdog(instance));
                    }
                }
            }
            Ev::Dial(id, step) => self.dial_step(id, step),
            Ev::Socket(epoch, res) => {
                if self.conn.open_epoch() == Some(epoch) {
                    match res {
                        Ok(()) => self.conn(ConnEvent::Authenticated),
                        Err(f) => {
                            if let (Failure::Rejected { .. }, Some(g)) =
                                (&f, self.socket_generation())
                            {
                                self.gateway.rejected.insert(g);
                            }
                            self.conn(ConnEvent::SocketFailed(f))
                        }
                    }
                }
            }
            Ev::AwaitSession(id) => match self.session.await_session() {
                Some(res) => self.dial_continue(id, DialStep::Session(res)),
                None => self.session_waiters.push(id),
            },
            Ev::AuthTimeout(epoch) => {
                if matches!(self.conn.state(), ConnState::Opening { epoch: e, .. } if e == epoch) {
                    self.conn(ConnEvent::SocketFailed(Failure::AuthTimeout));
                }
            }
            Ev::User(i) => self.user(i),
            Ev::Subs(e) => self.subs(e),
            Ev::SubsTick => {
                if self.now <= self.busy_until {
                    self.after(SUBS_TICK, Ev::SubsTick);
                    self.subs(SubsEvent::Tick);
                } else {
                    self.tick_armed = false;
                }
            }
            Ev::GwFrame(epoch, frame) => self.gateway_frame(epoch, &frame),
            Ev::Pump => {
                if self.now <= self.busy_until {
                    self.after(PUMP, Ev::Pump);
                    self.pump();
                } else {
                    self.pump_armed = false;
                }
            }
            Ev::Resume => {
                self.gateway.heal_hard();
                self.hard = None;
                self.monitor.quiet_from = None;
                self.monitor.calm_since = self.now;
                self.intensity.clear();
                self.send(To::Token, Ev::Token(TokenEvent::Resume));
                self.send(To::Session, Ev::Session(SessionEvent::Resume));
                self.send(To::Conn, Ev::Conn(ConnEvent::Resume));
                self.send_subs(Ev::Subs(SubsEvent::Resume));
            }
        }
    }

    fn fault(&mut self, i: usize, on: bool) {
        self.busy();
        let f = self.s.faults[i];
        self.monitor.fault(f.kind, self.now);
        let last = self.token.last_generation();
        self.gateway.apply(f.kind, on, last);
        use super::schedule::FaultKind as K;
        if f.kind.lasts() {
            self.faults_on = if on {
                self.faults_on + 1
            } else {
                self.faults_on.saturating_sub(1)
            };
        }
        if on {
            if let Some(epoch) = self.gateway.open {
                let l = self.latency();
                match f.kind {
                    K::Drop | K::Down => {
                        self.gateway.open = None;
                        self.after(l, Ev::Socket(epoch, Err(Failure::Dropped)));
                    }
                    K::CloseServerError | K::PolicyClose => {
                        self.gateway.open = None;
                        let code = if f.kind == K::PolicyClose { 1008 } else { 1011 };
                        let failure = crate::failure::close_failure(Some(code), "chaos");
                        self.after(l, Ev::Socket(epoch, Err(failure)));
                    }
                    K::Silence => {
                        self.silent = Some(epoch);
                        let silent_for = self.s.heartbeat_timeout;
                        let d = silent_for + silent_for / 4;
                        self.after(
                            d,
                            Ev::Socket(epoch, Err(Failure::HeartbeatSilence { silent_for })),
                        );
                    }
                    K::SessionLost | K::HalfDead if self.s.dialect == SimDialect::Ibkr => {
                        let failure = Failure::SessionLost {
                            detail: "sts authenticated:false".into(),
                        };
                        self.after(l, Ev::Socket(epoch, Err(failure)));
                    }
                    K::Competing if self.s.dialect == SimDialect::Ibkr => {
                        self.after(l, Ev::Socket(epoch, Err(Failure::Competing)));
                    }
                    K::RefuseAccount => {
                        let failure = Failure::ServerClose {
                            allow_reconnect: true,
                            error: "Unauthorized".into(),
                        };
                        let failure = if self.s.dialect == SimDialect::SignalR {
                            Failure::Rejected {
                                status: 401,
                                after_refresh: false,
                            }
                        } else {
                            failure
                        };
                        self.gateway.open = None;
                        self.after(l, Ev::Socket(epoch, Err(failure)));
                    }
                    _ => {}
                }
            }
        }
        let yield_ = self.s.competing == CompetingPolicy::Yield;
        let hard_now = self.gateway.hard_now(yield_);
        let others = self.gateway.faulty_besides_hard(yield_);
        self.monitor.hard_alone_since = match (hard_now && !others, self.monitor.hard_alone_since) {
            (true, Some(t)) => Some(t),
            (true, None) => Some(self.now),
            (false, _) => None,
        };
        self.monitor.calm_since = self.now;
    }

    // ------------------------------------------------------------ the supervisor's part

    fn report(&mut self, failure: Failure) {
        if failure.class(self.s.competing) == Class::Hard {
            self.send(To::Supervisor, Ev::Hard(failure));
        }
    }

    fn restarted(&mut self, actor: ActorKind) {
        if let Some(f) = self.intensity.restarted(actor, Cause::Planned, self.now) {
            self.send(To::Supervisor, Ev::Hard(f));
        }
    }

    fn stop_hard(&mut self, failure: Failure) {
        if self.hard.is_some() {
            return;
        }
        if let Some(v) = self.monitor.stopped(&failure, self.now) {
            self.violate(v);
        }
        self.hard = Some(failure);
        self.send(To::Token, Ev::Token(TokenEvent::Halt));
        self.send(To::Session, Ev::Session(SessionEvent::Halt));
        self.send(To::Conn, Ev::Conn(ConnEvent::Halt));
        self.send_subs(Ev::Subs(SubsEvent::Halt));
        let delivered = self.mailbox.iter().copied().max().unwrap_or(self.now);
        self.monitor.quiet_from = Some(delivered);
        // The harness looks for further requests for a while, then heals and resumes.
        self.after(Duration::from_secs(3), Ev::Resume);
    }

    // ------------------------------------------------------------ TokenManager's shell

    fn token(&mut self, event: TokenEvent) {
        for effect in self.token.on(event, self.now) {
            match effect {
                TokenEffect::Fetch => {
                    self.request(Request::Token);
                    let res = self.gateway.issue();
                    let l = self.latency();
                    let ev = match res {
                        Ok(expires_in) => TokenEvent::Issued {
                            expires_in,
                            age: Duration::ZERO,
                        },
                        Err(f) => {
                            let class = f.class(self.s.competing);
                            TokenEvent::FetchFailed(f, class)
                        }
                    };
                    self.after(l, Ev::Token(ev));
                }
                TokenEffect::Install(_) | TokenEffect::Wait => {}
                TokenEffect::Give(held) => {
                    if let Some(id) = self.token_waiters.pop() {
                        self.dial_continue(id, DialStep::Credentials(Ok(held)));
                    }
                }
                TokenEffect::Answer(res) => {
                    for id in std::mem::take(&mut self.token_waiters) {
                        self.dial_continue(id, DialStep::Credentials(res.clone()));
                    }
                }
                TokenEffect::ArmRefresh(d) => {
                    self.refresh_timer += 1;
                    let id = self.refresh_timer;
                    self.after(d, Ev::RefreshTimer(id));
                }
                TokenEffect::CancelRefresh => self.refresh_timer += 1,
                TokenEffect::SessionLost(f) => {
                    self.send(To::Session, Ev::Session(SessionEvent::Lost(f)));
                }
                TokenEffect::Changed(g) => {
                    self.send(To::Conn, Ev::Conn(ConnEvent::CredentialsChanged(g)));
                }
            }
        }
    }

    // ------------------------------------------------------------ GatewaySession's shell

    fn session(&mut self, event: SessionEvent) {
        for effect in self.session.on(event, self.now) {
            match effect {
                SessionEffect::Establish(repair) => self.establish(repair),
                SessionEffect::ArmRetry(d) => {
                    let i = self.session_instance;
                    self.after(d, Ev::SessionTimer(i, false));
                }
                SessionEffect::StartKeepalive => {
                    if self.s.dialect == SimDialect::Ibkr {
                        let (i, k) = (self.session_instance, self.s.keepalive);
                        self.after(k, Ev::SessionTimer(i, true));
                    }
                }
                SessionEffect::Answer(res) => {
                    for id in std::mem::take(&mut self.session_waiters) {
                        self.dial_continue(id, DialStep::Session(res.clone()));
                    }
                }
                SessionEffect::Phase(_) => {}
                SessionEffect::Report(f) => self.report(f),
                SessionEffect::SessionDown => {
                    self.send(To::Conn, Ev::Conn(ConnEvent::SessionDown));
                }
                SessionEffect::Restart => {
                    self.session_instance += 1;
                    if self.session.state() != &crate::machine::session::SessionState::Halted {
                        self.restarted(ActorKind::GatewaySession);
                    }
                    self.session(SessionEvent::Started);
                }
            }
        }
    }

    fn establish(&mut self, repair: Repair) {
        let res = if self.s.dialect == SimDialect::Ibkr {
            self.request(Request::Session);
            self.gateway
                .establish(repair, self.s.competing == CompetingPolicy::Yield)
        } else {
            Ok(())
        };
        let l = self.latency();
        self.after(l, Ev::Session(SessionEvent::Established(res)));
    }

    // ------------------------------------------------------------ StreamConnection's shell

    fn conn(&mut self, event: ConnEvent) {
        for effect in self.conn.on(event, self.now) {
            match effect {
                ConnEffect::Dial => {
                    self.dial_seq += 1;
                    let id = self.dial_seq;
                    self.dial = Some(Dial {
                        id,
                        presented: None,
                        ticket: None,
                    });
                    self.send(To::Session, Ev::AwaitSession(id));
                }
                ConnEffect::ArmBackoff(d) => {
                    let i = self.conn_instance;
                    self.after(d, Ev::ConnTimer(i));
                }
                ConnEffect::Close(epoch) => {
                    if self.gateway.open == Some(epoch) {
                        self.gateway.open = None;
                    }
                    self.ready_since = None;
                    self.send_subs(Ev::Subs(SubsEvent::Down(epoch)));
                }
                ConnEffect::Up(epoch) => {
                    self.ready_since = Some(self.now);
                    self.send_subs(Ev::Subs(SubsEvent::Up(epoch)));
                    let i = self.conn_instance;
                    let d = self.s.backoff.reset_after / 4 + Duration::from_millis(10);
                    self.after(d, Ev::Watchdog(i));
                }
                ConnEffect::Reject(g) => {
                    self.send(To::Token, Ev::Token(TokenEvent::Rejected(g)));
                }
                ConnEffect::Stale(g) => {
                    self.send(To::Token, Ev::Token(TokenEvent::Stale(g)));
                }
                ConnEffect::Discard(g) => {
                    self.send(To::Token, Ev::Token(TokenEvent::Discard(g)));
                }
                ConnEffect::CancelDial => self.dial = None,
                ConnEffect::SessionLost(f) => {
                    self.send(To::Session, Ev::Session(SessionEvent::Lost(f)));
                }
                ConnEffect::Phase(_) => {}
                ConnEffect::Report(f) => self.report(f),
                ConnEffect::Healthy => {
                    self.monitor.healthy(self.now);
                    self.send(To::Session, Ev::Session(SessionEvent::Healthy));
                }
                ConnEffect::Restart => {
                    // Stopping the actor cancels its timers, its streams and the dial in flight.
                    self.conn_instance += 1;
                    self.dial = None;
                    self.gateway.open = None;
                    self.restarted(ActorKind::StreamConnection);
                    self.conn(ConnEvent::Started);
                }
            }
        }
    }

    fn dial_continue(&mut self, id: u64, step: DialStep) {
        let l = self.latency() / 4;
        self.after(l, Ev::Dial(id, step));
    }

    fn dial_step(&mut self, id: u64, step: DialStep) {
        if self.dial.as_ref().map(|d| d.id) != Some(id) {
            return;
        }
        let fail = |w: &mut Self, failure: Failure| {
            let presented = w.dial.take().and_then(|d| d.presented);
            if let (Failure::Rejected { .. }, Some(p)) = (&failure, presented) {
                w.gateway.rejected.insert(p.generation);
            }
            w.conn(ConnEvent::DialFailed { failure, presented });
        };
        match step {
            DialStep::Session(Err(f)) | DialStep::Credentials(Err(f)) => fail(self, f),
            DialStep::Session(Ok(())) => {
                self.token_waiters.push(id);
                self.send(To::Token, Ev::Token(TokenEvent::Get));
            }
            DialStep::Credentials(Ok(held)) => {
                let presented = Presented {
                    generation: held.generation,
                    replaced_rejected: held.replaced_rejected,
                    issued_at: held.issued_at,
                };
                if let Some(d) = self.dial.as_mut() {
                    d.presented = Some(presented);
                }
                self.present(held.generation);
                let res = if self.s.dialect == SimDialect::Ibkr {
                    Ok(None)
                } else {
                    self.request(Request::Prepare);
                    self.gateway.prepare(held.generation)
                };
                let l = self.latency();
                self.after(l, Ev::Dial(id, DialStep::Prepared(res)));
            }
            DialStep::Prepared(Err(f)) | DialStep::Upgraded(Err(f)) => fail(self, f),
            DialStep::Prepared(Ok(ticket)) => {
                let generation = self
                    .dial
                    .as_ref()
                    .and_then(|d| d.presented)
                    .map_or(Generation::NONE, |p| p.generation);
                if let Some(d) = self.dial.as_mut() {
                    d.ticket = ticket;
                }
                self.present(generation);
                self.request(Request::Upgrade);
                let l = self.latency();
                match self.gateway.upgrade(generation, ticket) {
                    Err(v) => self.violate(v),
                    Ok(Upgrade::Refused(f)) => {
                        self.after(l, Ev::Dial(id, DialStep::Upgraded(Err(f))))
                    }
                    Ok(Upgrade::Open(hang)) => {
                        self.after(l + hang, Ev::Dial(id, DialStep::Upgraded(Ok(hang))))
                    }
                }
            }
            DialStep::Upgraded(Ok(_)) => {
                let Some(presented) = self.dial.as_ref().and_then(|d| d.presented) else {
                    return;
                };
                self.dial = None;
                self.epoch = self.epoch.next();
                let epoch = self.epoch;
                self.gateway.open = Some(epoch);
                self.conn(ConnEvent::Opened { epoch, presented });
                // The dialect's opening exchange, and the auth timeout that guards it.
                let res = match self.s.dialect {
                    SimDialect::Ticket => Ok(()),
                    _ => self.gateway.opening(),
                };
                let l = self.latency();
                self.after(l, Ev::Socket(epoch, res));
                let t = self.s.auth_timeout;
                self.after(t, Ev::AuthTimeout(epoch));
            }
        }
    }

    fn socket_generation(&self) -> Option<Generation> {
        match self.conn.state() {
            ConnState::Opening { presented, .. } | ConnState::Ready { presented, .. } => {
                Some(presented.generation)
            }
            _ => None,
        }
    }

    // ------------------------------------------------------------ Subscriptions' shell

    fn user(&mut self, i: usize) {
        let Some(&(_, action)) = self.s.actions.get(i) else {
            return;
        };
        self.last_user_action = self.now;
        self.busy();
        match action {
            UserAction::Subscribe(topic) => {
                let wire = sim_wire(self.s.dialect, topic);
                self.wanted.insert(wire.key.clone());
                self.subs(SubsEvent::Add(wire));
            }
            UserAction::Unsubscribe(topic) => {
                // The unsubscribe has returned once this event is processed.
                self.wanted.remove(topic);
                self.subs(SubsEvent::Remove(topic.into()));
            }
        }
    }

    fn subs(&mut self, event: SubsEvent) {
        match &event {
            SubsEvent::Up(_) | SubsEvent::Down(_) => self.busy(),
            SubsEvent::Data(_, key) if !self.wanted.contains(key) => {
                self.outcome.raced_unsubscribe += 1;
            }
            _ => {}
        }
        for effect in self.subs.on(event, self.now) {
            match effect {
                SubsEffect::Send(epoch, frame) => {
                    if self.monitor.quiet_from.is_some_and(|t| self.now > t) {
                        self.violate(format!(
                            "frame {frame:?} sent after the stream stopped on a hard failure"
                        ));
                    }
                    // StreamConnection writes it only on the socket it was decided for.
                    if self.conn.open_epoch() == Some(epoch) {
                        let l = self.subs_latency();
                        let t = (self.now + l).max(self.frames_lane);
                        self.frames_lane = t;
                        self.at(t, Ev::GwFrame(epoch, frame));
                    }
                }
                SubsEffect::State(..) => {}
                SubsEffect::Deliver(key) => {
                    if !self.wanted.contains(&key) {
                        self.violate(format!(
                            "data on {key} delivered after its unsubscribe returned"
                        ));
                    }
                }
            }
        }
    }

    fn subs_latency(&mut self) -> Duration {
        let max = self.s.max_latency.as_micros() as u64;
        Duration::from_micros(self.subs_rng.gen_range(1..=max.max(1)))
    }

    /// A message to Subscriptions, in order with StreamConnection's earlier ones.
    fn send_subs(&mut self, ev: Ev) {
        let l = self.subs_latency() / 4;
        self.post(To::Subs, l, ev);
    }

    /// The model gateway reads a frame: it (un)subscribes on that socket, acknowledging where
    /// the dialect does.
    fn gateway_frame(&mut self, epoch: Epoch, frame: &str) {
        if self.gateway.open != Some(epoch) {
            return;
        }
        if self.gw_epoch != epoch {
            self.gw_topics.clear();
            self.gw_epoch = epoch;
        }
        if let Some(topic) = frame.strip_prefix("sub:") {
            self.gw_topics.insert(topic.into());
            if let Confirmation::Ack(id) = sim_wire(self.s.dialect, topic).confirmation {
                self.send_subs(Ev::Subs(SubsEvent::Ack(epoch, id, None)));
            }
        } else if let Some(topic) = frame.strip_prefix("unsub:") {
            self.gw_topics.remove(topic);
        }
    }

    /// The model gateway sends one message on every topic subscribed on its open socket;
    /// StreamConnection passes data on only from the socket that is Ready.
    fn pump(&mut self) {
        let Some(epoch) = self.gateway.open else {
            return;
        };
        if self.gw_epoch != epoch
            || self.silent == Some(epoch)
            || self.conn.ready_epoch() != Some(epoch)
        {
            return;
        }
        let topics: Vec<Arc<str>> = self.gw_topics.iter().cloned().collect();
        for topic in topics {
            self.send_subs(Ev::Subs(SubsEvent::Data(epoch, topic)));
        }
    }

    /// Credentials are presented to the gateway: never a generation it already rejected.
    fn present(&mut self, generation: Generation) {
        if self.gateway.rejected.contains(&generation) {
            self.violate(format!(
                "credential generation {generation} presented after the gateway rejected it"
            ));
        }
    }
}

/// The wire form of `topic` in the model: confirmed the way the dialect confirms (IBKR by the
/// first message, SignalR by an acknowledgement, a ticket socket not at all).
fn sim_wire(dialect: SimDialect, topic: &str) -> SubscriptionWire {
    SubscriptionWire {
        key: topic.into(),
        subscribe: format!("sub:{topic}"),
        unsubscribe: Some(format!("unsub:{topic}")),
        resend_every: None,
        confirmation: match dialect {
            SimDialect::Ibkr => Confirmation::FirstMessage,
            SimDialect::SignalR => Confirmation::Ack(format!("id-{topic}")),
            SimDialect::Ticket => Confirmation::Immediate,
        },
    }
}
