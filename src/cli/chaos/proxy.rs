//! `keepwire chaos --proxy-to HOST:PORT`: a TCP fault proxy ([`keepwire::proxy`], Toxiproxy's
//! model) between keepwire and any gateway — a real one, or the emulator. It listens on loopback
//! (`--listen`, default a free port of 127.0.0.1), prints the address to point keepwire at, waits
//! for the first connection, then applies a seeded schedule of `--faults` toxics (each for a
//! while, some overlapping), printing each as it starts and ends. A report follows (with
//! `--json`, as one JSON object on the last line of stdout): toxics applied by kind, connections,
//! bytes each way, resets.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use keepwire::proxy::{schedule, FaultProxy, Planned, ProxyStats};
use serde::Serialize;
use tokio::time::Instant;

use super::ChaosArgs;

/// Toxics of a run when `--faults` is not given.
const DEFAULT_TOXICS: usize = 20;

/// The report of a proxy run.
#[derive(Serialize)]
struct Report {
    mode: &'static str,
    seed: u64,
    listen: String,
    upstream: String,
    toxics_planned: usize,
    toxics_applied: usize,
    toxics_by_kind: BTreeMap<&'static str, u64>,
    toxic_errors: Vec<String>,
    connections: u64,
    bytes_upstream: u64,
    bytes_downstream: u64,
    resets: u64,
    elapsed_s: f64,
}

/// One step of the timeline.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// A toxic is removed (before any toxic added at the same instant).
    Remove(usize),
    /// A toxic is added.
    Add(usize),
}

/// Adds and removals of `plan` in time order (same plan, same order).
fn timeline(plan: &[Planned]) -> Vec<(Duration, Step)> {
    let mut steps: Vec<(Duration, Step)> = plan
        .iter()
        .enumerate()
        .flat_map(|(i, p)| [(p.at, Step::Add(i)), (p.until(), Step::Remove(i))])
        .collect();
    steps.sort();
    steps
}

/// Runs proxy mode against `upstream`.
pub async fn run(args: &ChaosArgs, upstream: &str) -> ExitCode {
    let proxy = match FaultProxy::start(args.listen, upstream) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("keepwire chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let local = proxy.local_addr();
    let plan = schedule(args.seed, args.faults.unwrap_or(DEFAULT_TOXICS));
    println!(
        "fault proxy on {local} → {upstream} (seed {}, {} toxics)",
        args.seed,
        plan.len()
    );
    println!(
        "point keepwire at it: url = \"https://{local}\" (http:// if the gateway speaks plain HTTP)"
    );
    println!("waiting for a first connection…");
    flush();

    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs(s));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;

    // the schedule starts with the first connection
    loop {
        if proxy.stats().connections > 0 {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = &mut ctrl_c => { interrupted = true; break; }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }

    let t0 = Instant::now();
    let mut present: Vec<usize> = Vec::new();
    let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut applied = 0usize;
    let mut errors = Vec::new();
    if !interrupted && proxy.stats().connections > 0 {
        for (at, step) in timeline(&plan) {
            let when = t0 + at;
            if deadline.is_some_and(|d| when > d) {
                if let Some(d) = deadline {
                    tokio::select! {
                        _ = tokio::time::sleep_until(d) => {}
                        _ = &mut ctrl_c => {}
                    }
                }
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(when) => {}
                _ = &mut ctrl_c => { interrupted = true; }
            }
            if interrupted {
                break;
            }
            match step {
                Step::Add(i) => {
                    let Some(p) = plan.get(i) else { continue };
                    match proxy.add(&p.toxic).await {
                        Ok(()) => {
                            applied += 1;
                            *by_kind.entry(p.toxic.kind.name()).or_default() += 1;
                            present.push(i);
                            println!(
                                "[{:>8.2}s] + {} {}: {} (for {:.1}s)",
                                at.as_secs_f64(),
                                p.toxic.name,
                                p.toxic.direction.name(),
                                p.toxic.kind,
                                p.hold.as_secs_f64()
                            );
                        }
                        Err(e) => {
                            println!("[{:>8.2}s] ! {e}", at.as_secs_f64());
                            errors.push(e.to_string());
                        }
                    }
                }
                Step::Remove(i) => {
                    if !present.contains(&i) {
                        continue;
                    }
                    let Some(p) = plan.get(i) else { continue };
                    present.retain(|&j| j != i);
                    match proxy.remove(&p.toxic.name).await {
                        Ok(()) => println!("[{:>8.2}s] - {}", at.as_secs_f64(), p.toxic.name),
                        Err(e) => {
                            println!("[{:>8.2}s] ! {e}", at.as_secs_f64());
                            errors.push(e.to_string());
                        }
                    }
                }
            }
            flush();
        }
    }
    // a run cut short leaves no toxic behind
    for i in present {
        if let Some(p) = plan.get(i) {
            let _ = proxy.remove(&p.toxic.name).await;
        }
    }
    let stats: ProxyStats = proxy.stats();
    let report = Report {
        mode: "proxy",
        seed: args.seed,
        listen: local.to_string(),
        upstream: upstream.to_owned(),
        toxics_planned: plan.len(),
        toxics_applied: applied,
        toxics_by_kind: by_kind,
        toxic_errors: errors,
        connections: stats.connections,
        bytes_upstream: stats.bytes_upstream,
        bytes_downstream: stats.bytes_downstream,
        resets: stats.resets,
        elapsed_s: t0.elapsed().as_secs_f64(),
    };
    proxy.stop();
    print_report(&report, interrupted);
    if args.json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("report: {e}"),
        }
    }
    flush();
    if report.toxic_errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_report(r: &Report, interrupted: bool) {
    if interrupted {
        println!("interrupted");
    }
    if r.connections == 0 {
        println!("no connection came through the proxy: no toxic applied");
    }
    println!(
        "{} of {} toxics applied in {:.1}s",
        r.toxics_applied, r.toxics_planned, r.elapsed_s
    );
    for (kind, n) in &r.toxics_by_kind {
        println!("  {n:>5}  {kind}");
    }
    println!(
        "connections {}, bytes to the gateway {}, bytes from the gateway {}, resets {}",
        r.connections, r.bytes_upstream, r.bytes_downstream, r.resets
    );
    for e in &r.toxic_errors {
        println!("error: {e}");
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_removes_every_toxic_it_adds_and_never_before_adding_it() {
        let plan = schedule(3, 40);
        let steps = timeline(&plan);
        assert_eq!(steps.len(), 80);
        let mut present = std::collections::BTreeSet::new();
        let mut overlapped = false;
        for (_, step) in steps {
            match step {
                Step::Add(i) => {
                    overlapped |= !present.is_empty();
                    assert!(present.insert(i));
                }
                Step::Remove(i) => assert!(present.remove(&i), "removed before added"),
            }
        }
        assert!(present.is_empty());
        assert!(overlapped, "some toxics are present at once");
    }
}
