//! keepwire from a plain `#[tokio::main]` program: supervise an IBKR stream (here against the
//! built-in emulator), print a few market-data events, survive a fault, and shut down.
//!
//! Run with `cargo run --example quickstart`. It exits by itself.

use std::time::Duration;

use keepwire::emulator::{Emulator, EmulatorConfig, Fault};
use keepwire::{Event, Handle, StreamConfig, Subscription};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // keepwire logs through `tracing`; RUST_LOG=keepwire=debug shows what it does.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "keepwire=info".into()),
        )
        .init();
    // A gateway to talk to: the fault-injecting emulator on 127.0.0.1.
    let gateway = Emulator::start(EmulatorConfig {
        heartbeat_interval: Duration::from_secs(1),
        ..Default::default()
    })?;

    // One supervised stream. keepwire runs its actors on a thread of its own.
    let mut ibkr = StreamConfig::ibkr("ibkr", gateway.base_url());
    ibkr.heartbeat_timeout = Duration::from_secs(5);
    let kw = Handle::builder().stream(ibkr).start()?;

    let mut quotes = kw
        .subscribe(
            "ibkr",
            Subscription::market_data(265598, ["31", "84", "86"]),
        )
        .await?;
    let mut status = kw.status();

    let mut printed = 0;
    let mut injected = false;
    while let Some(event) = quotes.recv().await {
        match event {
            Event::Data { topic, data } => {
                println!(
                    "{topic}: last={} bid={} ask={}",
                    data["31"], data["84"], data["86"]
                );
                printed += 1;
            }
            Event::State { topic, state } => println!("{topic} is now {state:?}"),
        }
        if printed == 5 && !injected {
            injected = true;
            // The gateway says the brokerage session is gone: keepwire re-establishes it,
            // rebuilds the socket and resubscribes, without the program doing anything.
            gateway.inject(Fault::SessionLost);
        }
        if printed == 10 {
            break;
        }
    }
    let s = status
        .wait_for(|s| s.stream("ibkr").is_some_and(|s| s.recoveries >= 1))
        .await?
        .clone();
    println!("status: {}", serde_json::to_string(&s)?);

    kw.shutdown().await;
    gateway.stop();
    Ok(())
}
