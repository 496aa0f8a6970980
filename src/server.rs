//! The HTTP server: `/metrics` from the snapshot, the health endpoints, and
//! a small landing page. No request here ever calls the cloud API.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{Metrics, REVISION, VERSION};
use crate::snapshot::SnapshotStore;

/// How long scrapes under way may take to finish after shutdown was asked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers read.
pub struct WebState {
    pub metrics: Arc<Metrics>,
    pub store: Arc<SnapshotStore>,
    pub telemetry_path: String,
}

/// Binds the listen address; `:9887` means every interface.
pub async fn bind(address: &str) -> std::io::Result<TcpListener> {
    let address = match address.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => address.to_string(),
    };
    TcpListener::bind(address).await
}

/// Serves until `shutdown` turns true, then lets requests under way finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<WebState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let state = Arc::clone(&state);
                    let service = service_fn(move |req| handle(Arc::clone(&state), req, peer));
                    let io = TokioIo::new(stream);
                    let connection = http1::Builder::new().serve_connection(io, service);
                    let watched = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(err) = watched.await {
                            tracing::debug!(cause = %err, %peer, "connection ended with an error");
                        }
                    });
                }
                // Accept fails for one connection (for example when out of
                // file descriptors); back off briefly and go on serving.
                Err(err) => {
                    tracing::warn!(cause = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at shutdown were closed");
    }
}

async fn handle(
    state: Arc<WebState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    tracing::debug!(method = %req.method(), path = req.uri().path(), %peer, "request");
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        ));
    }
    let path = req.uri().path();
    let response = if path == state.telemetry_path {
        let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
        let kind = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
        response.headers_mut().insert(CONTENT_TYPE, kind);
        response
    } else {
        match path {
            "/-/healthy" if state.store.is_scheduler_alive() => text(StatusCode::OK, "Healthy\n"),
            "/-/healthy" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the poll scheduler is not running\n",
            ),
            "/-/ready" if state.store.is_ready() => text(StatusCode::OK, "Ready\n"),
            "/-/ready" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the first poll cycle has not finished\n",
            ),
            "/" => landing_page(&state.telemetry_path),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    };
    Ok(response)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn landing_page(telemetry_path: &str) -> Response<Full<Bytes>> {
    let path = html_escape(telemetry_path);
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>crs-backup-exporter</title></head><body>\n\
         <h1>crs-backup-exporter</h1>\n\
         <p>Backups of Tencent Cloud Redis instances, for Prometheus. \
         Version {VERSION}, revision {REVISION}.</p>\n<ul>\n\
         <li><a href=\"{path}\">{path}</a>: metrics</li>\n\
         <li><a href=\"/-/healthy\">/-/healthy</a>: 200 while the poll scheduler runs</li>\n\
         <li><a href=\"/-/ready\">/-/ready</a>: 200 once the first poll cycle finished</li>\n\
         </ul>\n</body></html>\n"
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
