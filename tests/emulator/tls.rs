//! The gateway over TLS with a self-signed certificate.

use keepwire::emulator::{EmulatorConfig, TlsMode};

use crate::support::{client, connect_live, expect_json, fast_config, get, is_smd, send, start};

#[actix_rt::test]
async fn self_signed_tls_serves_rest_and_wss() {
    let emu = start(EmulatorConfig {
        tls: TlsMode::SelfSigned,
        ..fast_config()
    });
    assert!(emu.base_url().starts_with("https://127.0.0.1:"));
    assert!(emu.ws_url().starts_with("wss://127.0.0.1:"));
    assert!(emu.admin_url().starts_with("http://127.0.0.1:"));
    assert!(emu.ca_pem().unwrap().contains("BEGIN CERTIFICATE"));
    let c = client(&emu);
    let (status, tickle) = get(&c, &emu, "/tickle").await;
    assert_eq!(status, 200);
    assert_eq!(tickle["session"], emu.session_id());
    let mut ws = connect_live(&c, &emu).await;
    send(&mut ws, "smd+8314+{}").await;
    expect_json(&mut ws, |v| is_smd(v, 8314)).await;
}

#[test]
fn plain_mode_has_no_certificate_and_non_loopback_is_refused() {
    let emu = start(EmulatorConfig::default());
    assert!(emu.ca_pem().is_none());
    assert!(emu.base_url().starts_with("http://127.0.0.1:"));
    let err = keepwire::emulator::Emulator::start(EmulatorConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..EmulatorConfig::default()
    })
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[actix_rt::test]
async fn tls_from_pem_files() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let dir = std::env::temp_dir().join(format!("kw-emu-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let emu = start(EmulatorConfig {
        tls: TlsMode::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        ..fast_config()
    });
    assert_eq!(emu.ca_pem().unwrap(), certified.cert.pem());
    let c = client(&emu);
    assert_eq!(get(&c, &emu, "/iserver/auth/status").await.0, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn handle_is_clone_send_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<keepwire::emulator::EmulatorHandle>();
}
