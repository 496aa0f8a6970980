//! End-to-end check of the monitoring shipped beside the exporter: the rules
//! in `deploy/prometheus/alerts.yaml` and the dashboards in `dashboards/`,
//! run against the real binary's demo, a real Prometheus and a real
//! Alertmanager, every one of them listening on 127.0.0.1 only.
//!
//! The tests start every process themselves, on free ports and in a fresh
//! temporary directory, and end exactly those processes, by their handles,
//! however they exit (panics included). Prometheus, Alertmanager and promtool
//! come from the Debian packages `prometheus` and `prometheus-alertmanager`;
//! without them the tests fail and say how to install them, rather than
//! skip.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The scrape job the rules assume (see the head of alerts.yaml).
const JOB: &str = "crs-backup-exporter";

/// Upper bound for the whole end-to-end test; the inner waits give up a
/// little earlier so that their message, not a bare timeout, is reported.
const TEST_LIMIT: Duration = Duration::from_secs(120);
const WAIT_LIMIT: Duration = Duration::from_secs(105);

const INSTALL_HINT: &str = "install Prometheus and Alertmanager first: \
     apt-get install prometheus prometheus-alertmanager";

/// Alerts the demo must raise, as (alertname, instance_id), and nothing
/// else: crs-demo0002 is stale, crs-demo0005 cannot be read and crs-demo0006
/// has no backup at all. The others, crs-demo0001 first, are healthy.
const EXPECTED_FIRING: [(&str, &str); 3] = [
    ("CrsBackupStale", "crs-demo0002"),
    ("CrsBackupPollFailing", "crs-demo0005"),
    ("CrsBackupNeverCompleted", "crs-demo0006"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_work_against_the_demo() {
    tokio::time::timeout(TEST_LIMIT, run_stack_checks())
        .await
        .expect("the end-to-end test took longer than its 120 s limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_metrics_pass_promtool_check_metrics() {
    tokio::time::timeout(Duration::from_secs(60), check_demo_exposition())
        .await
        .expect("the promtool check of the demo's metrics took longer than 60 s");
}

#[test]
fn metric_names_are_read_from_promql() {
    let expr = r#"sum by (action, le) (rate(a_bucket{job=~"x",code!="y"}[5m]))
        / on (job) group_left (team) b_total offset 5m > bool 6 * 3600
        unless c:d:rate5m or histogram_quantile(0.9, e) and up"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(names, ["a_bucket", "b_total", "c:d:rate5m", "e", "up"]);
}

/// Starts the demo, Alertmanager with a webhook receiver, and Prometheus
/// with the repository's rules, then checks dashboards and alerts.
async fn run_stack_checks() {
    let tools = Tools::find();
    let dir = TempDir::new("e2e");
    let mut processes = Processes::default();
    let client = http_client();
    let deadline = Instant::now() + WAIT_LIMIT;

    let (webhook, received) = start_webhook().await;
    let exporter = start_demo(&mut processes, &dir, &client, deadline).await;
    let alertmanager = start_alertmanager(&mut processes, &tools, &dir, webhook);
    let ready = format!("http://{alertmanager}/-/ready");
    processes.wait_for_ok(&client, &ready, deadline).await;
    let prometheus = start_prometheus(&mut processes, &tools, &dir, exporter, alertmanager);
    let ready = format!("http://{prometheus}/-/ready");
    processes.wait_for_ok(&client, &ready, deadline).await;

    check_metric_names(&client, exporter).await;
    let prom = Prom {
        client: client.clone(),
        addr: prometheus,
    };
    wait_for_first_scrapes(&prom, deadline).await;
    check_dashboard_queries(&prom, deadline).await;
    check_alerts(&prom, &received, deadline).await;
    processes.succeeded();
}

async fn check_demo_exposition() {
    let tools = Tools::find();
    let dir = TempDir::new("metrics");
    let mut processes = Processes::default();
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(50);
    let exporter = start_demo(&mut processes, &dir, &client, deadline).await;

    let text = get_text(&client, &format!("http://{exporter}/metrics")).await;
    let path = dir.path().join("metrics.txt");
    fs::write(&path, &text).expect("the temporary directory is writable");
    let output = Command::new(&tools.promtool)
        .args(["check", "metrics"])
        .stdin(File::open(&path).expect("the file was just written"))
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics rejected the demo's /metrics ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    processes.succeeded();
}

// ---------------------------------------------------------------------------
// The processes under test
// ---------------------------------------------------------------------------

/// Where the external programs are; failing (not skipping) when missing.
struct Tools {
    prometheus: PathBuf,
    alertmanager: PathBuf,
    promtool: PathBuf,
}

impl Tools {
    fn find() -> Tools {
        Tools {
            prometheus: find_program("prometheus"),
            alertmanager: find_program("prometheus-alertmanager"),
            promtool: find_program("promtool"),
        }
    }
}

fn find_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH; {INSTALL_HINT}"))
}

/// Child processes this test started. Dropping it, on success, while a
/// panic unwinds or when the time limit drops the test, kills and reaps
/// each of them by its handle; unless the test said it succeeded, it also
/// prints the end of each one's log.
#[derive(Default)]
struct Processes {
    running: Vec<(String, Child, PathBuf)>,
    is_success: bool,
}

impl Processes {
    /// Starts `program` with its stdout and stderr in `<dir>/<name>.log`.
    fn start(&mut self, name: &str, program: &Path, args: &[String], dir: &TempDir) {
        let log = dir.path().join(format!("{name}.log"));
        let out = File::create(&log).expect("the temporary directory is writable");
        let err = out
            .try_clone()
            .expect("a log file handle can be duplicated");
        let child = Command::new(program)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Everything here talks to 127.0.0.1; no proxy may intervene.
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", program.display()));
        self.running.push((name.to_string(), child, log));
    }

    /// Waits until `url` answers 200, failing at once if one of the
    /// processes has exited meanwhile (a port taken, a bad config).
    async fn wait_for_ok(&mut self, client: &reqwest::Client, url: &str, deadline: Instant) {
        loop {
            let status = client.get(url).send().await.map(|r| r.status());
            if matches!(status, Ok(s) if s.is_success()) {
                return;
            }
            for (name, child, _) in &mut self.running {
                if let Ok(Some(exit)) = child.try_wait() {
                    panic!("{name} exited early ({exit}) while waiting for {url}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not answer 200 in time: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Marks the checks as passed: the logs need not be shown.
    fn succeeded(&mut self) {
        self.is_success = true;
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (name, child, log) in &mut self.running {
            // Already exited is fine; the point is that none outlives us.
            let _ = child.kill();
            let _ = child.wait();
            if !self.is_success {
                let text = fs::read_to_string(&*log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                eprintln!("--- last lines of the {name} log ---\n{tail}");
            }
        }
    }
}

/// A directory of its own under the system's temporary directory, removed
/// when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(purpose: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!(
            "crs-backup-exporter-{purpose}-{}-{nanos}",
            std::process::id()
        );
        let path = std::env::temp_dir().join(name);
        fs::create_dir_all(&path).expect("the system temporary directory is writable");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).expect("the temporary directory is writable");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A port that was free a moment ago: bind port 0, read it, let it go.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("127.0.0.1 accepts listeners");
    listener
        .local_addr()
        .expect("a bound listener has an address")
}

/// Runs `crs-backup-exporter demo` and waits until its first poll cycle
/// has finished (`/-/ready`).
async fn start_demo(
    processes: &mut Processes,
    dir: &TempDir,
    client: &reqwest::Client,
    deadline: Instant,
) -> SocketAddr {
    let addr = free_port();
    let args = [
        "demo",
        "--web.listen-address",
        &addr.to_string(),
        "--poll.interval",
        "5s",
    ];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let binary = Path::new(env!("CARGO_BIN_EXE_crs-backup-exporter"));
    processes.start("exporter", binary, &args, dir);
    let ready = format!("http://{addr}/-/ready");
    processes.wait_for_ok(client, &ready, deadline).await;
    addr
}

/// Alertmanager sending every alert to the test's webhook at once.
fn start_alertmanager(
    processes: &mut Processes,
    tools: &Tools,
    dir: &TempDir,
    webhook: SocketAddr,
) -> SocketAddr {
    let config = format!(
        "route:\n  receiver: webhook\n  group_by: [alertname, instance_id]\n  \
         group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: webhook\n    webhook_configs:\n      \
         - url: http://{webhook}/alerts\n"
    );
    let config = dir.write("alertmanager.yml", &config);
    let addr = free_port();
    let args = [
        format!("--config.file={}", config.display()),
        format!(
            "--storage.path={}",
            dir.path().join("alertmanager").display()
        ),
        format!("--web.listen-address={addr}"),
        // Empty: no cluster, so nothing listens beyond the web port.
        "--cluster.listen-address=".to_string(),
    ];
    processes.start("alertmanager", &tools.alertmanager, &args, dir);
    addr
}

/// Prometheus scraping and evaluating every second, with the repository's
/// rules and the Alertmanager above.
fn start_prometheus(
    processes: &mut Processes,
    tools: &Tools,
    dir: &TempDir,
    exporter: SocketAddr,
    alertmanager: SocketAddr,
) -> SocketAddr {
    let rules = dir.write("alerts.yaml", &with_short_for(&read_repo_file(RULES)));
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        \
         - targets: ['{alertmanager}']\n\
         scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      \
         - targets: ['{exporter}']\n",
        rules = rules.display(),
    );
    let config = dir.write("prometheus.yml", &config);
    let addr = free_port();
    let args = [
        format!("--config.file={}", config.display()),
        format!(
            "--storage.tsdb.path={}",
            dir.path().join("prometheus").display()
        ),
        format!("--web.listen-address={addr}"),
    ];
    processes.start("prometheus", &tools.prometheus, &args, dir);
    addr
}

/// The rules with every `for:` cut to 2 seconds. In production the rules
/// wait minutes to hours before firing; this test cannot wait that long,
/// and 2 s still takes each alert through its pending state.
fn with_short_for(rules: &str) -> String {
    let lines = rules.lines().map(|line| {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with("for:") {
            format!("{}for: 2s", &line[..indent])
        } else {
            line.to_string()
        }
    });
    lines.collect::<Vec<_>>().join("\n") + "\n"
}

/// Alert notifications received from Alertmanager, one JSON body per POST.
type Received = Arc<Mutex<Vec<Value>>>;

/// A webhook receiver on 127.0.0.1 that records the body of every POST.
async fn start_webhook() -> (SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("127.0.0.1 accepts listeners");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let received = Received::default();
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_webhook(stream, store.clone()));
        }
    });
    (addr, received)
}

async fn serve_webhook(stream: tokio::net::TcpStream, store: Received) {
    let service = service_fn(move |request: Request<Incoming>| {
        let store = store.clone();
        async move {
            let body = request.into_body().collect().await?.to_bytes();
            let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            store
                .lock()
                .expect("no thread panics while holding it")
                .push(value);
            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

// ---------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a plain HTTP client can be built")
}

async fn get_text(client: &reqwest::Client, url: &str) -> String {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Prometheus's HTTP API.
struct Prom {
    client: reqwest::Client,
    addr: SocketAddr,
}

impl Prom {
    /// The result vector of an instant query; panics on a query error,
    /// which retrying cannot mend.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let url = format!("http://{}/api/v1/query", self.addr);
        let response = self.client.post(&url).form(&[("query", expr)]).send().await;
        let text = response
            .expect("Prometheus answers")
            .text()
            .await
            .expect("a body");
        let answer: Value = serde_json::from_str(&text).expect("Prometheus answers JSON");
        assert_eq!(answer["status"], "success", "query `{expr}` failed: {text}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every alert Prometheus holds, pending or firing.
    async fn alerts(&self) -> Vec<Value> {
        let url = format!("http://{}/api/v1/alerts", self.addr);
        let answer: Value = serde_json::from_str(&get_text(&self.client, &url).await)
            .expect("Prometheus answers JSON");
        answer["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

const RULES: &str = "deploy/prometheus/alerts.yaml";
const DASHBOARDS: [&str; 2] = [
    "dashboards/backups-overview.json",
    "dashboards/exporter-health.json",
];
const RUNBOOKS: &str = "docs/runbooks.md";

fn read_repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// Every metric name in the rules' and dashboards' queries, and every
/// `tencentcloud_*` or `process_*` word in them and the runbooks, is one
/// the exporter exposes or a recording rule records. `up` is allowed in
/// the rules only: Prometheus itself writes it for each target.
async fn check_metric_names(client: &reqwest::Client, exporter: SocketAddr) {
    let exposition = get_text(client, &format!("http://{exporter}/metrics")).await;
    let rules = read_repo_file(RULES);
    let mut known = exposed_names(&exposition);
    known.extend(recorded_names(&rules));

    let mut unknown = BTreeSet::new();
    for expr in rule_exprs(&rules) {
        unknown.extend(
            metric_names(&expr)
                .into_iter()
                .filter(|n| n != "up" && !known.contains(n)),
        );
    }
    for query in DASHBOARDS.iter().flat_map(|path| dashboard_queries(path)) {
        unknown.extend(
            metric_names(&query.expr)
                .into_iter()
                .filter(|n| !known.contains(n)),
        );
    }
    for path in DASHBOARDS.iter().chain([&RULES, &RUNBOOKS]) {
        let words = mentioned_names(&read_repo_file(path));
        unknown.extend(
            words
                .into_iter()
                .filter(|n| !known.contains(n))
                .map(|n| format!("{n} ({path})")),
        );
    }
    assert!(
        unknown.is_empty(),
        "names the exporter does not expose: {unknown:?}"
    );
}

/// Waits until Prometheus holds the demo's per-instance series and the
/// rate-based recording rules have had two scrapes to work from.
async fn wait_for_first_scrapes(prom: &Prom, deadline: Instant) {
    let ready = [
        format!("tencentcloud_redis_backup_max_age_seconds{{job=\"{JOB}\"}}"),
        "instance_action_code:tencentcloud_redis_api_requests:rate5m".to_string(),
    ];
    loop {
        let instances = prom.query(&ready[0]).await.len();
        let rates = prom.query(&ready[1]).await.len();
        if instances == 6 && rates > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not get the demo's data: {instances} instances, {rates} rates"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every panel query and variable query of both dashboards, with the
/// variables set as a user choosing "All" would, returns data. Queries are
/// retried until the deadline because rates need a few scrapes.
async fn check_dashboard_queries(prom: &Prom, deadline: Instant) {
    let mut waiting: Vec<DashboardQuery> = DASHBOARDS
        .iter()
        .flat_map(|path| dashboard_queries(path))
        .collect();
    assert!(
        waiting.len() > 20,
        "only {} dashboard queries found",
        waiting.len()
    );
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for query in waiting {
            if !query.has_data(&prom.query(&query.expr).await) {
                still.push(query);
            }
        }
        waiting = still;
        if Instant::now() >= deadline && !waiting.is_empty() {
            let empty: Vec<String> = waiting
                .iter()
                .map(|q| format!("{}: {}", q.place, q.expr))
                .collect();
            panic!("dashboard queries without data:\n{}", empty.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The stale backup of crs-demo0002 reaches Alertmanager's webhook; the
/// demo raises exactly the alerts it should, and none about crs-demo0001.
async fn check_alerts(prom: &Prom, received: &Received, deadline: Instant) {
    let stale = wait_for_webhook_alert(received, "CrsBackupStale", "crs-demo0002", deadline).await;
    let description = stale["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    for part in [
        "crs-demo0002",
        "ap-guangzhou",
        "than the 1d 2h 0m 0s allowed",
    ] {
        assert!(
            description.contains(part),
            "stale description lacks `{part}`: {description}"
        );
    }
    assert!(
        !description.contains("last poll"),
        "crs-demo0002 polls fine: {description}"
    );
    let runbook = stale["annotations"]["runbook_url"]
        .as_str()
        .unwrap_or_default();
    assert!(
        runbook.ends_with("docs/runbooks.md#backup-stale"),
        "runbook_url: {runbook}"
    );

    let expected: BTreeSet<(String, String)> = EXPECTED_FIRING
        .iter()
        .map(|(a, i)| (a.to_string(), i.to_string()))
        .collect();
    let firing = wait_for_firing(prom, &expected, deadline).await;
    assert_eq!(
        firing, expected,
        "Prometheus fires other alerts than the demo calls for"
    );
    // The description's own queries find the failure reason and that no
    // poll of crs-demo0005 ever worked; the reason needs two polls counted.
    let parts = [
        "none has succeeded since the exporter started",
        "Most frequent failure: instance_not_found.",
    ];
    wait_for_description(
        prom,
        "CrsBackupPollFailing",
        "crs-demo0005",
        &parts,
        deadline,
    )
    .await;

    let about_first = |alert: &Value| alert["labels"]["instance_id"] == "crs-demo0001";
    let pending_or_firing: Vec<Value> = prom
        .alerts()
        .await
        .into_iter()
        .filter(about_first)
        .collect();
    assert!(
        pending_or_firing.is_empty(),
        "alerts about crs-demo0001: {pending_or_firing:?}"
    );
    let notified: Vec<Value> = webhook_alerts(received)
        .into_iter()
        .filter(about_first)
        .collect();
    assert!(
        notified.is_empty(),
        "notifications about crs-demo0001: {notified:?}"
    );
}

async fn wait_for_webhook_alert(
    received: &Received,
    alertname: &str,
    instance_id: &str,
    deadline: Instant,
) -> Value {
    loop {
        let found = webhook_alerts(received).into_iter().find(|alert| {
            alert["status"] == "firing"
                && alert["labels"]["alertname"] == alertname
                && alert["labels"]["instance_id"] == instance_id
        });
        if let Some(alert) = found {
            return alert;
        }
        assert!(
            Instant::now() < deadline,
            "no {alertname} notification for {instance_id} reached the webhook; got: {:?}",
            webhook_alerts(received)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until Prometheus's alert `alertname` about `instance_id` has a
/// description containing every one of `parts`.
async fn wait_for_description(
    prom: &Prom,
    alertname: &str,
    instance_id: &str,
    parts: &[&str],
    deadline: Instant,
) {
    loop {
        let alerts = prom.alerts().await;
        let alert = alerts.iter().find(|alert| {
            alert["labels"]["alertname"] == alertname
                && alert["labels"]["instance_id"] == instance_id
        });
        let description = alert
            .and_then(|alert| alert["annotations"]["description"].as_str())
            .unwrap_or_default();
        if parts.iter().all(|part| description.contains(part)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{alertname} for {instance_id} lacks one of {parts:?}: {description:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every alert in every notification received so far.
fn webhook_alerts(received: &Received) -> Vec<Value> {
    let bodies = received
        .lock()
        .expect("no thread panics while holding it")
        .clone();
    let alerts = bodies.iter().filter_map(|body| body["alerts"].as_array());
    alerts.flatten().cloned().collect()
}

/// Waits until every expected alert fires, then returns all firing ones.
async fn wait_for_firing(
    prom: &Prom,
    expected: &BTreeSet<(String, String)>,
    deadline: Instant,
) -> BTreeSet<(String, String)> {
    loop {
        let firing: BTreeSet<(String, String)> = prom
            .alerts()
            .await
            .iter()
            .filter(|alert| alert["state"] == "firing")
            .map(|alert| {
                let label = |name: &str| alert["labels"][name].as_str().unwrap_or("").to_string();
                (label("alertname"), label("instance_id"))
            })
            .collect();
        if firing.is_superset(expected) || Instant::now() >= deadline {
            return firing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------
// Reading the rules, dashboards and exposition
// ---------------------------------------------------------------------------

/// Every `expr` in a rules file: a one-line value or an indented block.
fn rule_exprs(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut exprs = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if !value.starts_with('|') && !value.starts_with('>') {
            exprs.push(value.to_string());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block = lines[at + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent);
        exprs.push(block.copied().collect::<Vec<_>>().join("\n"));
    }
    exprs
}

fn recorded_names(rules: &str) -> Vec<String> {
    let names = rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- record:"));
    names.map(|name| name.trim().to_string()).collect()
}

/// One query of a dashboard, ready to send to Prometheus.
struct DashboardQuery {
    /// Where it is: file, panel and target, or variable.
    place: String,
    /// The PromQL, with the dashboard variables substituted.
    expr: String,
    /// For a `label_values` variable, the label it reads.
    label: Option<String>,
}

impl DashboardQuery {
    /// A result has data when it is not empty and, for a variable, its
    /// series carry the variable's label.
    fn has_data(&self, result: &[Value]) -> bool {
        match &self.label {
            None => !result.is_empty(),
            Some(label) => result.iter().any(|s| s["metric"][label].is_string()),
        }
    }
}

/// Every query of a dashboard: its panels' targets and its query variables.
fn dashboard_queries(path: &str) -> Vec<DashboardQuery> {
    let dashboard: Value =
        serde_json::from_str(&read_repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut queries = Vec::new();
    collect_panel_queries(path, &dashboard["panels"], &mut queries);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str());
        let query = query.unwrap_or_else(|| panic!("{path}: variable without query"));
        let (selector, label) = parse_label_values(query)
            .unwrap_or_else(|| panic!("{path}: not a label_values() query: {query}"));
        let place = format!("{path} variable {}", variable["name"]);
        queries.push(DashboardQuery {
            place,
            expr: substitute(&selector),
            label: Some(label),
        });
    }
    queries
}

fn collect_panel_queries(path: &str, panels: &Value, out: &mut Vec<DashboardQuery>) {
    for panel in panels.as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let place = format!("{path} panel {} target {}", panel["title"], target["refId"]);
            assert!(!expr.is_empty(), "{place} has no expr");
            out.push(DashboardQuery {
                place,
                expr: substitute(expr),
                label: None,
            });
        }
        // Rows hold their panels while collapsed.
        collect_panel_queries(path, &panel["panels"], out);
    }
}

/// `label_values(selector, label)` as (selector, label).
fn parse_label_values(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim().to_string(), label.trim().to_string()))
}

/// The dashboard variables as Grafana fills them in: the job this test
/// scrapes, "All" (the `.*` regex) for region and instance, and a rate
/// window that spans enough 1 s scrapes.
fn substitute(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "1m")
        .replace("${job}", JOB)
        .replace("$job", JOB)
        .replace("${region}", ".*")
        .replace("$region", ".*")
        .replace("${instance_id}", ".*")
        .replace("$instance_id", ".*");
    assert!(!expr.contains('$'), "unknown variable left in `{expr}`");
    expr
}

/// Metric names the exposition text declares or has samples of; histogram
/// and summary families add their suffixed series names.
fn exposed_names(exposition: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for line in exposition.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            let (Some(name), kind) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_string());
            if matches!(kind, Some("histogram") | Some("summary")) {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// Words of a text that look like this exporter's or the process's metric
/// names, or recording rules over them.
fn mentioned_names(text: &str) -> BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    text.split(|c: char| !is_name_char(c))
        .filter(|word| {
            let base = word.rsplit(':').nth(1).unwrap_or(word);
            base.starts_with("tencentcloud_") || word.starts_with("process_")
        })
        .map(str::to_string)
        .collect()
}

/// The metric names a PromQL expression selects: identifiers that are not
/// keywords, function names, label names or durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const OPERATORS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];
    // Aggregations may be followed by `by (...)` rather than their argument.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut at, mut in_braces, mut in_label_list, mut grouping) = (0, false, false, false);
    while at < chars.len() {
        let c = chars[at];
        at += 1;
        match c {
            '"' | '\'' | '`' => at = skip_string(&chars, at, c),
            '[' => at = skip_past(&chars, at, ']'),
            '{' => in_braces = true,
            '}' => in_braces = false,
            '(' => (in_label_list, grouping) = (grouping, false),
            ')' => in_label_list = false,
            c if c.is_ascii_digit() || c == '.' => at = skip_while(&chars, at, is_number_char),
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = at - 1;
                at = skip_while(&chars, at, |c| {
                    c.is_ascii_alphanumeric() || c == '_' || c == ':'
                });
                let word: String = chars[start..at].iter().collect();
                let next = chars[at..].iter().find(|c| !c.is_whitespace());
                let word_is = |list: &[&str]| list.contains(&word.as_str());
                if in_braces || in_label_list || word_is(&OPERATORS) || word_is(&AGGREGATIONS) {
                    continue;
                }
                if word_is(&GROUPING) {
                    grouping = true;
                } else if next != Some(&'(') {
                    names.insert(word);
                }
            }
            _ => {}
        }
    }
    names
}

fn is_number_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.'
}

fn skip_while(chars: &[char], mut at: usize, keep: impl Fn(char) -> bool) -> usize {
    while at < chars.len() && keep(chars[at]) {
        at += 1;
    }
    at
}

fn skip_past(chars: &[char], at: usize, end: char) -> usize {
    skip_while(chars, at, |c| c != end) + 1
}

/// Skips a string literal that opened just before `at`, escapes included.
fn skip_string(chars: &[char], mut at: usize, quote: char) -> usize {
    while at < chars.len() && chars[at] != quote {
        at += if chars[at] == '\\' && quote != '`' {
            2
        } else {
            1
        };
    }
    at + 1
}
