//! `keepwire demo`: the emulator and a supervisor in one process. Every IBKR fault of the failure
//! table is injected in turn; after each, the demo waits until the stream is Ready with every
//! subscription active and data flowing again on every contract, and records how long that took.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use keepwire::emulator::{Emulator, Fault};
use keepwire::{Event, Handle, StreamStatus};
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::scenario::{self, percentile, script, stream_config, subscriptions, Dialect};

const STREAM: &str = "ibkr";

/// Options of `keepwire demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How long to run, in seconds (every fault is injected at least once regardless).
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Seed for the fault order and timing.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print the summary as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
    /// Which dialect to run.
    #[arg(long, value_enum, default_value_t = Dialect::Ibkr)]
    pub dialect: Dialect,
}

/// When each subscription (by index) last delivered data.
type LastData = Arc<Mutex<BTreeMap<usize, Instant>>>;

fn data_since(last: &LastData, count: usize, t0: Instant) -> bool {
    let m = last.lock().unwrap_or_else(|e| e.into_inner());
    (0..count).all(|i| m.get(&i).is_some_and(|t| *t > t0))
}

fn line(s: &StreamStatus, done: usize, total: usize) -> String {
    format!(
        "[{done:>2}/{total}] {:<14} attempt {:>2}  subs {}/{}  msgs {:>7}  recoveries {:>2}  restarts {:?}",
        s.state.as_str(),
        s.attempt,
        s.subscriptions.active,
        s.subscriptions.desired,
        s.messages_received,
        s.recoveries,
        s.restarts.values().sum::<u64>(),
    )
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> ExitCode {
    let emu_cfg = scenario::emulator_config();
    let emu = match Emulator::start(emu_cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("keepwire demo: cannot start the emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let kw = match Handle::builder()
        .stream(stream_config(args.dialect, STREAM, &emu))
        .start()
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("keepwire demo: cannot start keepwire: {e}");
            return ExitCode::FAILURE;
        }
    };
    let last: LastData = Arc::default();
    let subs = subscriptions(args.dialect);
    let sub_count = subs.len();
    for (index, sub) in subs.into_iter().enumerate() {
        let mut rx = match kw.subscribe(STREAM, sub).await {
            Ok(rx) => rx,
            Err(e) => {
                eprintln!("keepwire demo: {e}");
                return ExitCode::FAILURE;
            }
        };
        let last = last.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if matches!(ev, Event::Data { .. }) {
                    last.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(index, Instant::now());
                }
            }
        });
    }

    let tty = std::io::stderr().is_terminal();
    let mut status = kw.status();
    let started = Instant::now();
    let total_time = Duration::from_secs(args.duration.max(1));
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut faults = script(args.dialect);
    // seeded order
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.gen_range(0..=i));
    }
    let n = faults.len();
    let slot = total_time / n as u32;

    let ready = |s: &keepwire::Status| s.stream(STREAM).is_some_and(|s| s.is_fully_ready());
    if tokio::time::timeout(Duration::from_secs(20), status.wait_for(ready))
        .await
        .is_err()
    {
        eprintln!("keepwire demo: the stream never became ready");
    }
    let mut recovery_ms = Vec::new();
    let mut unrecovered = Vec::new();
    let mut faults_injected = 0u64;
    for (i, f) in faults.iter().enumerate() {
        let due = started
            + slot * i as u32
            + Duration::from_millis(rng.gen_range(0..=slot.as_millis() as u64 / 4));
        tokio::time::sleep_until(due).await;
        let t0 = Instant::now();
        let recoveries_before = status.snapshot().stream(STREAM).map_or(0, |s| s.recoveries);
        for fault in &f.faults {
            emu.inject(fault.clone());
        }
        faults_injected += 1;
        if let Some(after) = f.approve_after {
            let emu = emu.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                emu.inject(Fault::ApproveLogin);
            });
        }
        // recovered = fully ready again and every contract delivered data after the fault
        let deadline = t0 + Duration::from_secs(30);
        let mut recovered = false;
        while Instant::now() < deadline {
            let s = status
                .snapshot()
                .stream(STREAM)
                .cloned()
                .unwrap_or_default();
            let reconnected = !f.disconnects || s.recoveries > recoveries_before;
            if reconnected && s.is_fully_ready() && data_since(&last, sub_count, t0) {
                recovered = true;
                break;
            }
            if tty {
                eprint!("\r{}   ", line(&s, i, n));
                let _ = std::io::stderr().flush();
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), status.changed()).await;
        }
        let took = t0.elapsed().as_millis() as u64;
        if recovered {
            recovery_ms.push(took);
        } else {
            unrecovered.push(f.name);
        }
        let verdict = if recovered {
            format!("recovered in {took} ms")
        } else {
            "NOT recovered".to_string()
        };
        if tty {
            eprint!("\r{}\r", " ".repeat(100));
        }
        eprintln!("fault {:>2}/{n}  {:<36} {verdict}", i + 1, f.name);
    }
    if let Some(rest) = (started + total_time).checked_duration_since(Instant::now()) {
        tokio::time::sleep(rest).await;
    }

    let s = status
        .snapshot()
        .stream(STREAM)
        .cloned()
        .unwrap_or_default();
    let mut sorted = recovery_ms.clone();
    sorted.sort_unstable();
    let c = emu.counters();
    let ok = unrecovered.is_empty() && s.hard_failures == 0 && s.is_fully_ready();
    let summary = serde_json::json!({
        "ok": ok,
        "duration_s": started.elapsed().as_secs_f64(),
        "seed": args.seed,
        "dialect": format!("{:?}", args.dialect).to_lowercase(),
        "faults_injected": faults_injected,
        "recoveries": recovery_ms.len(),
        "unrecovered": unrecovered,
        "hard_failures": s.hard_failures,
        "subscriptions_desired": s.subscriptions.desired,
        "subscriptions_active": s.subscriptions.active,
        "messages_received": s.messages_received,
        "events_dropped": s.events_dropped,
        "recovery_p50_ms": percentile(&sorted, 0.5),
        "recovery_p99_ms": percentile(&sorted, 0.99),
        "recovery_max_ms": sorted.last().copied().unwrap_or(0),
        "socket_reconnects": s.epoch.saturating_sub(1),
        "actor_restarts": s.restarts,
        "gateway": match args.dialect {
            Dialect::Ibkr => serde_json::json!({ "tickles": c.tickle, "ssodh_init": c.ssodh_init, "upgrades": c.ws_upgrades_accepted, "smd_subscribes": c.smd_subscribe }),
            Dialect::Ticket => serde_json::to_value(&c.ticket).unwrap_or_default(),
            Dialect::Signalr => serde_json::to_value(&c.hub).unwrap_or_default(),
        },
    });
    eprintln!(
        "\n{}: {} faults injected, {} recovered (p50 {} ms, p99 {} ms), {} hard failures, subscriptions {}/{} active, {} messages",
        if ok { "PASS" } else { "FAIL" },
        faults_injected,
        recovery_ms.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        s.hard_failures,
        s.subscriptions.active,
        s.subscriptions.desired,
        s.messages_received
    );
    if args.json {
        println!("{summary}");
    }
    kw.shutdown().await;
    emu.stop();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
