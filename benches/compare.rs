//! keepwire next to a bare socket, in one run: what does the supervisor cost?
//!
//! A fast loopback source (written here, apart from keepwire, on plain threads and blocking
//! sockets) speaks just enough of the ticket dialect for keepwire's unmodified ticket stream to
//! connect (`POST /api/v1/auth/token`, `GET /api/v1/ws-ticket`, `/ws` with `hello`, `subscribed`
//! acks and heartbeats) and streams pre-serialised ~150-byte market-data messages as fast as the
//! socket takes them. Two clients read the same stream, one after the other:
//!
//! * **bare**: an awc WebSocket client in an actix System that parses every frame into
//!   `serde_json::Value` and counts the data messages (the floor on this stack);
//! * **keepwire**: a `Handle` with a ticket stream, consumer tasks counting `Event::Data`;
//! * for consumers on threads of their own, also a **bare client handing off** each frame to
//!   consumer tasks on the bench's runtime (routed by channel, parsed by the consumer): the
//!   least any design whose consumers run on the user's threads pays (a wake-up of another
//!   thread per message when they are idle).
//!
//! Every figure is printed for both with the ratio. Every message sent must be counted received
//! (nothing dropped): a run that loses one fails the bench.
//!
//! `cargo bench --bench compare` (`KW_BENCH_MESSAGES` messages per throughput run, default
//! 1 000 000; `KW_BENCH_SECS` seconds per latency run, default 10; `KW_BENCH_ONLY=throughput`,
//! `latency`, `recovery` or `scale` for one part; `KW_BENCH_STREAMS` streams in the scale run,
//! default 1 000; `KW_BENCH_SETTLE_SECS`, `KW_BENCH_IDLE_SECS` its wait before and length of the
//! idle measurement, default 35 and 10).
//! `cargo test --all-targets` runs it as a short smoke run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use keepwire::dialect::ticket::TicketConfig;
use keepwire::{Event, Handle, StreamConfig, Subscription};

// ---------------------------------------------------------------- clock shared by both ends

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    origin().elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------- the fast source

/// What the bench asks the source's socket writer to do.
enum Out {
    Ack(String),
    /// Stream `count` data messages round-robin over `channels`; `pace`: one message every
    /// `pace` with a send timestamp, else pre-serialised as fast as the socket takes them.
    Burst {
        channels: Vec<String>,
        count: u64,
        pace: Option<Duration>,
    },
    Close,
    /// Drop the socket without a close frame (a fault).
    Drop,
}

#[derive(Clone, Default)]
struct Source {
    port: u16,
    /// The writer of the latest upgraded socket.
    latest: Arc<Mutex<Option<mpsc::Sender<Out>>>>,
    /// Channels the latest socket has subscribed to.
    subscribed: Arc<Mutex<Vec<String>>>,
    /// When the last burst started writing (ns since `origin`).
    burst_started: Arc<AtomicU64>,
}

impl Source {
    fn start() -> Source {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the source");
        let source = Source {
            port: listener.local_addr().expect("local addr").port(),
            ..Source::default()
        };
        let s = source.clone();
        std::thread::Builder::new()
            .name("src-accept".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let s = s.clone();
                    let _ = std::thread::Builder::new()
                        .name("src-conn".into())
                        .spawn(move || s.serve(conn));
                }
            })
            .expect("source thread");
        source
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn burst(&self, channels: &[String], count: u64, pace: Option<Duration>) {
        let tx = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        tx.as_ref()
            .expect("a socket is open")
            .send(Out::Burst {
                channels: channels.to_vec(),
                count,
                pace,
            })
            .expect("the socket writer is alive");
    }

    fn subscribed(&self) -> usize {
        self.subscribed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Drops the latest socket (a fault the client must recover from).
    fn drop_socket(&self) {
        if let Some(tx) = self
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = tx.send(Out::Drop);
        }
    }

    fn close(&self) {
        if let Some(tx) = self
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = tx.send(Out::Close);
        }
    }

    /// HTTP/1.1 with keep-alive until a WebSocket upgrade.
    fn serve(&self, conn: TcpStream) {
        let _ = conn.set_nodelay(true);
        let mut reader = BufReader::new(conn.try_clone().expect("clone socket"));
        let mut writer = conn;
        loop {
            let mut head = String::new();
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut lines = head.lines();
            let request = lines.next().unwrap_or_default().to_string();
            let headers: HashMap<String, String> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let path = request.split_whitespace().nth(1).unwrap_or_default();
            let reply = |w: &mut TcpStream, status: &str, body: &str| {
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
            };
            if path.starts_with("/api/v1/auth/token") {
                reply(
                    &mut writer,
                    "200 OK",
                    r#"{"token":"bench-jwt","expiresIn":86400}"#,
                );
            } else if path.starts_with("/api/v1/ws-ticket") {
                reply(&mut writer, "200 OK", r#"{"ticket":"bench-ticket"}"#);
            } else if path.starts_with("/ws") {
                let key = headers
                    .get("sec-websocket-key")
                    .cloned()
                    .unwrap_or_default();
                let accept = actix_http::ws::hash_key(key.as_bytes());
                let _ = write!(
                    writer,
                    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
                    String::from_utf8_lossy(&accept)
                );
                let pending = reader.buffer().to_vec();
                let read_half = reader.into_inner();
                return self.socket(read_half, writer, pending);
            } else {
                reply(&mut writer, "404 Not Found", "{}");
            }
        }
    }

    fn socket(&self, read_half: TcpStream, mut w: TcpStream, pending: Vec<u8>) {
        let (tx, rx) = mpsc::channel::<Out>();
        self.subscribed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx.clone());
        // The reader: client frames (subscribe commands) become acks written by the writer.
        let subscribed = self.subscribed.clone();
        let _ = std::thread::Builder::new()
            .name("src-read".into())
            .spawn(move || {
                let mut r = read_half;
                let mut buf = BytesMut::from(&pending[..]);
                let mut chunk = [0u8; 4096];
                loop {
                    while let Ok(Some((_, op, payload))) = Parser::parse(&mut buf, true, 1 << 20) {
                        match op {
                            OpCode::Text => {
                                let v: serde_json::Value =
                                    serde_json::from_slice(payload.as_deref().unwrap_or(&[]))
                                        .unwrap_or_default();
                                let channel = v["channel"].as_str().unwrap_or_default().to_string();
                                if v["op"] == "subscribe" {
                                    subscribed
                                        .lock()
                                        .unwrap_or_else(PoisonError::into_inner)
                                        .push(channel.clone());
                                    let _ = tx.send(Out::Ack(channel));
                                }
                            }
                            OpCode::Close => {
                                let _ = tx.send(Out::Close);
                                return;
                            }
                            _ => {}
                        }
                    }
                    match r.read(&mut chunk) {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(Out::Close);
                            return;
                        }
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        let frame = |payload: &[u8]| -> Bytes {
            let mut b = BytesMut::with_capacity(payload.len() + 10);
            Parser::write_message(&mut b, payload, OpCode::Text, true, false);
            b.freeze()
        };
        if w.write_all(&frame(br#"{"type":"hello"}"#)).is_err() {
            return;
        }
        loop {
            let out = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(out) => out,
                Err(RecvTimeoutError::Timeout) => {
                    let hb = format!(r#"{{"type":"heartbeat","ts":{}}}"#, now_ns());
                    if w.write_all(&frame(hb.as_bytes())).is_err() {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let ok = match out {
                Out::Ack(channel) => {
                    let ack = format!(r#"{{"type":"subscribed","channel":"{channel}"}}"#);
                    w.write_all(&frame(ack.as_bytes())).is_ok()
                }
                Out::Drop => {
                    let _ = w.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Out::Close => {
                    let mut b = BytesMut::new();
                    Parser::write_close(&mut b, None, false);
                    let _ = w.write_all(&b);
                    let _ = w.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Out::Burst {
                    channels,
                    count,
                    pace: None,
                } => {
                    // Pre-serialised: one block of frames, written whole while it fits.
                    let frames: Vec<Bytes> = (0..channels.len() * 64)
                        .map(|i| {
                            frame(
                                market_data(&channels[i % channels.len()], i as u64, 0).as_bytes(),
                            )
                        })
                        .collect();
                    let block: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
                    let per_block = frames.len() as u64;
                    self.burst_started.store(now_ns(), Ordering::SeqCst);
                    let mut left = count;
                    let mut ok = true;
                    while ok && left >= per_block {
                        ok = w.write_all(&block).is_ok();
                        left -= per_block;
                    }
                    for f in frames.iter().take(left as usize) {
                        ok = ok && w.write_all(f).is_ok();
                    }
                    ok
                }
                Out::Burst {
                    channels,
                    count,
                    pace: Some(every),
                } => {
                    let start = Instant::now();
                    self.burst_started.store(now_ns(), Ordering::SeqCst);
                    let mut ok = true;
                    for i in 0..count {
                        let due = start + every * i as u32;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let ch = &channels[i as usize % channels.len()];
                        ok = w
                            .write_all(&frame(market_data(ch, i, now_ns()).as_bytes()))
                            .is_ok();
                        if !ok {
                            break;
                        }
                    }
                    ok
                }
            };
            if !ok {
                return;
            }
        }
    }
}

/// A ~150-byte market-data message.
fn market_data(channel: &str, seq: u64, ts: u64) -> String {
    format!(
        r#"{{"type":"data","channel":"{channel}","seq":{seq},"ts":{ts},"bid":"189.56","ask":"189.61","bidSize":500,"askSize":200,"last":"189.60","volume":12345678}}"#
    )
}

// ---------------------------------------------------------------- counting

struct Tally {
    target: u64,
    count: AtomicU64,
    end_ns: AtomicU64,
    done: tokio::sync::Notify,
    latencies: Option<Mutex<Vec<u64>>>,
}

impl Tally {
    fn new(target: u64, latency: bool) -> Arc<Tally> {
        Arc::new(Tally {
            target,
            count: AtomicU64::new(0),
            end_ns: AtomicU64::new(0),
            done: tokio::sync::Notify::new(),
            latencies: latency.then(|| Mutex::new(Vec::with_capacity(target as usize))),
        })
    }

    /// Counts one data message (its send timestamp when measuring latency).
    fn data(&self, data: &serde_json::Value) {
        if let Some(l) = &self.latencies {
            let sent = data["ts"].as_u64().unwrap_or_default();
            l.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(now_ns().saturating_sub(sent));
        }
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.end_ns.store(now_ns(), Ordering::SeqCst);
            self.done.notify_one();
        }
    }

    async fn wait(&self, limit: Duration) -> Result<u64, String> {
        if tokio::time::timeout(limit, self.done.notified())
            .await
            .is_err()
        {
            return Err(format!(
                "only {} of {} messages received within {limit:?}",
                self.count.load(Ordering::Relaxed),
                self.target
            ));
        }
        Ok(self.end_ns.load(Ordering::SeqCst))
    }

    fn percentiles(&self) -> (f64, f64, f64) {
        let mut v = self
            .latencies
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .unwrap_or_default();
        v.sort_unstable();
        let at = |q: f64| {
            v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default() as f64
                / 1000.0
        };
        (
            at(0.5),
            at(0.99),
            v.last().copied().unwrap_or_default() as f64 / 1000.0,
        )
    }
}

/// CPU seconds of this process's threads except the source's (`src-*`), by thread id and name.
fn client_cpu() -> HashMap<String, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((name, rest)) = stat.split_once(") ") else {
            continue;
        };
        if name.contains("(src-") {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        let comm = name.rsplit('(').next().unwrap_or_default().to_string();
        out.insert(
            task.file_name().to_string_lossy().into_owned(),
            (comm, ticks / 100.0),
        );
    }
    out
}

/// CPU seconds since `before`: of every client thread, and of the socket reader's thread
/// (`reader`: keepwire's own thread, or the bare client's).
fn cpu_since(before: &HashMap<String, (String, f64)>, reader: &str) -> (f64, f64) {
    let mut all = 0.0;
    let mut on_reader = 0.0;
    for (tid, (comm, now)) in client_cpu() {
        let spent = now - before.get(&tid).map_or(0.0, |(_, t)| *t);
        all += spent;
        if comm == reader {
            on_reader += spent;
        }
    }
    (all, on_reader)
}

// ---------------------------------------------------------------- the two clients

/// Result of one client's run.
struct Run {
    msgs_per_sec: f64,
    cpu_ns_per_msg: f64,
    /// Of it, on the thread that reads the socket.
    reader_ns_per_msg: f64,
    latency: (f64, f64, f64),
}

/// Where the bare client parses and counts its data.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bare {
    /// On the socket reader's thread: the floor on this stack.
    Inline,
    /// Handed off, frame by frame, to this many consumer tasks on the bench's own runtime
    /// (routed by channel through tokio channels; each consumer parses): the least a design
    /// whose consumers run on the user's threads pays, and so the floor for keepwire's
    /// consumers on their own threads.
    HandOff(usize),
}

/// Consumer tasks on the bench's runtime that parse and count what the bare reader hands them;
/// `route` maps a data frame to its consumer by its channel.
fn hand_off_consumers(
    channels: &[String],
    consumers: usize,
    tally: &Arc<Tally>,
) -> (HandOffRoute, Vec<tokio::task::JoinHandle<()>>) {
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..consumers.max(1) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let t = tally.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                t.data(&v);
            }
        }));
        senders.push(tx);
    }
    let by_channel = channels
        .iter()
        .enumerate()
        .map(|(i, ch)| (ch.as_bytes().to_vec(), i % senders.len()))
        .collect();
    (
        HandOffRoute {
            senders,
            by_channel,
        },
        tasks,
    )
}

/// The bare reader's side of a hand-off: a look at the frame's channel, a send.
struct HandOffRoute {
    senders: Vec<tokio::sync::mpsc::UnboundedSender<Bytes>>,
    by_channel: HashMap<Vec<u8>, usize>,
}

impl HandOffRoute {
    const KEY: &'static [u8] = br#""channel":""#;

    /// Hands a data frame to its channel's consumer.
    fn send(&self, frame: Bytes) {
        let channel = frame
            .windows(Self::KEY.len())
            .position(|w| w == Self::KEY)
            .map(|at| &frame[at + Self::KEY.len()..])
            .and_then(|rest| rest.split(|b| *b == b'"').next())
            .and_then(|ch| self.by_channel.get(ch))
            .copied()
            .unwrap_or(0);
        if let Some(tx) = self.senders.get(channel) {
            let _ = tx.send(frame);
        }
    }
}

/// The bare awc client: its own thread and actix System, parse every frame (on that thread or
/// handed off, see [`Bare`]), count data.
async fn bare(
    channels: &[String],
    count: u64,
    pace: Option<Duration>,
    mode: Bare,
) -> Result<Run, String> {
    let source = Source::start();
    let tally = Tally::new(count, pace.is_some());
    let url = format!("ws://127.0.0.1:{}/ws?ticket=bare", source.port);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (route, consumers) = match mode {
        Bare::Inline => (None, Vec::new()),
        Bare::HandOff(n) => {
            let (route, tasks) = hand_off_consumers(channels, n, &tally);
            (Some(route), tasks)
        }
    };
    let (t, chans) = (tally.clone(), channels.to_vec());
    // The thread outlives its run until its CPU time has been read.
    let (finish_tx, finish_rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("bare-awc".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let Ok((_, mut ws)) = awc::Client::new().ws(url).connect().await else {
                    return;
                };
                for ch in &chans {
                    let cmd = format!(r#"{{"op":"subscribe","channel":"{ch}"}}"#);
                    let _ = ws.send(awc::ws::Message::Text(cmd.into())).await;
                }
                let mut acks = 0;
                let mut handed = 0;
                let mut ready_tx = Some(ready_tx);
                while let Some(Ok(frame)) = ws.next().await {
                    if let awc::ws::Frame::Text(bytes) = frame {
                        if let Some(route) = &route {
                            // The cheapest look: this source's data frames all start so.
                            if bytes.starts_with(br#"{"type":"data""#) {
                                route.send(bytes);
                                handed += 1;
                                if handed >= t.target {
                                    break;
                                }
                                continue;
                            }
                        }
                        let v: serde_json::Value =
                            serde_json::from_slice(&bytes).unwrap_or_default();
                        match v["type"].as_str() {
                            Some("data") => {
                                t.data(&v);
                                if t.count.load(Ordering::Relaxed) >= t.target {
                                    break;
                                }
                            }
                            Some("subscribed") => {
                                acks += 1;
                                if acks == chans.len() {
                                    if let Some(r) = ready_tx.take() {
                                        let _ = r.send(());
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                let _ = ws.close().await;
            });
            let _ = finish_rx.recv();
        })
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .map_err(|_| "bare client not subscribed in time".to_string())?
        .map_err(|_| "bare client failed to connect".to_string())?;
    let cpu = client_cpu();
    source.burst(channels, count, pace);
    let end = tally.wait(limit(count, pace)).await?;
    let cpu = cpu_since(&cpu, "bare-awc");
    drop(finish_tx);
    let _ = thread.join();
    for c in consumers {
        let _ = c.await;
    }
    source.close();
    Ok(finish(&source, &tally, end, cpu))
}

fn limit(count: u64, pace: Option<Duration>) -> Duration {
    match pace {
        Some(p) => p * count as u32 + Duration::from_secs(30),
        None => Duration::from_secs(60 + count / 20_000),
    }
}

fn finish(source: &Source, tally: &Tally, end: u64, (cpu, reader): (f64, f64)) -> Run {
    let start = source.burst_started.load(Ordering::SeqCst);
    let secs = end.saturating_sub(start) as f64 / 1e9;
    Run {
        msgs_per_sec: tally.target as f64 / secs,
        cpu_ns_per_msg: cpu * 1e9 / tally.target as f64,
        reader_ns_per_msg: reader * 1e9 / tally.target as f64,
        latency: tally.percentiles(),
    }
}

fn ticket_stream(name: &str, url: String) -> StreamConfig {
    let mut cfg = StreamConfig::ticket(
        name,
        url,
        TicketConfig {
            token_body: r#"{"apiKey":"bench"}"#.into(),
            ..TicketConfig::default()
        },
    );
    cfg.heartbeat_timeout = Duration::from_secs(30);
    cfg
}

/// Where keepwire's consumer tasks run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Consumers {
    /// On the bench's own runtime: every message crosses from keepwire's thread to this one.
    OwnThread,
    /// On keepwire's thread (`Handle::spawn`), next to the socket reader: no hop.
    KeepwireThread,
}

/// keepwire: a ticket stream, `consumers` tasks sharing the subscriptions round-robin, each on
/// one receiver (`Handle::subscribe_many`).
async fn keepwire(
    channels: &[String],
    consumers: usize,
    count: u64,
    pace: Option<Duration>,
    placement: Consumers,
) -> Result<Run, String> {
    let source = Source::start();
    let tally = Tally::new(count, pace.is_some());
    let kw = Handle::builder()
        .stream(ticket_stream("bench", source.base_url()))
        .start()
        .map_err(|e| e.to_string())?;
    // Each consumer takes its share of the subscriptions round-robin, on one receiver.
    let mut groups: Vec<Vec<_>> = (0..consumers).map(|_| Vec::new()).collect();
    for (i, ch) in channels.iter().enumerate() {
        groups[i % consumers].push(Subscription::Channel {
            channel: ch.clone(),
        });
    }
    let mut tasks = Vec::new();
    for group in groups {
        let mut rx = kw
            .subscribe_many("bench", group, 1 << 20)
            .await
            .map_err(|e| e.to_string())?;
        let t = tally.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let task = async move {
            let _done = done_tx;
            while let Some(e) = rx.recv().await {
                if let Event::Data { data, .. } = e {
                    t.data(&data);
                }
            }
        };
        match placement {
            Consumers::OwnThread => drop(tokio::spawn(task)),
            Consumers::KeepwireThread => kw.spawn(task).map_err(|e| e.to_string())?,
        }
        tasks.push(done_rx);
    }
    let mut status = kw.status();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        status
            .wait_for(|s| s.stream("bench").is_some_and(|s| s.is_fully_ready()))
            .await
            .map(|_| ())
    })
    .await;
    if !matches!(ready, Ok(Ok(()))) || source.subscribed() != channels.len() {
        return Err("keepwire did not become ready with every subscription".into());
    }
    let cpu = client_cpu();
    source.burst(channels, count, pace);
    let end = tally.wait(limit(count, pace)).await;
    let cpu = cpu_since(&cpu, "keepwire");
    let dropped = kw
        .status()
        .snapshot()
        .stream("bench")
        .map_or(0, |s| s.events_dropped);
    kw.shutdown().await;
    source.close();
    for t in tasks {
        let _ = t.await;
    }
    let end = end?;
    if dropped > 0 {
        return Err(format!("{dropped} events dropped"));
    }
    Ok(finish(&source, &tally, end, cpu))
}

fn channels(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("md.{i:03}")).collect()
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ratio(kw: f64, bare: f64) -> f64 {
    if bare > 0.0 {
        kw / bare
    } else {
        f64::NAN
    }
}

async fn throughput(count: u64) -> Result<(), String> {
    for (label, n, consumers) in [
        ("4 subscriptions, 4 consumers", 4, 4),
        ("100 subscriptions, 10 consumers", 100, 10),
    ] {
        let chans = channels(n);
        let b = bare(&chans, count, None, Bare::Inline).await?;
        let h = bare(&chans, count, None, Bare::HandOff(consumers)).await?;
        for (place, placement, floor) in [
            ("", Consumers::OwnThread, Some(&h)),
            (
                " (consumers on keepwire's thread)",
                Consumers::KeepwireThread,
                None,
            ),
        ] {
            let k = keepwire(&chans, consumers, count, None, placement).await?;
            let next_to_hand_off = floor.map_or(String::new(), |h| {
                format!(
                    " | bare handing off to {consumers} consumer tasks {:>7.0} msg/s, keepwire/that {:.2}x",
                    h.msgs_per_sec,
                    ratio(k.msgs_per_sec, h.msgs_per_sec)
                )
            });
            println!(
                "throughput, {label}, {count} msgs{place}: bare {:>7.0} msg/s  keepwire {:>7.0} msg/s  ratio {:.2}x | client CPU ns/msg: bare {:.0}  keepwire {:.0} (socket thread {:.0})  ratio {:.2}x{next_to_hand_off}",
                b.msgs_per_sec,
                k.msgs_per_sec,
                ratio(k.msgs_per_sec, b.msgs_per_sec),
                b.cpu_ns_per_msg,
                k.cpu_ns_per_msg,
                k.reader_ns_per_msg,
                ratio(k.cpu_ns_per_msg, b.cpu_ns_per_msg),
            );
        }
    }
    Ok(())
}

async fn latency(secs: u64) -> Result<(), String> {
    let pace = Duration::from_micros(100);
    let count = secs * 10_000;
    let chans = channels(4);
    let b = bare(&chans, count, Some(pace), Bare::Inline).await?;
    let h = bare(&chans, count, Some(pace), Bare::HandOff(4)).await?;
    let (b50, b99, bmax) = b.latency;
    let (h50, h99, hmax) = h.latency;
    for (label, placement, floor) in [
        ("consumers on their own thread", Consumers::OwnThread, true),
        (
            "consumers on keepwire's thread",
            Consumers::KeepwireThread,
            false,
        ),
    ] {
        let k = keepwire(&chans, 4, count, Some(pace), placement).await?;
        let (k50, k99, kmax) = k.latency;
        let next_to_hand_off = if floor {
            format!(
                " | bare handing off to 4 consumer tasks p50 {h50:.0} p99 {h99:.0} max {hmax:.0}, keepwire/that p50 {:.2}x p99 {:.2}x",
                ratio(k50, h50),
                ratio(k99, h99)
            )
        } else {
            String::new()
        };
        println!(
            "latency at 10 k msg/s, 4 subscriptions, {count} msgs, {label}, µs: bare p50 {b50:.0} p99 {b99:.0} max {bmax:.0}  keepwire p50 {k50:.0} p99 {k99:.0} max {kmax:.0}  ratio p50 {:.2}x p99 {:.2}x{next_to_hand_off}",
            ratio(k50, b50),
            ratio(k99, b99),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- recovery overhead

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

/// keepwire: `faults` socket drops, each timed from losing Ready to Ready with every
/// subscription active again (its `last_recovery`), minus the backoff delay it waited.
async fn recovery_keepwire(faults: usize, subs: usize) -> Result<Vec<f64>, String> {
    let source = Source::start();
    let mut cfg = ticket_stream("bench", source.base_url());
    let backoff = Duration::from_millis(10);
    cfg.backoff = keepwire::BackoffConfig {
        initial: backoff,
        max: backoff,
        randomization: 0.0,
        ..keepwire::BackoffConfig::default()
    };
    let kw = Handle::builder()
        .stream(cfg)
        .start()
        .map_err(|e| e.to_string())?;
    let mut receivers = Vec::new();
    for ch in channels(subs) {
        receivers.push(
            kw.subscribe("bench", Subscription::Channel { channel: ch })
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let mut status = kw.status();
    let recovered = |n: u64| {
        move |s: &keepwire::Status| {
            s.stream("bench")
                .is_some_and(|st| st.recoveries >= n && st.is_fully_ready())
        }
    };
    let mut out = Vec::with_capacity(faults);
    for n in 0..=faults as u64 {
        let took = tokio::time::timeout(Duration::from_secs(20), status.wait_for(recovered(n)))
            .await
            .map_err(|_| format!("not recovered from fault {n}"))?
            .map_err(|e| e.to_string())?
            .stream("bench")
            .and_then(|st| st.last_recovery);
        if n > 0 {
            let took = took.ok_or("no recovery time")?;
            out.push(took.saturating_sub(backoff).as_secs_f64() * 1e6);
        }
        if n < faults as u64 {
            source.drop_socket();
        }
    }
    kw.shutdown().await;
    source.close();
    drop(receivers);
    Ok(out)
}

/// The bare floor: a fresh awc socket, `subs` subscribes and their acks, `faults` times (no
/// ticket, no backoff).
fn recovery_bare(faults: usize, subs: usize) -> Result<Vec<f64>, String> {
    let source = Source::start();
    let url = format!("ws://127.0.0.1:{}/ws?ticket=bare", source.port);
    let out = actix_rt::System::new().block_on(async move {
        let mut out = Vec::with_capacity(faults);
        for _ in 0..faults {
            let t0 = Instant::now();
            let (_, mut ws) = awc::Client::new()
                .ws(url.as_str())
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            for ch in channels(subs) {
                let cmd = format!(r#"{{"op":"subscribe","channel":"{ch}"}}"#);
                let _ = ws.send(awc::ws::Message::Text(cmd.into())).await;
            }
            let mut acks = 0;
            while let Some(Ok(frame)) = ws.next().await {
                if let awc::ws::Frame::Text(bytes) = frame {
                    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    if v["type"] == "subscribed" {
                        acks += 1;
                        if acks == subs {
                            break;
                        }
                    }
                }
            }
            out.push(t0.elapsed().as_secs_f64() * 1e6);
            let _ = ws.close().await;
        }
        Ok::<_, String>(out)
    });
    source.close();
    out
}

async fn recovery(faults: usize) -> Result<(), String> {
    let subs = 10;
    let mut b = std::thread::spawn(move || recovery_bare(faults, subs))
        .join()
        .unwrap_or_else(|_| Err("the bare client panicked".into()))?;
    let mut k = recovery_keepwire(faults, subs).await?;
    let (b50, b99) = (percentile(&mut b, 0.5), percentile(&mut b, 0.99));
    let (k50, k99) = (percentile(&mut k, 0.5), percentile(&mut k, 0.99));
    println!(
        "recovery, {faults} socket drops, {subs} subscriptions, µs: bare reconnect+resubscribe p50 {b50:.0} p99 {b99:.0}  keepwire recovery minus backoff p50 {k50:.0} p99 {k99:.0}  ratio p50 {:.2}x p99 {:.2}x",
        ratio(k50, b50),
        ratio(k99, b99),
    );
    Ok(())
}

// ---------------------------------------------------------------- scale: many idle streams

/// Resident memory of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds of this whole process.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// One scale run's figures, printed by a child process as `key=value` words.
#[derive(Default)]
struct Scale {
    rss_per_stream_kib: f64,
    idle_cpu_pct: f64,
    ready_ms: f64,
    status_changes_per_s: f64,
}

impl Scale {
    fn print(&self) {
        println!(
            "SCALE rss_per_stream_kib={:.1} idle_cpu_pct={:.2} ready_ms={:.0} status_changes_per_s={:.0}",
            self.rss_per_stream_kib, self.idle_cpu_pct, self.ready_ms, self.status_changes_per_s
        );
    }

    fn parse(line: &str) -> Option<Scale> {
        let line = line.strip_prefix("SCALE ")?;
        let get = |key: &str| -> f64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        Some(Scale {
            rss_per_stream_kib: get("rss_per_stream_kib"),
            idle_cpu_pct: get("idle_cpu_pct"),
            ready_ms: get("ready_ms"),
            status_changes_per_s: get("status_changes_per_s"),
        })
    }
}

/// Child role: keepwire with `streams` ticket streams × `subs` channels against the source at
/// `port`, all Ready, then, `settle` later, idle (heartbeats only) for `idle`.
async fn scale_keepwire(
    port: u16,
    streams: usize,
    subs: usize,
    settle: Duration,
    idle: Duration,
) -> Result<Scale, String> {
    let url = format!("http://127.0.0.1:{port}");
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let mut b = Handle::builder();
    for i in 0..streams {
        b = b.stream(ticket_stream(&format!("s{i}"), url.clone()));
    }
    let kw = b.start().map_err(|e| e.to_string())?;
    let mut receivers = Vec::new();
    for i in 0..streams {
        for ch in channels(subs) {
            // The default queue capacity, as `keepwire run` and most users subscribe.
            let rx = kw
                .subscribe(&format!("s{i}"), Subscription::Channel { channel: ch })
                .await
                .map_err(|e| e.to_string())?;
            receivers.push(rx);
        }
    }
    let mut status = kw.status();
    let all_ready = |s: &keepwire::Status| {
        s.streams.len() == streams && s.streams.values().all(|st| st.is_fully_ready())
    };
    tokio::time::timeout(Duration::from_secs(300), status.wait_for(all_ready))
        .await
        .map_err(|_| "not every stream became ready".to_string())?
        .map_err(|e| e.to_string())?;
    let ready_ms = t0.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(settle).await;
    let rss1 = rss_kib();
    // A reader that follows the status, as an embedding service would.
    let changes = Arc::new(AtomicU64::new(0));
    let (c, mut watch) = (changes.clone(), kw.status());
    let watcher = tokio::spawn(async move {
        while watch.changed().await.is_ok() {
            let _ready = watch.snapshot_and_update().streams.len();
            c.fetch_add(1, Ordering::Relaxed);
        }
    });
    let cpu0 = process_cpu();
    tokio::time::sleep(idle).await;
    let cpu = process_cpu() - cpu0;
    watcher.abort();
    let result = Scale {
        rss_per_stream_kib: rss1.saturating_sub(rss0) as f64 / streams as f64,
        idle_cpu_pct: 100.0 * cpu / idle.as_secs_f64(),
        ready_ms,
        status_changes_per_s: changes.load(Ordering::Relaxed) as f64 / idle.as_secs_f64(),
    };
    drop(receivers);
    kw.shutdown().await;
    Ok(result)
}

/// Child role: the bare floor, `streams` awc sockets × `subs` channels in one actix System.
fn scale_bare(
    port: u16,
    streams: usize,
    subs: usize,
    settle: Duration,
    idle: Duration,
) -> Result<Scale, String> {
    let url = format!("ws://127.0.0.1:{port}/ws?ticket=bare");
    let rss0 = rss_kib();
    let t0 = Instant::now();
    actix_rt::System::new().block_on(async move {
        let acked = Arc::new(AtomicU64::new(0));
        let all = tokio::sync::Notify::new();
        let all = Arc::new(all);
        for _ in 0..streams {
            let (url, acked, all) = (url.clone(), acked.clone(), all.clone());
            actix_rt::spawn(async move {
                // A client per socket, as keepwire has one per stream (one client's pool
                // holds at most 100 connections).
                let Ok((_, mut ws)) = awc::Client::new().ws(url).connect().await else {
                    return;
                };
                for ch in channels(subs) {
                    let cmd = format!(r#"{{"op":"subscribe","channel":"{ch}"}}"#);
                    let _ = ws.send(awc::ws::Message::Text(cmd.into())).await;
                }
                while let Some(Ok(frame)) = ws.next().await {
                    if let awc::ws::Frame::Text(bytes) = frame {
                        let v: serde_json::Value =
                            serde_json::from_slice(&bytes).unwrap_or_default();
                        if v["type"] == "subscribed"
                            && acked.fetch_add(1, Ordering::Relaxed) + 1 == (streams * subs) as u64
                        {
                            all.notify_one();
                        }
                    }
                }
            });
        }
        tokio::time::timeout(Duration::from_secs(300), all.notified())
            .await
            .map_err(|_| {
                format!(
                    "only {} of {} subscriptions acknowledged",
                    acked.load(Ordering::Relaxed),
                    streams * subs
                )
            })?;
        let ready_ms = t0.elapsed().as_secs_f64() * 1000.0;
        tokio::time::sleep(settle).await;
        let rss1 = rss_kib();
        let cpu0 = process_cpu();
        tokio::time::sleep(idle).await;
        let cpu = process_cpu() - cpu0;
        Ok(Scale {
            rss_per_stream_kib: rss1.saturating_sub(rss0) as f64 / streams as f64,
            idle_cpu_pct: 100.0 * cpu / idle.as_secs_f64(),
            ready_ms,
            status_changes_per_s: 0.0,
        })
    })
}

/// Runs this bench binary again as `role` (the source, or one client) in a process of its own,
/// so that memory and CPU are measured per process.
fn child(role: &str, port: u16, piped_stdin: bool) -> std::process::Child {
    let exe = std::env::current_exe().expect("the bench binary");
    std::process::Command::new(exe)
        .args(std::env::args().skip(1))
        .env("KW_BENCH_ROLE", role)
        .env("KW_BENCH_PORT", port.to_string())
        .stdin(if piped_stdin {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start a child process")
}

fn child_result(c: std::process::Child) -> Result<Scale, String> {
    let out = c.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(Scale::parse)
        .ok_or_else(|| format!("child failed: {text}"))
}

fn scale(streams: usize, idle: Duration) -> Result<(), String> {
    let mut source = child("source", 0, true);
    let port = source
        .stdout
        .take()
        .ok_or_else(|| "source stdout".to_string())
        .and_then(|stdout| {
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            line.trim()
                .parse::<u16>()
                .map_err(|_| format!("source said {line:?}"))
        });
    let (b, k) = match port {
        Ok(port) => (
            child_result(child("scale-bare", port, false)),
            child_result(child("scale-keepwire", port, false)),
        ),
        Err(e) => (Err(e.clone()), Err(e)),
    };
    drop(source.stdin.take());
    let _ = source.kill();
    let _ = source.wait();
    let (b, k) = (b?, k?);
    println!(
        "scale, {streams} streams x 10 subscriptions, idle {:.0} s: RSS KiB/stream bare {:.1} keepwire {:.1} | idle CPU % of a core bare {:.2} keepwire {:.2} | all ready ms bare {:.0} keepwire {:.0} | keepwire status changes/s while idle {:.0}",
        idle.as_secs_f64(),
        b.rss_per_stream_kib,
        k.rss_per_stream_kib,
        b.idle_cpu_pct,
        k.idle_cpu_pct,
        b.ready_ms,
        k.ready_ms,
        k.status_changes_per_s,
    );
    Ok(())
}

/// A child process's role, from `KW_BENCH_ROLE`; `None` in the parent.
async fn run_role(bench: bool) -> Option<Result<(), String>> {
    let role = std::env::var("KW_BENCH_ROLE").ok()?;
    let port = env_u64("KW_BENCH_PORT", 0) as u16;
    let streams = if bench {
        env_u64("KW_BENCH_STREAMS", 1000)
    } else {
        20
    } as usize;
    // The wait after all Ready before memory and idle CPU are measured: in the bench past
    // every timer a socket's setup arms (the 15 s authentication timeout, the 30 s backoff
    // reset), so that what is measured is the steady state, heartbeats only.
    let settle = Duration::from_secs(if bench {
        env_u64("KW_BENCH_SETTLE_SECS", 35)
    } else {
        2
    });
    let idle = Duration::from_secs(if bench {
        env_u64("KW_BENCH_IDLE_SECS", 10)
    } else {
        1
    });
    Some(match role.as_str() {
        "source" => {
            let source = Source::start();
            println!("{}", source.port);
            let _ = std::io::stdout().flush();
            // Serves until the parent closes stdin.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            Ok(())
        }
        "scale-bare" => std::thread::spawn(move || scale_bare(port, streams, 10, settle, idle))
            .join()
            .unwrap_or_else(|_| Err("the bare client panicked".into()))
            .map(|s| s.print()),
        "scale-keepwire" => scale_keepwire(port, streams, 10, settle, idle)
            .await
            .map(|s| s.print()),
        other => Err(format!("unknown role {other}")),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    origin();
    let bench = std::env::args().any(|a| a == "--bench");
    if let Some(result) = run_role(bench).await {
        if let Err(e) = result {
            eprintln!("bench role failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    let only = std::env::var("KW_BENCH_ONLY").unwrap_or_default();
    let (count, secs) = if bench {
        (
            env_u64("KW_BENCH_MESSAGES", 1_000_000),
            env_u64("KW_BENCH_SECS", 10),
        )
    } else {
        (20_000, 1)
    };
    let mut result = Ok(());
    if only.is_empty() || only == "throughput" {
        result = result.and(throughput(count).await);
    }
    if result.is_ok() && (only.is_empty() || only == "latency") {
        result = latency(secs).await;
    }
    if result.is_ok() && (only.is_empty() || only == "recovery") {
        let faults = if bench {
            env_u64("KW_BENCH_FAULTS", 1000)
        } else {
            20
        } as usize;
        result = recovery(faults).await;
    }
    if result.is_ok() && (only.is_empty() || only == "scale") {
        let streams = if bench {
            env_u64("KW_BENCH_STREAMS", 1000)
        } else {
            20
        } as usize;
        let idle = Duration::from_secs(if bench {
            env_u64("KW_BENCH_IDLE_SECS", 10)
        } else {
            1
        });
        result = scale(streams, idle);
    }
    if let Err(e) = result {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}
