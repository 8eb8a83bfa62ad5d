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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keepwire: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match args.command {
            Command::Demo(a) => cli::demo::run(a).await,
            Command::Emulate(a) => cli::emulate::run(a).await,
        }
    })
}
