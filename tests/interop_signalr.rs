//! Interop: Microsoft's official SignalR client (`@microsoft/signalr`, Node) against the
//! emulator's market hub, over TLS.
//!
//! The emulator runs in-process with a fresh self-signed certificate, which Node trusts through
//! `NODE_EXTRA_CA_CERTS` (verification stays on). `tests/interop/signalr/client.mjs` does the
//! client side: login through the token service, a `HubConnection` whose `accessTokenFactory`
//! validates or logs in on every call, `withAutomaticReconnect()`, `SubscribeContractQuotes` →
//! `GatewayQuote`s; then the emulator drops the socket, and later expires every token (Close
//! "Unauthorized", allowReconnect): each time the client reconnects by itself, resubscribes and
//! gets quotes again. This test checks the script's verdict and, from the emulator's counters,
//! that it all really crossed the wire.
//!
//! Node and the pinned package must be installed (`scripts/test.sh` runs
//! `npm ci --prefix tests/interop/signalr`); without them this test fails, it does not skip.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

mod common;

use common::process::{run_bounded, TempFile};
use keepwire::emulator::{Emulator, EmulatorConfig, EmulatorHandle, TlsMode};
use serde_json::Value;

/// The whole Node run must end within this (the script bounds itself at 45 s).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);
/// How to install what this test needs.
const INSTALL: &str = "npm ci --prefix tests/interop/signalr";

/// The interop project's directory.
fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/signalr")
}

/// Fails (never skips) unless node runs and the pinned `@microsoft/signalr` is installed.
fn require_node_and_client() -> String {
    match Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "node does not run ({}): install Node.js (apt-get install -y nodejs npm), then: {INSTALL}",
            out.status
        ),
        Err(err) => panic!(
            "node is missing ({err}): install Node.js (apt-get install -y nodejs npm), then: {INSTALL}"
        ),
    }
    let read_version = |path: &Path| -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let json: Value = serde_json::from_str(&text).ok()?;
        Some(json["version"].as_str()?.to_owned())
    };
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(project_dir().join("package.json")).expect("package.json"),
    )
    .expect("package.json is JSON");
    let pinned = manifest["dependencies"]["@microsoft/signalr"]
        .as_str()
        .expect("package.json pins @microsoft/signalr")
        .to_owned();
    let installed =
        read_version(&project_dir().join("node_modules/@microsoft/signalr/package.json"));
    match installed {
        Some(v) if v == pinned => v,
        Some(v) => panic!(
            "@microsoft/signalr {v} is installed but package.json pins {pinned}: run: {INSTALL}"
        ),
        None => panic!("@microsoft/signalr is not installed: run: {INSTALL}"),
    }
}

/// Runs the client script; returns (exit status or None on timeout, stdout, stderr).
fn run_client(emu: &EmulatorHandle, ca_file: &Path) -> (Option<ExitStatus>, String, String) {
    let mut cmd = Command::new("node");
    cmd.arg(project_dir().join("client.mjs"))
        .args(["--hub", &emu.hub_url()])
        .args(["--api", &emu.api_url()])
        .args(["--admin", &emu.admin_url()])
        .args(["--contract", "CON.F.US.EP.U25"])
        .args(["--timeout-ms", "45000"])
        .current_dir(project_dir())
        .env("NODE_EXTRA_CA_CERTS", ca_file)
        .env_remove("NODE_TLS_REJECT_UNAUTHORIZED")
        .env_remove("NODE_OPTIONS");
    run_bounded(&mut cmd, SCRIPT_DEADLINE)
}

#[test]
fn the_official_signalr_client_connects_subscribes_and_reconnects() {
    let version = require_node_and_client();
    let emu = Emulator::start(EmulatorConfig {
        tls: TlsMode::SelfSigned,
        ..EmulatorConfig::default()
    })
    .expect("the emulator starts");
    let ca = TempFile::new(
        "signalr-hub-cert.pem",
        &emu.ca_pem().expect("a TLS emulator has a certificate"),
    );

    let (status, stdout, stderr) = run_client(&emu, ca.path());
    let transcript = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    let Some(status) = status else {
        panic!(
            "the SignalR client did not end within {SCRIPT_DEADLINE:?}\n{transcript}\ncounters: {:?}",
            emu.counters().hub
        );
    };
    assert!(
        status.success(),
        "the SignalR client failed ({status})\n{transcript}\ncounters: {:?}",
        emu.counters().hub
    );
    println!("@microsoft/signalr {version}\n{transcript}");

    // The script's own summary.
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON summary from the client\n{transcript}"));
    assert_eq!(summary["ok"], true, "{summary}");
    let factory_calls = summary["tokenFactoryCalls"].as_u64().unwrap_or(0);
    assert!(
        factory_calls > 1,
        "the token factory must be called on every (re)connect, was called {factory_calls} times"
    );
    assert_eq!(summary["reconnected"], 2, "{summary}");

    // What the client did, as the hub saw it.
    let c = emu.counters().hub;
    assert!(
        c.negotiates >= 3,
        "expected the first negotiate and one per reconnect: {c:?}"
    );
    assert!(
        c.upgrades_accepted >= 3,
        "expected the first socket and one per reconnect: {c:?}"
    );
    assert!(c.handshakes >= 3, "{c:?}");
    assert_eq!(c.handshake_errors, 0, "a handshake was refused: {c:?}");
    assert_eq!(
        c.protocol_errors, 0,
        "the hub could not read the client: {c:?}"
    );
    assert!(
        c.logins >= 2,
        "expected the first login and one after the tokens expired: {c:?}"
    );
    assert!(c.validates >= 1 && c.validates_rejected >= 1, "{c:?}");
    assert!(
        c.subscribe_invocations >= 3,
        "expected a subscribe per connection: {c:?}"
    );
    assert!(c.quotes_sent >= 9, "{c:?}");
    assert!(
        c.pings_received >= 3,
        "the client pings right after each handshake: {c:?}"
    );
    assert!(c.closes_sent >= 1, "the expiry Close: {c:?}");
    emu.stop();
}
