//! The emulator thread: starts the gateway and admin servers, then serves control commands
//! (gateway down/up, schedules, stop).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use rustls::ServerConfig;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep_until, Instant};

use super::faults::Fault;
use super::gateway::Gateway;
use super::state::{deadline_after, sleep_until_opt, ControlCmd, SocketCmd};
use super::{admin, ibkr, signalr, ticket};

/// How long to keep retrying to re-bind the gateway port after a `GatewayDown`.
const REBIND_ATTEMPTS: u32 = 100;
/// Pause between re-bind attempts.
const REBIND_PAUSE: Duration = Duration::from_millis(20);

/// What the emulator thread needs to start.
pub(crate) struct Startup {
    /// The halves' state.
    pub(crate) gateway: Arc<Gateway>,
    /// Bound gateway listener.
    pub(crate) gateway_listener: TcpListener,
    /// Bound admin listener.
    pub(crate) admin: TcpListener,
    /// TLS config of the gateway, if any.
    pub(crate) tls: Option<ServerConfig>,
    /// Control commands.
    pub(crate) commands: UnboundedReceiver<ControlCmd>,
}

/// Body of the emulator thread: runs an actix System until told to stop. Reports on `ready`
/// once both servers listen (or why they could not start).
pub(crate) fn thread_main(startup: Startup, ready: std_mpsc::Sender<io::Result<()>>) {
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        match Controller::start(startup) {
            Ok(controller) => {
                let _ = ready.send(Ok(()));
                controller.run().await;
            }
            Err(err) => {
                let _ = ready.send(Err(err));
            }
        }
    });
}

/// Starts the gateway server on a bound listener.
fn start_gateway(
    gateway: &Gateway,
    listener: TcpListener,
    tls: Option<&ServerConfig>,
) -> io::Result<ServerHandle> {
    let ibkr_data = web::Data::from(Arc::clone(&gateway.ibkr));
    let hub_data = web::Data::from(Arc::clone(&gateway.hub));
    let ticket_data = web::Data::from(Arc::clone(&gateway.ticket));
    let routes = move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(ibkr_data.clone())
            .app_data(hub_data.clone())
            .app_data(ticket_data.clone())
            .service(web::scope("/v1/api").configure(ibkr::routes))
            .service(web::scope("/v1/portal").configure(ibkr::routes))
            .configure(signalr::routes)
            .configure(ticket::routes);
    };
    let server = match tls {
        Some(config) => https_http1_only(routes, listener, config.clone())?,
        None => HttpServer::new(move || App::new().configure(routes.clone()))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(0)
            .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
            .listen(listener)?
            .run(),
    };
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(handle)
}

/// When a socket task ends (the client's close answered, a close or drop fault), the connection
/// must end at once, as the real gateway's does. By default actix-http lingers on a connection
/// whose request payload (the socket's input) was not read to the end, for up to this timeout, so
/// the FIN came 0.6–1 s late: clients that rely on it to stop their reader (ibind's
/// websocket-client after its own close) hung, and drops were seen late.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::ZERO;

/// Serves the routes over TLS speaking HTTP/1.1 only, with ALPN offering `http/1.1` alone.
///
/// actix-web's `listen_rustls_0_23` always prepends `h2` to the ALPN list when actix-http's
/// `http2` feature is on (awc turns it on), and then serves HTTP/2 through the h2 crate. The
/// emulator must never do that (h2 is not vetted: RUSTSEC-2026-0258), so its TLS listener is an
/// actix-http HTTP/1 service built here.
fn https_http1_only(
    routes: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    listener: TcpListener,
    mut config: ServerConfig,
) -> io::Result<actix_web::dev::Server> {
    use actix_http::HttpService;
    use actix_service::IntoServiceFactory;
    use actix_web::dev::AppConfig;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(actix_web::dev::Server::build()
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen("keepwire-emulator-https", listener, move || {
            let app = App::new().configure(routes.clone()).into_factory();
            HttpService::build()
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                // The app config only feeds `connection_info`/`url_for`, which the emulator does
                // not use (actix-web keeps the constructor with the real address private).
                .h1(actix_service::map_config(app, |_| AppConfig::default()))
                .rustls_0_23(config.clone())
        })?
        .run())
}

/// Starts the admin server on a bound listener.
fn start_admin(gateway: &Arc<Gateway>, listener: TcpListener) -> io::Result<ServerHandle> {
    let data = web::Data::from(Arc::clone(gateway));
    let server =
        HttpServer::new(move || App::new().app_data(data.clone()).configure(admin::routes))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(0)
            .listen(listener)?
            .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(handle)
}

/// Binds the gateway port again, retrying while the old socket lingers.
async fn rebind(addr: SocketAddr) -> io::Result<TcpListener> {
    let mut attempt = 0;
    loop {
        match TcpListener::bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(err) if attempt + 1 >= REBIND_ATTEMPTS => return Err(err),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(REBIND_PAUSE).await;
            }
        }
    }
}

/// Applies timed faults from now on.
async fn run_schedule(gateway: Arc<Gateway>, entries: Vec<(Duration, Fault)>) {
    let start = std::time::Instant::now();
    for (at, fault) in entries {
        let at = start.checked_add(at).unwrap_or_else(|| deadline_after(at));
        sleep_until(Instant::from_std(at)).await;
        gateway.inject(fault);
    }
}

/// Whether the gateway listener is up, and when it comes back if not.
enum Listener {
    /// Listening.
    Up(ServerHandle),
    /// Down until this instant.
    Down(Instant),
}

/// Owns the servers on the emulator thread.
struct Controller {
    /// The halves' state.
    gateway: Arc<Gateway>,
    /// Gateway address (re-bound after a `GatewayDown`).
    gateway_addr: SocketAddr,
    /// Gateway TLS config.
    tls: Option<ServerConfig>,
    /// Gateway server state.
    listener: Listener,
    /// Admin server.
    admin: ServerHandle,
    /// Control commands.
    commands: UnboundedReceiver<ControlCmd>,
}

impl Controller {
    /// Starts both servers.
    fn start(startup: Startup) -> io::Result<Self> {
        let gateway_addr = startup.gateway_listener.local_addr()?;
        let listener = start_gateway(
            &startup.gateway,
            startup.gateway_listener,
            startup.tls.as_ref(),
        )?;
        let admin = start_admin(&startup.gateway, startup.admin)?;
        Ok(Self {
            gateway: startup.gateway,
            gateway_addr,
            tls: startup.tls,
            listener: Listener::Up(listener),
            admin,
            commands: startup.commands,
        })
    }

    /// Serves commands until `Stop` (or every sender is gone).
    async fn run(mut self) {
        loop {
            let down_until = match &self.listener {
                Listener::Down(until) => Some(*until),
                Listener::Up(_) => None,
            };
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None | Some(ControlCmd::Stop) => break,
                    Some(ControlCmd::GatewayDown(downtime)) => self.take_down(downtime).await,
                    Some(ControlCmd::RunSchedule(entries)) => {
                        actix_web::rt::spawn(run_schedule(Arc::clone(&self.gateway), entries));
                    }
                },
                () = sleep_until_opt(down_until) => self.bring_up().await,
            }
        }
        if let Listener::Up(handle) = &self.listener {
            handle.stop(false).await;
        }
        self.admin.stop(false).await;
        tracing::info!("emulator stopped");
    }

    /// Stops the gateway listener (dropping every socket) for `downtime`.
    async fn take_down(&mut self, downtime: Duration) {
        let Listener::Up(handle) = &self.listener else {
            return;
        };
        let handle = handle.clone();
        tracing::info!(?downtime, "emulator: gateway down");
        self.listener = Listener::Down(Instant::from_std(deadline_after(downtime)));
        // Completes once the listener is closed (connections are refused from then on); the
        // worker drops every connection, the broadcast only makes sure no socket task lingers.
        handle.stop(false).await;
        let mut st = self.gateway.ibkr.lock();
        st.gateway_up = false;
        st.broadcast(&SocketCmd::Drop);
    }

    /// Listens again on the same port with a fresh, authenticated session.
    async fn bring_up(&mut self) {
        let started = match rebind(self.gateway_addr).await {
            Ok(listener) => {
                self.gateway.ibkr.lock().restart_session();
                start_gateway(&self.gateway, listener, self.tls.as_ref())
            }
            Err(err) => Err(err),
        };
        match started {
            Ok(handle) => {
                self.gateway.ibkr.lock().gateway_up = true;
                self.listener = Listener::Up(handle);
                tracing::info!("emulator: gateway up");
            }
            Err(err) => {
                tracing::error!(%err, "emulator: cannot listen again; retrying");
                self.listener = Listener::Down(Instant::now() + Duration::from_millis(500));
            }
        }
    }
}
