//! `keepwire chaos --storm`: every stream loses its socket at once, against a gateway that admits
//! only so many upgrades a second (beyond that, 429 with `Retry-After`). Reports how the herd
//! came back: attempts per stream, time until each was Ready again, the peak of attempts in any
//! 100 ms window next to the admission rate, credential fetches per credential generation, and
//! whether anybody gave up.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use keepwire::emulator::ticket::TicketFault;
use keepwire::emulator::{Emulator, Fault};
use keepwire::{Handle, Status, StreamState};
use serde::Serialize;
use tokio::time::Instant;

use super::ChaosArgs;
use crate::cli::scenario::{self, percentile, Dialect};

#[derive(Debug, Serialize)]
struct StormReport {
    seed: u64,
    streams: usize,
    admission_per_s: u32,
    upgrade_attempts: u64,
    attempts_per_stream_mean: f64,
    attempts_per_stream_max: u64,
    ready_p50_ms: u64,
    ready_p99_ms: u64,
    ready_max_ms: u64,
    peak_attempts_per_100ms: u64,
    admitted_per_100ms: f64,
    credential_fetches: u64,
    new_credential_generations: u64,
    credential_fetches_per_generation: f64,
    gave_up: u64,
    violations: Vec<String>,
}

/// The most attempts inside any 100 ms window.
fn peak_per_100ms(times: &[Instant]) -> u64 {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let window = Duration::from_millis(100);
    let (mut peak, mut lo) = (0usize, 0usize);
    for hi in 0..sorted.len() {
        while sorted[hi].saturating_duration_since(sorted[lo]) >= window {
            lo += 1;
        }
        peak = peak.max(hi + 1 - lo);
    }
    peak as u64
}

fn generations(status: &Status) -> u64 {
    status
        .streams
        .values()
        .fold(0u64, |a, s| a.saturating_add(s.credential_generation))
}

fn ready_epochs(status: &Status) -> BTreeMap<String, Option<u64>> {
    status
        .streams
        .iter()
        .map(|(n, s)| (n.to_string(), s.is_fully_ready().then_some(s.epoch)))
        .collect()
}

/// Runs `keepwire chaos --storm`.
pub async fn run(args: &ChaosArgs) -> ExitCode {
    let n = args.streams.max(1);
    let admission = args.admission.max(1);
    let mut emu_cfg = scenario::emulator_config();
    emu_cfg.ticket.upgrades_per_second = Some(admission);
    let emu = match Emulator::start(emu_cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("keepwire chaos --storm: cannot start the emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut builder = Handle::builder();
    let names: Vec<String> = (0..n).map(|i| format!("storm-{i}")).collect();
    for name in &names {
        builder = builder.stream(scenario::stream_config(Dialect::Ticket, name, &emu));
    }
    let kw = match builder.start() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("keepwire chaos --storm: cannot start keepwire: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sub = scenario::subscriptions(Dialect::Ticket).remove(0);
    let mut consumers = Vec::with_capacity(n);
    for name in &names {
        match kw.subscribe(name, sub.clone()).await {
            Ok(rx) => consumers.push(rx),
            Err(e) => {
                eprintln!("keepwire chaos --storm: subscribing on {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Consumers are drained now and then; their queues drop the oldest beyond capacity.
    let mut status = kw.status();
    let mut violations = Vec::new();
    // Everyone Ready first (that is a storm of its own, through the same admission).
    let bound = Duration::from_secs(30) + Duration::from_secs(3 * n as u64 / u64::from(admission));
    let all_ready =
        |s: &Status| s.streams.len() == n && s.streams.values().all(|s| s.is_fully_ready());
    let deadline = Instant::now() + bound;
    while !all_ready(&status.snapshot()) {
        tokio::select! {
            _ = status.changed() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    if !all_ready(&status.snapshot()) {
        violations.push(format!(
            "not every stream Ready within {} ms of starting",
            bound.as_millis()
        ));
    }
    // The storm meets a fresh admission window: the gateway's window lasts a second from the
    // first upgrade in it, so one the ready phase's last upgrades used could otherwise admit
    // part of the storm before it runs out and a new one admits the rest.
    if let Some(last) = emu.ticket_upgrade_attempts().last() {
        tokio::time::sleep_until(*last + Duration::from_secs(1)).await;
    }
    let before: BTreeMap<String, Option<u64>> = ready_epochs(&status.snapshot());
    let generations_before = generations(&status.snapshot());
    let counters_before = emu.counters();
    let attempts_before = emu.ticket_upgrade_attempts().len();
    let t0 = Instant::now();
    emu.inject(Fault::Ticket(TicketFault::Drop));
    let mut back: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = t0 + bound;
    loop {
        for (name, epoch) in ready_epochs(&status.snapshot()) {
            let was = before.get(&name).copied().flatten();
            if epoch.is_some() && epoch != was && !back.contains_key(&name) {
                back.insert(name, t0.elapsed());
            }
        }
        for rx in &mut consumers {
            while rx.try_recv().is_some() {}
        }
        if back.len() == n {
            break;
        }
        tokio::select! {
            _ = status.changed() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    if back.len() < n {
        violations.push(format!(
            "{} of {n} streams not Ready again within {} ms of losing their sockets",
            n - back.len(),
            bound.as_millis()
        ));
    }
    let counters_after = emu.counters();
    let attempts: Vec<Instant> = emu
        .ticket_upgrade_attempts()
        .into_iter()
        .skip(attempts_before)
        .collect();
    let final_status = status.snapshot();
    let gave_up = final_status
        .streams
        .values()
        .filter(|s| matches!(s.state, StreamState::Failed { .. }))
        .count() as u64;
    if gave_up > 0 {
        violations.push(format!("{gave_up} stream(s) gave up (Failed)"));
    }
    // Every JWT fetched during the storm must be a new generation, and no generation fetched
    // twice: losing a socket is no reason to fetch credentials at all.
    let new_generations = generations(&final_status).saturating_sub(generations_before);
    let fetches = counters_after
        .ticket
        .token_requests
        .saturating_sub(counters_before.ticket.token_requests);
    let fetches_per_generation = if new_generations == 0 {
        fetches as f64
    } else {
        fetches as f64 / new_generations as f64
    };
    if fetches > new_generations {
        violations.push(format!(
            "{fetches} credential fetches for {new_generations} new credential generations"
        ));
    }
    let reused = counters_after.ticket.ticket_presented_twice
        - counters_before.ticket.ticket_presented_twice;
    if reused > 0 {
        violations.push(format!("{reused} ticket(s) presented twice"));
    }
    let mut ready: Vec<u64> = back.values().map(|d| d.as_millis() as u64).collect();
    ready.sort_unstable();
    let upgrade_attempts = attempts.len() as u64;
    // Per-stream attempts are not visible at the gateway; the status knows each stream's.
    let per_stream_max = final_status
        .streams
        .values()
        .map(|s| u64::from(s.attempt))
        .max()
        .unwrap_or(0);
    let report = StormReport {
        seed: args.seed,
        streams: n,
        admission_per_s: admission,
        upgrade_attempts,
        attempts_per_stream_mean: upgrade_attempts as f64 / n as f64,
        attempts_per_stream_max: per_stream_max,
        ready_p50_ms: percentile(&ready, 0.5),
        ready_p99_ms: percentile(&ready, 0.99),
        ready_max_ms: ready.last().copied().unwrap_or(0),
        peak_attempts_per_100ms: peak_per_100ms(&attempts),
        admitted_per_100ms: f64::from(admission) / 10.0,
        credential_fetches: fetches,
        new_credential_generations: new_generations,
        credential_fetches_per_generation: fetches_per_generation,
        gave_up,
        violations,
    };
    kw.shutdown().await;
    emu.stop();
    println!(
        "storm: {} streams lost their sockets at once; the gateway admits {} upgrades/s",
        report.streams, report.admission_per_s
    );
    println!(
        "back to Ready: p50 {} ms, p99 {} ms, max {} ms; {} upgrade attempts ({:.2} per stream)",
        report.ready_p50_ms,
        report.ready_p99_ms,
        report.ready_max_ms,
        report.upgrade_attempts,
        report.attempts_per_stream_mean
    );
    println!(
        "peak attempts in any 100 ms: {} (the gateway admits {:.0} per 100 ms: {:.1}× its rate)",
        report.peak_attempts_per_100ms,
        report.admitted_per_100ms,
        report.peak_attempts_per_100ms as f64 / report.admitted_per_100ms.max(1.0)
    );
    println!(
        "credential fetches during the storm: {} for {} new generations; gave up: {}",
        report.credential_fetches, report.new_credential_generations, report.gave_up
    );
    for v in &report.violations {
        println!("VIOLATION (storm, seed {}): {v}", report.seed);
    }
    println!("{} violation(s)", report.violations.len());
    super::finish(args.json, &report, !report.violations.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_counts_attempts_inside_any_100ms_window() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        assert_eq!(peak_per_100ms(&[]), 0);
        assert_eq!(
            peak_per_100ms(&[at(0), at(50), at(99), at(100), at(150)]),
            3
        );
        assert_eq!(peak_per_100ms(&[at(0), at(200), at(400)]), 1);
    }
}
