//! The fault proxy of `keepwire chaos --proxy-to` (Toxiproxy's model, by `noxious`) between a
//! keepwire IBKR stream and the emulator: what each toxic does to the stream, and how keepwire
//! comes back once it is removed.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use common::{fast_emulator, fast_stream, next_data, wait_status, STREAM};
use keepwire::emulator::{Emulator, EmulatorHandle};
use keepwire::proxy::{Direction, FaultProxy, ProxyError, ProxyStats, Toxic, ToxicKind};
use keepwire::{Handle, StreamStatus, Subscription};
use tokio::time::Instant;

const CONID: u64 = 265598;

/// The emulator, a fault proxy in front of it, and a keepwire IBKR stream dialing the proxy.
struct ProxyRig {
    emu: EmulatorHandle,
    proxy: FaultProxy,
    kw: Handle,
}

impl ProxyRig {
    fn start() -> Self {
        let emu = Emulator::start(fast_emulator()).expect("emulator starts");
        let proxy =
            FaultProxy::start(loopback(), &emu.gateway_addr().to_string()).expect("proxy starts");
        let mut cfg = fast_stream(&emu);
        cfg.url = format!("http://{}", proxy.local_addr());
        let kw = Handle::builder()
            .stream(cfg)
            .start()
            .expect("keepwire starts");
        Self { emu, proxy, kw }
    }

    async fn wait(
        &self,
        secs: u64,
        what: &str,
        pred: impl Fn(&StreamStatus) -> bool,
    ) -> StreamStatus {
        wait_status(&self.kw, secs, what, pred).await
    }

    /// Waits until the proxy's counters satisfy `pred` (polled: they are atomics, not a watch).
    async fn wait_proxy(
        &self,
        secs: u64,
        what: &str,
        pred: impl Fn(&ProxyStats) -> bool,
    ) -> ProxyStats {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.proxy.stats();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs}s waiting for {what}; proxy: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.kw.shutdown().await;
        self.proxy.stop();
        self.emu.stop();
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Time from a new subscription to its first data event.
async fn first_data_after_subscribe(kw: &Handle, conid: u64) -> Duration {
    let t0 = Instant::now();
    let mut rx = kw
        .subscribe(STREAM, Subscription::market_data(conid, ["31"]))
        .await
        .expect("subscribed");
    next_data(&mut rx, 10, "data of a new subscription").await;
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_toxic_delays_the_data_and_the_stream_stays_ready() {
    let rig = ProxyRig::start();
    let mut rx = rig
        .kw
        .subscribe(STREAM, Subscription::market_data(CONID, ["31"]))
        .await
        .unwrap();
    let before = rig.wait(10, "fully ready", |s| s.is_fully_ready()).await;
    let baseline = first_data_after_subscribe(&rig.kw, 8314).await;

    rig.proxy
        .add(&Toxic::new(
            "slow",
            ToxicKind::Latency {
                latency_ms: 300,
                jitter_ms: 0,
            },
            Direction::Downstream,
        ))
        .await
        .unwrap();
    let delayed = first_data_after_subscribe(&rig.kw, 756733).await;
    assert!(
        delayed >= Duration::from_millis(300),
        "the first data of a subscription made under 300 ms of latency took {delayed:?} (without: {baseline:?})"
    );
    // data keeps flowing on the open socket, through the toxic, with no failure
    let bytes = rig.proxy.stats().bytes_downstream;
    next_data(&mut rx, 5, "data under latency").await;
    rig.wait_proxy(5, "more data through the proxy", |s| {
        s.bytes_downstream > bytes + 1000
    })
    .await;
    let s = rig.kw.status().snapshot().stream(STREAM).cloned().unwrap();
    assert!(s.is_fully_ready(), "still ready: {s:#?}");
    assert_eq!(s.epoch, before.epoch, "the same socket: {s:#?}");
    assert!(
        s.last_failure.is_none(),
        "300 ms of latency is no failure: {s:#?}"
    );
    rig.proxy.remove("slow").await.unwrap();
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_peer_resets_every_open_connection_with_a_tcp_rst() {
    let emu = Emulator::start(fast_emulator()).expect("emulator starts");
    let proxy = FaultProxy::start(loopback(), &emu.gateway_addr().to_string()).unwrap();
    let mut conn = std::net::TcpStream::connect(proxy.local_addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    proxy
        .add(&Toxic::new(
            "reset",
            ToxicKind::ResetPeer { timeout_ms: 0 },
            Direction::Downstream,
        ))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let err = conn
        .read(&mut buf)
        .expect_err("the connection is reset, not closed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert_eq!(proxy.stats().resets, 1);
    assert_eq!(proxy.stats().connections, 1);
    proxy.stop();
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reset_peer_the_stream_reconnects_once_and_is_ready_again() {
    let rig = ProxyRig::start();
    let _rx = rig
        .kw
        .subscribe(STREAM, Subscription::market_data(CONID, ["31"]))
        .await
        .unwrap();
    let before = rig.wait(10, "fully ready", |s| s.is_fully_ready()).await;
    let conns = rig.proxy.stats().connections;

    rig.proxy
        .add(&Toxic::new(
            "reset",
            ToxicKind::ResetPeer { timeout_ms: 0 },
            Direction::Downstream,
        ))
        .await
        .unwrap();
    rig.wait_proxy(5, "a reset", |s| s.resets >= 1).await;
    rig.proxy.remove("reset").await.unwrap();

    let after = rig
        .wait(10, "recovery after the reset", |s| {
            s.recoveries == before.recoveries + 1 && s.is_fully_ready()
        })
        .await;
    assert!(after.epoch > before.epoch, "a new socket was built");
    assert!(
        rig.proxy.stats().connections > conns,
        "keepwire dialed the proxy again"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackhole_is_detected_as_heartbeat_silence_and_the_stream_recovers_once_it_is_removed() {
    let rig = ProxyRig::start();
    let _rx = rig
        .kw
        .subscribe(STREAM, Subscription::market_data(CONID, ["31"]))
        .await
        .unwrap();
    let before = rig.wait(10, "fully ready", |s| s.is_fully_ready()).await;

    rig.proxy
        .add(&Toxic::new(
            "blackhole",
            ToxicKind::Timeout { timeout_ms: 0 },
            Direction::Downstream,
        ))
        .await
        .unwrap();
    let silent = rig
        .wait(5, "heartbeat silence", |s| {
            s.last_failure
                .as_ref()
                .is_some_and(|f| f.reason == "heartbeat_silence")
        })
        .await;
    assert_ne!(silent.state, keepwire::StreamState::Ready);

    rig.proxy.remove("blackhole").await.unwrap();
    let after = rig
        .wait(15, "recovery after the blackhole", |s| {
            s.recoveries > before.recoveries && s.is_fully_ready()
        })
        .await;
    assert!(after.epoch > before.epoch, "a new socket was built");
    rig.stop().await;
}

#[test]
fn the_proxy_refuses_a_non_loopback_listen_address() {
    let addr: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let err = FaultProxy::start(addr, "127.0.0.1:1").unwrap_err();
    assert!(
        matches!(err, ProxyError::NotLoopback(a) if a == addr),
        "{err}"
    );
    assert!(err.to_string().contains("loopback only"), "{err}");
}

/// A server on loopback that sends one byte every 10 ms to each client, unasked.
fn ticker_server() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                use std::io::Write;
                while c.write_all(b"t").is_ok() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
    });
    addr
}

/// noxious 1.0.4 swapped the directions of open connections on every toxic change (patched in
/// vendor/noxious): a downstream blackhole must silence what the gateway sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_blackhole_silences_the_gateway_on_an_open_connection() {
    let proxy = FaultProxy::start(loopback(), &ticker_server().to_string()).unwrap();
    let mut conn = std::net::TcpStream::connect(proxy.local_addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    assert!(conn.read(&mut buf).unwrap() > 0, "ticks flow");
    proxy
        .add(&Toxic::new(
            "bh",
            ToxicKind::Timeout { timeout_ms: 0 },
            Direction::Downstream,
        ))
        .await
        .unwrap();
    // what was in flight before the toxic may still arrive; then nothing
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut silent = false;
    for _ in 0..20 {
        match conn.read(&mut buf) {
            Ok(n) => assert!(n > 0, "the blackhole keeps the connection open"),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
                silent = true;
                break;
            }
        }
    }
    assert!(silent, "ticks kept flowing through a downstream blackhole");
    proxy.remove("bh").await.unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(
        conn.read(&mut buf).unwrap() > 0,
        "ticks flow again once it is removed"
    );
    proxy.stop();
}

const BIN: &str = env!("CARGO_BIN_EXE_keepwire");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepwire_chaos_proxy_to_prints_its_address_applies_seeded_toxics_and_reports_in_json() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let emu = Emulator::start(fast_emulator()).expect("emulator starts");
    let mut child = Command::new(BIN)
        .args(["chaos", "--proxy-to"])
        .arg(emu.gateway_addr().to_string())
        .args(["--faults", "2", "--seed", "1", "--duration", "8", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keepwire runs");
    let stdout = child.stdout.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("fault proxy on ") {
                let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                let _ = addr_tx.send(addr);
            }
            lines.push(line);
        }
        lines
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the proxy prints its address");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let mut cfg = fast_stream(&emu);
    cfg.url = format!("http://{addr}");
    let kw = Handle::builder().stream(cfg).start().unwrap();
    let _rx = kw
        .subscribe(STREAM, Subscription::market_data(CONID, ["31"]))
        .await
        .unwrap();
    wait_status(&kw, 10, "ready through the proxy", |s| s.is_fully_ready()).await;

    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let lines = reader.join().unwrap();
    let out = lines.join("\n");
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{out}");
    let report: serde_json::Value =
        serde_json::from_str(lines.last().expect("a report")).expect("the last line is JSON");
    assert_eq!(report["mode"], "proxy");
    assert_eq!(report["seed"], 1);
    assert_eq!(report["toxics_applied"], 2, "{out}");
    let by_kind: u64 = report["toxics_by_kind"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(by_kind, 2, "{out}");
    assert!(report["connections"].as_u64().unwrap() >= 1, "{out}");
    assert!(report["bytes_downstream"].as_u64().unwrap() > 0, "{out}");
    assert!(report["bytes_upstream"].as_u64().unwrap() > 0, "{out}");
    let added = lines.iter().filter(|l| l.contains("] + ")).count();
    let removed = lines.iter().filter(|l| l.contains("] - ")).count();
    assert_eq!(added, 2, "each toxic is printed as it starts: {out}");
    assert!(removed <= 2, "{out}");
    kw.shutdown().await;
    emu.stop();
}

#[test]
fn keepwire_chaos_proxy_to_refuses_a_non_loopback_listen_address() {
    let out = std::process::Command::new(BIN)
        .args([
            "chaos",
            "--proxy-to",
            "127.0.0.1:1",
            "--listen",
            "0.0.0.0:7497",
            // bounded even if the address were taken: the run ends by itself
            "--duration",
            "1",
        ])
        .output()
        .expect("keepwire runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback only"), "{err}");
}
