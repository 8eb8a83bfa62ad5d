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

    let status = serde_json::to_string(&*rig.kw.status().borrow()).unwrap();
    let debug = format!("{:?} {:?}", rig.kw.status().borrow(), rig.kw);
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
