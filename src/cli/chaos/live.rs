//! `keepwire chaos` over real sockets: supervised streams of any mix of dialects against the
//! emulator in this process, while a seeded schedule injects faults of every dialect (some of
//! them overlapping), and the invariants are checked after every fault:
//!
//! * after a soft fault every stream is Ready with every subscription active and data flowing
//!   again within a bound derived from the streams' settings;
//! * after a hard fault every stream of that dialect stops, and then not one further request or
//!   dial reaches its gateway; the harness heals the fault and resumes the streams;
//! * no data for a topic after its unsubscribe returned (a probe subscription, now and then);
//! * no secret the emulator issued in any log line, metric or status;
//! * memory and file descriptors flat across the run.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use keepwire::emulator::signalr::HubFault;
use keepwire::emulator::ticket::TicketFault;
use keepwire::emulator::{issued_secrets, Emulator, EmulatorHandle, Fault};
use keepwire::{Event, Handle, Status, StreamState, Subscription};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::checks::{self, Holdings, SecretScanner};
use super::html::{self, Band, Marker, Timeline};
use super::{ChaosArgs, DialectChoice};
use crate::cli::scenario::{self, percentile, Dialect};

// ------------------------------------------------------------------------------- log capture

/// Log lines of this process, kept for the secret scan (at most [`LOG_CAP`] bytes between scans).
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
const LOG_CAP: usize = 64 << 20;

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
        if logs.len().saturating_add(buf.len()) <= LOG_CAP {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A tracing writer that keeps every log line in memory, where the run scans it for secrets.
pub fn capture_logs() -> impl for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static
{
    || LogWriter
}

fn take_logs() -> String {
    let bytes = std::mem::take(&mut *LOGS.lock().unwrap_or_else(|e| e.into_inner()));
    String::from_utf8_lossy(&bytes).into_owned()
}

// ------------------------------------------------------------------------------- the plan

/// How a fault ends.
#[derive(Clone, Debug)]
enum Ending {
    /// Retrying fixes it: the streams recover by themselves.
    Soft {
        /// A person approves the login after this long.
        approve_after: Option<Duration>,
    },
    /// Retrying cannot fix it: the streams of the dialect stop; the harness then applies these
    /// faults (healing it) and resumes them.
    Hard(Vec<Fault>),
}

/// One entry of the fault catalogue.
#[derive(Clone, Debug)]
struct Entry {
    dialect: Dialect,
    name: String,
    faults: Vec<Fault>,
    ending: Ending,
}

impl Entry {
    /// Whether the fault refuses credentials (a 401/403 or an expiry): two of them on one
    /// dialect at once make the failure table's "rejected again right after a refresh" a
    /// legitimate hard stop for a stream that meets both.
    fn refuses_credentials(&self) -> bool {
        self.faults.iter().any(|f| match f {
            Fault::RejectUpgrade { status, .. } => matches!(status, 401 | 403),
            Fault::TickleUnauthorized { .. } => true,
            Fault::Hub(HubFault::ExpireTokens) => true,
            Fault::Hub(HubFault::RejectNegotiate { status, .. })
            | Fault::Hub(HubFault::RejectUpgrade { status, .. }) => matches!(status, 401 | 403),
            Fault::Ticket(TicketFault::ExpireJwts) => true,
            _ => false,
        })
    }
}

/// The reason the failure table gives a second refusal of just-refreshed credentials.
const REFUSED_AFTER_REFRESH: &str = "right after a refresh";

fn catalogue(dialects: &[Dialect]) -> Vec<Entry> {
    let mut all = Vec::new();
    for &dialect in dialects {
        for s in scenario::script(dialect) {
            all.push(Entry {
                dialect,
                name: format!("{}: {}", dialect.label(), s.name),
                faults: s.faults,
                ending: Ending::Soft {
                    approve_after: s.approve_after,
                },
            });
        }
        let (name, faults, heal) = match dialect {
            Dialect::Ibkr => (
                "close 1008 (policy)",
                vec![Fault::CloseSockets {
                    code: 1008,
                    reason: "policy".into(),
                }],
                vec![],
            ),
            Dialect::Ticket => (
                "origin blocked (close 1008)",
                vec![
                    Fault::Ticket(TicketFault::BlockOrigins { on: true }),
                    Fault::Ticket(TicketFault::Drop),
                ],
                vec![Fault::Ticket(TicketFault::BlockOrigins { on: false })],
            ),
            Dialect::Signalr => (
                "Close without allowReconnect",
                vec![Fault::Hub(HubFault::Close {
                    allow_reconnect: false,
                    error: Some("kicked by an administrator".into()),
                })],
                vec![],
            ),
        };
        all.push(Entry {
            dialect,
            name: format!("{}: {name} (hard)", dialect.label()),
            faults,
            ending: Ending::Hard(heal),
        });
    }
    all
}

/// The next fault (and now and then a second one on top of it) of a seeded schedule.
fn draw(
    rng: &mut StdRng,
    dialects: &[Dialect],
    catalogue: &[Entry],
    soft: &[&Entry],
) -> Vec<Entry> {
    // A dialect first, then one of its faults: each dialect gets its share.
    let dialect = dialects[rng.gen_range(0..dialects.len())];
    let own: Vec<&Entry> = catalogue.iter().filter(|e| e.dialect == dialect).collect();
    let mut batch = vec![own[rng.gen_range(0..own.len())].clone()];
    // A second soft fault on top of the first, before anything recovered: a 401 during a
    // reconnect, the gateway down while credentials expire.
    if matches!(batch[0].ending, Ending::Soft { .. }) && rng.gen_bool(0.25) {
        batch.push(soft[rng.gen_range(0..soft.len())].clone());
    }
    batch
}

// ------------------------------------------------------------------------------- the report

/// One broken invariant, with what led to it.
#[derive(Clone, Debug, Serialize)]
struct Violation {
    what: String,
    seed: u64,
    /// The faults injected so far, the last one last (at most 8).
    after_faults: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    seed: u64,
    dialect: String,
    streams: usize,
    faults_injected: u64,
    faults_by_kind: BTreeMap<String, u64>,
    overlapping_faults: u64,
    recoveries: u64,
    recovery_bound_ms: u64,
    recovery_p50_ms: u64,
    recovery_p90_ms: u64,
    recovery_p99_ms: u64,
    recovery_max_ms: u64,
    connection_attempts_per_fault: f64,
    credential_refreshes_per_fault: f64,
    hard_failures: u64,
    unsubscribe_checks: u64,
    secrets_known: usize,
    log_bytes_scanned: u64,
    violations: Vec<Violation>,
    rss_start_kib: u64,
    rss_end_kib: u64,
    threads_start: u64,
    threads_end: u64,
    fds_start: u64,
    fds_end: u64,
    elapsed_s: f64,
}

/// `VmRSS` and `Threads` of this process (KiB, count) and its open file descriptors.
fn process_figures() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    (field("VmRSS:"), field("Threads:"), fds)
}

// ------------------------------------------------------------------------------- the timeline

/// Records each stream's state bands as the status changes, for the HTML report.
struct Recorder {
    origin: Instant,
    names: Vec<String>,
    open: Vec<Option<(u64, &'static str)>>,
    timeline: Timeline,
}

impl Recorder {
    fn ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn observe(&mut self, status: &Status) {
        let now = self.ms();
        for i in 0..self.names.len() {
            let Some(state) = status.stream(&self.names[i]).map(|s| s.state.as_str()) else {
                continue;
            };
            match self.open[i] {
                Some((_, open)) if open == state => {}
                previous => {
                    if let Some((from, open)) = previous {
                        self.timeline.bands.push(Band {
                            stream: i,
                            from_ms: from,
                            to_ms: now,
                            state: open,
                        });
                    }
                    self.open[i] = Some((now, state));
                }
            }
        }
    }

    fn finish(&mut self) -> Timeline {
        let now = self.ms();
        for i in 0..self.open.len() {
            if let Some((from, state)) = self.open[i].take() {
                self.timeline.bands.push(Band {
                    stream: i,
                    from_ms: from,
                    to_ms: now,
                    state,
                });
            }
        }
        self.timeline.streams = self.names.clone();
        self.timeline.end_ms = now;
        std::mem::take(&mut self.timeline)
    }
}

// ------------------------------------------------------------------------------- the run

/// One supervised stream of the run.
struct Stream {
    name: String,
    dialect: Dialect,
    subscriptions: usize,
}

/// When data last arrived, per stream and subscription; `arrived` is notified on each.
#[derive(Default)]
struct Freshness {
    last: Mutex<BTreeMap<(usize, usize), Instant>>,
    arrived: Notify,
}

impl Freshness {
    fn since(&self, streams: &[Stream], t0: Instant) -> bool {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .iter()
            .enumerate()
            .all(|(i, s)| (0..s.subscriptions).all(|j| last.get(&(i, j)).is_some_and(|t| *t > t0)))
    }
}

struct Run {
    seed: u64,
    emu: Rc<EmulatorHandle>,
    kw: Handle,
    streams: Vec<Stream>,
    fresh: Arc<Freshness>,
    status: keepwire::StatusWatch,
    scanner: SecretScanner,
    history: Vec<String>,
    violations: Vec<Violation>,
    log_bytes: u64,
}

impl Run {
    fn violate(&mut self, what: String) {
        let keep = self.history.len().saturating_sub(8);
        self.violations.push(Violation {
            what,
            seed: self.seed,
            after_faults: self.history[keep..].to_vec(),
        });
    }

    /// Waits until `done` holds for the status and the data seen, or `bound` passes; signalled
    /// by status changes and data arrivals.
    async fn wait_until(
        &mut self,
        bound: Duration,
        mut done: impl FnMut(&Status, &Freshness) -> bool,
    ) -> Result<Duration, Duration> {
        let started = Instant::now();
        let deadline = started + bound;
        loop {
            let fresh = self.fresh.clone();
            let arrived = fresh.arrived.notified();
            if done(&self.status.snapshot(), &fresh) {
                return Ok(started.elapsed());
            }
            tokio::select! {
                _ = self.status.changed() => {}
                _ = arrived => {}
                _ = tokio::time::sleep_until(deadline) => return Err(started.elapsed()),
            }
        }
    }

    /// Every stream Ready with every subscription active and data after `t0` on each.
    async fn recovered(&mut self, t0: Instant, bound: Duration) -> Result<Duration, Duration> {
        let names: Vec<String> = self.streams.iter().map(|s| s.name.clone()).collect();
        let streams = std::mem::take(&mut self.streams);
        let res = self
            .wait_until(bound, |status, fresh| {
                names
                    .iter()
                    .all(|n| status.stream(n).is_some_and(|s| s.is_fully_ready()))
                    && fresh.since(&streams, t0)
            })
            .await;
        self.streams = streams;
        res
    }

    /// The streams stopped for good, with their reasons.
    fn failed_streams(&self) -> Vec<(String, String)> {
        let status = self.status.snapshot();
        self.streams
            .iter()
            .filter_map(|s| match &status.stream(&s.name)?.state {
                StreamState::Failed { reason } => Some((s.name.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    }

    fn not_ready(&self) -> String {
        let status = self.status.snapshot();
        let stuck: Vec<String> = self
            .streams
            .iter()
            .filter_map(|s| {
                let st = status.stream(&s.name)?;
                (!st.is_fully_ready()).then(|| {
                    let why = match &st.state {
                        StreamState::Failed { reason } => format!(": {reason}"),
                        _ => String::new(),
                    };
                    format!(
                        "{} {} ({}/{} subscriptions active){why}",
                        s.name,
                        st.state.as_str(),
                        st.subscriptions.active,
                        st.subscriptions.desired
                    )
                })
            })
            .collect();
        if stuck.is_empty() {
            "every stream Ready, but no data since the fault on some subscription".into()
        } else {
            stuck.join(", ")
        }
    }

    /// Scans what keepwire wrote since the last scan: logs, the metrics, the status.
    fn scan_for_secrets(&mut self) {
        self.scanner.learn(issued_secrets());
        let mut text = take_logs();
        self.log_bytes = self.log_bytes.saturating_add(text.len() as u64);
        let mut metrics = Vec::new();
        let families = self.kw.registry().gather();
        if prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut metrics)
            .is_ok()
        {
            text.push_str(&String::from_utf8_lossy(&metrics));
        }
        if let Ok(status) = serde_json::to_string(&*self.status.snapshot()) {
            text.push_str(&status);
        }
        let leaks = self.scanner.leaks(&text);
        if !leaks.is_empty() {
            self.violate(format!(
                "{} secret(s) issued by the gateway found in keepwire's logs, metrics or status: {}",
                leaks.len(),
                leaks.join(", ")
            ));
        }
    }

    /// Subscribes a probe on stream `i`, waits for its data, unsubscribes, and checks that
    /// nothing arrives after the unsubscribe returned.
    async fn probe_unsubscribe(&mut self, i: usize) -> bool {
        let (name, dialect) = (self.streams[i].name.clone(), self.streams[i].dialect);
        let probe: Subscription = scenario::probe(dialect);
        let mut rx = match self.kw.subscribe(&name, probe.clone()).await {
            Ok(rx) => rx,
            Err(e) => {
                self.violate(format!("probe subscription on {name} refused: {e}"));
                return false;
            }
        };
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(ev) = rx.recv().await {
                if matches!(ev, Event::Data { .. }) {
                    return true;
                }
            }
            false
        })
        .await;
        if first != Ok(true) {
            self.violate(format!(
                "probe subscription on {name} got no data within 10 s of subscribing"
            ));
        }
        match self.kw.unsubscribe(&name, probe).await {
            Ok(true) => {}
            other => self.violate(format!("unsubscribing the probe on {name}: {other:?}")),
        }
        if let Some(v) = checks::silent_after_unsubscribe(rx, Duration::from_secs(2)).await {
            self.violate(format!("{name}: {v}"));
        }
        true
    }
}

impl Dialect {
    fn label(self) -> &'static str {
        match self {
            Dialect::Ibkr => "ibkr",
            Dialect::Ticket => "ticket",
            Dialect::Signalr => "signalr",
        }
    }
}

fn credential_requests(status: &Status) -> u64 {
    status
        .streams
        .values()
        .fold(0u64, |a, s| a.saturating_add(s.credential_requests))
}

fn connection_attempts(c: &keepwire::emulator::Counters) -> u64 {
    [
        c.ws_upgrades_accepted,
        c.ws_upgrades_rejected,
        c.hub.upgrades_accepted,
        c.hub.upgrades_rejected,
        c.ticket.upgrades_accepted,
        c.ticket.upgrades_rejected,
    ]
    .iter()
    .fold(0u64, |a, b| a.saturating_add(*b))
}

/// Runs `keepwire chaos` over real sockets.
pub async fn run(args: &ChaosArgs) -> ExitCode {
    let faults_wanted = args.faults.unwrap_or(100) as u64;
    let dialects: Vec<Dialect> = match args.dialect {
        DialectChoice::Ibkr => vec![Dialect::Ibkr],
        DialectChoice::Ticket => vec![Dialect::Ticket],
        DialectChoice::Signalr => vec![Dialect::Signalr],
        DialectChoice::All => vec![Dialect::Ibkr, Dialect::Ticket, Dialect::Signalr],
    };
    let emu = match Emulator::start(scenario::emulator_config()) {
        Ok(e) => Rc::new(e),
        Err(e) => {
            eprintln!("keepwire chaos: cannot start the emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let streams: Vec<Stream> = (0..args.streams.max(1))
        .map(|i| {
            let dialect = dialects[i % dialects.len()];
            Stream {
                name: format!("{}-{i}", dialect.label()),
                dialect,
                subscriptions: scenario::subscriptions(dialect).len(),
            }
        })
        .collect();
    let mut builder = Handle::builder();
    let mut bound = Duration::ZERO;
    for s in &streams {
        let cfg = scenario::stream_config(s.dialect, &s.name, &emu);
        // Longest fault (1.5 s) and login approval (1.5 s), a few backoff steps, silence
        // detection, a login poll and a resubscription, plus slack for a loaded machine.
        let b = Duration::from_secs(3)
            + cfg.backoff.max * 4
            + cfg.heartbeat_timeout * 2
            + cfg.login_poll_interval * 2
            + Duration::from_secs(2)
            + Duration::from_secs(10);
        bound = bound.max(b);
        builder = builder.stream(cfg);
    }
    if let Some(ms) = args.recovery_bound_ms {
        bound = Duration::from_millis(ms);
    }
    let kw = match builder.start() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("keepwire chaos: cannot start keepwire: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fresh = Arc::new(Freshness::default());
    for (i, s) in streams.iter().enumerate() {
        for (j, sub) in scenario::subscriptions(s.dialect).into_iter().enumerate() {
            let mut rx = match kw.subscribe(&s.name, sub).await {
                Ok(rx) => rx,
                Err(e) => {
                    eprintln!("keepwire chaos: subscribing on {}: {e}", s.name);
                    return ExitCode::FAILURE;
                }
            };
            let fresh = fresh.clone();
            actix_rt::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    if matches!(ev, Event::Data { .. }) {
                        fresh
                            .last
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert((i, j), Instant::now());
                        fresh.arrived.notify_waiters();
                    }
                }
            });
        }
    }
    let status = kw.status();
    let recorder = Rc::new(RefCell::new(Recorder {
        origin: Instant::now(),
        names: streams.iter().map(|s| s.name.clone()).collect(),
        open: vec![None; streams.len()],
        timeline: Timeline::default(),
    }));
    let recording = {
        let (recorder, mut status) = (recorder.clone(), status.clone());
        actix_rt::spawn(async move {
            loop {
                recorder.borrow_mut().observe(&status.snapshot_and_update());
                if status.changed().await.is_err() {
                    break;
                }
            }
        })
    };
    let mut run = Run {
        seed: args.seed,
        emu: emu.clone(),
        kw,
        streams,
        fresh,
        status,
        scanner: SecretScanner::default(),
        history: Vec::new(),
        violations: Vec::new(),
        log_bytes: 0,
    };
    let started = Instant::now();
    if run.recovered(started, bound).await.is_err() {
        let stuck = run.not_ready();
        run.violate(format!(
            "not every stream Ready with data within {} ms of starting: {stuck}",
            bound.as_millis()
        ));
    }
    let (rss_start, threads_start, fds_start) = process_figures();
    let counters_start = run.emu.counters();
    let mut counters_seen = counters_start.clone();
    let creds_start = credential_requests(&run.status.snapshot());

    let pb = if std::io::stderr().is_terminal() {
        ProgressBar::new(faults_wanted)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} faults  {msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    let catalogue = catalogue(&dialects);
    let soft: Vec<&Entry> = catalogue
        .iter()
        .filter(|e| matches!(e.ending, Ending::Soft { .. }))
        .collect();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let deadline = args.duration.map(|s| started + Duration::from_secs(s));
    let mut injected = 0u64;
    let mut overlapping = 0u64;
    let mut hard_failures = 0u64;
    let mut unsubscribe_checks = 0u64;
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut recoveries: Vec<u64> = Vec::new();
    while injected < faults_wanted && deadline.is_none_or_before(Instant::now()) {
        let batch = draw(&mut rng, &dialects, &catalogue, &soft);
        if batch.len() > 1 {
            overlapping += 1;
        }
        // A hard fault reaches the sockets open when it is injected: streams between sockets
        // (still settling from a soft fault) may escape it.
        let open_before: Vec<String> = {
            let status = run.status.snapshot();
            run.streams
                .iter()
                .filter(|s| {
                    status
                        .stream(&s.name)
                        .is_some_and(|st| st.state == StreamState::Ready)
                })
                .map(|s| s.name.clone())
                .collect()
        };
        let t0 = Instant::now();
        for entry in &batch {
            for f in &entry.faults {
                run.emu.inject(f.clone());
            }
            if let Ending::Soft {
                approve_after: Some(after),
            } = entry.ending
            {
                let emu = run.emu.clone();
                actix_rt::spawn(async move {
                    tokio::time::sleep(after).await;
                    emu.inject(Fault::ApproveLogin);
                });
            }
            injected += 1;
            {
                let mut r = recorder.borrow_mut();
                let at_ms = r.ms();
                r.timeline.faults.push(Marker {
                    at_ms,
                    name: entry.name.clone(),
                    hard: matches!(entry.ending, Ending::Hard(_)),
                });
            }
            *by_kind.entry(entry.name.clone()).or_default() += 1;
            run.history.push(entry.name.clone());
        }
        if let Ending::Hard(heal) = &batch[0].ending {
            let dialect = batch[0].dialect;
            let affected: Vec<String> = run
                .streams
                .iter()
                .filter(|s| s.dialect == dialect)
                .map(|s| s.name.clone())
                .collect();
            let reached: Vec<String> = affected
                .iter()
                .filter(|n| open_before.contains(n))
                .cloned()
                .collect();
            let failed = |status: &Status, n: &String| {
                status
                    .stream(n)
                    .is_some_and(|s| matches!(s.state, StreamState::Failed { .. }))
            };
            let stopped = run
                .wait_until(bound, |status, _| reached.iter().all(|n| failed(status, n)))
                .await;
            match stopped {
                Ok(_) => {
                    let all_stopped = {
                        let status = run.status.snapshot();
                        affected.iter().all(|n| failed(&status, n))
                    };
                    hard_failures += reached.len() as u64;
                    // An observation window: whatever keepwire would still send, it sends now.
                    // Only meaningful when every stream of the dialect stopped (one that was
                    // between sockets and escaped the fault goes on talking, rightly).
                    if all_stopped {
                        let before = run.emu.counters();
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        let after = run.emu.counters();
                        if let Some(v) = checks::quiet_after_hard(&before, &after, dialect) {
                            run.violate(v);
                        }
                    }
                }
                Err(waited) => {
                    let stuck = run.not_ready();
                    run.violate(format!(
                        "a hard fault was not recognised within {} ms: {stuck}",
                        waited.as_millis()
                    ));
                }
            }
            for f in heal {
                run.emu.inject(f.clone());
            }
            for name in &affected {
                if let Err(e) = run.kw.resume(name).await {
                    run.violate(format!("resuming {name}: {e}"));
                }
            }
        }
        match run.recovered(t0, bound).await {
            Ok(took) => {
                recoveries.push(took.as_millis() as u64);
                let mut r = recorder.borrow_mut();
                let from = t0.saturating_duration_since(r.origin).as_millis() as u64;
                let to = r.ms();
                r.timeline.recoveries.push((from, to));
            }
            Err(waited) => {
                // Two credential refusals on one dialect at once: a stream that met both was
                // refused again right after its refresh, which the failure table calls hard.
                let doubled: Vec<Dialect> = dialects
                    .iter()
                    .copied()
                    .filter(|d| {
                        batch
                            .iter()
                            .filter(|e| e.dialect == *d && e.refuses_credentials())
                            .count()
                            >= 2
                    })
                    .collect();
                let failed = run.failed_streams();
                let expected = !failed.is_empty()
                    && failed.iter().all(|(name, reason)| {
                        reason.contains(REFUSED_AFTER_REFRESH)
                            && run
                                .streams
                                .iter()
                                .any(|s| s.name == *name && doubled.contains(&s.dialect))
                    });
                if expected {
                    hard_failures += failed.len() as u64;
                } else {
                    let stuck = run.not_ready();
                    run.violate(format!(
                        "not recovered within {} ms: {stuck}",
                        waited.as_millis()
                    ));
                }
                // Reported once: resume what stopped, so that later faults are judged on their own.
                for (name, _) in &failed {
                    if let Err(e) = run.kw.resume(name).await {
                        run.violate(format!("resuming {name}: {e}"));
                    }
                }
                let again = Instant::now();
                if run.recovered(again, bound).await.is_err() {
                    let stuck = run.not_ready();
                    run.violate(format!(
                        "not recovered within {} ms of resuming: {stuck}",
                        bound.as_millis()
                    ));
                }
            }
        }
        if injected % 5 == 0 || injected >= faults_wanted {
            let i = rng.gen_range(0..run.streams.len());
            if run.probe_unsubscribe(i).await {
                unsubscribe_checks += 1;
            }
        }
        run.scan_for_secrets();
        let counters = run.emu.counters();
        for v in checks::reused_credentials(&counters_seen, &counters) {
            run.violate(v);
        }
        counters_seen = counters;
        let ready = {
            let status = run.status.snapshot();
            status
                .streams
                .values()
                .filter(|s| s.is_fully_ready())
                .count()
        };
        pb.set_position(injected.min(faults_wanted));
        pb.set_message(format!(
            "ready {ready}/{}  violations {}",
            run.streams.len(),
            run.violations.len()
        ));
    }
    pb.finish_and_clear();
    run.scan_for_secrets();
    let (rss_end, threads_end, fds_end) = process_figures();
    let counters_end = run.emu.counters();
    let creds_end = credential_requests(&run.status.snapshot());
    // Leaks across thousands of reconnects show as growth here.
    let fd_slack = 16 + 2 * run.streams.len() as u64;
    let held = |rss_kib, fds| Holdings { rss_kib, fds };
    for v in checks::growth(held(rss_start, fds_start), held(rss_end, fds_end), fd_slack) {
        run.violate(v);
    }
    recoveries.sort_unstable();
    let per_fault = |n: u64| {
        if injected == 0 {
            0.0
        } else {
            n as f64 / injected as f64
        }
    };
    let report = Report {
        seed: args.seed,
        dialect: format!("{:?}", args.dialect).to_lowercase(),
        streams: run.streams.len(),
        faults_injected: injected,
        faults_by_kind: by_kind,
        overlapping_faults: overlapping,
        recoveries: recoveries.len() as u64,
        recovery_bound_ms: bound.as_millis() as u64,
        recovery_p50_ms: percentile(&recoveries, 0.5),
        recovery_p90_ms: percentile(&recoveries, 0.9),
        recovery_p99_ms: percentile(&recoveries, 0.99),
        recovery_max_ms: recoveries.last().copied().unwrap_or(0),
        connection_attempts_per_fault: per_fault(
            connection_attempts(&counters_end).saturating_sub(connection_attempts(&counters_start)),
        ),
        credential_refreshes_per_fault: per_fault(creds_end.saturating_sub(creds_start)),
        hard_failures,
        unsubscribe_checks,
        secrets_known: run.scanner.known(),
        log_bytes_scanned: run.log_bytes,
        violations: run.violations.clone(),
        rss_start_kib: rss_start,
        rss_end_kib: rss_end,
        threads_start,
        threads_end,
        fds_start,
        fds_end,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    recording.abort();
    let timeline = recorder.borrow_mut().finish();
    run.kw.shutdown().await;
    run.emu.stop();
    print_report(&report);
    if let Some(path) = &args.report {
        let summary = html::Summary {
            title: format!(
                "seed {}, {} streams ({}), {} faults injected, {} violation(s)",
                report.seed,
                report.streams,
                report.dialect,
                report.faults_injected,
                report.violations.len()
            ),
            lines: vec![
                format!(
                    "recovery p50 {} ms, p90 {} ms, p99 {} ms, max {} ms (bound {} ms)",
                    report.recovery_p50_ms,
                    report.recovery_p90_ms,
                    report.recovery_p99_ms,
                    report.recovery_max_ms,
                    report.recovery_bound_ms
                ),
                format!(
                    "per fault: {:.2} connection attempts, {:.2} credential refreshes; hard failures {}",
                    report.connection_attempts_per_fault,
                    report.credential_refreshes_per_fault,
                    report.hard_failures
                ),
                format!(
                    "RSS {} → {} KiB; file descriptors {} → {}",
                    report.rss_start_kib, report.rss_end_kib, report.fds_start, report.fds_end
                ),
            ],
            violations: report
                .violations
                .iter()
                .map(|v| (format!("seed {}: {}", v.seed, v.what), v.after_faults.join(" → ")))
                .collect(),
            recoveries_ms: &recoveries,
        };
        if let Err(e) = std::fs::write(path, html::render(&summary, &timeline)) {
            eprintln!("keepwire chaos: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("report: {}", path.display());
    }
    super::finish(args.json, &report, !report.violations.is_empty())
}

/// `Option<Instant>` as a deadline: none means no deadline.
trait Deadline {
    fn is_none_or_before(&self, now: Instant) -> bool;
}

impl Deadline for Option<Instant> {
    fn is_none_or_before(&self, now: Instant) -> bool {
        match self {
            None => true,
            Some(d) => now < *d,
        }
    }
}

fn print_report(r: &Report) {
    for v in &r.violations {
        println!("VIOLATION (seed {}): {}", v.seed, v.what);
        println!("  after: {}", v.after_faults.join(" → "));
    }
    println!(
        "{} streams ({}), seed {}: {} faults injected ({} overlapping), {} recoveries in {:.0} s",
        r.streams,
        r.dialect,
        r.seed,
        r.faults_injected,
        r.overlapping_faults,
        r.recoveries,
        r.elapsed_s
    );
    println!(
        "recovery p50 {} ms, p90 {} ms, p99 {} ms, max {} ms (bound {} ms)",
        r.recovery_p50_ms,
        r.recovery_p90_ms,
        r.recovery_p99_ms,
        r.recovery_max_ms,
        r.recovery_bound_ms
    );
    println!(
        "per fault: {:.2} connection attempts, {:.2} credential refreshes; hard failures {}; unsubscribe checks {}",
        r.connection_attempts_per_fault,
        r.credential_refreshes_per_fault,
        r.hard_failures,
        r.unsubscribe_checks
    );
    println!(
        "secrets: {} known, none allowed in {} bytes of logs, the metrics and the status",
        r.secrets_known, r.log_bytes_scanned
    );
    println!(
        "RSS {} → {} KiB, threads {} → {}, file descriptors {} → {}",
        r.rss_start_kib, r.rss_end_kib, r.threads_start, r.threads_end, r.fds_start, r.fds_end
    );
    println!("faults by kind:");
    for (kind, n) in &r.faults_by_kind {
        println!("  {n:>5}  {kind}");
    }
    println!("{} violation(s)", r.violations.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(seed: u64) -> Vec<String> {
        let dialects = [Dialect::Ibkr, Dialect::Ticket, Dialect::Signalr];
        let catalogue = catalogue(&dialects);
        let soft: Vec<&Entry> = catalogue
            .iter()
            .filter(|e| matches!(e.ending, Ending::Soft { .. }))
            .collect();
        let mut rng = StdRng::seed_from_u64(seed);
        (0..200)
            .flat_map(|_| draw(&mut rng, &dialects, &catalogue, &soft))
            .map(|e| e.name)
            .collect()
    }

    #[test]
    fn credential_refusals_are_told_from_other_faults() {
        let all = catalogue(&[Dialect::Ibkr, Dialect::Ticket, Dialect::Signalr]);
        let refuses = |name: &str| {
            all.iter()
                .find(|e| e.name == name)
                .map(Entry::refuses_credentials)
        };
        assert_eq!(refuses("signalr: 401 on negotiate"), Some(true));
        assert_eq!(
            refuses("signalr: token expired mid-stream (Close: Unauthorized)"),
            Some(true)
        );
        assert_eq!(
            refuses("ticket: JWT expired (401 INVALID_TOKEN)"),
            Some(true)
        );
        assert_eq!(refuses("ibkr: 403 on the socket handshake"), Some(true));
        assert_eq!(refuses("signalr: 503 on negotiate"), Some(false));
        assert_eq!(refuses("signalr: connection dropped"), Some(false));
        assert_eq!(refuses("ibkr: socket dropped"), Some(false));
    }

    #[test]
    fn the_same_seed_draws_the_same_schedule_with_every_dialect_hard_faults_and_overlaps() {
        let a = schedule(1);
        assert_eq!(a, schedule(1));
        assert_ne!(a, schedule(2));
        for dialect in ["ibkr:", "ticket:", "signalr:"] {
            assert!(a.iter().any(|n| n.starts_with(dialect)), "{dialect}");
        }
        assert!(a.iter().any(|n| n.ends_with("(hard)")));
        assert!(a.len() > 200, "some faults come two at a time");
    }
}
