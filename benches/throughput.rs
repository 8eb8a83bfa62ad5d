//! End-to-end throughput of keepwire: the emulator streams IBKR `smd` messages as fast as its
//! timer allows, keepwire parses each once, routes it and hands it to consumers. Printed next to
//! the cost of parsing alone, measured in the same run, so the figures are ratios on this machine
//! rather than absolutes that a noisy shared machine would make meaningless.
//!
//! `cargo bench --bench throughput` (5 s per figure; `KW_BENCH_STREAMS=200` for a heavier load). Run by `cargo test --all-targets` as a
//! 0.3 s smoke run that only checks that data flows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keepwire::emulator::{Emulator, EmulatorConfig};
use keepwire::{Event, Handle, StreamConfig, Subscription};

/// Streams subscribed (`KW_BENCH_STREAMS` overrides); each gets one message a millisecond.
fn streams() -> u64 {
    std::env::var("KW_BENCH_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Messages per second that `serde_json` alone parses (the floor the reference measured).
fn parse_only(window: Duration) -> f64 {
    let msg = r#"{"31":"189.60","84":"189.56","85":"500","86":"189.61","88":"200","7059":"100","_updated":1712596911593,"conid":8314,"conidEx":"8314","server_id":"q2","topic":"smd+8314"}"#;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        for _ in 0..1000 {
            let v: serde_json::Value =
                serde_json::from_str(std::hint::black_box(msg)).unwrap_or_default();
            std::hint::black_box(v);
        }
        n += 1000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let window = if bench {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(300)
    };

    let emu = Emulator::start(EmulatorConfig {
        heartbeat_interval: Duration::from_secs(1),
        market_data_interval: Duration::from_millis(1),
        ..EmulatorConfig::default()
    })
    .expect("emulator");
    let mut cfg = StreamConfig::ibkr("bench", emu.base_url());
    cfg.heartbeat_timeout = Duration::from_secs(10);
    let kw = Handle::builder().stream(cfg).start().expect("keepwire");
    let received = Arc::new(AtomicU64::new(0));
    let mut queues = Vec::new();
    let count = streams();
    for conid in 0..count {
        let mut rx = kw
            .subscribe_with_capacity(
                "bench",
                Subscription::market_data(conid + 1, ["31", "84", "86"]),
                1 << 16,
            )
            .await
            .expect("subscribe");
        let received = received.clone();
        queues.push(tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if matches!(e, Event::Data { .. }) {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            rx.dropped()
        }));
    }
    let mut status = kw.status();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        status
            .wait_for(|s| s.stream("bench").is_some_and(|s| s.is_fully_ready()))
            .await
            .map(|_| ())
    })
    .await;
    // (the watch's read guard is dropped at once: holding it would block keepwire's thread)
    assert!(matches!(ready, Ok(Ok(()))), "the stream became ready");

    let (sent0, got0, t0) = (
        emu.counters().messages_sent,
        received.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let secs = t0.elapsed().as_secs_f64();
    let sent = (emu.counters().messages_sent - sent0) as f64 / secs;
    let got = (received.load(Ordering::Relaxed) - got0) as f64 / secs;
    let status_now = kw
        .status()
        .snapshot()
        .stream("bench")
        .cloned()
        .unwrap_or_default();
    kw.shutdown().await;
    emu.stop();
    let mut dropped = 0;
    for q in queues {
        dropped += q.await.unwrap_or(0);
    }
    assert!(got > 0.0, "data reached the consumers");
    if !bench {
        println!("throughput smoke run: {got:.0} msg/s delivered (run `cargo bench --bench throughput` for figures)");
        return;
    }
    let ceiling = parse_only(window);
    println!(
        "keepwire throughput, {count} smd streams, {:.1} s window, one run on this machine:",
        secs
    );
    println!("  emulator sent            {sent:>12.0} msg/s");
    println!(
        "  delivered to consumers   {got:>12.0} msg/s   ({:.1} % of sent)",
        100.0 * got / sent.max(1.0)
    );
    println!(
        "  serde_json parse alone   {ceiling:>12.0} msg/s   (keepwire end to end = {:.1} % of it)",
        100.0 * got / ceiling
    );
    println!(
        "  dropped for slow consumers {dropped}, reconnects {}",
        status_now.epoch.saturating_sub(1)
    );
    if let Some(rss) = rss_kib() {
        println!("  resident memory          {:>9} KiB (emulator, keepwire and the bench in one process)", rss);
    }
}
