//! The SignalR dialect (seed 003) against the emulator's market hub: one test per scenario of
//! the seed, plus the failure table's SignalR rows.

mod common;

use std::time::Duration;

use common::wait_stream;
use keepwire::config::SecretSource;
use keepwire::dialect::signalr::SignalRConfig;
use keepwire::emulator::signalr::{HubConfig, HubFault};
use keepwire::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};
use keepwire::{
    ActorKind, BackoffConfig, Event, Handle, StreamConfig, StreamState, StreamStatus, Subscription,
};

const STREAM: &str = "hub";
const CONTRACTS: [&str; 2] = ["CON.F.US.EP.M25", "CON.F.US.ENQ.M25"];

fn emulator(tweak: impl FnOnce(&mut HubConfig)) -> EmulatorHandle {
    let mut hub = HubConfig {
        quote_interval: Duration::from_millis(20),
        ..HubConfig::default()
    };
    tweak(&mut hub);
    Emulator::start(EmulatorConfig {
        hub,
        ..EmulatorConfig::default()
    })
    .expect("emulator starts")
}

fn stream(emu: &EmulatorHandle, tweak: impl FnOnce(&mut StreamConfig)) -> StreamConfig {
    let hub = SignalRConfig {
        user: "kwuser1".into(),
        secret: Some(SecretSource::Value("kw-demo-key".into())),
        ping_interval: Duration::from_millis(200),
        ..SignalRConfig::default()
    };
    let mut cfg = StreamConfig::signalr(STREAM, emu.hub_url(), hub);
    cfg.heartbeat_timeout = Duration::from_secs(2);
    cfg.confirm_timeout = Duration::from_secs(2);
    cfg.backoff = BackoffConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        reset_after: Duration::from_secs(2),
        ..BackoffConfig::default()
    };
    tweak(&mut cfg);
    cfg
}

async fn wait(
    kw: &Handle,
    secs: u64,
    what: &str,
    pred: impl Fn(&StreamStatus) -> bool,
) -> StreamStatus {
    wait_stream(kw, STREAM, secs, what, pred).await
}

struct Rig {
    emu: EmulatorHandle,
    kw: Handle,
    quotes: Vec<keepwire::channel::Receiver<Event>>,
}

impl Rig {
    async fn start(emu: EmulatorHandle, cfg: StreamConfig) -> Self {
        let kw = Handle::builder()
            .stream(cfg)
            .start()
            .expect("keepwire starts");
        let mut quotes = Vec::new();
        for c in CONTRACTS {
            quotes.push(
                kw.subscribe(STREAM, Subscription::hub_quotes(c))
                    .await
                    .unwrap(),
            );
        }
        Self { emu, kw, quotes }
    }

    async fn fully_ready(&self) -> StreamStatus {
        wait(&self.kw, 10, "fully ready", |s| s.is_fully_ready()).await
    }

    /// Waits for a quote on every contract.
    async fn quotes_flow(&mut self) {
        for (i, rx) in self.quotes.iter_mut().enumerate() {
            let data = common::next_data(rx, 5, "a quote").await;
            assert_eq!(data[0], CONTRACTS[i], "GatewayQuote(contractId, quote)");
        }
    }

    async fn stop(self) {
        self.kw.shutdown().await;
        self.emu.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_negotiates_handshakes_subscribes_and_receives_quotes() {
    let emu = emulator(|_| {});
    let cfg = stream(&emu, |_| {});
    let mut rig = Rig::start(emu, cfg).await;
    rig.fully_ready().await;
    rig.quotes_flow().await;
    let c = rig.emu.counters().hub;
    assert_eq!(c.logins, 1);
    assert_eq!(c.negotiates, 1);
    assert_eq!(c.handshakes, 1);
    assert_eq!(c.subscribe_invocations, 2);
    rig.stop().await;
}

/// Seed 003: the token factory is asked at every attempt — never a captured token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_factory_is_asked_at_every_attempt() {
    let emu = emulator(|_| {});
    let cfg = stream(&emu, |_| {});
    let rig = Rig::start(emu, cfg).await;
    rig.fully_ready().await;
    for i in 1..=4u64 {
        rig.emu.inject(Fault::Hub(HubFault::Drop));
        wait(&rig.kw, 10, "recovered", |s| {
            s.recoveries == i && s.is_fully_ready()
        })
        .await;
    }
    let s = wait(&rig.kw, 5, "status", |_| true).await;
    let c = rig.emu.counters().hub;
    assert_eq!(c.negotiates, 5);
    assert_eq!(
        s.credential_requests, 5,
        "one credential request per attempt"
    );
    assert_eq!(
        c.logins, 1,
        "a valid token is not fetched again, only asked for"
    );
    rig.stop().await;
}

/// Seed 003: an expired token is refreshed *before* connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_about_to_expire_is_refreshed_before_connecting_never_presented_expired() {
    let emu = emulator(|h| {
        h.token_ttl = Duration::from_secs(2);
        h.close_on_token_expiry = false;
    });
    let cfg = stream(&emu, |c| {
        c.signalr_config_mut().unwrap().token_lifetime = Some(Duration::from_secs(2))
    });
    let rig = Rig::start(emu, cfg).await;
    let first = rig.fully_ready().await;
    // proactive refreshes keep the token fresh while connected
    wait(&rig.kw, 10, "two refreshes", |s| {
        s.credential_generation >= first.credential_generation + 2
    })
    .await;
    rig.emu.inject(Fault::Hub(HubFault::Drop));
    wait(&rig.kw, 10, "recovered", |s| {
        s.recoveries == 1 && s.is_fully_ready()
    })
    .await;
    let c = rig.emu.counters().hub;
    assert_eq!(
        c.negotiate_rejected, 0,
        "never negotiated with an expired token"
    );
    assert_eq!(c.upgrades_rejected, 0);
    assert!(c.validates >= 2, "renewed through validate: {c:?}");
    rig.stop().await;
}

/// Seed 003: a 401 during the handshake refreshes the token and reconnects; subscriptions return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_on_negotiate_refreshes_once_reconnects_and_restores_subscriptions() {
    let emu = emulator(|_| {});
    let cfg = stream(&emu, |_| {});
    let mut rig = Rig::start(emu, cfg).await;
    let before = rig.fully_ready().await;
    rig.emu.inject(Fault::Hub(HubFault::RejectNegotiate {
        status: 401,
        count: 1,
    }));
    rig.emu.inject(Fault::Hub(HubFault::Drop));
    let s = wait(&rig.kw, 10, "recovered", |s| {
        s.recoveries == 1 && s.is_fully_ready()
    })
    .await;
    assert_eq!(
        s.credential_generation,
        before.credential_generation + 1,
        "one refresh"
    );
    assert_eq!(
        rig.emu.counters().hub.subscribe_invocations,
        4,
        "both subscriptions replayed"
    );
    assert_eq!(common::restarts(&s, ActorKind::TokenManager), 0);
    rig.quotes_flow().await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_on_the_upgrade_refreshes_once_and_reconnects() {
    let emu = emulator(|_| {});
    let cfg = stream(&emu, |_| {});
    let rig = Rig::start(emu, cfg).await;
    let before = rig.fully_ready().await;
    rig.emu.inject(Fault::Hub(HubFault::RejectUpgrade {
        status: 401,
        count: 1,
    }));
    rig.emu.inject(Fault::Hub(HubFault::Drop));
    let s = wait(&rig.kw, 10, "recovered", |s| {
        s.recoveries == 1 && s.is_fully_ready()
    })
    .await;
    assert_eq!(s.credential_generation, before.credential_generation + 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_mid_stream_is_refreshed_and_the_stream_restored() {
    let emu = emulator(|_| {});
    let cfg = stream(&emu, |_| {});
    let mut rig = Rig::start(emu, cfg).await;
    rig.fully_ready().await;
    rig.emu.inject(Fault::Hub(HubFault::ExpireTokens));
    let s = wait(&rig.kw, 10, "recovered", |s| {
        s.recoveries == 1 && s.is_fully_ready()
    })
    .await;
    assert_eq!(s.hard_failures, 0);
    assert_eq!(
        rig.emu.counters().hub.logins,
        2,
        "an expired token cannot be validated: log in again"
    );
    rig.quotes_flow().await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_401_with_a_fresh_token_is_hard() {
    let emu = emulator(|_| {});
    let cfg = stream(&emu, |_| {});
    let rig = Rig::start(emu, cfg).await;
    rig.fully_ready().await;
    rig.emu.inject(Fault::Hub(HubFault::RejectNegotiate {
        status: 401,
        count: 100,
    }));
    rig.emu.inject(Fault::Hub(HubFault::Drop));
    let s = wait(&rig.kw, 10, "failed", |s| {
        matches!(s.state, StreamState::Failed { .. })
    })
    .await;
    let StreamState::Failed { reason } = &s.state else {
        unreachable!()
    };
    assert!(reason.contains("right after a refresh"), "{reason}");
    assert_eq!(rig.emu.counters().hub.negotiate_rejected, 2);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_is_hard() {
    let emu = emulator(|_| {});
    let cfg = stream(&emu, |_| {});
    let rig = Rig::start(emu, cfg).await;
    rig.fully_ready().await;
    rig.emu.inject(Fault::Hub(HubFault::RejectNegotiate {
        status: 403,
        count: 100,
    }));
    rig.emu.inject(Fault::Hub(HubFault::Drop));
    let s = wait(&rig.kw, 10, "failed", |s| {
        matches!(s.state, StreamState::Failed { .. })
    })
    .await;
    assert_eq!(s.last_failure.unwrap().reason, "refused");
    assert_eq!(
        rig.emu.counters().hub.negotiate_rejected,
        1,
        "no retry after a 403"
    );
    rig.stop().await;
}

/// Seed 003 / the reference: a Close without allowReconnect means do not reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_without_allow_reconnect_is_hard_and_with_it_is_soft() {
    let emu = emulator(|_| {});
    let cfg = stream(&emu, |_| {});
    let rig = Rig::start(emu, cfg).await;
    rig.fully_ready().await;
    rig.emu.inject(Fault::Hub(HubFault::Close {
        allow_reconnect: true,
        error: Some("restarting".into()),
    }));
    wait(&rig.kw, 10, "recovered", |s| {
        s.recoveries == 1 && s.is_fully_ready()
    })
    .await;

    rig.emu.inject(Fault::Hub(HubFault::Close {
        allow_reconnect: false,
        error: Some("account disabled".into()),
    }));
    let s = wait(&rig.kw, 10, "failed", |s| {
        matches!(s.state, StreamState::Failed { .. })
    })
    .await;
    let StreamState::Failed { reason } = &s.state else {
        unreachable!()
    };
    assert!(
        reason.contains("account disabled") && reason.contains("not allowed"),
        "{reason}"
    );
    let negotiates = rig.emu.counters().hub.negotiates;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        rig.emu.counters().hub.negotiates,
        negotiates,
        "no reconnect"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_split_across_frames_are_reassembled_without_a_reconnect() {
    let emu = emulator(|_| {});
    let cfg = stream(&emu, |_| {});
    let mut rig = Rig::start(emu, cfg).await;
    let before = rig.fully_ready().await;
    rig.emu.inject(Fault::Hub(HubFault::SplitFrames));
    rig.quotes_flow().await;
    let after = wait(&rig.kw, 10, "more messages", |s| {
        s.messages_received > before.messages_received + 20
    })
    .await;
    assert_eq!(after.epoch, before.epoch, "same connection");
    assert_eq!(after.subscriptions.active, 2);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_hub_is_noticed_by_the_timeout_and_reconnected() {
    let emu = emulator(|h| h.ping_interval = Duration::from_millis(200));
    let cfg = stream(&emu, |c| c.heartbeat_timeout = Duration::from_secs(1));
    let rig = Rig::start(emu, cfg).await;
    rig.fully_ready().await;
    rig.emu.inject(Fault::Hub(HubFault::Silent));
    let s = wait(&rig.kw, 10, "recovered", |s| {
        s.recoveries == 1 && s.is_fully_ready()
    })
    .await;
    assert_eq!(s.last_failure.unwrap().reason, "heartbeat_silence");
    rig.stop().await;
}

/// The URL rule for a negotiate redirect (as Azure SignalR Service sends): negotiate again at the
/// redirect's URL with the reply's own access token, which also opens the socket there; the
/// login token is never presented to the redirect target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negotiate_redirect_is_followed_with_the_replys_own_access_token() {
    let emu = emulator(|_| {});
    emu.inject(Fault::Hub(HubFault::RedirectNegotiate {
        url: format!("{}/hubs/redirected", emu.base_url()),
        count: 1,
        with_access_token: true,
    }));
    let cfg = stream(&emu, |_| {});
    let mut rig = Rig::start(emu, cfg).await;
    rig.fully_ready().await;
    rig.quotes_flow().await;
    let c = rig.emu.counters().hub;
    assert_eq!(c.negotiate_redirects, 1);
    assert_eq!(
        c.redirected_negotiates, 1,
        "negotiated again at the redirect's URL"
    );
    assert_eq!(
        c.redirected_upgrades, 1,
        "the socket opened at the redirect's URL"
    );
    assert_eq!(
        c.foreign_tokens_at_redirect, 0,
        "only the redirect's access token went to the redirect target"
    );
    rig.stop().await;
}

/// A redirect to another origin without an access token: the original bearer stays home (the
/// target refuses the token-less negotiate; keepwire refreshes and negotiates afresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_never_receives_the_original_bearer() {
    let emu = emulator(|_| {});
    let elsewhere = emulator(|_| {});
    emu.inject(Fault::Hub(HubFault::RedirectNegotiate {
        url: format!("{}/hubs/redirected", elsewhere.base_url()),
        count: 1,
        with_access_token: false,
    }));
    let cfg = stream(&emu, |_| {});
    let rig = Rig::start(emu, cfg).await;
    rig.fully_ready().await;
    let there = elsewhere.counters().hub;
    assert_eq!(there.redirected_negotiates, 1, "the redirect was followed");
    assert_eq!(
        there.foreign_tokens_at_redirect, 0,
        "the login token never went to the other origin"
    );
    rig.stop().await;
    elsewhere.stop();
}

/// A negotiate redirect to a cleartext URL on a host that is not this machine breaks the URL
/// rule: the stream stops, naming the redirect and the fix, before anything is sent there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negotiate_redirect_to_a_cleartext_remote_url_is_refused() {
    let emu = emulator(|_| {});
    emu.inject(Fault::Hub(HubFault::RedirectNegotiate {
        // TEST-NET-1 (RFC 5737): never routed, never contacted.
        url: "http://192.0.2.1/hubs/market".into(),
        count: 1,
        with_access_token: true,
    }));
    let cfg = stream(&emu, |_| {});
    let rig = Rig::start(emu, cfg).await;
    let s = wait(&rig.kw, 10, "failed", |s| {
        matches!(s.state, StreamState::Failed { .. })
    })
    .await;
    let StreamState::Failed { reason } = &s.state else {
        unreachable!()
    };
    assert!(
        reason.contains("negotiate redirect url")
            && reason.contains("http://192.0.2.1/hubs/market")
            && reason.contains("use https://"),
        "{reason}"
    );
    assert_eq!(s.hard_failures, 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_char_close_error_is_shown_capped_at_200_chars() {
    let emu = emulator(|_| {});
    let cfg = stream(&emu, |_| {});
    let rig = Rig::start(emu, cfg).await;
    rig.fully_ready().await;
    let error = format!("BEGIN{}END", "x".repeat(10_000));
    rig.emu.inject(Fault::Hub(HubFault::Close {
        allow_reconnect: false,
        error: Some(error),
    }));
    let s = wait(&rig.kw, 10, "failed", |s| {
        matches!(s.state, StreamState::Failed { .. })
    })
    .await;
    let status = serde_json::to_string(&s).unwrap();
    rig.stop().await;
    let StreamState::Failed { reason } = &s.state else {
        unreachable!()
    };
    assert!(
        reason.contains("BEGINxxx"),
        "the server's text is shown: {reason}"
    );
    assert!(
        !status.contains("END"),
        "the server's text is cut: {status}"
    );
    assert!(
        !status.contains(&"x".repeat(201)),
        "more than 200 chars of server text in the status"
    );
    let message = &s.last_failure.as_ref().unwrap().message;
    assert!(message.chars().count() < 500, "{}", message.len());
}
