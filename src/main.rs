//! The `keepwire` binary: `demo` (emulator + supervisor in one process, faults injected) and
//! `emulate` (the fault-injecting gateway alone).

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// keepwire keeps authenticated streaming connections to broker gateways alive.
#[derive(Parser)]
#[command(name = "keepwire", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the IBKR gateway emulator and a supervisor in one process, inject every IBKR fault,
    /// and print a summary. Exits 0 only when every fault was recovered from.
    Demo(cli::demo::DemoArgs),
    /// Supervise the streams of a configuration file: data and state as NDJSON on stdout,
    /// `/metrics`, `/healthz`, `/readyz`, `/status` on `[http].listen`.
    Run(cli::run::RunArgs),
    /// Run seed 001's troubleshooting checklist against every stream of a configuration file.
    Doctor(cli::doctor::DoctorArgs),
    /// Run the fault-injecting IBKR gateway emulator alone.
    Emulate(cli::emulate::EmulateArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "keepwire=error".into()),
        )
        .init();
    // An actix system: awc and the emulator need one; tokio tasks and signals work inside it.
    let runtime = actix_rt::System::new();
    runtime.block_on(async {
        match args.command {
            Command::Demo(a) => cli::demo::run(a).await,
            Command::Run(a) => cli::run::run(a).await,
            Command::Doctor(a) => cli::doctor::run(a).await,
            Command::Emulate(a) => cli::emulate::run(a).await,
        }
    })
}
