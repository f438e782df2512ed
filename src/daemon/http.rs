//! `/metrics` (Prometheus text exposition), `/healthz` (JSON, HTTP 503 when failing),
//! `/livez` (HTTP 200 while the process serves: a liveness probe) and `/readyz` (HTTP
//! 200 when it takes work, 503 with the reasons otherwise: a readiness probe) on
//! `[http] listen`, loopback by default.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::health::{Health, Status};
use super::metrics::Metrics;

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The health state.
    pub health: Arc<Health>,
}

async fn metrics(State(o): State<Observed>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        o.metrics.render(),
    )
}

async fn healthz(State(o): State<Observed>) -> impl IntoResponse {
    let report = o.health.report();
    let code = if report.status == Status::Failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(report))
}

async fn livez() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(o): State<Observed>) -> impl IntoResponse {
    let (ready, why) = o.health.readiness();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({ "ready": ready, "reasons": why })),
    )
}

/// Serves the endpoints on `listener` until `shutdown` changes.
pub async fn serve(listener: TcpListener, observed: Observed, mut shutdown: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(observed);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "the HTTP endpoint stopped");
    }
}
