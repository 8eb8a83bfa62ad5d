//! TLS for the gateway listener: a rustls 0.23 server config (ring provider) from a fresh
//! rcgen self-signed certificate or from PEM files.

use std::io;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use super::config::TlsMode;

/// A ready server config and the certificate PEM clients should trust.
pub(crate) struct TlsSetup {
    /// The rustls server config (ALPN http/1.1).
    pub(crate) config: ServerConfig,
    /// PEM of the served certificate (chain).
    pub(crate) cert_pem: String,
}

/// Builds the TLS setup for a mode; `None` for plain HTTP.
pub(crate) fn setup(mode: &TlsMode) -> io::Result<Option<TlsSetup>> {
    match mode {
        TlsMode::Plain => Ok(None),
        TlsMode::SelfSigned => {
            let certified = rcgen::generate_simple_self_signed(vec![
                "127.0.0.1".to_owned(),
                "localhost".to_owned(),
            ])
            .map_err(io::Error::other)?;
            let cert_pem = certified.cert.pem();
            let key =
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
            let config = server_config(vec![certified.cert.der().clone()], key)?;
            Ok(Some(TlsSetup { config, cert_pem }))
        }
        TlsMode::Files { cert, key } => {
            let cert_pem = std::fs::read_to_string(cert)?;
            let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let config = server_config(certs, key)?;
            Ok(Some(TlsSetup { config, cert_pem }))
        }
    }
}

/// A server config with the ring provider, safe protocol versions and ALPN `http/1.1` only.
fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> io::Result<ServerConfig> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // HTTP/1.1 only; the listener (`control::https_http1_only`) insists on it too.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
