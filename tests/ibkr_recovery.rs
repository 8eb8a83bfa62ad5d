//! How keepwire recovers from every IBKR failure of the failure table, proven against the
//! fault-injecting emulator. Each test names the behaviour it proves; seeds 000–002 are the
//! scenarios marked so.

mod common;

use std::time::Duration;

use common::{restarts, wait_counters, Rig, STREAM};
use keepwire::emulator::{EmulatorConfig, Fault, StsStyle};
use keepwire::{ActorKind, CompetingPolicy, Event, StreamState, Subscription, SubscriptionState};

const CONIDS: [u64; 3] = [265598, 8314, 756733];

/// Seed 000: an `sts` saying `authenticated:false` is a failure, never a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_false_reestablishes_refreshes_rebuilds_and_replays_every_subscription() {
    let rig = Rig::start();
    let _rx = rig.subscribe_all(&CONIDS).await;
    let before = rig.fully_ready().await;
    let c0 = rig.emu.counters();

    rig.emu.inject(Fault::SessionLost);

    let after = rig
        .wait(10, "recovery after sts false", |s| {
            s.recoveries == 1 && s.is_fully_ready()
        })
        .await;
    let c1 = rig.emu.counters();
    assert!(
        c1.ssodh_init > c0.ssodh_init,
        "the session was re-established with ssodh/init"
    );
    assert!(
        after.credential_generation > before.credential_generation,
        "credentials were refreshed"
    );
    assert!(after.epoch > before.epoch, "a new socket was built");
    assert!(
        c1.smd_subscribe >= c0.smd_subscribe + CONIDS.len() as u64,
        "every subscription was replayed"
    );
    assert_eq!(after.subscriptions.active, CONIDS.len());
    assert_eq!(
        after.last_failure.as_ref().map(|f| f.reason),
        Some("session_lost")
    );
    assert_eq!(
        restarts(&after, ActorKind::Subscriptions),
        0,
        "Subscriptions replays, it does not restart"
    );
    assert_eq!(restarts(&after, ActorKind::TokenManager), 0);
    rig.stop().await;
}

/// Issue 9 (c), now in the emulator: a half-dead gateway (REST authenticated, every socket
/// `sts authenticated:false`) is repaired with `reauthenticate` or `ssodh/init`, never ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_dead_gateway_is_repaired_with_reauthenticate_or_init_and_the_stream_recovers() {
    let rig = Rig::start();
    let _rx = rig.subscribe_all(&CONIDS).await;
    rig.fully_ready().await;
    let c0 = rig.emu.counters();

    rig.emu.inject(Fault::HalfDead);

    let after = rig
        .wait(20, "recovery from a half-dead gateway", |s| {
            s.recoveries >= 1 && s.is_fully_ready()
        })
        .await;
    let c1 = rig.emu.counters();
    assert!(
        c1.reauthenticate + c1.ssodh_init > c0.reauthenticate + c0.ssodh_init,
        "repaired with reauthenticate or ssodh/init: {c1:?}"
    );
    assert_eq!(after.subscriptions.active, CONIDS.len());
    assert_eq!(after.hard_failures, 0, "never ended");
    rig.stop().await;
}

/// Seed 000: no Ready while the gateway says the socket is not authenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_false_on_a_new_socket_never_becomes_ready() {
    let rig = Rig::with(
        EmulatorConfig {
            login_approved: false,
            ..common::fast_emulator()
        },
        |_| {},
    );
    let s = rig
        .wait(10, "awaiting login", |s| {
            matches!(s.state, StreamState::AwaitingLogin { .. })
        })
        .await;
    assert_ne!(s.state, StreamState::Ready);
    assert_eq!(
        rig.emu.counters().ws_upgrades_accepted,
        0,
        "no socket is opened before the session is authenticated"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_on_the_handshake_refreshes_credentials_once_and_restarts_only_the_stream_connection()
{
    let rig = Rig::start();
    let _rx = rig.subscribe_all(&CONIDS).await;
    let before = rig.fully_ready().await;
    let tickles = rig.emu.counters().tickle;

    rig.emu.inject(Fault::RejectUpgrade {
        status: 401,
        count: 1,
    });
    rig.emu.inject(Fault::DropSockets);

    let after = rig
        .wait(10, "recovery", |s| s.recoveries == 1 && s.is_fully_ready())
        .await;
    // one tickle to fetch the replacement session id after the 401
    assert_eq!(
        rig.emu.counters().tickle,
        tickles + 1,
        "exactly one credential refresh"
    );
    assert_eq!(
        after.credential_generation,
        before.credential_generation + 1
    );
    assert_eq!(
        restarts(&after, ActorKind::StreamConnection),
        2,
        "drop + 401: two socket restarts"
    );
    assert_eq!(restarts(&after, ActorKind::TokenManager), 0);
    assert_eq!(restarts(&after, ActorKind::GatewaySession), 0);
    assert_eq!(restarts(&after, ActorKind::Subscriptions), 0);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rejection_of_just_refreshed_credentials_is_hard_and_stops_dialing() {
    let rig = Rig::start();
    rig.fully_ready().await;
    rig.emu.inject(Fault::RejectUpgrade {
        status: 403,
        count: 1000,
    });
    rig.emu.inject(Fault::DropSockets);
    let s = rig
        .wait(10, "hard failure", |s| {
            matches!(s.state, StreamState::Failed { .. })
        })
        .await;
    assert_eq!(s.hard_failures, 1);
    let StreamState::Failed { reason } = &s.state else {
        unreachable!()
    };
    assert!(reason.contains("right after a refresh"), "{reason}");
    let rejected = rig.emu.counters().ws_upgrades_rejected;
    assert_eq!(
        rejected, 2,
        "one rejection, one refresh, one more rejection, then nothing"
    );
    rig.stop().await;
}

/// Seed 001: auth/status is read with GET; a not-authenticated gateway gets ssodh/init.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_gateway_is_brought_up_with_ssodh_init_using_get_for_status() {
    let rig = Rig::with(
        EmulatorConfig {
            auth_status_post_rejected: true,
            ..common::fast_emulator()
        },
        |_| {},
    );
    rig.emu.inject(Fault::SessionLost);
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    rig.fully_ready().await;
    let c = rig.emu.counters();
    assert!(c.ssodh_init >= 1, "ssodh/init completed the handshake");
    assert_eq!(
        c.auth_status_post, 0,
        "auth/status is never POSTed (the gateway answers 400)"
    );
    assert!(
        c.auth_status_get >= 2,
        "status read before and after ssodh/init"
    );
    rig.stop().await;
}

/// Seed 001: 2FA not approved yet — wait with a remedy, poll slowly, continue by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_2fa_waits_in_awaiting_login_with_a_remedy_polls_slowly_and_continues_when_approved(
) {
    let rig = Rig::with(
        EmulatorConfig {
            login_approved: false,
            ..common::fast_emulator()
        },
        |c| {
            c.login_poll_interval = Duration::from_millis(300);
        },
    );
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    let s = rig
        .wait(10, "awaiting login", |s| {
            matches!(s.state, StreamState::AwaitingLogin { .. })
        })
        .await;
    let StreamState::AwaitingLogin { remedy } = &s.state else {
        unreachable!()
    };
    assert!(remedy.contains("2FA"), "remedy names what to do: {remedy}");
    assert_eq!(s.hard_failures, 0, "needs-login is not a hard failure");

    let start = rig.emu.counters();
    let t0 = tokio::time::Instant::now();
    // let a few poll intervals pass: the number of status calls is bounded by the interval
    wait_counters(&rig.emu, 10, "three more polls", |c| {
        c.ssodh_init >= start.ssodh_init + 3
    })
    .await;
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(550),
        "polls are spaced by the poll interval, not a hot loop: {elapsed:?}"
    );

    rig.emu.inject(Fault::ApproveLogin);
    rig.fully_ready().await;
    rig.stop().await;
}

/// Seed 001 / 002: the gateway is not running — soft, with a named reason; recovers when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_is_down_is_a_soft_failure_with_a_named_reason_and_recovers_when_it_starts()
{
    let rig = Rig::start();
    let _rx = rig.subscribe_all(&CONIDS).await;
    rig.fully_ready().await;
    rig.emu.inject(Fault::GatewayDown { millis: 1500 });
    let down = rig
        .wait(10, "unreachable reported", |s| {
            s.last_failure
                .as_ref()
                .is_some_and(|f| f.reason == "unreachable")
        })
        .await;
    assert_eq!(down.hard_failures, 0);
    assert!(down
        .last_failure
        .unwrap()
        .message
        .contains("start the gateway"));
    let s = rig
        .wait(15, "recovered", |s| s.recoveries >= 1 && s.is_fully_ready())
        .await;
    assert_eq!(s.subscriptions.active, CONIDS.len());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_silence_rebuilds_the_socket_within_the_configured_timeout() {
    let rig = Rig::start(); // heartbeat_timeout 800 ms
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    rig.fully_ready().await;
    let t0 = tokio::time::Instant::now();
    rig.emu.inject(Fault::HeartbeatSilence);
    let s = rig
        .wait(10, "heartbeat silence noticed", |s| {
            s.last_failure
                .as_ref()
                .is_some_and(|f| f.reason == "heartbeat_silence")
        })
        .await;
    let noticed = t0.elapsed();
    // The deadline is the last frame + 800 ms (the nominal bound is 800 ms, and the data stopped
    // at most one 20 ms tick before the fault); the rest is slack for a loaded shared machine.
    assert!(
        noticed >= Duration::from_millis(700) && noticed < Duration::from_millis(800 + 200 + 800),
        "noticed at the timeout, not before nor much after: {noticed:?}"
    );
    assert_eq!(s.hard_failures, 0);
    rig.wait(10, "recovered", |s| s.recoveries == 1 && s.is_fully_ready())
        .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_with_non_utf8_bytes_is_decoded_lossily_without_a_disconnect() {
    let rig = Rig::start();
    let mut rx = rig.subscribe_all(&CONIDS[..1]).await;
    let before = rig.fully_ready().await;
    let received = before.messages_received;
    rig.emu.inject(Fault::NonUtf8Frame);
    rig.emu.inject(Fault::FragmentedMessage);
    rig.emu.inject(Fault::MalformedFrame);
    let after = rig
        .wait(10, "more messages", |s| s.messages_received > received + 20)
        .await;
    assert_eq!(after.epoch, before.epoch, "same socket");
    assert_eq!(restarts(&after, ActorKind::StreamConnection), 0);
    assert!(matches!(
        rx[0].recv().await,
        Some(Event::State { .. } | Event::Data { .. })
    ));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_rebuilds_the_socket() {
    let rig = Rig::with(common::fast_emulator(), |c| c.max_frame_size = 64 * 1024);
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    rig.fully_ready().await;
    rig.emu.inject(Fault::OversizedFrame { bytes: 256 * 1024 });
    let s = rig
        .wait(10, "recovered", |s| s.recoveries == 1 && s.is_fully_ready())
        .await;
    assert_eq!(s.last_failure.unwrap().reason, "oversized");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_codes_1000_1001_1006_1011_are_soft_and_reconnect() {
    let rig = Rig::start();
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    rig.fully_ready().await;
    for (i, code) in [1000u16, 1001, 1011, 1012].into_iter().enumerate() {
        rig.emu.inject(Fault::CloseSockets {
            code,
            reason: "bye".into(),
        });
        let s = rig
            .wait(10, "recovered", |s| {
                s.recoveries == i as u64 + 1 && s.is_fully_ready()
            })
            .await;
        assert_eq!(s.hard_failures, 0, "close {code} is soft");
    }
    rig.stop().await;
}

/// Seed 004's rule applies to every dialect: a policy close is hard — no loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_failure_stops_every_further_connection_attempt() {
    let rig = Rig::start();
    rig.fully_ready().await;
    rig.emu.inject(Fault::CloseSockets {
        code: 1008,
        reason: "ORIGIN_BLOCKED".into(),
    });
    let s = rig
        .wait(10, "failed", |s| {
            matches!(s.state, StreamState::Failed { .. })
        })
        .await;
    assert_eq!(s.last_failure.as_ref().map(|f| f.reason), Some("closed"));
    let upgrades = rig.emu.counters().ws_upgrades_accepted;
    // Absence can only be shown over time: give a reconnect loop ten backoff periods to show up.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        rig.emu.counters().ws_upgrades_accepted,
        upgrades,
        "no further connection attempts"
    );
    assert!(matches!(
        rig.kw.status().snapshot().stream(STREAM).unwrap().state,
        StreamState::Failed { .. }
    ));

    rig.kw.resume(STREAM).await.unwrap();
    rig.wait(10, "ready after resume", |s| s.state == StreamState::Ready)
        .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_competing_session_is_taken_over_under_the_compete_policy() {
    let rig = Rig::start();
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    rig.fully_ready().await;
    let inits = rig.emu.counters().ssodh_init;
    rig.emu.inject(Fault::CompetingSession);
    rig.wait(10, "recovered", |s| s.recoveries == 1 && s.is_fully_ready())
        .await;
    assert!(rig.emu.counters().ssodh_init > inits);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_competing_session_is_hard_under_the_yield_policy_and_names_the_remedy() {
    let rig = Rig::start_yield();
    rig.fully_ready().await;
    rig.emu.inject(Fault::CompetingSession);
    let s = rig
        .wait(10, "failed", |s| {
            matches!(s.state, StreamState::Failed { .. })
        })
        .await;
    let StreamState::Failed { reason } = s.state else {
        unreachable!()
    };
    assert!(reason.contains("close the other session"), "{reason}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_no_bridge_are_retried() {
    let rig = Rig::start();
    rig.emu.inject(Fault::SessionLost);
    rig.emu.inject(Fault::NoBridge { count: 2 });
    rig.emu.inject(Fault::ServerError {
        status: 503,
        count: 2,
    });
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    let s = rig.fully_ready().await;
    assert_eq!(s.hard_failures, 0);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_honoured_with_retry_after() {
    let rig = Rig::start();
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    rig.fully_ready().await;
    rig.emu.inject(Fault::RateLimit { millis: 1000 });
    rig.emu.inject(Fault::DropSockets);
    let t0 = tokio::time::Instant::now();
    let s = rig
        .wait(15, "recovered", |s| s.recoveries == 1 && s.is_fully_ready())
        .await;
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "waited out the penalty: {:?}",
        t0.elapsed()
    );
    assert_eq!(s.hard_failures, 0);
    let limited = rig.emu.counters().rate_limited;
    assert!(
        limited <= 3,
        "no hammering inside the penalty window: {limited} requests refused"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tickle_that_finds_no_session_reestablishes_it() {
    let rig = Rig::with(common::fast_emulator(), |c| {
        c.ibkr_config_mut().unwrap().tickle_interval = Duration::from_millis(200);
    });
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    rig.fully_ready().await;
    rig.emu.inject(Fault::TickleNoSession { count: 1 });
    let s = rig
        .wait(10, "recovered", |s| s.recoveries == 1 && s.is_fully_ready())
        .await;
    assert_eq!(restarts(&s, ActorKind::GatewaySession), 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_session_id_rebuilds_the_socket_with_the_new_id() {
    let rig = Rig::with(common::fast_emulator(), |c| {
        c.ibkr_config_mut().unwrap().tickle_interval = Duration::from_millis(200);
    });
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    let before = rig.fully_ready().await;
    rig.emu.inject(Fault::RotateSession);
    let s = rig
        .wait(10, "new socket", |s| {
            s.epoch > before.epoch && s.is_fully_ready()
        })
        .await;
    assert!(s.credential_generation > before.credential_generation);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_sts_shapes_all_authenticate() {
    for style in [StsStyle::Whole, StsStyle::Split, StsStyle::Legacy] {
        let rig = Rig::with(
            EmulatorConfig {
                sts_style: style,
                ..common::fast_emulator()
            },
            |_| {},
        );
        let _rx = rig.subscribe_all(&CONIDS[..1]).await;
        rig.fully_ready().await;
        rig.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_sends_umd_and_ends_the_consumer_stream() {
    let rig = Rig::start();
    let mut rx = rig.subscribe_all(&CONIDS[..2]).await;
    rig.fully_ready().await;
    assert!(rig
        .kw
        .unsubscribe(
            STREAM,
            Subscription::market_data(CONIDS[0], ["31", "84", "86"])
        )
        .await
        .unwrap());
    wait_counters(&rig.emu, 5, "umd", |c| c.umd == 1).await;
    // the receiver drains what was queued and then ends
    while let Some(_e) = rx[0].recv().await {}
    let s = rig
        .wait(5, "one desired", |s| {
            s.subscriptions.desired == 1 && s.is_fully_ready()
        })
        .await;
    assert_eq!(s.subscriptions.active, 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_loses_the_oldest_events_and_never_stalls_the_socket() {
    let rig = Rig::start();
    let rx = rig
        .kw
        .subscribe_with_capacity(STREAM, Subscription::market_data(1, ["31"]), 4)
        .await
        .unwrap();
    let _fast = rig.subscribe_all(&CONIDS[..1]).await;
    rig.fully_ready().await;
    // nobody reads `rx`: the queue overflows while heartbeats and the other subscription go on
    let s = rig.wait(10, "drops", |s| s.events_dropped >= 20).await;
    assert_eq!(
        restarts(&s, ActorKind::StreamConnection),
        0,
        "the socket was never stalled into a timeout"
    );
    assert!(rx.dropped() >= 20);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_refused_by_the_gateway_is_failed_with_its_reason() {
    let rig = Rig::start();
    let mut rx = rig
        .kw
        .subscribe(
            STREAM,
            Subscription::Ledger {
                account: "DU1".into(),
            },
        )
        .await
        .unwrap();
    let s = rig
        .wait(10, "failed subscription", |s| s.subscriptions.failed == 1)
        .await;
    assert_eq!(s.state, StreamState::Ready);
    loop {
        match rx.recv().await {
            Some(Event::State {
                state: SubscriptionState::Failed { reason },
                ..
            }) => {
                assert!(reason.contains("Topic unknown"), "{reason}");
                break;
            }
            Some(_) => continue,
            None => panic!("stream ended"),
        }
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_gateways_self_signed_certificate_as_ca_works() {
    use keepwire::emulator::TlsMode;
    let emu_cfg = EmulatorConfig {
        tls: TlsMode::SelfSigned,
        ..common::fast_emulator()
    };
    let emu = keepwire::emulator::Emulator::start(emu_cfg).unwrap();
    assert!(emu.base_url().starts_with("https://"));
    let mut cfg = common::fast_stream(&emu);
    cfg.tls = keepwire::TlsConfig::CaPem(emu.ca_pem().unwrap());
    let kw = keepwire::Handle::builder().stream(cfg).start().unwrap();
    let rig = Rig { emu, kw };
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    rig.fully_ready().await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_hard_tls_failure() {
    use keepwire::emulator::TlsMode;
    let emu_cfg = EmulatorConfig {
        tls: TlsMode::SelfSigned,
        ..common::fast_emulator()
    };
    let emu = keepwire::emulator::Emulator::start(emu_cfg).unwrap();
    let cfg = common::fast_stream(&emu); // verified against public roots: must fail
    let kw = keepwire::Handle::builder().stream(cfg).start().unwrap();
    let rig = Rig { emu, kw };
    let s = rig
        .wait(10, "failed", |s| {
            matches!(s.state, StreamState::Failed { .. })
        })
        .await;
    assert_eq!(s.last_failure.unwrap().reason, "tls");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_tls_verification_for_a_remote_host_is_refused_with_the_fix() {
    let mut cfg = keepwire::StreamConfig::ibkr(STREAM, "https://gateway.example.com:5000");
    cfg.tls = keepwire::TlsConfig::InsecureSkipVerifyLoopbackOnly;
    // Refused when the stream starts, before anything is dialled.
    let err = match keepwire::Handle::builder().stream(cfg).start() {
        Ok(kw) => {
            kw.shutdown().await;
            panic!("a stream skipping verification for a remote host must not start");
        }
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("insecure_skip_verify") && err.contains("ca_file"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_handler_rebuilds_only_that_actor() {
    let rig = Rig::start();
    let mut rx = rig.subscribe_all(&CONIDS[..1]).await;
    rig.fully_ready().await;

    rig.kw
        .inject_panic(STREAM, ActorKind::Subscriptions)
        .await
        .unwrap();
    let s = rig
        .wait(10, "subscriptions rebuilt", |s| {
            restarts(s, ActorKind::Subscriptions) == 1
        })
        .await;
    for other in [
        ActorKind::TokenManager,
        ActorKind::GatewaySession,
        ActorKind::StreamConnection,
    ] {
        assert_eq!(restarts(&s, other), 0, "{other:?} untouched");
    }
    // the desired set survived and data still reaches the consumer
    rig.wait(10, "ready again", |s| {
        s.is_fully_ready() && s.subscriptions.desired == 1
    })
    .await;
    common::next_data(&mut rx[0], 5, "data after the rebuild").await;

    rig.kw
        .inject_panic(STREAM, ActorKind::StreamConnection)
        .await
        .unwrap();
    let s = rig
        .wait(10, "socket rebuilt", |s| {
            restarts(s, ActorKind::StreamConnection) == 1 && s.is_fully_ready()
        })
        .await;
    assert_eq!(restarts(&s, ActorKind::GatewaySession), 0);
    assert_eq!(restarts(&s, ActorKind::TokenManager), 0);

    // The other two: rebuilt alone, and the socket is not touched.
    let epoch = s.epoch;
    for (actor, n) in [(ActorKind::TokenManager, 1), (ActorKind::GatewaySession, 1)] {
        rig.kw.inject_panic(STREAM, actor).await.unwrap();
        rig.wait(10, "rebuilt", |s| restarts(s, actor) == n).await;
    }
    let s = rig.wait(10, "still ready", |s| s.is_fully_ready()).await;
    assert_eq!(
        s.epoch, epoch,
        "the socket survived panics in TokenManager and GatewaySession"
    );
    assert_eq!(restarts(&s, ActorKind::StreamConnection), 1);
    assert_eq!(restarts(&s, ActorKind::Subscriptions), 1);
    rig.stop().await;
}

/// A panicked actor reports its own death: it is rebuilt at once, not at the supervisor's next
/// poll (streams are not polled for dead actors ten times a second any more; a 1 s check is
/// only a safety net).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_actor_is_rebuilt_at_once_not_at_the_next_poll() {
    let rig = Rig::start();
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    rig.fully_ready().await;
    for actor in [
        ActorKind::Subscriptions,
        ActorKind::TokenManager,
        ActorKind::GatewaySession,
        ActorKind::StreamConnection,
    ] {
        let t0 = std::time::Instant::now();
        rig.kw.inject_panic(STREAM, actor).await.unwrap();
        rig.wait(10, "rebuilt", |s| restarts(s, actor) == 1).await;
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "{actor:?} rebuilt after {took:?}: it waited for a poll"
        );
        rig.wait(10, "ready again", |s| s.is_fully_ready()).await;
    }
    rig.stop().await;
}

impl Rig {
    fn start_yield() -> Self {
        Rig::with(common::fast_emulator(), |c| {
            c.ibkr_config_mut().unwrap().competing = CompetingPolicy::Yield
        })
    }
}

/// Seed 002: the gateway session is kept alive — tickle on an interval, `tic` on the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_kept_alive_with_tickle_and_the_socket_with_tic() {
    let rig = Rig::with(common::fast_emulator(), |c| {
        let ibkr = c.ibkr_config_mut().unwrap();
        ibkr.tickle_interval = Duration::from_millis(100);
        ibkr.tic_interval = Duration::from_millis(100);
    });
    rig.fully_ready().await;
    let c0 = rig.emu.counters();
    let c1 = wait_counters(&rig.emu, 10, "keepalives", |c| {
        c.tickle >= c0.tickle + 3 && c.tic >= c0.tic + 3
    })
    .await;
    assert!(c1.tickle >= c0.tickle + 3);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_unsubscribes_everything_and_logs_out_when_configured() {
    let rig = Rig::with(common::fast_emulator(), |c| {
        c.ibkr_config_mut().unwrap().logout_on_shutdown = true
    });
    let _rx = rig.subscribe_all(&CONIDS).await;
    rig.fully_ready().await;
    rig.kw.shutdown().await;
    let c = wait_counters(&rig.emu, 5, "umd and logout", |c| {
        c.umd == CONIDS.len() as u64 && c.logout == 1
    })
    .await;
    assert_eq!(c.logout, 1);
    let s = rig.kw.status().snapshot().stream(STREAM).cloned().unwrap();
    assert_eq!(s.state, StreamState::Stopped);
    rig.emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_dying_more_often_than_the_restart_intensity_escalates_but_reconnects_never_do() {
    let rig = Rig::with(common::fast_emulator(), |c| {
        c.restart_intensity = keepwire::RestartIntensity {
            max_restarts: 2,
            window: Duration::from_secs(60),
        };
    });
    rig.fully_ready().await;
    // Reconnects are planned restarts, paced by backoff: however many, the stream goes on.
    for i in 1..=4u64 {
        rig.emu.inject(Fault::DropSockets);
        rig.wait(10, "ready again", |s| {
            s.recoveries == i && s.state == StreamState::Ready
        })
        .await;
    }
    // Deaths (panics) are what restart intensity is for.
    for n in 1..=3u64 {
        rig.kw
            .inject_panic(STREAM, ActorKind::Subscriptions)
            .await
            .unwrap();
        if n < 3 {
            rig.wait(10, "subscriptions rebuilt", |s| {
                restarts(s, ActorKind::Subscriptions) == n
            })
            .await;
        }
    }
    let s = rig
        .wait(10, "escalated", |s| {
            matches!(s.state, StreamState::Failed { .. })
        })
        .await;
    let StreamState::Failed { reason } = &s.state else {
        unreachable!()
    };
    assert!(
        reason.contains("subscriptions restarted 3 times"),
        "{reason}"
    );
    assert_eq!(s.last_failure.as_ref().unwrap().reason, "restart_intensity");
    rig.stop().await;
}

/// awc does not answer pings by itself: keepwire does, on the same socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pings_are_answered_with_pongs() {
    let rig = Rig::start();
    let before = rig.fully_ready().await;
    for _ in 0..3 {
        rig.emu.inject(Fault::Ping);
    }
    wait_counters(&rig.emu, 5, "three pongs", |c| c.pongs_received == 3).await;
    let s = rig.wait(5, "status", |_| true).await;
    assert_eq!(s.epoch, before.epoch);
    rig.stop().await;
}

/// The URL rule with the real resolver: `localhost` (which resolves to loopback addresses only
/// on a test machine) is loopback, so a self-signed gateway there may skip verification — decided
/// for that URL when it is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_at_localhost_may_skip_verification() {
    use keepwire::emulator::TlsMode;
    let emu_cfg = EmulatorConfig {
        tls: TlsMode::SelfSigned,
        ..common::fast_emulator()
    };
    let emu = keepwire::emulator::Emulator::start(emu_cfg).unwrap();
    let mut cfg = common::fast_stream(&emu);
    cfg.url = emu.base_url().replace("127.0.0.1", "localhost");
    assert!(cfg.url.starts_with("https://localhost:"), "{}", cfg.url);
    cfg.tls = keepwire::TlsConfig::InsecureSkipVerifyLoopbackOnly;
    let kw = keepwire::Handle::builder().stream(cfg).start().unwrap();
    let rig = Rig { emu, kw };
    let _rx = rig.subscribe_all(&CONIDS[..1]).await;
    rig.fully_ready().await;
    rig.stop().await;
}
