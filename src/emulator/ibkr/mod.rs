//! The emulator's IBKR Client Portal Gateway half: the REST endpoints (mounted under
//! `/v1/api` and `/v1/portal`) and the WebSocket at `…/ws`, over the gateway state in
//! [`state`](crate::emulator::state).

mod rest;
mod smd;
mod socket;

use actix_web::web;

/// Registers the REST endpoints and the socket (mounted under `/v1/api` and `/v1/portal`).
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/iserver/auth/status", web::get().to(rest::auth_status_get))
        .route(
            "/iserver/auth/status",
            web::post().to(rest::auth_status_post),
        )
        .route("/iserver/auth/ssodh/init", web::post().to(rest::ssodh_init))
        .route(
            "/iserver/reauthenticate",
            web::post().to(rest::reauthenticate),
        )
        .route("/tickle", web::get().to(rest::tickle))
        .route("/tickle", web::post().to(rest::tickle))
        .route("/sso/validate", web::get().to(rest::sso_validate))
        .route("/sso/validate", web::post().to(rest::sso_validate))
        .route("/logout", web::post().to(rest::logout))
        .route("/iserver/accounts", web::get().to(rest::accounts))
        .route("/ws", web::get().to(socket::upgrade));
}
