//! Gateway certificates as users have them, made by the `openssl` CLI at test time: a CA:TRUE
//! self-signed certificate as `ca_file`, a CN-only certificate (like the IBKR gateway's bundled
//! one) pinned or given as `ca_file`, an expired one (refused even when pinned), a leaf of a
//! private CA, a wrong one and a wrong pin (hard, naming the remedy); only certificate failures
//! are hard (a TLS alert is retried); `keepwire doctor` shows the certificate and the line that
//! pins it; and HTTP/2 is never negotiated, by keepwire or by the emulator.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

use keepwire::config_file;
use keepwire::emulator::{Emulator, EmulatorConfig, EmulatorHandle, TlsMode};
use keepwire::tls::{CertificatePin, TlsConfig};
use keepwire::{Handle, StreamConfig, StreamState, StreamStatus};

const BIN: &str = env!("CARGO_BIN_EXE_keepwire");
const OPENSSL_MISSING: &str =
    "the openssl CLI makes these tests' certificates; install it with: apt-get install -y openssl";

/// A directory of certificates made for one test, removed when dropped.
struct Certs {
    dir: PathBuf,
}

/// A certificate and its private key (PEM files).
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

impl Certs {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("keepwire-certs-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn openssl(&self, args: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}): {OPENSSL_MISSING}"));
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pair(&self, name: &str) -> Pair {
        Pair {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}.key")),
        }
    }

    /// Self-signed the way most people make one: `openssl req -x509` marks it CA:TRUE.
    fn self_signed(&self, name: &str) -> Pair {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]);
        self.pair(name)
    }

    /// Self-signed with a common name only and no subjectAltName, like the certificate the IBKR
    /// gateway ships with: not valid for 127.0.0.1 by name.
    fn cn_only(&self, name: &str) -> Pair {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=gateway.example",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]);
        self.pair(name)
    }

    /// Self-signed, valid for 127.0.0.1, but only during January 2020.
    fn expired(&self, name: &str) -> Pair {
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        std::fs::write(self.path("index.txt"), "").unwrap();
        std::fs::write(self.path("serial"), "01\n").unwrap();
        std::fs::write(
            self.path("ca.cnf"),
            "[ca]\ndefault_ca = dated\n[dated]\ndir = .\ndatabase = index.txt\nnew_certs_dir = .\n\
             serial = serial\ndefault_md = sha256\npolicy = any\ncopy_extensions = copy\n\
             [any]\ncommonName = supplied\n",
        )
        .unwrap();
        self.openssl(&[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-selfsign",
            "-keyfile",
            &format!("{name}.key"),
            "-in",
            &format!("{name}.csr"),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200201000000Z",
            "-notext",
            "-out",
            &format!("{name}.pem"),
        ]);
        self.pair(name)
    }

    /// A private CA and a leaf it signed for 127.0.0.1: (the CA, the leaf).
    fn private_ca_and_leaf(&self) -> (Pair, Pair) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=keepwire test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ]);
        std::fs::write(
            self.path("leaf.ext"),
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ]);
        (self.pair("ca"), self.pair("leaf"))
    }

    /// The SHA-256 fingerprint as openssl prints it (`AB:CD:…`), in `pin_sha256`'s form.
    fn sha256(&self, cert: &Path) -> String {
        let out = self.openssl(&[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            &cert.display().to_string(),
        ]);
        let (_, hex) = out.trim().split_once('=').expect("Fingerprint=…");
        hex.replace(':', "").to_ascii_lowercase()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The emulator serving `pair` over TLS.
fn emulator_serving(pair: &Pair) -> EmulatorHandle {
    Emulator::start(EmulatorConfig {
        tls: TlsMode::Files {
            cert: pair.cert.clone(),
            key: pair.key.clone(),
        },
        ..common::fast_emulator()
    })
    .expect("the emulator serves the certificate")
}

/// keepwire with one stream to `url` under `tls`, retrying fast.
fn keepwire(url: &str, tls: TlsConfig) -> Handle {
    let mut cfg = StreamConfig::ibkr(common::STREAM, url);
    cfg.backoff = common::fast_backoff();
    cfg.tls = tls;
    Handle::builder()
        .stream(cfg)
        .start()
        .expect("keepwire starts")
}

/// Waits until the stream is Ready or Failed, and says which.
async fn settled(kw: &Handle) -> StreamStatus {
    common::wait_status(kw, 15, "ready or failed", |s| {
        matches!(s.state, StreamState::Ready | StreamState::Failed { .. })
    })
    .await
}

async fn reaches_ready(kw: Handle) {
    let s = settled(&kw).await;
    assert_eq!(s.state, StreamState::Ready, "{s:#?}");
    kw.shutdown().await;
}

/// The reason of a stream that must stop for good, after checking it was classed hard.
async fn refused(kw: Handle) -> String {
    let s = settled(&kw).await;
    kw.shutdown().await;
    let StreamState::Failed { reason } = &s.state else {
        panic!("expected a hard failure: {s:#?}")
    };
    let last = s.last_failure.as_ref().expect("a last failure");
    assert_eq!(
        (last.reason, last.class.as_str()),
        ("tls", "hard"),
        "{s:#?}"
    );
    reason.clone()
}

/// `keepwire emulate --cert --key` as a child process, killed when dropped.
struct Emulate(Child);

impl Drop for Emulate {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `keepwire emulate` with the certificate and returns it and the gateway URL it prints.
fn emulate_with(pair: &Pair) -> (Emulate, String) {
    let mut child = Command::new(BIN)
        .args([
            "emulate",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--heartbeat-secs",
            "1",
            "--cert",
        ])
        .arg(&pair.cert)
        .arg("--key")
        .arg(&pair.key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keepwire emulate starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let guard = Emulate(child);
    // Keep reading what emulate prints after its first line: a closed pipe would make its next
    // println fail and the emulator die under the test.
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = first_tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
        for _ in lines {}
    });
    let first = first_rx.recv().unwrap_or_default();
    let url = first
        .trim_start_matches("gateway")
        .trim()
        .trim_end_matches("/v1/api")
        .to_string();
    (guard, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_true_self_signed_certificate_as_ca_file_reaches_ready() {
    let certs = Certs::new("ca-true");
    let gw = certs.self_signed("gw");
    let (_emulate, url) = emulate_with(&gw);
    assert!(
        url.starts_with("https://127.0.0.1:"),
        "keepwire emulate --cert/--key serves TLS: {url:?}"
    );
    reaches_ready(keepwire(&url, TlsConfig::CaFile(gw.cert.clone()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cn_only_certificate_without_san_pinned_with_pin_sha256_reaches_ready() {
    let certs = Certs::new("cn-only-pin");
    let gw = certs.cn_only("gw");
    let pin = CertificatePin::parse(&certs.sha256(&gw.cert)).unwrap();
    let emu = emulator_serving(&gw);
    reaches_ready(keepwire(&emu.base_url(), TlsConfig::PinSha256(pin))).await;
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cn_only_certificate_given_as_ca_file_is_trusted_as_itself() {
    let certs = Certs::new("cn-only-file");
    let gw = certs.cn_only("gw");
    let emu = emulator_serving(&gw);
    reaches_ready(keepwire(
        &emu.base_url(),
        TlsConfig::CaFile(gw.cert.clone()),
    ))
    .await;
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_even_when_pinned_or_given_as_ca_file() {
    let certs = Certs::new("expired");
    let gw = certs.expired("gw");
    let pin = CertificatePin::parse(&certs.sha256(&gw.cert)).unwrap();
    let emu = emulator_serving(&gw);
    for tls in [
        TlsConfig::PinSha256(pin),
        TlsConfig::CaFile(gw.cert.clone()),
    ] {
        let reason = refused(keepwire(&emu.base_url(), tls.clone())).await;
        assert!(
            reason.contains("expired") && reason.contains("renew"),
            "{tls:?}: {reason}"
        );
    }
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_signed_by_a_private_ca_reaches_ready_with_the_ca_as_ca_file() {
    let certs = Certs::new("private-ca");
    let (ca, leaf) = certs.private_ca_and_leaf();
    let emu = emulator_serving(&leaf);
    reaches_ready(keepwire(
        &emu.base_url(),
        TlsConfig::CaFile(ca.cert.clone()),
    ))
    .await;
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_certificate_is_hard_and_names_the_pin_of_the_presented_one() {
    let certs = Certs::new("wrong");
    let served = certs.self_signed("served");
    let other = certs.self_signed("other");
    let emu = emulator_serving(&served);
    let reason = refused(keepwire(
        &emu.base_url(),
        TlsConfig::CaFile(other.cert.clone()),
    ))
    .await;
    let line = format!("pin_sha256 = \"{}\"", certs.sha256(&served.cert));
    assert!(
        reason.contains(&line) && reason.contains("ca_file"),
        "the remedy names ca_file and the presented certificate's pin_sha256 line: {reason}"
    );
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_hard_with_a_remedy() {
    let certs = Certs::new("wrong-pin");
    let served = certs.self_signed("served");
    let other = certs.self_signed("other");
    let pin = CertificatePin::parse(&certs.sha256(&other.cert)).unwrap();
    let emu = emulator_serving(&served);
    let reason = refused(keepwire(&emu.base_url(), TlsConfig::PinSha256(pin))).await;
    let line = format!("pin_sha256 = \"{}\"", certs.sha256(&served.cert));
    assert!(
        reason.contains(&line) && reason.contains("another certificate than pin_sha256 names"),
        "{reason}"
    );
    emu.stop();
}

/// A TCP front that answers the first `alerts` connections with a fatal TLS alert (as a gateway
/// behind a restarting load balancer may) and forwards every later one to `to`.
fn alerting_front(to: SocketAddr, alerts: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { return };
            if counter.load(Ordering::SeqCst) < alerts {
                let mut hello = [0u8; 5];
                let _ = client.read_exact(&mut hello); // the ClientHello's record header
                                                       // A TLS 1.2 record: fatal (2) internal_error (80).
                let _ = client.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50]);
                counter.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let Ok(server) = TcpStream::connect(to) else {
                continue;
            };
            let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            let mut server = server;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_alert_during_the_handshake_is_soft_and_retried_until_ready() {
    let emu = Emulator::start(EmulatorConfig {
        tls: TlsMode::SelfSigned,
        ..common::fast_emulator()
    })
    .unwrap();
    let (front, alerts) = alerting_front(emu.gateway_addr(), 2);
    let url = format!("https://{front}");
    let kw = keepwire(&url, TlsConfig::CaPem(emu.ca_pem().unwrap()));
    let s = settled(&kw).await;
    assert_eq!(s.state, StreamState::Ready, "{s:#?}");
    assert_eq!(
        alerts.load(Ordering::SeqCst),
        2,
        "both alerts were met and retried"
    );
    kw.shutdown().await;
    emu.stop();
}

#[test]
fn keepwire_offers_exactly_http1_in_alpn_in_every_tls_mode() {
    let pin = CertificatePin::of(b"any");
    let certs = Certs::new("alpn");
    let gw = certs.self_signed("gw");
    for tls in [
        TlsConfig::Verified,
        TlsConfig::CaFile(gw.cert.clone()),
        TlsConfig::PinSha256(pin),
        TlsConfig::InsecureSkipVerifyLoopbackOnly,
    ] {
        let config = keepwire::tls::client_config(&tls, "127.0.0.1").unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()], "{tls:?}");
    }
}

#[test]
fn the_emulators_tls_server_negotiates_http1_when_a_client_offers_h2_first() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let emu = Emulator::start(EmulatorConfig {
        tls: TlsMode::SelfSigned,
        ..EmulatorConfig::default()
    })
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(emu.ca_pem().unwrap().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect(emu.gateway_addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    // And it speaks HTTP/1.1 on that connection.
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(
        b"GET /v1/api/iserver/auth/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 12];
    tls.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    emu.stop();
}

// ---- keepwire doctor and the configuration keys ----

fn write_config(certs: &Certs, name: &str, url: &str, tls_line: &str) -> PathBuf {
    let path = certs.path(&format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[[streams]]
name = "ibkr"
dialect = "ibkr"
url = "{url}"
{tls_line}
[[streams.subscriptions]]
market_data = {{ conid = 265598, fields = ["31"] }}
"#
        ),
    )
    .unwrap();
    path
}

fn doctor(config: &Path) -> (bool, serde_json::Value) {
    let (status, stdout, stderr) = common::process::run_bounded(
        Command::new(BIN)
            .args(["doctor", "--json", "--config"])
            .arg(config),
        Duration::from_secs(60),
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("not JSON: {stdout} (stderr: {stderr})"));
    (status.is_some_and(|s| s.success()), v)
}

fn check<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name:?} line: {v:#}"))
}

#[test]
fn doctor_shows_the_gateway_certificate_and_the_line_that_pins_it() {
    let certs = Certs::new("doctor");
    let gw = certs.self_signed("gw");
    let emu = emulator_serving(&gw);
    let config = write_config(
        &certs,
        "ca",
        &emu.base_url(),
        &format!("ca_file = {:?}", gw.cert.display().to_string()),
    );
    let (ok, v) = doctor(&config);
    assert!(ok, "{v:#}");
    let sha = certs.sha256(&gw.cert);
    let line = check(&v, "gateway certificate");
    let cert = &line["certificate"];
    assert!(
        cert["subject"].as_str().unwrap().contains("CN=localhost"),
        "{cert}"
    );
    assert_eq!(
        cert["sans"],
        serde_json::json!(["IP:127.0.0.1", "DNS:localhost"])
    );
    assert!(cert["not_before"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(cert["not_after"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(cert["sha256"], sha.as_str());
    assert_eq!(line["config_line"], format!("pin_sha256 = \"{sha}\""));
    let tls = check(&v, "TLS")["detail"].as_str().unwrap();
    assert!(tls.contains("certificate verified"), "{tls}");
    emu.stop();
}

#[test]
fn doctor_says_verification_skipped_under_insecure_skip_verify() {
    let certs = Certs::new("doctor-skip");
    let gw = certs.self_signed("gw");
    let emu = emulator_serving(&gw);
    let config = write_config(
        &certs,
        "skip",
        &emu.base_url(),
        "insecure_skip_verify = true",
    );
    let (ok, v) = doctor(&config);
    assert!(ok, "{v:#}");
    let tls = check(&v, "TLS")["detail"].as_str().unwrap();
    assert!(tls.contains("verification skipped"), "{tls}");
    assert!(
        !v.to_string().contains("certificate verified"),
        "never 'certificate verified' when it was not: {v:#}"
    );
    emu.stop();
}

#[test]
fn the_pin_line_doctor_prints_for_an_untrusted_gateway_makes_it_trusted() {
    let certs = Certs::new("doctor-paste");
    let gw = certs.cn_only("gw");
    let emu = emulator_serving(&gw);
    // Verified against the public CAs: refused, but the certificate and its line are shown.
    let (ok, v) = doctor(&write_config(&certs, "public", &emu.base_url(), ""));
    assert!(!ok, "{v:#}");
    let tls = check(&v, "TLS");
    assert_eq!(tls["ok"], false, "{v:#}");
    assert!(
        tls["remedy"].as_str().unwrap().contains("pin_sha256"),
        "{tls}"
    );
    let pin_line = check(&v, "gateway certificate")["config_line"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        pin_line,
        format!("pin_sha256 = \"{}\"", certs.sha256(&gw.cert))
    );
    // Pasted into the stream: every check passes.
    let (ok, v) = doctor(&write_config(&certs, "pinned", &emu.base_url(), &pin_line));
    assert!(ok, "{v:#}");
    emu.stop();
}

fn parse_tls(tls_line: &str) -> Result<TlsConfig, String> {
    let text = format!(
        "[[streams]]\nname = \"ibkr\"\ndialect = \"ibkr\"\nurl = \"https://127.0.0.1:5000\"\n{tls_line}\n"
    );
    config_file::parse(&text, Path::new("."))
        .map(|c| c.streams[0].0.tls.clone())
        .map_err(|e| e.0)
}

#[test]
fn pin_sha256_takes_hex_with_or_without_colons_in_any_case() {
    let pin = CertificatePin::of(b"gateway");
    let hex = pin.to_string();
    let colons: Vec<String> = hex
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .collect();
    for text in [hex.clone(), colons.join(":")] {
        assert_eq!(
            parse_tls(&format!("pin_sha256 = \"{text}\"")),
            Ok(TlsConfig::PinSha256(pin))
        );
    }
}

#[test]
fn a_pin_of_the_wrong_length_is_a_config_error_naming_the_key() {
    let short = &CertificatePin::of(b"gateway").to_string()[..40];
    let err = parse_tls(&format!("pin_sha256 = \"{short}\"")).unwrap_err();
    assert!(
        err.contains("pin_sha256") && err.contains("64 hex digits"),
        "{err}"
    );
    let err = parse_tls("pin_sha256 = \"not hex at all\"").unwrap_err();
    assert!(err.contains("pin_sha256"), "{err}");
}

#[test]
fn pin_sha256_and_ca_file_together_are_a_config_error() {
    let certs = Certs::new("both");
    let gw = certs.self_signed("gw");
    let pin = CertificatePin::of(b"gateway");
    let err = parse_tls(&format!(
        "pin_sha256 = \"{pin}\"\nca_file = {:?}",
        gw.cert.display().to_string()
    ))
    .unwrap_err();
    assert!(
        err.contains("pin_sha256 and ca_file are both set") && err.contains("keep one"),
        "{err}"
    );
}
