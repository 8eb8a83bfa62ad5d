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
        .args([
            "chaos",
            "--dialect",
            "all",
            "--streams",
            "3",
            "--faults",
            "8",
        ])
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
fn a_recovery_bound_too_short_for_the_settings_is_reported_as_a_violation() {
    // Planted defect in the checker's input: a bound no stream can meet (1 ms) must be reported,
    // with the seed, and fail the run.
    let out = Command::new(BIN)
        .args(["chaos", "--dialect", "ticket", "--streams", "2"])
        .args([
            "--faults",
            "2",
            "--seed",
            "5",
            "--recovery-bound-ms",
            "1",
            "--json",
        ])
        .output()
        .expect("run keepwire chaos");
    let report = last_json_line(&out.stdout);
    assert!(!out.status.success(), "{report}");
    let violations = report["violations"].as_array().cloned().unwrap_or_default();
    assert!(
        violations
            .iter()
            .any(|v| v.to_string().contains("within 1 ms")),
        "{report}"
    );
    assert!(violations.iter().all(|v| v["seed"] == 5), "{report}");
}

#[test]
fn a_reconnect_storm_brings_every_stream_back_without_fetching_credentials() {
    let out = Command::new(BIN)
        .args([
            "chaos",
            "--storm",
            "--streams",
            "60",
            "--admission",
            "50",
            "--json",
        ])
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

/// Headless Chromium, started the way this machine's closed network needs (no background
/// connections), or a failure naming the install command.
fn chromium(args: &[&str], profile: &std::path::Path) -> std::process::Output {
    let bin = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| {
            panic!("chromium is missing: install it with `apt-get install -y chromium`")
        });
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1300,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

#[test]
fn the_html_report_draws_a_timeline_row_per_stream_in_headless_chromium() {
    let dir = std::env::temp_dir().join(format!("kw-chaos-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("chaos.html");
    let out = Command::new(BIN)
        .args([
            "chaos",
            "--dialect",
            "all",
            "--streams",
            "4",
            "--faults",
            "5",
        ])
        .args(["--seed", "4", "--report"])
        .arg(&page)
        .output()
        .expect("run keepwire chaos --report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("src=") && !html.contains("href=") && !html.contains("<script"),
        "the page fetches nothing"
    );
    let url = format!("file://{}", page.display());
    // The DOM as the browser built it: one row per stream, state bands, fault markers.
    let dom = chromium(&["--dump-dom", &url], &dir.join("profile-dom"));
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches(r#"<g class="row""#).count(), 4, "{dom}");
    assert!(dom.matches(r#"class="band ready""#).count() >= 4, "{dom}");
    assert!(dom.matches(r#"class="fault""#).count() >= 5, "{dom}");
    // Drawn, not blank: the screenshot of the report is far richer than one of an empty page.
    let blank = dir.join("blank.html");
    std::fs::write(&blank, "<!doctype html><html><body></body></html>").unwrap();
    let shot = |target: &std::path::Path, name: &str| {
        let png = dir.join(format!("{name}.png"));
        chromium(
            &[
                &format!("--screenshot={}", png.display()),
                &format!("file://{}", target.display()),
            ],
            &dir.join(format!("profile-{name}")),
        );
        std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0)
    };
    let (report, empty) = (shot(&page, "report"), shot(&blank, "blank"));
    assert!(empty > 0, "chromium wrote no screenshot");
    assert!(
        report > 4 * empty,
        "the report's screenshot ({report} bytes) is not much richer than a blank page's ({empty} bytes)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
