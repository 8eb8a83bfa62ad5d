//! A TCP fault proxy with Toxiproxy's model, for `keepwire chaos --proxy-to HOST:PORT`: it sits
//! between keepwire and any gateway (a real one, or the emulator) and degrades the connections
//! with *toxics* (latency and jitter, bandwidth, timeout and blackhole, slicer, limit_data,
//! slow_close, reset_peer).
//!
//! The toxics are [`noxious`]'s, a Rust port of Toxiproxy, embedded as a library. In front of it
//! sits a thin accounting stage (the address keepwire dials) that counts connections and bytes and
//! adds the one toxic `noxious` lacks, `reset_peer`: it closes the client's socket with a TCP RST
//! (`SO_LINGER` 0), as Toxiproxy does.
//!
//! ```text
//! keepwire ──► listen (127.0.0.1, counts, reset_peer) ──► noxious (toxics) ──► gateway
//! ```
//!
//! The proxy listens on loopback only: [`FaultProxy::start`] refuses any other listen address.
//! It runs on a thread of its own (a tokio runtime), so it works under any caller's runtime.
//!
//! [`schedule`] draws a seeded schedule of toxics (same seed, same schedule), some overlapping.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use noxious::proxy::{ProxyConfig, ProxyRunner, Runner, Toxics};
use noxious::signal::{Close, Stop, Stopper};
use noxious::socket::TcpListener as NoxiousListener;
use noxious::toxic::{StreamDirection, ToxicEvent, ToxicEventKind, ToxicEventResult};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which way a toxic acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// From the gateway to keepwire.
    Downstream,
    /// From keepwire to the gateway.
    Upstream,
}

impl Direction {
    /// The Toxiproxy name of the direction.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Downstream => "downstream",
            Direction::Upstream => "upstream",
        }
    }
}

/// What a toxic does, with its attributes (Toxiproxy's toxics and units).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ToxicKind {
    /// Delays the data by `latency_ms` ± `jitter_ms`.
    Latency {
        /// Added delay, in milliseconds.
        latency_ms: u64,
        /// Random variation of the delay, in milliseconds.
        jitter_ms: u64,
    },
    /// Passes at most `rate_kib` KiB per second.
    Bandwidth {
        /// The rate, in KiB per second.
        rate_kib: u64,
    },
    /// Stops every byte; closes the connection after `timeout_ms` (0: never — a blackhole, the
    /// connection stays open and silent while the toxic is there).
    Timeout {
        /// When to close, in milliseconds (0: keep it open).
        timeout_ms: u64,
    },
    /// Cuts the data into small packets of `average_size` ± `size_variation` bytes, each delayed
    /// by `delay_us` microseconds.
    Slicer {
        /// Average packet size in bytes.
        average_size: u64,
        /// Variation of the packet size in bytes (less than `average_size`).
        size_variation: u64,
        /// Delay between packets in microseconds.
        delay_us: u64,
    },
    /// Closes the connection after `bytes` bytes (a connection that goes half-open mid-message).
    LimitData {
        /// Bytes let through before the close.
        bytes: u64,
    },
    /// Delays the close of a connection by `delay_ms`.
    SlowClose {
        /// The delay, in milliseconds.
        delay_ms: u64,
    },
    /// Resets every connection with a TCP RST `timeout_ms` after it is open and the toxic is
    /// present (0: at once), new connections included.
    ResetPeer {
        /// When to reset, in milliseconds.
        timeout_ms: u64,
    },
}

impl ToxicKind {
    /// The Toxiproxy name of the toxic (`timeout` with 0 is named `blackhole` here).
    pub fn name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::Timeout { timeout_ms: 0 } => "blackhole",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::LimitData { .. } => "limit_data",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::ResetPeer { .. } => "reset_peer",
        }
    }

    fn to_noxious(self) -> Option<noxious::toxic::ToxicKind> {
        use noxious::toxic::ToxicKind as N;
        Some(match self {
            ToxicKind::Latency {
                latency_ms,
                jitter_ms,
            } => N::Latency {
                latency: latency_ms,
                jitter: jitter_ms,
            },
            ToxicKind::Bandwidth { rate_kib } => N::Bandwidth { rate: rate_kib },
            ToxicKind::Timeout { timeout_ms } => N::Timeout {
                timeout: timeout_ms,
            },
            ToxicKind::Slicer {
                average_size,
                size_variation,
                delay_us,
            } => N::Slicer {
                average_size,
                size_variation,
                delay: delay_us,
            },
            ToxicKind::LimitData { bytes } => N::LimitData { bytes },
            ToxicKind::SlowClose { delay_ms } => N::SlowClose { delay: delay_ms },
            ToxicKind::ResetPeer { .. } => return None,
        })
    }
}

impl fmt::Display for ToxicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToxicKind::Latency {
                latency_ms,
                jitter_ms,
            } => write!(f, "latency {latency_ms}ms ± {jitter_ms}ms"),
            ToxicKind::Bandwidth { rate_kib } => write!(f, "bandwidth {rate_kib} KiB/s"),
            ToxicKind::Timeout { timeout_ms: 0 } => write!(f, "blackhole (timeout 0)"),
            ToxicKind::Timeout { timeout_ms } => write!(f, "timeout {timeout_ms}ms"),
            ToxicKind::Slicer {
                average_size,
                size_variation,
                delay_us,
            } => write!(
                f,
                "slicer {average_size} ± {size_variation} bytes, {delay_us}µs apart"
            ),
            ToxicKind::LimitData { bytes } => write!(f, "limit_data {bytes} bytes"),
            ToxicKind::SlowClose { delay_ms } => write!(f, "slow_close {delay_ms}ms"),
            ToxicKind::ResetPeer { timeout_ms } => write!(f, "reset_peer after {timeout_ms}ms"),
        }
    }
}

/// A named toxic on one direction of the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Toxic {
    /// Unique among the toxics present at once.
    pub name: String,
    /// What it does.
    pub kind: ToxicKind,
    /// Which way it acts (ignored by `reset_peer`, which resets the whole connection).
    pub direction: Direction,
}

impl Toxic {
    /// A toxic named `name`.
    pub fn new(name: impl Into<String>, kind: ToxicKind, direction: Direction) -> Self {
        Self {
            name: name.into(),
            kind,
            direction,
        }
    }
}

/// Why the proxy could not start or take a toxic.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address is not a loopback address.
    #[error("the fault proxy listens on loopback only (127.0.0.1 or ::1), not on {0}")]
    NotLoopback(SocketAddr),
    /// The upstream address does not resolve.
    #[error("upstream {upstream} does not resolve to an address: {reason}")]
    Upstream {
        /// The address as given.
        upstream: String,
        /// Why.
        reason: String,
    },
    /// A socket could not be bound, or the proxy's thread could not start.
    #[error("fault proxy: {0}")]
    Io(#[from] std::io::Error),
    /// A toxic was refused (e.g. a name already present, or no toxic by that name).
    #[error("toxic {name}: {reason}")]
    Toxic {
        /// The toxic's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The proxy has stopped.
    #[error("the fault proxy has stopped")]
    Stopped,
}

/// What went through the proxy so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: u64,
    /// Bytes from keepwire to the gateway (as read from keepwire).
    pub bytes_upstream: u64,
    /// Bytes from the gateway to keepwire (as written to keepwire).
    pub bytes_downstream: u64,
    /// Connections reset by `reset_peer`.
    pub resets: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    bytes_upstream: AtomicU64,
    bytes_downstream: AtomicU64,
    resets: AtomicU64,
}

type ToxicSender = bmrng::RequestSender<ToxicEvent, ToxicEventResult>;

/// The proxy's name inside `noxious`.
const NAME: &str = "keepwire";

/// A running fault proxy; stopped on [`FaultProxy::stop`] or drop.
pub struct FaultProxy {
    local: SocketAddr,
    upstream: String,
    toxics: ToxicSender,
    /// Present `reset_peer` toxics: name → timeout.
    resets: Mutex<BTreeMap<String, Duration>>,
    /// The earliest `reset_peer` timeout present, seen by every connection.
    reset_tx: watch::Sender<Option<Duration>>,
    counters: Arc<Counters>,
    stop_tx: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("local", &self.local)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

struct Started {
    local: SocketAddr,
    toxics: ToxicSender,
}

impl FaultProxy {
    /// Starts a proxy listening on `listen` (loopback only; port 0 picks one) in front of
    /// `upstream` (`HOST:PORT`, any host).
    pub fn start(listen: SocketAddr, upstream: &str) -> Result<FaultProxy, ProxyError> {
        if !listen.ip().is_loopback() {
            return Err(ProxyError::NotLoopback(listen));
        }
        match upstream.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(ProxyError::Upstream {
                    upstream: upstream.to_owned(),
                    reason: "no address".into(),
                })
            }
            Err(e) => {
                return Err(ProxyError::Upstream {
                    upstream: upstream.to_owned(),
                    reason: e.to_string(),
                })
            }
        }
        let counters = Arc::new(Counters::default());
        let (reset_tx, reset_rx) = watch::channel(None);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let counters = counters.clone();
            let upstream = upstream.to_owned();
            std::thread::Builder::new()
                .name("keepwire-proxy".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(ProxyError::Io(e)));
                            return;
                        }
                    };
                    rt.block_on(serve(
                        listen, upstream, counters, reset_rx, stop_rx, ready_tx,
                    ));
                })?
        };
        let started = match ready_rx.recv() {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(ProxyError::Stopped);
            }
        };
        Ok(FaultProxy {
            local: started.local,
            upstream: upstream.to_owned(),
            toxics: started.toxics,
            resets: Mutex::new(BTreeMap::new()),
            reset_tx,
            counters,
            stop_tx,
            thread: Some(thread),
        })
    }

    /// The address keepwire dials (`http://` or `https://` and this, instead of the gateway's).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The gateway's address, as given.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Adds a toxic; it acts on open connections at once and on every new one while present.
    pub async fn add(&self, toxic: &Toxic) -> Result<(), ProxyError> {
        if let ToxicKind::ResetPeer { timeout_ms } = toxic.kind {
            let mut resets = self.resets.lock().unwrap_or_else(|e| e.into_inner());
            if resets.contains_key(&toxic.name) {
                return Err(ProxyError::Toxic {
                    name: toxic.name.clone(),
                    reason: "a toxic by this name is present".into(),
                });
            }
            resets.insert(toxic.name.clone(), Duration::from_millis(timeout_ms));
            self.reset_tx.send_replace(resets.values().min().copied());
            return Ok(());
        }
        let Some(kind) = toxic.kind.to_noxious() else {
            return Err(ProxyError::Toxic {
                name: toxic.name.clone(),
                reason: "not a noxious toxic".into(),
            });
        };
        let n = noxious::toxic::Toxic {
            kind,
            name: toxic.name.clone(),
            toxicity: 1.0,
            direction: match toxic.direction {
                Direction::Downstream => StreamDirection::Downstream,
                Direction::Upstream => StreamDirection::Upstream,
            },
        };
        self.send(&toxic.name, ToxicEventKind::AddToxic(n)).await
    }

    /// Removes the toxic named `name`.
    pub async fn remove(&self, name: &str) -> Result<(), ProxyError> {
        {
            let mut resets = self.resets.lock().unwrap_or_else(|e| e.into_inner());
            if resets.remove(name).is_some() {
                self.reset_tx.send_replace(resets.values().min().copied());
                return Ok(());
            }
        }
        self.send(name, ToxicEventKind::RemoveToxic(name.to_owned()))
            .await
    }

    async fn send(&self, name: &str, kind: ToxicEventKind) -> Result<(), ProxyError> {
        let event = ToxicEvent {
            proxy_name: NAME.to_owned(),
            kind,
        };
        match self.toxics.send_receive(event).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ProxyError::Toxic {
                name: name.to_owned(),
                reason: e.to_string(),
            }),
            Err(_) => Err(ProxyError::Stopped),
        }
    }

    /// What went through the proxy so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            connections: c.connections.load(Ordering::Relaxed),
            bytes_upstream: c.bytes_upstream.load(Ordering::Relaxed),
            bytes_downstream: c.bytes_downstream.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
        }
    }

    /// Stops the proxy: closes the listener and every connection, and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop_tx.send_replace(true);
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The proxy's thread: noxious on a loopback port of its own, the accounting stage on `listen`.
async fn serve(
    listen: SocketAddr,
    upstream: String,
    counters: Arc<Counters>,
    reset_rx: watch::Receiver<Option<Duration>>,
    mut stop_rx: watch::Receiver<bool>,
    ready: std::sync::mpsc::Sender<Result<Started, ProxyError>>,
) {
    let front = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let local = match front.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let (inner, listener, info) = match bind_noxious(&upstream).await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (toxics_tx, toxics_rx) = bmrng::channel::<ToxicEvent, ToxicEventResult>(16);
    let (stop, stopper): (Stop, Stopper) = Stop::new();
    let (_close, closer): (Close, _) = noxious::signal::Close::new();
    let runner = tokio::spawn(ProxyRunner::run_proxy(
        listener, info, toxics_rx, stop, closer,
    ));
    if ready
        .send(Ok(Started {
            local,
            toxics: toxics_tx,
        }))
        .is_err()
    {
        stopper.stop();
        return;
    }
    let pipe_stop = stop_rx.clone();
    loop {
        tokio::select! {
            accepted = front.accept() => {
                let Ok((client, _)) = accepted else { continue };
                counters.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(pipe(
                    client,
                    inner,
                    counters.clone(),
                    reset_rx.clone(),
                    pipe_stop.clone(),
                ));
            }
            _ = stop_rx.wait_for(|s| *s) => break,
        }
    }
    stopper.stop();
    let _ = runner.await;
}

/// Binds noxious to a free loopback port (picked by binding port 0 first; retried if another
/// process takes it in between).
async fn bind_noxious(
    upstream: &str,
) -> Result<(SocketAddr, NoxiousListener, noxious::state::SharedProxyInfo), ProxyError> {
    let mut last = None;
    for _ in 0..5 {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config = ProxyConfig {
            name: NAME.to_owned(),
            listen: addr.to_string(),
            upstream: upstream.to_owned(),
            enabled: true,
            rand_seed: None,
        };
        match ProxyRunner::initialize_proxy::<NoxiousListener>(config, Toxics::empty()).await {
            Ok((listener, info)) => return Ok((addr, listener, info)),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| std::io::Error::other("no port"))
        .into())
}

/// One connection: keepwire ⇄ noxious, counted, reset when a `reset_peer` toxic says so.
async fn pipe(
    mut client: TcpStream,
    inner: SocketAddr,
    counters: Arc<Counters>,
    mut reset_rx: watch::Receiver<Option<Duration>>,
    mut stop_rx: watch::Receiver<bool>,
) {
    let Ok(mut upstream) = TcpStream::connect(inner).await else {
        return;
    };
    let reset = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = upstream.split();
        let both = async {
            tokio::join!(
                copy_counting(&mut cr, &mut uw, &counters.bytes_upstream),
                copy_counting(&mut ur, &mut cw, &counters.bytes_downstream),
            )
        };
        tokio::select! {
            _ = both => false,
            _ = reset_due(&mut reset_rx) => true,
            _ = stop_rx.wait_for(|s| *s) => false,
        }
    };
    if reset && client.set_zero_linger().is_ok() {
        counters.resets.fetch_add(1, Ordering::Relaxed);
    }
    // Dropping a socket with SO_LINGER 0 sends an RST instead of a FIN.
    drop(client);
}

/// Completes when a `reset_peer` toxic has been present for its timeout.
async fn reset_due(rx: &mut watch::Receiver<Option<Duration>>) {
    loop {
        let current = *rx.borrow_and_update();
        match current {
            Some(after) => {
                tokio::select! {
                    _ = tokio::time::sleep(after) => return,
                    changed = rx.changed() => if changed.is_err() { return std::future::pending().await },
                }
            }
            None => {
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// Copies until EOF or an error, counting bytes; passes the EOF on (half-close).
async fn copy_counting<R, W>(r: &mut R, w: &mut W, count: &AtomicU64)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let Some(chunk) = buf.get(..n) else { break };
                if w.write_all(chunk).await.is_err() {
                    break;
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = w.shutdown().await;
}

// ------------------------------------------------------------------------------- schedule

/// One toxic of a schedule: present from `at` for `hold` after the schedule starts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Planned {
    /// When it is added, from the start of the schedule.
    pub at: Duration,
    /// How long it stays.
    pub hold: Duration,
    /// The toxic.
    pub toxic: Toxic,
}

impl Planned {
    /// When it is removed, from the start of the schedule.
    pub fn until(&self) -> Duration {
        self.at.saturating_add(self.hold)
    }
}

/// A seeded schedule of `count` toxics of every kind, one starting every 0.5–3 s and each held
/// 1–5 s, so that some overlap. The same seed gives the same schedule.
pub fn schedule(seed: u64, count: usize) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut at = Duration::ZERO;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        at = at.saturating_add(Duration::from_millis(rng.gen_range(500..=3000)));
        let hold = Duration::from_millis(rng.gen_range(1000..=5000));
        let kind = match rng.gen_range(0..8u8) {
            0 => ToxicKind::Latency {
                latency_ms: rng.gen_range(50..=500),
                jitter_ms: rng.gen_range(0..=100),
            },
            1 => ToxicKind::Bandwidth {
                rate_kib: rng.gen_range(1..=64),
            },
            2 => ToxicKind::Timeout {
                timeout_ms: rng.gen_range(500..=3000),
            },
            3 => ToxicKind::Timeout { timeout_ms: 0 },
            4 => {
                let average_size = rng.gen_range(1..=64);
                ToxicKind::Slicer {
                    average_size,
                    size_variation: rng.gen_range(0..average_size),
                    delay_us: rng.gen_range(0..=500),
                }
            }
            5 => ToxicKind::LimitData {
                bytes: rng.gen_range(1..=4096),
            },
            6 => ToxicKind::SlowClose {
                delay_ms: rng.gen_range(100..=2000),
            },
            _ => ToxicKind::ResetPeer {
                timeout_ms: rng.gen_range(0..=1000),
            },
        };
        let direction = if rng.gen_bool(0.25) {
            Direction::Upstream
        } else {
            Direction::Downstream
        };
        out.push(Planned {
            at,
            hold,
            toxic: Toxic::new(format!("{}_{i}", kind.name()), kind, direction),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        assert_eq!(schedule(7, 50), schedule(7, 50));
        assert_ne!(schedule(7, 50), schedule(8, 50));
        assert_eq!(schedule(7, 50).len(), 50);
    }

    #[test]
    fn a_schedule_draws_every_kind_and_some_toxics_overlap() {
        let plan = schedule(1, 200);
        let kinds: std::collections::BTreeSet<&str> =
            plan.iter().map(|p| p.toxic.kind.name()).collect();
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            [
                "bandwidth",
                "blackhole",
                "latency",
                "limit_data",
                "reset_peer",
                "slicer",
                "slow_close",
                "timeout"
            ]
        );
        let overlapping = plan.windows(2).filter(|w| w[1].at < w[0].until()).count();
        assert!(overlapping > 0, "some toxics overlap");
        let names: std::collections::BTreeSet<&str> =
            plan.iter().map(|p| p.toxic.name.as_str()).collect();
        assert_eq!(names.len(), plan.len(), "names are unique");
    }

    #[test]
    fn a_non_loopback_listen_address_is_refused() {
        for addr in ["0.0.0.0:0", "192.0.2.1:8000", "[::]:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert!(matches!(
                FaultProxy::start(addr, "127.0.0.1:1"),
                Err(ProxyError::NotLoopback(a)) if a == addr
            ));
        }
    }
}
