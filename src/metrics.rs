//! Prometheus metrics (`keepwire_` prefix, base units, bounded labels: never a token, never a conid).
//!
//! keepwire registers into a [`prometheus::Registry`] the host passes in (or its own), so an
//! embedding service can expose keepwire's metrics beside its own. Several supervisors can share
//! one registry when each is given a distinct set of const labels
//! ([`Metrics::register_with`], `Handle::builder().const_labels(..)`), e.g. `{supervisor="a"}` and
//! `{supervisor="b"}`: Prometheus refuses two identical descriptors, and different const-label
//! values make them distinct.
//!
//! Every label value is drawn from a closed set: stream names come from the configuration, and
//! `state`, `reason`, `result`, `actor` and `kind` are fixed strings of this crate. Every series
//! of such a set exists, at 0, from the moment its stream starts.
//!
//! Ages are exported as Unix timestamps (`…_timestamp_seconds`) so that Prometheus computes them
//! (`time() - keepwire_last_message_timestamp_seconds`) and a stalled exporter cannot fake
//! freshness.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

use crate::failure::Failure;
use crate::status::{ActorKind, StreamState, SubscriptionCounts};

/// Buckets of `keepwire_recovery_seconds`: a recovery against a local gateway takes tens of
/// milliseconds, a reconnect through backoff 0.25–5 s, a re-established gateway session a few
/// seconds more, and one that waits for a person (2FA) minutes.
pub const RECOVERY_BUCKETS: [f64; 14] = [
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The `state` label values of `keepwire_subscriptions`.
pub const SUBSCRIPTION_STATES: [&str; 4] = ["desired", "active", "pending", "failed"];

/// The `reason` of `keepwire_reconnects_total` when new credentials rebuild a healthy socket
/// (every other reason is one of [`Failure::REASONS`]).
pub const RECONNECT_CREDENTIALS_ROTATED: &str = "credentials_rotated";

/// Kinds of WebSocket frames, the `kind` label of `keepwire_frames_received_total` and
/// `keepwire_frames_sent_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A text frame.
    Text,
    /// A binary frame.
    Binary,
    /// A continuation of a fragmented message.
    Continuation,
    /// A ping.
    Ping,
    /// A pong.
    Pong,
    /// A close frame.
    Close,
}

impl FrameKind {
    /// Every kind, in label order.
    pub const ALL: [FrameKind; 6] = [
        FrameKind::Text,
        FrameKind::Binary,
        FrameKind::Continuation,
        FrameKind::Ping,
        FrameKind::Pong,
        FrameKind::Close,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Text => "text",
            FrameKind::Binary => "binary",
            FrameKind::Continuation => "continuation",
            FrameKind::Ping => "ping",
            FrameKind::Pong => "pong",
            FrameKind::Close => "close",
        }
    }
}

impl From<&awc::ws::Frame> for FrameKind {
    fn from(frame: &awc::ws::Frame) -> Self {
        use awc::ws::Frame;
        match frame {
            Frame::Text(_) => FrameKind::Text,
            Frame::Binary(_) => FrameKind::Binary,
            Frame::Continuation(_) => FrameKind::Continuation,
            Frame::Ping(_) => FrameKind::Ping,
            Frame::Pong(_) => FrameKind::Pong,
            Frame::Close(_) => FrameKind::Close,
        }
    }
}

/// Every keepwire metric family.
#[derive(Clone)]
pub struct Metrics {
    stream_up: IntGaugeVec,
    stream_state: IntGaugeVec,
    reconnects: IntCounterVec,
    credential_refreshes: IntCounterVec,
    actor_restarts: IntCounterVec,
    subscriptions: IntGaugeVec,
    messages_received: IntCounterVec,
    hard_failures: IntCounterVec,
    recovery_seconds: HistogramVec,
    events_dropped: IntCounterVec,
    decode_errors: IntCounterVec,
    credential_requests: IntCounterVec,
    credential_expiry: GaugeVec,
    last_message: GaugeVec,
    backoff_delay: GaugeVec,
    connect_attempts: IntGaugeVec,
    session_authenticated: IntGaugeVec,
    session_competing: IntGaugeVec,
    keepalives: IntCounterVec,
    frames_received: IntCounterVec,
    frames_sent: IntCounterVec,
    first_ready: GaugeVec,
}

/// Registers collectors one by one and, if one fails, unregisters those already registered so a
/// failed registration leaves the host's registry as it was.
struct Registrar<'a> {
    registry: &'a Registry,
    const_labels: HashMap<String, String>,
    done: Vec<Box<dyn Collector>>,
}

impl Registrar<'_> {
    fn add<C: Collector + Clone + 'static>(
        &mut self,
        c: prometheus::Result<C>,
    ) -> prometheus::Result<C> {
        let c = c?;
        match self.registry.register(Box::new(c.clone())) {
            Ok(()) => {
                self.done.push(Box::new(c.clone()));
                Ok(c)
            }
            Err(e) => {
                for done in self.done.drain(..) {
                    let _ = self.registry.unregister(done);
                }
                Err(e)
            }
        }
    }

    fn opts(&self, name: &str, help: &str) -> Opts {
        Opts::new(name, help).const_labels(self.const_labels.clone())
    }

    fn counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        let c = IntCounterVec::new(self.opts(name, help), labels);
        self.add(c)
    }

    fn int_gauge(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        let g = IntGaugeVec::new(self.opts(name, help), labels);
        self.add(g)
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
        let g = GaugeVec::new(self.opts(name, help), labels);
        self.add(g)
    }
}

impl Metrics {
    /// Registers every family into `registry`, without const labels.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        Self::register_with(registry, &BTreeMap::new())
    }

    /// Registers every family into `registry` with `const_labels` on every series (e.g.
    /// `{"supervisor": "a"}`). Two supervisors can share a registry when their const labels have
    /// the same names and different values. On error nothing stays registered.
    pub fn register_with(
        registry: &Registry,
        const_labels: &BTreeMap<String, String>,
    ) -> prometheus::Result<Self> {
        let mut r = Registrar {
            registry,
            const_labels: const_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            done: Vec::new(),
        };
        let recovery_seconds = HistogramVec::new(
            HistogramOpts::new(
                "keepwire_recovery_seconds",
                "Time from losing Ready to Ready with every subscription active again.",
            )
            .const_labels(r.const_labels.clone())
            .buckets(RECOVERY_BUCKETS.to_vec()),
            &["stream"],
        );
        let recovery_seconds = r.add(recovery_seconds)?;
        Ok(Self {
            recovery_seconds,
            stream_up: r.int_gauge("keepwire_stream_up", "1 when the stream is Ready.", &["stream"])?,
            stream_state: r.int_gauge(
                "keepwire_stream_state",
                "1 for the stream's current state, 0 for the others.",
                &["stream", "state"],
            )?,
            reconnects: r.counter(
                "keepwire_reconnects_total",
                "Socket losses followed by a reconnect, by reason.",
                &["stream", "reason"],
            )?,
            credential_refreshes: r.counter(
                "keepwire_credential_refreshes_total",
                "Credential fetches, by result (ok, error).",
                &["stream", "result"],
            )?,
            actor_restarts: r.counter(
                "keepwire_actor_restarts_total",
                "Actor restarts (supervisor restarts and rebuilds after a panic).",
                &["stream", "actor"],
            )?,
            subscriptions: r.int_gauge(
                "keepwire_subscriptions",
                "Subscriptions by state (desired, active, pending, failed).",
                &["stream", "state"],
            )?,
            messages_received: r.counter(
                "keepwire_messages_received_total",
                "Messages (WebSocket frames of every kind) received on the socket.",
                &["stream"],
            )?,
            hard_failures: r.counter(
                "keepwire_hard_failures_total",
                "Failures that stopped the stream, by reason.",
                &["stream", "reason"],
            )?,
            events_dropped: r.counter(
                "keepwire_events_dropped_total",
                "Events dropped because a consumer fell behind (oldest first).",
                &["stream"],
            )?,
            decode_errors: r.counter(
                "keepwire_decode_errors_total",
                "Frames that could not be decoded and were skipped.",
                &["stream"],
            )?,
            credential_requests: r.counter(
                "keepwire_credential_requests_total",
                "Credentials handed out for a dial (one per negotiate/dial attempt: tokens are never captured).",
                &["stream"],
            )?,
            credential_expiry: r.gauge(
                "keepwire_credential_expiry_timestamp_seconds",
                "Unix time at which the current credential expires (0: no known expiry, e.g. an \
                 IBKR session id). Time left: keepwire_credential_expiry_timestamp_seconds - time().",
                &["stream"],
            )?,
            last_message: r.gauge(
                "keepwire_last_message_timestamp_seconds",
                "Unix time of the last frame received on the socket. Its age: \
                 time() - keepwire_last_message_timestamp_seconds.",
                &["stream"],
            )?,
            backoff_delay: r.gauge(
                "keepwire_backoff_delay_seconds",
                "Delay being waited before the current connection attempt (0 when not in backoff).",
                &["stream"],
            )?,
            connect_attempts: r.int_gauge(
                "keepwire_connect_attempts",
                "Connection attempts since the last healthy period (0 once healthy).",
                &["stream"],
            )?,
            session_authenticated: r.int_gauge(
                "keepwire_gateway_session_authenticated",
                "1 while the gateway session is established and authenticated (IBKR: auth/status \
                 authenticated after ssodh/init), else 0.",
                &["stream"],
            )?,
            session_competing: r.int_gauge(
                "keepwire_gateway_session_competing",
                "1 after the gateway reported a competing session, until the session is \
                 established again, else 0.",
                &["stream"],
            )?,
            keepalives: r.counter(
                "keepwire_keepalives_total",
                "Gateway session keepalives (IBKR: tickle), by result: ok or the failure reason.",
                &["stream", "result"],
            )?,
            frames_received: r.counter(
                "keepwire_frames_received_total",
                "WebSocket frames received, by kind (text, binary, continuation, ping, pong, close).",
                &["stream", "kind"],
            )?,
            frames_sent: r.counter(
                "keepwire_frames_sent_total",
                "WebSocket frames sent, by kind (text, binary, continuation, ping, pong, close).",
                &["stream", "kind"],
            )?,
            first_ready: r.gauge(
                "keepwire_time_to_first_ready_seconds",
                "Seconds from the stream's start to its first Ready (absent until then).",
                &["stream"],
            )?,
        })
    }

    /// The metrics of one stream, with the `stream` label bound.
    pub fn stream(&self, name: &str) -> StreamMetrics {
        // Export zero-valued series for every known label value from the start, so dashboards,
        // `rate()` and `increase()` see them at once.
        self.recovery_seconds.with_label_values(&[name]);
        for result in ["ok", "error"] {
            self.credential_refreshes.with_label_values(&[name, result]);
        }
        for actor in ActorKind::ALL {
            self.actor_restarts
                .with_label_values(&[name, actor.as_str()]);
        }
        // Closed label sets start at 0 for every value: a dashboard panel or an `increase()`
        // over a series that is absent until its first event shows "No data" and misses that
        // first event.
        for reason in Failure::REASONS {
            self.hard_failures.with_label_values(&[name, reason]);
            self.keepalives.with_label_values(&[name, reason]);
            self.reconnects.with_label_values(&[name, reason]);
        }
        self.reconnects
            .with_label_values(&[name, RECONNECT_CREDENTIALS_ROTATED]);
        self.keepalives.with_label_values(&[name, "ok"]);
        for state in StreamState::NAMES {
            self.stream_state.with_label_values(&[name, state]);
        }
        for state in SUBSCRIPTION_STATES {
            self.subscriptions.with_label_values(&[name, state]);
        }
        self.credential_expiry.with_label_values(&[name]);
        self.session_competing.with_label_values(&[name]);
        let kinds = |vec: &IntCounterVec| {
            FrameKind::ALL.map(|k| vec.with_label_values(&[name, k.as_str()]))
        };
        StreamMetrics {
            name: name.to_string(),
            all: self.clone(),
            messages_received: self.messages_received.with_label_values(&[name]),
            decode_errors: self.decode_errors.with_label_values(&[name]),
            credential_requests: self.credential_requests.with_label_values(&[name]),
            events_dropped: self.events_dropped.with_label_values(&[name]),
            up: self.stream_up.with_label_values(&[name]),
            frames_received: Arc::new(kinds(&self.frames_received)),
            frames_sent: Arc::new(kinds(&self.frames_sent)),
            last_message: Arc::new(OnceLock::new()),
            backoff_delay: self.backoff_delay.with_label_values(&[name]),
            connect_attempts: self.connect_attempts.with_label_values(&[name]),
            authenticated: self.session_authenticated.with_label_values(&[name]),
        }
    }
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// One stream's metrics. Cheap to clone; safe to use from any thread.
#[derive(Clone)]
pub struct StreamMetrics {
    name: String,
    all: Metrics,
    /// Messages received on the socket.
    pub messages_received: IntCounter,
    /// Frames skipped as undecodable.
    pub decode_errors: IntCounter,
    /// Credentials handed out for dials.
    pub credential_requests: IntCounter,
    /// Events dropped for slow consumers.
    pub events_dropped: IntCounter,
    up: IntGauge,
    frames_received: Arc<[IntCounter; 6]>,
    frames_sent: Arc<[IntCounter; 6]>,
    /// Created on the first frame: before it there is no "last message".
    last_message: Arc<OnceLock<Gauge>>,
    backoff_delay: Gauge,
    connect_attempts: IntGauge,
    authenticated: IntGauge,
}

impl StreamMetrics {
    /// Records the current state (one-hot), `stream_up` and the backoff delay being waited.
    pub fn state(&self, state: &StreamState) {
        let current = state.as_str();
        for s in StreamState::NAMES {
            self.all
                .stream_state
                .with_label_values(&[self.name.as_str(), s])
                .set(i64::from(s == current));
        }
        self.up.set(i64::from(current == "ready"));
        let delay_ms = match state {
            StreamState::Backoff { delay_ms, .. } => *delay_ms,
            _ => 0,
        };
        self.backoff_delay.set(delay_ms as f64 / 1000.0);
    }

    /// Records the connection attempts since the last healthy period.
    pub fn connect_attempts(&self, attempts: u32) {
        self.connect_attempts.set(i64::from(attempts));
    }

    /// Counts a reconnect caused by `reason`.
    pub fn reconnect(&self, reason: &str) {
        self.all
            .reconnects
            .with_label_values(&[self.name.as_str(), reason])
            .inc();
    }

    /// Counts a credential fetch.
    pub fn credential_refresh(&self, ok: bool) {
        self.all
            .credential_refreshes
            .with_label_values(&[self.name.as_str(), if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Records when the current credential expires, `expires_in` from now (`None`: no known
    /// expiry, exported as 0).
    pub fn credential_expiry(&self, expires_in: Option<Duration>) {
        let at = expires_in.map_or(0.0, |d| unix_now() + d.as_secs_f64());
        self.all
            .credential_expiry
            .with_label_values(&[self.name.as_str()])
            .set(at);
    }

    /// Counts an actor restart.
    pub fn actor_restart(&self, actor: &str) {
        self.all
            .actor_restarts
            .with_label_values(&[self.name.as_str(), actor])
            .inc();
    }

    /// Records subscription counts.
    pub fn subscriptions(&self, c: &SubscriptionCounts) {
        for (state, n) in SUBSCRIPTION_STATES
            .into_iter()
            .zip([c.desired, c.active, c.pending, c.failed])
        {
            self.all
                .subscriptions
                .with_label_values(&[self.name.as_str(), state])
                .set(n as i64);
        }
    }

    /// Counts a hard failure.
    pub fn hard_failure(&self, reason: &str) {
        self.all
            .hard_failures
            .with_label_values(&[self.name.as_str(), reason])
            .inc();
    }

    /// Observes one recovery.
    pub fn recovery(&self, seconds: f64) {
        self.all
            .recovery_seconds
            .with_label_values(&[&self.name])
            .observe(seconds);
    }

    /// Records the gateway session state: authenticated (established) and competing.
    pub fn gateway_session(&self, authenticated: bool, competing: bool) {
        self.authenticated.set(i64::from(authenticated));
        self.all
            .session_competing
            .with_label_values(&[self.name.as_str()])
            .set(i64::from(competing));
    }

    /// Counts one keepalive (IBKR: tickle) with its result: `"ok"` or a failure reason.
    pub fn keepalive(&self, result: &'static str) {
        self.all
            .keepalives
            .with_label_values(&[self.name.as_str(), result])
            .inc();
    }

    /// Counts a frame received on the socket (also in `keepwire_messages_received_total`) and
    /// records its time as the last message time.
    pub fn frame_received(&self, kind: FrameKind) {
        self.messages_received.inc();
        self.frames_received[kind as usize].inc();
        self.last_message
            .get_or_init(|| {
                self.all
                    .last_message
                    .with_label_values(&[self.name.as_str()])
            })
            .set(unix_now());
    }

    /// Counts a frame written to the socket.
    pub fn frame_sent(&self, kind: FrameKind) {
        self.frames_sent[kind as usize].inc();
    }

    /// Records the time from the stream's start to its first Ready.
    pub fn first_ready(&self, took: Duration) {
        self.all
            .first_ready
            .with_label_values(&[self.name.as_str()])
            .set(took.as_secs_f64());
    }
}

/// The metrics of active/standby replicas (`[ha]`), registered only when HA is configured.
#[derive(Clone)]
pub struct HaMetrics {
    role: IntGaugeVec,
    transitions: IntCounterVec,
}

impl HaMetrics {
    /// The HA roles, the `role` label of `keepwire_ha_role` and `keepwire_ha_transitions_total`.
    pub const ROLES: [&'static str; 2] = ["leader", "standby"];

    /// Registers `keepwire_ha_role` and `keepwire_ha_transitions_total` (with these const labels)
    /// and starts as a standby.
    pub fn register_with(
        registry: &Registry,
        const_labels: &BTreeMap<String, String>,
    ) -> prometheus::Result<Self> {
        let mut r = Registrar {
            registry,
            const_labels: const_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            done: Vec::new(),
        };
        let m = Self {
            role: r.int_gauge(
                "keepwire_ha_role",
                "1 for this replica's current HA role (leader: runs the exclusive streams; \
                 standby: holds them), 0 for the other.",
                &["role"],
            )?,
            transitions: r.counter(
                "keepwire_ha_transitions_total",
                "HA role changes, by the role entered.",
                &["role"],
            )?,
        };
        for role in Self::ROLES {
            m.transitions.with_label_values(&[role]);
        }
        m.set_role("standby");
        Ok(m)
    }

    fn set_role(&self, current: &str) {
        for role in Self::ROLES {
            self.role
                .with_label_values(&[role])
                .set(i64::from(role == current));
        }
    }

    /// Records a change of role to `role` (`leader` or `standby`).
    pub fn transition(&self, role: &'static str) {
        self.set_role(role);
        self.transitions.with_label_values(&[role]).inc();
    }
}
