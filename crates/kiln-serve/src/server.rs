//! Running the app on a socket: graceful shutdown on SIGTERM or Ctrl-C, reload on SIGHUP.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;

use crate::error::ServeError;
use crate::routes::app;
use crate::state::AppState;

/// Serves `state` on `listener` until `shutdown` completes, then stops accepting connections
/// and waits for the requests in flight to be answered: at most the drain window plus one
/// request deadline (and a second), after which connections still open are closed. Every
/// admitted request has been answered or timed out by then; what is left is a client that
/// never finished sending a request (a half-sent header keeps a connection busy forever).
///
/// With `[auth] mode = "keys"`, reads the keys file first unless it has been read already.
/// For HTTPS, see [`crate::tls::serve_tls`].
///
/// # Errors
/// An I/O error from the listener; a keys file that does not read or check.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_on(listener, state, shutdown).await
}

/// [`serve`] on any listener whose connections report their peer address (plain TCP, or TLS).
pub(crate) async fn serve_on<L>(
    listener: L,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
    for<'a> SocketAddr: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let keys = Arc::clone(&state);
    tokio::task::spawn_blocking(move || keys.auth.ensure_loaded())
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e.to_string())))??;
    let draining = Arc::clone(&state);
    let drain = std::time::Duration::from_millis(state.config.drain_ms);
    let grace = drain + state.config.limits.request_timeout() + std::time::Duration::from_secs(1);
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = Arc::clone(&stopping);
    let router = app(state);
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        notify.notify_one();
        draining.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutting down: /readyz now 503"
        );
        tokio::time::sleep(drain).await;
        tracing::info!("no new connections; finishing requests in flight");
    });
    tokio::select! {
        result = server => result?,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "connections still open after the shutdown grace period (clients that never finished a request); closing them"
            );
        }
    }
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C. On Unix, SIGHUP meanwhile reloads the model from the path
/// served at start (a bad artifact is refused and logged; the old one keeps serving).
pub async fn shutdown_signal(state: Arc<AppState>) {
    reload_on_sighup(state, terminated()).await;
}

/// Until `stop` completes, reloads the model from the path served at start on each SIGHUP.
/// Where there is no SIGHUP (not Unix, or the handler cannot be installed), only waits.
pub async fn reload_on_sighup(state: Arc<AppState>, stop: impl Future<Output = ()>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(hangups) => reload_until(state, hangups, stop).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /admin/reload");
                stop.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = state;
        stop.await;
    }
}

/// Where requests to reload the model come from: SIGHUP, or a channel (in tests, or for an
/// embedding program's own trigger).
pub trait ReloadRequests: Send {
    /// Waits for the next request; `None` once no more can come.
    fn next(&mut self) -> impl Future<Output = Option<()>> + Send;
}

#[cfg(unix)]
impl ReloadRequests for tokio::signal::unix::Signal {
    fn next(&mut self) -> impl Future<Output = Option<()>> + Send {
        self.recv()
    }
}

impl ReloadRequests for tokio::sync::mpsc::Receiver<()> {
    fn next(&mut self) -> impl Future<Output = Option<()>> + Send {
        self.recv()
    }
}

/// Until `stop` completes, reloads the model from the path served at start (and, with
/// `[auth] mode = "keys"`, the keys file) on each of `requests`. Each reload runs on its own
/// task, so a slow load never delays `stop`; reloads queue one after another. Once `requests`
/// ends, only waits for `stop`.
pub async fn reload_until(
    state: Arc<AppState>,
    mut requests: impl ReloadRequests,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            request = requests.next() => {
                if request.is_none() {
                    break;
                }
                tracing::info!("reload requested: reloading the model (and the API keys, if on)");
                // The keys file is re-read off the executor; a bad one is refused and logged
                // and the keys in force stay (`Auth::reload`).
                let keys = Arc::clone(&state);
                tokio::task::spawn_blocking(move || keys.auth.reload());
                let state = Arc::clone(&state);
                tokio::spawn(async move { let _ = state.reload(None).await; });
            }
        }
    }
    stop.await;
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
