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
/// and waits for the requests in flight to be answered.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let draining = Arc::clone(&state);
    let drain = std::time::Duration::from_millis(state.config.drain_ms);
    let router = app(state);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        draining.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutting down: /readyz now 503"
        );
        tokio::time::sleep(drain).await;
        tracing::info!("no new connections; finishing requests in flight");
    })
    .await?;
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C. On Unix, SIGHUP meanwhile reloads the model from the path
/// served at start (a bad artifact is refused and logged; the old one keeps serving).
pub async fn shutdown_signal(state: Arc<AppState>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return,
                _ = term.recv() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the model");
                    let state = Arc::clone(&state);
                    tokio::spawn(async move { let _ = state.reload(None).await; });
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = state;
        let _ = tokio::signal::ctrl_c().await;
    }
}
