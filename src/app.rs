//! Wiring: builds the parts from a checked configuration, runs them until
//! shutdown, and reloads the configuration on SIGHUP or `POST /-/reload`.
//!
//! A reload loads and checks the whole file (and the credentials) first and
//! changes nothing when that fails: the old configuration stays in force, the
//! caller gets the error, and the reload metric says so.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::client::{ApiClient, CredentialCell, DESCRIBE_INSTANCE_BACKUPS};
use crate::config::{self, Config};
use crate::credentials::{self, Credential, Resolved};
use crate::metrics::Metrics;
use crate::ratelimit::budget_fit;
use crate::scheduler::{self, Scheduler, SHUTDOWN_GRACE};
use crate::server::{self, ReloadFn, WebState};
use crate::shard::Shard;
use crate::snapshot::SnapshotStore;
use crate::temporary::{self, TemporarySource};
use crate::webconfig::{WebConfigError, WebConfigWatcher};

/// Where and how metrics are served.
#[derive(Debug, Clone)]
pub struct WebOptions {
    pub listen_address: String,
    pub telemetry_path: String,
    /// TLS and basic auth settings, in the exporter toolkit's format.
    pub config_file: Option<PathBuf>,
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
    #[error("{0}")]
    WebConfig(#[from] WebConfigError),
    #[error("{0}")]
    Credentials(String),
}

/// The credential to start with, and what renews it when it is temporary.
async fn obtain(
    resolved: Resolved,
) -> Result<(Credential, Option<(TemporarySource, i64)>), String> {
    match resolved {
        Resolved::Keys(credential, _) => Ok((credential, None)),
        Resolved::Temporary(source) => {
            let http = temporary::http_client();
            let issued = temporary::fetch(&source, &http).await.map_err(|cause| {
                format!(
                    "cannot get credentials from the {source}: {cause}; fix: check that the \
                     endpoint is reachable and the role exists, or configure keys instead"
                )
            })?;
            let expires_at = issued.expires_at;
            tracing::info!(%source, expires_at, "temporary credentials obtained");
            Ok((issued.credential, Some((source, expires_at))))
        }
    }
}

/// Runs the task that renews temporary credentials, one at a time.
struct Renewer {
    cell: Arc<CredentialCell>,
    shutdown: watch::Receiver<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Renewer {
    /// Stops the renewal under way, if any, and starts one for `renewal`.
    fn start(&self, renewal: Option<(TemporarySource, i64)>) {
        let mut task = self.task.lock().expect("no code panics holding this lock");
        if let Some(old) = task.take() {
            old.abort();
        }
        *task = renewal.map(|(source, expires_at)| {
            let (cell, shutdown) = (Arc::clone(&self.cell), self.shutdown.clone());
            let http = temporary::http_client();
            tokio::spawn(temporary::keep_fresh(
                source, http, cell, expires_at, shutdown,
            ))
        });
    }
}

/// Where a reload reads the configuration from, and which share of it this
/// replica takes.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub file: PathBuf,
    pub shard: Shard,
}

/// Runs the exporter until `shutdown` turns true. `source` is where a reload
/// reads from; without one (the demo) there is nothing to reload.
pub async fn run(
    config: Config,
    credentials: Resolved,
    source: Option<ConfigSource>,
    web: WebOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StartError> {
    let web_config = Arc::new(WebConfigWatcher::new(web.config_file.clone())?);
    let (credential, renewal) = obtain(credentials).await.map_err(StartError::Credentials)?;
    let store = Arc::new(SnapshotStore::new(&config.instances));
    store.record_reload(true, unix_now_f64());
    let metrics = Arc::new(Metrics::new(Arc::clone(&store), unix_now_f64));
    let credentials = Arc::new(CredentialCell::new(credential));
    let renewer = Arc::new(Renewer {
        cell: Arc::clone(&credentials),
        shutdown: shutdown.clone(),
        task: Mutex::new(None),
    });
    renewer.start(renewal);
    let client = Arc::new(ApiClient::new(
        config.api.clone(),
        credentials,
        metrics.api.clone(),
    ));
    show_budgets(&metrics, &config);
    report_budget_fit(&config);
    store.set_interval(config.poll_interval);

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
        tls = web_config.current().tls.is_some(),
        basic_auth = web_config.current().is_auth_required(),
        instances = config.instances.len(),
        interval = ?config.poll_interval,
        rate_limit = config.api.rate_limit,
        "listening"
    );

    let (interval, interval_changes) = watch::channel(config.poll_interval);
    let reloader = source.map(|source| {
        let parts = (
            Arc::clone(&client),
            Arc::clone(&store),
            Arc::clone(&metrics),
        );
        Arc::new(Reloader {
            source,
            client: parts.0,
            store: parts.1,
            metrics: parts.2,
            interval,
            renewer: Arc::clone(&renewer),
        })
    });
    spawn_hangup_handler(reloader.clone(), shutdown.clone());

    let scheduler = Scheduler {
        client,
        store: Arc::clone(&store),
        interval: interval_changes,
    };
    let polling = tokio::spawn(scheduler.run(shutdown.clone()));
    let reload = reloader.map(|reloader| -> ReloadFn {
        Arc::new(move || {
            let reloader = Arc::clone(&reloader);
            Box::pin(async move { reloader.reload().await })
        })
    });
    let state = Arc::new(WebState {
        metrics,
        store,
        telemetry_path: web.telemetry_path,
        web: web_config,
        reload,
    });
    server::serve(listener, state, shutdown).await;

    // The scheduler saw the same signal; give its polls their grace.
    let wait = SHUTDOWN_GRACE + Duration::from_secs(1);
    if tokio::time::timeout(wait, polling).await.is_err() {
        tracing::warn!("the scheduler did not stop in time");
    }
    Ok(())
}

/// Says whether one poll of every instance per interval fits each region's
/// budget, assuming one page per instance until polls tell more.
fn report_budget_fit(config: &Config) {
    let pages = config.instances.iter().map(|i| (i.region.as_str(), 1));
    for fit in budget_fit(pages, config.poll_interval, config.api.rate_limit) {
        let (region, demand, limit) = (&fit.region, fit.demand, fit.limit);
        if fit.fits() {
            tracing::info!(%region, demand, limit, "the poll interval fits the request budget");
        } else {
            tracing::warn!(
                %region,
                demand,
                limit,
                shortest_interval = ?fit.shortest_interval(),
                keys_needed = fit.keys_needed(),
                "the poll interval does not fit the request budget: cycles will take longer; \
                 raise poll.interval to at least shortest_interval, or split the instances \
                 over keys_needed API keys (replicas with keys of their own)"
            );
        }
    }
}

/// Shows each region's budget from the start, not only after a request.
fn show_budgets(metrics: &Metrics, config: &Config) {
    let regions: HashSet<&str> = config.instances.iter().map(|i| i.region.as_str()).collect();
    for region in regions {
        metrics
            .api
            .set_budget(DESCRIBE_INSTANCE_BACKUPS, region, config.api.rate_limit);
    }
}

/// Reads the configuration file again and puts it in force.
struct Reloader {
    source: ConfigSource,
    client: Arc<ApiClient>,
    store: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
    interval: watch::Sender<Duration>,
    renewer: Arc<Renewer>,
}

impl Reloader {
    async fn reload(&self) -> Result<String, String> {
        let outcome = self.try_reload().await;
        self.store.record_reload(outcome.is_ok(), unix_now_f64());
        match &outcome {
            Ok(summary) => {
                tracing::info!(file = %self.source.file.display(), %summary, "config reloaded")
            }
            Err(cause) => tracing::error!(%cause, "config not reloaded; the previous one stays"),
        }
        outcome
    }

    async fn try_reload(&self) -> Result<String, String> {
        let config = config::load(&self.source.file).map_err(|e| e.to_string())?;
        let config = self.source.shard.apply(config);
        let env = |key: &str| std::env::var(key).ok();
        let resolved =
            credentials::resolve(config.credentials.as_ref(), &env).map_err(|e| e.to_string())?;
        let (credential, renewal) = obtain(resolved).await?;
        self.renewer.start(renewal);

        let before: HashSet<String> = self.store.instances().into_iter().map(|i| i.id).collect();
        let after: HashSet<&str> = config.instances.iter().map(|i| i.id.as_str()).collect();
        self.client.update(config.api.clone(), credential);
        self.store.set_instances(&config.instances);
        self.interval.send_replace(config.poll_interval);
        show_budgets(&self.metrics, &config);
        report_budget_fit(&config);
        self.store.set_interval(config.poll_interval);

        // New instances are polled now rather than at the next cycle.
        let added: Vec<_> = config
            .instances
            .iter()
            .filter(|i| !before.contains(&i.id))
            .cloned()
            .collect();
        for instance in &added {
            let (client, store, instance) = (
                Arc::clone(&self.client),
                Arc::clone(&self.store),
                instance.clone(),
            );
            tokio::spawn(async move { scheduler::poll(&client, &store, &instance).await });
        }
        let removed = before
            .iter()
            .filter(|id| !after.contains(id.as_str()))
            .count();
        Ok(format!(
            "config reloaded: {} instances, {} added, {removed} removed",
            config.instances.len(),
            added.len()
        ))
    }
}

/// SIGHUP reloads the configuration; without a file to reload from it is
/// logged and ignored rather than ending the process.
fn spawn_hangup_handler(reloader: Option<Arc<Reloader>>, mut shutdown: watch::Receiver<bool>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Installing a handler fails only without a signal driver, which the
        // runtime always has here.
        let mut hangups = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
        loop {
            tokio::select! {
                _ = hangups.recv() => {}
                _ = shutdown.changed() => return,
            }
            match &reloader {
                Some(reloader) => {
                    let _ = reloader.reload().await;
                }
                None => tracing::warn!("SIGHUP ignored: the demo has no config file to reload"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (reloader, shutdown);
}

/// Unix time with fractions, for the metrics.
pub fn unix_now_f64() -> f64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9
}
