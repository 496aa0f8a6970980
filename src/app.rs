//! Wiring: builds the parts from a checked configuration, runs them until
//! shutdown, and reloads the configuration on SIGHUP or `POST /-/reload`.
//!
//! A reload loads and checks the whole file, and obtains every account's
//! credentials, before it changes anything: when that fails the old
//! configuration stays in force, the caller gets the error, and the reload
//! metric says so.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::accounts::Fleet;
use crate::client::{DESCRIBE_INSTANCES, DESCRIBE_INSTANCE_BACKUPS};
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::ratelimit::budget_fit;
use crate::scheduler::{Scheduler, SHUTDOWN_GRACE};
use crate::server::{self, ReloadFn, WebState};
use crate::shard::Shard;
use crate::snapshot::SnapshotStore;
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
    #[error("cannot listen on {address}: {cause}; fix: {}", listen_fix(cause))]
    Listen {
        address: String,
        cause: std::io::Error,
    },
    #[error("{0}")]
    WebConfig(#[from] WebConfigError),
    #[error("{0}")]
    Credentials(String),
}

/// What to do when the listen address cannot be bound.
fn listen_fix(cause: &std::io::Error) -> &'static str {
    match cause.kind() {
        std::io::ErrorKind::AddrInUse => "free the port or choose another --web.listen-address",
        std::io::ErrorKind::PermissionDenied => "use a port above 1023, or grant the capability",
        _ => "write --web.listen-address as HOST:PORT (127.0.0.1:9887, [::]:9887) or :PORT",
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
    source: Option<ConfigSource>,
    web: WebOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StartError> {
    let web_config = Arc::new(WebConfigWatcher::new(web.config_file.clone())?);
    let store = Arc::new(SnapshotStore::new(&[]));
    let metrics = Arc::new(Metrics::new(Arc::clone(&store), unix_now_f64));
    let fleet = Arc::new(Fleet::new(
        Arc::clone(&store),
        metrics.api.clone(),
        shutdown.clone(),
    ));
    let shard = source.as_ref().map(|s| s.shard).unwrap_or_default();
    fleet
        .configure(&config, shard)
        .await
        .map_err(StartError::Credentials)?;
    store.record_reload(true, unix_now_f64());
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
        accounts = config.accounts.len(),
        instances = store.instances().len(),
        interval = ?config.poll_interval,
        rate_limit = config.api.rate_limit,
        "listening"
    );

    let (interval, interval_changes) = watch::channel(config.poll_interval);
    let reloader = source.map(|source| {
        let (fleet, store, metrics) =
            (Arc::clone(&fleet), Arc::clone(&store), Arc::clone(&metrics));
        Arc::new(Reloader {
            source,
            fleet,
            store,
            metrics,
            interval,
        })
    });
    spawn_hangup_handler(reloader.clone(), shutdown.clone());

    let scheduler = Scheduler {
        fleet,
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

/// Says whether one poll of every listed instance per interval fits each
/// region's budget, assuming one page per instance until polls tell more.
/// Discovered instances are counted by the demand metric once found.
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
                 over keys_needed API keys (accounts, or replicas with keys of their own)"
            );
        }
    }
}

/// Shows each region's budget from the start, not only after a request.
fn show_budgets(metrics: &Metrics, config: &Config) {
    let mut regions: HashSet<(&str, &str)> = config
        .instances
        .iter()
        .map(|i| (DESCRIBE_INSTANCE_BACKUPS, i.region.as_str()))
        .collect();
    for discovery in config.accounts.iter().filter_map(|a| a.discovery.as_ref()) {
        for region in &discovery.regions {
            regions.insert((DESCRIBE_INSTANCE_BACKUPS, region));
            regions.insert((DESCRIBE_INSTANCES, region));
        }
    }
    for (action, region) in regions {
        metrics
            .api
            .set_budget(action, region, config.api.rate_limit);
    }
}

/// Reads the configuration file again and puts it in force.
struct Reloader {
    source: ConfigSource,
    fleet: Arc<Fleet>,
    store: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
    interval: watch::Sender<Duration>,
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
        let before: HashSet<String> = self.store.instances().into_iter().map(|i| i.id).collect();
        let added = self.fleet.configure(&config, self.source.shard).await?;
        let after = self.store.instances();
        let removed = before
            .iter()
            .filter(|id| !after.iter().any(|i| &i.id == *id))
            .count();
        self.interval.send_replace(config.poll_interval);
        show_budgets(&self.metrics, &config);
        report_budget_fit(&config);
        self.store.set_interval(config.poll_interval);
        let summary = format!(
            "config reloaded: {} instances, {} added, {removed} removed",
            after.len(),
            added.len()
        );
        // New instances are polled now rather than at the next cycle.
        self.fleet.poll_now(added);
        Ok(summary)
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
