//! The operator's HTTP endpoints of `keepwire run`: `/metrics`, `/healthz`, `/readyz`, `/status`.

use std::net::SocketAddr;

use actix_web::{web, App, HttpResponse, HttpServer};
use keepwire::Handle;
use serde_json::json;

async fn metrics(kw: web::Data<Handle>) -> HttpResponse {
    match prometheus::TextEncoder::new().encode_to_string(&kw.registry().gather()) {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(e) => HttpResponse::InternalServerError().body(format!("cannot encode metrics: {e}")),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// 200 only when every stream is Ready with all its subscriptions active, or a standby (HA: the
/// replica does not hold the lease; listed under `standby`); else 503 with reasons.
async fn readyz(kw: web::Data<Handle>) -> HttpResponse {
    let status = kw.status_now();
    let not_ready: Vec<_> = status
        .streams
        .iter()
        .filter(|(_, s)| !s.is_fully_ready() && s.state != keepwire::StreamState::Standby)
        .map(|(name, s)| {
            let why = match &s.state {
                keepwire::StreamState::Ready => format!(
                    "{} of {} subscriptions active",
                    s.subscriptions.active, s.subscriptions.desired
                ),
                keepwire::StreamState::Failed { reason } => format!("failed: {reason}"),
                keepwire::StreamState::AwaitingLogin { remedy } => {
                    format!("awaiting login: {remedy}")
                }
                other => match &s.last_failure {
                    Some(f) => format!("{}: {}", other.as_str(), f.message),
                    None => other.as_str().to_string(),
                },
            };
            json!({"stream": name, "state": s.state.as_str(), "reason": why})
        })
        .collect();
    // An exclusive stream on a standby replica (HA) is where it should be: ready, and listed.
    let standby: Vec<_> = status
        .streams
        .iter()
        .filter(|(_, s)| s.state == keepwire::StreamState::Standby)
        .map(|(name, _)| name.clone())
        .collect();
    if not_ready.is_empty() && !status.streams.is_empty() {
        if standby.is_empty() {
            HttpResponse::Ok().json(json!({"ready": true}))
        } else {
            HttpResponse::Ok().json(json!({"ready": true, "standby": standby}))
        }
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"ready": false, "streams": not_ready}))
    }
}

async fn status(kw: web::Data<Handle>) -> HttpResponse {
    HttpResponse::Ok().json(kw.status_now())
}

/// Serves the endpoints on `addr` from a thread of its own until the process ends; returns the
/// bound address once listening.
pub fn serve(kw: Handle, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("keepwire-http".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            let data = web::Data::new(kw);
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .route("/metrics", web::get().to(metrics))
                    .route("/healthz", web::get().to(healthz))
                    .route("/readyz", web::get().to(readyz))
                    .route("/status", web::get().to(status))
            })
            .workers(1)
            .disable_signals()
            .bind(addr);
            match server {
                Ok(server) => {
                    let _ = tx.send(Ok(server.addrs().first().copied().unwrap_or(addr)));
                    if let Err(e) = system.block_on(server.run()) {
                        tracing::error!(error = %e, "HTTP endpoints stopped");
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    rx.recv()
        .map_err(|_| std::io::Error::other("HTTP thread ended before listening"))?
}
