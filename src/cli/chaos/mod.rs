//! `keepwire chaos`: fault schedules against keepwire, with invariants checked all along.
//!
//! * `--sim` ([`sim`]): the deterministic simulator, millions of schedules in virtual time;
//! * `--storm` ([`storm`]): every stream loses its socket at once against a gateway that admits
//!   only so many upgrades a second;
//! * otherwise ([`live`]): supervised streams over real sockets against the emulator in this
//!   process, a seeded schedule of the emulator's faults, the invariants of [`checks`];
//! * `--proxy-to HOST:PORT` (`proxy`, feature `proxy`): a TCP fault proxy in front of any
//!   gateway, with a seeded schedule of Toxiproxy's toxics;
//! * `--ha` ([`ha`], feature `ha`): active/standby `keepwire run` replicas on an etcd lease, a
//!   seeded schedule of leader faults (SIGKILL, SIGSTOP/SIGCONT, SIGTERM, cut from etcd), the
//!   invariants of [`ha_cluster::Checker`].

mod checks;
#[cfg(feature = "ha")]
mod ha;
// Shared with tests/ha.rs (`#[path]`): some of it serves the tests only.
#[cfg(feature = "ha")]
#[allow(dead_code)]
mod ha_cluster;
mod html;
mod live;
#[cfg(feature = "ha")]
mod loopback_http;
#[cfg(feature = "proxy")]
mod proxy;
mod sim;
mod storm;

use std::process::ExitCode;

pub use live::capture_logs;

/// Which dialects a live run mixes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialectChoice {
    /// IBKR Client Portal Gateway streams.
    Ibkr,
    /// Ticket WebSocket streams.
    Ticket,
    /// SignalR hub streams.
    Signalr,
    /// All three, in turn.
    All,
}

/// Arguments of `keepwire chaos`.
#[derive(clap::Args, Debug)]
pub struct ChaosArgs {
    /// Run the deterministic simulator (virtual time, model gateways) instead of real sockets.
    #[arg(long)]
    sim: bool,
    /// Simulator: how many schedules to explore.
    #[arg(long, default_value_t = 20_000)]
    schedules: u64,
    /// Simulator: faults per schedule (default 20). Live: faults to inject (default 100).
    #[arg(long)]
    faults: Option<usize>,
    /// The seed: the same seed gives the same schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Live: a recovery bound in milliseconds instead of the one derived from the streams'
    /// settings. For seeing the recovery checker fire; hidden from `--help`.
    #[arg(long, hide = true)]
    recovery_bound_ms: Option<u64>,
    /// Simulator: replay one schedule by its own seed (as printed with a violation).
    #[arg(long)]
    replay: Option<u64>,
    /// Live: the dialects of the streams.
    #[arg(long, value_enum, default_value_t = DialectChoice::All)]
    dialect: DialectChoice,
    /// Live: how many supervised streams.
    #[arg(long, default_value_t = 6)]
    streams: usize,
    /// Live: stop injecting after this many seconds, even if faults remain.
    #[arg(long)]
    duration: Option<u64>,
    /// Proxy mode: put a TCP fault proxy (Toxiproxy's toxics) in front of the gateway at
    /// HOST:PORT (a real one, or `keepwire emulate`), and apply `--faults` seeded toxics (default
    /// 20) once keepwire connects through it.
    #[arg(long, value_name = "HOST:PORT")]
    proxy_to: Option<String>,
    /// Proxy mode: where the proxy listens (loopback only; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Live: also write a self-contained HTML page of the run (timeline per stream, recovery
    /// histogram, violations) to this path.
    #[arg(long, value_name = "PATH")]
    report: Option<std::path::PathBuf>,
    /// A reconnect storm: every stream (ticket dialect) loses its socket at once against a
    /// gateway admitting `--admission` upgrades a second.
    #[arg(long)]
    storm: bool,
    /// Storm: upgrades the gateway admits per second (beyond: 429 with `Retry-After: 1`).
    #[arg(long, default_value_t = 200)]
    admission: u32,
    /// HA (feature `ha`): `--replicas` `keepwire run` processes on an etcd lease (etcd from PATH,
    /// started on loopback), one brokerage session per user in the emulator, and `--failovers`
    /// seeded faults on the leader (SIGKILL, SIGSTOP/SIGCONT, SIGTERM, cut from etcd).
    #[arg(long)]
    ha: bool,
    /// HA: how many replicas.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// HA: how many leader faults to inject.
    #[arg(long, default_value_t = 8)]
    failovers: usize,
    /// HA: the lease TTL in whole seconds (a leader fences itself after half of it).
    #[arg(long, default_value_t = 3)]
    ttl: u64,
}

impl ChaosArgs {
    /// Whether this run goes over real sockets (its logs are captured and scanned).
    pub fn is_live(&self) -> bool {
        !self.sim && self.proxy_to.is_none() && !self.ha
    }
}

/// Prints `report` as one JSON object on the last stdout line when asked, and gives the exit
/// status: 1 when an invariant broke.
fn finish(json: bool, report: &impl serde::Serialize, broken: bool) -> ExitCode {
    if json {
        match serde_json::to_string(report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("report: {e}"),
        }
    }
    if broken {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs `keepwire chaos`.
pub async fn run(args: ChaosArgs) -> ExitCode {
    if let Some(upstream) = &args.proxy_to {
        return run_proxy(&args, upstream).await;
    }
    if args.ha {
        return run_ha(&args).await;
    }
    if args.sim {
        sim::run(&args)
    } else if args.storm {
        storm::run(&args).await
    } else {
        live::run(&args).await
    }
}

#[cfg(feature = "proxy")]
async fn run_proxy(args: &ChaosArgs, upstream: &str) -> ExitCode {
    proxy::run(args, upstream).await
}

#[cfg(not(feature = "proxy"))]
async fn run_proxy(_args: &ChaosArgs, _upstream: &str) -> ExitCode {
    eprintln!(
        "keepwire chaos --proxy-to: this keepwire was built without its fault proxy; \
         build it with `cargo build --features proxy` (or `cargo install keepwire --features proxy`)"
    );
    ExitCode::from(2)
}

#[cfg(feature = "ha")]
async fn run_ha(args: &ChaosArgs) -> ExitCode {
    ha::run(args).await
}

#[cfg(not(feature = "ha"))]
async fn run_ha(_args: &ChaosArgs) -> ExitCode {
    eprintln!(
        "keepwire chaos --ha: this keepwire was built without HA (etcd leases); \
         build it with `cargo build --features ha` (or `cargo install keepwire --features ha`)"
    );
    ExitCode::from(2)
}
