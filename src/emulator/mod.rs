//! A fault-injecting emulator of the IBKR Client Portal Gateway (REST + WebSocket).
//!
//! [`Emulator::start`] runs the gateway on its own thread with its own actix System and returns
//! an [`EmulatorHandle`] once it listens. Faults are injected from code
//! ([`EmulatorHandle::inject`]), through the admin HTTP API on a separate listener
//! (`POST /admin/faults`, `GET /admin/counters`, `GET /admin/state`, `POST /admin/schedule`)
//! or from seeded schedules ([`FaultSchedule`]). Everything binds to loopback only, and no
//! client input can make it panic.

mod admin;
mod config;
mod control;
mod cookie;
mod counters;
mod faults;
mod gateway;
mod ibkr;
mod issued;
mod market;
mod schedule;
pub mod signalr;
mod state;
pub mod ticket;
mod tls;
mod wsframe;
mod wsloop;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

pub use config::{EmulatorConfig, StsStyle, TlsMode};
pub use counters::Counters;
pub use faults::Fault;
pub use issued::issued_secrets;
pub use schedule::FaultSchedule;
pub use state::EmulatorState;

use gateway::Gateway;
use state::ControlCmd;

/// Entry point of the emulator.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// Starts the emulator on its own thread with its own actix System; returns once both the
    /// gateway and the admin listener accept connections.
    ///
    /// # Errors
    ///
    /// Fails if an address is not loopback, a port cannot be bound, TLS cannot be set up (for
    /// example unreadable PEM files), or the emulator thread cannot start.
    pub fn start(config: EmulatorConfig) -> io::Result<EmulatorHandle> {
        for addr in [config.bind, config.admin_bind] {
            if !addr.ip().is_loopback() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the emulator binds to loopback only, not {addr}"),
                ));
            }
        }
        let tls = tls::setup(&config.tls)?;
        let gateway_listener = TcpListener::bind(config.bind)?;
        let admin = TcpListener::bind(config.admin_bind)?;
        let gateway_addr = gateway_listener.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let (control_tx, commands) = tokio::sync::mpsc::unbounded_channel();
        let gateway = Arc::new(Gateway::new(&config, control_tx));
        let (cert_pem, tls_config) = match tls {
            Some(setup) => (Some(setup.cert_pem), Some(setup.config)),
            None => (None, None),
        };
        let startup = control::Startup {
            gateway: Arc::clone(&gateway),
            gateway_listener,
            admin,
            tls: tls_config,
            commands,
        };
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("keepwire-emulator".to_owned())
            .spawn(move || control::thread_main(startup, ready_tx))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                let _ = thread.join();
                return Err(err);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(io::Error::other("emulator thread ended before listening"));
            }
        }
        tracing::info!(%gateway_addr, %admin_addr, "emulator listening");
        Ok(EmulatorHandle {
            inner: Arc::new(HandleInner {
                gateway,
                gateway_addr,
                admin_addr,
                ca_pem: cert_pem,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }
}

/// A handle on a running emulator: cheap to clone, usable from any thread. The emulator stops
/// when [`EmulatorHandle::stop`] is called or the last clone is dropped.
#[derive(Clone, Debug)]
pub struct EmulatorHandle {
    /// Shared with every clone.
    inner: Arc<HandleInner>,
}

/// What every clone of a handle shares.
#[derive(Debug)]
struct HandleInner {
    /// Emulator state.
    gateway: Arc<Gateway>,
    /// Gateway address.
    gateway_addr: SocketAddr,
    /// Admin address.
    admin_addr: SocketAddr,
    /// Certificate PEM when serving TLS.
    ca_pem: Option<String>,
    /// The emulator thread, until stopped.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl HandleInner {
    /// Stops the servers and joins the emulator thread (idempotent).
    fn stop(&self) {
        self.gateway.control(ControlCmd::Stop);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                tracing::error!("emulator thread panicked");
            }
        }
    }
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl EmulatorHandle {
    /// Base URL of the gateway: `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`
    /// (REST lives under `/v1/api`).
    pub fn base_url(&self) -> String {
        format!(
            "{}://{}",
            self.scheme("http", "https"),
            self.inner.gateway_addr
        )
    }

    /// URL of the socket: `ws://127.0.0.1:PORT/v1/api/ws` or `wss://…`.
    pub fn ws_url(&self) -> String {
        let scheme = self.scheme("ws", "wss");
        format!("{scheme}://{}/v1/api/ws", self.inner.gateway_addr)
    }

    /// `plain` or `secure`, as the gateway serves plain HTTP or TLS.
    fn scheme(&self, plain: &'static str, secure: &'static str) -> &'static str {
        if self.inner.ca_pem.is_some() {
            secure
        } else {
            plain
        }
    }

    /// URL of the SignalR market hub: `http://127.0.0.1:PORT/hubs/market` or `https://…`
    /// (negotiate at `…/negotiate`, the WebSocket at the same path with `ws`/`wss`).
    pub fn hub_url(&self) -> String {
        format!("{}{}", self.base_url(), signalr::HUB_PATH)
    }

    /// Base URL of the hub's token service: `http://127.0.0.1:PORT/api` or `https://…`
    /// (`POST …/Auth/loginKey`, `POST …/Auth/validate`).
    pub fn api_url(&self) -> String {
        format!("{}/api", self.base_url())
    }

    /// Base URL of the admin API: `http://127.0.0.1:ADMINPORT`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.inner.admin_addr)
    }

    /// Address of the gateway listener.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.inner.gateway_addr
    }

    /// Address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.inner.admin_addr
    }

    /// PEM of the certificate the gateway serves (to use as the client's CA file); `None` for
    /// plain HTTP.
    pub fn ca_pem(&self) -> Option<String> {
        self.inner.ca_pem.clone()
    }

    /// Applies a fault now.
    pub fn inject(&self, fault: Fault) {
        self.inner.gateway.inject(fault);
    }

    /// Applies each fault at its offset from now (see [`FaultSchedule::seeded`]).
    pub fn run_schedule(&self, schedule: Vec<(Duration, Fault)>) {
        self.inner
            .gateway
            .control(ControlCmd::RunSchedule(schedule));
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.inner.gateway.counters()
    }

    /// When every ticket socket upgrade so far was attempted (admitted or not), for a reconnect
    /// storm's report.
    pub fn ticket_upgrade_attempts(&self) -> Vec<tokio::time::Instant> {
        self.inner.gateway.ticket_upgrade_attempts()
    }

    /// A snapshot of the session and auth state.
    pub fn state(&self) -> EmulatorState {
        self.inner.gateway.snapshot()
    }

    /// The current gateway session id (what tickle returns).
    pub fn session_id(&self) -> String {
        self.inner.gateway.ibkr.lock().session_id.clone()
    }

    /// Stops both servers and the emulator thread; blocks until the thread ended. Idempotent.
    pub fn stop(&self) {
        self.inner.stop();
    }
}
