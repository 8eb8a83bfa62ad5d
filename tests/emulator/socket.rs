//! The socket: cookie auth, greeting, sts styles, commands, market data.

use std::time::{Duration, Instant};

use awc::error::WsClientError;
use awc::http::StatusCode;
use awc::ws::{Frame, Message};
use futures_util::SinkExt;
use keepwire::emulator::{EmulatorConfig, StsStyle};
use serde_json::{json, Value};

use crate::support::{
    client, collect_json, connect_live, cookie, expect_json, fast_config, is_smd, next, send,
    start, try_connect, wait_until, Got,
};

#[actix_rt::test]
async fn cookie_auth_greeting_and_market_data() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut ws = try_connect(&c, &emu, Some(&cookie(&emu.session_id())))
        .await
        .unwrap();
    let system = expect_json(&mut ws, |_| true).await;
    assert_eq!(
        system,
        json!({"topic":"system","success":"kwuser1","isFT":false,"isPaper":true})
    );
    let sts = expect_json(&mut ws, |_| true).await;
    assert_eq!(sts["topic"], "sts");
    assert_eq!(sts["args"]["authenticated"], true);
    assert_eq!(sts["args"]["competing"], false);
    assert_eq!(sts["args"]["username"], "kwuser1");
    let act = expect_json(&mut ws, |_| true).await;
    assert_eq!(act["topic"], "act");
    assert_eq!(act["args"]["accounts"], json!(["DU123456"]));

    send(&mut ws, r#"smd+8314+{"fields":["31","84","86","55"]}"#).await;
    let first = expect_json(&mut ws, |v| is_smd(v, 8314)).await;
    for field in ["31", "84", "86", "55"] {
        assert!(first[field].is_string(), "first smd lacks {field}: {first}");
    }
    assert_eq!(first["conid"], 8314);
    assert_eq!(first["conidEx"], "8314");
    assert!(first["_updated"].is_u64());
    // Later messages keep coming, without the unchanged symbol.
    let later = expect_json(&mut ws, |v| is_smd(v, 8314)).await;
    assert!(later.get("55").is_none());
    assert_eq!(emu.counters().smd_subscribe, 1);

    // umd stops it: after the tic reply, no smd for many intervals.
    send(&mut ws, "umd+8314+{}").await;
    send(&mut ws, "tic").await;
    expect_json(&mut ws, |v| v["topic"] == "tic").await;
    let after = collect_json(&mut ws, Duration::from_millis(300)).await;
    assert!(!after.iter().any(|v| is_smd(v, 8314)), "{after:?}");
    assert_eq!(emu.counters().umd, 1);
    assert_eq!(emu.counters().ws_open_now, 1);
    assert_eq!(emu.counters().ws_upgrades_accepted, 1);
}

#[actix_rt::test]
async fn wrong_session_cookie_gets_401_and_encoded_cookie_works() {
    let emu = start(fast_config());
    let c = client(&emu);
    match try_connect(&c, &emu, Some(&cookie("not-the-session"))).await {
        Err(WsClientError::InvalidResponseStatus(status)) => {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    assert_eq!(emu.counters().ws_upgrades_rejected, 1);
    let encoded = format!("api=%7B%22session%22%3A%22{}%22%7D", emu.session_id());
    let mut ws = try_connect(&c, &emu, Some(&encoded)).await.unwrap();
    expect_json(&mut ws, |v| v["topic"] == "act").await;
}

#[actix_rt::test]
async fn without_cookie_the_socket_waits_for_the_session() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut ws = try_connect(&c, &emu, None).await.unwrap();
    let first = expect_json(&mut ws, |_| true).await;
    assert_eq!(first, json!({"message": "waiting for session"}));
    send(&mut ws, r#"{"session":"wrong"}"#).await;
    expect_json(&mut ws, |v| v["message"] == "waiting for session").await;
    send(&mut ws, &format!(r#"{{"session":"{}"}}"#, emu.session_id())).await;
    expect_json(&mut ws, |v| {
        v["topic"] == "system" && v["success"] == "kwuser1"
    })
    .await;
    expect_json(&mut ws, |v| {
        v["topic"] == "sts" && v["args"]["authenticated"] == true
    })
    .await;
    expect_json(&mut ws, |v| v["topic"] == "act").await;
    // Sending the session again is an unknown topic, as on IBKR.
    send(&mut ws, &format!(r#"{{"session":"{}"}}"#, emu.session_id())).await;
    let err = expect_json(&mut ws, |v| v.get("error").is_some()).await;
    assert_eq!(
        err,
        json!({"error":"Topic unknown '{\"s'","code":1,"topic":"{\"s"})
    );
}

#[actix_rt::test]
async fn sts_split_style_sends_one_message_per_arg() {
    let emu = start(EmulatorConfig {
        sts_style: StsStyle::Split,
        ..fast_config()
    });
    let c = client(&emu);
    let mut ws = try_connect(&c, &emu, Some(&cookie(&emu.session_id())))
        .await
        .unwrap();
    expect_json(&mut ws, |v| v["topic"] == "system").await;
    let mut sts = Vec::new();
    loop {
        let v = expect_json(&mut ws, |_| true).await;
        if v["topic"] == "act" {
            break;
        }
        assert_eq!(v["topic"], "sts");
        sts.push(v);
    }
    assert_eq!(sts.len(), 7);
    assert_eq!(sts[0]["args"], json!({"authenticated": true}));
    assert!(sts
        .iter()
        .all(|v| v["args"].as_object().unwrap().len() == 1));
}

#[actix_rt::test]
async fn sts_legacy_style_has_no_authenticated_field() {
    let emu = start(EmulatorConfig {
        sts_style: StsStyle::Legacy,
        ..fast_config()
    });
    let c = client(&emu);
    let mut ws = try_connect(&c, &emu, Some(&cookie(&emu.session_id())))
        .await
        .unwrap();
    let sts = expect_json(&mut ws, |v| v["topic"] == "sts").await;
    assert!(sts["args"].get("authenticated").is_none());
    assert_eq!(sts["args"]["competing"], false);
}

#[actix_rt::test]
async fn tic_echo_ping_heartbeat_unknown_topic_and_close() {
    let emu = start(fast_config());
    let c = client(&emu);
    let mut ws = connect_live(&c, &emu).await;

    send(&mut ws, "tic").await;
    let tic = expect_json(&mut ws, |v| v["topic"] == "tic").await;
    assert_eq!(tic["alive"], true);
    assert!(tic["lastAccessed"].is_u64());
    assert_eq!(emu.counters().tic, 1);

    send(&mut ws, "ech+hb").await;
    expect_json(&mut ws, |v| v["topic"] == "ech+hb").await;

    send(&mut ws, "xyz+foo").await;
    let err = expect_json(&mut ws, |v| v.get("error").is_some()).await;
    assert_eq!(
        err,
        json!({"error":"Topic unknown 'xyz'","code":1,"topic":"xyz"})
    );

    let hb = expect_json(&mut ws, |v| v["topic"] == "system" && v.get("hb").is_some()).await;
    assert!(hb["hb"].is_u64());

    ws.send(Message::Ping("p1".into())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match next(&mut ws, deadline - Instant::now()).await {
            Got::Frame(Frame::Pong(payload)) => {
                assert_eq!(&payload[..], b"p1");
                break;
            }
            Got::Frame(_) => {}
            other => panic!("no pong: {other:?}"),
        }
    }

    ws.send(Message::Close(Some(awc::ws::CloseCode::Normal.into())))
        .await
        .unwrap();
    loop {
        match next(&mut ws, deadline - Instant::now()).await {
            Got::Frame(Frame::Close(reason)) => {
                assert_eq!(reason.unwrap().code, awc::ws::CloseCode::Normal);
                break;
            }
            Got::Frame(_) => {}
            other => panic!("no close echo: {other:?}"),
        }
    }
    wait_until("socket unregistered", || emu.counters().ws_open_now == 0).await;
}

#[actix_rt::test]
async fn smd_expiry_ends_a_stream_silently_and_resubscribe_restarts_it() {
    let expiry = Duration::from_millis(300);
    let emu = start(EmulatorConfig {
        smd_expiry: Some(expiry),
        ..fast_config()
    });
    let c = client(&emu);
    let mut ws = connect_live(&c, &emu).await;
    send(&mut ws, r#"smd+265598+{"fields":["31"]}"#).await;
    let subscribed = Instant::now();
    expect_json(&mut ws, |v| is_smd(v, 265_598)).await;
    // Read for well past the expiry; smd stops, heartbeats go on, nothing closes.
    let deadline = subscribed + expiry + Duration::from_millis(600);
    let mut last_smd = Instant::now();
    let mut hb_after_end = 0;
    while Instant::now() < deadline {
        match next(&mut ws, deadline - Instant::now()).await {
            Got::Frame(Frame::Text(bytes)) => {
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                if is_smd(&v, 265_598) {
                    last_smd = Instant::now();
                } else if v.get("hb").is_some() && last_smd < Instant::now() - expiry / 2 {
                    hb_after_end += 1;
                }
            }
            Got::Timeout => break,
            other => panic!("socket changed: {other:?}"),
        }
    }
    assert!(
        last_smd <= subscribed + expiry + Duration::from_millis(100),
        "smd continued past expiry"
    );
    assert!(hb_after_end >= 1, "heartbeats stopped too");
    send(&mut ws, r#"smd+265598+{"fields":["31"]}"#).await;
    expect_json(&mut ws, |v| is_smd(v, 265_598)).await;
    assert_eq!(emu.counters().smd_subscribe, 2);
}
