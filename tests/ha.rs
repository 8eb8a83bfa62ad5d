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

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::http::{free_port, http_get, poll};
use keepwire::emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use serde_json::Value;

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

fn etcd_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("etcd");
        if p.is_file() {
            return p;
        }
    }
    panic!("missing: etcd (the HA tests start their own) — install it with: apt-get install -y etcd-server");
}

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("keepwire-ha-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Proc(Child);

impl Proc {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.0.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {}", self.0.id());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// etcd on loopback with its own data directory.
struct Etcd {
    dir: TempDir,
    client: SocketAddr,
    peer: u16,
    proc: Option<Proc>,
}

impl Etcd {
    fn start(name: &str) -> Self {
        let mut etcd = Etcd {
            dir: TempDir::new(&format!("etcd-{name}")),
            client: SocketAddr::from(([127, 0, 0, 1], free_port())),
            peer: free_port(),
            proc: None,
        };
        etcd.spawn();
        etcd
    }

    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let client = format!("http://{}", self.client);
        let child = Command::new(etcd_binary())
            .args(["--name", "kw"])
            .arg("--data-dir")
            .arg(self.dir.0.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("kw={peer}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.0.join("etcd.log")).unwrap())
            .spawn()
            .expect("start etcd");
        self.proc = Some(Proc(child));
        let client = self.client;
        poll(20, "etcd /health", || {
            http_get(client, "/health").filter(|(s, b)| *s == 200 && b.contains("true"))
        });
    }

    fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    fn kill(&mut self) {
        self.proc = None;
    }
}

/// One `keepwire run` replica.
struct Replica {
    id: String,
    addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    defect: bool,
    proc: Option<Proc>,
}

impl Replica {
    fn new(dir: &Path, id: &str, etcd: &str, emu: &EmulatorHandle, defect: bool) -> Self {
        let port = free_port();
        let config = dir.join(format!("{id}.toml"));
        let subs: String = (0..SUBSCRIPTIONS)
            .map(|i| {
                format!(
                    "[[streams.subscriptions]]\nmarket_data = {{ conid = {}, fields = [\"31\"] }}\n",
                    265_598 + i
                )
            })
            .collect();
        std::fs::write(
            &config,
            format!(
                r#"[http]
listen = "127.0.0.1:{port}"

[ha]
endpoints = ["{etcd}"]
election = "kw-test"
lease_ttl = "{TTL_SECS}s"
replica_id = "{id}"

[[streams]]
name = "ibkr"
dialect = "ibkr"
url = "{url}"
heartbeat_timeout = "5s"
[streams.backoff]
initial = "50ms"
max = "500ms"

{subs}"#,
                url = emu.base_url()
            ),
        )
        .unwrap();
        let mut r = Replica {
            id: id.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            config,
            log: dir.join(format!("{id}.log")),
            defect,
            proc: None,
        };
        r.start();
        r
    }

    fn start(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "keepwire=info")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            );
        if self.defect {
            cmd.env("KEEPWIRE_HA_TEST_DISABLE_SELF_FENCE", "1");
        } else {
            cmd.env_remove("KEEPWIRE_HA_TEST_DISABLE_SELF_FENCE");
        }
        self.proc = Some(Proc(cmd.spawn().expect("start keepwire run")));
        let addr = self.addr;
        poll(20, "keepwire run /healthz", || {
            http_get(addr, "/healthz").filter(|(s, _)| *s == 200)
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The `ibkr` stream of the replica at `addr`: (state, active, desired).
fn stream_of(addr: SocketAddr) -> Option<(String, u64, u64)> {
    let (status, body) = http_get(addr, "/status")?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let s = &v["streams"]["ibkr"];
    Some((
        s["state"].as_str()?.to_string(),
        s["subscriptions"]["active"].as_u64()?,
        s["subscriptions"]["desired"].as_u64()?,
    ))
}

fn fully_ready(addr: SocketAddr) -> bool {
    stream_of(addr).is_some_and(|(state, active, desired)| {
        state == "ready" && desired == SUBSCRIPTIONS && active == desired
    })
}

/// Polls the emulator and the replicas for the whole test; collects violations.
struct Checker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<String>>>,
    /// Data gaps: every interval over 250 ms in which the gateway sent no message at all.
    gaps: Arc<Mutex<Vec<Duration>>>,
}

impl Checker {
    fn start(emu: &EmulatorHandle, replicas: Vec<(String, SocketAddr)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (emu, flag) = (emu.clone(), stop.clone());
        let gaps: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let gaps_seen = gaps.clone();
        let thread = std::thread::spawn(move || {
            let (mut last_sent, mut last_change) = (0u64, Instant::now());
            // One entry per kind of violation: the first time it was seen, and the latest.
            let mut violations: Vec<(&'static str, String)> = Vec::new();
            let mut note = |kind: &'static str, v: String| match violations
                .iter_mut()
                .find(|(k, _)| *k == kind)
            {
                Some(entry) => entry.1 = v,
                None => violations.push((kind, v)),
            };
            let mut round = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let c = emu.counters();
                if c.messages_sent != last_sent {
                    let quiet = last_change.elapsed();
                    if quiet > Duration::from_millis(250) {
                        gaps_seen
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(quiet);
                    }
                    (last_sent, last_change) = (c.messages_sent, Instant::now());
                }
                if c.replica_socket_overlaps > 0 {
                    note(
                        "overlap",
                        format!(
                            "sockets of two replicas were open at once ({} times)",
                            c.replica_socket_overlaps
                        ),
                    );
                }
                if c.takeovers_without_lease > 0 {
                    note(
                        "stale",
                        format!(
                            "{} takeover(s) by a replica without the lease (stale fencing token)",
                            c.takeovers_without_lease
                        ),
                    );
                }
                let holding: Vec<_> = c
                    .ws_open_by_replica
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(r, _)| r.clone())
                    .collect();
                if holding.len() > 1 {
                    note(
                        "holding",
                        format!("replicas {holding:?} held sockets at the same moment"),
                    );
                }
                if round % 10 == 0 {
                    let ready: Vec<_> = replicas
                        .iter()
                        .filter(|(_, a)| stream_of(*a).is_some_and(|(s, _, _)| s == "ready"))
                        .map(|(id, _)| id.clone())
                        .collect();
                    if ready.len() > 1 {
                        note("ready", format!("replicas {ready:?} were Ready at once"));
                    }
                }
                round += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            violations.into_iter().map(|(_, v)| v).collect::<Vec<_>>()
        });
        Self {
            stop,
            thread: Some(thread),
            gaps,
        }
    }

    /// Stops the checker; its violations.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
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
        let dir = TempDir::new(name);
        let etcd = Etcd::start(name);
        let emu = Emulator::start(EmulatorConfig {
            heartbeat_interval: Duration::from_millis(200),
            market_data_interval: Duration::from_millis(50),
            ..EmulatorConfig::default()
        })
        .expect("emulator starts");
        let replicas: Vec<_> = ["r1", "r2", "r3"]
            .iter()
            .enumerate()
            .map(|(i, id)| Replica::new(&dir.0, id, &endpoint(&etcd.url(), i), &emu, defect))
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
        self.checker.as_ref().map_or_else(Vec::new, |c| {
            c.gaps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
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

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<_> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
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
        c.replicas[leader].start();
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
    c.replicas[leader].proc.as_ref().unwrap().signal("TERM");
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
    c.replicas[leader].proc.as_ref().unwrap().signal("STOP");
    let next = c.leader(TTL_SECS + RECOVERY.as_secs() + 5, &[leader]);
    let takeovers = c.emu.counters().takeovers;
    c.replicas[leader].proc.as_ref().unwrap().signal("CONT");
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

/// A TCP forwarder to etcd that the test can cut (every connection closed, new ones refused)
/// and restore.
struct Forwarder {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (flag, list) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if flag.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(to) else {
                    continue;
                };
                let mut l = list.lock().unwrap_or_else(PoisonError::into_inner);
                for s in [&inbound, &outbound] {
                    if let Ok(s) = s.try_clone() {
                        l.push(s);
                    }
                }
                drop(l);
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { addr, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[test]
fn a_leader_cut_from_etcd_fences_itself_before_another_takes_over_and_stays_a_standby() {
    let _serial = serial();
    // Each replica reaches etcd through a forwarder of its own; the gateway stays reachable.
    let forwarders: Arc<Mutex<Vec<Forwarder>>> = Arc::default();
    let fw = forwarders.clone();
    let mut c = Cluster::start_with("cut", false, move |etcd, _| {
        let to: SocketAddr = etcd.trim_start_matches("http://").parse().unwrap();
        let f = Forwarder::start(to);
        let url = format!("http://{}", f.addr);
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
    c.etcd.spawn();
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
    let etcd = Etcd::start("library");
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
