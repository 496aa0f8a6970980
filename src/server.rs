//! The HTTP server: `/metrics` from the snapshot, the health endpoints, and
//! a small landing page. No request here ever calls the cloud API.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::metrics::{Metrics, REVISION, VERSION};
use crate::snapshot::SnapshotStore;
use crate::webconfig::{WebConfig, WebConfigWatcher};

/// How long scrapes under way may take to finish after shutdown was asked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; further ones wait to be accepted. Prometheus
/// needs one or two; the cap keeps a flood from using every descriptor.
const MAX_CONNECTIONS: usize = 256;

/// How long a client may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks for the configuration to be read again; answers what happened.
pub type ReloadFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// What the handlers read.
pub struct WebState {
    pub metrics: Arc<Metrics>,
    pub store: Arc<SnapshotStore>,
    pub telemetry_path: String,
    /// TLS and basic auth, reloaded when its files change.
    pub web: Arc<WebConfigWatcher>,
    /// `None` when there is no file to reload from (the demo).
    pub reload: Option<ReloadFn>,
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
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            // Acquiring fails only once the semaphore is closed: never here.
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let config = state.web.current();
                    let state = Arc::clone(&state);
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        accept(stream, peer, state, config, watcher).await;
                        drop(slot);
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

/// Runs the TLS handshake where TLS is on, then serves the connection.
async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<WebState>,
    config: Arc<WebConfig>,
    watcher: Watcher,
) {
    let Some(tls) = config.tls.clone() else {
        return serve_connection(TokioIo::new(stream), peer, state, config, watcher).await;
    };
    let handshake = TlsAcceptor::from(tls).accept(stream);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => {
            serve_connection(TokioIo::new(stream), peer, state, config, watcher).await
        }
        Ok(Err(err)) => tracing::debug!(cause = %err, %peer, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    state: Arc<WebState>,
    config: Arc<WebConfig>,
    watcher: Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(Arc::clone(&state), Arc::clone(&config), req, peer));
    // A client that never finishes its request headers is cut off, so that
    // idle or slow connections cannot pile up.
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(io, service);
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!(cause = %err, %peer, "connection ended with an error");
    }
}

async fn handle(
    state: Arc<WebState>,
    config: Arc<WebConfig>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Chunks>, Infallible> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    tracing::debug!(%method, path, %peer, "request");

    // The probes stay open so that liveness and readiness checks need no
    // credentials; they tell nothing but "up" and "ready".
    let is_probe = matches!(path.as_str(), "/-/healthy" | "/-/ready");
    let authorization = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !is_probe && !config.is_authorized(authorization) {
        let mut response = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        let challenge = HeaderValue::from_static("Basic realm=\"crs-backup-exporter\"");
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        return Ok(response);
    }
    if path == "/-/reload" {
        return Ok(reload(&state, &method).await);
    }
    if !matches!(method, Method::GET | Method::HEAD) {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served here\n",
        ));
    }
    let response = if path == state.telemetry_path {
        // Preparing a large snapshot takes a while: keep it off the threads
        // that serve requests and run polls.
        let metrics = Arc::clone(&state.metrics);
        let Ok(pieces) = tokio::task::spawn_blocking(move || metrics.render()).await else {
            return Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the metrics failed\n",
            ));
        };
        let mut response = Response::new(Chunks(pieces.into()));
        let kind = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
        response.headers_mut().insert(CONTENT_TYPE, kind);
        response
    } else {
        match path.as_str() {
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

async fn reload(state: &WebState, method: &Method) -> Response<Chunks> {
    if *method != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "reload with POST\n");
    }
    let Some(reload) = &state.reload else {
        return text(
            StatusCode::BAD_REQUEST,
            "nothing to reload: the demo has no config file\n",
        );
    };
    match reload().await {
        Ok(summary) => text(StatusCode::OK, format!("{summary}\n")),
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Chunks> {
    let mut response = Response::new(Chunks::from(body.into()));
    *response.status_mut() = status;
    let kind = HeaderValue::from_static("text/plain; charset=utf-8");
    response.headers_mut().insert(CONTENT_TYPE, kind);
    response
}

fn landing_page(telemetry_path: &str) -> Response<Chunks> {
    let path = html_escape(telemetry_path);
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>crs-backup-exporter</title></head><body>\n\
         <h1>crs-backup-exporter</h1>\n\
         <p>Backups of Tencent Cloud Redis instances, for Prometheus. \
         Version {VERSION}, revision {REVISION}.</p>\n<ul>\n\
         <li><a href=\"{path}\">{path}</a>: metrics</li>\n\
         <li><a href=\"/-/healthy\">/-/healthy</a>: 200 while the poll scheduler runs</li>\n\
         <li><a href=\"/-/ready\">/-/ready</a>: 200 once the first poll cycle finished</li>\n\
         <li>POST /-/reload: read the configuration file again</li>\n\
         </ul>\n</body></html>\n"
    );
    let mut response = Response::new(Chunks::from(Bytes::from(body)));
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

/// A response body sent as a few pieces, without joining them first.
pub struct Chunks(VecDeque<Bytes>);

impl From<Bytes> for Chunks {
    fn from(bytes: Bytes) -> Self {
        Chunks(VecDeque::from([bytes]))
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|piece| Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|piece| piece.len() as u64).sum())
    }
}
