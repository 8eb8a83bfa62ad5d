//! TLS for gateway connections: verified by default; a gateway's own certificate trusted as users
//! have it (`ca_file` holding the certificate itself or its CA, or `pin_sha256`); an explicit,
//! loopback-only escape hatch; and the one place that tells a refused certificate (hard) from any
//! other TLS error (soft).
//!
//! Every mode runs through [`GatewayVerifier`]: a presented end-entity certificate that is
//! byte-for-byte one of `ca_file`'s certificates, or whose SHA-256 is the pinned one, is trusted
//! whatever its name and CA flag (its validity dates are still checked); anything else is verified
//! by webpki. Handshake signatures are always verified with the provider's algorithms.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use serde::Serialize;

use crate::failure::{CertificateProblem, Failure};

/// How the gateway's TLS certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TlsConfig {
    /// Verify against the bundled public roots (webpki-roots).
    #[default]
    Verified,
    /// Trust the certificates in this PEM file: the gateway's own certificate (pinned: trusted
    /// when presented byte-for-byte, whatever its name and CA flag) or the CA that issued it.
    CaFile(PathBuf),
    /// As [`TlsConfig::CaFile`], from PEM text.
    CaPem(String),
    /// Trust exactly the certificate with this SHA-256 (of its DER); refuse every other one.
    /// Its validity dates are still checked.
    PinSha256(CertificatePin),
    /// Do not verify. Refused unless the host is loopback (`127.0.0.0/8`, `::1`, `localhost`).
    InsecureSkipVerifyLoopbackOnly,
}

/// The SHA-256 of a certificate's DER encoding, as `pin_sha256` names it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificatePin([u8; 32]);

impl CertificatePin {
    /// The pin of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// Parses 64 hex digits, case-insensitive, colons optional (`ab:CD:…` as `openssl x509
    /// -fingerprint -sha256` prints it). The error says what is wrong, not how to fix the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let digits: Vec<u8> = text.trim().bytes().filter(|b| *b != b':').collect();
        if digits.len() != 64 {
            return Err(format!(
                "a SHA-256 is 64 hex digits (colons optional), this has {}",
                digits.len()
            ));
        }
        let nibble = |b: u8| {
            char::from(b)
                .to_digit(16)
                .ok_or_else(|| format!("{:?} is not a hex digit", char::from(b)))
        };
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            if let [hi, lo] = pair {
                *byte = u8::try_from(nibble(*hi)? * 16 + nibble(*lo)?)
                    .map_err(|_| "not a byte".to_string())?;
            }
        }
        Ok(Self(out))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The configuration line that pins this certificate: `pin_sha256 = "…"`.
    pub fn config_line(&self) -> String {
        format!("pin_sha256 = \"{self}\"")
    }
}

impl fmt::Display for CertificatePin {
    /// Lowercase hex without colons.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertificatePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificatePin({self})")
    }
}

/// What a certificate says about itself, for people (`keepwire doctor`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateInfo {
    /// Subject distinguished name (`CN=localhost`).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject alternative names (`DNS:localhost`, `IP:127.0.0.1`); empty when it has none.
    pub sans: Vec<String>,
    /// Start of validity.
    pub not_before: String,
    /// End of validity.
    pub not_after: String,
    /// Whether it says it is a CA (`basicConstraints CA:TRUE`).
    pub is_ca: bool,
    /// SHA-256 of its DER, lowercase hex.
    pub sha256: String,
}

impl CertificateInfo {
    /// Reads a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let sans = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext.value.general_names.iter().map(general_name).collect(),
            _ => Vec::new(),
        };
        let validity = cert.validity();
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            sans,
            not_before: asn1_time(validity.not_before),
            not_after: asn1_time(validity.not_after),
            is_ca: cert.is_ca(),
            sha256: CertificatePin::of(der).to_string(),
        })
    }
}

fn asn1_time(t: x509_parser::time::ASN1Time) -> String {
    t.to_rfc2822().unwrap_or_else(|_| t.to_string())
}

fn general_name(name: &x509_parser::extensions::GeneralName<'_>) -> String {
    use x509_parser::extensions::GeneralName;
    match name {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
            Ok(v4) => format!("IP:{}", IpAddr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*b) {
                Ok(v6) => format!("IP:{}", IpAddr::from(v6)),
                Err(_) => "IP:?".to_string(),
            },
        },
        GeneralName::RFC822Name(m) => format!("email:{m}"),
        GeneralName::URI(u) => format!("URI:{u}"),
        other => format!("{other:?}"),
    }
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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The only application protocol keepwire offers: HTTP/1.1. Offering h2 would break the
/// WebSocket upgrade and reach h2 code that keepwire does not vet (RUSTSEC-2026-0258).
pub const ALPN: &[u8] = b"http/1.1";

/// Builds the rustls client configuration for a gateway at `host`.
///
/// ALPN offers [`ALPN`] (`http/1.1`) only. Streams with the same TLS setting share one
/// configuration (its root store, verifier and TLS session cache) while any of them holds it:
/// the bundled public roots and a session cache cost ~25 KiB per copy, too much to build per
/// stream.
pub fn client_config(tls: &TlsConfig, host: &str) -> Result<Arc<ClientConfig>, Failure> {
    static SHARED: Mutex<Vec<(TrustKey, Weak<ClientConfig>)>> = Mutex::new(Vec::new());
    let key = trust_key(tls, host)?;
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    shared.retain(|(_, config)| config.strong_count() > 0);
    if let Some(config) = shared
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, config)| config.upgrade())
    {
        return Ok(config);
    }
    let config = Arc::new(config_with(Arc::new(GatewayVerifier {
        trust: trust(&key)?,
        provider: provider(),
    }))?);
    shared.push((key, Arc::downgrade(&config)));
    Ok(config)
}

fn config_with(verifier: Arc<dyn ServerCertVerifier>) -> Result<ClientConfig, Failure> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::Config {
            detail: format!("TLS provider: {e}"),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// What a TLS setting trusts, read (a `ca_file`'s bytes) and checked (skip-verify only for a
/// loopback host): two settings with equal keys verify alike.
#[derive(PartialEq, Eq)]
enum TrustKey {
    Public,
    Pem { origin: String, pem: Vec<u8> },
    Pin(CertificatePin),
    Skip,
}

fn trust_key(tls: &TlsConfig, host: &str) -> Result<TrustKey, Failure> {
    Ok(match tls {
        TlsConfig::Verified => TrustKey::Public,
        TlsConfig::CaFile(path) => TrustKey::Pem {
            origin: format!("ca_file {}", path.display()),
            pem: std::fs::read(path).map_err(|e| Failure::Config {
                detail: format!(
                    "ca_file {}: cannot read PEM certificates: {e}",
                    path.display()
                ),
            })?,
        },
        TlsConfig::CaPem(pem) => TrustKey::Pem {
            origin: "CA PEM text".into(),
            pem: pem.as_bytes().to_vec(),
        },
        TlsConfig::PinSha256(pin) => TrustKey::Pin(*pin),
        TlsConfig::InsecureSkipVerifyLoopbackOnly => {
            if !is_loopback_host(host) {
                return Err(Failure::Config {
                    detail: format!(
                        "insecure_skip_verify is allowed only for loopback gateways, not {host}: use ca_file with the gateway's certificate or pin_sha256"
                    ),
                });
            }
            TrustKey::Skip
        }
    })
}

fn trust(key: &TrustKey) -> Result<Trust, Failure> {
    Ok(match key {
        TrustKey::Public => Trust::Bundle {
            own: Vec::new(),
            webpki: Some(webpki(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })?),
            roots: "the public CAs".into(),
        },
        TrustKey::Pem { origin, pem } => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| Failure::Config {
                    detail: if origin.starts_with("ca_file") {
                        format!("{origin}: cannot read PEM certificates: {e}")
                    } else {
                        format!("{origin}: {e}")
                    },
                })?;
            bundle(certs, origin)?
        }
        TrustKey::Pin(pin) => Trust::Pin(*pin),
        TrustKey::Skip => Trust::Skip,
    })
}

fn verifier(tls: &TlsConfig, host: &str) -> Result<Arc<dyn ServerCertVerifier>, Failure> {
    Ok(Arc::new(GatewayVerifier {
        trust: trust(&trust_key(tls, host)?)?,
        provider: provider(),
    }))
}

fn webpki(roots: RootCertStore) -> Result<Arc<WebPkiServerVerifier>, Failure> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| Failure::Config {
            detail: format!("TLS roots: {e}"),
        })
}

/// `ca_file`'s certificates: each one trusted as itself (pinned), and those usable as trust
/// anchors also as CAs.
fn bundle(certs: Vec<CertificateDer<'static>>, origin: &str) -> Result<Trust, Failure> {
    if certs.is_empty() {
        return Err(Failure::Config {
            detail: format!("{origin}: no certificate found in PEM"),
        });
    }
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    let webpki = if added == 0 {
        None
    } else {
        Some(webpki(roots)?)
    };
    Ok(Trust::Bundle {
        own: certs,
        webpki,
        roots: origin.to_string(),
    })
}

/// What a [`GatewayVerifier`] trusts.
#[derive(Debug)]
enum Trust {
    /// Any of `own` when presented as itself (dates checked); otherwise webpki with these roots
    /// (none: nothing else is trusted), described as `roots` in a refusal.
    Bundle {
        own: Vec<CertificateDer<'static>>,
        webpki: Option<Arc<WebPkiServerVerifier>>,
        roots: String,
    },
    /// Exactly the certificate with this SHA-256 (dates checked).
    Pin(CertificatePin),
    /// Anything (loopback only; signatures still checked).
    Skip,
}

/// The verifier of every gateway connection. A refusal carries a [`CertificateRefusal`] naming
/// the presented certificate's SHA-256, so the failure can say which line would pin it.
#[derive(Debug)]
pub struct GatewayVerifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

/// Why a certificate was refused, and which one: carried inside rustls's error.
#[derive(Debug)]
pub struct CertificateRefusal {
    problem: CertificateProblem,
    presented: CertificatePin,
    cause: String,
}

impl fmt::Display for CertificateRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause)
    }
}

impl std::error::Error for CertificateRefusal {}

fn refuse(problem: CertificateProblem, end_entity: &[u8], cause: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        CertificateRefusal {
            problem,
            presented: CertificatePin::of(end_entity),
            cause,
        },
    ))))
}

/// Checks only the validity dates of a certificate trusted as itself.
fn check_dates(end_entity: &[u8], now: UnixTime) -> Result<(), rustls::Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(end_entity).map_err(|e| {
        refuse(
            CertificateProblem::Untrusted,
            end_entity,
            format!("the certificate cannot be read: {e}"),
        )
    })?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(refuse(
            CertificateProblem::OutsideValidity,
            end_entity,
            format!(
                "the certificate is not valid before {}",
                asn1_time(validity.not_before)
            ),
        ));
    }
    if now > validity.not_after.timestamp() {
        return Err(refuse(
            CertificateProblem::OutsideValidity,
            end_entity,
            format!(
                "the certificate expired on {}",
                asn1_time(validity.not_after)
            ),
        ));
    }
    Ok(())
}

impl ServerCertVerifier for GatewayVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            Trust::Skip => Ok(ServerCertVerified::assertion()),
            Trust::Pin(pin) => {
                if CertificatePin::of(end_entity) != *pin {
                    return Err(refuse(
                        CertificateProblem::PinMismatch,
                        end_entity,
                        format!("its SHA-256 is not the pinned {pin}"),
                    ));
                }
                check_dates(end_entity, now)?;
                Ok(ServerCertVerified::assertion())
            }
            Trust::Bundle { own, webpki, roots } => {
                if own.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
                    check_dates(end_entity, now)?;
                    return Ok(ServerCertVerified::assertion());
                }
                let Some(webpki) = webpki else {
                    return Err(refuse(
                        CertificateProblem::Untrusted,
                        end_entity,
                        format!("it is not one of the certificates of {roots}"),
                    ));
                };
                webpki
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                    .map_err(|e| {
                        let problem = match &e {
                            rustls::Error::InvalidCertificate(
                                CertificateError::Expired
                                | CertificateError::ExpiredContext { .. }
                                | CertificateError::NotValidYet
                                | CertificateError::NotValidYetContext { .. },
                            ) => CertificateProblem::OutsideValidity,
                            _ => CertificateProblem::Untrusted,
                        };
                        refuse(
                            problem,
                            end_entity,
                            format!("verified against {roots}: {e}"),
                        )
                    })
            }
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The failure an I/O error of a TLS connection stands for, when it is a TLS error: a refused
/// certificate is [`Failure::Certificate`] (hard), anything else rustls reports (an alert, a
/// malformed or cut-short handshake) is [`Failure::Tls`] (soft). `None`: not a TLS error.
pub fn io_failure(io: &io::Error) -> Option<Failure> {
    let error = io.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(rustls_failure(error))
}

/// The failure a rustls error stands for (see [`io_failure`]).
pub fn rustls_failure(error: &rustls::Error) -> Failure {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            match inner.downcast_ref::<CertificateRefusal>() {
                Some(r) => Failure::Certificate {
                    problem: r.problem,
                    detail: r.cause.clone(),
                    presented_sha256: Some(r.presented.to_string()),
                },
                None => Failure::Certificate {
                    problem: CertificateProblem::Untrusted,
                    detail: error.to_string(),
                    presented_sha256: None,
                },
            }
        }
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => Failure::Certificate {
            problem: CertificateProblem::OutsideValidity,
            detail: error.to_string(),
            presented_sha256: None,
        },
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            Failure::Certificate {
                problem: CertificateProblem::Untrusted,
                detail: error.to_string(),
                presented_sha256: None,
            }
        }
        other => Failure::Tls {
            detail: other.to_string(),
        },
    }
}

/// How a [`probe`]'s handshake went.
#[derive(Clone, Debug, PartialEq)]
pub enum Verification {
    /// The certificate was verified under the stream's TLS settings.
    Verified,
    /// `insecure_skip_verify`: the certificate was not checked at all.
    Skipped,
}

/// What [`probe`] saw: the certificate the gateway presented (when it got that far) and whether
/// it was trusted.
#[derive(Debug)]
pub struct Probe {
    /// The presented end-entity certificate (`Err`: presented but unreadable).
    pub presented: Option<Result<CertificateInfo, String>>,
    /// The outcome of the handshake.
    pub outcome: Result<Verification, Failure>,
}

/// Records the presented certificate, then lets the stream's verifier decide.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.clone().into_owned());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Connects to `host:port` (blocking, each step bounded by `timeout`), makes a TLS handshake
/// under `tls` exactly as a stream would, and reports the presented certificate and the verdict.
/// For `keepwire doctor`.
pub fn probe(tls: &TlsConfig, host: &str, port: u16, timeout: Duration) -> Probe {
    let recording = match verifier(tls, host) {
        Ok(inner) => Arc::new(Recording {
            inner,
            seen: Mutex::new(None),
        }),
        Err(f) => {
            return Probe {
                presented: None,
                outcome: Err(f),
            }
        }
    };
    let outcome = handshake(recording.clone(), host, port, timeout).map(|()| match tls {
        TlsConfig::InsecureSkipVerifyLoopbackOnly => Verification::Skipped,
        _ => Verification::Verified,
    });
    let presented = recording
        .seen
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .map(|der| CertificateInfo::parse(&der));
    Probe { presented, outcome }
}

fn handshake(
    verifier: Arc<Recording>,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(), Failure> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let config = Arc::new(config_with(verifier)?);
    let name = ServerName::try_from(bare.to_string()).map_err(|e| Failure::Config {
        detail: format!("{host} is not a TLS server name: {e}"),
    })?;
    let transport = |e: io::Error| Failure::Transport {
        detail: format!("TLS handshake with {host}:{port}: {e}"),
    };
    let addrs: Vec<_> = (bare, port).to_socket_addrs().map_err(transport)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut sock = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut sock = match sock {
        Some(s) => s,
        None if last.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(Failure::Unreachable {
                detail: format!("connection refused ({host}:{port})"),
            })
        }
        None => return Err(transport(last)),
    };
    sock.set_read_timeout(Some(timeout)).map_err(transport)?;
    sock.set_write_timeout(Some(timeout)).map_err(transport)?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| rustls_failure(&e))?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            return Err(io_failure(&e).unwrap_or_else(|| transport(e)));
        }
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    Ok(())
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
    fn streams_with_the_same_setting_share_one_configuration() {
        let a = client_config(&TlsConfig::Verified, "api.ibkr.com").unwrap();
        let b = client_config(&TlsConfig::Verified, "gw.example").unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "one root store for every verified stream"
        );
        let pin = |b: &[u8]| TlsConfig::PinSha256(CertificatePin::of(b));
        let (p1, p2) = (
            client_config(&pin(b"one"), "127.0.0.1").unwrap(),
            client_config(&pin(b"one"), "127.0.0.1").unwrap(),
        );
        assert!(Arc::ptr_eq(&p1, &p2));
        let other = client_config(&pin(b"two"), "127.0.0.1").unwrap();
        assert!(
            !Arc::ptr_eq(&p1, &other),
            "another pin trusts another certificate"
        );
        assert!(!Arc::ptr_eq(&a, &p1));
        // A shared skip-verify configuration is still refused for a remote host.
        let skip = client_config(&TlsConfig::InsecureSkipVerifyLoopbackOnly, "127.0.0.1").unwrap();
        assert!(client_config(&TlsConfig::InsecureSkipVerifyLoopbackOnly, "gw.example").is_err());
        drop(skip);
    }

    #[test]
    fn every_mode_offers_exactly_http1_in_alpn() {
        let pin = CertificatePin::of(b"x");
        for tls in [
            TlsConfig::Verified,
            TlsConfig::PinSha256(pin),
            TlsConfig::InsecureSkipVerifyLoopbackOnly,
        ] {
            let c = client_config(&tls, "127.0.0.1").unwrap();
            assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()], "{tls:?}");
        }
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

    #[test]
    fn pins_parse_with_or_without_colons_in_any_case() {
        let pin = CertificatePin::of(b"certificate");
        let hex = pin.to_string();
        assert_eq!(hex.len(), 64);
        let colons = hex
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(CertificatePin::parse(&hex), Ok(pin));
        assert_eq!(CertificatePin::parse(&colons), Ok(pin));
        assert_eq!(pin.config_line(), format!("pin_sha256 = \"{hex}\""));
        assert!(CertificatePin::parse(&hex[..62]).is_err());
        assert!(CertificatePin::parse(&format!("{}zz", &hex[..62])).is_err());
        assert!(CertificatePin::parse(&format!("+f{}", &hex[2..])).is_err());
    }

    #[test]
    fn only_certificate_errors_are_hard() {
        use crate::failure::{Class, CompetingPolicy};
        let class = |e: rustls::Error| {
            let io = io::Error::new(io::ErrorKind::InvalidData, e);
            io_failure(&io)
                .expect("a TLS error")
                .class(CompetingPolicy::Compete)
        };
        assert_eq!(
            class(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            )),
            Class::Hard
        );
        assert_eq!(
            class(refuse(CertificateProblem::PinMismatch, b"x", "no".into())),
            Class::Hard
        );
        assert_eq!(
            class(rustls::Error::AlertReceived(
                rustls::AlertDescription::InternalError
            )),
            Class::Soft
        );
        assert_eq!(
            class(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::TooManyEmptyFragments
            )),
            Class::Soft
        );
        assert_eq!(
            io_failure(&io::Error::from(io::ErrorKind::ConnectionReset)),
            None
        );
    }

    #[test]
    fn a_refusal_names_the_presented_certificate_and_the_pin_line() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            refuse(
                CertificateProblem::Untrusted,
                b"cert",
                "UnknownIssuer".into(),
            ),
        );
        let f = io_failure(&io).unwrap();
        let shown = f.to_string();
        let line = CertificatePin::of(b"cert").config_line();
        assert!(shown.contains(&line), "{shown}");
        assert!(
            shown.contains("ca_file") && shown.contains("pin_sha256"),
            "{shown}"
        );
    }
}
