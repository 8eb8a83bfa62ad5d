//! Metrics as an embedding service sees them: keepwire registers into the host's registry, with
//! const labels, two supervisors share one registry, a collision is a clear error, and after a
//! short run against the emulator (a fault, a recovery, a hard failure) every family is in a scrape.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{fast_emulator, fast_stream, wait_stream, STREAM};
use keepwire::emulator::{Emulator, Fault};
use keepwire::{CompetingPolicy, Error, Handle, StreamState, Subscription};
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::Registry;

/// Every family keepwire exports once a stream has recovered from a fault and then failed hard.
const FAMILIES: [&str; 22] = [
    "keepwire_stream_up",
    "keepwire_stream_state",
    "keepwire_reconnects_total",
    "keepwire_credential_refreshes_total",
    "keepwire_actor_restarts_total",
    "keepwire_subscriptions",
    "keepwire_messages_received_total",
    "keepwire_hard_failures_total",
    "keepwire_recovery_seconds",
    "keepwire_events_dropped_total",
    "keepwire_decode_errors_total",
    "keepwire_credential_requests_total",
    "keepwire_credential_expiry_timestamp_seconds",
    "keepwire_last_message_timestamp_seconds",
    "keepwire_backoff_delay_seconds",
    "keepwire_connect_attempts",
    "keepwire_gateway_session_authenticated",
    "keepwire_gateway_session_competing",
    "keepwire_keepalives_total",
    "keepwire_frames_received_total",
    "keepwire_frames_sent_total",
    "keepwire_time_to_first_ready_seconds",
];

fn family<'a>(families: &'a [MetricFamily], name: &str) -> &'a MetricFamily {
    families
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("{name} missing from the scrape"))
}

/// The value of the series of `name` whose labels include every pair of `labels`.
fn value(families: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> f64 {
    let f = family(families, name);
    let m = f
        .get_metric()
        .iter()
        .find(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .unwrap_or_else(|| panic!("{name} has no series with {labels:?}"));
    match f.get_field_type() {
        MetricType::COUNTER => m.get_counter().get_value(),
        MetricType::GAUGE => m.get_gauge().get_value(),
        _ => m.get_histogram().get_sample_count() as f64,
    }
}

fn text(registry: &Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_supervisors_share_the_hosts_registry_with_distinct_const_labels() {
    let emu = Emulator::start(fast_emulator()).unwrap();
    let registry = Registry::new();
    let host =
        prometheus::IntCounter::new("host_requests_total", "The host's own metric.").unwrap();
    registry.register(Box::new(host.clone())).unwrap();
    host.inc();

    let start = |sup: &str| {
        Handle::builder()
            .registry(registry.clone())
            .const_labels([("supervisor", sup)])
            .stream(fast_stream(&emu))
            .start()
            .unwrap()
    };
    let (a, b) = (start("a"), start("b"));
    for kw in [&a, &b] {
        wait_stream(kw, STREAM, 10, "ready", |s| s.state == StreamState::Ready).await;
    }

    let families = registry.gather();
    assert_eq!(value(&families, "host_requests_total", &[]), 1.0);
    for sup in ["a", "b"] {
        let labels = [("supervisor", sup), ("stream", STREAM)];
        assert_eq!(value(&families, "keepwire_stream_up", &labels), 1.0);
        value(&families, "keepwire_recovery_seconds", &labels);
    }
    let up = family(&families, "keepwire_stream_up");
    assert_eq!(up.get_metric().len(), 2, "one series per supervisor");
    let scrape = text(&registry);
    assert!(
        scrape.contains(r#"keepwire_stream_up{stream="ibkr",supervisor="a"} 1"#),
        "{scrape}"
    );
    assert!(
        scrape.contains(r#"keepwire_stream_up{stream="ibkr",supervisor="b"} 1"#),
        "{scrape}"
    );
    assert!(
        a.registry().gather().len() == families.len(),
        "both see the host's registry"
    );

    a.shutdown().await;
    b.shutdown().await;
    emu.stop();
}

#[test]
fn a_second_supervisor_without_distinct_const_labels_is_a_clear_error_and_registers_nothing() {
    let registry = Registry::new();
    let first = Handle::builder()
        .registry(registry.clone())
        .start()
        .unwrap();
    let before = text(&registry);

    // Identical descriptors: no const labels on either.
    let err = Handle::builder()
        .registry(registry.clone())
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::MetricsCollision { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("distinct const labels"), "{msg}");
    assert!(msg.contains(".const_labels("), "names the fix: {msg}");

    // Different label names (one with a const label, one without) collide as well.
    let err = Handle::builder()
        .registry(registry.clone())
        .const_labels([("supervisor", "b")])
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::MetricsCollision { .. }), "{err:?}");
    assert!(err.to_string().contains("supervisor=\"b\""), "{err}");
    assert_eq!(
        text(&registry),
        before,
        "a failed registration leaves nothing behind"
    );

    // The same const labels twice.
    let other = Registry::new();
    let _a = Handle::builder()
        .registry(other.clone())
        .const_labels([("supervisor", "a")])
        .start()
        .unwrap();
    let err = Handle::builder()
        .registry(other.clone())
        .const_labels([("supervisor", "a")])
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::MetricsCollision { .. }), "{err:?}");
    // … and distinct values still register after the failed attempt.
    let _b = Handle::builder()
        .registry(other)
        .const_labels([("supervisor", "b")])
        .start()
        .unwrap();
    drop(first);
}

#[test]
fn a_const_label_reusing_keepwires_own_label_names_is_refused() {
    let err = Handle::builder()
        .const_labels([("stream", "x")])
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::Metrics(_)), "{err:?}");
    assert!(
        err.to_string().contains("supervisor"),
        "suggests a name: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_is_in_a_scrape_after_a_fault_a_recovery_and_a_hard_failure() {
    let emu = Emulator::start(fast_emulator()).unwrap();
    let registry = Registry::new();
    let mut cfg = fast_stream(&emu);
    let ibkr = cfg.ibkr_config_mut().unwrap();
    ibkr.tickle_interval = Duration::from_millis(100);
    ibkr.competing = CompetingPolicy::Yield;
    let kw = Handle::builder()
        .registry(registry.clone())
        .const_labels([("supervisor", "test")])
        .stream(cfg)
        .start()
        .unwrap();
    let _rx = kw
        .subscribe(
            STREAM,
            Subscription::market_data(265598, ["31", "84", "86"]),
        )
        .await
        .unwrap();
    wait_stream(&kw, STREAM, 10, "fully ready", |s| s.is_fully_ready()).await;
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();

    emu.inject(Fault::SessionLost);
    wait_stream(&kw, STREAM, 10, "recovered", |s| {
        s.recoveries == 1 && s.is_fully_ready()
    })
    .await;
    // A tickle that succeeded after the recovery.
    let ok_before = value(
        &registry.gather(),
        "keepwire_keepalives_total",
        &[("result", "ok")],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while value(
        &registry.gather(),
        "keepwire_keepalives_total",
        &[("result", "ok")],
    ) <= ok_before
    {
        assert!(std::time::Instant::now() < deadline, "no tickle within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let f = registry.gather();
    let s = [("stream", STREAM), ("supervisor", "test")];
    let with = |extra: (&'static str, &'static str)| [s[0], s[1], extra];
    assert_eq!(value(&f, "keepwire_stream_up", &s), 1.0);
    assert_eq!(value(&f, "keepwire_gateway_session_authenticated", &s), 1.0);
    assert_eq!(value(&f, "keepwire_gateway_session_competing", &s), 0.0);
    assert_eq!(value(&f, "keepwire_backoff_delay_seconds", &s), 0.0);
    assert!(
        value(
            &f,
            "keepwire_reconnects_total",
            &with(("reason", "session_lost"))
        ) >= 1.0
    );
    // At least the recovery waited for above (a session loss seen by both the tickle and the
    // socket may make a second, quick one on a loaded machine).
    assert!(value(&f, "keepwire_recovery_seconds", &s) >= 1.0);
    assert!(
        value(
            &f,
            "keepwire_frames_received_total",
            &with(("kind", "text"))
        ) > 0.0
    );
    assert!(value(&f, "keepwire_frames_sent_total", &with(("kind", "text"))) > 0.0);
    let first_ready = value(&f, "keepwire_time_to_first_ready_seconds", &s);
    assert!(first_ready > 0.0 && first_ready < 10.0, "{first_ready}");
    let last = value(&f, "keepwire_last_message_timestamp_seconds", &s);
    assert!(
        last >= t0 - 1.0 && last < t0 + 60.0,
        "a Unix time: {last} vs {t0}"
    );
    assert_eq!(
        value(&f, "keepwire_credential_expiry_timestamp_seconds", &s),
        0.0,
        "IBKR session ids have no known expiry"
    );

    emu.inject(Fault::CompetingSession);
    wait_stream(&kw, STREAM, 10, "failed", |s| {
        matches!(s.state, StreamState::Failed { .. })
    })
    .await;
    let f = registry.gather();
    assert_eq!(value(&f, "keepwire_stream_up", &s), 0.0);
    assert_eq!(
        value(&f, "keepwire_stream_state", &with(("state", "failed"))),
        1.0
    );
    assert_eq!(value(&f, "keepwire_gateway_session_competing", &s), 1.0);
    assert_eq!(
        value(
            &f,
            "keepwire_hard_failures_total",
            &with(("reason", "competing_session"))
        ),
        1.0
    );

    let names: BTreeMap<_, _> = f.iter().map(|f| (f.name().to_string(), f)).collect();
    for name in FAMILIES {
        let fam = names
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the scrape"));
        for m in fam.get_metric() {
            assert!(
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "supervisor" && l.value() == "test"),
                "{name}: const label on every series"
            );
        }
    }
    let keepwire: Vec<_> = names
        .keys()
        .filter(|n| n.starts_with("keepwire_"))
        .collect();
    assert_eq!(
        keepwire.len(),
        FAMILIES.len(),
        "an unlisted family: {keepwire:?}"
    );
    let scrape = text(&registry);
    assert!(!scrape.contains(&emu.session_id()), "no secret in a label");
    assert!(!scrape.contains("265598"), "no conid in a label");

    kw.shutdown().await;
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_of_a_jwt_is_exported_as_a_unix_time() {
    use keepwire::dialect::ticket::{SecretSource, TicketConfig};
    use keepwire::emulator::ticket::TicketConfig as ApiConfig;
    use keepwire::emulator::EmulatorConfig;

    const KEY_ENV: &str = "KEEPWIRE_TEST_METRICS_TICKET_KEY";
    let ttl = Duration::from_secs(600);
    let emu = Emulator::start(EmulatorConfig {
        ticket: ApiConfig {
            jwt_ttl: ttl,
            heartbeat_interval: Duration::from_millis(100),
            ..ApiConfig::default()
        },
        ..EmulatorConfig::default()
    })
    .unwrap();
    std::env::set_var(KEY_ENV, ApiConfig::default().api_key);
    let ticket = TicketConfig {
        token_secret: Some(SecretSource::Env(KEY_ENV.into())),
        origin: Some("https://app.example.test".into()),
        ..TicketConfig::default()
    };
    let registry = Registry::new();
    let kw = Handle::builder()
        .registry(registry.clone())
        .stream(keepwire::StreamConfig::ticket(
            "feed",
            emu.base_url(),
            ticket,
        ))
        .start()
        .unwrap();
    wait_stream(&kw, "feed", 10, "ready", |s| s.state == StreamState::Ready).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let f = registry.gather();
    let expiry = value(
        &f,
        "keepwire_credential_expiry_timestamp_seconds",
        &[("stream", "feed")],
    );
    let left = expiry - now;
    assert!(
        left > ttl.as_secs_f64() - 30.0 && left <= ttl.as_secs_f64() + 1.0,
        "expires in {left} s, the JWT lives {ttl:?}"
    );
    assert_eq!(
        value(
            &f,
            "keepwire_credential_refreshes_total",
            &[("stream", "feed"), ("result", "ok")]
        ),
        1.0
    );
    kw.shutdown().await;
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_scrape_holds_every_closed_label_set_at_zero() {
    let registry = Registry::new();
    // Nothing listens there: the stream only ever backs off, it never fails hard.
    let cfg = keepwire::StreamConfig::ibkr(STREAM, "http://127.0.0.1:9");
    let kw = Handle::builder()
        .registry(registry.clone())
        .stream(cfg)
        .start()
        .unwrap();
    let scrape = text(&registry);
    let families = registry.gather();
    kw.shutdown().await;
    for reason in keepwire::Failure::REASONS {
        assert!(
            scrape.contains(&format!(
                "keepwire_hard_failures_total{{reason=\"{reason}\",stream=\"{STREAM}\"}} 0"
            )),
            "keepwire_hard_failures_total for {reason} is not 0 in the first scrape:\n{scrape}"
        );
        value(
            &families,
            "keepwire_reconnects_total",
            &[("reason", reason)],
        );
        value(
            &families,
            "keepwire_keepalives_total",
            &[("result", reason)],
        );
    }
    value(
        &families,
        "keepwire_reconnects_total",
        &[("reason", "credentials_rotated")],
    );
    for state in StreamState::NAMES {
        value(&families, "keepwire_stream_state", &[("state", state)]);
    }
    for state in ["desired", "active", "pending", "failed"] {
        value(&families, "keepwire_subscriptions", &[("state", state)]);
    }
}

/// The exposition of every per-stream family after one call of each recorder, byte for byte as
/// `tests/metrics_scrape.golden` (made by the `prometheus` `…Vec` families keepwire used before
/// its per-stream cells): names, help, types, label order, zero series, a reason outside the
/// closed set, one stream registered twice.
#[test]
fn the_exposition_is_the_golden_scrape() {
    use keepwire::metrics::{FrameKind, Metrics};
    use keepwire::SubscriptionCounts;
    use prometheus::{Encoder, TextEncoder};
    let registry = Registry::new();
    let labels = BTreeMap::from([("supervisor".to_string(), "x".to_string())]);
    let m = Metrics::register_with(&registry, &labels).unwrap();
    let (a, b, a2) = (m.stream("alpha"), m.stream("beta"), m.stream("alpha"));
    a.state(&StreamState::Ready);
    b.state(&StreamState::Backoff {
        attempt: 2,
        delay_ms: 1500,
    });
    a.connect_attempts(3);
    a.reconnect("session_lost");
    a2.reconnect("session_lost");
    a.reconnect("credentials_rotated");
    b.reconnect("not_a_reason");
    a.credential_refresh(true);
    b.credential_refresh(false);
    a.credential_expiry(None);
    a.actor_restart("token_manager");
    a.subscriptions(&SubscriptionCounts {
        desired: 10,
        active: 7,
        pending: 2,
        failed: 1,
    });
    b.hard_failure("competing_session");
    a.recovery(0.3);
    b.gateway_session(true, true);
    a.keepalive("ok");
    b.keepalive("timeout");
    b.frame_received(FrameKind::Ping);
    a.frame_sent(FrameKind::Text);
    a.first_ready(Duration::from_millis(1250));
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    // The last message's time is now: only its presence is compared.
    assert!(
        text.contains("keepwire_last_message_timestamp_seconds{stream=\"beta\",supervisor=\"x\"} ")
    );
    let text: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("last_message_timestamp_seconds{"))
        .collect();
    let golden = include_str!("metrics_scrape.golden");
    assert_eq!(text.join("\n"), golden.trim_end());
}
