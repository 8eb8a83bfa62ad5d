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
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Counter as PCounter, Gauge as PGauge, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
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

/// How a family's values are stored and exported.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An integer counter (`u64`).
    Counter,
    /// An integer gauge (`i64`, stored as its bits).
    IntGauge,
    /// A float gauge (`f64`, stored as its bits).
    Gauge,
}

/// One metric family whose series are per stream: the `stream` label and at most one more,
/// whose values form a closed set.
struct Family {
    desc: Desc,
    kind: Kind,
    /// The second label's name, if any.
    label: Option<&'static str>,
    /// Its values: one series each per stream, at 0 from the stream's start ([""] without a
    /// second label).
    values: Vec<&'static str>,
    /// Whether the series exists from the stream's start, or only once set.
    eager: bool,
    /// Where this family's cells start in a stream's cells.
    offset: usize,
}

// The per-stream families, indices into `Families::families`.
const STREAM_UP: usize = 0;
const STREAM_STATE: usize = 1;
const RECONNECTS: usize = 2;
const CREDENTIAL_REFRESHES: usize = 3;
const ACTOR_RESTARTS: usize = 4;
const SUBSCRIPTIONS: usize = 5;
const MESSAGES_RECEIVED: usize = 6;
const HARD_FAILURES: usize = 7;
const EVENTS_DROPPED: usize = 8;
const DECODE_ERRORS: usize = 9;
const CREDENTIAL_REQUESTS: usize = 10;
const CREDENTIAL_EXPIRY: usize = 11;
const LAST_MESSAGE: usize = 12;
const BACKOFF_DELAY: usize = 13;
const CONNECT_ATTEMPTS: usize = 14;
const SESSION_AUTHENTICATED: usize = 15;
const SESSION_COMPETING: usize = 16;
const KEEPALIVES: usize = 17;
const FRAMES_RECEIVED: usize = 18;
const FRAMES_SENT: usize = 19;
const FIRST_READY: usize = 20;

/// Every per-stream family (except the recovery histogram) and every stream's values.
///
/// One Prometheus collector for all of them. A stream's series are plain atomics in one block
/// (~1 KiB for ~120 series): a `prometheus` `…Vec` child would copy the family's descriptor
/// (help text included) and its label strings into every series, ~450 bytes each, ~55 KiB per
/// stream. The exposition is the same: same names, help, types, labels and values.
struct Families {
    families: Vec<Family>,
    /// Cells per stream.
    cells: usize,
    streams: Mutex<BTreeMap<String, Arc<StreamCells>>>,
}

/// One stream's values, in the order of `Families::families` and their label values.
struct StreamCells {
    /// Shared with [`StreamCounter`]s, which then reach a value in one step (the status
    /// refresh reads three of every stream's each second, mostly from cold memory).
    cells: Arc<[AtomicU64]>,
    /// Bit `family` set once a lazy family's series exists.
    present: AtomicU32,
    /// Values of a second label outside the family's closed set: (family, value, count).
    other: Mutex<Vec<(usize, Box<str>, u64)>>,
}

/// A family's name, help, kind, second label with its values, and whether its series exist from
/// the stream's start.
type Spec<'a> = (
    &'a str,
    &'a str,
    Kind,
    Option<(&'static str, Vec<&'static str>)>,
    bool,
);

impl Families {
    fn new(
        const_labels: &HashMap<String, String>,
        specs: Vec<Spec<'_>>,
    ) -> prometheus::Result<Self> {
        let mut families = Vec::with_capacity(specs.len());
        let mut offset = 0;
        for (name, help, kind, second, eager) in specs {
            let (label, values) = match second {
                Some((label, values)) => (Some(label), values),
                None => (None, vec![""]),
            };
            let mut variable = vec!["stream".to_string()];
            variable.extend(label.map(str::to_string));
            let desc = Desc::new(name.into(), help.into(), variable, const_labels.clone())?;
            let n = values.len();
            families.push(Family {
                desc,
                kind,
                label,
                values,
                eager,
                offset,
            });
            offset += n;
        }
        Ok(Self {
            families,
            cells: offset,
            streams: Mutex::new(BTreeMap::new()),
        })
    }

    /// The cells of stream `name`, created (at 0) on first use.
    fn stream(&self, name: &str) -> Arc<StreamCells> {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        streams
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(StreamCells {
                    cells: (0..self.cells).map(|_| AtomicU64::new(0)).collect(),
                    present: AtomicU32::new(0),
                    other: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    fn label_pair(name: &str, value: &str) -> LabelPair {
        let mut l = LabelPair::default();
        l.set_name(name.to_string());
        l.set_value(value.to_string());
        l
    }

    fn metric(family: &Family, stream: &str, value: Option<&str>, bits: u64) -> Metric {
        let mut labels = family.desc.const_label_pairs.clone();
        labels.push(Self::label_pair("stream", stream));
        if let (Some(label), Some(value)) = (family.label, value) {
            labels.push(Self::label_pair(label, value));
        }
        labels.sort_by(|a, b| a.name().cmp(b.name()));
        let mut m = Metric::from_label(labels);
        match family.kind {
            Kind::Counter => {
                let mut c = PCounter::default();
                c.set_value(bits as f64);
                m.set_counter(c);
            }
            Kind::IntGauge | Kind::Gauge => {
                let mut g = PGauge::default();
                g.set_value(if family.kind == Kind::Gauge {
                    f64::from_bits(bits)
                } else {
                    bits as i64 as f64
                });
                m.set_gauge(g);
            }
        }
        m
    }
}

impl Collector for Families {
    fn desc(&self) -> Vec<&Desc> {
        self.families.iter().map(|f| &f.desc).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        self.families
            .iter()
            .enumerate()
            .map(|(i, family)| {
                let mut metrics = Vec::new();
                for (name, cells) in streams.iter() {
                    if !family.eager && cells.present.load(Ordering::Relaxed) & (1 << i) == 0 {
                        continue;
                    }
                    for (j, value) in family.values.iter().enumerate() {
                        let bits = cells.cells[family.offset + j].load(Ordering::Relaxed);
                        let value = family.label.map(|_| *value);
                        metrics.push(Self::metric(family, name, value, bits));
                    }
                    let other = cells.other.lock().unwrap_or_else(PoisonError::into_inner);
                    for (_, value, n) in other.iter().filter(|(f, ..)| *f == i) {
                        metrics.push(Self::metric(family, name, Some(value), *n));
                    }
                }
                let mut mf = MetricFamily::default();
                mf.set_name(family.desc.fq_name.clone());
                mf.set_help(family.desc.help.clone());
                mf.set_field_type(match family.kind {
                    Kind::Counter => MetricType::COUNTER,
                    Kind::IntGauge | Kind::Gauge => MetricType::GAUGE,
                });
                mf.set_metric(metrics);
                mf
            })
            .collect()
    }
}

/// Every keepwire metric family.
#[derive(Clone)]
pub struct Metrics {
    families: Arc<Families>,
    recovery_seconds: HistogramVec,
}

/// A `prometheus::Collector` sharing [`Families`], so that the registry can own one.
#[derive(Clone)]
struct SharedFamilies(Arc<Families>);

impl Collector for SharedFamilies {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

/// Registers collectors one by one and, if one fails, unregisters those already registered so a
/// failed registration leaves the host's registry as it was.
struct Registrar<'a> {
    registry: &'a Registry,
    const_labels: HashMap<String, String>,
    done: Vec<Box<dyn Collector>>,
}

impl<'a> Registrar<'a> {
    /// Registers into `registry`, with `const_labels` on every series.
    fn new(registry: &'a Registry, const_labels: &BTreeMap<String, String>) -> Self {
        Self {
            registry,
            const_labels: const_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            done: Vec::new(),
        }
    }

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
        let mut r = Registrar::new(registry, const_labels);
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
        let reasons = || Failure::REASONS.to_vec();
        let with = |mut v: Vec<&'static str>, extra: &'static str| {
            v.push(extra);
            v
        };
        let kinds = FrameKind::ALL.map(FrameKind::as_str).to_vec();
        use Kind::{Counter, Gauge, IntGauge};
        // In the order of the family indices above.
        let specs = vec![
            ("keepwire_stream_up", "1 when the stream is Ready.", IntGauge, None, true),
            (
                "keepwire_stream_state",
                "1 for the stream's current state, 0 for the others.",
                IntGauge,
                Some(("state", StreamState::NAMES.to_vec())),
                true,
            ),
            (
                "keepwire_reconnects_total",
                "Socket losses followed by a reconnect, by reason.",
                Counter,
                Some(("reason", with(reasons(), RECONNECT_CREDENTIALS_ROTATED))),
                true,
            ),
            (
                "keepwire_credential_refreshes_total",
                "Credential fetches, by result (ok, error).",
                Counter,
                Some(("result", vec!["ok", "error"])),
                true,
            ),
            (
                "keepwire_actor_restarts_total",
                "Actor restarts (supervisor restarts and rebuilds after a panic).",
                Counter,
                Some(("actor", ActorKind::ALL.map(ActorKind::as_str).to_vec())),
                true,
            ),
            (
                "keepwire_subscriptions",
                "Subscriptions by state (desired, active, pending, failed).",
                IntGauge,
                Some(("state", SUBSCRIPTION_STATES.to_vec())),
                true,
            ),
            (
                "keepwire_messages_received_total",
                "Messages (WebSocket frames of every kind) received on the socket.",
                Counter,
                None,
                true,
            ),
            (
                "keepwire_hard_failures_total",
                "Failures that stopped the stream, by reason.",
                Counter,
                Some(("reason", reasons())),
                true,
            ),
            (
                "keepwire_events_dropped_total",
                "Events dropped because a consumer fell behind (oldest first).",
                Counter,
                None,
                true,
            ),
            (
                "keepwire_decode_errors_total",
                "Frames that could not be decoded and were skipped.",
                Counter,
                None,
                true,
            ),
            (
                "keepwire_credential_requests_total",
                "Credentials handed out for a dial (one per negotiate/dial attempt: tokens are never captured).",
                Counter,
                None,
                true,
            ),
            (
                "keepwire_credential_expiry_timestamp_seconds",
                "Unix time at which the current credential expires (0: no known expiry, e.g. an \
                 IBKR session id). Time left: keepwire_credential_expiry_timestamp_seconds - time().",
                Gauge,
                None,
                true,
            ),
            (
                "keepwire_last_message_timestamp_seconds",
                "Unix time of the last frame received on the socket. Its age: \
                 time() - keepwire_last_message_timestamp_seconds.",
                Gauge,
                None,
                false,
            ),
            (
                "keepwire_backoff_delay_seconds",
                "Delay being waited before the current connection attempt (0 when not in backoff).",
                Gauge,
                None,
                true,
            ),
            (
                "keepwire_connect_attempts",
                "Connection attempts since the last healthy period (0 once healthy).",
                IntGauge,
                None,
                true,
            ),
            (
                "keepwire_gateway_session_authenticated",
                "1 while the gateway session is established and authenticated (IBKR: auth/status \
                 authenticated after ssodh/init), else 0.",
                IntGauge,
                None,
                true,
            ),
            (
                "keepwire_gateway_session_competing",
                "1 after the gateway reported a competing session, until the session is \
                 established again, else 0.",
                IntGauge,
                None,
                true,
            ),
            (
                "keepwire_keepalives_total",
                "Gateway session keepalives (IBKR: tickle), by result: ok or the failure reason.",
                Counter,
                Some(("result", with(reasons(), "ok"))),
                true,
            ),
            (
                "keepwire_frames_received_total",
                "WebSocket frames received, by kind (text, binary, continuation, ping, pong, close).",
                Counter,
                Some(("kind", kinds.clone())),
                true,
            ),
            (
                "keepwire_frames_sent_total",
                "WebSocket frames sent, by kind (text, binary, continuation, ping, pong, close).",
                Counter,
                Some(("kind", kinds)),
                true,
            ),
            (
                "keepwire_time_to_first_ready_seconds",
                "Seconds from the stream's start to its first Ready (absent until then).",
                Gauge,
                None,
                false,
            ),
        ];
        let families = Arc::new(Families::new(&r.const_labels, specs)?);
        r.add(Ok(SharedFamilies(families.clone())))?;
        Ok(Self {
            families,
            recovery_seconds,
        })
    }

    /// The metrics of one stream, with the `stream` label bound. Every series of a closed label
    /// set exists, at 0, from now on (dashboards, `rate()` and `increase()` see them at once).
    pub fn stream(&self, name: &str) -> StreamMetrics {
        self.recovery_seconds.with_label_values(&[name]);
        StreamMetrics {
            cells: self.families.stream(name),
            families: self.families.clone(),
            recovery: self.recovery_seconds.with_label_values(&[name]),
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

/// One counter of one stream (e.g. [`StreamMetrics::messages_received`]).
#[derive(Clone)]
pub struct StreamCounter {
    cells: Arc<[AtomicU64]>,
    index: usize,
}

impl StreamCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.cells[self.index].fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.cells[self.index].load(Ordering::Relaxed)
    }
}

/// One stream's metrics. Cheap to clone; safe to use from any thread.
#[derive(Clone)]
pub struct StreamMetrics {
    cells: Arc<StreamCells>,
    families: Arc<Families>,
    recovery: Histogram,
}

impl StreamMetrics {
    /// The cell of `family`'s series with second label `value` (the only one without a second
    /// label), if `value` is in the family's closed set.
    fn cell(&self, family: usize, value: &str) -> Option<&AtomicU64> {
        let f = &self.families.families[family];
        let j = if f.label.is_none() {
            0
        } else {
            f.values.iter().position(|v| *v == value)?
        };
        self.cells.cells.get(f.offset + j)
    }

    fn add(&self, family: usize, value: &str, n: u64) {
        match self.cell(family, value) {
            Some(cell) => {
                cell.fetch_add(n, Ordering::Relaxed);
            }
            None => {
                // A value outside the closed set (none is known today): its own series.
                let mut other = self
                    .cells
                    .other
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match other
                    .iter_mut()
                    .find(|(f, v, _)| *f == family && &**v == value)
                {
                    Some((.., count)) => *count += n,
                    None => other.push((family, value.into(), n)),
                }
            }
        }
    }

    fn set_int(&self, family: usize, value: &str, v: i64) {
        if let Some(cell) = self.cell(family, value) {
            cell.store(v as u64, Ordering::Relaxed);
        }
    }

    fn set_float(&self, family: usize, v: f64) {
        if let Some(cell) = self.cell(family, "") {
            cell.store(v.to_bits(), Ordering::Relaxed);
            // Read before writing: a frame's timestamp must not cost an atomic write per frame.
            let bit = 1 << family;
            if !self.families.families[family].eager
                && self.cells.present.load(Ordering::Relaxed) & bit == 0
            {
                self.cells.present.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }

    fn counter(&self, family: usize) -> StreamCounter {
        StreamCounter {
            cells: self.cells.cells.clone(),
            index: self.families.families[family].offset,
        }
    }

    /// Messages received on the socket.
    pub fn messages_received(&self) -> StreamCounter {
        self.counter(MESSAGES_RECEIVED)
    }

    /// Frames skipped as undecodable.
    pub fn decode_errors(&self) -> StreamCounter {
        self.counter(DECODE_ERRORS)
    }

    /// Credentials handed out for dials.
    pub fn credential_requests(&self) -> StreamCounter {
        self.counter(CREDENTIAL_REQUESTS)
    }

    /// Events dropped for slow consumers.
    pub fn events_dropped(&self) -> StreamCounter {
        self.counter(EVENTS_DROPPED)
    }

    /// Records the current state (one-hot), `stream_up` and the backoff delay being waited.
    pub fn state(&self, state: &StreamState) {
        let current = state.as_str();
        for s in StreamState::NAMES {
            self.set_int(STREAM_STATE, s, i64::from(s == current));
        }
        self.set_int(STREAM_UP, "", i64::from(current == "ready"));
        let delay_ms = match state {
            StreamState::Backoff { delay_ms, .. } => *delay_ms,
            _ => 0,
        };
        self.set_float(BACKOFF_DELAY, delay_ms as f64 / 1000.0);
    }

    /// Records the connection attempts since the last healthy period.
    pub fn connect_attempts(&self, attempts: u32) {
        self.set_int(CONNECT_ATTEMPTS, "", i64::from(attempts));
    }

    /// Counts a reconnect caused by `reason`.
    pub fn reconnect(&self, reason: &str) {
        self.add(RECONNECTS, reason, 1);
    }

    /// Counts a credential fetch.
    pub fn credential_refresh(&self, ok: bool) {
        self.add(CREDENTIAL_REFRESHES, if ok { "ok" } else { "error" }, 1);
    }

    /// Records when the current credential expires, `expires_in` from now (`None`: no known
    /// expiry, exported as 0).
    pub fn credential_expiry(&self, expires_in: Option<Duration>) {
        let at = expires_in.map_or(0.0, |d| unix_now() + d.as_secs_f64());
        self.set_float(CREDENTIAL_EXPIRY, at);
    }

    /// Counts an actor restart.
    pub fn actor_restart(&self, actor: &str) {
        self.add(ACTOR_RESTARTS, actor, 1);
    }

    /// Records subscription counts.
    pub fn subscriptions(&self, c: &SubscriptionCounts) {
        for (state, n) in SUBSCRIPTION_STATES
            .into_iter()
            .zip([c.desired, c.active, c.pending, c.failed])
        {
            self.set_int(SUBSCRIPTIONS, state, n as i64);
        }
    }

    /// Counts a hard failure.
    pub fn hard_failure(&self, reason: &str) {
        self.add(HARD_FAILURES, reason, 1);
    }

    /// Observes one recovery.
    pub fn recovery(&self, seconds: f64) {
        self.recovery.observe(seconds);
    }

    /// Records the gateway session state: authenticated (established) and competing.
    pub fn gateway_session(&self, authenticated: bool, competing: bool) {
        self.set_int(SESSION_AUTHENTICATED, "", i64::from(authenticated));
        self.set_int(SESSION_COMPETING, "", i64::from(competing));
    }

    /// Counts one keepalive (IBKR: tickle) with its result: `"ok"` or a failure reason.
    pub fn keepalive(&self, result: &'static str) {
        self.add(KEEPALIVES, result, 1);
    }

    /// Counts a frame received on the socket (also in `keepwire_messages_received_total`) and
    /// records its time as the last message time.
    pub fn frame_received(&self, kind: FrameKind) {
        let f = &self.families.families;
        let c = &self.cells.cells;
        c[f[MESSAGES_RECEIVED].offset].fetch_add(1, Ordering::Relaxed);
        c[f[FRAMES_RECEIVED].offset + kind as usize].fetch_add(1, Ordering::Relaxed);
        self.set_float(LAST_MESSAGE, unix_now());
    }

    /// Counts a frame written to the socket.
    pub fn frame_sent(&self, kind: FrameKind) {
        let f = &self.families.families[FRAMES_SENT];
        self.cells.cells[f.offset + kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records the time from the stream's start to its first Ready.
    pub fn first_ready(&self, took: Duration) {
        self.set_float(FIRST_READY, took.as_secs_f64());
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
        let mut r = Registrar::new(registry, const_labels);
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
