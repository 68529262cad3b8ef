//! The HTTP endpoint on `metrics.addr`: `/healthz` for load balancers, container health checks
//! and monitoring, `/metrics` for Prometheus.
//!
//! `/healthz` is `200` when the listeners are up and delivery runs, and `503` with a JSON
//! reason when delivery is paused (the cause, the upstream's words, the next probe) or the
//! relay is stopping. Requests are not logged: a probe every few seconds would bury the mail
//! log. Anything but `GET` of those two paths is `404`/`405`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Metrics, Snapshot};

/// A delivery pause, as health reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PauseInfo {
    /// The paused account.
    pub account: String,
    /// "unreachable", "tls", "credentials", "quota", "rate" or "budget".
    pub cause: String,
    /// The upstream's words.
    pub reason: String,
    /// When delivery is tried again (RFC 3339).
    pub next_probe: String,
}

/// One account, as health reports it.
#[derive(Debug, Clone)]
pub struct AccountHealth {
    /// Its name.
    pub name: String,
    /// Who it logs in as.
    pub label: String,
    /// Why it is paused, if it is.
    pub pause: Option<PauseInfo>,
}

/// The relay's state at one instant.
#[derive(Debug, Clone)]
pub struct State {
    /// Queue depth and the rest of the metrics' gauges.
    pub snapshot: Snapshot,
    /// The first paused account's pause, if any account is paused.
    pub pause: Option<PauseInfo>,
    /// Each account.
    pub accounts: Vec<AccountHealth>,
    /// Messages waiting for accounts that are not configured: (account, messages).
    pub missing: Vec<(String, usize)>,
    /// `delivery.hold` is on (the relay only queues).
    pub hold: bool,
}

/// Where the endpoint gets the relay's state; `None` when the relay is stopping.
pub trait Probe: Send + Sync + 'static {
    /// The state now.
    fn state(&self) -> impl Future<Output = Option<State>> + Send;
}

/// The body and status of `/healthz` for `state`.
pub fn health(state: Option<&State>, now: SystemTime) -> (StatusCode, serde_json::Value) {
    let Some(state) = state else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "stopping" }),
        );
    };
    let s = &state.snapshot;
    let queue = serde_json::json!({
        "waiting": s.waiting,
        "active": s.active,
        "held": s.held,
        "failed": s.failed,
        "oldest_age_seconds": s.oldest
            .and_then(|t| now.duration_since(t).ok())
            .map_or(0, |d| d.as_secs()),
    });
    let accounts: serde_json::Map<String, serde_json::Value> = state
        .accounts
        .iter()
        .map(|a| {
            let value = match &a.pause {
                Some(p) => serde_json::json!({
                    "status": "paused", "user": a.label, "cause": p.cause,
                    "reason": p.reason, "next_probe": p.next_probe,
                }),
                None => serde_json::json!({ "status": "ok", "user": a.label }),
            };
            (a.name.clone(), value)
        })
        .collect();
    let missing: serde_json::Map<String, serde_json::Value> = state
        .missing
        .iter()
        .map(|(a, n)| (a.clone(), serde_json::json!(n)))
        .collect();
    let mut body = match &state.pause {
        Some(p) => serde_json::json!({
            "status": "paused",
            "account": p.account,
            "cause": p.cause,
            "reason": p.reason,
            "next_probe": p.next_probe,
            "queue": queue,
        }),
        None => serde_json::json!({ "status": "ok", "hold": state.hold, "queue": queue }),
    };
    body["accounts"] = serde_json::Value::Object(accounts);
    if !missing.is_empty() {
        body["waiting_for_missing_accounts"] = serde_json::Value::Object(missing);
    }
    let code = if state.pause.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, body)
}

/// Serves `/healthz` and `/metrics` on `listener` until `stop` fires.
pub async fn serve<P: Probe>(
    listener: TcpListener,
    metrics: Metrics,
    probe: P,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let shared = Arc::new((metrics, probe));
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&shared.0, &shared.1, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::timeout(Duration::from_secs(60), conn) => {}
            }
        });
    }
}

async fn respond<P: Probe>(
    metrics: &Metrics,
    probe: &P,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    let path = req.uri().path();
    if path != "/healthz" && path != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /healthz or /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    let state = probe.state().await;
    let now = SystemTime::now();
    if path == "/metrics" {
        let snapshot = state.map(|s| s.snapshot).unwrap_or_default();
        return reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(&snapshot, now),
        );
    }
    let (status, body) = health(state.as_ref(), now);
    reply(status, "application/json", format!("{body}\n"))
}
