//! Upstream TLS: one rustls client configuration (web PKI roots plus `upstream.ca_file`), used
//! for both STARTTLS and implicit TLS, and the words for a handshake that failed.
//!
//! Certificates are always verified, including the name: `upstream.tls_name` (default
//! `upstream.host`), so a private upstream reached by IP can still be verified against the name
//! its certificate carries. There is no switch to turn verification off.
//!
//! A failed handshake is explained in terms of what to change ([`explain`]): an unknown issuer
//! names `ca_file`, a name mismatch names `tls_name` and the names the certificate carries, and
//! a plain-text SMTP greeting where a TLS record was expected names `tls = "starttls"`.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::CertificateError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::UpstreamConfig;

/// Why the TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// `upstream.ca_file` is unreadable or holds no usable certificate.
    #[error("{key} {path}: {reason}")]
    CaFile {
        /// The key (`upstream.ca_file`).
        key: String,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// `upstream.tls_name` (or `host`) is not a valid TLS server name.
    #[error("{key} {name:?} cannot be used as a TLS server name: {reason}")]
    ServerName {
        /// The key (`upstream.tls_name` or `upstream.host`).
        key: String,
        /// The name.
        name: String,
        /// The parser's complaint.
        reason: String,
    },
    /// rustls rejected the configuration.
    #[error("TLS setup failed: {0}")]
    Other(String),
}

/// The TLS settings for one upstream.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

/// A rustls client configuration trusting the web PKI roots plus `ca_file`: for SMTP, and
/// for the Gmail API (which adds its ALPN protocols).
pub fn client_config(cfg: &UpstreamConfig) -> Result<rustls::ClientConfig, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &cfg.ca_file {
        for cert in read_ca_file(path, &cfg.key("ca_file"))? {
            roots.add(cert).map_err(|e| TlsSetupError::CaFile {
                key: cfg.key("ca_file"),
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl UpstreamTls {
    /// Builds the settings for `cfg`: trusting the web PKI roots plus `ca_file`, verifying
    /// `tls_name`.
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, TlsSetupError> {
        let config = client_config(cfg)?;
        let name_key = if cfg.tls_name == cfg.host {
            cfg.key("host")
        } else {
            cfg.key("tls_name")
        };
        let server_name =
            ServerName::try_from(cfg.tls_name.clone()).map_err(|e| TlsSetupError::ServerName {
                key: name_key,
                name: cfg.tls_name.clone(),
                reason: e.to_string(),
            })?;
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Performs the TLS handshake over `tcp`.
    pub async fn handshake(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.server_name.clone(), tcp).await
    }
}

fn read_ca_file(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let err = |reason: String| TlsSetupError::CaFile {
        key: key.to_owned(),
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("holds no certificate".into()));
    }
    Ok(certs)
}

/// What a failed handshake with `server` means and what to change, said once (rustls's error
/// is the innermost cause; the I/O error around it adds nothing).
pub fn explain(e: &io::Error, cfg: &UpstreamConfig, server: &str) -> String {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(cert)) => certificate(cert, cfg, server),
        Some(rustls::Error::InvalidMessage(_)) => format!(
            "{server} did not answer the TLS handshake with TLS (it probably sent a plain-text \
             SMTP greeting): that port expects STARTTLS; set {} = \"starttls\" (port 587), or \
             use the port for implicit TLS (465)",
            cfg.key("tls")
        ),
        Some(rustls::Error::AlertReceived(alert)) => format!(
            "{server} refused the TLS handshake (alert {alert:?}); it may not accept this \
             client's TLS versions or the name {:?}",
            cfg.tls_name
        ),
        Some(other) => format!("TLS handshake with {server} failed: {other}"),
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            format!("{server} closed the connection during the TLS handshake")
        }
        None => format!("TLS handshake with {server} failed: {e}"),
    }
}

/// `DnsName("smtp.test")` (how rustls presents a name) as `smtp.test`.
fn bare_name(presented: &str) -> &str {
    match (presented.find('"'), presented.rfind('"')) {
        (Some(a), Some(b)) if a < b => &presented[a + 1..b],
        _ => presented,
    }
}

fn certificate(cert: &CertificateError, cfg: &UpstreamConfig, server: &str) -> String {
    match cert {
        CertificateError::UnknownIssuer => format!(
            "the certificate of {server} is not signed by an authority this relay trusts \
             (UnknownIssuer); if the server uses a private CA, set {} to that CA's certificate \
             (PEM)",
            cfg.key("ca_file")
        ),
        CertificateError::NotValidForName => format!(
            "the certificate of {server} is not valid for {:?}; set {} to a name the \
             certificate carries",
            cfg.tls_name,
            cfg.key("tls_name")
        ),
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "the certificate of {server} is not valid for {:?} (it names {}); set {} to one of \
             those names",
            cfg.tls_name,
            if presented.is_empty() {
                "no name at all".to_owned()
            } else {
                presented
                    .iter()
                    .map(|p| bare_name(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            cfg.key("tls_name")
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
            "the certificate of {server} has expired ({cert}); if it should not have, check \
             this machine's clock"
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
            "the certificate of {server} is not valid yet ({cert}); check this machine's clock"
        ),
        other => format!("the certificate of {server} is not acceptable: {other}"),
    }
}
