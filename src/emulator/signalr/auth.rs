//! The token service: `POST /api/Auth/loginKey` and `POST /api/Auth/validate`, shaped like a
//! futures broker's API (failures of `loginKey` are HTTP 200 with `success:false`).

use std::collections::HashMap;

use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::Hub;

/// `errorCode` of a login with an unknown user or a wrong key.
pub(crate) const ERROR_INVALID_CREDENTIALS: u32 = 3;
/// `errorCode` of a request whose body is not the expected JSON.
pub(crate) const ERROR_BAD_REQUEST: u32 = 1;

/// The bearer token of a request: `Authorization: Bearer <token>`, else the `access_token`
/// query parameter (what browsers and the WebSocket transport use).
pub(crate) fn bearer(req: &HttpRequest) -> Option<String> {
    header_bearer(req.headers()).or_else(|| query_param(req, "access_token"))
}

/// The token of an `Authorization: Bearer` header (scheme case-insensitive).
fn header_bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// One decoded query parameter.
pub(crate) fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()?
        .into_inner()
        .remove(name)
        .filter(|v| !v.is_empty())
}

/// A `loginKey` failure (HTTP 200, as the real API answers).
fn login_failed(code: u32, message: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "token": null,
        "success": false,
        "errorCode": code,
        "errorMessage": message,
    }))
}

/// `POST /api/Auth/loginKey` with `{"userName":…,"apiKey":…}`.
pub(crate) async fn login_key(hub: web::Data<Hub>, body: web::Bytes) -> HttpResponse {
    let parsed = serde_json::from_slice::<Value>(&body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let (Some(user), Some(key)) = (field("userName"), field("apiKey")) else {
        hub.count(|c| {
            c.logins += 1;
            c.logins_rejected += 1;
        });
        return login_failed(ERROR_BAD_REQUEST, "userName and apiKey are required");
    };
    match hub.login(&user, &key) {
        Some(token) => HttpResponse::Ok().json(json!({
            "token": token,
            "success": true,
            "errorCode": 0,
            "errorMessage": null,
        })),
        None => login_failed(ERROR_INVALID_CREDENTIALS, "Invalid user name or API key"),
    }
}

/// `POST /api/Auth/validate` with `Authorization: Bearer <token>`: a new token, or 401.
pub(crate) async fn validate(req: HttpRequest, hub: web::Data<Hub>) -> HttpResponse {
    let token = header_bearer(req.headers());
    match hub.validate(token.as_deref()) {
        Some(new_token) => HttpResponse::Ok().json(json!({
            "success": true,
            "errorCode": 0,
            "errorMessage": null,
            "newToken": new_token,
        })),
        None => HttpResponse::Unauthorized().finish(),
    }
}
