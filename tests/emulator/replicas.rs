//! One brokerage session per user, shared by keepwire replicas that name themselves
//! (`X-Keepwire-Replica`, with their fencing token in `X-Keepwire-Fencing-Token`).

use awc::ws::Frame;
use keepwire::emulator::EmulatorHandle;
use serde_json::{json, Value};

use crate::support::{client, cookie, expect_json, fast_config, next, start, Got, SOON};

async fn call(
    c: &awc::Client,
    emu: &EmulatorHandle,
    replica: &str,
    token: u64,
    path: &str,
    body: Option<Value>,
) -> Value {
    let url = format!("{}/v1/api{path}", emu.base_url());
    let req = match body {
        Some(_) => c.post(url),
        None => c.get(url),
    }
    .insert_header(("X-Keepwire-Replica", replica))
    .insert_header(("X-Keepwire-Fencing-Token", token.to_string()));
    let mut res = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    }
    .expect("request");
    serde_json::from_slice(&res.body().await.expect("body")).expect("json")
}

async fn init(
    c: &awc::Client,
    emu: &EmulatorHandle,
    replica: &str,
    token: u64,
    compete: bool,
) -> Value {
    let body = json!({"publish": true, "compete": compete});
    call(
        c,
        emu,
        replica,
        token,
        "/iserver/auth/ssodh/init",
        Some(body),
    )
    .await
}

#[actix_rt::test]
async fn a_second_replica_competing_takes_the_session_and_kicks_the_first_ones_sockets() {
    let emu = start(fast_config());
    let c = client(&emu);
    assert_eq!(init(&c, &emu, "a", 5, true).await["passed"], true);
    let mut ws = c
        .ws(emu.ws_url())
        .header("Cookie", cookie(&emu.session_id()))
        .header("X-Keepwire-Replica", "a")
        .connect()
        .await
        .expect("upgrade")
        .1;
    expect_json(&mut ws, |v| v["topic"] == "act").await;
    assert_eq!(emu.counters().ws_open_by_replica.get("a"), Some(&1));

    // For replica b, a's session is a competing one; without compete it stays a's.
    let status = call(&c, &emu, "b", 6, "/iserver/auth/status", None).await;
    assert_eq!(
        (&status["competing"], &status["authenticated"]),
        (&json!(true), &json!(false))
    );
    assert_ne!(init(&c, &emu, "b", 6, false).await["passed"], true);
    assert_eq!(emu.counters().takeovers, 0);

    // compete:true takes it: a's socket is told `competing` and closed.
    assert_eq!(init(&c, &emu, "b", 6, true).await["passed"], true);
    let kicked = expect_json(&mut ws, |v| v["topic"] == "sts").await;
    assert_eq!(kicked["args"]["competing"], true, "{kicked}");
    let deadline = std::time::Instant::now() + SOON;
    loop {
        match next(
            &mut ws,
            deadline.saturating_duration_since(std::time::Instant::now()),
        )
        .await
        {
            Got::Frame(Frame::Close(_)) | Got::Ended => break,
            Got::Timeout => panic!("the first replica's socket stayed open"),
            _ => {}
        }
    }
    let counters = emu.counters();
    assert_eq!(counters.takeovers, 1);
    assert_eq!(counters.takeovers_without_lease, 0);
    assert_eq!(counters.ws_open_by_replica.get("a"), None);
    let status = call(&c, &emu, "a", 5, "/iserver/auth/status", None).await;
    assert_eq!(status["competing"], true);

    // a, with its old (lower) token, taking it back is a takeover without the lease.
    assert_eq!(init(&c, &emu, "a", 5, true).await["passed"], true);
    let counters = emu.counters();
    assert_eq!(
        (counters.takeovers, counters.takeovers_without_lease),
        (2, 1)
    );
}

#[actix_rt::test]
async fn sockets_of_two_replicas_open_at_once_are_counted() {
    let emu = start(fast_config());
    let c = client(&emu);
    let dial = |replica: &'static str| {
        c.ws(emu.ws_url())
            .header("Cookie", cookie(&emu.session_id()))
            .header("X-Keepwire-Replica", replica)
            .connect()
    };
    let _a = dial("a").await.expect("upgrade");
    let _a2 = dial("a").await.expect("upgrade");
    assert_eq!(emu.counters().replica_socket_overlaps, 0);
    let _b = dial("b").await.expect("upgrade");
    assert_eq!(emu.counters().replica_socket_overlaps, 1);
}
