//! HTTPS: `[tls] cert`/`key` (or `kiln serve --tls-cert --tls-key`) serve the same app over
//! TLS with rustls (TLS 1.2 and 1.3, the ring provider, HTTP/1.1 by ALPN).
//!
//! [`TlsListener`] accepts TCP connections and runs each TLS handshake on a task of its own,
//! with a deadline, taking finished connections back through a channel: a client that stalls
//! in its handshake never holds up anyone else's. A client that speaks
//! plain HTTP to the TLS port fails the handshake and gets a TLS alert, never an HTTP answer.
//! Everything else (the middleware, limits, `ConnectInfo`, graceful shutdown) is
//! [`crate::serve`]'s, unchanged.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::{Listener, ListenerExt as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::ServeError;
use crate::state::AppState;

/// How long a client has to finish its TLS handshake before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for axum to take them.
/// TLS handshakes in progress at once, at most.
const MAX_HANDSHAKES: usize = 512;
const HANDSHAKEN_QUEUE: usize = 128;

/// `[tls]`: serve HTTPS with this certificate and key (both PEM files), or plain HTTP when
/// both are empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM `CERTIFICATE` blocks).
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

impl TlsConfig {
    /// Whether HTTPS is on (a certificate is named).
    #[must_use]
    pub fn is_on(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }

    /// What is wrong with these settings, if anything.
    ///
    /// # Errors
    /// A sentence naming the key.
    pub fn check(&self) -> Result<(), String> {
        if self.cert.as_os_str().is_empty() != self.key.as_os_str().is_empty() {
            return Err("tls.cert and tls.key go together: give both or neither".into());
        }
        Ok(())
    }
}

/// Reads a PEM certificate chain and private key into a rustls server configuration that
/// offers HTTP/1.1 by ALPN.
///
/// # Errors
/// [`ServeError::Credentials`] naming the file that does not read, holds no certificate or
/// key, or whose key does not fit the certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let error = |path: &Path, what, message: String| ServeError::Credentials {
        path: path.to_path_buf(),
        what,
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| error(cert, "TLS certificate", e.to_string()))?;
    if chain.is_empty() {
        return Err(error(
            cert,
            "TLS certificate",
            "no CERTIFICATE block in the file".into(),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| error(key, "TLS private key", e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
        })
        .map_err(|e| error(key, "TLS private key", e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that yields connections whose TLS handshake has finished. It accepts TCP
/// connections while axum waits on it, as a `TcpListener` does, and runs each handshake on a
/// task of its own (see the module docs). Dropping it closes the socket at once.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    /// Handshakes in progress at most; connections beyond are closed at once, so silent
    /// clients cannot use up file descriptors before any HTTP limit applies.
    handshakes: Arc<tokio::sync::Semaphore>,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Accepts TLS connections on `listener` with `config`.
    #[must_use]
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        let (sender, handshaken) = mpsc::channel(HANDSHAKEN_QUEUE);
        Self {
            tcp: listener,
            acceptor: TlsAcceptor::from(config),
            handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES)),
            sender,
            handshaken,
        }
    }

    /// Starts the handshake of a connection just accepted, on its own task.
    fn handshake(&self, stream: TcpStream, peer: SocketAddr) {
        let Ok(permit) = Arc::clone(&self.handshakes).try_acquire_owned() else {
            tracing::warn!(%peer, limit = MAX_HANDSHAKES, "too many TLS handshakes in progress; closing the connection");
            return;
        };
        let acceptor = self.acceptor.clone();
        let handshaken = self.sender.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // Fails only once the listener is gone (shutting down): the connection
                    // is dropped, as a connection not yet accepted would be.
                    let _ = handshaken.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Both branches are cancel-safe: axum drops this future when shutdown begins.
            tokio::select! {
                Some(connection) = self.handshaken.recv() => return connection,
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => self.handshake(stream, peer),
                    Err(e) => accept_error(e).await,
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// What axum does when `accept` fails: nothing for a connection that went away; otherwise
/// (out of file descriptors, say) logs and waits a second for some to free up.
async fn accept_error(e: io::Error) {
    if !matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        tracing::error!(error = %e, "accept error");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// [`crate::serve`] over TLS: the same app, limits, graceful shutdown and peer addresses.
///
/// # Errors
/// An I/O error from the listener, or the API keys file (see [`crate::serve`]).
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // The no-op `tap_io` is what gives handlers the peer address: axum implements
    // `Connected` (for `ConnectInfo<SocketAddr>`) for a `TapIo` over any listener whose
    // address is a `SocketAddr`, as it does for a `TcpListener`.
    let listener = TlsListener::new(listener, config).tap_io(|_| ());
    crate::server::serve_on(listener, state, shutdown).await
}
