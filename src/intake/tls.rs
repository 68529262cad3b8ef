//! TLS on the listeners: the server certificate, and a client stream that can be upgraded in
//! place by STARTTLS (or is TLS from the first byte on an implicit-TLS listener).
//!
//! This is optional: legacy clients talk plain SMTP on loopback or a trusted LAN. It exists
//! for clients that can encrypt (and for AUTH over an untrusted network). A listener in
//! `listen.no_starttls_addrs` never advertises STARTTLS, for devices whose TLS stacks break on
//! modern servers.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::connection::Transport;

/// Why the listener certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ListenTlsError {
    /// The certificate file is unusable.
    #[error("listen.tls_cert {path}: {reason}")]
    Cert {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file is unusable or does not match the certificate.
    #[error("listen.tls_key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Loads the certificate chain and key into a TLS acceptor (TLS 1.2 and 1.3).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ListenTlsError> {
    let cert_err = |reason: String| ListenTlsError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let key_err = |reason: String| ListenTlsError::Key {
        path: key.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err("holds no certificate".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| key_err(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| key_err(format!("does not fit the certificate: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client connection: plain (upgradable with STARTTLS when an acceptor is given) or TLS.
pub struct ClientStream {
    inner: Inner,
    acceptor: Option<TlsAcceptor>,
}

enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only during the handshake, or after it failed.
    Gone,
}

impl ClientStream {
    /// A plain connection; `starttls` is the acceptor to upgrade with, if offered.
    pub fn plain(tcp: TcpStream, starttls: Option<TlsAcceptor>) -> Self {
        ClientStream {
            inner: Inner::Plain(tcp),
            acceptor: starttls,
        }
    }

    /// A connection already in TLS (implicit-TLS listener).
    pub fn tls(stream: TlsStream<TcpStream>) -> Self {
        ClientStream {
            inner: Inner::Tls(Box::new(stream)),
            acceptor: None,
        }
    }
}

impl Transport for ClientStream {
    async fn start_tls(&mut self) -> io::Result<()> {
        let acceptor = self
            .acceptor
            .take()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "STARTTLS not offered"))?;
        let Inner::Plain(tcp) = std::mem::replace(&mut self.inner, Inner::Gone) else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "already TLS"));
        };
        self.inner = Inner::Tls(Box::new(acceptor.accept(tcp).await?));
        Ok(())
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "TLS handshake failed")
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Inner::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Inner::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Inner::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Inner::Gone => Poll::Ready(Ok(())),
        }
    }
}
