//! Active/standby replicas on an etcd lease: three `keepwire run` processes, one etcd (Debian's
//! `etcd-server`, started here on loopback with a temporary data directory) and the emulator,
//! which models one brokerage session per user and counts, per replica, sockets and takeovers.
//!
//! A checker polls the emulator (every 5 ms) and every replica's `/status` (every 50 ms) for the
//! whole test and records a violation for: sockets of two replicas open at once (also counted by
//! the emulator at every accepted socket, so no moment is missed), a takeover (`ssodh/init
//! compete:true`) with a fencing token older than the holder's (a replica without the lease),
//! two replicas Ready at once.
//!
//! `KW_HA_FAILOVERS` sets how many leaders the SIGKILL test kills (default 3); the README's
//! figures come from `KW_HA_FAILOVERS=50`. With `--features ha-test-defects`,
//! `the_checker_catches_a_leader_that_does_not_fence_itself` plants the defect (no self-fencing)
//! and requires the checker to fail.
//!
//! The cluster's parts (etcd, replicas, the forwarder to etcd, the checker) are
//! src/cli/chaos/ha_cluster.rs, which `keepwire chaos --ha` runs too; the last tests run that
//! command, with and without the planted defect.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::http::{http_get, poll};
use ha_cluster::{
    percentile, stream_of, tail, Checker, Etcd, Forwarder, Replica, ReplicaSettings, TempDir,
};
use keepwire::emulator::{Emulator, EmulatorConfig, EmulatorHandle};

/// etcd, replicas, forwarder and checker: the code `keepwire chaos --ha` runs too.
#[allow(dead_code)]
#[path = "../src/cli/chaos/ha_cluster.rs"]
mod ha_cluster;
// ha_cluster's `super::loopback_http`.
use common::http::loopback_http;

const BIN: &str = env!("CARGO_BIN_EXE_keepwire");
/// The lease TTL of every test (whole seconds): a leader fences itself after half of it.
const TTL_SECS: u64 = 3;
/// How long a new leader may take, once the old lease expired, to be Ready with every
/// subscription (campaign, gateway session, socket, subscriptions).
const RECOVERY: Duration = Duration::from_secs(5);
/// How many subscriptions each replica wants.
const SUBSCRIPTIONS: u64 = 2;

/// These tests time leases: they run one at a time, so that they do not starve each other.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn fully_ready(addr: SocketAddr) -> bool {
    ha_cluster::fully_ready(addr, SUBSCRIPTIONS)
}

/// etcd, the emulator, three replicas and the checker.
struct Cluster {
    _dir: TempDir,
    etcd: Etcd,
    emu: EmulatorHandle,
    replicas: Vec<Replica>,
    checker: Option<Checker>,
}

impl Cluster {
    fn start(name: &str, defect: bool) -> Self {
        Self::start_with(name, defect, |etcd, _| etcd.to_string())
    }

    /// `endpoint(etcd url, replica index)`: the etcd endpoint each replica is given.
    fn start_with(name: &str, defect: bool, endpoint: impl Fn(&str, usize) -> String) -> Self {
        let dir = TempDir::new(name).expect("scratch directory");
        let etcd = Etcd::start(name).expect("etcd starts");
        let emu = Emulator::start(EmulatorConfig {
            heartbeat_interval: Duration::from_millis(200),
            market_data_interval: Duration::from_millis(50),
            ..EmulatorConfig::default()
        })
        .expect("emulator starts");
        let settings = ReplicaSettings {
            bin: BIN.into(),
            ttl_secs: TTL_SECS,
            subscriptions: SUBSCRIPTIONS,
            election: "kw-test".into(),
            defect,
        };
        let replicas: Vec<_> = ["r1", "r2", "r3"]
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let etcd = endpoint(&etcd.url(), i);
                Replica::new(&settings, &dir.0, id, &etcd, &emu.base_url())
                    .expect("keepwire run starts")
            })
            .collect();
        let checker = Checker::start(
            &emu,
            replicas.iter().map(|r| (r.id.clone(), r.addr)).collect(),
        );
        Self {
            _dir: dir,
            etcd,
            emu,
            replicas,
            checker: Some(checker),
        }
    }

    /// Waits for the one replica (among the running ones not in `except`) that is Ready with
    /// every subscription; its index.
    fn leader(&self, secs: u64, except: &[usize]) -> usize {
        poll(secs, "a replica Ready with every subscription", || {
            (0..self.replicas.len())
                .filter(|i| !except.contains(i) && self.replicas[*i].proc.is_some())
                .find(|i| fully_ready(self.replicas[*i].addr))
        })
    }

    /// The data gaps seen so far.
    fn gaps(&self) -> Vec<Duration> {
        self.checker.as_ref().map_or_else(Vec::new, Checker::gaps)
    }

    fn violations(&mut self) -> Vec<String> {
        self.checker.take().map(Checker::finish).unwrap_or_default()
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| format!("--- {} ---\n{}", r.id, tail(&r.log(), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.checker.take();
        self.replicas.clear();
        self.emu.stop();
    }
}

// --------------------------------------------------------------------------------------- tests

#[test]
fn one_replica_leads_the_others_stand_by_and_report_it() {
    let _serial = serial();
    let mut c = Cluster::start("roles", false);
    let leader = c.leader(20, &[]);
    for (i, r) in c.replicas.iter().enumerate().filter(|(i, _)| *i != leader) {
        let standby = poll(10, "the others in standby", || {
            stream_of(r.addr).filter(|(s, _, _)| s == "standby")
        });
        // Desired subscriptions are kept warm on a standby.
        assert_eq!(standby.2, SUBSCRIPTIONS, "replica {i}");
        // A standby is ready for /readyz (it is doing its job) and says it stands by.
        let (status, body) = http_get(r.addr, "/readyz").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"standby\":[\"ibkr\"]"), "{body}");
        let (_, metrics) = http_get(r.addr, "/metrics").unwrap();
        assert!(
            metrics.contains("keepwire_ha_role{role=\"standby\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("keepwire_stream_state{state=\"standby\",stream=\"ibkr\"} 1"),
            "{metrics}"
        );
    }
    let (_, metrics) = http_get(c.replicas[leader].addr, "/metrics").unwrap();
    assert!(
        metrics.contains("keepwire_ha_role{role=\"leader\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keepwire_ha_transitions_total{role=\"leader\"} 1"),
        "{metrics}"
    );
    // Every HA series the dashboard names is exported by a replica.
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/keepwire.json"),
    )
    .unwrap();
    let named: std::collections::BTreeSet<_> = dashboard
        .match_indices("keepwire_ha_")
        .map(|(i, _)| {
            dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .collect();
    assert!(named.len() >= 2, "{named:?}");
    for name in named {
        assert!(
            metrics.contains(&format!("{name}{{")),
            "{name} not in a scrape"
        );
    }
    let counters = c.emu.counters();
    assert_eq!(
        counters.ws_open_by_replica.keys().collect::<Vec<_>>(),
        vec![&c.replicas[leader].id],
        "only the leader holds sockets"
    );
    let violations = c.violations();
    assert!(violations.is_empty(), "{violations:?}\n{}", c.logs());
}

#[test]
fn a_standby_is_ready_with_every_subscription_within_the_ttl_after_the_leader_is_killed() {
    let _serial = serial();
    let rounds: usize = std::env::var("KW_HA_FAILOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut c = Cluster::start("sigkill", false);
    let mut leader = c.leader(20, &[]);
    let takeovers_before = c.emu.counters().takeovers;
    let bound = Duration::from_secs(TTL_SECS) + RECOVERY;
    let mut times = Vec::new();
    for round in 0..rounds {
        let killed_at = Instant::now();
        c.replicas[leader].proc = None; // SIGKILL
        let next = c.leader(bound.as_secs() + 5, &[leader]);
        let took = killed_at.elapsed();
        assert!(
            took <= bound,
            "round {round}: failover took {took:?} (bound {bound:?})\n{}",
            c.logs()
        );
        times.push(took);
        c.replicas[leader].start().expect("keepwire run restarts");
        leader = next;
    }
    let counters = c.emu.counters();
    let flaps = (counters.takeovers - takeovers_before).saturating_sub(rounds as u64);
    times.sort();
    let mut gaps = c.gaps();
    gaps.sort();
    assert!(gaps.len() >= rounds, "a data gap per failover: {gaps:?}");
    eprintln!(
        "HA data gaps (no message from the gateway at all) over {} gaps: p50 {:?}, p99 {:?}, max {:?}",
        gaps.len(),
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps.last().copied().unwrap_or_default(),
    );
    eprintln!(
        "HA failover over {rounds} SIGKILLs (TTL {TTL_SECS}s): p50 {:?}, p99 {:?}, max {:?}; takeovers {}, competing flaps {flaps}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or_default(),
        counters.takeovers - takeovers_before,
    );
    assert_eq!(flaps, 0, "one takeover per failover, no flapping");
    let violations = c.violations();
    assert!(violations.is_empty(), "{violations:?}\n{}", c.logs());
}

#[test]
fn a_leader_shut_down_gives_its_lease_back_and_a_standby_leads_without_waiting_for_the_ttl() {
    let _serial = serial();
    let mut c = Cluster::start("sigterm", false);
    let leader = c.leader(20, &[]);
    let stopped_at = Instant::now();
    c.replicas[leader]
        .proc
        .as_ref()
        .unwrap()
        .signal("TERM")
        .unwrap();
    c.leader(TTL_SECS + RECOVERY.as_secs() + 5, &[leader]);
    let took = stopped_at.elapsed();
    assert!(
        took < Duration::from_secs(TTL_SECS) / 2,
        "handover took {took:?}: the lease was not given back\n{}",
        c.logs()
    );
    eprintln!("HA handover on SIGTERM: {took:?}");
    let violations = c.violations();
    assert!(violations.is_empty(), "{violations:?}\n{}", c.logs());
}

/// SIGSTOP the leader until its lease expired and a standby took over, then SIGCONT it: it
/// must fence itself (its deadline passed while it was stopped) and never compete again.
fn stop_and_continue_the_leader(defect: bool) -> (Vec<String>, String) {
    let mut c = Cluster::start(if defect { "sigstop-defect" } else { "sigstop" }, defect);
    let leader = c.leader(20, &[]);
    c.replicas[leader]
        .proc
        .as_ref()
        .unwrap()
        .signal("STOP")
        .unwrap();
    let next = c.leader(TTL_SECS + RECOVERY.as_secs() + 5, &[leader]);
    let takeovers = c.emu.counters().takeovers;
    c.replicas[leader]
        .proc
        .as_ref()
        .unwrap()
        .signal("CONT")
        .unwrap();
    // Watch for three TTLs: the old leader stays in standby, the new one stays Ready.
    let until = Instant::now() + Duration::from_secs(3 * TTL_SECS);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let old = stream_of(c.replicas[leader].addr);
    let mut violations = c.violations();
    if c.emu.counters().takeovers != takeovers {
        violations.push(format!(
            "the resumed leader competed: takeovers {takeovers} -> {}",
            c.emu.counters().takeovers
        ));
    }
    if !defect {
        assert_eq!(
            old.map(|(s, _, _)| s),
            Some("standby".to_string()),
            "the resumed leader is a standby\n{}",
            c.logs()
        );
        assert!(fully_ready(c.replicas[next].addr), "{}", c.logs());
    }
    let logs = c.logs();
    (violations, logs)
}

#[test]
fn a_stopped_leader_that_resumes_never_competes_again() {
    let _serial = serial();
    let (violations, logs) = stop_and_continue_the_leader(false);
    assert!(violations.is_empty(), "{violations:?}\n{logs}");
}

#[cfg(feature = "ha-test-defects")]
#[test]
fn the_checker_catches_a_leader_that_does_not_fence_itself() {
    let _serial = serial();
    let (violations, logs) = stop_and_continue_the_leader(true);
    assert!(
        !violations.is_empty(),
        "with self-fencing disabled, the resumed leader must be caught competing without the lease\n{logs}"
    );
    eprintln!("planted defect caught: {violations:?}");
}

#[test]
fn a_leader_cut_from_etcd_fences_itself_before_another_takes_over_and_stays_a_standby() {
    let _serial = serial();
    // Each replica reaches etcd through a forwarder of its own; the gateway stays reachable.
    let forwarders: Arc<Mutex<Vec<Forwarder>>> = Arc::default();
    let fw = forwarders.clone();
    let mut c = Cluster::start_with("cut", false, move |etcd, _| {
        let to: SocketAddr = etcd.trim_start_matches("http://").parse().unwrap();
        let f = Forwarder::start(to).expect("forwarder starts");
        let url = f.url();
        fw.lock().unwrap().push(f);
        url
    });
    let leader = c.leader(20, &[]);
    let cut_at = Instant::now();
    forwarders.lock().unwrap()[leader].cut();
    // The cut leader fences itself within TTL/2 (+ a keepalive's timeout and a tick) ...
    let fenced = poll(TTL_SECS * 2, "the cut leader in standby", || {
        stream_of(c.replicas[leader].addr).filter(|(s, _, _)| s == "standby")
    });
    let fenced_after = cut_at.elapsed();
    assert_eq!(fenced.0, "standby");
    assert!(
        fenced_after < Duration::from_secs(TTL_SECS),
        "fenced after {fenced_after:?}, not before the TTL"
    );
    // ... and another replica leads once the lease expired.
    let next = c.leader(TTL_SECS + RECOVERY.as_secs() + 5, &[leader]);
    let takeovers = c.emu.counters().takeovers;
    forwarders.lock().unwrap()[leader].restore();
    std::thread::sleep(Duration::from_secs(2 * TTL_SECS));
    assert!(fully_ready(c.replicas[next].addr), "{}", c.logs());
    assert_eq!(
        stream_of(c.replicas[leader].addr).map(|(s, _, _)| s),
        Some("standby".into())
    );
    assert_eq!(
        c.emu.counters().takeovers,
        takeovers,
        "nobody competed after the heal"
    );
    let violations = c.violations();
    assert!(violations.is_empty(), "{violations:?}\n{}", c.logs());
}

#[test]
fn after_an_etcd_restart_one_replica_leads_again() {
    let _serial = serial();
    let mut c = Cluster::start("etcd-restart", false);
    c.leader(20, &[]);
    c.etcd.kill();
    // Without etcd no replica may keep leading: every one is a standby within the TTL.
    poll(
        TTL_SECS * 2,
        "every replica in standby while etcd is down",
        || {
            c.replicas
                .iter()
                .all(|r| stream_of(r.addr).is_some_and(|(s, _, _)| s == "standby"))
                .then_some(())
        },
    );
    c.etcd.spawn().expect("etcd restarts");
    c.leader(2 * TTL_SECS + RECOVERY.as_secs() + 10, &[]);
    let violations = c.violations();
    assert!(violations.is_empty(), "{violations:?}\n{}", c.logs());
}

#[test]
fn the_library_runs_a_standby_with_warm_subscriptions_until_it_is_elected() {
    let _serial = serial();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(library_standby_until_elected());
}

async fn library_standby_until_elected() {
    let etcd = Etcd::start("library").expect("etcd starts");
    let emu = Emulator::start(common::fast_emulator()).expect("emulator starts");
    let start = |id: &str| {
        let mut ha = keepwire::HaConfig::new([etcd.url()], "kw-lib", id);
        ha.lease_ttl = Duration::from_secs(TTL_SECS);
        keepwire::Handle::builder()
            .stream(common::fast_stream(&emu))
            .ha(ha)
            .start()
            .expect("keepwire starts")
    };
    let a = start("a");
    let sub = keepwire::Subscription::market_data(265_598, ["31"]);
    let _a_rx = a.subscribe(common::STREAM, sub.clone()).await.unwrap();
    common::wait_status(&a, 20, "a leads", |s| s.is_fully_ready()).await;
    let b = start("b");
    let mut b_rx = b.subscribe(common::STREAM, sub.clone()).await.unwrap();
    let standby = common::wait_status(&b, 10, "b stands by", |s| {
        s.state == keepwire::StreamState::Standby
    })
    .await;
    assert_eq!(standby.subscriptions.desired, 1, "desired state kept warm");
    assert_eq!(
        emu.counters().ws_open_by_replica.keys().collect::<Vec<_>>(),
        vec!["a"],
        "only the leader holds sockets"
    );
    // A misconfigured [ha] is refused before anything starts, naming the field.
    let bad = keepwire::Handle::builder()
        .stream(common::fast_stream(&emu))
        .ha(keepwire::HaConfig::new(Vec::<String>::new(), "kw-lib", "c"))
        .start();
    assert!(
        matches!(&bad, Err(keepwire::Error::InvalidHa { problems }) if problems[0].field == "ha.endpoints"),
        "{:?}",
        bad.err()
    );
    a.shutdown().await;
    common::wait_status(&b, TTL_SECS + 10, "b leads with its subscription", |s| {
        s.is_fully_ready()
    })
    .await;
    let data = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match b_rx.recv().await {
                Some(keepwire::Event::Data { .. }) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(data, Ok(true), "data flows on the new leader");
    b.shutdown().await;
    emu.stop();
}

/// `keepwire chaos --ha --failovers N --seed S --json`, with self-fencing disabled when `defect`
/// (a build with `ha-test-defects` only): its exit code and the report on its last stdout line.
fn chaos_ha(failovers: usize, seed: u64, defect: bool) -> (Option<i32>, serde_json::Value) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["chaos", "--ha", "--json"])
        .args(["--failovers", &failovers.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--ttl", &TTL_SECS.to_string()]);
    if defect {
        cmd.env(ha_cluster::DISABLE_SELF_FENCE_ENV, "1");
    } else {
        cmd.env_remove(ha_cluster::DISABLE_SELF_FENCE_ENV);
    }
    let out = cmd.output().expect("run keepwire chaos --ha");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let report = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "last line is not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("{stdout}");
    (out.status.code(), report)
}

#[test]
fn chaos_ha_injects_every_kind_of_leader_fault_and_reports_no_violation() {
    let _serial = serial();
    // Seed 1's first round: kill, stop, term, cut (one of each kind in every round of four).
    let (code, report) = chaos_ha(4, 1, false);
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["seed"], 1);
    assert_eq!(report["failovers"], 4, "{report}");
    for kind in ["kill", "stop", "term", "cut"] {
        assert_eq!(report["faults_by_kind"][kind], 1, "{kind}: {report}");
    }
    assert_eq!(report["competing_flaps"], 0, "{report}");
    assert_eq!(report["takeovers_per_failover"], 1.0, "{report}");
    let bound = report["recovery_bound_ms"].as_u64().unwrap();
    assert!(
        report["failover_max_ms"].as_u64().unwrap() <= bound,
        "{report}"
    );
    // A gap in the data per failover that waits for the lease (kill, stop, cut).
    assert!(report["data_gaps"].as_u64().unwrap() >= 3, "{report}");
}

#[cfg(feature = "ha-test-defects")]
#[test]
fn the_checker_catches_a_leader_that_does_not_fence_itself_in_chaos_ha() {
    let _serial = serial();
    // Seed 1 stops (and continues) the second leader: without self-fencing it competes back.
    let (code, report) = chaos_ha(3, 1, true);
    assert_eq!(
        report["schedule"],
        serde_json::json!(["kill", "stop", "term"])
    );
    assert_eq!(report["self_fence_disabled"], true);
    let violations = report["violations"].as_array().unwrap();
    assert!(!violations.is_empty(), "{report}");
    assert_eq!(code, Some(1), "{report}");
    for v in violations {
        let v = v.as_str().unwrap();
        assert!(v.starts_with("seed 1: "), "{v}");
        assert!(v.contains("faults so far: #1 kill"), "{v}");
    }
    eprintln!("planted defect caught by chaos --ha: {violations:?}");
}
