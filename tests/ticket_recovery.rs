//! The ticket dialect (seed 004): a JWT first, then a one-time ticket, then the socket — proven
//! against the emulator's ticket API, one test per scenario of the seed, plus the rules that a
//! ticket is never sent twice and that a JWT near expiry is refreshed before the dial.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::wait_stream;
use keepwire::dialect::ticket::{SecretSource, TicketConfig};
use keepwire::emulator::ticket::{TicketConfig as ApiConfig, TicketFault};
use keepwire::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};
use keepwire::{
    BackoffConfig, Event, Handle, StreamConfig, StreamState, StreamStatus, Subscription,
};

const STREAM: &str = "feed";
const ORIGIN: &str = "https://app.example.test";
const API_KEY_ENV: &str = "KEEPWIRE_TEST_TICKET_KEY";

fn emulator(api: ApiConfig) -> EmulatorHandle {
    Emulator::start(EmulatorConfig {
        ticket: api,
        ..EmulatorConfig::default()
    })
    .expect("emulator starts")
}

fn fast_api() -> ApiConfig {
    ApiConfig {
        heartbeat_interval: Duration::from_millis(100),
        data_interval: Duration::from_millis(20),
        ..ApiConfig::default()
    }
}

fn stream(emu: &EmulatorHandle, tweak: impl FnOnce(&mut TicketConfig)) -> StreamConfig {
    // SAFETY-free: every test sets the same value, so concurrent writers agree.
    std::env::set_var(API_KEY_ENV, "kw-ticket-key");
    let mut ticket = TicketConfig {
        token_secret: Some(SecretSource::Env(API_KEY_ENV.into())),
        origin: Some(ORIGIN.into()),
        ..TicketConfig::default()
    };
    tweak(&mut ticket);
    let mut cfg = StreamConfig::ticket(STREAM, emu.base_url(), ticket);
    cfg.heartbeat_timeout = Duration::from_secs(2);
    cfg.confirm_timeout = Duration::from_secs(2);
    cfg.backoff = BackoffConfig {
        reset_after: Duration::from_secs(2),
        ..BackoffConfig::default()
    };
    cfg
}

fn start(cfg: StreamConfig) -> Handle {
    Handle::builder()
        .stream(cfg)
        .start()
        .expect("keepwire starts")
}

async fn wait(
    kw: &Handle,
    secs: u64,
    what: &str,
    pred: impl Fn(&StreamStatus) -> bool,
) -> StreamStatus {
    wait_stream(kw, STREAM, secs, what, pred).await
}

async fn subscribe_trades(kw: &Handle) -> keepwire::channel::Receiver<Event> {
    kw.subscribe(
        STREAM,
        Subscription::Channel {
            channel: "trades.BTC-USD".into(),
        },
    )
    .await
    .unwrap()
}

async fn ready_with_data(kw: &Handle) -> keepwire::channel::Receiver<Event> {
    let mut rx = subscribe_trades(kw).await;
    wait(kw, 10, "fully ready", |s| s.is_fully_ready()).await;
    let data = common::next_data(&mut rx, 5, "data").await;
    assert_eq!(data["channel"], "trades.BTC-USD");
    rx
}

fn cache_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("keepwire-jwt-{}-{name}.json", std::process::id()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Seed 004, scenario 1: a fresh start with no JWT fetches one before asking for a ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_start_fetches_a_jwt_before_the_first_ticket_and_connects() {
    let emu = emulator(fast_api());
    let kw = start(stream(&emu, |_| {}));
    let _rx = ready_with_data(&kw).await;
    let c = emu.counters().ticket;
    assert_eq!(c.token_requests, 1);
    assert_eq!(
        c.ticket_without_jwt, 0,
        "never a ticket request without a JWT"
    );
    assert_eq!(c.ticket_requests, 1);
    assert_eq!(c.upgrades_accepted, 1);
    assert_eq!(c.subscribes, 1);
    kw.shutdown().await;
    emu.stop();
}

/// Seed 004, test 2: ten rapid restarts with a cached JWT, each with exactly one ticket request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_rapid_restarts_with_a_cached_jwt_each_connect_with_one_ticket_request() {
    let emu = emulator(fast_api());
    let cache = cache_path("restarts");
    let _ = std::fs::remove_file(&cache);
    for run in 1..=11u64 {
        let kw = start(stream(&emu, |t| t.jwt_cache = Some(cache.clone())));
        wait(&kw, 10, "ready", |s| s.state == StreamState::Ready).await;
        kw.shutdown().await;
        let c = emu.counters().ticket;
        assert_eq!(c.token_requests, 1, "run {run}: the cached JWT is reused");
        assert_eq!(c.ticket_requests, run, "run {run}: one ticket per connect");
        assert_eq!(c.invalid_token, 0);
    }
    let _ = std::fs::remove_file(&cache);
    emu.stop();
}

/// Seed 004, scenario 2 / test 3: a corrupted cached JWT gets one refresh, then connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_jwt_is_refreshed_once_and_then_connects() {
    let emu = emulator(fast_api());
    let cache = cache_path("corrupt");
    write_cache(&cache, r#"{"token":"invalid.jwt.token"}"#, 0o600);
    let kw = start(stream(&emu, |t| t.jwt_cache = Some(cache.clone())));
    let _rx = ready_with_data(&kw).await;
    let c = emu.counters().ticket;
    assert_eq!(c.invalid_token, 1, "the corrupted JWT was refused once");
    assert_eq!(c.token_requests, 1, "exactly one refresh");
    assert_eq!(c.ticket_requests, 2);
    let s = kw.status().snapshot().stream(STREAM).cloned().unwrap();
    assert_eq!(s.hard_failures, 0);
    kw.shutdown().await;
    let _ = std::fs::remove_file(&cache);
    emu.stop();
}

/// Seed 004, scenario 3: a JWT without its session is a hard failure — no further ticket requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_session_is_hard_and_no_further_ticket_is_requested() {
    let emu = emulator(fast_api());
    emu.inject(Fault::Ticket(TicketFault::MissingSession { on: true }));
    let kw = start(stream(&emu, |_| {}));
    let s = wait(&kw, 10, "failed", |s| {
        matches!(s.state, StreamState::Failed { .. })
    })
    .await;
    let StreamState::Failed { reason } = &s.state else {
        unreachable!()
    };
    assert!(
        reason.contains("MISSING_SESSION") && reason.contains("sign in again"),
        "{reason}"
    );
    assert_eq!(s.hard_failures, 1);
    let requests = emu.counters().ticket.ticket_requests;
    // Absence over time: give a retry loop ten initial backoff periods to show itself.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        emu.counters().ticket.ticket_requests,
        requests,
        "zero further ticket requests"
    );
    assert_eq!(requests, 1);
    kw.shutdown().await;
    emu.stop();
}

/// Seed 004, scenario 4: the ticket store is down — jittered backoff within bounds, then connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_store_outage_backs_off_within_bounds_and_then_connects() {
    let emu = emulator(fast_api());
    emu.inject(Fault::Ticket(TicketFault::StoreDown { millis: 3000 }));
    let kw = start(stream(&emu, |_| {}));
    // Record every backoff delay the stream announces until it is Ready.
    let mut rx = kw.status();
    let mut delays = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let s = rx.snapshot_and_update().stream(STREAM).cloned();
            if let Some(s) = s {
                if let StreamState::Backoff { attempt, delay_ms } = s.state {
                    if delays.last().map(|(a, _)| *a) != Some(attempt) {
                        delays.push((attempt, delay_ms));
                    }
                }
                if s.state == StreamState::Ready {
                    return s;
                }
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("connected after the outage");
    assert_eq!(outcome.hard_failures, 0);
    let refused = emu.counters().ticket.store_unavailable;
    assert!(refused >= 3, "{refused} refusals");
    assert!(!delays.is_empty(), "backoff was announced");
    // 250 ms · 2^(n−1), jittered ±50 %, never above the 5 s cap
    for (i, (_, d)) in delays.iter().enumerate() {
        let nominal = 250u64 << i.min(5);
        assert!(
            *d >= (nominal / 2).min(5000) && *d <= (nominal * 3 / 2).min(5000),
            "delay {i} = {d} ms: {delays:?}"
        );
    }
    kw.shutdown().await;
    emu.stop();
}

/// Seed 004, scenario 5: a 1008 `ORIGIN_BLOCKED` close is hard — no reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_blocked_close_is_hard_and_never_reconnects() {
    let emu = emulator(fast_api());
    let kw = start(stream(&emu, |t| {
        t.origin = Some("https://evil.example.test".into())
    }));
    let s = wait(&kw, 10, "failed", |s| {
        matches!(s.state, StreamState::Failed { .. })
    })
    .await;
    let StreamState::Failed { reason } = &s.state else {
        unreachable!()
    };
    assert!(
        reason.contains("1008") && reason.contains("ORIGIN_BLOCKED"),
        "{reason}"
    );
    let c = emu.counters().ticket;
    assert_eq!(c.origin_blocked, 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        emu.counters().ticket.ticket_requests,
        c.ticket_requests,
        "no reconnect"
    );
    kw.shutdown().await;
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_is_never_sent_twice_even_after_a_failed_dial() {
    let emu = emulator(fast_api());
    let kw = start(stream(&emu, |_| {}));
    let _rx = ready_with_data(&kw).await;
    for i in 1..=3u64 {
        if i == 2 {
            emu.inject(Fault::Ticket(TicketFault::ReuseNextTicket));
        }
        emu.inject(Fault::Ticket(TicketFault::Drop));
        wait(&kw, 10, "recovered", |s| {
            s.recoveries == i && s.is_fully_ready()
        })
        .await;
    }
    let c = emu.counters().ticket;
    assert_eq!(
        c.ticket_presented_twice, 0,
        "no ticket was ever presented twice"
    );
    assert_eq!(
        c.ticket_reused, 1,
        "the ticket spent elsewhere was refused once"
    );
    assert_eq!(
        c.ticket_requests,
        c.upgrades_accepted + c.upgrades_rejected,
        "one ticket per dial"
    );
    assert_eq!(c.token_requests, 1, "a refused ticket is not a JWT problem");
    kw.shutdown().await;
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_near_expiry_is_refreshed_before_the_dial_not_after_a_failure() {
    let emu = emulator(fast_api());
    let cache = cache_path("near-expiry");
    let now = unix_now();
    // a JWT the server no longer knows, issued 14m40s ago for 15 minutes: 20 s left (< 30 s skew)
    let cached = serde_json::json!({"token": "old.jwt.token", "issued_at": now - 880, "expires_at": now + 20});
    write_cache(&cache, &cached.to_string(), 0o600);
    let kw = start(stream(&emu, |t| t.jwt_cache = Some(cache.clone())));
    let _rx = ready_with_data(&kw).await;
    let c = emu.counters().ticket;
    assert_eq!(c.token_requests, 1, "refreshed first");
    assert_eq!(
        c.invalid_token, 0,
        "the near-expiry JWT was never presented"
    );
    assert_eq!(c.ticket_requests, 1);
    kw.shutdown().await;
    let _ = std::fs::remove_file(&cache);
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_that_expires_mid_run_is_refreshed_once_and_subscriptions_are_replayed() {
    let emu = emulator(fast_api());
    let kw = start(stream(&emu, |_| {}));
    let _rx = ready_with_data(&kw).await;
    emu.inject(Fault::Ticket(TicketFault::ExpireJwts));
    emu.inject(Fault::Ticket(TicketFault::Drop));
    wait(&kw, 10, "recovered", |s| {
        s.recoveries == 1 && s.is_fully_ready()
    })
    .await;
    let c = emu.counters().ticket;
    assert_eq!(c.invalid_token, 1);
    assert_eq!(c.token_requests, 2, "one refresh");
    assert_eq!(
        c.subscribes, 2,
        "the channel was replayed on the new socket"
    );
    kw.shutdown().await;
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_secret_is_hard_and_names_the_fix() {
    let emu = emulator(fast_api());
    let kw = start(stream(&emu, |t| {
        t.token_secret = Some(SecretSource::Value("wrong".into()))
    }));
    let s = wait(&kw, 10, "failed", |s| {
        matches!(s.state, StreamState::Failed { .. })
    })
    .await;
    let StreamState::Failed { reason } = &s.state else {
        unreachable!()
    };
    assert!(
        reason.contains("check the token secret") && !reason.contains("wrong"),
        "{reason}"
    );
    assert_eq!(
        emu.counters().ticket.ticket_requests,
        0,
        "no ticket without a JWT"
    );
    kw.shutdown().await;
    emu.stop();
}

/// The URL rule: a 307 from the ticket endpoint is not followed — not one request reaches the
/// other port — and the stream stops with a reason naming the status and the target's origin
/// (never its path or query).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_307_from_the_ticket_endpoint_to_another_port_is_not_followed_and_names_why() {
    let emu = emulator(fast_api());
    let elsewhere = emulator(fast_api());
    let target = format!("{}/api/v1/ws-ticket?steal=1", elsewhere.base_url());
    emu.inject(Fault::Ticket(TicketFault::RedirectTicket {
        status: 307,
        location: target,
    }));
    let kw = start(stream(&emu, |_| {}));
    let s = wait(&kw, 10, "failed", |s| {
        matches!(s.state, StreamState::Failed { .. })
    })
    .await;
    let StreamState::Failed { reason } = &s.state else {
        unreachable!()
    };
    assert!(
        reason.contains("307")
            && reason.contains(&elsewhere.base_url())
            && reason.contains("not followed"),
        "{reason}"
    );
    assert!(!reason.contains("steal"), "no path or query: {reason}");
    assert_eq!(emu.counters().ticket.ticket_requests, 1);
    let other = elsewhere.counters().ticket;
    assert_eq!(
        (other.ticket_requests, other.token_requests),
        (0, 0),
        "the redirect target saw no request"
    );
    kw.shutdown().await;
    emu.stop();
    elsewhere.stop();
}

/// Writes a JWT cache as keepwire does: readable by its owner only (keepwire refuses others).
fn write_cache(path: &PathBuf, text: &str, mode: u32) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// A loopback HTTP server that answers every request with `status` and the JSON `body`.
fn answering(status: &'static str, body: String) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_char_error_body_is_shown_capped_at_200_chars() {
    let code = format!("BEGIN{}END", "x".repeat(10_000));
    let addr = answering(
        "401 Unauthorized",
        serde_json::json!({ "code": code }).to_string(),
    );
    std::env::set_var(API_KEY_ENV, "kw-ticket-key");
    let ticket = TicketConfig {
        token_secret: Some(SecretSource::Env(API_KEY_ENV.into())),
        ..TicketConfig::default()
    };
    let kw = start(StreamConfig::ticket(
        STREAM,
        format!("http://{addr}"),
        ticket,
    ));
    let s = wait(&kw, 10, "failed", |s| {
        matches!(s.state, StreamState::Failed { .. })
    })
    .await;
    kw.shutdown().await;
    let status = serde_json::to_string(&s).unwrap();
    assert!(
        status.contains("BEGINxxx"),
        "the server's code is shown: {status}"
    );
    assert!(
        !status.contains("END"),
        "the server's text is cut: {status}"
    );
    assert!(
        !status.contains(&"x".repeat(201)),
        "more than 200 chars of server text in the status"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_cache_readable_by_others_stops_the_stream_naming_chmod_600_and_fetches_nothing() {
    let emu = emulator(fast_api());
    let cache = cache_path("world-readable");
    let now = unix_now();
    let cached =
        serde_json::json!({"token": "leaked.jwt.token", "issued_at": now, "expires_at": now + 900});
    write_cache(&cache, &cached.to_string(), 0o644);
    let kw = start(stream(&emu, |t| t.jwt_cache = Some(cache.clone())));
    let s = wait(&kw, 10, "failed", |s| {
        matches!(s.state, StreamState::Failed { .. })
    })
    .await;
    kw.shutdown().await;
    let c = emu.counters().ticket;
    let _ = std::fs::remove_file(&cache);
    emu.stop();
    let StreamState::Failed { reason } = &s.state else {
        unreachable!()
    };
    assert!(
        reason.contains(&format!("chmod 600 {}", cache.display())),
        "{reason}"
    );
    assert!(!reason.contains("leaked.jwt.token"), "{reason}");
    assert_eq!(c.ticket_requests, 0, "the exposed JWT was never presented");
    assert_eq!(
        c.token_requests, 0,
        "nothing is fetched while the cache is refused"
    );
}

/// A WebSocket server that accepts every upgrade, then sends 125-byte pings as fast as the
/// socket takes them and never reads again. Counts the pings it sent.
fn ping_flood_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let sent = counter.clone();
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).to_string();
                let Some(key) = text.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| v.trim().to_string())
                }) else {
                    return;
                };
                let accept = actix_http::ws::hash_key(key.as_bytes());
                let head = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
                    String::from_utf8_lossy(&accept)
                );
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let mut ping = vec![0x89u8, 125];
                ping.extend_from_slice(&[b'p'; 125]);
                let batch = ping.repeat(64);
                // From here on nothing is read: keepwire's pongs pile up.
                while conn.write_all(&batch).is_ok() {
                    sent.fetch_add(64, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, sent)
}

/// This process's resident memory (Linux; 0 elsewhere).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_floods_pings_and_never_reads_is_a_soft_failure_with_bounded_memory() {
    let rss_before = rss_bytes();
    let emu = emulator(fast_api());
    let (flood, sent) = ping_flood_server();
    let kw = start(stream(&emu, |t| {
        t.socket_url = Some(format!("ws://{flood}/ws"));
        t.ready_type = None;
    }));
    let s = wait(&kw, 30, "the flood given up as backpressure", |s| {
        s.last_failure
            .as_ref()
            .is_some_and(|f| f.reason == "backpressure")
    })
    .await;
    let pings = sent.load(std::sync::atomic::Ordering::Relaxed);
    let grown = rss_bytes().saturating_sub(rss_before);
    let metrics = prometheus::TextEncoder::new()
        .encode_to_string(&kw.registry().gather())
        .unwrap();
    kw.shutdown().await;
    emu.stop();
    let failure = s.last_failure.unwrap();
    assert_eq!(failure.class, "soft", "{failure:?}");
    assert!(
        !matches!(s.state, StreamState::Failed { .. }),
        "a flood is not a hard failure: {:?}",
        s.state
    );
    assert!(
        failure.message.contains("stopped reading"),
        "the reason is clear: {}",
        failure.message
    );
    assert!(
        pings as usize > keepwire::outbox::MAX_QUEUED_FRAMES,
        "the flood was real: {pings} pings"
    );
    // The outbox holds at most 4 MiB; before it was bounded this grew by ~70 MB a second.
    assert!(
        grown < 128 << 20,
        "memory grew by {} MB during the flood",
        grown >> 20
    );
    assert!(
        !metrics.contains(&format!(
            "keepwire_reconnects_total{{reason=\"backpressure\",stream=\"{STREAM}\"}} 0"
        )),
        "the reconnect is counted by its reason: {metrics}"
    );
}

/// Data goes from the socket reader straight to the consumers; a channel whose every receiver
/// was dropped is still really unsubscribed (at its next message), while a channel with a live
/// receiver keeps its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_receivers_are_all_dropped_is_unsubscribed_at_its_next_message() {
    let emu = emulator(fast_api());
    let kw = start(stream(&emu, |_| {}));
    let rx = ready_with_data(&kw).await;
    let mut other = kw
        .subscribe(
            STREAM,
            Subscription::Channel {
                channel: "trades.ETH-USD".into(),
            },
        )
        .await
        .unwrap();
    wait(&kw, 10, "both active", |s| s.subscriptions.active == 2).await;
    drop(rx);
    wait(&kw, 10, "the orphaned channel forgotten", |s| {
        s.subscriptions.desired == 1 && s.subscriptions.active == 1
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while emu.counters().ticket.unsubscribes == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never saw the unsubscribe"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(emu.counters().ticket.unsubscribes, 1);
    let data = common::next_data(&mut other, 5, "data on the live channel").await;
    assert_eq!(data["channel"], "trades.ETH-USD");
    kw.shutdown().await;
    emu.stop();
}

fn channel(name: &str) -> Subscription {
    Subscription::Channel {
        channel: name.into(),
    }
}

/// One receiver can serve several subscriptions: every event names its topic, the same topic
/// twice is one subscription, unsubscribing one leaves the receiver open for the others and it
/// ends with the last. A call with one subscription the dialect refuses subscribes to none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_receiver_serves_many_subscriptions_and_ends_with_the_last_of_them() {
    let emu = emulator(fast_api());
    let kw = start(stream(&emu, |_| {}));
    let (btc, eth) = ("trades.BTC-USD", "trades.ETH-USD");

    let refused = kw
        .subscribe_many(
            STREAM,
            [channel(btc), Subscription::market_data(1, ["31"])],
            64,
        )
        .await;
    assert!(
        matches!(&refused, Err(keepwire::Error::Subscribe { reason, .. }) if reason.contains("channel subscriptions")),
        "{refused:?}"
    );
    wait(&kw, 10, "ready with nothing subscribed", |s| {
        s.state == StreamState::Ready && s.subscriptions.desired == 0
    })
    .await;

    let mut rx = kw
        .subscribe_many(STREAM, [channel(btc), channel(eth), channel(btc)], 1024)
        .await
        .unwrap();
    let (mut states, mut data) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(data.iter().any(|t: &String| t == btc) && data.iter().any(|t: &String| t == eth)) {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("data on both topics within 10 s")
            .expect("the receiver stays open");
        match event {
            Event::State { topic, .. } => states.push(topic.to_string()),
            Event::Data { topic, data: d } => {
                assert_eq!(d["channel"], &*topic, "an event names its own topic");
                data.push(topic.to_string());
            }
        }
    }
    assert!(
        states.iter().any(|t| t == btc) && states.iter().any(|t| t == eth),
        "{states:?}"
    );
    let s = wait(&kw, 10, "both active", |s| s.subscriptions.active == 2).await;
    assert_eq!(
        s.subscriptions.desired, 2,
        "the topic asked for twice is one subscription"
    );

    assert!(kw.unsubscribe(STREAM, channel(btc)).await.unwrap());
    while rx.try_recv().is_some() {}
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(Event::Data { topic, .. })) => {
                assert_eq!(&*topic, eth, "data after its unsubscribe returned")
            }
            Ok(Some(Event::State { topic, .. })) => assert_eq!(&*topic, eth),
            other => panic!("the receiver must stay open for {eth}: {other:?}"),
        }
    }

    assert!(kw.unsubscribe(STREAM, channel(eth)).await.unwrap());
    while rx.try_recv().is_some() {}
    let end = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert!(
        matches!(end, Ok(None)),
        "the receiver ends with its last subscription: {end:?}"
    );
    kw.shutdown().await;
    emu.stop();
}

/// Idle cost is linear in streams: a Ready stream with nothing happening on it publishes no new
/// status, so readers of the status watch are woken only by a real change (they used to be
/// woken ten times a second per stream, each time with a fresh copy of an unchanged status).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_readers_are_woken_only_by_a_change() {
    let emu = emulator(ApiConfig {
        heartbeat_interval: Duration::from_secs(30),
        ..fast_api()
    });
    let mut cfg = stream(&emu, |_| {});
    cfg.heartbeat_timeout = Duration::from_secs(60);
    let kw = start(cfg);
    wait(&kw, 10, "ready", |s| s.state == StreamState::Ready).await;
    let mut status = kw.status();
    let mut last = status.snapshot_and_update().stream(STREAM).cloned();
    let (mut woken, mut unchanged) = (0, 0);
    let window = tokio::time::sleep(Duration::from_millis(1500));
    tokio::pin!(window);
    loop {
        tokio::select! {
            _ = &mut window => break,
            changed = status.changed() => {
                changed.unwrap();
                woken += 1;
                let now = status.snapshot_and_update().stream(STREAM).cloned();
                if now == last {
                    unchanged += 1;
                }
                last = now;
            }
        }
    }
    assert_eq!(
        unchanged, 0,
        "{unchanged} of {woken} wake-ups of a status reader carried no change"
    );
    kw.shutdown().await;
    emu.stop();
}

/// `Handle::spawn`: a consumer on keepwire's own thread gets the data there (no hop between
/// threads), and ends with the shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_spawned_on_keepwires_thread_receives_there_and_ends_with_shutdown() {
    let emu = emulator(fast_api());
    let kw = start(stream(&emu, |_| {}));
    let mut rx = subscribe_trades(&kw).await;
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    kw.spawn(async move {
        let _ended = ended_tx; // dropped when the task ends or is dropped with the thread
        let mut seen = Some(seen_tx);
        while let Some(event) = rx.recv().await {
            if matches!(event, Event::Data { .. }) {
                if let Some(tx) = seen.take() {
                    let thread = std::thread::current().name().map(str::to_string);
                    let _ = tx.send(thread);
                }
            }
        }
    })
    .unwrap();
    let thread = tokio::time::timeout(Duration::from_secs(10), seen_rx)
        .await
        .expect("data within 10 s")
        .unwrap();
    assert_eq!(thread.as_deref(), Some("keepwire"));
    kw.shutdown().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), ended_rx)
            .await
            .is_ok(),
        "the task ends with the shutdown"
    );
    assert!(
        kw.spawn(async {}).is_err(),
        "nothing runs after the shutdown"
    );
    emu.stop();
}

/// A status snapshot held across `.await`s never holds up keepwire: the stream still connects,
/// subscribes and publishes while a reader keeps an old snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_snapshot_held_across_awaits_never_blocks_keepwire() {
    let emu = emulator(fast_api());
    let kw = start(stream(&emu, |_| {}));
    let held = kw.status().snapshot();
    let _rx = ready_with_data(&kw).await;
    assert!(
        !held.stream(STREAM).is_some_and(|s| s.is_fully_ready()),
        "the held snapshot is the old status"
    );
    assert!(kw
        .status()
        .snapshot()
        .stream(STREAM)
        .unwrap()
        .is_fully_ready());
    drop(held);
    kw.shutdown().await;
    emu.stop();
}
