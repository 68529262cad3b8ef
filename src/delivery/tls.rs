//! Upstream TLS: one set of trust anchors, used for both STARTTLS and implicit TLS.
//!
//! The anchors are the Mozilla roots compiled in (webpki-roots, so a minimal container with no
//! CA bundle still verifies Gmail) plus every certificate in `upstream.ca_file`. Certificates
//! are always verified, including the host name; there is no switch to turn that off.
//!
//! STARTTLS goes through lettre (`TlsParameters`). For implicit TLS the relay opens the TCP
//! connection itself and wraps it with tokio-rustls before lettre reads the greeting: that is
//! the only way to give lettre a socket with `TCP_NODELAY`, which keeps the end-of-data dot
//! (written separately by lettre) from waiting on a delayed ACK. Both use the same anchors.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lettre::transport::smtp::client::{
    AsyncTokioStream, Certificate, CertificateStore, TlsParameters,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why the TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// `upstream.ca_file` is unreadable or holds no usable certificate.
    #[error("upstream.ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// `upstream.host` is not a valid TLS server name.
    #[error("upstream.host {host:?} cannot be used as a TLS server name: {reason}")]
    ServerName {
        /// The host.
        host: String,
        /// The parser's complaint.
        reason: String,
    },
    /// rustls or lettre rejected the configuration.
    #[error("TLS setup failed: {0}")]
    Other(String),
}

/// The TLS settings for one upstream host.
#[derive(Clone)]
pub struct UpstreamTls {
    /// For lettre's STARTTLS.
    pub starttls: TlsParameters,
    /// For implicit TLS.
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl UpstreamTls {
    /// Builds the settings for `host`, trusting the web PKI roots plus `ca_file`.
    pub fn new(host: &str, ca_file: Option<&Path>) -> Result<Self, TlsSetupError> {
        let mut anchors: Vec<CertificateDer<'static>> = Vec::new();
        if let Some(path) = ca_file {
            anchors.extend(read_ca_file(path)?);
        }
        let server_name =
            ServerName::try_from(host.to_owned()).map_err(|e| TlsSetupError::ServerName {
                host: host.to_owned(),
                reason: e.to_string(),
            })?;

        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in &anchors {
            roots
                .add(cert.clone())
                .map_err(|e| TlsSetupError::Other(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Other(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();

        // The same anchors for lettre: its WebpkiRoots store is the same webpki-roots list.
        let mut builder = TlsParameters::builder(host.to_owned())
            .certificate_store(CertificateStore::WebpkiRoots);
        for cert in anchors {
            let cert = Certificate::from_der(cert.to_vec())
                .map_err(|e| TlsSetupError::Other(e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
        let starttls = builder
            .build_rustls()
            .map_err(|e| TlsSetupError::Other(e.to_string()))?;

        Ok(UpstreamTls {
            starttls,
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Performs the TLS handshake on a fresh TCP connection (implicit TLS).
    pub async fn wrap(&self, tcp: TcpStream) -> io::Result<TlsTcp> {
        let peer = tcp.peer_addr()?;
        let stream = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?;
        Ok(TlsTcp { stream, peer })
    }
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let err = |reason: String| TlsSetupError::CaFile {
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

/// A TLS connection to the upstream that lettre can drive (implicit TLS).
pub struct TlsTcp {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    peer: SocketAddr,
}

impl fmt::Debug for TlsTcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTcp").field("peer", &self.peer).finish()
    }
}

impl AsyncRead for TlsTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}
