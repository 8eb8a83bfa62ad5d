//! The binary as a trading team deploys it: `keepwire run` against the emulator (NDJSON, HTTP
//! endpoints, faults in the metrics, clean SIGTERM) and `keepwire doctor`'s checklist.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::http::{free_port, http_get, http_post, poll};
use keepwire::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};

const BIN: &str = env!("CARGO_BIN_EXE_keepwire");

fn write_config(name: &str, emu: &EmulatorHandle, listen: Option<u16>, extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keepwire-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keepwire.toml");
    let http = listen
        .map(|p| format!("[http]\nlisten = \"127.0.0.1:{p}\"\n"))
        .unwrap_or_default();
    let text = format!(
        r#"{http}
[[streams]]
name = "ibkr"
dialect = "ibkr"
url = "{url}"
tickle_interval = "60s"
heartbeat_timeout = "5s"
{extra}
[streams.backoff]
initial = "50ms"
max = "500ms"

[[streams.subscriptions]]
market_data = {{ conid = 265598, fields = ["31", "84", "86"] }}
"#,
        url = emu.base_url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(config: &PathBuf) -> Self {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Next NDJSON line satisfying `pred`.
    fn line(
        &self,
        secs: u64,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no NDJSON line for {what}"));
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            if pred(&v) {
                return v;
            }
        }
    }

    fn terminate(mut self, secs: u64) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        poll(secs, "exit after SIGTERM", || {
            self.child.try_wait().unwrap()
        })
    }
}

#[test]
fn run_streams_ndjson_serves_readyz_and_metrics_recovers_from_faults_and_stops_on_sigterm() {
    let emu = Emulator::start(EmulatorConfig {
        heartbeat_interval: Duration::from_millis(200),
        ..EmulatorConfig::default()
    })
    .unwrap();
    let port = free_port();
    let config = write_config("run", &emu, Some(port), "");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let run = Running::start(&config);

    let data = run.line(15, "data", |v| v["topic"] == "smd+265598");
    assert_eq!(data["stream"], "ibkr");
    assert!(data["data"].is_object());
    poll(15, "/readyz 200", || {
        http_get(addr, "/readyz").filter(|(s, _)| *s == 200)
    });
    assert_eq!(http_get(addr, "/healthz").unwrap().0, 200);
    let (_, status) = http_get(addr, "/status").unwrap();
    assert!(status.contains("\"ready\""), "{status}");

    emu.inject(Fault::SessionLost);
    run.line(15, "a state change", |v| {
        v["status"] == "establishing" || v["status"] == "backoff"
    });
    let metrics = poll(15, "reconnect in metrics", || {
        http_get(addr, "/metrics").map(|(_, b)| b).filter(|b| {
            b.contains("keepwire_reconnects_total{reason=\"session_lost\",stream=\"ibkr\"} 1")
        })
    });
    for name in [
        "keepwire_stream_up",
        "keepwire_stream_state",
        "keepwire_credential_refreshes_total",
        "keepwire_subscriptions",
        "keepwire_messages_received_total",
        "keepwire_recovery_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(!metrics.contains(&emu.session_id()), "no secret in metrics");
    poll(15, "/readyz 200 again", || {
        http_get(addr, "/readyz").filter(|(s, _)| *s == 200)
    });
    run.line(15, "ready again", |v| {
        v["status"] == "ready" && v["subscriptions"]["active"] == 1
    });

    let t0 = Instant::now();
    let exit = run.terminate(10);
    assert!(exit.success(), "{exit:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stopped within a few seconds"
    );
    poll(5, "umd on shutdown", || {
        (emu.counters().umd >= 1).then_some(())
    });
    emu.stop();
}

#[test]
fn readyz_is_503_with_the_reason_while_a_person_must_log_in() {
    let emu = Emulator::start(EmulatorConfig {
        login_approved: false,
        ..EmulatorConfig::default()
    })
    .unwrap();
    let port = free_port();
    let config = write_config(
        "readyz",
        &emu,
        Some(port),
        "login_poll_interval = \"200ms\"",
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let run = Running::start(&config);
    let awaiting = run.line(15, "awaiting_login", |v| v["status"] == "awaiting_login");
    assert!(awaiting["remedy"].as_str().unwrap().contains("2FA"));
    let (status, body) = poll(10, "/readyz", || http_get(addr, "/readyz"));
    assert_eq!(status, 503);
    assert!(
        body.contains("awaiting login") && body.contains("2FA"),
        "{body}"
    );
    emu.inject(Fault::ApproveLogin);
    poll(15, "/readyz 200", || {
        http_get(addr, "/readyz").filter(|(s, _)| *s == 200)
    });
    assert!(run.terminate(10).success());
    emu.stop();
}

#[test]
fn run_refuses_an_invalid_config_naming_the_key_the_value_and_the_fix() {
    let emu = Emulator::start(EmulatorConfig::default()).unwrap();
    let config = write_config("invalid", &emu, None, "tickle_interval_typo = \"60s\"");
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tickle_interval_typo"), "{err}");

    let config = write_config("invalid2", &emu, None, "")
        .to_string_lossy()
        .to_string();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"60s\"", "\"60\"");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config", &config])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tickle_interval") && err.contains("\"60\"") && err.contains("60s"),
        "{err}"
    );
    emu.stop();
}

#[test]
fn run_refuses_a_zero_interval_naming_the_key_the_value_and_the_floor() {
    let emu = Emulator::start(EmulatorConfig::default()).unwrap();
    let config = write_config("zero-tic", &emu, None, "tic_interval = \"0s\"");
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tic_interval = \"0s\"") && err.contains("at least \"100ms\""),
        "{err}"
    );
    emu.stop();
}

fn doctor(config: &PathBuf) -> (bool, serde_json::Value) {
    let out = Command::new(BIN)
        .args(["doctor", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"));
    (out.status.success(), v)
}

fn failed_remedy(v: &serde_json::Value) -> String {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .filter_map(|c| c["remedy"].as_str())
        .collect()
}

#[test]
fn doctor_passes_every_check_against_a_healthy_gateway() {
    let emu = Emulator::start(EmulatorConfig::default()).unwrap();
    let (ok, v) = doctor(&write_config("doc-ok", &emu, None, ""));
    assert!(ok, "{v:#}");
    let checks: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        vec![
            "gateway reachable",
            "TLS",
            "auth/status (GET)",
            "ssodh/init handshake",
            "socket authenticated",
            "subscription confirmed"
        ]
    );
    assert_eq!(emu.counters().auth_status_post, 0);
    emu.stop();
}

#[test]
fn doctor_completes_the_handshake_with_ssodh_init_when_the_ui_looks_unauthenticated() {
    let emu = Emulator::start(EmulatorConfig::default()).unwrap();
    emu.inject(Fault::SessionLost);
    let (ok, v) = doctor(&write_config("doc-init", &emu, None, ""));
    assert!(!ok, "auth/status said false at first, which is reported");
    let init = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "ssodh/init handshake")
        .unwrap();
    assert_eq!(init["ok"], true, "{v:#}");
    assert!(emu.counters().ssodh_init >= 1);
    emu.stop();
}

#[test]
fn doctor_names_the_remedy_for_pending_2fa() {
    let emu = Emulator::start(EmulatorConfig {
        login_approved: false,
        ..EmulatorConfig::default()
    })
    .unwrap();
    let (ok, v) = doctor(&write_config("doc-2fa", &emu, None, ""));
    assert!(!ok);
    assert!(
        failed_remedy(&v).contains("approve the 2FA notification on your phone"),
        "{v:#}"
    );
    emu.stop();
}

#[test]
fn doctor_names_the_remedy_for_a_gateway_that_is_down() {
    let emu = Emulator::start(EmulatorConfig::default()).unwrap();
    let config = write_config("doc-down", &emu, None, "");
    emu.stop();
    let (ok, v) = doctor(&config);
    assert!(!ok);
    assert!(failed_remedy(&v).contains("start the gateway"), "{v:#}");
}

#[test]
fn doctor_names_the_remedy_for_a_competing_session() {
    let emu = Emulator::start(EmulatorConfig::default()).unwrap();
    emu.inject(Fault::CompetingSession);
    let (ok, v) = doctor(&write_config(
        "doc-compete",
        &emu,
        None,
        "competing = \"yield\"",
    ));
    assert!(!ok);
    assert!(
        failed_remedy(&v).contains("close the other session"),
        "{v:#}"
    );
    emu.stop();
}

#[test]
fn emulate_prints_its_urls_and_takes_faults_through_the_admin_api() {
    let (gw, admin) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args([
            "emulate",
            "--listen",
            &format!("127.0.0.1:{gw}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--tls",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let head: Vec<String> = out.by_ref().take(4).collect();
    assert!(
        head[0].contains(&format!("https://127.0.0.1:{gw}/v1/api")),
        "{head:?}"
    );
    assert!(
        head[1].contains(&format!("wss://127.0.0.1:{gw}/v1/api/ws")),
        "{head:?}"
    );
    assert!(head[2].contains("/admin/faults"), "{head:?}");
    assert!(head[3].starts_with("cert"), "{head:?}");
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let (status, body) = http_get(admin_addr, "/admin/state").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"authenticated\":true"), "{body}");
    let (status, body) =
        http_post(admin_addr, "/admin/faults", r#"{"fault":"session_lost"}"#).unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, state) = http_get(admin_addr, "/admin/state").unwrap();
    assert!(
        state.contains("\"authenticated\":false"),
        "the fault took effect: {state}"
    );
    let (status, body) =
        http_post(admin_addr, "/admin/faults", r#"{"fault":"no_such_fault"}"#).unwrap();
    assert_eq!(status, 400, "an unknown fault is refused: {body}");
    child.kill().unwrap();
    child.wait().unwrap();
}

fn write_raw_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keepwire-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keepwire.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn doctor_with_env(config: &PathBuf, env: (&str, &str)) -> (bool, serde_json::Value) {
    let out = Command::new(BIN)
        .args(["doctor", "--json", "--config"])
        .arg(config)
        .env(env.0, env.1)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"));
    (out.status.success(), v)
}

#[test]
fn doctor_checks_a_ticket_stream_end_to_end() {
    let emu = Emulator::start(EmulatorConfig::default()).unwrap();
    let config = write_raw_config(
        "doc-ticket",
        &format!(
            r#"
[[streams]]
name = "feed"
dialect = "ticket"
url = "{}"
origin = "https://app.example.test"
token_secret_env = "KW_DOCTOR_TICKET_KEY"

[[streams.subscriptions]]
channel = "trades.BTC-USD"
"#,
            emu.base_url()
        ),
    );
    let (ok, v) = doctor_with_env(&config, ("KW_DOCTOR_TICKET_KEY", "kw-ticket-key"));
    assert!(ok, "{v:#}");
    let (ok, v) = doctor_with_env(&config, ("KW_DOCTOR_TICKET_KEY", "wrong"));
    assert!(!ok);
    assert!(failed_remedy(&v).contains("sign in again"), "{v:#}");
    emu.stop();
}

#[test]
fn doctor_checks_a_signalr_stream_end_to_end() {
    let emu = Emulator::start(EmulatorConfig::default()).unwrap();
    let config = write_raw_config(
        "doc-hub",
        &format!(
            r#"
[[streams]]
name = "hub"
dialect = "signalr"
url = "{}"
user = "kwuser1"
api_key_env = "KW_DOCTOR_HUB_KEY"

[[streams.subscriptions]]
hub = {{ method = "SubscribeContractQuotes", args = ["CON.F.US.EP.M25"], event = "GatewayQuote" }}
"#,
            emu.hub_url()
        ),
    );
    let (ok, v) = doctor_with_env(&config, ("KW_DOCTOR_HUB_KEY", "kw-demo-key"));
    assert!(ok, "{v:#}");
    emu.stop();
}

#[test]
fn run_puts_configured_const_labels_on_every_series() {
    let emu = Emulator::start(EmulatorConfig::default()).unwrap();
    let port = free_port();
    let config = write_config("labels", &emu, Some(port), "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("[metrics]\nconst_labels = {{ supervisor = \"eu-1\" }}\n{text}"),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let run = Running::start(&config);
    let metrics = poll(15, "ready in /metrics", || {
        http_get(addr, "/metrics")
            .map(|(_, b)| b)
            .filter(|b| b.contains("keepwire_stream_up{") && b.contains(" 1\n"))
    });
    let up = metrics
        .lines()
        .find(|l| l.starts_with("keepwire_stream_up{"))
        .unwrap();
    assert!(
        up.contains("supervisor=\"eu-1\"") && up.contains("stream=\"ibkr\""),
        "{up}"
    );
    assert!(run.terminate(10).success());
    emu.stop();
}

#[test]
fn run_writes_json_logs_to_stderr_when_asked() {
    let emu = Emulator::start(EmulatorConfig::default()).unwrap();
    let config = write_config("jsonlogs", &emu, None, "");
    let mut child = Command::new(BIN)
        .args(["run", "--log-format", "json", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let first = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .next()
        .expect("a log line");
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|_| panic!("not JSON: {first}"));
    assert!(v["level"].is_string() && v["fields"].is_object(), "{v}");
    emu.stop();
}
