//! Every fault has its observable effect.

use std::time::{Duration, Instant};

use actix_http::ws::Item;
use awc::error::{ConnectError, SendRequestError, WsClientError};
use awc::ws::Frame;
use keepwire::emulator::{EmulatorConfig, Fault};
use serde_json::{json, Value};

use crate::support::{
    client, collect_json, connect_live, cookie, expect_json, fast_config, get, is_smd, next, post,
    send, start, try_connect, wait_until, Got, Ws,
};

/// Reads until the socket ends; returns whether a close frame came first.
async fn read_to_end(ws: &mut impl Ws) -> Option<Frame> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut close = None;
    loop {
        match next(ws, deadline.saturating_duration_since(Instant::now())).await {
            Got::Frame(Frame::Close(reason)) => close = Some(Frame::Close(reason)),
            Got::Frame(_) => {}
            Got::Ended | Got::Error(_) => return close,
            Got::Timeout => panic!("socket did not end"),
        }
    }
}

#[actix_rt::test]
async fn session_lost_deauthenticates_sockets_for_good() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut ws = connect_live(&c, &emu).await;
    send(&mut ws, "smd+8314+{}").await;
    expect_json(&mut ws, |v| is_smd(v, 8314)).await;

    emu.inject(Fault::SessionLost);
    let sts = expect_json(&mut ws, |v| v["topic"] == "sts").await;
    assert_eq!(sts["args"]["authenticated"], false);
    assert_eq!(
        get(&c, &emu, "/iserver/auth/status").await.1["authenticated"],
        false
    );
    let (_, tickle) = get(&c, &emu, "/tickle").await;
    assert_eq!(tickle["iserver"]["authStatus"]["authenticated"], false);

    // REST recovers through ssodh/init; the old socket never says true again nor sends data.
    let (status, init) = post(
        &c,
        &emu,
        "/iserver/auth/ssodh/init",
        Some(json!({"compete": true})),
    )
    .await;
    assert_eq!((status, &init["passed"]), (200, &json!(true)));
    send(&mut ws, "smd+8314+{}").await;
    send(&mut ws, "tic").await;
    expect_json(&mut ws, |v| v["topic"] == "tic").await;
    let after = collect_json(&mut ws, Duration::from_millis(300)).await;
    assert!(!after.iter().any(|v| is_smd(v, 8314)), "{after:?}");
    assert!(!after.iter().any(|v| v["args"]["authenticated"] == true));
    assert!(after.iter().any(|v| v.get("hb").is_some()), "hb continues");

    // A new socket is live again.
    let mut fresh = connect_live(&c, &emu).await;
    send(&mut fresh, "smd+8314+{}").await;
    expect_json(&mut fresh, |v| is_smd(v, 8314)).await;
}

#[actix_rt::test]
async fn new_socket_while_unauthenticated_gets_sts_false() {
    let emu = start(fast_config());
    let c = client(&emu);
    emu.inject(Fault::SessionLost);
    let mut ws = try_connect(&c, &emu, Some(&cookie(&emu.session_id())))
        .await
        .unwrap();
    expect_json(&mut ws, |v| v["topic"] == "system").await;
    let sts = expect_json(&mut ws, |_| true).await;
    assert_eq!(sts["args"]["authenticated"], false);
}

#[actix_rt::test]
async fn reject_upgrade_answers_the_status_count_times() {
    let emu = start(fast_config());
    let c = client(&emu);
    emu.inject(Fault::RejectUpgrade {
        status: 403,
        count: 2,
    });
    for _ in 0..2 {
        match try_connect(&c, &emu, Some(&cookie(&emu.session_id()))).await {
            Err(WsClientError::InvalidResponseStatus(s)) => assert_eq!(s.as_u16(), 403),
            other => panic!("expected 403, got ok={}", other.is_ok()),
        }
    }
    let _ws = connect_live(&c, &emu).await;
    let n = emu.counters();
    assert_eq!((n.ws_upgrades_rejected, n.ws_upgrades_accepted), (2, 1));
}

#[actix_rt::test]
async fn tickle_no_session_and_unauthorized() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut ws = connect_live(&c, &emu).await;
    emu.inject(Fault::TickleNoSession { count: 1 });
    assert_eq!(
        get(&c, &emu, "/tickle").await,
        (200, json!({"error": "no session"}))
    );
    let (_, tickle) = get(&c, &emu, "/tickle").await;
    assert_eq!(tickle["iserver"]["authStatus"]["authenticated"], false);
    let sts = expect_json(&mut ws, |v| v["topic"] == "sts").await;
    assert_eq!(sts["args"]["authenticated"], false);

    emu.inject(Fault::TickleUnauthorized { count: 1 });
    assert_eq!(
        post(&c, &emu, "/tickle", None).await,
        (
            401,
            json!({"error": "not authenticated", "statusCode": 401})
        )
    );
    assert_eq!(post(&c, &emu, "/tickle", None).await.0, 200);
}

#[actix_rt::test]
async fn require_login_then_approve_login() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut ws = connect_live(&c, &emu).await;
    emu.inject(Fault::RequireLogin);
    let sts = expect_json(&mut ws, |v| v["topic"] == "sts").await;
    assert_eq!(sts["args"]["authenticated"], false);
    let (status, body) = post(&c, &emu, "/iserver/auth/ssodh/init", None).await;
    assert_eq!((status, &body["error"]), (401, &json!("not authenticated")));
    emu.inject(Fault::ApproveLogin);
    let (status, body) = post(&c, &emu, "/iserver/auth/ssodh/init", None).await;
    assert_eq!((status, &body["authenticated"]), (200, &json!(true)));
}

#[actix_rt::test]
async fn no_bridge_fails_init_count_times() {
    let emu = start(fast_config());
    let c = client(&emu);
    emu.inject(Fault::NoBridge { count: 1 });
    assert_eq!(
        post(&c, &emu, "/iserver/auth/ssodh/init", None).await,
        (400, json!({"error": "no bridge", "statusCode": 400}))
    );
    assert_eq!(
        post(&c, &emu, "/iserver/auth/ssodh/init", None).await.0,
        200
    );
}

#[actix_rt::test]
async fn competing_session_until_init_with_compete() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut ws = connect_live(&c, &emu).await;
    emu.inject(Fault::CompetingSession);
    let sts = expect_json(&mut ws, |v| v["topic"] == "sts").await;
    assert_eq!(sts["args"]["authenticated"], false);
    assert_eq!(sts["args"]["competing"], true);
    let (_, auth) = get(&c, &emu, "/iserver/auth/status").await;
    assert_eq!(
        (&auth["competing"], &auth["authenticated"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(get(&c, &emu, "/tickle").await.1["collission"], true);
    assert_eq!(
        get(&c, &emu, "/iserver/accounts").await.1["accounts"],
        json!([])
    );

    let (_, init) = post(
        &c,
        &emu,
        "/iserver/auth/ssodh/init",
        Some(json!({"compete": false})),
    )
    .await;
    assert_eq!(init["competing"], true);
    let (_, init) = post(
        &c,
        &emu,
        "/iserver/auth/ssodh/init",
        Some(json!({"compete": true})),
    )
    .await;
    assert_eq!(
        (&init["competing"], &init["authenticated"]),
        (&json!(false), &json!(true))
    );
}

#[actix_rt::test]
async fn gateway_down_refuses_then_recovers_on_the_same_port() {
    let emu = start(fast_config());
    let c = client(&emu);
    let addr = emu.gateway_addr();
    let old_session = emu.session_id();
    let mut ws = connect_live(&c, &emu).await;
    emu.inject(Fault::GatewayDown { millis: 500 });
    assert!(
        read_to_end(&mut ws).await.is_none(),
        "dropped without a close frame"
    );

    // `gateway_up` turns false once the listener is closed.
    wait_until("listener closed", || !emu.state().gateway_up).await;
    let url = format!("{}/v1/api/tickle", emu.base_url());
    let refused = c.get(&url).send().await;
    assert!(
        matches!(
            refused,
            Err(SendRequestError::Connect(ConnectError::Io(ref e)))
                if e.kind() == std::io::ErrorKind::ConnectionRefused
        ),
        "{refused:?}"
    );
    // The admin listener stays up meanwhile.
    let mut state = c
        .get(format!("{}/admin/state", emu.admin_url()))
        .send()
        .await
        .unwrap();
    let state: Value = state.json().await.unwrap();
    assert_eq!(state["gateway_up"], false);

    let deadline = Instant::now() + Duration::from_secs(5);
    let tickle = loop {
        if let Ok(mut res) = c.get(&url).send().await {
            break res.json::<Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "gateway never came back");
        actix_rt::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(emu.gateway_addr(), addr);
    assert_ne!(tickle["session"], old_session);
    assert_eq!(tickle["session"], emu.session_id());
    assert_eq!(tickle["iserver"]["authStatus"]["authenticated"], true);
    let _ws = connect_live(&c, &emu).await;
}

#[actix_rt::test]
async fn server_error_hits_rest_and_upgrades_count_times() {
    let emu = start(fast_config());
    let c = client(&emu);
    emu.inject(Fault::ServerError {
        status: 503,
        count: 1,
    });
    assert_eq!(get(&c, &emu, "/iserver/auth/status").await.0, 503);
    assert_eq!(get(&c, &emu, "/iserver/auth/status").await.0, 200);
    match try_connect(&c, &emu, Some(&cookie(&emu.session_id()))).await {
        Err(WsClientError::InvalidResponseStatus(s)) => assert_eq!(s.as_u16(), 503),
        other => panic!("expected 503, got ok={}", other.is_ok()),
    }
    let _ws = connect_live(&c, &emu).await;
}

#[actix_rt::test]
async fn rate_limit_answers_429_with_retry_after_until_the_box_ends() {
    let emu = start(fast_config());
    let c = client(&emu);
    emu.inject(Fault::RateLimit { millis: 1500 });
    let res = c
        .get(format!("{}/v1/api/tickle", emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    assert_eq!(res.headers().get("retry-after").unwrap(), "2");
    match try_connect(&c, &emu, Some(&cookie(&emu.session_id()))).await {
        Err(WsClientError::InvalidResponseStatus(s)) => assert_eq!(s.as_u16(), 429),
        other => panic!("expected 429, got ok={}", other.is_ok()),
    }
    assert_eq!(emu.counters().rate_limited, 2);
    let deadline = Instant::now() + Duration::from_secs(4);
    while get(&c, &emu, "/tickle").await.0 == 429 {
        assert!(Instant::now() < deadline, "penalty box never ended");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn heartbeat_silence_makes_open_sockets_half_open() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut ws = connect_live(&c, &emu).await;
    send(&mut ws, "smd+8314+{}").await;
    expect_json(&mut ws, |v| is_smd(v, 8314)).await;
    emu.inject(Fault::HeartbeatSilence);
    // Let in-flight frames drain, then nothing at all: no hb (every 100 ms), no data, no tic reply.
    collect_json(&mut ws, Duration::from_millis(100)).await;
    send(&mut ws, "tic").await;
    match next(&mut ws, Duration::from_millis(500)).await {
        Got::Timeout => {}
        other => panic!("half-open socket sent {other:?}"),
    }
    assert_eq!(emu.counters().ws_open_now, 1, "not closed either");
    // New sockets are normal.
    let mut fresh = connect_live(&c, &emu).await;
    expect_json(&mut fresh, |v| v.get("hb").is_some()).await;
}

#[actix_rt::test]
async fn smd_silent_end_stops_streams_until_resubscribed() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut ws = connect_live(&c, &emu).await;
    send(&mut ws, "smd+8314+{}").await;
    expect_json(&mut ws, |v| is_smd(v, 8314)).await;
    emu.inject(Fault::SmdSilentEnd);
    send(&mut ws, "tic").await;
    expect_json(&mut ws, |v| v["topic"] == "tic").await;
    let after = collect_json(&mut ws, Duration::from_millis(300)).await;
    assert!(!after.iter().any(|v| is_smd(v, 8314)));
    assert!(after.iter().any(|v| v.get("hb").is_some()));
    send(&mut ws, "smd+8314+{}").await;
    expect_json(&mut ws, |v| is_smd(v, 8314)).await;
}

#[actix_rt::test]
async fn rotate_session_rejects_old_cookie_and_keeps_sockets() {
    let emu = start(fast_config());
    let c = client(&emu);
    let old = emu.session_id();
    let mut ws = connect_live(&c, &emu).await;
    emu.inject(Fault::RotateSession);
    let (_, tickle) = get(&c, &emu, "/tickle").await;
    assert_ne!(tickle["session"], old);
    assert_eq!(tickle["session"], emu.session_id());
    match try_connect(&c, &emu, Some(&cookie(&old))).await {
        Err(WsClientError::InvalidResponseStatus(s)) => assert_eq!(s.as_u16(), 401),
        other => panic!("expected 401, got ok={}", other.is_ok()),
    }
    send(&mut ws, "smd+8314+{}").await;
    expect_json(&mut ws, |v| is_smd(v, 8314)).await;
    let _ws = connect_live(&c, &emu).await;
}

#[actix_rt::test]
async fn non_utf8_frame_carries_0x99() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut ws = connect_live(&c, &emu).await;
    emu.inject(Fault::NonUtf8Frame);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match next(&mut ws, deadline.saturating_duration_since(Instant::now())).await {
            Got::Frame(Frame::Text(bytes)) if std::str::from_utf8(&bytes).is_err() => {
                assert!(bytes.contains(&0x99));
                let lossy = String::from_utf8_lossy(&bytes);
                assert!(serde_json::from_str::<Value>(&lossy).is_ok());
                break;
            }
            Got::Frame(_) => {}
            other => panic!("no non-UTF-8 frame: {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn fragmented_message_uses_continuation_frames() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut ws = connect_live(&c, &emu).await;
    send(&mut ws, "smd+8314+{}").await;
    expect_json(&mut ws, |v| is_smd(v, 8314)).await;
    emu.inject(Fault::FragmentedMessage);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut parts: Vec<&'static str> = Vec::new();
    let mut data = Vec::new();
    loop {
        match next(&mut ws, deadline.saturating_duration_since(Instant::now())).await {
            Got::Frame(Frame::Continuation(item)) => match item {
                Item::FirstText(b) => {
                    parts.push("first");
                    data.extend_from_slice(&b);
                }
                Item::Continue(b) => {
                    parts.push("continue");
                    data.extend_from_slice(&b);
                }
                Item::Last(b) => {
                    parts.push("last");
                    data.extend_from_slice(&b);
                    break;
                }
                Item::FirstBinary(_) => panic!("binary fragment"),
            },
            Got::Frame(_) => {}
            other => panic!("no fragments: {other:?}"),
        }
    }
    assert_eq!(parts, ["first", "continue", "last"]);
    let v: Value = serde_json::from_slice(&data).unwrap();
    assert!(is_smd(&v, 8314));
}

#[actix_rt::test]
async fn close_sockets_sends_the_code_and_drop_sockets_sends_none() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut a = connect_live(&c, &emu).await;
    emu.inject(Fault::CloseSockets {
        code: 4001,
        reason: "bye".into(),
    });
    match read_to_end(&mut a).await {
        Some(Frame::Close(Some(reason))) => {
            assert_eq!(u16::from(reason.code), 4001);
            assert_eq!(reason.description.as_deref(), Some("bye"));
        }
        other => panic!("expected close 4001, got {other:?}"),
    }
    let mut b = connect_live(&c, &emu).await;
    emu.inject(Fault::DropSockets);
    assert!(read_to_end(&mut b).await.is_none());
    wait_until("sockets unregistered", || emu.counters().ws_open_now == 0).await;
}

#[actix_rt::test]
async fn oversized_and_malformed_frames() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut ws = connect_live(&c, &emu).await;
    emu.inject(Fault::OversizedFrame { bytes: 200_000 });
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match next(&mut ws, deadline.saturating_duration_since(Instant::now())).await {
            Got::Frame(Frame::Text(b)) if b.len() > 1000 => {
                assert_eq!(b.len(), 200_000);
                break;
            }
            Got::Frame(_) => {}
            other => panic!("no oversized frame: {other:?}"),
        }
    }
    emu.inject(Fault::MalformedFrame);
    loop {
        match next(&mut ws, deadline.saturating_duration_since(Instant::now())).await {
            Got::Frame(Frame::Text(b)) if serde_json::from_slice::<Value>(&b).is_err() => break,
            Got::Frame(_) => {}
            other => panic!("no malformed frame: {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn slow_responses_delay_the_next_requests() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    emu.inject(Fault::SlowResponses {
        millis: 300,
        count: 1,
    });
    let t = Instant::now();
    assert_eq!(get(&c, &emu, "/tickle").await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(get(&c, &emu, "/tickle").await.0, 200);
    assert!(t.elapsed() < Duration::from_millis(300));
    assert_eq!(emu.counters().faults_injected, 1);
}
