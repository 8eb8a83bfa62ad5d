//! An HA cluster on this machine, shared by `keepwire chaos --ha` and tests/ha.rs (which includes
//! this file with `#[path]`, so it uses only std, serde_json and keepwire's public API, never
//! `crate::`): etcd on loopback with a scratch data directory, `keepwire run` replica processes,
//! a TCP forwarder to etcd that can be cut, and the [`Checker`] that watches the emulator and the
//! replicas for the whole run.
//!
//! Nothing here panics on what a process, a socket or the disk gives back: errors are strings
//! naming what failed (tests `expect` them, the chaos command reports them).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keepwire::emulator::EmulatorHandle;
use serde_json::Value;

/// The variable that, in a build with the `ha-test-defects` feature only, disables self-fencing
/// in `keepwire run` (src/ha.rs reads it; elsewhere it does nothing).
pub const DISABLE_SELF_FENCE_ENV: &str = "KEEPWIRE_HA_TEST_DISABLE_SELF_FENCE";

/// What failed, in words.
pub type Result<T> = std::result::Result<T, String>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

/// Calls `f` every 20 ms until it returns `Some` or `timeout` passed (then an error naming
/// `what`); gives up early when `cancel` is set.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    cancel: &AtomicBool,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(format!("interrupted while waiting for {what}"));
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Never set: for waits that nothing interrupts.
pub static NEVER: AtomicBool = AtomicBool::new(false);

/// `GET path` on loopback, answered within `timeout`: (status, body).
pub fn http_get_within(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, String)> {
    super::loopback_http::get_within(addr, path, timeout)
}

/// The `etcd` on PATH.
pub fn etcd_binary() -> Result<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "missing: etcd (an HA run starts its own on loopback) — install it with: \
             apt-get install -y etcd-server"
                .to_string()
        })
}

/// A scratch directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `keepwire-ha-<pid>-<name>` in the system's temporary directory, empty.
    pub fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("keepwire-ha-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Sends `sig` (`KILL`, `STOP`, `CONT`, `TERM`, …) with kill(1).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let id = self.0.id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(id.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Ok(())
        } else {
            Err(format!("kill -{sig} {id} failed"))
        }
    }

    /// Waits up to `timeout` for the process to exit; whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.0.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return false,
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A stopped process dies of SIGKILL too.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// etcd on loopback with its own data directory (removed on drop, after etcd is killed).
pub struct Etcd {
    proc: Option<Proc>,
    client: SocketAddr,
    peer: u16,
    dir: TempDir,
}

impl Etcd {
    /// Starts etcd and waits (≤ 20 s) for its `/health`.
    pub fn start(name: &str) -> Result<Self> {
        let mut etcd = Etcd {
            proc: None,
            client: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            peer: free_port()?,
            dir: TempDir::new(&format!("etcd-{name}"))?,
        };
        etcd.spawn()?;
        Ok(etcd)
    }

    /// (Re)starts the etcd process on the same ports and data directory.
    pub fn spawn(&mut self) -> Result<()> {
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let client = format!("http://{}", self.client);
        let log = std::fs::File::create(self.dir.0.join("etcd.log"))
            .map_err(|e| format!("creating etcd's log: {e}"))?;
        let child = Command::new(etcd_binary()?)
            .args(["--name", "kw"])
            .arg("--data-dir")
            .arg(self.dir.0.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("kw={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting etcd: {e}"))?;
        self.proc = Some(Proc(child));
        let addr = self.client;
        wait_for(Duration::from_secs(20), "etcd /health", &NEVER, || {
            http_get_within(addr, "/health", Duration::from_secs(2))
                .filter(|(s, b)| *s == 200 && b.contains("true"))
        })
        .map(|_| ())
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Its client address.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// Kills it (SIGKILL); [`Etcd::spawn`] starts it again.
    pub fn kill(&mut self) {
        self.proc = None;
    }
}

/// What every replica of a cluster is given.
#[derive(Clone, Debug)]
pub struct ReplicaSettings {
    /// The `keepwire` executable.
    pub bin: PathBuf,
    /// The lease TTL, whole seconds.
    pub ttl_secs: u64,
    /// How many subscriptions the one IBKR stream wants.
    pub subscriptions: u64,
    /// The election's name.
    pub election: String,
    /// Plant the test-only defect (no self-fencing; needs a build with `ha-test-defects`).
    pub defect: bool,
}

/// One `keepwire run` replica: one IBKR stream (`ibkr`) against the emulator.
pub struct Replica {
    /// Its `replica_id`.
    pub id: String,
    /// Its `[http] listen`.
    pub addr: SocketAddr,
    /// The running process, if any.
    pub proc: Option<Proc>,
    config: PathBuf,
    log: PathBuf,
    defect: bool,
    bin: PathBuf,
}

impl Replica {
    /// Writes its configuration into `dir` and starts it (waits for `/healthz`).
    pub fn new(
        settings: &ReplicaSettings,
        dir: &Path,
        id: &str,
        etcd: &str,
        gateway: &str,
    ) -> Result<Self> {
        let port = free_port()?;
        let config = dir.join(format!("{id}.toml"));
        let subs: String = (0..settings.subscriptions)
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
election = "{election}"
lease_ttl = "{ttl}s"
replica_id = "{id}"

[[streams]]
name = "ibkr"
dialect = "ibkr"
url = "{gateway}"
heartbeat_timeout = "5s"
[streams.backoff]
initial = "50ms"
max = "500ms"

{subs}"#,
                election = settings.election,
                ttl = settings.ttl_secs,
            ),
        )
        .map_err(|e| format!("writing {}: {e}", config.display()))?;
        let mut r = Replica {
            id: id.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            proc: None,
            config,
            log: dir.join(format!("{id}.log")),
            defect: settings.defect,
            bin: settings.bin.clone(),
        };
        r.start()?;
        Ok(r)
    }

    /// Starts a new process (its log is appended to) and waits (≤ 20 s) for `/healthz`.
    pub fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("opening {}: {e}", self.log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "keepwire=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if self.defect {
            cmd.env(DISABLE_SELF_FENCE_ENV, "1");
        } else {
            cmd.env_remove(DISABLE_SELF_FENCE_ENV);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting keepwire run ({}): {e}", self.id))?;
        self.proc = Some(Proc(child));
        let addr = self.addr;
        wait_for(
            Duration::from_secs(20),
            &format!("{}'s /healthz", self.id),
            &NEVER,
            || http_get_within(addr, "/healthz", Duration::from_secs(2)).filter(|(s, _)| *s == 200),
        )
        .map(|_| ())
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The `ibkr` stream of the replica at `addr`: (state, active, desired); `None` when it does
/// not answer within 2 s.
pub fn stream_of(addr: SocketAddr) -> Option<(String, u64, u64)> {
    stream_within(addr, Duration::from_secs(2))
}

fn stream_within(addr: SocketAddr, timeout: Duration) -> Option<(String, u64, u64)> {
    let (status, body) = http_get_within(addr, "/status", timeout)?;
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

/// Whether the replica at `addr` is Ready with all its `subscriptions` active.
pub fn fully_ready(addr: SocketAddr, subscriptions: u64) -> bool {
    stream_of(addr).is_some_and(|(state, active, desired)| {
        state == "ready" && desired == subscriptions && active == desired
    })
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<_> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Violations by kind: the first sighting's text (with the faults injected so far) and how many
/// rounds saw it.
#[derive(Default)]
struct Violations {
    seen: Vec<(&'static str, String)>,
}

/// Watches the emulator (every 5 ms) and every replica's `/status` (every 50 ms, on a thread of
/// its own so that a frozen replica does not stall the emulator's) for the whole run, and
/// records a violation for: sockets of two replicas open at once (also counted by the emulator at
/// every accepted socket, so no moment is missed), a takeover (`ssodh/init compete:true`) with a
/// fencing token older than the holder's (a replica without the lease), two replicas Ready at
/// once. Also measures data gaps: every interval over 250 ms in which the gateway sent no message.
pub struct Checker {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    violations: Arc<Mutex<Violations>>,
    /// Each gap: when data resumed, and how long it had stopped.
    gaps: Arc<Mutex<Vec<(Instant, Duration)>>>,
    faults: Arc<Mutex<Vec<String>>>,
}

impl Checker {
    /// Starts watching `emu` and the replicas (id, `[http] listen`).
    pub fn start(emu: &EmulatorHandle, replicas: Vec<(String, SocketAddr)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let violations: Arc<Mutex<Violations>> = Arc::default();
        let gaps: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
        let faults: Arc<Mutex<Vec<String>>> = Arc::default();
        let note = {
            let (violations, faults) = (violations.clone(), faults.clone());
            move |kind: &'static str, what: String| {
                let mut v = lock(&violations);
                if v.seen.iter().any(|(k, _)| *k == kind) {
                    return;
                }
                let so_far = lock(&faults);
                let text = if so_far.is_empty() {
                    what
                } else {
                    format!("{what} (faults so far: {})", so_far.join(", "))
                };
                v.seen.push((kind, text));
            }
        };
        let emulator = {
            let (emu, flag, gaps, note) = (emu.clone(), stop.clone(), gaps.clone(), note.clone());
            std::thread::spawn(move || {
                let (mut last_sent, mut last_change) = (0u64, Instant::now());
                while !flag.load(Ordering::Relaxed) {
                    let c = emu.counters();
                    if c.messages_sent != last_sent {
                        let quiet = last_change.elapsed();
                        if quiet > Duration::from_millis(250) {
                            lock(&gaps).push((Instant::now(), quiet));
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
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let ready = {
            let flag = stop.clone();
            std::thread::spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let ready: Vec<_> = replicas
                        .iter()
                        .filter(|(_, a)| {
                            stream_within(*a, Duration::from_millis(300))
                                .is_some_and(|(s, _, _)| s == "ready")
                        })
                        .map(|(id, _)| id.clone())
                        .collect();
                    if ready.len() > 1 {
                        note("ready", format!("replicas {ready:?} were Ready at once"));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Self {
            stop,
            threads: vec![emulator, ready],
            violations,
            gaps,
            faults,
        }
    }

    /// Records a fault: violations seen from now on name it among the faults so far.
    pub fn note_fault(&self, fault: String) {
        lock(&self.faults).push(fault);
    }

    /// The faults noted so far, joined.
    pub fn faults_so_far(&self) -> String {
        lock(&self.faults).join(", ")
    }

    /// How many kinds of violation were seen so far.
    pub fn violations_so_far(&self) -> usize {
        lock(&self.violations).seen.len()
    }

    /// The data gaps seen so far.
    pub fn gaps(&self) -> Vec<Duration> {
        lock(&self.gaps).iter().map(|(_, d)| *d).collect()
    }

    /// The longest data gap that began after `since` and ended after `until`, if any.
    pub fn gap_between(&self, since: Instant, until: Instant) -> Option<Duration> {
        lock(&self.gaps)
            .iter()
            .filter(|(end, d)| *end >= until && end.checked_sub(*d).is_some_and(|b| b >= since))
            .map(|(_, d)| *d)
            .max()
    }

    /// Stops the checker; its violations (one per kind, as first seen).
    pub fn finish(mut self) -> Vec<String> {
        self.halt();
        let seen = std::mem::take(&mut lock(&self.violations).seen);
        seen.into_iter().map(|(_, v)| v).collect()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A TCP forwarder to etcd that can be cut (every connection closed, new ones refused) and
/// restored. Its threads end with the process.
pub struct Forwarder {
    /// Where it listens.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    /// Listens on a free loopback port and forwards every connection to `to`.
    pub fn start(to: SocketAddr) -> Result<Self> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("forwarder to {to}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("forwarder to {to}: {e}"))?;
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
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                };
                let (Ok(in2), Ok(out2)) = (inbound.try_clone(), outbound.try_clone()) else {
                    continue;
                };
                let mut l = lock(&list);
                for s in [&inbound, &outbound] {
                    if let Ok(s) = s.try_clone() {
                        l.push(s);
                    }
                }
                drop(l);
                for (mut from, mut to) in [(in2, out2), (outbound, inbound)] {
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
        Ok(Self { addr, cut, conns })
    }

    /// Its URL, for `[ha] endpoints`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in lock(&self.conns).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// `p` (0..=1) of sorted values; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Counts by name, for reports.
pub fn count_by<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n.to_string()).or_insert(0) += 1;
    }
    m
}
