//! Prometheus metrics (`keepwire_` prefix, base units, bounded labels: never a token, never a conid).
//!
//! keepwire registers into a [`prometheus::Registry`] the host passes in (or its own), so an
//! embedding service can expose keepwire's metrics beside its own.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::status::{StreamState, SubscriptionCounts};

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
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    /// Registers every family into `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let recovery_seconds = HistogramVec::new(
            HistogramOpts::new(
                "keepwire_recovery_seconds",
                "Time from losing Ready to Ready with every subscription active again.",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ]),
            &["stream"],
        )?;
        registry.register(Box::new(recovery_seconds.clone()))?;
        Ok(Self {
            stream_up: gauge(
                registry,
                "keepwire_stream_up",
                "1 when the stream is Ready.",
                &["stream"],
            )?,
            stream_state: gauge(
                registry,
                "keepwire_stream_state",
                "1 for the stream's current state, 0 for the others.",
                &["stream", "state"],
            )?,
            reconnects: counter(
                registry,
                "keepwire_reconnects_total",
                "Socket losses followed by a reconnect, by reason.",
                &["stream", "reason"],
            )?,
            credential_refreshes: counter(
                registry,
                "keepwire_credential_refreshes_total",
                "Credential fetches, by result.",
                &["stream", "result"],
            )?,
            actor_restarts: counter(
                registry,
                "keepwire_actor_restarts_total",
                "Actor restarts (supervisor restarts and rebuilds after a panic).",
                &["stream", "actor"],
            )?,
            subscriptions: gauge(
                registry,
                "keepwire_subscriptions",
                "Subscriptions by state (desired, active, pending, failed).",
                &["stream", "state"],
            )?,
            messages_received: counter(
                registry,
                "keepwire_messages_received_total",
                "Messages received on the socket.",
                &["stream"],
            )?,
            hard_failures: counter(
                registry,
                "keepwire_hard_failures_total",
                "Failures that stopped the stream, by reason.",
                &["stream", "reason"],
            )?,
            recovery_seconds,
            events_dropped: counter(
                registry,
                "keepwire_events_dropped_total",
                "Events dropped because a consumer fell behind (oldest first).",
                &["stream"],
            )?,
            decode_errors: counter(
                registry,
                "keepwire_decode_errors_total",
                "Frames that could not be decoded and were skipped.",
                &["stream"],
            )?,
        })
    }

    /// The metrics of one stream, with the `stream` label bound.
    pub fn stream(&self, name: &str) -> StreamMetrics {
        // Export zero-valued series from the start so dashboards and `rate()` see them at once.
        self.recovery_seconds.with_label_values(&[name]);
        for result in ["ok", "error"] {
            self.credential_refreshes.with_label_values(&[name, result]);
        }
        StreamMetrics {
            name: name.to_string(),
            all: self.clone(),
            messages_received: self.messages_received.with_label_values(&[name]),
            decode_errors: self.decode_errors.with_label_values(&[name]),
            events_dropped: self.events_dropped.with_label_values(&[name]),
            up: self.stream_up.with_label_values(&[name]),
        }
    }
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
    /// Events dropped for slow consumers.
    pub events_dropped: IntCounter,
    up: IntGauge,
}

impl StreamMetrics {
    /// Records the current state (one-hot) and `stream_up`.
    pub fn state(&self, state: &StreamState) {
        let current = state.as_str();
        for s in StreamState::NAMES {
            self.all
                .stream_state
                .with_label_values(&[self.name.as_str(), s])
                .set(i64::from(s == current));
        }
        self.up.set(i64::from(current == "ready"));
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

    /// Counts an actor restart.
    pub fn actor_restart(&self, actor: &str) {
        self.all
            .actor_restarts
            .with_label_values(&[self.name.as_str(), actor])
            .inc();
    }

    /// Records subscription counts.
    pub fn subscriptions(&self, c: &SubscriptionCounts) {
        for (state, n) in [
            ("desired", c.desired),
            ("active", c.active),
            ("pending", c.pending),
            ("failed", c.failed),
        ] {
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
}
