//! Wiring: builds the parts from a checked configuration and runs them
//! until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::client::{ApiClient, CredentialCell};
use crate::config::Config;
use crate::credentials::Credential;
use crate::metrics::Metrics;
use crate::scheduler::{Scheduler, SHUTDOWN_GRACE};
use crate::server::{self, WebState};
use crate::snapshot::SnapshotStore;

/// Where and how metrics are served.
#[derive(Debug, Clone)]
pub struct WebOptions {
    pub listen_address: String,
    pub telemetry_path: String,
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot listen on {address}: {cause}; \
         fix: free the port or choose another --web.listen-address"
    )]
    Listen {
        address: String,
        cause: std::io::Error,
    },
}

/// Runs the exporter until `shutdown` turns true.
pub async fn run(
    config: Config,
    credential: Credential,
    web: WebOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StartError> {
    let store = Arc::new(SnapshotStore::new(&config.instances));
    let metrics = Arc::new(Metrics::new(Arc::clone(&store), unix_now_f64));
    let credentials = Arc::new(CredentialCell::new(credential));
    let client = Arc::new(ApiClient::new(
        config.api.clone(),
        credentials,
        metrics.api.clone(),
    ));

    let listener = server::bind(&web.listen_address)
        .await
        .map_err(|cause| StartError::Listen {
            address: web.listen_address.clone(),
            cause,
        })?;
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        %address,
        telemetry_path = %web.telemetry_path,
        instances = config.instances.len(),
        interval = ?config.poll_interval,
        rate_limit = config.api.rate_limit,
        "listening"
    );

    let scheduler = Scheduler {
        client,
        store: Arc::clone(&store),
        interval: config.poll_interval,
    };
    let polling = tokio::spawn(scheduler.run(shutdown.clone()));
    let state = Arc::new(WebState {
        metrics,
        store,
        telemetry_path: web.telemetry_path,
    });
    server::serve(listener, state, shutdown).await;

    // The scheduler saw the same signal; give its polls their grace.
    let wait = SHUTDOWN_GRACE + Duration::from_secs(1);
    if tokio::time::timeout(wait, polling).await.is_err() {
        tracing::warn!("the scheduler did not stop in time");
    }
    Ok(())
}

/// Unix time with fractions, for the metrics.
pub fn unix_now_f64() -> f64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9
}
