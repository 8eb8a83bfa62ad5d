//! keepwire's metrics checked by the real Prometheus tools (Debian's `prometheus` package:
//! `apt-get install -y prometheus`; scripts/test.sh installs it):
//!
//! * `promtool check rules` and `promtool test rules` on dashboards/alerts.yml and its unit tests,
//!   and every alert has a test that makes it fire and one where it stays quiet;
//! * dashboards/keepwire.json parses, declares its template variables, and every panel has a query
//!   filtered by `$stream`;
//! * `promtool check metrics` on a real scrape of `keepwire run`, and every metric named in the
//!   dashboard and the rules exists in that scrape;
//! * a real Prometheus server on loopback scrapes `keepwire run`, a fault is injected, and its HTTP
//!   API shows the reconnect, the dip and the stream up again; it also evaluates every dashboard
//!   query and loads the alerting rules.
//!
//! A missing tool is a failure, never a skip. Child processes are killed by guards, also when an
//! assertion fails.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

mod common;

use common::http::{free_port, http_get, poll};
use keepwire::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keepwire");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const INSTALL: &str = "apt-get install -y prometheus";

// ------------------------------------------------------------------------------------ helpers

/// The path of a Prometheus tool; panics (never skips) with the install command when missing.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` is not installed; these tests need it: install it with `{INSTALL}` (scripts/test.sh does)")
    })
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A child process killed (and reaped) when the guard drops, also during a panic.
struct ChildGuard {
    what: &'static str,
    child: Child,
}

impl ChildGuard {
    fn spawn(what: &'static str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self { what, child }
    }

    /// Panics if the process already exited (e.g. a bad config or a port in use).
    fn assert_running(&mut self, log: &Path) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited early ({status}); its log:\n{}",
                self.what,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory removed when the guard drops.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("keepwire-prom-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(path: &str) -> String {
    let p = Path::new(ROOT).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Every `keepwire_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("keepwire_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let preceded_by_ident = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded_by_ident {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// The families in a text-format scrape with their types (`# TYPE name type`).
fn families(scrape: &str) -> Vec<(String, String)> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

/// Whether a name used in a query is a series of a scraped family (`_bucket`, `_sum`, `_count`
/// of a histogram included).
fn exported(name: &str, families: &[(String, String)]) -> bool {
    families.iter().any(|(family, kind)| {
        name == family
            || (kind == "histogram"
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|sfx| name.strip_suffix(sfx) == Some(family.as_str())))
    })
}

/// The dashboard's panels, rows flattened (a collapsed row keeps its panels inside).
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"]
        .as_array()
        .expect("dashboard has panels")
    {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Every query (`targets[].expr`) of the dashboard.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    panels(dashboard)
        .into_iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read("dashboards/keepwire.json"))
        .expect("dashboards/keepwire.json is JSON")
}

// ------------------------------------------------------------ keepwire run against the emulator

struct Sidecar {
    _dir: TempDir,
    emu: EmulatorHandle,
    addr: SocketAddr,
    _child: ChildGuard,
}

impl Sidecar {
    /// Starts an emulator and `keepwire run` scraping-ready on a free loopback port; waits until
    /// `/readyz` says every stream is ready.
    fn start(name: &str, extra: &str) -> Self {
        let dir = TempDir::new(name);
        let emu = Emulator::start(EmulatorConfig {
            heartbeat_interval: Duration::from_millis(200),
            market_data_interval: Duration::from_millis(50),
            ..EmulatorConfig::default()
        })
        .unwrap();
        let port = free_port();
        let config = dir.0.join("keepwire.toml");
        std::fs::write(
            &config,
            format!(
                r#"[http]
listen = "127.0.0.1:{port}"

[[streams]]
name = "ibkr"
dialect = "ibkr"
url = "{url}"
heartbeat_timeout = "5s"
{extra}
[streams.backoff]
initial = "50ms"
max = "500ms"

[[streams.subscriptions]]
market_data = {{ conid = 265598, fields = ["31", "84", "86"] }}
"#,
                url = emu.base_url()
            ),
        )
        .unwrap();
        let log = dir.0.join("keepwire.log");
        let mut child = ChildGuard::spawn(
            "keepwire run",
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        poll(20, "keepwire run: /readyz 200", || {
            child.assert_running(&log);
            http_get(addr, "/readyz").filter(|(s, _)| *s == 200)
        });
        Self {
            _dir: dir,
            emu,
            addr,
            _child: child,
        }
    }

    fn scrape(&self) -> String {
        let (status, body) = http_get(self.addr, "/metrics").expect("/metrics answers");
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.emu.stop();
    }
}

// --------------------------------------------------------------------------------------- tests

#[test]
fn promtool_checks_the_alerting_rules_and_their_unit_tests() {
    let promtool = tool("promtool");
    let out = run(
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(Path::new(ROOT).join("dashboards/alerts.yml")),
        None,
    );
    assert!(
        out.status.success(),
        "promtool check rules: {}",
        describe(&out)
    );

    let tests_dir = Path::new(ROOT).join("dashboards/tests");
    let mut files: Vec<_> = std::fs::read_dir(&tests_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no promtool unit tests in {}",
        tests_dir.display()
    );
    let out = run(
        Command::new(&promtool)
            .args(["test", "rules"])
            .args(&files)
            .current_dir(&tests_dir),
        None,
    );
    assert!(
        out.status.success(),
        "promtool test rules: {}",
        describe(&out)
    );

    // Every alert has a unit test in which it fires and one in which it stays quiet.
    let alerts: Vec<String> = read("dashboards/alerts.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|a| a.trim().to_string())
        .collect();
    assert!(alerts.len() >= 7, "{alerts:?}");
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut current = String::new();
        for line in text.lines().map(str::trim) {
            if let Some(a) = line.strip_prefix("alertname:") {
                current = a.trim().to_string();
            } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
                if rest.trim() == "[]" {
                    quiet.insert(current.clone());
                } else {
                    fires.insert(current.clone());
                }
            }
        }
    }
    for alert in &alerts {
        assert!(fires.contains(alert), "no unit test makes {alert} fire");
        assert!(quiet.contains(alert), "no unit test keeps {alert} quiet");
    }
}

#[test]
fn the_dashboard_parses_declares_its_variables_and_every_panel_has_a_query() {
    let d = dashboard();
    assert!(d["title"].is_string() && d["uid"].is_string());
    assert!(d["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    let vars = d["templating"]["list"]
        .as_array()
        .expect("templating variables");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let stream = var("stream");
    assert_eq!(stream["type"], "query");
    assert_eq!(stream["multi"], true);
    assert_eq!(stream["includeAll"], true);
    assert!(
        stream["definition"]
            .as_str()
            .unwrap_or("")
            .contains("label_values(keepwire_stream_up, stream)"),
        "{stream}"
    );

    let mut seen = 0;
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        let title = p["title"].as_str().unwrap_or("?");
        if p["type"] == "row" {
            continue;
        }
        seen += 1;
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{title}: no gridPos");
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: datasource variable"
        );
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: target without expr"));
            assert!(expr.contains("keepwire_"), "{title}: {expr}");
            // The HA series are per replica (no stream label).
            assert!(
                expr.contains("stream=~\"$stream\"") || expr.contains("keepwire_ha_"),
                "{title}: not filtered by $stream: {expr}"
            );
            assert!(t["refId"].is_string(), "{title}: no refId");
        }
    }
    for title in [
        "Stream state",
        "Ready",
        "Reconnects by reason",
        "Recovery time p50 / p99",
        "Credential refreshes",
        "Credential expires in",
        "Subscriptions desired vs active",
        "Message rate",
        "Drops and decode errors",
        "Hard failures",
        "Actor restarts",
    ] {
        assert!(
            panels(&d).iter().any(|p| p["title"] == title),
            "no panel {title:?}"
        );
    }
    assert!(seen >= 11, "{seen} panels");
}

#[test]
fn a_real_scrape_passes_promtool_check_metrics_and_has_every_metric_of_the_dashboard_and_rules() {
    let promtool = tool("promtool");
    // The yield policy turns a competing session into a hard failure, so every family is exported.
    let kw = Sidecar::start(
        "scrape",
        "tickle_interval = \"200ms\"\ncompeting = \"yield\"",
    );
    kw.emu.inject(Fault::SessionLost);
    poll(20, "the reconnect and the recovery in /metrics", || {
        let m = kw.scrape();
        (m.contains("keepwire_reconnects_total{reason=\"session_lost\",stream=\"ibkr\"}")
            && m.contains("keepwire_recovery_seconds_count{stream=\"ibkr\"} 1")
            && m.contains("keepwire_stream_up{stream=\"ibkr\"} 1"))
        .then_some(())
    });
    kw.emu.inject(Fault::CompetingSession);
    let scrape = poll(20, "the hard failure in /metrics", || {
        let m = kw.scrape();
        m.contains("keepwire_hard_failures_total{reason=\"competing_session\",stream=\"ibkr\"} 1")
            .then_some(m)
    });

    let out = run(
        Command::new(&promtool).args(["check", "metrics"]),
        Some(&scrape),
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics on a real scrape: {}\nscrape:\n{scrape}",
        describe(&out)
    );

    let fams = families(&scrape);
    let mut names = metric_names(&dashboard_queries(&dashboard()).join("\n"));
    let from_dashboard = names.len();
    names.extend(metric_names(&read("dashboards/alerts.yml")));
    assert!(from_dashboard >= 15, "{names:?}");
    // keepwire_ha_* exist only with [ha]: tests/ha.rs checks them on a replica's scrape.
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !n.starts_with("keepwire_ha_") && !exported(n, &fams))
        .collect();
    assert!(
        missing.is_empty(),
        "named in the dashboard or the rules but not in a scrape: {missing:?}"
    );
    assert!(
        !scrape.contains(&kw.emu.session_id()),
        "no secret in the scrape"
    );
    assert!(!scrape.contains("265598"), "no conid in the scrape");
}

/// Prometheus's `/api/v1/query` result for `query` (the `data.result` vector).
fn query(prom: SocketAddr, query: &str) -> Vec<Value> {
    let q = percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC);
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={q}"))
        .unwrap_or_else(|| panic!("Prometheus did not answer {query}"));
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert!(
        status == 200 && v["status"] == "success",
        "{query}: {status} {body}"
    );
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The value of a one-element instant vector (`None` when empty).
fn scalar(result: &[Value]) -> Option<f64> {
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_keepwire_run_and_records_the_reconnect_and_the_recovery() {
    let prometheus = tool("prometheus");
    let kw = Sidecar::start("e2e", "");
    let dir = TempDir::new("e2e-prometheus");
    let port = free_port();
    let prom: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            r#"global:
  scrape_interval: 250ms
  scrape_timeout: 200ms
  evaluation_interval: 250ms
rule_files:
  - {rules}
scrape_configs:
  - job_name: keepwire
    static_configs:
      - targets: ["{target}"]
"#,
            rules = Path::new(ROOT).join("dashboards/alerts.yml").display(),
            target = kw.addr
        ),
    )
    .unwrap();
    let log = dir.0.join("prometheus.log");
    let mut server = ChildGuard::spawn(
        "prometheus",
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    poll(30, "Prometheus ready", || {
        server.assert_running(&log);
        http_get(prom, "/-/ready").filter(|(s, _)| *s == 200)
    });

    // Scraped, healthy.
    poll(20, "Prometheus to scrape keepwire_stream_up == 1", || {
        server.assert_running(&log);
        (scalar(&query(
            prom,
            r#"keepwire_stream_up{job="keepwire",stream="ibkr"}"#,
        )) == Some(1.0))
        .then_some(())
    });
    let targets = query(prom, r#"up{job="keepwire"}"#);
    assert_eq!(scalar(&targets), Some(1.0), "{targets:?}");

    // A lost session: a reconnect and a recovery, recorded.
    kw.emu.inject(Fault::SessionLost);
    let reconnects = poll(
        20,
        "keepwire_reconnects_total{reason=\"session_lost\"} in Prometheus",
        || {
            scalar(&query(
                prom,
                r#"keepwire_reconnects_total{job="keepwire",stream="ibkr",reason="session_lost"}"#,
            ))
            .filter(|v| *v >= 1.0)
        },
    );
    assert!(reconnects >= 1.0);
    poll(
        20,
        "a recovery and the stream up again in Prometheus",
        || {
            let recovered = scalar(&query(
                prom,
                r#"keepwire_recovery_seconds_count{job="keepwire",stream="ibkr"}"#,
            ));
            let up = scalar(&query(
                prom,
                r#"keepwire_stream_up{job="keepwire",stream="ibkr"}"#,
            ));
            (recovered >= Some(1.0) && up == Some(1.0)).then_some(())
        },
    );

    // A gateway down for long enough that Prometheus sees the stream down, then up again.
    kw.emu.inject(Fault::GatewayDown { millis: 1500 });
    poll(20, "Prometheus to see the stream down", || {
        (scalar(&query(
            prom,
            r#"min_over_time(keepwire_stream_up{job="keepwire",stream="ibkr"}[1m])"#,
        )) == Some(0.0))
        .then_some(())
    });
    poll(
        30,
        "Prometheus to see the stream up again with its subscription",
        || {
            let up = scalar(&query(
                prom,
                r#"keepwire_stream_up{job="keepwire",stream="ibkr"}"#,
            ));
            let active = scalar(&query(
                prom,
                r#"keepwire_subscriptions{job="keepwire",stream="ibkr",state="active"}"#,
            ));
            let recoveries = scalar(&query(
                prom,
                r#"keepwire_recovery_seconds_count{job="keepwire",stream="ibkr"}"#,
            ));
            (up == Some(1.0) && active == Some(1.0) && recoveries >= Some(2.0)).then_some(())
        },
    );
    let p99 = query(
        prom,
        r#"histogram_quantile(0.99, sum by (le) (rate(keepwire_recovery_seconds_bucket{job="keepwire",stream="ibkr"}[5m])))"#,
    );
    assert!(
        scalar(&p99).is_some_and(|v| v > 0.0),
        "recovery p99: {p99:?}"
    );

    // Every dashboard query is valid PromQL for this Prometheus, and returns data here.
    for expr in dashboard_queries(&dashboard()) {
        let q = expr
            .replace("$stream", ".*")
            .replace("$__rate_interval", "1m");
        query(prom, &q);
    }

    // The alerting rules load and evaluate.
    let (status, body) = http_get(prom, "/api/v1/rules").expect("rules API");
    assert_eq!(status, 200, "{body}");
    let rules: Value = serde_json::from_str(&body).unwrap();
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert!(loaded.len() >= 7, "alerting rules not loaded: {body}");
    poll(10, "every rule evaluated without error", || {
        let (_, body) = http_get(prom, "/api/v1/rules")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules.iter().all(|r| r["health"] == "ok").then_some(())
    });
    drop(server);
}
