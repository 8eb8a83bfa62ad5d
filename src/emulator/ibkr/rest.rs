//! The IBKR REST endpoints under `/v1/api` and the request gate (penalty box, server errors,
//! slow responses) they share, and the error answers the socket's upgrade gives too.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::emulator::state::{
    epoch_ms, Brokerage, Shared, State, ACCOUNT_ID, SERVER_NAME, SERVER_VERSION,
};

/// A JSON error body `{"error":…,"statusCode":…}` with that status.
pub(crate) fn error_json(status: u16, error: &str) -> HttpResponse {
    let code = StatusCode::from_u16(status)
        .ok()
        .filter(|code| code.as_u16() >= 200)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(code).json(json!({ "error": error, "statusCode": code.as_u16() }))
}

/// The 429 answer of the penalty box, with `Retry-After` in whole seconds (rounded up).
pub(crate) fn too_many_requests(left: Duration) -> HttpResponse {
    let secs = left.as_millis().div_ceil(1000).max(1);
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, secs.to_string()))
        .json(json!({ "error": "Too Many Requests", "statusCode": 429 }))
}

/// Applies the request-wide faults: the 429 penalty box, slow responses and server errors.
/// Returns the response to send instead of the endpoint's, if any.
async fn gate(shared: &Shared) -> Option<HttpResponse> {
    let (delay, error) = {
        let mut st = shared.lock();
        if let Some(left) = st.penalty_left() {
            st.counters.rate_limited += 1;
            return Some(too_many_requests(left));
        }
        (st.budgets.slow.take(), st.budgets.rest_error.take())
    };
    if let Some(delay) = delay {
        actix_web::rt::time::sleep(delay).await;
    }
    error.map(|status| {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Server Error");
        error_json(status, reason)
    })
}

/// The replica a request comes from (`X-Keepwire-Replica`, keepwire's HA), if it names one.
pub(crate) fn replica_of(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("x-keepwire-replica")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
}

/// The fencing token of a request (`X-Keepwire-Fencing-Token`; 0 when absent or unparsable).
pub(crate) fn token_of(req: &HttpRequest) -> u64 {
    req.headers()
        .get("x-keepwire-fencing-token")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The `authStatus` object of auth/status, ssodh/init and tickle, as `replica` sees it.
fn auth_status_body(st: &State, replica: Option<&str>) -> Value {
    let brokerage = st.brokerage_for(replica);
    let message = match brokerage {
        Brokerage::Authenticated | Brokerage::HalfDead => "",
        Brokerage::Unauthenticated => "not authenticated",
        Brokerage::Competing => "competing session",
    };
    json!({
        "authenticated": brokerage.authenticated(),
        "established": brokerage.authenticated(),
        "competing": brokerage.competing(),
        "connected": true,
        "message": message,
        "MAC": "98:F2:B3:23:BF:A0",
        "serverInfo": { "serverName": SERVER_NAME, "serverVersion": SERVER_VERSION },
        "hardware_info": "a1b2c3d4|98:F2:B3:23:BF:A0",
        "fail": "",
    })
}

/// The `authStatus` body for the replica of `req`, which claims the session if nobody holds it.
fn status_for(shared: &Shared, req: &HttpRequest) -> Value {
    let mut st = shared.lock();
    let replica = replica_of(req);
    st.claim(replica.as_deref(), token_of(req));
    auth_status_body(&st, replica.as_deref())
}

/// `GET /iserver/auth/status`.
pub(super) async fn auth_status_get(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    shared.lock().counters.auth_status_get += 1;
    if let Some(res) = gate(&shared).await {
        return res;
    }
    HttpResponse::Ok().json(status_for(&shared, &req))
}

/// `POST /iserver/auth/status` (400 "Bad Request" when so configured).
pub(super) async fn auth_status_post(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    shared.lock().counters.auth_status_post += 1;
    if let Some(res) = gate(&shared).await {
        return res;
    }
    if shared.auth_status_post_rejected {
        return HttpResponse::BadRequest().body("Bad Request");
    }
    HttpResponse::Ok().json(status_for(&shared, &req))
}

/// Body of `ssodh/init`; every field is optional.
#[derive(Debug, Default, Deserialize)]
struct InitBody {
    /// Knock out competing sessions.
    #[serde(default)]
    compete: bool,
}

/// `POST /iserver/auth/ssodh/init`.
pub(super) async fn ssodh_init(
    req: HttpRequest,
    shared: web::Data<Shared>,
    body: web::Bytes,
) -> HttpResponse {
    shared.lock().counters.ssodh_init += 1;
    if let Some(res) = gate(&shared).await {
        return res;
    }
    let init = if body.iter().all(u8::is_ascii_whitespace) {
        InitBody::default()
    } else {
        match serde_json::from_slice::<InitBody>(&body) {
            Ok(init) => init,
            Err(err) => return error_json(400, &format!("Bad Request: {err}")),
        }
    };
    let mut st = shared.lock();
    if st.budgets.no_bridge.take().is_some() {
        return error_json(400, "no bridge");
    }
    if !st.login_approved {
        return error_json(401, "not authenticated");
    }
    let replica = replica_of(&req);
    if st.brokerage_for(replica.as_deref()).competing() && !init.compete {
        return HttpResponse::Ok().json(auth_status_body(&st, replica.as_deref()));
    }
    st.brokerage = Brokerage::Authenticated;
    if let Some(r) = &replica {
        st.establish_for(r, token_of(&req));
    }
    let mut body = auth_status_body(&st, replica.as_deref());
    body["passed"] = Value::Bool(true);
    HttpResponse::Ok().json(body)
}

/// `POST /iserver/reauthenticate`: restores the session only if 2FA is approved and no other
/// session competes.
pub(super) async fn reauthenticate(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    shared.lock().counters.reauthenticate += 1;
    if let Some(res) = gate(&shared).await {
        return res;
    }
    let mut st = shared.lock();
    if st.login_approved && !st.brokerage_for(replica_of(&req).as_deref()).competing() {
        st.brokerage = Brokerage::Authenticated;
    }
    HttpResponse::Ok().json(json!({ "message": "triggered" }))
}

/// `GET|POST /tickle`.
pub(super) async fn tickle(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    shared.lock().counters.tickle += 1;
    if let Some(res) = gate(&shared).await {
        return res;
    }
    let mut st = shared.lock();
    if st.budgets.tickle_unauthorized.take().is_some() {
        return error_json(401, "not authenticated");
    }
    if st.budgets.tickle_no_session.take().is_some() {
        return HttpResponse::Ok().json(json!({ "error": "no session" }));
    }
    let replica = replica_of(&req);
    st.claim(replica.as_deref(), token_of(&req));
    HttpResponse::Ok().json(json!({
        "session": st.session_id,
        "ssoExpires": 460_000,
        "collission": st.brokerage_for(replica.as_deref()).competing(),
        "userId": 12_345_678,
        "hmds": { "error": "no bridge" },
        "iserver": { "authStatus": auth_status_body(&st, replica.as_deref()) },
    }))
}

/// `GET /sso/validate`.
pub(super) async fn sso_validate(shared: web::Data<Shared>) -> HttpResponse {
    shared.lock().counters.sso_validate += 1;
    if let Some(res) = gate(&shared).await {
        return res;
    }
    HttpResponse::Ok().json(json!({
        "USER_ID": 12_345_678,
        "USER_NAME": shared.username,
        "RESULT": true,
        "AUTH_TIME": epoch_ms(),
        "SF_ENABLED": false,
        "IS_FREE_TRIAL": false,
        "CREDENTIAL": shared.username,
        "IP": "127.0.0.1",
        "EXPIRES": 415_000,
        "LANDING_APP": "UNIVERSAL",
        "IS_MASTER": false,
        "lastAccessed": epoch_ms(),
        "LOGIN_TYPE": 2,
        "PAPER_USER_NAME": shared.username,
        "region": "NJ",
    }))
}

/// `POST /logout`: ends the brokerage session (2FA approval is kept).
pub(super) async fn logout(shared: web::Data<Shared>) -> HttpResponse {
    shared.lock().counters.logout += 1;
    if let Some(res) = gate(&shared).await {
        return res;
    }
    shared.lock().lose_session(Brokerage::Unauthenticated);
    HttpResponse::Ok().json(json!({ "status": true }))
}

/// `GET /iserver/accounts` (empty while competing, 401 while unauthenticated).
pub(super) async fn accounts(shared: web::Data<Shared>) -> HttpResponse {
    shared.lock().counters.accounts += 1;
    if let Some(res) = gate(&shared).await {
        return res;
    }
    let st = shared.lock();
    let accounts: Vec<&str> = match st.brokerage {
        Brokerage::Authenticated | Brokerage::HalfDead => vec![ACCOUNT_ID],
        Brokerage::Competing => Vec::new(),
        Brokerage::Unauthenticated => return error_json(401, "not authenticated"),
    };
    HttpResponse::Ok().json(json!({
        "accounts": accounts,
        "acctProps": { ACCOUNT_ID: { "hasChildAccounts": false, "supportsCashQty": true,
            "supportsFractions": false, "allowCustomerTime": false } },
        "aliases": { ACCOUNT_ID: ACCOUNT_ID },
        "allowFeatures": { "showGFIS": true, "allowCrypto": false },
        "chartPeriods": {},
        "groups": [],
        "profiles": [],
        "selectedAccount": if accounts.is_empty() { "" } else { ACCOUNT_ID },
        "serverInfo": { "serverName": SERVER_NAME, "serverVersion": SERVER_VERSION },
        "sessionId": st.session_id,
        "isFT": false,
        "isPaper": true,
    }))
}
