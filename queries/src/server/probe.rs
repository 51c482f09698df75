//! The probe endpoints of `run`: `/metrics` (the pipeline's registry),
//! `/healthz` and `/readyz`, on a listener of their own.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::metrics::exposition;

/// `/metrics` over `registry`, `/healthz`, and `/readyz` answering 200 while
/// `ready` says so.
pub fn router(registry: Registry, ready: impl Fn() -> bool + Clone + Send + Sync + 'static) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = exposition(&registry);
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
                    }
                }
            }),
        )
}

/// Serves `router` on `listener` (bound by the caller, so a port in use is
/// reported at start) until `cancel`.
pub async fn serve(listener: std::net::TcpListener, router: Router, cancel: CancellationToken) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, router).with_graceful_shutdown(cancel.cancelled_owned()).await
}
