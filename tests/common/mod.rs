//! Shared test support: an emulator plus a keepwire handle wired to it, and status waits that
//! wake on the status `watch` (no sleeps as synchronisation).
#![allow(dead_code)]

pub mod http;
pub mod process;

use std::time::Duration;

use keepwire::emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use keepwire::{BackoffConfig, Handle, Status, StreamConfig, StreamStatus, Subscription};

/// The stream name every test uses.
pub const STREAM: &str = "ibkr";

/// Emulator settings for fast tests: heartbeats every 100 ms, data every 20 ms.
pub fn fast_emulator() -> EmulatorConfig {
    EmulatorConfig {
        heartbeat_interval: Duration::from_millis(100),
        market_data_interval: Duration::from_millis(20),
        ..EmulatorConfig::default()
    }
}

/// A backoff that retries within tens of milliseconds, for tests.
pub fn fast_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        multiplier: 2.0,
        randomization: 0.5,
        reset_after: Duration::from_secs(2),
    }
}

/// Stream settings for fast tests against `emu`.
pub fn fast_stream(emu: &EmulatorHandle) -> StreamConfig {
    let mut cfg = StreamConfig::ibkr(STREAM, emu.base_url());
    cfg.backoff = fast_backoff();
    cfg.heartbeat_timeout = Duration::from_millis(800);
    cfg.auth_timeout = Duration::from_secs(3);
    cfg.login_poll_interval = Duration::from_millis(300);
    cfg.confirm_timeout = Duration::from_secs(2);
    cfg
}

/// A started emulator and a keepwire handle with one IBKR stream pointed at it.
pub struct Rig {
    /// The fault-injecting gateway.
    pub emu: EmulatorHandle,
    /// keepwire.
    pub kw: Handle,
}

impl Rig {
    /// Default fast settings.
    pub fn start() -> Self {
        Self::with(fast_emulator(), |_| {})
    }

    /// Custom emulator settings and a hook to adjust the stream.
    pub fn with(emu_cfg: EmulatorConfig, tweak: impl FnOnce(&mut StreamConfig)) -> Self {
        let emu = Emulator::start(emu_cfg).expect("emulator starts");
        let mut cfg = fast_stream(&emu);
        tweak(&mut cfg);
        let kw = Handle::builder()
            .stream(cfg)
            .start()
            .expect("keepwire starts");
        Self { emu, kw }
    }

    /// Subscribes to market data for each conid and returns the receivers.
    pub async fn subscribe_all(
        &self,
        conids: &[u64],
    ) -> Vec<keepwire::channel::Receiver<keepwire::Event>> {
        let mut out = Vec::new();
        for &conid in conids {
            out.push(
                self.kw
                    .subscribe(STREAM, Subscription::market_data(conid, ["31", "84", "86"]))
                    .await
                    .unwrap(),
            );
        }
        out
    }

    /// Waits until the stream status satisfies `pred` (or panics after `secs`, printing the status).
    pub async fn wait(
        &self,
        secs: u64,
        what: &str,
        pred: impl Fn(&StreamStatus) -> bool,
    ) -> StreamStatus {
        wait_status(&self.kw, secs, what, pred).await
    }

    /// Waits until the stream is Ready with every subscription active.
    pub async fn fully_ready(&self) -> StreamStatus {
        self.wait(10, "fully ready", |s| s.is_fully_ready()).await
    }

    /// Stops both sides.
    pub async fn stop(self) {
        self.kw.shutdown().await;
        self.emu.stop();
    }
}

/// Waits on the status watch until `pred` holds for the test stream.
pub async fn wait_status(
    kw: &Handle,
    secs: u64,
    what: &str,
    pred: impl Fn(&StreamStatus) -> bool,
) -> StreamStatus {
    wait_stream(kw, STREAM, secs, what, pred).await
}

/// Waits on the status watch until `pred` holds for the named stream.
pub async fn wait_stream(
    kw: &Handle,
    stream: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&StreamStatus) -> bool,
) -> StreamStatus {
    let mut rx = kw.status();
    let res = tokio::time::timeout(Duration::from_secs(secs), async {
        rx.wait_for(|s: &Status| s.stream(stream).is_some_and(&pred))
            .await
            .map(|s| s.stream(stream).cloned())
    })
    .await;
    match res {
        Ok(Ok(Some(s))) => s,
        _ => panic!(
            "timed out after {secs}s waiting for {what}; status: {:#?}",
            kw.status().snapshot().stream(stream)
        ),
    }
}

/// The next data event on `rx` (state events are skipped); panics naming `what` if none arrives
/// within `secs` or the subscription ends.
pub async fn next_data(
    rx: &mut keepwire::channel::Receiver<keepwire::Event>,
    secs: u64,
    what: &str,
) -> serde_json::Value {
    let got = tokio::time::timeout(Duration::from_secs(secs), async {
        while let Some(e) = rx.recv().await {
            if let keepwire::Event::Data { data, .. } = e {
                return Some(data);
            }
        }
        None
    })
    .await;
    match got {
        Ok(Some(data)) => data,
        Ok(None) => panic!("the subscription ended before {what}"),
        Err(_) => panic!("no {what} within {secs}s"),
    }
}

/// Restart count of one actor.
pub fn restarts(s: &StreamStatus, actor: keepwire::ActorKind) -> u64 {
    s.restarts.get(&actor).copied().unwrap_or(0)
}

/// Waits until `pred` holds for the emulator's counters (polled: the emulator has no watch).
pub async fn wait_counters(
    emu: &EmulatorHandle,
    secs: u64,
    what: &str,
    pred: impl Fn(&keepwire::emulator::Counters) -> bool,
) -> keepwire::emulator::Counters {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let c = emu.counters();
        if pred(&c) {
            return c;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}; counters: {c:#?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
