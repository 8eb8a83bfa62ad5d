//! Secrets never leave keepwire: the gateway session id that authenticates the socket appears in
//! no log line (at TRACE), no status, no metric and no Debug output, through a full recovery.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Rig, STREAM};
use keepwire::emulator::Fault;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_id_in_logs_status_metrics_or_debug_output() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let rig = Rig::start();
    let _rx = rig.subscribe_all(&[265598]).await;
    rig.fully_ready().await;
    let first_session = rig.emu.session_id();
    rig.emu.inject(Fault::RotateSession);
    rig.emu.inject(Fault::RejectUpgrade {
        status: 401,
        count: 1,
    });
    rig.emu.inject(Fault::DropSockets);
    rig.wait(10, "recovered", |s| s.recoveries >= 1 && s.is_fully_ready())
        .await;
    let second_session = rig.emu.session_id();

    let status = serde_json::to_string(&*rig.kw.status().snapshot()).unwrap();
    let debug = format!("{:?} {:?}", rig.kw.status().snapshot(), rig.kw);
    let metrics = prometheus::TextEncoder::new()
        .encode_to_string(&rig.kw.registry().gather())
        .unwrap();
    rig.stop().await;
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).to_string();

    assert!(
        logs.contains("dialing"),
        "the capture works: {} bytes",
        logs.len()
    );
    for secret in [first_session, second_session] {
        assert!(secret.len() >= 16, "a real session id: {secret}");
        for (what, text) in [
            ("logs", &logs),
            ("status", &status),
            ("debug", &debug),
            ("metrics", &metrics),
        ] {
            assert!(!text.contains(&secret), "session id leaked into {what}");
        }
    }
    assert!(metrics.contains(&format!("keepwire_stream_up{{stream=\"{STREAM}\"}} 1")));
}

/// Every type that can hold a secret prints `<redacted>` (or nothing) in its place in `Debug`.
#[test]
fn debug_of_every_secret_holding_type_hides_a_planted_secret() {
    use keepwire::dialect::ibkr::{parse_tickle, Ibkr, IbkrConfig};
    use keepwire::dialect::signalr::{SignalR, SignalRConfig};
    use keepwire::dialect::ticket::{Ticket, TicketConfig};
    use keepwire::dialect::{DialPlan, Issued};
    use keepwire::secret::SecretSource;
    use keepwire::transport::JsonReply;
    use keepwire::StreamConfig;
    use secrecy::SecretString;

    const PLANTED: &str = "PLANTEDsecret7f3a";
    let url = format!("https://kwuser:{PLANTED}@gw.example.com:5000/api?token={PLANTED}");
    let ticket_config = TicketConfig {
        token_url: Some(url.clone()),
        ticket_url: Some(url.clone()),
        socket_url: Some(url.clone()),
        token_body: format!(r#"{{"apiKey":"{PLANTED}"}}"#),
        token_secret: Some(SecretSource::Value(PLANTED.into())),
        ..TicketConfig::default()
    };
    let signalr_config = SignalRConfig {
        login_url: Some(url.clone()),
        validate_url: Some(url.clone()),
        login_body: format!(r#"{{"apiKey":"{PLANTED}"}}"#),
        secret: Some(SecretSource::Value(PLANTED.into())),
        ..SignalRConfig::default()
    };
    let printed = [
        format!(
            "{:?}",
            parse_tickle(&serde_json::json!({ "session": PLANTED, "iserver": {} }))
        ),
        format!(
            "{:?}",
            JsonReply {
                status: 200,
                retry_after: None,
                body: serde_json::json!({ "token": PLANTED, "ticket": PLANTED }),
            }
        ),
        format!("{:?}", StreamConfig::ibkr("s", &url)),
        format!(
            "{:?}",
            StreamConfig::ticket("s", &url, ticket_config.clone())
        ),
        format!(
            "{:?}",
            StreamConfig::signalr("s", &url, signalr_config.clone())
        ),
        format!("{:?}", Ticket::new(&url, ticket_config)),
        format!("{:?}", SignalR::new(&url, signalr_config)),
        format!("{:?}", Ibkr::new(&url, IbkrConfig::default())),
        format!(
            "{:?}",
            Issued {
                secret: SecretString::from(PLANTED),
                expires_in: None,
                age: std::time::Duration::ZERO,
            }
        ),
        format!(
            "{:?}",
            DialPlan {
                url: url.clone(),
                key: "url",
                headers: vec![("cookie", SecretString::from(PLANTED))],
            }
        ),
    ];
    for text in &printed {
        assert!(!text.contains(PLANTED), "a secret in Debug output: {text}");
        assert!(
            !text.contains("kwuser"),
            "URL userinfo in Debug output: {text}"
        );
    }
    assert!(
        printed[0].contains("<redacted>") && printed[1].contains("<redacted>"),
        "{printed:?}"
    );
}
