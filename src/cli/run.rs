//! `keepwire run --config keepwire.toml`: the sidecar. Data and state changes go to stdout as
//! NDJSON, logs to stderr, operator endpoints to `[http].listen`; SIGINT/SIGTERM stop cleanly.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use keepwire::config_file;
use keepwire::{Event, Handle, StreamStatus};
use serde_json::json;

/// Options of `keepwire run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Writes one NDJSON line to stdout (whole lines only, never interleaved).
fn emit(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn status_line(stream: &str, s: &StreamStatus) -> serde_json::Value {
    let mut v = json!({
        "stream": stream,
        "status": s.state.as_str(),
        "attempt": s.attempt,
        "subscriptions": s.subscriptions,
    });
    match &s.state {
        keepwire::StreamState::Failed { reason } => v["reason"] = json!(reason),
        keepwire::StreamState::AwaitingLogin { remedy } => v["remedy"] = json!(remedy),
        _ => {}
    }
    if let Some(f) = &s.last_failure {
        v["last_failure"] = json!(f.reason);
    }
    v
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> ExitCode {
    let config = match config_file::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keepwire run: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Handle::builder().const_labels(config.const_labels.clone());
    for (stream, _) in &config.streams {
        builder = builder.stream(stream.clone());
    }
    if let Some(ha) = config.ha.clone() {
        builder = builder.ha(ha);
    }
    let kw = match builder.start() {
        Ok(kw) => kw,
        Err(e) => {
            eprintln!("keepwire run: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = config.listen {
        match super::http::serve(kw.clone(), addr) {
            Ok(bound) => tracing::info!(%bound, "serving /metrics /healthz /readyz /status"),
            Err(e) => {
                eprintln!("keepwire run: cannot listen on {addr}: {e} (is the port in use? change [http] listen)");
                kw.shutdown().await;
                return ExitCode::FAILURE;
            }
        }
    }
    for (stream, subs) in config.streams {
        for sub in subs {
            let rx = match kw.subscribe(&stream.name, sub.clone()).await {
                Ok(rx) => rx,
                Err(e) => {
                    eprintln!("keepwire run: {e}");
                    kw.shutdown().await;
                    return ExitCode::FAILURE;
                }
            };
            let name = stream.name.clone();
            tokio::spawn(async move {
                let mut rx = rx;
                while let Some(event) = rx.recv().await {
                    if let Event::Data { topic, data } = event {
                        emit(&json!({"stream": name, "topic": &*topic, "data": data}));
                    }
                }
            });
        }
    }
    // State changes as NDJSON.
    let mut status = kw.status();
    tokio::spawn(async move {
        let mut last: BTreeMap<String, (String, usize)> = BTreeMap::new();
        loop {
            let snapshot = status.snapshot_and_update();
            for (name, s) in &snapshot.streams {
                let key = (s.state.as_str().to_string(), s.subscriptions.active);
                if last.get(&**name) != Some(&key) {
                    emit(&status_line(name, s));
                    last.insert(name.to_string(), key);
                }
            }
            if status.changed().await.is_err() {
                break;
            }
        }
    });
    wait_for_signal().await;
    tracing::info!("stopping: unsubscribing and logging out where configured");
    if tokio::time::timeout(Duration::from_secs(5), kw.shutdown())
        .await
        .is_err()
    {
        eprintln!("keepwire run: shutdown took longer than 5 s; exiting anyway");
    }
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
