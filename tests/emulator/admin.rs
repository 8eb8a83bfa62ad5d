//! The admin API and seeded schedules.

use std::time::Duration;

use keepwire::emulator::{EmulatorConfig, Fault, FaultSchedule};
use serde_json::{json, Value};

use crate::support::{client, get, start, wait_until};

#[actix_rt::test]
async fn admin_faults_counters_and_state() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    let admin = emu.admin_url();

    let mut res = c
        .post(format!("{admin}/admin/faults"))
        .send_json(&json!({"fault": "session_lost"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"ok": true}));
    assert_eq!(
        get(&c, &emu, "/iserver/auth/status").await.1["authenticated"],
        false
    );

    let mut res = c
        .post(format!("{admin}/admin/faults"))
        .send_json(&json!({"fault": "close_sockets", "code": 1011, "reason": "x"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let _ = res.body().await;

    let mut res = c
        .post(format!("{admin}/admin/faults"))
        .send_body(r#"{"fault":"no_such_fault"}"#)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("unknown variant"),
        "{body}"
    );

    let counters: Value = c
        .get(format!("{admin}/admin/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["faults_injected"], 2);
    assert_eq!(counters["auth_status_get"], 1);

    let state: Value = c
        .get(format!("{admin}/admin/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["session_id"], emu.session_id());
    assert_eq!(state["authenticated"], false);
    assert_eq!(state["competing"], false);
    assert_eq!(state["login_approved"], true);
    assert_eq!(state["open_sockets"], 0);
}

#[test]
fn seeded_schedule_is_deterministic() {
    let faults = vec![
        Fault::SessionLost,
        Fault::DropSockets,
        Fault::RateLimit { millis: 100 },
        Fault::RotateSession,
    ];
    let a = FaultSchedule::seeded(42, Duration::from_secs(60), faults.clone());
    let b = FaultSchedule::seeded(42, Duration::from_secs(60), faults.clone());
    let other = FaultSchedule::seeded(43, Duration::from_secs(60), faults.clone());
    assert_eq!(a, b);
    assert_ne!(a, other);
    assert_eq!(a.len(), faults.len());
    assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(a.iter().all(|(at, _)| *at < Duration::from_secs(60)));
    let schedule = FaultSchedule {
        seed: 42,
        duration_ms: 60_000,
        faults,
    };
    assert_eq!(schedule.entries(), a);
}

#[actix_rt::test]
async fn admin_schedule_applies_every_fault_within_the_window() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    let body = json!({
        "seed": 7,
        "duration_ms": 300,
        "faults": [{"fault": "rotate_session"}, {"fault": "session_lost"}],
    });
    let mut res = c
        .post(format!("{}/admin/schedule", emu.admin_url()))
        .send_json(&body)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let answer: Value = res.json().await.unwrap();
    let expected = FaultSchedule::seeded(
        7,
        Duration::from_millis(300),
        vec![Fault::RotateSession, Fault::SessionLost],
    );
    let listed: Vec<(u64, Fault)> = answer["scheduled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["at_ms"].as_u64().unwrap(),
                serde_json::from_value(e["fault"].clone()).unwrap(),
            )
        })
        .collect();
    let expected: Vec<(u64, Fault)> = expected
        .into_iter()
        .map(|(at, f)| (u64::try_from(at.as_millis()).unwrap(), f))
        .collect();
    assert_eq!(listed, expected);
    wait_until("scheduled faults applied", || {
        emu.counters().faults_injected == 2
    })
    .await;
    assert!(!emu.state().authenticated);
}

#[actix_rt::test]
async fn handle_run_schedule_applies_faults() {
    let emu = start(EmulatorConfig::default());
    let old = emu.session_id();
    emu.run_schedule(FaultSchedule::seeded(
        1,
        Duration::from_millis(100),
        vec![Fault::RotateSession],
    ));
    wait_until("rotation", || emu.session_id() != old).await;
    emu.stop();
    emu.stop();
}
