//! The `keepwire` binary: `run` (the sidecar), `doctor` (the troubleshooting checklist), `demo`
//! (emulator + supervisor in one process, faults injected) and `emulate` (the fault-injecting
//! gateway alone). Logs go to stderr (`RUST_LOG` filters them; `--log-format json` for machines).

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// keepwire keeps authenticated streaming connections to broker gateways alive.
#[derive(Parser)]
#[command(name = "keepwire", version, about)]
struct Args {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the emulator and a supervisor in one process (`--dialect ibkr|ticket|signalr`), inject
    /// every fault of that dialect, and print a summary. Exits 0 only when every fault was
    /// recovered from and every subscription is active at the end.
    Demo(cli::demo::DemoArgs),
    /// Supervise the streams of a configuration file: data and state as NDJSON on stdout,
    /// `/metrics`, `/healthz`, `/readyz`, `/status` on `[http].listen`.
    Run(cli::run::RunArgs),
    /// Run seed 001's troubleshooting checklist against every stream of a configuration file.
    Doctor(cli::doctor::DoctorArgs),
    /// Run the fault-injecting gateway emulator (IBKR, ticket API, SignalR hub) alone.
    Emulate(cli::emulate::EmulateArgs),
    /// Inject seeded faults into supervised streams over real sockets against the emulator
    /// (`--sim`: explore schedules in the deterministic simulator instead) and check the
    /// invariants all along. Exits 1 when any is broken.
    Chaos(cli::chaos::ChaosArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A sidecar and an emulator report what they do; the demo and doctor print their own output.
    // A live chaos run keeps keepwire's logs in memory, where it scans them for secrets.
    let live_chaos = matches!(&args.command, Command::Chaos(a) if a.is_live());
    let default_filter = match args.command {
        _ if live_chaos => "keepwire=debug,keepwire::emulator=warn",
        Command::Run(_) | Command::Emulate(_) => "keepwire=info",
        Command::Demo(_) | Command::Doctor(_) | Command::Chaos(_) => "keepwire=error",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match args.log_format {
        _ if live_chaos => logs
            .with_writer(cli::chaos::capture_logs())
            .with_ansi(false)
            .init(),
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    // An actix system: awc and the emulator need one; tokio tasks and signals work inside it.
    let runtime = actix_rt::System::new();
    runtime.block_on(async {
        match args.command {
            Command::Demo(a) => cli::demo::run(a).await,
            Command::Run(a) => cli::run::run(a).await,
            Command::Doctor(a) => cli::doctor::run(a).await,
            Command::Emulate(a) => cli::emulate::run(a).await,
            Command::Chaos(a) => cli::chaos::run(a).await,
        }
    })
}
