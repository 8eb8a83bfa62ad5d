//! Interop: ibind, the Python IBKR client nobody here wrote, drives the emulator over TLS.
//!
//! The emulator runs in-process with a fresh self-signed certificate; ibind trusts exactly that
//! certificate (verification on). `tests/interop/ibind_client.py` does the ibind side: tickle,
//! auth status, accounts, `smd` confirmed with data, then the emulator drops the socket and
//! ibind's own reconnect brings the data back. This test checks the script's verdict and, from
//! the emulator's counters, that it all really crossed the wire.
//!
//! ibind must be installed (`scripts/test.sh` installs it); without it this test fails, it does
//! not skip.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

mod common;

use common::process::{run_bounded, TempFile};
use keepwire::emulator::{Emulator, EmulatorConfig, EmulatorHandle, TlsMode};

/// The whole Python run must end within this (the script bounds itself at 45 s).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);
/// The failure message when ibind cannot be imported.
const IBIND_MISSING: &str = "ibind is missing: install it with: python3 -m pip install ibind";

/// Fails (never skips) unless `python3 -c "import ibind"` works.
fn require_ibind() {
    let probe = Command::new("python3")
        .args(["-c", "import ibind"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{IBIND_MISSING}\n(python3 -c \"import ibind\" said: {})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ),
        Err(err) => panic!("{IBIND_MISSING}\n(python3 could not be run: {err})"),
    }
}

/// Runs the ibind script against the emulator; returns (exit status or None on timeout,
/// stdout, stderr).
fn run_ibind_script(emu: &EmulatorHandle, ca_file: &Path) -> (Option<ExitStatus>, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/ibind_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(["--base-url", &emu.base_url()])
        .args(["--ws-url", &emu.ws_url()])
        .args(["--admin-url", &emu.admin_url()])
        .arg("--cacert")
        .arg(ca_file)
        .args(["--conid", "265598"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // ibind's settings (read from the environment when it is imported): the gateway login
        // flavour, not OAuth; no log files or signal handlers; default socket timings, spelled
        // out (IBIND_WS_TIMEOUT is also websocket-client's reconnect delay).
        .env("IBIND_USE_OAUTH", "false")
        .env("IBIND_LOG_TO_FILE", "false")
        .env("IBIND_AUTO_REGISTER_SHUTDOWN", "false")
        .env("IBIND_WS_TIMEOUT", "5")
        .env("IBIND_WS_PING_INTERVAL", "10")
        .env("IBIND_WS_SUBSCRIPTION_TIMEOUT", "5")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    run_bounded(&mut cmd, SCRIPT_DEADLINE)
}

#[test]
fn ibind_drives_the_emulator_over_tls() {
    require_ibind();
    let emu = Emulator::start(EmulatorConfig {
        tls: TlsMode::SelfSigned,
        ..EmulatorConfig::default()
    })
    .expect("the emulator starts");
    let ca = TempFile::new(
        "ibind-gateway-cert.pem",
        &emu.ca_pem().expect("a TLS emulator has a certificate"),
    );

    let (status, stdout, stderr) = run_ibind_script(&emu, ca.path());
    let transcript = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    let Some(status) = status else {
        panic!(
            "the ibind script did not end within {SCRIPT_DEADLINE:?}\n{transcript}\ncounters: {:?}",
            emu.counters()
        );
    };
    assert!(
        status.success(),
        "the ibind script failed ({status})\n{transcript}\ncounters: {:?}",
        emu.counters()
    );
    println!("{transcript}");

    // What ibind did, as the emulator saw it.
    let c = emu.counters();
    assert!(c.tickle >= 1, "ibind never tickled: {c:?}");
    assert!(
        c.auth_status_post + c.auth_status_get >= 1,
        "ibind never asked auth/status: {c:?}"
    );
    assert!(
        c.accounts >= 1,
        "ibind never called iserver/accounts: {c:?}"
    );
    assert_eq!(c.ws_upgrades_rejected, 0, "an upgrade was refused: {c:?}");
    assert!(
        c.ws_upgrades_accepted >= 2,
        "expected the first socket and ibind's reconnect: {c:?}"
    );
    assert!(
        c.smd_subscribe >= 2,
        "expected smd on the first socket and again after the reconnect: {c:?}"
    );
    assert!(c.tic >= 1, "ibind's tic never arrived: {c:?}");
    assert!(c.umd >= 1, "ibind's umd never arrived: {c:?}");
    assert_eq!(c.faults_injected, 1, "exactly the one drop: {c:?}");
    emu.stop();
}
