//! Temporary credentials against fakes of the metadata service and STS on
//! 127.0.0.1: obtained at start, renewed before they expire, kept while a
//! renewal fails, and never written to the log.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    run, simple_scenario, start_simulator, Exporter, Metrics, TempDir, SECRET_ID, SECRET_KEY,
};

const TOKEN: &str = "session-token-7c1e-very-secret";
const GZ: &str = "ap-guangzhou";

/// A fake of the metadata service or STS: answers every request with what
/// `answer` makes of (method, path, body), counting requests.
struct Fake {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    is_failing: Arc<AtomicBool>,
}

impl Fake {
    fn start(answer: impl Fn(&str, &str, &str) -> String + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let is_failing = Arc::new(AtomicBool::new(false));
        let (count, failing) = (Arc::clone(&requests), Arc::clone(&is_failing));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                count.fetch_add(1, Ordering::SeqCst);
                let mut parts = head.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let (status, text) = if failing.load(Ordering::SeqCst) {
                    ("500 Internal Server Error", "down".to_string())
                } else {
                    (
                        "200 OK",
                        answer(method, path, &String::from_utf8_lossy(&body)),
                    )
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = reader.get_mut().write_all(response.as_bytes());
            }
        });
        Fake {
            address,
            requests,
            is_failing,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Credentials the simulator accepts, valid for `lifetime` seconds.
fn credentials_json(lifetime: i64) -> String {
    serde_json::json!({
        "TmpSecretId": SECRET_ID,
        "TmpSecretKey": SECRET_KEY,
        "Token": TOKEN,
        "ExpiredTime": now() + lifetime,
        "Expiration": "",
        "Code": "Success",
    })
    .to_string()
}

fn metadata_fake(lifetime: i64) -> Fake {
    Fake::start(move |_, path, _| match path {
        "/latest/meta-data/cam/security-credentials/" => "exporter-role\n".to_string(),
        "/latest/meta-data/cam/security-credentials/exporter-role" => credentials_json(lifetime),
        other => format!("unexpected path {other}"),
    })
}

fn write_config(dir: &TempDir, sim_url: &str, credentials: &str) -> String {
    let text = format!(
        "api:\n  endpoint: {sim_url}\n  max_retries: 0\npoll:\n  interval: 1s\n\
         credentials:\n{credentials}instances:\n  - instance_id: crs-tempcrd1\n    region: {GZ}\n"
    );
    dir.write("config.yaml", &text).display().to_string()
}

fn scenario_with_token() -> crs_backup_exporter::simulator::Scenario {
    let mut scenario = simple_scenario(&[("crs-tempcrd1", GZ)]);
    scenario.token = Some(TOKEN.into());
    scenario
}

fn poll_ok(m: &Metrics) -> bool {
    m.instance(
        "tencentcloud_redis_backup_poll_success",
        "crs-tempcrd1",
        GZ,
        "",
    ) == Some(1.0)
}

#[test]
fn instance_role_credentials_are_renewed_before_they_expire() {
    let (_runtime, sim) = start_simulator(scenario_with_token());
    let metadata = metadata_fake(6);
    let dir = TempDir::new("instance-role");
    let credentials = format!(
        "  source: instance_role\n  metadata_endpoint: {}\n",
        metadata.url()
    );
    let config = write_config(&dir, &sim.url(), &credentials);
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    assert!(poll_ok(&exporter.scrape()), "{}", exporter.log_text());

    // Six-second credentials are renewed every three seconds; polls go on
    // working across each renewal.
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        assert!(poll_ok(&exporter.scrape()), "{}", exporter.log_text());
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = exporter.log_text();
    assert!(
        log.matches("temporary credentials renewed").count() >= 2,
        "{log}"
    );
    // One role listing and one credential fetch each time.
    assert!(metadata.requests.load(Ordering::SeqCst) >= 6);
    assert!(!log.contains(SECRET_KEY) && !log.contains(TOKEN), "{log}");
}

#[test]
fn a_failed_renewal_keeps_the_current_credentials_while_they_are_valid() {
    let (_runtime, sim) = start_simulator(scenario_with_token());
    let metadata = metadata_fake(8);
    let dir = TempDir::new("renewal-fails");
    let credentials = format!(
        "  source: instance_role\n  role_name: exporter-role\n  metadata_endpoint: {}\n",
        metadata.url()
    );
    let config = write_config(&dir, &sim.url(), &credentials);
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    metadata.is_failing.store(true, Ordering::SeqCst);

    // Renewal is due after four seconds and fails; the credentials are good
    // for eight, and polls keep working on them.
    std::thread::sleep(Duration::from_secs(6));
    assert!(poll_ok(&exporter.scrape()), "{}", exporter.log_text());
    let log = exporter.log_text();
    assert!(
        log.contains("renewing credentials failed; the current ones stay in use"),
        "{log}"
    );
}

#[test]
fn web_identity_token_is_exchanged_with_sts() {
    let (_runtime, sim) = start_simulator(scenario_with_token());
    let sts = Fake::start(|method, _, body| {
        let request: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let is_expected = method == "POST"
            && request["WebIdentityToken"] == "oidc-token-from-the-pod"
            && request["RoleArn"] == "qcs::cam::uin/100000:roleName/backup-exporter"
            && request["ProviderId"] == "tke-oidc";
        if !is_expected {
            let error = serde_json::json!({"Code": "InvalidParameter", "Message": body});
            return serde_json::json!({"Response": {"Error": error, "RequestId": "x"}}).to_string();
        }
        let issued: serde_json::Value = serde_json::from_str(&credentials_json(3600)).unwrap();
        let response = serde_json::json!({
            "Credentials": issued,
            "ExpiredTime": issued["ExpiredTime"],
            "Expiration": "",
            "RequestId": "sts-1",
        });
        serde_json::json!({ "Response": response }).to_string()
    });
    let dir = TempDir::new("web-identity");
    let token_file = dir.write("token", "oidc-token-from-the-pod\n");
    let credentials = format!(
        "  source: web_identity\n  sts_endpoint: {}\n  sts_region: {GZ}\n  \
         role_arn: qcs::cam::uin/100000:roleName/backup-exporter\n  provider_id: tke-oidc\n  \
         web_identity_token_file: {}\n",
        sts.url(),
        token_file.display()
    );
    let config = write_config(&dir, &sim.url(), &credentials);
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    assert!(poll_ok(&exporter.scrape()), "{}", exporter.log_text());
    assert_eq!(sts.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn an_unreachable_metadata_service_stops_start_up_with_the_fix() {
    let dir = TempDir::new("no-metadata");
    // Port 9 on 127.0.0.1: nothing listens there, the connection is refused.
    let config = write_config(
        &dir,
        "http://127.0.0.1:9",
        "  source: instance_role\n  metadata_endpoint: http://127.0.0.1:9\n",
    );
    let (status, _, stderr) = run(
        &[
            "--config.file",
            &config,
            "--web.listen-address",
            "127.0.0.1:0",
        ],
        &[],
        &dir.0,
    );
    assert!(!status.success());
    assert!(
        stderr.contains("instance role") && stderr.contains("fix:"),
        "{stderr}"
    );
}
