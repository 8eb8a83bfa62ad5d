//! TLS for gateway connections: verified by default, a CA file for self-signed gateways, and an
//! explicit, loopback-only escape hatch.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::failure::Failure;

/// How the gateway's TLS certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TlsConfig {
    /// Verify against the bundled public roots (webpki-roots).
    #[default]
    Verified,
    /// Verify against this PEM file (the gateway's self-signed certificate or its CA).
    CaFile(PathBuf),
    /// Verify against this PEM text.
    CaPem(String),
    /// Do not verify. Refused unless the host is loopback (`127.0.0.0/8`, `::1`, `localhost`).
    InsecureSkipVerifyLoopbackOnly,
}

/// Whether `host` (as in a URL, brackets allowed) names this machine: a loopback IP literal
/// (`127.0.0.0/8`, `::1`, or either mapped into IPv6), or `localhost` when it resolves, *now*, to
/// loopback addresses only ([`all_loopback`]). Any other name is not loopback, whatever it
/// resolves to.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return ip.to_canonical().is_loopback();
    }
    h.eq_ignore_ascii_case("localhost")
        && all_loopback(
            &("localhost", 0)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>)
                .unwrap_or_default(),
        )
}

/// Whether the addresses a name resolved to are all loopback addresses (and there is at least
/// one): `localhost` mapped to a LAN address in `/etc/hosts` is not this machine.
pub fn all_loopback(addrs: &[SocketAddr]) -> bool {
    !addrs.is_empty() && addrs.iter().all(|a| a.ip().to_canonical().is_loopback())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration for a gateway at `host`.
///
/// ALPN offers `http/1.1` only: offering h2 breaks the WebSocket upgrade.
pub fn client_config(tls: &TlsConfig, host: &str) -> Result<Arc<ClientConfig>, Failure> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::Tls {
            detail: e.to_string(),
        })?;
    let mut config = match tls {
        TlsConfig::Verified => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsConfig::CaFile(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| Failure::Config {
                    detail: format!(
                        "ca_file {}: cannot read PEM certificates: {e}",
                        path.display()
                    ),
                })?;
            builder
                .with_root_certificates(roots_from(certs, &path.display().to_string())?)
                .with_no_client_auth()
        }
        TlsConfig::CaPem(pem) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| Failure::Config {
                        detail: format!("CA PEM text: {e}"),
                    })?;
            builder
                .with_root_certificates(roots_from(certs, "CA PEM text")?)
                .with_no_client_auth()
        }
        TlsConfig::InsecureSkipVerifyLoopbackOnly => {
            if !is_loopback_host(host) {
                return Err(Failure::Config {
                    detail: format!(
                        "insecure_skip_verify is allowed only for loopback gateways, not {host}: use ca_file with the gateway's certificate"
                    ),
                });
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn roots_from(certs: Vec<CertificateDer<'static>>, origin: &str) -> Result<RootCertStore, Failure> {
    if certs.is_empty() {
        return Err(Failure::Config {
            detail: format!("{origin}: no certificate found in PEM"),
        });
    }
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Failure::Config {
            detail: format!("{origin}: no usable certificate"),
        });
    }
    Ok(roots)
}

/// Accepts any certificate (signatures are still checked). Only ever built for loopback hosts.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.8.9.1",
            "localhost",
            "[::1]",
            "::1",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "api.ibkr.com",
            "192.168.1.1",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn localhost_is_loopback_only_when_every_address_it_resolves_to_is() {
        let v4 = |a: [u8; 4]| SocketAddr::from((a, 0));
        let v6 = |s: &str| SocketAddr::new(s.parse().unwrap(), 0);
        assert!(all_loopback(&[v4([127, 0, 0, 1]), v6("::1")]));
        assert!(all_loopback(&[v6("::ffff:127.0.0.1")]));
        // /etc/hosts saying `192.168.1.20 localhost` (or DNS answering for it): not this machine.
        assert!(!all_loopback(&[v4([192, 168, 1, 20])]));
        assert!(!all_loopback(&[v4([127, 0, 0, 1]), v4([10, 0, 0, 7])]));
        assert!(!all_loopback(&[v6("::1"), v6("2001:db8::1")]));
        // A name that resolves to nothing is not loopback either.
        assert!(!all_loopback(&[]));
    }

    #[test]
    fn this_machines_localhost_resolves_to_loopback() {
        // The real resolver (/etc/hosts): a test machine maps localhost to 127.0.0.1 / ::1.
        let addrs: Vec<SocketAddr> = ("localhost", 0).to_socket_addrs().unwrap().collect();
        assert!(all_loopback(&addrs), "{addrs:?}");
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("[::ffff:127.0.0.1]"));
    }

    #[test]
    fn skipping_verification_is_refused_for_remote_hosts() {
        let err =
            client_config(&TlsConfig::InsecureSkipVerifyLoopbackOnly, "api.ibkr.com").unwrap_err();
        assert!(err.to_string().contains("only for loopback"), "{err}");
        assert!(client_config(&TlsConfig::InsecureSkipVerifyLoopbackOnly, "127.0.0.1").is_ok());
    }

    #[test]
    fn config_offers_http1_only() {
        let c = client_config(&TlsConfig::Verified, "example.com").unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_missing_ca_file_names_the_file() {
        let err = client_config(
            &TlsConfig::CaFile("/nonexistent/gw.pem".into()),
            "127.0.0.1",
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/gw.pem"), "{err}");
    }
}
