//! The stream supervisor: starts the four actors of a stream, restarts only the one that failed,
//! rebuilds one that panicked (actix drops a panicked actor instead of restarting it), limits
//! restart intensity (more than N restarts in T escalate to a hard failure instead of looping),
//! turns reports into [`Status`] and metrics, and stops cleanly.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::actors::subscriptions::Book;
use crate::actors::{
    GatewaySession, Peers, StreamConnection, StreamCtx, Subscriptions, TokenManager,
};
use crate::config::StreamConfig;
use crate::dialect::DialectSend;
use crate::failure::{Class, Failure};
use crate::ids::{Epoch, Generation};
use crate::machine::intensity::{Cause, Intensity};
use crate::messages::{
    ConnPhase, Halt, InjectPanic, Logout, Report, Resume, Resync, SessionPhase, StreamDown,
    Subscribe, Unsubscribe,
};
use crate::metrics::{StreamCounter, StreamMetrics};
use crate::status::{
    ActorKind, LastFailure, Status, StreamState, StreamStatus, SubscriptionCounts,
};
use crate::transport::{ClientFactory, Fence};

/// How often the status's counters are refreshed, for every stream at once by
/// [`refresh_counters`]. (A dying actor reports it at once through its `Lifeline`: no stream
/// polls its children.)
pub const REFRESH: Duration = Duration::from_secs(1);

/// Copies the counters (messages received, events dropped, credential requests) of every
/// stream into the status every [`REFRESH`], in one update of the watch: one timer for the
/// whole supervisor and readers woken at most once per period, instead of a timer per stream
/// each publishing its own change. Runs until the system stops.
///
/// The status is walked in order next to the counters (sorted like it), never searched: at
/// 1 000 idle streams, whose heartbeats change every counter every second, a lookup by name per
/// stream (two, with the update) was a quarter of the process's CPU, most of it cache misses on
/// the names compared on the way down the map.
pub async fn refresh_counters(
    status_tx: Arc<watch::Sender<Arc<Status>>>,
    streams: Vec<(Arc<str>, StreamMetrics)>,
) {
    let mut counters: Vec<_> = streams
        .into_iter()
        .map(|(name, m)| {
            let counters = StreamCounters {
                received: m.messages_received(),
                dropped: m.events_dropped(),
                requests: m.credential_requests(),
            };
            (name, counters)
        })
        .collect();
    counters.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH, REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        status_tx.send_if_modified(|s| {
            let status = match Arc::get_mut(s) {
                Some(status) => status,
                None => {
                    // A reader holds this status: it is copied only for a change.
                    let mut stale = false;
                    in_order(s.streams.iter(), &counters, |st, c| {
                        stale |= c.now() != StreamCounters::of(st);
                    });
                    if !stale {
                        return false;
                    }
                    Arc::make_mut(s)
                }
            };
            // A changed entry is copied only if a reader holds it.
            let mut changed = false;
            in_order(status.streams.iter_mut(), &counters, |st, c| {
                let now = c.now();
                if now != StreamCounters::of(st) {
                    let st = Arc::make_mut(st);
                    (
                        st.messages_received,
                        st.events_dropped,
                        st.credential_requests,
                    ) = now;
                    changed = true;
                }
            });
            changed
        });
    }
}

/// The counters of one stream that its status shows.
struct StreamCounters {
    received: StreamCounter,
    dropped: StreamCounter,
    requests: StreamCounter,
}

impl StreamCounters {
    fn now(&self) -> (u64, u64, u64) {
        (self.received.get(), self.dropped.get(), self.requests.get())
    }

    fn of(st: &StreamStatus) -> (u64, u64, u64) {
        (
            st.messages_received,
            st.events_dropped,
            st.credential_requests,
        )
    }
}

/// Calls `f` with every status entry and its stream's counters, walking both in name order
/// (a stream not in the status yet is skipped). The status's keys are the supervisors' own
/// names, so a pointer comparison pairs them: no name is read.
fn in_order<'a, S: 'a, C>(
    statuses: impl Iterator<Item = (&'a Arc<str>, S)>,
    counters: &[(Arc<str>, C)],
    mut f: impl FnMut(S, &C),
) {
    let mut counters = counters.iter().peekable();
    for (name, st) in statuses {
        while counters
            .peek()
            .is_some_and(|(n, _)| !Arc::ptr_eq(n, name) && **n < **name)
        {
            counters.next();
        }
        if let Some((_, c)) = counters.next_if(|(n, _)| Arc::ptr_eq(n, name) || n == name) {
            f(st, c);
        }
    }
}

/// Stop the stream: unsubscribe, log out when configured, halt every actor.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Panic inside the named actor (chaos).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PanicIn(pub ActorKind);

/// The HA role of a stream (see [`crate::config::HaConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not exclusive (or no HA): always runs.
    Solo,
    /// Exclusive, and this replica does not hold the lease: halted, desired state kept.
    Standby,
    /// Exclusive, and this replica holds the lease: runs.
    Leader,
}

/// Become the leader or a standby (exclusive streams under HA; ignored by a `Solo` stream).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetRole(pub Role);

/// The supervisor of one stream.
pub struct StreamSupervisor {
    name: Arc<str>,
    config: Arc<StreamConfig>,
    dialect: Arc<dyn DialectSend>,
    clients: Option<ClientFactory>,
    metrics: StreamMetrics,
    status_tx: Arc<watch::Sender<Arc<Status>>>,
    ctx: Option<StreamCtx>,
    book: Book,
    status: StreamStatus,
    session: SessionPhase,
    conn: ConnPhase,
    hard: Option<Failure>,
    stopped: bool,
    intensity: Intensity,
    lost_ready_at: Option<Instant>,
    was_fully_ready: bool,
    /// When this supervisor was created (for `keepwire_time_to_first_ready_seconds`).
    created_at: Instant,
    /// The stream has been Ready at least once.
    ever_ready: bool,
    /// The gateway reported a competing session since the session was last established.
    competing: bool,
    /// The HA role.
    role: Role,
    /// The HA fence of an exclusive stream: a leader whose fence closed shows `standby`.
    fence: Option<Arc<Fence>>,
}

impl StreamSupervisor {
    /// The stream's name, as its status is keyed.
    pub fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    /// A supervisor for `config`, publishing into `status_tx`.
    pub fn new(
        config: StreamConfig,
        metrics: StreamMetrics,
        status_tx: Arc<watch::Sender<Arc<Status>>>,
    ) -> Self {
        let dialect = crate::config::build_dialect(&config);
        let intensity = Intensity::new(config.restart_intensity);
        let config = Arc::new(config);
        let (clients, hard) = match ClientFactory::new(&config) {
            Ok(c) => (Some(c), None),
            Err(f) => (None, Some(f)),
        };
        Self {
            name: config.name.as_str().into(),
            config,
            dialect,
            clients,
            metrics,
            status_tx,
            ctx: None,
            book: Book::default(),
            status: StreamStatus::default(),
            session: SessionPhase::Establishing,
            conn: ConnPhase::Waiting,
            hard,
            stopped: false,
            intensity,
            lost_ready_at: None,
            was_fully_ready: false,
            created_at: Instant::now(),
            ever_ready: false,
            competing: false,
            role: Role::Solo,
            fence: None,
        }
    }

    /// Makes this stream exclusive under HA: it starts as a standby, and every call it makes to
    /// the gateway passes through `fence` (closed unless this replica holds a fresh lease).
    pub fn exclusive(mut self, fence: Arc<Fence>) -> Self {
        self.clients = self.clients.map(|c| c.with_fence(fence.clone()));
        self.fence = Some(fence);
        self.role = Role::Standby;
        self
    }

    fn start_child(&self, kind: ActorKind) {
        let Some(ctx) = self.ctx.clone() else { return };
        let mut peers = ctx.peers.borrow_mut();
        match kind {
            ActorKind::TokenManager => {
                let c = ctx.clone();
                peers.token = Some(Supervisor::start(move |_| TokenManager::new(c)));
            }
            ActorKind::GatewaySession => {
                let c = ctx.clone();
                peers.gateway = Some(Supervisor::start(move |_| GatewaySession::new(c)));
            }
            ActorKind::StreamConnection => {
                let c = ctx.clone();
                let addr = Supervisor::start(move |_| StreamConnection::new(c));
                peers.frames = Some(addr.clone().recipient());
                peers.stream = Some(addr);
            }
            ActorKind::Subscriptions => {
                let (c, book) = (ctx.clone(), self.book.clone());
                peers.subscriptions = Some(Supervisor::start(move |_| Subscriptions::new(c, book)));
            }
        }
    }

    fn alive(&self, kind: ActorKind) -> bool {
        let Some(ctx) = &self.ctx else { return true };
        let p = ctx.peers.borrow();
        match kind {
            ActorKind::TokenManager => p.token.as_ref().is_some_and(|a| a.connected()),
            ActorKind::GatewaySession => p.gateway.as_ref().is_some_and(|a| a.connected()),
            ActorKind::StreamConnection => p.stream.as_ref().is_some_and(|a| a.connected()),
            ActorKind::Subscriptions => p.subscriptions.as_ref().is_some_and(|a| a.connected()),
        }
    }

    fn broadcast<M>(&self, msg: M)
    where
        M: Message<Result = ()> + Send + Clone + 'static,
        TokenManager: Handler<M>,
        GatewaySession: Handler<M>,
        StreamConnection: Handler<M>,
        Subscriptions: Handler<M>,
    {
        let Some(ctx) = &self.ctx else { return };
        let p = ctx.peers.borrow();
        if let Some(a) = &p.subscriptions {
            a.do_send(msg.clone());
        }
        if let Some(a) = &p.stream {
            a.do_send(msg.clone());
        }
        if let Some(a) = &p.gateway {
            a.do_send(msg.clone());
        }
        if let Some(a) = &p.token {
            a.do_send(msg);
        }
    }

    /// Rebuilds children that died (a panic drops an actix actor instead of restarting it), and
    /// refreshes the status's counters. Publishes only when one of them changed: a poll that
    /// changes nothing neither copies the status nor wakes its readers.
    fn check_liveness(&mut self, ctx: &mut Context<Self>) {
        let mut rebuilt = false;
        for kind in ActorKind::ALL {
            if self.alive(kind) {
                continue;
            }
            rebuilt = true;
            tracing::error!(stream = %self.name, actor = kind.as_str(), "actor died (panic); rebuilding it alone");
            self.start_child(kind);
            self.restarted(kind, Cause::Died, ctx);
            let Some(sctx) = &self.ctx else { continue };
            match kind {
                ActorKind::Subscriptions => {
                    if let Some(s) = sctx.stream() {
                        s.do_send(Resync);
                    }
                }
                ActorKind::StreamConnection => {
                    if let Some(s) = sctx.subscriptions() {
                        s.do_send(StreamDown {
                            epoch: sctx.epoch.get(),
                        });
                    }
                    self.conn = ConnPhase::Waiting;
                }
                _ => {}
            }
            if self.hard.is_some() || self.stopped || self.role == Role::Standby {
                self.broadcast(Halt);
            }
        }
        let m = &self.metrics;
        let counters_moved = m.messages_received().get() != self.status.messages_received
            || m.events_dropped().get() != self.status.events_dropped
            || m.credential_requests().get() != self.status.credential_requests;
        if rebuilt || counters_moved {
            self.publish();
        }
    }

    /// Counts a restart; only deaths count towards restart intensity (a planned restart answers
    /// a remote failure and is paced by backoff).
    fn restarted(&mut self, kind: ActorKind, cause: Cause, _ctx: &mut Context<Self>) {
        self.metrics.actor_restart(kind.as_str());
        *self.status.restarts.entry(kind).or_default() += 1;
        let now = Instant::now().saturating_duration_since(self.created_at);
        if let Some(failure) = self.intensity.restarted(kind, cause, now) {
            if self.hard.is_none() {
                self.fail_hard(kind, failure);
            }
        }
    }

    fn fail_hard(&mut self, actor: ActorKind, failure: Failure) {
        tracing::error!(stream = %self.name, actor = actor.as_str(), %failure, "hard failure: stopping this stream");
        self.metrics.hard_failure(failure.reason());
        self.status.hard_failures += 1;
        self.record_failure(actor, &failure, Class::Hard);
        self.hard = Some(failure);
        self.broadcast(Halt);
    }

    fn record_failure(&mut self, actor: ActorKind, failure: &Failure, class: Class) {
        self.status.last_failure = Some(LastFailure {
            actor,
            reason: failure.reason(),
            message: failure.to_string(),
            class: format!("{class:?}").to_lowercase(),
        });
    }

    fn state(&self) -> StreamState {
        if let Some(f) = &self.hard {
            return StreamState::Failed {
                reason: f.to_string(),
            };
        }
        if self.stopped {
            return StreamState::Stopped;
        }
        let fenced = self.fence.as_ref().is_some_and(|f| f.admits().is_none());
        if self.role == Role::Standby || fenced {
            return StreamState::Standby;
        }
        match (&self.conn, &self.session) {
            (ConnPhase::Ready, _) => StreamState::Ready,
            (_, SessionPhase::AwaitingLogin { remedy }) => StreamState::AwaitingLogin {
                remedy: remedy.clone(),
            },
            (_, SessionPhase::Establishing) => StreamState::Establishing,
            (_, SessionPhase::Backoff { delay }) | (ConnPhase::Backoff { delay }, _) => {
                StreamState::Backoff {
                    attempt: self.status.attempt.max(1),
                    delay_ms: delay.as_millis() as u64,
                }
            }
            (ConnPhase::Connecting | ConnPhase::Waiting, SessionPhase::Established) => {
                StreamState::Connecting
            }
        }
    }

    fn publish(&mut self) {
        let state = self.state();
        if state != self.status.state {
            tracing::debug!(stream = %self.name, from = self.status.state.as_str(), to = state.as_str(), "state");
            self.metrics.state(&state);
            if state == StreamState::Ready && !self.ever_ready {
                self.ever_ready = true;
                let took = Instant::now().saturating_duration_since(self.created_at);
                self.metrics.first_ready(took);
            }
        }
        self.metrics.connect_attempts(self.status.attempt);
        self.metrics.gateway_session(
            self.session == SessionPhase::Established && !self.stopped,
            self.competing,
        );
        self.status.state = state;
        self.status.messages_received = self.metrics.messages_received().get();
        self.status.events_dropped = self.metrics.events_dropped().get();
        self.status.credential_requests = self.metrics.credential_requests().get();
        let fully_ready = self.status.is_fully_ready();
        let now = Instant::now();
        if self.was_fully_ready && !fully_ready {
            self.lost_ready_at = Some(now);
        } else if !self.was_fully_ready && fully_ready {
            if let Some(lost) = self.lost_ready_at.take() {
                let took = now.saturating_duration_since(lost);
                self.status.recoveries += 1;
                self.status.last_recovery = Some(took);
                self.metrics.recovery(took.as_secs_f64());
                tracing::info!(stream = %self.name, recovery_ms = took.as_millis() as u64, "recovered: ready with every subscription active");
            }
        }
        self.was_fully_ready = fully_ready;
        // Readers are woken only by a real change, and only this stream's entry is copied.
        let (name, status) = (&self.name, &self.status);
        self.status_tx.send_if_modified(|s| {
            if s.stream(name) == Some(status) {
                return false;
            }
            // The other streams' entries are shared, not copied.
            Arc::make_mut(s)
                .streams
                .insert(name.clone(), Arc::new(status.clone()));
            true
        });
    }
}

impl Actor for StreamSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The one-hot state gauge holds the initial state from the first scrape (`publish`
        // records only changes).
        self.metrics.state(&self.status.state);
        let Some(clients) = self.clients.clone() else {
            if let Some(f) = self.hard.take() {
                self.fail_hard(ActorKind::GatewaySession, f);
            }
            self.publish();
            return;
        };
        self.ctx = Some(StreamCtx {
            name: self.name.clone(),
            config: self.config.clone(),
            dialect: self.dialect.clone(),
            clients,
            peers: Rc::new(RefCell::new(Peers::default())),
            report: ctx.address().recipient(),
            metrics: self.metrics.clone(),
            generation: Rc::new(Cell::new(Generation::NONE)),
            epoch: Rc::new(Cell::new(Epoch::NONE)),
            origin: self.created_at,
        });
        for kind in ActorKind::ALL {
            self.start_child(kind);
        }
        if self.role == Role::Standby {
            self.broadcast(Halt);
        }
        self.metrics.subscriptions(&SubscriptionCounts::default());
        self.publish();
    }
}

impl Handler<Report> for StreamSupervisor {
    type Result = ();

    fn handle(&mut self, report: Report, ctx: &mut Context<Self>) {
        match report {
            Report::Session(phase) => {
                if phase == SessionPhase::Established {
                    self.competing = false;
                }
                self.session = phase;
            }
            Report::Connection {
                phase,
                attempt,
                epoch,
            } => {
                self.status.attempt = attempt;
                self.status.epoch = epoch.get();
                self.conn = phase;
            }
            Report::Subscriptions(c) => self.status.subscriptions = c,
            Report::Failure { actor, failure } => {
                if matches!(failure, Failure::Competing) {
                    self.competing = true;
                }
                let class = failure.class(self.dialect.competing_policy());
                if class == Class::Hard {
                    if self.hard.is_none() && !self.stopped {
                        self.fail_hard(actor, failure);
                    }
                } else {
                    if actor == ActorKind::StreamConnection {
                        self.metrics.reconnect(failure.reason());
                        if self.conn == ConnPhase::Ready {
                            self.conn = ConnPhase::Waiting;
                        }
                    }
                    self.record_failure(actor, &failure, class);
                }
            }
            Report::Restarted(kind) => self.restarted(kind, Cause::Planned, ctx),
            Report::CredentialsRefreshed { generation } => {
                if let Some(g) = generation {
                    self.status.credential_generation = g.get();
                }
            }
            Report::EventsDropped(_) => {}
            Report::Died(_) => return self.check_liveness(ctx),
        }
        self.publish();
    }
}

impl Handler<Subscribe> for StreamSupervisor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) -> Self::Result {
        let subs = self.ctx.as_ref().and_then(|c| c.subscriptions());
        Box::pin(async move {
            match subs {
                Some(s) => s
                    .send(msg)
                    .await
                    .map_err(|e| format!("subscriptions actor unavailable: {e}"))?,
                None => Err("stream is not running (configuration error?)".into()),
            }
        })
    }
}

impl Handler<Unsubscribe> for StreamSupervisor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Context<Self>) -> Self::Result {
        let subs = self.ctx.as_ref().and_then(|c| c.subscriptions());
        Box::pin(async move {
            match subs {
                Some(s) => s.send(msg).await.unwrap_or(false),
                None => false,
            }
        })
    }
}

impl Handler<Resume> for StreamSupervisor {
    type Result = ();

    fn handle(&mut self, _: Resume, _ctx: &mut Context<Self>) {
        if self.hard.take().is_some() {
            tracing::info!(stream = %self.name, "resuming after a hard failure");
            self.intensity.clear();
            if self.role != Role::Standby {
                self.broadcast(Resume);
            }
            self.publish();
        }
    }
}

impl Handler<SetRole> for StreamSupervisor {
    type Result = ();

    fn handle(&mut self, SetRole(role): SetRole, _ctx: &mut Context<Self>) {
        if self.role == Role::Solo || role == Role::Solo || role == self.role {
            return;
        }
        self.role = role;
        match role {
            Role::Standby => {
                tracing::info!(stream = %self.name, "standby: halting (socket closed, no gateway call)");
                self.broadcast(Halt);
                self.session = SessionPhase::Establishing;
                self.conn = ConnPhase::Waiting;
                self.competing = false;
            }
            Role::Leader => {
                tracing::info!(stream = %self.name, "leader: starting");
                self.session = SessionPhase::Establishing;
                self.conn = ConnPhase::Waiting;
                if self.hard.is_none() && !self.stopped {
                    self.broadcast(Resume);
                }
            }
            Role::Solo => {}
        }
        self.publish();
    }
}

impl Handler<PanicIn> for StreamSupervisor {
    type Result = ();

    fn handle(&mut self, msg: PanicIn, _ctx: &mut Context<Self>) {
        let Some(ctx) = &self.ctx else { return };
        let p = ctx.peers.borrow();
        match msg.0 {
            ActorKind::TokenManager => p.token.as_ref().map(|a| a.do_send(InjectPanic)),
            ActorKind::GatewaySession => p.gateway.as_ref().map(|a| a.do_send(InjectPanic)),
            ActorKind::StreamConnection => p.stream.as_ref().map(|a| a.do_send(InjectPanic)),
            ActorKind::Subscriptions => p.subscriptions.as_ref().map(|a| a.do_send(InjectPanic)),
        };
    }
}

impl Handler<Shutdown> for StreamSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        let subs = self.ctx.as_ref().and_then(|c| c.subscriptions());
        let gateway = self.ctx.as_ref().and_then(|c| c.gateway());
        let keys: Vec<_> = self
            .book
            .borrow()
            .bindings
            .values()
            .map(|b| b.subscription.clone())
            .collect();
        Box::pin(
            async move {
                if let Some(s) = subs {
                    for subscription in keys {
                        let _ = s.send(Unsubscribe { subscription }).await;
                    }
                }
                if let Some(g) = gateway {
                    let _ = tokio::time::timeout(Duration::from_secs(3), g.send(Logout)).await;
                }
            }
            .into_actor(self)
            .map(|_, act, _| {
                act.stopped = true;
                act.broadcast(Halt);
                act.publish();
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ordered_walk_pairs_each_status_with_its_own_counters_and_skips_the_unmatched() {
        let statuses: Vec<(Arc<str>, &str)> = ["a", "c", "e", "x"]
            .into_iter()
            .map(|n| (Arc::from(n), n))
            .collect();
        // "b" and "d" are not in the status yet; "x" has no counters.
        // The same names, not the same pointers, except for "a".
        let counters: Vec<(Arc<str>, String)> = ["a", "b", "c", "d", "e"]
            .into_iter()
            .map(|n| {
                let name = match n {
                    "a" => statuses[0].0.clone(),
                    _ => Arc::from(n),
                };
                (name, format!("counters of {n}"))
            })
            .collect();
        let mut seen = Vec::new();
        in_order(
            statuses.iter().map(|(name, st)| (name, *st)),
            &counters,
            |st, c| seen.push(format!("{st}: {c}")),
        );
        assert_eq!(
            seen,
            ["a: counters of a", "c: counters of c", "e: counters of e"]
        );
    }
}
