//! `keepwire chaos` over real sockets, as a user runs it: the report a run prints, and the
//! reconnect storm's.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keepwire");

fn last_json_line(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {text}"))
}

#[test]
fn a_seeded_chaos_run_of_every_dialect_reports_its_recoveries_and_no_violation() {
    let out = Command::new(BIN)
        .args(["chaos", "--dialect", "all", "--streams", "3", "--faults", "8"])
        .args(["--seed", "3", "--json"])
        .output()
        .expect("run keepwire chaos");
    let report = last_json_line(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for key in [
        "seed",
        "faults_injected",
        "recoveries",
        "recovery_p50_ms",
        "recovery_p99_ms",
        "hard_failures",
        "violations",
        "rss_start_kib",
        "rss_end_kib",
    ] {
        assert!(report.get(key).is_some(), "no {key} in {report}");
    }
    assert_eq!(report["seed"], 3);
    assert!(report["faults_injected"].as_u64() >= Some(8), "{report}");
    assert!(report["recoveries"].as_u64() >= Some(1), "{report}");
    assert_eq!(report["violations"], Value::Array(vec![]));
    assert!(report["secrets_known"].as_u64() >= Some(1), "{report}");
    assert!(report["unsubscribe_checks"].as_u64() >= Some(1), "{report}");
}

#[test]
fn a_reconnect_storm_brings_every_stream_back_without_fetching_credentials() {
    let out = Command::new(BIN)
        .args(["chaos", "--storm", "--streams", "60", "--admission", "50", "--json"])
        .output()
        .expect("run keepwire chaos --storm");
    let report = last_json_line(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(report["streams"], 60);
    assert_eq!(report["gave_up"], 0);
    assert_eq!(report["credential_fetches"], 0, "{report}");
    // The admission limit was hit: some upgrades were refused and retried.
    assert!(report["upgrade_attempts"].as_u64() > Some(60), "{report}");
    assert!(report["ready_max_ms"].as_u64() > Some(0), "{report}");
}
