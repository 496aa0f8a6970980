//! The metrics: the snapshot turned into Prometheus families at scrape
//! time, beside the exporter's own counters and the process metrics.
//!
//! The per-instance families are built from the snapshot by a collector
//! rather than kept in gauge vectors, so that an instance removed from the
//! config loses its series at once, and the age of the newest backup is
//! computed at the moment of the scrape. The prometheus crate's registry
//! and text encoder do the rest.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    TextEncoder,
};

use crate::backup::StatusBucket;
use crate::failure::FailureReason;
use crate::snapshot::{InstanceState, SnapshotStore};

/// The version and revision this binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("CRS_EXPORTER_REVISION");

/// The exporter's own measurements of its API calls.
#[derive(Clone)]
pub struct ApiMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    budget: GaugeVec,
    admitted: IntCounterVec,
    waited: CounterVec,
}

impl ApiMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "tencentcloud_redis_api_requests_total",
                "API requests sent, by action and result: Success, the API's error code, \
                 or a transport fault.",
            ),
            &["action", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tencentcloud_redis_api_request_duration_seconds",
                "Time from sending an API request to its complete answer.",
            )
            .buckets(vec![0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["action"],
        )?;
        let budget = GaugeVec::new(
            Opts::new(
                "tencentcloud_redis_api_rate_limit_requests_per_second",
                "Configured request budget per second, per action and region.",
            ),
            &["action", "region"],
        )?;
        let admitted = IntCounterVec::new(
            Opts::new(
                "tencentcloud_redis_api_rate_limiter_requests_total",
                "Requests let through by the rate limiter, retries included.",
            ),
            &["action", "region"],
        )?;
        let waited = CounterVec::new(
            Opts::new(
                "tencentcloud_redis_api_rate_limiter_wait_seconds_total",
                "Time requests spent waiting for request budget.",
            ),
            &["action", "region"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(budget.clone()))?;
        registry.register(Box::new(admitted.clone()))?;
        registry.register(Box::new(waited.clone()))?;
        Ok(ApiMetrics {
            requests,
            duration,
            budget,
            admitted,
            waited,
        })
    }

    /// Counts one answer (or failure) and how long it took.
    pub fn observe_request(&self, action: &str, code: &str, seconds: f64) {
        self.requests.with_label_values(&[action, code]).inc();
        self.duration.with_label_values(&[action]).observe(seconds);
    }

    /// Shows a budget before its first request.
    pub fn set_budget(&self, action: &str, region: &str, limit: u32) {
        self.budget
            .with_label_values(&[action, region])
            .set(f64::from(limit));
    }

    /// Counts one request let through by the limiter.
    pub fn observe_admission(&self, action: &str, region: &str, limit: u32, waited: f64) {
        self.budget
            .with_label_values(&[action, region])
            .set(f64::from(limit));
        self.admitted.with_label_values(&[action, region]).inc();
        self.waited
            .with_label_values(&[action, region])
            .inc_by(waited);
    }
}

/// Every metric of the process, behind one registry.
pub struct Metrics {
    registry: Registry,
    pub api: ApiMetrics,
}

impl Metrics {
    /// `now` tells the Unix time, for the age computed at scrape.
    pub fn new(store: Arc<SnapshotStore>, now: fn() -> f64) -> Self {
        // Registering fixed, distinct names cannot fail.
        Metrics::try_new(store, now).expect("metric names are valid and distinct")
    }

    fn try_new(store: Arc<SnapshotStore>, now: fn() -> f64) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let api = ApiMetrics::new(&registry)?;
        let build = GaugeVec::new(
            Opts::new(
                "tencentcloud_redis_backup_exporter_build_info",
                "Always 1; the version and revision of this exporter.",
            ),
            &["version", "revision"],
        )?;
        build.with_label_values(&[VERSION, REVISION]).set(1.0);
        registry.register(Box::new(build))?;
        registry.register(Box::new(SnapshotCollector::new(store, now)))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics { registry, api })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails for families the encoder cannot
        // represent, which this registry never holds.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(cause = %err, "metrics could not be encoded");
        }
        out
    }
}

/// Builds the per-instance families from the snapshot at each scrape.
struct SnapshotCollector {
    store: Arc<SnapshotStore>,
    now: fn() -> f64,
    descs: Vec<Desc>,
}

/// The families the collector builds, in the order it builds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Backups,
    BackupsLocked,
    LastSuccessTimestamp,
    LastSuccessAge,
    LastSuccessSize,
    OldestInProgressStart,
    MaxAge,
    PollSuccess,
    PollLastSuccess,
    PollErrors,
    InstanceInfo,
    CycleDuration,
    Cycles,
    Instances,
    ReloadOk,
    ReloadSuccessAt,
}

impl Family {
    const ALL: [Family; 16] = [
        Family::Backups,
        Family::BackupsLocked,
        Family::LastSuccessTimestamp,
        Family::LastSuccessAge,
        Family::LastSuccessSize,
        Family::OldestInProgressStart,
        Family::MaxAge,
        Family::PollSuccess,
        Family::PollLastSuccess,
        Family::PollErrors,
        Family::InstanceInfo,
        Family::CycleDuration,
        Family::Cycles,
        Family::Instances,
        Family::ReloadOk,
        Family::ReloadSuccessAt,
    ];

    fn name(self) -> &'static str {
        match self {
            Family::Backups => "tencentcloud_redis_backups",
            Family::BackupsLocked => "tencentcloud_redis_backups_locked",
            Family::LastSuccessTimestamp => {
                "tencentcloud_redis_backup_last_success_timestamp_seconds"
            }
            Family::LastSuccessAge => "tencentcloud_redis_backup_last_success_age_seconds",
            Family::LastSuccessSize => "tencentcloud_redis_backup_last_success_size_bytes",
            Family::OldestInProgressStart => {
                "tencentcloud_redis_backup_oldest_in_progress_start_timestamp_seconds"
            }
            Family::MaxAge => "tencentcloud_redis_backup_max_age_seconds",
            Family::PollSuccess => "tencentcloud_redis_backup_poll_success",
            Family::PollLastSuccess => {
                "tencentcloud_redis_backup_poll_last_success_timestamp_seconds"
            }
            Family::PollErrors => "tencentcloud_redis_backup_poll_errors_total",
            Family::InstanceInfo => "tencentcloud_redis_instance_info",
            Family::CycleDuration => "tencentcloud_redis_backup_exporter_cycle_duration_seconds",
            Family::Cycles => "tencentcloud_redis_backup_exporter_cycles_total",
            Family::Instances => "tencentcloud_redis_backup_exporter_instances",
            Family::ReloadOk => "tencentcloud_redis_backup_exporter_config_last_reload_successful",
            Family::ReloadSuccessAt => {
                "tencentcloud_redis_backup_exporter_config_last_reload_success_timestamp_seconds"
            }
        }
    }

    fn help(self) -> &'static str {
        match self {
            Family::Backups => "Backups in the last successful answer, by status.",
            Family::BackupsLocked => "Backups in the last successful answer that are locked.",
            Family::LastSuccessTimestamp => {
                "Start time of the newest completed backup (status normal, rdb_converting or \
                 rdb_converted), in Unix seconds."
            }
            Family::LastSuccessAge => {
                "Seconds from the start of the newest completed backup to this scrape."
            }
            Family::LastSuccessSize => {
                "Size of the newest completed backup, as the API reports it."
            }
            Family::OldestInProgressStart => {
                "Start time of the oldest backup still in progress, in Unix seconds."
            }
            Family::MaxAge => {
                "Configured age above which the newest completed backup counts as stale."
            }
            Family::PollSuccess => "1 if the last poll of the instance worked, else 0.",
            Family::PollLastSuccess => {
                "When the instance was last polled successfully, in Unix seconds."
            }
            Family::PollErrors => "Failed polls of the instance, by reason.",
            Family::InstanceInfo => "Always 1; the instance's name and configured labels.",
            Family::CycleDuration => "Duration of the last complete poll cycle.",
            Family::Cycles => "Poll cycles completed.",
            Family::Instances => "Instances configured for polling.",
            Family::ReloadOk => "1 if the last load of the configuration file worked, else 0.",
            Family::ReloadSuccessAt => {
                "When the configuration was last loaded successfully, in Unix seconds."
            }
        }
    }

    fn kind(self) -> MetricType {
        match self {
            Family::PollErrors | Family::Cycles => MetricType::COUNTER,
            _ => MetricType::GAUGE,
        }
    }
}

/// The families of one scrape, filled in by [`Families::push`].
struct Families(Vec<MetricFamily>);

impl Families {
    fn new() -> Self {
        Families(
            Family::ALL
                .iter()
                .map(|f| family(f.name(), f.help(), f.kind()))
                .collect(),
        )
    }

    fn push(&mut self, which: Family, labels: Vec<LabelPair>, value: f64) {
        push(&mut self.0[which as usize], labels, value);
    }
}

impl SnapshotCollector {
    fn new(store: Arc<SnapshotStore>, now: fn() -> f64) -> Self {
        let descs = Family::ALL
            .iter()
            .map(|f| {
                let (name, help) = (f.name().to_string(), f.help().to_string());
                Desc::new(name, help, vec![], Default::default()).expect("family names are valid")
            })
            .collect();
        SnapshotCollector { store, now, descs }
    }
}

impl Collector for SnapshotCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = Families::new();
        let now = (self.now)();
        let count = self.store.with_instances(|instances| {
            for state in instances.values() {
                add_instance(&mut families, state, now);
            }
            instances.len()
        });
        let cycles = self.store.cycles();
        if let Some(duration) = cycles.last_duration {
            families.push(Family::CycleDuration, vec![], duration.as_secs_f64());
        }
        families.push(Family::Cycles, vec![], cycles.completed as f64);
        families.push(Family::Instances, vec![], count as f64);
        let reload = self.store.reload();
        families.push(
            Family::ReloadOk,
            vec![],
            if reload.is_last_ok { 1.0 } else { 0.0 },
        );
        families.push(Family::ReloadSuccessAt, vec![], reload.last_success_at);
        families.0
    }
}

/// Adds one instance's series.
fn add_instance(families: &mut Families, state: &InstanceState, now: f64) {
    let instance = &state.instance;
    let base = vec![
        label("instance_id", &instance.id),
        label("region", &instance.region),
    ];
    let with = |name: &str, value: &str| {
        let mut labels = base.clone();
        labels.push(label(name, value));
        labels
    };
    if let Some(summary) = &state.summary {
        for bucket in StatusBucket::ALL {
            families.push(
                Family::Backups,
                with("status", bucket.label()),
                summary.count(bucket) as f64,
            );
        }
        families.push(Family::BackupsLocked, base.clone(), summary.locked as f64);
        if let Some(newest) = summary.newest_completed {
            let start = newest.start_time as f64;
            families.push(Family::LastSuccessTimestamp, base.clone(), start);
            families.push(Family::LastSuccessAge, base.clone(), now - start);
            if let Some(size) = newest.size_bytes {
                families.push(Family::LastSuccessSize, base.clone(), size as f64);
            }
        }
        if let Some(start) = summary.oldest_in_progress_start {
            families.push(Family::OldestInProgressStart, base.clone(), start as f64);
        }
    }
    families.push(
        Family::MaxAge,
        base.clone(),
        instance.max_backup_age.as_secs_f64(),
    );
    if let Some(is_ok) = state.is_last_poll_ok {
        families.push(
            Family::PollSuccess,
            base.clone(),
            if is_ok { 1.0 } else { 0.0 },
        );
    }
    if let Some(at) = state.last_success_at {
        families.push(Family::PollLastSuccess, base.clone(), at);
    }
    for reason in FailureReason::ALL {
        families.push(
            Family::PollErrors,
            with("reason", reason.label()),
            state.errors[reason.index()] as f64,
        );
    }
    let mut info = with("instance_name", instance.name.as_deref().unwrap_or(""));
    info.extend(instance.labels.iter().map(|(k, v)| label(k, v)));
    families.push(Family::InstanceInfo, info, 1.0);
}

fn family(name: &str, help: &str, kind: MetricType) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family
}

fn push(family: &mut MetricFamily, labels: Vec<LabelPair>, value: f64) {
    let mut metric = Metric::default();
    metric.set_label(labels);
    if family.get_field_type() == MetricType::COUNTER {
        let mut counter = Counter::default();
        counter.set_value(value);
        metric.set_counter(counter);
    } else {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    }
    family.mut_metric().push(metric);
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}
