//! `keepwire chaos --ha`: active/standby replicas on an etcd lease under a seeded schedule of
//! leader faults, with the invariants of [`Checker`] watched for the whole run.
//!
//! Starts etcd on loopback (from PATH, scratch data directory), the emulator (which models one
//! brokerage session per user once replicas name themselves) and `--replicas` processes of this
//! executable (`keepwire run`, one IBKR stream with a few subscriptions, `[ha]` on that etcd
//! through a forwarder per replica that can be cut), then injects `--failovers` faults on the
//! leader, drawn in seeded shuffled rounds of every kind (so a run of four faults or more has
//! each): SIGKILL (then a new process), SIGSTOP then SIGCONT after the lease expired and a standby
//! took over (it must come back a standby and not compete), SIGTERM (handover; then a new process)
//! and a cut from etcd while the gateway stays reachable (healed once a standby took over).
//!
//! After each fault another replica must be Ready with every subscription within TTL +
//! [`RECOVERY`]; a fault must cost exactly one takeover (more is competing flaps). A violation
//! names the seed and the faults so far; exit status 1.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keepwire::emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use super::ha_cluster::{
    count_by, fully_ready, percentile, stream_of, tail, wait_for, Checker, Etcd, Forwarder,
    Replica, ReplicaSettings, TempDir, DISABLE_SELF_FENCE_ENV,
};
use super::ChaosArgs;

/// How long a new leader may take, once the old lease expired, to be Ready with every
/// subscription (campaign, gateway session, socket, subscriptions).
pub const RECOVERY: Duration = Duration::from_secs(5);
/// Subscriptions of each replica's stream.
const SUBSCRIPTIONS: u64 = 2;

/// A fault on the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL, then a new process.
    Kill,
    /// SIGSTOP until a standby took over, then SIGCONT: it must stay a standby.
    Stop,
    /// SIGTERM: it hands its lease over; then a new process.
    Term,
    /// Its etcd connections cut (the gateway still reachable) until a standby took over.
    Cut,
}

impl FaultKind {
    const ALL: [FaultKind; 4] = [
        FaultKind::Kill,
        FaultKind::Stop,
        FaultKind::Term,
        FaultKind::Cut,
    ];

    fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
            FaultKind::Term => "term",
            FaultKind::Cut => "cut",
        }
    }
}

/// The schedule of `seed`: `n` faults in shuffled rounds of every kind.
pub fn schedule(seed: u64, n: usize) -> Vec<FaultKind> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n + FaultKind::ALL.len());
    while out.len() < n {
        let mut round = FaultKind::ALL;
        round.shuffle(&mut rng);
        out.extend(round);
    }
    out.truncate(n);
    out
}

#[derive(Debug, Default, Serialize)]
struct Timing {
    n: usize,
    p50_ms: u64,
    p99_ms: u64,
    max_ms: u64,
}

impl Timing {
    fn of(mut v: Vec<Duration>) -> Self {
        v.sort();
        Self {
            n: v.len(),
            p50_ms: percentile(&v, 0.5).as_millis() as u64,
            p99_ms: percentile(&v, 0.99).as_millis() as u64,
            max_ms: v.last().map_or(0, |d| d.as_millis() as u64),
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct HaReport {
    seed: u64,
    replicas: usize,
    ttl_s: u64,
    recovery_bound_ms: u64,
    schedule: Vec<&'static str>,
    failovers: usize,
    faults_by_kind: BTreeMap<String, u64>,
    /// Fault → another replica Ready with every subscription (SIGTERM handovers included).
    failover_p50_ms: u64,
    failover_p99_ms: u64,
    failover_max_ms: u64,
    failover_by_kind: BTreeMap<String, Timing>,
    /// Per failover: from when consumers stopped getting data (the fault; for a cut, the old
    /// leader's fence, as the emulator saw its messages stop) to the gateway's first message to
    /// the new leader.
    data_gaps: usize,
    data_gap_p50_ms: u64,
    data_gap_p99_ms: u64,
    data_gap_max_ms: u64,
    takeovers: u64,
    takeovers_per_failover: f64,
    competing_flaps: u64,
    self_fence_disabled: bool,
    duration_s: f64,
    violations: Vec<String>,
}

/// Runs `keepwire chaos --ha`: the scenario on a thread of its own; Ctrl-C or SIGTERM stop it
/// (every child process is killed and the scratch directories removed either way).
pub async fn run(args: &ChaosArgs) -> ExitCode {
    let cancel = Arc::new(AtomicBool::new(false));
    let settings = Settings {
        seed: args.seed,
        replicas: args.replicas.clamp(2, 9),
        failovers: args.failovers,
        ttl_secs: args.ttl.clamp(2, 3600),
        defect: std::env::var_os(DISABLE_SELF_FENCE_ENV).is_some(),
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let flag = cancel.clone();
    let thread = std::thread::spawn(move || {
        let out = scenario(&settings, &flag);
        let _ = done_tx.send(());
        out
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = done_rx => {}
        _ = tokio::signal::ctrl_c() => {
            eprintln!("keepwire chaos --ha: interrupted; stopping the replicas and etcd");
            cancel.store(true, Ordering::Relaxed);
        }
        Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => None } } => {
            eprintln!("keepwire chaos --ha: terminated; stopping the replicas and etcd");
            cancel.store(true, Ordering::Relaxed);
        }
    }
    let outcome = tokio::task::spawn_blocking(move || thread.join())
        .await
        .ok()
        .and_then(Result::ok);
    match outcome {
        Some(Ok(report)) => {
            print_text(&report);
            super::finish(args.json, &report, !report.violations.is_empty())
        }
        Some(Err(e)) => {
            eprintln!("keepwire chaos --ha: {e}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("keepwire chaos --ha: the scenario thread failed");
            ExitCode::from(2)
        }
    }
}

struct Settings {
    seed: u64,
    replicas: usize,
    failovers: usize,
    ttl_secs: u64,
    defect: bool,
}

/// Stops the emulator when dropped (on every way out of [`scenario`]).
struct EmulatorGuard(EmulatorHandle);

impl Drop for EmulatorGuard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Everything started for a run; dropped in reverse order of declaration: the checker, the
/// replicas, etcd, the scratch directory, the emulator.
struct Cluster {
    checker: Option<Checker>,
    replicas: Vec<Replica>,
    forwarders: Vec<Forwarder>,
    _etcd: Etcd,
    _dir: TempDir,
    emu: EmulatorGuard,
    subscriptions: u64,
}

impl Cluster {
    fn checker(&self) -> Result<&Checker, String> {
        self.checker
            .as_ref()
            .ok_or_else(|| "the checker is gone".to_string())
    }

    /// The running replica (not in `except`) Ready with every subscription, waiting up to
    /// `within`.
    fn leader(
        &self,
        within: Duration,
        except: &[usize],
        cancel: &AtomicBool,
    ) -> Result<usize, String> {
        wait_for(
            within,
            "a replica Ready with every subscription",
            cancel,
            || {
                (0..self.replicas.len())
                    .filter(|i| !except.contains(i) && self.replicas[*i].proc.is_some())
                    .find(|i| fully_ready(self.replicas[*i].addr, self.subscriptions))
            },
        )
    }

    /// Waits until every running replica but `leader` stands by.
    fn settled(&self, leader: usize, within: Duration, cancel: &AtomicBool) -> Result<(), String> {
        wait_for(within, "every other replica in standby", cancel, || {
            self.replicas
                .iter()
                .enumerate()
                .filter(|(i, r)| *i != leader && r.proc.is_some())
                .all(|(_, r)| stream_of(r.addr).is_some_and(|(s, _, _)| s == "standby"))
                .then_some(())
        })
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| format!("--- {} ---\n{}", r.id, tail(&r.log(), 15)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn start_cluster(s: &Settings) -> Result<Cluster, String> {
    let bin = std::env::current_exe().map_err(|e| format!("the keepwire executable: {e}"))?;
    let etcd = Etcd::start("chaos")?;
    let dir = TempDir::new("chaos")?;
    let emu = EmulatorGuard(
        Emulator::start(EmulatorConfig {
            heartbeat_interval: Duration::from_millis(200),
            market_data_interval: Duration::from_millis(50),
            ..EmulatorConfig::default()
        })
        .map_err(|e| format!("cannot start the emulator: {e}"))?,
    );
    let settings = ReplicaSettings {
        bin,
        ttl_secs: s.ttl_secs,
        subscriptions: SUBSCRIPTIONS,
        election: "keepwire-chaos".into(),
        defect: s.defect,
    };
    let mut forwarders = Vec::new();
    let mut replicas = Vec::new();
    for i in 0..s.replicas {
        let f = Forwarder::start(etcd.client())?;
        replicas.push(Replica::new(
            &settings,
            &dir.0,
            &format!("r{}", i + 1),
            &f.url(),
            &emu.0.base_url(),
        )?);
        forwarders.push(f);
    }
    let checker = Checker::start(
        &emu.0,
        replicas.iter().map(|r| (r.id.clone(), r.addr)).collect(),
    );
    Ok(Cluster {
        checker: Some(checker),
        replicas,
        forwarders,
        _etcd: etcd,
        _dir: dir,
        emu,
        subscriptions: SUBSCRIPTIONS,
    })
}

/// Watches for `d` (cancel-aware).
fn watch(d: Duration, cancel: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !cancel.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scenario(s: &Settings, cancel: &AtomicBool) -> Result<HaReport, String> {
    let started = Instant::now();
    let plan = schedule(s.seed, s.failovers);
    let ttl = Duration::from_secs(s.ttl_secs);
    let bound = ttl + RECOVERY;
    eprintln!(
        "keepwire chaos --ha: seed {}, {} replicas, TTL {}s, {} faults: {}{}",
        s.seed,
        s.replicas,
        s.ttl_secs,
        plan.len(),
        plan.iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        if s.defect {
            " (self-fencing DISABLED: planted defect)"
        } else {
            ""
        }
    );
    let mut c = start_cluster(s)?;
    let mut violations: Vec<String> = Vec::new();
    let mut times: Vec<(FaultKind, Duration)> = Vec::new();
    let mut gaps: Vec<Duration> = Vec::new();
    let mut takeovers_total = 0u64;
    let mut flaps = 0u64;
    let mut leader = c.leader(Duration::from_secs(30), &[], cancel)?;
    let violation = |c: &Cluster, what: String| -> String {
        let so_far = c.checker().map(Checker::faults_so_far).unwrap_or_default();
        format!("seed {}: {what} (faults so far: {so_far})", s.seed)
    };
    for (n, kind) in plan.iter().copied().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        if let Err(e) = c.settled(leader, Duration::from_secs(20), cancel) {
            violations.push(violation(&c, e));
        }
        let before = c.emu.0.counters().takeovers;
        let id = c.replicas[leader].id.clone();
        c.checker()?
            .note_fault(format!("#{} {} {id}", n + 1, kind.as_str()));
        let at = Instant::now();
        let old = leader;
        match kind {
            FaultKind::Kill => c.replicas[old].proc = None,
            FaultKind::Stop => signal(&c, old, "STOP")?,
            FaultKind::Term => signal(&c, old, "TERM")?,
            FaultKind::Cut => c.forwarders[old].cut(),
        }
        let next = match c.leader(bound, &[old], cancel) {
            Ok(next) => next,
            Err(e) => {
                violations.push(violation(
                    &c,
                    format!(
                        "after {} of {id}: {e} (bound: TTL + {RECOVERY:?})",
                        kind.as_str()
                    ),
                ));
                // One more chance before giving up on the run.
                match c.leader(Duration::from_secs(30), &[old], cancel) {
                    Ok(next) => next,
                    Err(e) => {
                        eprintln!("{}", c.logs());
                        violations.push(violation(&c, format!("no leader at all: {e}")));
                        break;
                    }
                }
            }
        };
        let took = at.elapsed();
        times.push((kind, took));
        let new_id = c.replicas[next].id.clone();
        // The data gap: from when consumers stopped getting data to the gateway's first message
        // to the new leader (Ready: the takeover already closed any socket of the old one). The
        // fault stops the data at once, but for a cut: the old leader keeps its socket until it
        // fences, so its gap is the one the emulator saw.
        let sent = c.emu.0.counters().messages_sent;
        let data_at = wait_for(Duration::from_secs(2), "data", cancel, || {
            (c.emu.0.counters().messages_sent != sent).then(Instant::now)
        })
        .unwrap_or_else(|_| Instant::now());
        let emulator_gap = match kind {
            FaultKind::Cut => wait_for(Duration::from_millis(200), "a gap", cancel, || {
                c.checker().ok()?.gap_between(at, at)
            })
            .ok(),
            _ => None,
        };
        gaps.push(emulator_gap.unwrap_or_else(|| data_at.duration_since(at)));
        match kind {
            FaultKind::Kill => c.replicas[old].start()?,
            FaultKind::Term => {
                if let Some(p) = c.replicas[old].proc.as_mut() {
                    if !p.wait_exit(Duration::from_secs(10)) {
                        violations.push(violation(
                            &c,
                            format!("{id} did not exit within 10 s of SIGTERM"),
                        ));
                    }
                }
                c.replicas[old].proc = None;
                c.replicas[old].start()?;
            }
            FaultKind::Stop | FaultKind::Cut => {
                let takeovers = c.emu.0.counters().takeovers;
                if kind == FaultKind::Stop {
                    signal(&c, old, "CONT")?;
                } else {
                    c.forwarders[old].restore();
                }
                // The old leader comes back: for two TTLs it must not compete, it must stand
                // by, and the new leader must stay Ready.
                watch(2 * ttl, cancel);
                let after = c.emu.0.counters().takeovers;
                if after != takeovers {
                    violations.push(violation(
                        &c,
                        format!(
                            "{id}, {} while it led, competed after it came back: takeovers {takeovers} -> {after}",
                            if kind == FaultKind::Stop { "stopped" } else { "cut from etcd" }
                        ),
                    ));
                }
                let state = stream_of(c.replicas[old].addr).map(|(st, _, _)| st);
                if state.as_deref() != Some("standby") {
                    violations.push(violation(
                        &c,
                        format!("{id} came back as {state:?}, not a standby"),
                    ));
                }
                if !fully_ready(c.replicas[next].addr, c.subscriptions) {
                    violations.push(violation(
                        &c,
                        format!(
                            "the new leader {new_id} did not stay Ready with every subscription"
                        ),
                    ));
                }
            }
        }
        // Whoever leads now (the one Ready, maybe not `next` after a flap).
        leader = match c.leader(bound, &[], cancel) {
            Ok(l) => l,
            Err(e) => {
                violations.push(violation(
                    &c,
                    format!("no leader after the fault settled: {e}"),
                ));
                break;
            }
        };
        let took_over = c.emu.0.counters().takeovers.saturating_sub(before);
        takeovers_total += took_over;
        if took_over > 1 {
            flaps += took_over - 1;
            violations.push(violation(
                &c,
                format!(
                    "competing flaps: {took_over} takeovers for one {} of {id}",
                    kind.as_str()
                ),
            ));
        }
        eprintln!(
            "fault {}/{}: {} {id} -> {new_id} Ready with every subscription in {} ms; takeovers {took_over}; violations {}",
            n + 1,
            plan.len(),
            kind.as_str(),
            took.as_millis(),
            violations.len() + c.checker().map_or(0, Checker::violations_so_far),
        );
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(format!(
            "interrupted after {} of {} faults",
            times.len(),
            plan.len()
        ));
    }
    let seen = c.checker.take().map(Checker::finish).unwrap_or_default();
    violations.extend(seen.into_iter().map(|v| format!("seed {}: {v}", s.seed)));
    if !violations.is_empty() {
        eprintln!("{}", c.logs());
    }
    let all = Timing::of(times.iter().map(|(_, d)| *d).collect());
    let by_kind = FaultKind::ALL
        .iter()
        .filter(|k| times.iter().any(|(t, _)| t == *k))
        .map(|k| {
            let v = times
                .iter()
                .filter(|(t, _)| t == k)
                .map(|(_, d)| *d)
                .collect();
            (k.as_str().to_string(), Timing::of(v))
        })
        .collect();
    let gaps = Timing::of(gaps);
    let done = times.len();
    Ok(HaReport {
        seed: s.seed,
        replicas: s.replicas,
        ttl_s: s.ttl_secs,
        recovery_bound_ms: bound.as_millis() as u64,
        schedule: plan.iter().map(|k| k.as_str()).collect(),
        failovers: done,
        faults_by_kind: count_by(times.iter().map(|(k, _)| k.as_str())),
        failover_p50_ms: all.p50_ms,
        failover_p99_ms: all.p99_ms,
        failover_max_ms: all.max_ms,
        failover_by_kind: by_kind,
        data_gaps: gaps.n,
        data_gap_p50_ms: gaps.p50_ms,
        data_gap_p99_ms: gaps.p99_ms,
        data_gap_max_ms: gaps.max_ms,
        takeovers: takeovers_total,
        takeovers_per_failover: if done == 0 {
            0.0
        } else {
            takeovers_total as f64 / done as f64
        },
        competing_flaps: flaps,
        self_fence_disabled: s.defect,
        duration_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        violations,
    })
}

fn signal(c: &Cluster, i: usize, sig: &str) -> Result<(), String> {
    match c.replicas[i].proc.as_ref() {
        Some(p) => p.signal(sig),
        None => Err(format!("{} is not running", c.replicas[i].id)),
    }
}

fn print_text(r: &HaReport) {
    println!(
        "keepwire chaos --ha: seed {}, {} replicas, TTL {} s, {} failovers in {:.1} s",
        r.seed, r.replicas, r.ttl_s, r.failovers, r.duration_s
    );
    let kinds: Vec<_> = r
        .faults_by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!("  faults: {}", kinds.join(", "));
    println!(
        "  failover (fault -> another replica Ready with every subscription): p50 {} ms, p99 {} ms, max {} ms (bound {} ms)",
        r.failover_p50_ms, r.failover_p99_ms, r.failover_max_ms, r.recovery_bound_ms
    );
    for (k, t) in &r.failover_by_kind {
        println!(
            "    {k:<4} n {:>3}: p50 {} ms, p99 {} ms, max {} ms",
            t.n, t.p50_ms, t.p99_ms, t.max_ms
        );
    }
    println!(
        "  data gaps (consumers get no data, per failover): {}, p50 {} ms, p99 {} ms, max {} ms",
        r.data_gaps, r.data_gap_p50_ms, r.data_gap_p99_ms, r.data_gap_max_ms
    );
    println!(
        "  takeovers {} ({:.2} per failover), competing flaps {}",
        r.takeovers, r.takeovers_per_failover, r.competing_flaps
    );
    if r.violations.is_empty() {
        println!("  violations: 0");
    } else {
        println!("  violations: {}", r.violations.len());
        for v in &r.violations {
            println!("    - {v}");
        }
    }
}
