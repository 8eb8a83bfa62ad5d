//! REST endpoints and their shapes.

use keepwire::emulator::{EmulatorConfig, Fault};
use serde_json::json;

use crate::support::{client, get, post, start};

#[actix_rt::test]
async fn endpoints_have_the_ibkr_shapes() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);

    let (status, auth) = get(&c, &emu, "/iserver/auth/status").await;
    assert_eq!(status, 200);
    for field in [
        "authenticated",
        "established",
        "competing",
        "connected",
        "message",
        "MAC",
        "hardware_info",
        "fail",
    ] {
        assert!(
            auth.get(field).is_some(),
            "auth/status lacks {field}: {auth}"
        );
    }
    assert_eq!(auth["authenticated"], true);
    assert_eq!(auth["competing"], false);
    assert_eq!(auth["serverInfo"]["serverName"], "kw-emu");

    let (status, auth) = post(&c, &emu, "/iserver/auth/status", None).await;
    assert_eq!((status, &auth["authenticated"]), (200, &json!(true)));

    let (status, init) = post(
        &c,
        &emu,
        "/iserver/auth/ssodh/init",
        Some(json!({"publish": true, "compete": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(init["passed"], true);
    assert_eq!(init["authenticated"], true);
    // A body-less POST is accepted.
    let (status, init) = post(&c, &emu, "/iserver/auth/ssodh/init", None).await;
    assert_eq!((status, &init["passed"]), (200, &json!(true)));

    let (status, re) = post(&c, &emu, "/iserver/reauthenticate", None).await;
    assert_eq!((status, re), (200, json!({"message": "triggered"})));

    for tickle in [
        get(&c, &emu, "/tickle").await,
        post(&c, &emu, "/tickle", None).await,
    ] {
        let (status, body) = tickle;
        assert_eq!(status, 200);
        assert_eq!(body["session"], emu.session_id());
        assert!(body["ssoExpires"].is_u64());
        assert_eq!(body["collission"], false);
        assert!(body["userId"].is_u64());
        assert_eq!(body["hmds"]["error"], "no bridge");
        assert_eq!(body["iserver"]["authStatus"]["authenticated"], true);
    }

    let (status, sso) = get(&c, &emu, "/sso/validate").await;
    assert_eq!(status, 200);
    assert_eq!(sso["RESULT"], true);
    assert_eq!(sso["USER_NAME"], "kwuser1");
    assert!(sso["EXPIRES"].is_u64());

    let (status, acc) = get(&c, &emu, "/iserver/accounts").await;
    assert_eq!(status, 200);
    assert_eq!(acc["accounts"], json!(["DU123456"]));
    assert_eq!(acc["selectedAccount"], "DU123456");

    let (status, out) = post(&c, &emu, "/logout", None).await;
    assert_eq!((status, out), (200, json!({"status": true})));
    let (_, auth) = get(&c, &emu, "/iserver/auth/status").await;
    assert_eq!(auth["authenticated"], false);

    let n = emu.counters();
    assert_eq!(n.auth_status_get, 2);
    assert_eq!(n.auth_status_post, 1);
    assert_eq!(n.ssodh_init, 2);
    assert_eq!(n.reauthenticate, 1);
    assert_eq!(n.tickle, 2);
    assert_eq!(n.sso_validate, 1);
    assert_eq!(n.accounts, 1);
    assert_eq!(n.logout, 1);
}

#[actix_rt::test]
async fn post_auth_status_can_be_rejected() {
    let emu = start(EmulatorConfig {
        auth_status_post_rejected: true,
        ..EmulatorConfig::default()
    });
    let c = client(&emu);
    let (status, body) = post(&c, &emu, "/iserver/auth/status", None).await;
    assert_eq!((status, body), (400, json!("Bad Request")));
    assert_eq!(get(&c, &emu, "/iserver/auth/status").await.0, 200);
}

#[actix_rt::test]
async fn unapproved_login_blocks_init_until_approved() {
    let emu = start(EmulatorConfig {
        login_approved: false,
        ..EmulatorConfig::default()
    });
    let c = client(&emu);
    let (_, auth) = get(&c, &emu, "/iserver/auth/status").await;
    assert_eq!(auth["authenticated"], false);
    let (status, body) = post(&c, &emu, "/iserver/auth/ssodh/init", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "not authenticated");
    // reauthenticate does not help either.
    post(&c, &emu, "/iserver/reauthenticate", None).await;
    assert_eq!(
        get(&c, &emu, "/iserver/auth/status").await.1["authenticated"],
        false
    );

    emu.inject(Fault::ApproveLogin);
    let (status, body) = post(&c, &emu, "/iserver/auth/ssodh/init", None).await;
    assert_eq!((status, &body["passed"]), (200, &json!(true)));
    assert_eq!(
        get(&c, &emu, "/iserver/auth/status").await.1["authenticated"],
        true
    );
}

#[actix_rt::test]
async fn malformed_init_body_is_a_400_not_a_crash() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    let mut res = c
        .post(format!("{}/v1/api/iserver/auth/ssodh/init", emu.base_url()))
        .send_body("{not json")
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let _ = res.body().await;
    assert_eq!(get(&c, &emu, "/tickle").await.0, 200);
}
