//! The admin HTTP API (plain HTTP on its own listener, so it survives `GatewayDown`).

use actix_web::{web, HttpResponse};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::faults::Fault;
use super::gateway::Gateway;
use super::schedule::FaultSchedule;
use super::state::ControlCmd;

/// Registers the admin endpoints.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/faults", web::post().to(post_fault))
        .route("/admin/counters", web::get().to(get_counters))
        .route("/admin/state", web::get().to(get_state))
        .route("/admin/schedule", web::post().to(post_schedule));
}

/// Parses a JSON body.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body)
}

/// The 400 answer carrying the serde error.
fn bad_request(err: &serde_json::Error) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "ok": false, "error": err.to_string() }))
}

/// `POST /admin/faults`: one [`Fault`] as JSON, applied now.
async fn post_fault(gateway: web::Data<Gateway>, body: web::Bytes) -> HttpResponse {
    match parse::<Fault>(&body) {
        Ok(fault) => {
            gateway.inject(fault);
            HttpResponse::Ok().json(json!({ "ok": true }))
        }
        Err(err) => bad_request(&err),
    }
}

/// `GET /admin/counters`.
async fn get_counters(gateway: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().json(gateway.counters())
}

/// `GET /admin/state`.
async fn get_state(gateway: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().json(gateway.snapshot())
}

/// `POST /admin/schedule`: a [`FaultSchedule`]; answers the offsets chosen.
async fn post_schedule(gateway: web::Data<Gateway>, body: web::Bytes) -> HttpResponse {
    match parse::<FaultSchedule>(&body) {
        Ok(schedule) => {
            let entries = schedule.entries();
            let listed: Vec<_> = entries
                .iter()
                .map(|(at, fault)| json!({ "at_ms": at.as_millis(), "fault": fault }))
                .collect();
            gateway.control(ControlCmd::RunSchedule(entries));
            HttpResponse::Ok().json(json!({ "ok": true, "scheduled": listed }))
        }
        Err(err) => bad_request(&err),
    }
}
