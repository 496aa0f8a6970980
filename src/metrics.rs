//! The metrics: the snapshot turned into Prometheus families at scrape
//! time, beside the exporter's own counters and the process metrics.
//!
//! The per-instance families are built from the snapshot rather than kept
//! in gauge vectors, so that an instance removed from the config loses its
//! series at once, and the age of the newest backup is computed at the
//! moment of the scrape. The prometheus crate's types and text encoder do
//! the rest.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    TextEncoder,
};

use crate::backup::StatusBucket;
use crate::client::{DESCRIBE_INSTANCE_BACKUPS, PAGE_LIMIT};
use crate::failure::FailureReason;
use crate::ratelimit::budget_fit;
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
    /// The `code` values in use: the server names them, so their number is
    /// capped to keep the series bounded whatever it sends.
    codes: Arc<Mutex<HashSet<String>>>,
}

/// The most distinct `code` values; later new ones count as `other`.
const MAX_CODES: usize = 64;

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
        let codes = Arc::default();
        Ok(ApiMetrics {
            requests,
            duration,
            budget,
            admitted,
            waited,
            codes,
        })
    }

    /// Counts one answer (or failure) and how long it took.
    pub fn observe_request(&self, action: &str, code: &str, seconds: f64) {
        let code = {
            let mut codes = self.codes.lock().expect("no code panics holding this lock");
            if codes.contains(code) {
                code
            } else if codes.len() < MAX_CODES {
                codes.insert(code.to_string());
                code
            } else {
                "other"
            }
        };
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

/// Every metric of the process.
///
/// The per-instance families grow with the number of instances and change
/// only when a poll ends, so their text is prepared once per change and
/// reused by every scrape until the next; only the age of the newest backup,
/// which moves with the clock, is written per scrape. The exporter's own
/// counters and the process metrics are few and go through the registry.
pub struct Metrics {
    registry: Registry,
    pub api: ApiMetrics,
    store: Arc<SnapshotStore>,
    now: fn() -> f64,
    prepared: Mutex<Arc<Prepared>>,
    /// Each instance's rendered lines, by instance ID.
    cache: Mutex<HashMap<String, InstanceText>>,
}

/// The rendering of one version of the snapshot.
#[derive(Default)]
struct Prepared {
    version: Option<u64>,
    /// Shared by every scrape of this version, never copied.
    text: Bytes,
    /// The label set of each age series, and the start time it counts from.
    ages: Vec<(String, f64)>,
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
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let prepared = Mutex::new(Arc::new(Prepared::default()));
        let cache = Mutex::new(HashMap::new());
        Ok(Metrics {
            registry,
            api,
            store,
            now,
            prepared,
            cache,
        })
    }

    /// The text exposition of every metric, in pieces to send one after
    /// the other: the prepared part is shared, not copied, so concurrent
    /// scrapes cost little memory.
    pub fn render(&self) -> Vec<Bytes> {
        let prepared = self.prepared();
        let mut own = Vec::with_capacity(8192);
        encode(&self.registry.gather(), &mut own);
        let mut ages = Vec::with_capacity(prepared.ages.len() * 100);
        write_ages(&mut ages, &prepared.ages, (self.now)());
        vec![Bytes::from(own), prepared.text.clone(), Bytes::from(ages)]
    }

    /// The rendering of the snapshot as it is now; made again only when the
    /// snapshot changed. The lock is held only while it is made, so that
    /// scrapes of an unchanged snapshot never wait on each other.
    fn prepared(&self) -> Arc<Prepared> {
        let mut prepared = self
            .prepared
            .lock()
            .expect("no code panics holding this lock");
        let version = self.store.version();
        if prepared.version != Some(version) {
            let mut cache = self.cache.lock().expect("no code panics holding this lock");
            let mut fresh = prepare(&self.store, &mut cache);
            fresh.version = Some(version);
            *prepared = Arc::new(fresh);
        }
        Arc::clone(&prepared)
    }

    /// The whole exposition in one buffer, for tests and benchmarks.
    pub fn render_text(&self) -> Vec<u8> {
        self.render().concat()
    }
}

/// Encodes families as text. Encoding into a Vec fails only for a family
/// without samples, and those are left out before.
fn encode(families: &[MetricFamily], out: &mut Vec<u8>) {
    if let Err(err) = TextEncoder::new().encode(families, out) {
        tracing::error!(cause = %err, "metrics could not be encoded");
    }
}

/// Renders everything the snapshot holds but the ages; instances whose
/// state did not change since the last time reuse their lines.
fn prepare(store: &SnapshotStore, cache: &mut HashMap<String, InstanceText>) -> Prepared {
    let mut by_family: Vec<String> = vec![String::new(); INSTANCE_FAMILIES.len()];
    let mut ages = Vec::new();
    let mut pages: Vec<(String, u64)> = Vec::new();
    let count = store.with_instances(|instances| {
        cache.retain(|id, _| instances.contains_key(id));
        for (id, state) in instances {
            let is_stale = cache
                .get(id)
                .is_none_or(|text| text.generation != state.generation);
            if is_stale {
                cache.insert(id.clone(), render_instance(state));
            }
            let text = &cache[id];
            for (family, lines) in by_family.iter_mut().zip(&text.lines) {
                family.push_str(lines);
            }
            if let Some(newest) = state.summary.as_ref().and_then(|s| s.newest_completed) {
                let labels = format!(
                    "{{instance_id=\"{}\",region=\"{}\"}}",
                    escape(&state.instance.id),
                    escape(&state.instance.region)
                );
                ages.push((labels, newest.start_time as f64));
            }
            let backups = state.summary.as_ref().map_or(0, |s| s.total());
            pages.push((
                state.instance.region.clone(),
                backups.div_ceil(PAGE_LIMIT).max(1),
            ));
        }
        instances.len()
    });

    let mut text = Vec::with_capacity(by_family.iter().map(String::len).sum::<usize>() + 8192);
    for (family, lines) in INSTANCE_FAMILIES.iter().zip(&by_family) {
        if !lines.is_empty() {
            let kind = if family.kind() == MetricType::COUNTER {
                "counter"
            } else {
                "gauge"
            };
            let header = format!(
                "# HELP {0} {1}\n# TYPE {0} {kind}\n",
                family.name(),
                family.help()
            );
            text.extend_from_slice(header.as_bytes());
            text.extend_from_slice(lines.as_bytes());
        }
    }
    encode(&exporter_families(store, count, &pages), &mut text);
    Prepared {
        version: None,
        text: Bytes::from(text),
        ages,
    }
}

/// The families about the exporter itself rather than one instance.
fn exporter_families(
    store: &SnapshotStore,
    count: usize,
    pages: &[(String, u64)],
) -> Vec<MetricFamily> {
    let mut families = Families::new();
    let pages = pages
        .iter()
        .map(|(region, count)| (region.as_str(), *count));
    for fit in budget_fit(pages, store.interval(), 1) {
        let labels = vec![
            label("action", DESCRIBE_INSTANCE_BACKUPS),
            label("region", &fit.region),
        ];
        families.push(Family::BudgetDemand, labels, fit.demand);
    }
    for ((account, region), found) in store.discovery() {
        let labels = || vec![label("account", &account), label("region", &region)];
        families.push(
            Family::DiscoverySuccess,
            labels(),
            if found.is_some() { 1.0 } else { 0.0 },
        );
        if let Some(found) = found {
            families.push(Family::DiscoveredInstances, labels(), found as f64);
        }
    }
    let cycles = store.cycles();
    if let Some(duration) = cycles.last_duration {
        families.push(Family::CycleDuration, vec![], duration.as_secs_f64());
    }
    families.push(Family::Cycles, vec![], cycles.completed as f64);
    families.push(Family::Instances, vec![], count as f64);
    families.push(Family::PollInterval, vec![], store.interval().as_secs_f64());
    let reload = store.reload();
    families.push(
        Family::ReloadOk,
        vec![],
        if reload.is_last_ok { 1.0 } else { 0.0 },
    );
    families.push(Family::ReloadSuccessAt, vec![], reload.last_success_at);
    families
        .0
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

/// Writes the age family for `now`, from the prepared label sets.
fn write_ages(out: &mut Vec<u8>, ages: &[(String, f64)], now: f64) {
    if ages.is_empty() {
        return;
    }
    let family = Family::LastSuccessAge;
    let header = format!(
        "# HELP {0} {1}\n# TYPE {0} gauge\n",
        family.name(),
        family.help()
    );
    out.extend_from_slice(header.as_bytes());
    for (labels, start) in ages {
        let line = format!("{}{labels} {}\n", family.name(), now - start);
        out.extend_from_slice(line.as_bytes());
    }
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The per-instance and cycle families, in the order they are built.
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
    BudgetDemand,
    DiscoverySuccess,
    DiscoveredInstances,
    PollInterval,
}

impl Family {
    const ALL: [Family; 20] = [
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
        Family::BudgetDemand,
        Family::DiscoverySuccess,
        Family::DiscoveredInstances,
        Family::PollInterval,
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
            Family::BudgetDemand => {
                "tencentcloud_redis_backup_exporter_budget_demand_requests_per_second"
            }
            Family::DiscoverySuccess => "tencentcloud_redis_backup_exporter_discovery_success",
            Family::DiscoveredInstances => {
                "tencentcloud_redis_backup_exporter_discovered_instances"
            }
            Family::PollInterval => "tencentcloud_redis_backup_exporter_poll_interval_seconds",
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
            Family::BudgetDemand => {
                "Requests per second that polling every instance once per interval needs, \
                 by region: pages of the last polls (one before the first) over the interval. \
                 Above tencentcloud_redis_api_rate_limit_requests_per_second, cycles overrun."
            }
            Family::DiscoverySuccess => {
                "1 if the last listing of the account's instances in the region worked, else 0."
            }
            Family::DiscoveredInstances => {
                "Live instances the last good listing found, before include and exclude patterns."
            }
            Family::PollInterval => "How often each instance is polled (poll.interval).",
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

/// The families with one or more series per instance, in the order they
/// are written.
const INSTANCE_FAMILIES: [Family; 10] = [
    Family::Backups,
    Family::BackupsLocked,
    Family::LastSuccessTimestamp,
    Family::LastSuccessSize,
    Family::OldestInProgressStart,
    Family::MaxAge,
    Family::PollSuccess,
    Family::PollLastSuccess,
    Family::PollErrors,
    Family::InstanceInfo,
];

/// One instance's lines of each of [`INSTANCE_FAMILIES`], kept until the
/// instance's state changes.
struct InstanceText {
    generation: u64,
    lines: [String; INSTANCE_FAMILIES.len()],
}

/// Writes one instance's series. These lines are written here rather than
/// through the prometheus crate's encoder because with thousands of
/// instances building its objects for every change cost far more time and
/// memory than the text itself (see BENCHMARKS.md); the format is the
/// plain `name{labels} value` line.
fn render_instance(state: &InstanceState) -> InstanceText {
    let instance = &state.instance;
    let base = [
        ("instance_id", instance.id.as_str()),
        ("region", instance.region.as_str()),
    ];
    let mut lines: [String; INSTANCE_FAMILIES.len()] = Default::default();
    let mut put = |family: Family, extra: &[(&str, &str)], value: f64| {
        let at = INSTANCE_FAMILIES
            .iter()
            .position(|f| *f == family)
            .expect("a per-instance family");
        write_line(&mut lines[at], family.name(), &base, extra, value);
    };
    if let Some(summary) = &state.summary {
        for bucket in StatusBucket::ALL {
            put(
                Family::Backups,
                &[("status", bucket.label())],
                summary.count(bucket) as f64,
            );
        }
        put(Family::BackupsLocked, &[], summary.locked as f64);
        if let Some(newest) = summary.newest_completed {
            put(Family::LastSuccessTimestamp, &[], newest.start_time as f64);
            if let Some(size) = newest.size_bytes {
                put(Family::LastSuccessSize, &[], size as f64);
            }
        }
        if let Some(start) = summary.oldest_in_progress_start {
            put(Family::OldestInProgressStart, &[], start as f64);
        }
    }
    put(Family::MaxAge, &[], instance.max_backup_age.as_secs_f64());
    if let Some(is_ok) = state.is_last_poll_ok {
        put(Family::PollSuccess, &[], if is_ok { 1.0 } else { 0.0 });
    }
    if let Some(at) = state.last_success_at {
        put(Family::PollLastSuccess, &[], at);
    }
    for reason in FailureReason::ALL {
        put(
            Family::PollErrors,
            &[("reason", reason.label())],
            state.errors[reason.index()] as f64,
        );
    }
    let name = instance.name.as_deref().unwrap_or("");
    let mut info = vec![
        ("instance_name", name),
        ("account", instance.account.as_str()),
    ];
    info.extend(
        instance
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    put(Family::InstanceInfo, &info, 1.0);
    InstanceText {
        generation: state.generation,
        lines,
    }
}

/// Appends `name{labels} value` to `out`.
fn write_line(
    out: &mut String,
    name: &str,
    base: &[(&str, &str)],
    extra: &[(&str, &str)],
    value: f64,
) {
    use std::fmt::Write;
    out.push_str(name);
    out.push('{');
    for (index, (key, label_value)) in base.iter().chain(extra).enumerate() {
        if index > 0 {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{key}=\"{}\"", escape(label_value));
    }
    let _ = writeln!(out, "}} {value}");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> f64 {
        1_000_000.0
    }

    #[test]
    fn error_codes_from_the_server_cannot_grow_the_series_without_bound() {
        let metrics = Metrics::new(Arc::new(SnapshotStore::default()), now);
        for n in 0..100 {
            metrics
                .api
                .observe_request("DescribeInstanceBackups", &format!("Odd.Code{n}"), 0.1);
        }
        let text = String::from_utf8(metrics.render_text()).unwrap();
        let codes = text
            .lines()
            .filter(|l| l.starts_with("tencentcloud_redis_api_requests_total{"))
            .count();
        assert_eq!(codes, MAX_CODES + 1, "{text}");
        assert!(text.contains("code=\"other\"} 36"), "{text}");
    }

    #[test]
    fn the_age_is_computed_at_each_scrape_from_a_prepared_rendering() {
        let store = Arc::new(SnapshotStore::default());
        let metrics = Metrics::new(Arc::clone(&store), now);
        let instance = crate::config::Instance {
            id: "crs-aaaaaaaa".into(),
            account: "default".into(),
            region: "ap-guangzhou".into(),
            name: None,
            labels: Default::default(),
            max_backup_age: std::time::Duration::from_secs(60),
        };
        store.set_instances(&[instance]);
        let mut builder = crate::backup::SummaryBuilder::default();
        builder.add(&crate::backup::Backup {
            id: Some("b".into()),
            start_time: Some(999_000),
            status: Some(2),
            ..Default::default()
        });
        store.record_success("crs-aaaaaaaa", builder.finish(), 999_500.0);
        let text = String::from_utf8(metrics.render_text()).unwrap();
        let age = concat!(
            "tencentcloud_redis_backup_last_success_age_seconds",
            "{instance_id=\"crs-aaaaaaaa\",region=\"ap-guangzhou\"} 1000"
        );
        assert!(text.contains(age), "{text}");
        assert_eq!(
            text.matches("# TYPE tencentcloud_redis_backups gauge")
                .count(),
            1
        );
    }
}
