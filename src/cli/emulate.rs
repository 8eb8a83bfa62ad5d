//! `keepwire emulate`: the fault-injecting IBKR gateway alone, for testing other clients.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use keepwire::emulator::{Emulator, EmulatorConfig, Fault, FaultSchedule, TlsMode};

/// Options of `keepwire emulate`.
#[derive(Args, Debug)]
pub struct EmulateArgs {
    /// Gateway address (loopback only).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Admin API address.
    #[arg(long, default_value = "127.0.0.1:5001")]
    pub admin: SocketAddr,
    /// Serve TLS with a generated self-signed certificate (its path is printed).
    #[arg(long)]
    pub tls: bool,
    /// Serve TLS with this PEM certificate chain, leaf first (with --key), instead of a
    /// generated one.
    #[arg(long, requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// The PEM private key of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// Inject every IBKR fault at seeded random times (see --chaos-secs).
    #[arg(long)]
    pub chaos_seed: Option<u64>,
    /// The window over which --chaos-seed spreads its faults.
    #[arg(long, default_value_t = 60)]
    pub chaos_secs: u64,
    /// Seconds between socket heartbeats.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Start with 2FA not yet approved.
    #[arg(long)]
    pub login_pending: bool,
}

/// Runs until interrupted.
pub async fn run(args: EmulateArgs) -> ExitCode {
    let tls = match (args.cert, args.key) {
        (Some(cert), Some(key)) => TlsMode::Files { cert, key },
        _ if args.tls => TlsMode::SelfSigned,
        _ => TlsMode::Plain,
    };
    let config = EmulatorConfig {
        bind: args.listen,
        admin_bind: args.admin,
        tls: tls.clone(),
        heartbeat_interval: Duration::from_secs(args.heartbeat_secs.max(1)),
        login_approved: !args.login_pending,
        ..EmulatorConfig::default()
    };
    let emu = match Emulator::start(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("keepwire emulate: cannot start: {e} (is the port in use? choose another with --listen)");
            return ExitCode::FAILURE;
        }
    };
    println!("gateway  {}/v1/api", emu.base_url());
    println!("socket   {}", emu.ws_url());
    println!("admin    {}  (POST /admin/faults, GET /admin/counters, GET /admin/state, POST /admin/schedule)", emu.admin_url());
    if let TlsMode::Files { cert, .. } = &tls {
        println!("cert     {}", cert.display());
    } else if let Some(pem) = emu.ca_pem() {
        let path = std::env::temp_dir().join(format!(
            "keepwire-emulator-{}.pem",
            emu.gateway_addr().port()
        ));
        match std::fs::write(&path, pem) {
            Ok(()) => println!("cert     {}", path.display()),
            Err(e) => eprintln!("cannot write the certificate to {}: {e}", path.display()),
        }
    }
    if let Some(seed) = args.chaos_seed {
        let schedule = FaultSchedule::seeded(
            seed,
            Duration::from_secs(args.chaos_secs.max(1)),
            chaos_faults(),
        );
        for (at, fault) in &schedule {
            println!(
                "chaos    +{:>6} ms  {}",
                at.as_millis(),
                serde_json::to_string(fault).unwrap_or_default()
            );
        }
        emu.run_schedule(schedule);
    }
    // Runs until the process is interrupted.
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}

/// One of every recoverable IBKR fault, for `--chaos-seed`.
fn chaos_faults() -> Vec<Fault> {
    vec![
        Fault::SessionLost,
        Fault::RejectUpgrade {
            status: 401,
            count: 1,
        },
        Fault::DropSockets,
        Fault::TickleNoSession { count: 1 },
        Fault::NoBridge { count: 1 },
        Fault::CompetingSession,
        Fault::GatewayDown { millis: 2000 },
        Fault::ServerError {
            status: 503,
            count: 2,
        },
        Fault::RateLimit { millis: 1500 },
        Fault::HeartbeatSilence,
        Fault::SmdSilentEnd,
        Fault::RotateSession,
        Fault::NonUtf8Frame,
        Fault::FragmentedMessage,
        Fault::MalformedFrame,
        Fault::CloseSockets {
            code: 1011,
            reason: "chaos".into(),
        },
    ]
}
