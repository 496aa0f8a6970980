//! The protected endpoint: TLS with certificates made here, basic auth with
//! bcrypt hashes, mutual TLS, certificate rotation without a restart, and a
//! bad web config file, all through the web config file of the Prometheus
//! exporter toolkit.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{run, simple_scenario, start_simulator, write_config, Exporter, TempDir, SECRET_KEY};
use crs_backup_exporter::simulator::SimulatorHandle;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// The name the server certificate is made for; the client resolves it to
/// 127.0.0.1 itself, so no name service is involved.
const HOST: &str = "exporter.test";

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A certificate for `name` signed by the CA: (certificate, key) in PEM.
    fn issue(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn client(pki: &Pki, address: SocketAddr, identity: Option<(String, String)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap())
        .resolve(HOST, address)
        .tls_info(true)
        .timeout(Duration::from_secs(5));
    if let Some((cert, key)) = identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

fn url(address: SocketAddr, path: &str) -> String {
    format!("https://{HOST}:{}{path}", address.port())
}

/// Starts the exporter with a web config file against a simulator.
fn start(dir: &TempDir, sim_url: &str) -> Exporter {
    let instances = [("crs-secure01", "ap-guangzhou")];
    let config = write_config(dir, sim_url, "1h", &instances, SECRET_KEY);
    let config = config.display().to_string();
    let web = dir.0.join("web.yml").display().to_string();
    Exporter::start(
        dir,
        &["--config.file", &config, "--web.config.file", &web],
        &[],
    )
}

async fn wait_ready(client: &reqwest::Client, exporter: &Exporter) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(url(exporter.address, "/-/ready")).send().await {
            if response.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not ready over TLS; log:\n{}", exporter.log_text());
}

#[test]
fn tls_and_basic_auth_protect_everything_but_the_probes() {
    let (runtime, sim) = start_simulator(simple_scenario(&[("crs-secure01", "ap-guangzhou")]));
    runtime.block_on(tls_and_basic_auth_protect_everything_but_the_probes_with(
        &sim,
    ));
}

async fn tls_and_basic_auth_protect_everything_but_the_probes_with(sim: &SimulatorHandle) {
    let pki = Pki::new();
    let dir = TempDir::new("tls");
    let (cert, key) = pki.issue(HOST);
    dir.write("cert.pem", &cert);
    dir.write("key.pem", &key);
    let hash = bcrypt::hash("scrape-password", 4).unwrap();
    dir.write("web.yml", &format!("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  prometheus: '{hash}'\n"));
    let exporter = start(&dir, &sim.url());
    let client = client(&pki, exporter.address, None);
    wait_ready(&client, &exporter).await;

    let metrics = url(exporter.address, "/metrics");
    let ok = client
        .get(&metrics)
        .basic_auth("prometheus", Some("scrape-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok
        .text()
        .await
        .unwrap()
        .contains("tencentcloud_redis_backups{instance_id=\"crs-secure01\""));
    let wrong = client
        .get(&metrics)
        .basic_auth("prometheus", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let unknown = client
        .get(&metrics)
        .basic_auth("mallory", Some("scrape-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    let none = client.get(&metrics).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"],
        "Basic realm=\"crs-backup-exporter\""
    );
    let reload = client
        .post(url(exporter.address, "/-/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 401, "reloading needs the password too");

    // The probes answer without credentials.
    let healthy = client
        .get(url(exporter.address, "/-/healthy"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthy.status(), 200);

    // Plain HTTP on the TLS port gets nothing, nor does a client that does
    // not trust the certificate.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/metrics", exporter.address))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    let untrusting = reqwest::Client::builder()
        .resolve(HOST, exporter.address)
        .build()
        .unwrap();
    assert!(untrusting.get(&metrics).send().await.is_err());
}

#[test]
fn mutual_tls_turns_away_clients_without_a_certificate() {
    let (runtime, sim) = start_simulator(simple_scenario(&[("crs-secure01", "ap-guangzhou")]));
    runtime.block_on(mutual_tls_turns_away_clients_without_a_certificate_with(
        &sim,
    ));
}

async fn mutual_tls_turns_away_clients_without_a_certificate_with(sim: &SimulatorHandle) {
    let pki = Pki::new();
    let dir = TempDir::new("mtls");
    let (cert, key) = pki.issue(HOST);
    dir.write("cert.pem", &cert);
    dir.write("key.pem", &key);
    dir.write("ca.pem", &pki.ca.pem());
    dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n",
    );
    let exporter = start(&dir, &sim.url());
    let with_cert = client(&pki, exporter.address, Some(pki.issue("prometheus")));
    wait_ready(&with_cert, &exporter).await;

    let response = with_cert
        .get(url(exporter.address, "/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let without = client(&pki, exporter.address, None);
    assert!(without
        .get(url(exporter.address, "/metrics"))
        .send()
        .await
        .is_err());
    let stranger = Pki::new();
    let foreign = client(&pki, exporter.address, Some(stranger.issue("prometheus")));
    assert!(
        foreign
            .get(url(exporter.address, "/metrics"))
            .send()
            .await
            .is_err(),
        "a certificate of another CA"
    );
}

#[test]
fn certificates_rotate_without_a_restart_and_a_bad_file_keeps_the_last_good_one() {
    let (runtime, sim) = start_simulator(simple_scenario(&[("crs-secure01", "ap-guangzhou")]));
    runtime.block_on(
        certificates_rotate_without_a_restart_and_a_bad_file_keeps_the_last_good_one_with(&sim),
    );
}

async fn certificates_rotate_without_a_restart_and_a_bad_file_keeps_the_last_good_one_with(
    sim: &SimulatorHandle,
) {
    let pki = Pki::new();
    let dir = TempDir::new("rotate-tls");
    let (first, first_key) = pki.issue(HOST);
    dir.write("cert.pem", &first);
    dir.write("key.pem", &first_key);
    dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n",
    );
    let exporter = start(&dir, &sim.url());
    wait_ready(&client(&pki, exporter.address, None), &exporter).await;
    let first_der = peer_certificate(&pki, &exporter).await;

    let (second, second_key) = pki.issue(HOST);
    dir.write("cert.pem", &second);
    dir.write("key.pem", &second_key);
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_certificate(&pki, &exporter).await == first_der {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second_der = peer_certificate(&pki, &exporter).await;

    // A broken file is reported and the last good configuration stays.
    dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: missing.pem\n  key_file: key.pem\n",
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(peer_certificate(&pki, &exporter).await, second_der);
    let log = exporter.log_text();
    assert!(
        log.contains("web config not reloaded") && log.contains("missing.pem"),
        "{log}"
    );
}

async fn peer_certificate(pki: &Pki, exporter: &Exporter) -> Vec<u8> {
    // A new client for each call: a pooled connection would keep the old one.
    let response = client(pki, exporter.address, None)
        .get(url(exporter.address, "/-/healthy"))
        .send()
        .await
        .unwrap();
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("TLS info was asked for");
    info.peer_certificate()
        .expect("the server sent a certificate")
        .to_vec()
}

#[test]
fn a_bad_web_config_stops_start_up_with_the_fix() {
    let dir = TempDir::new("badweb");
    let web = dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: nowhere.pem\n  key_file: key.pem\n",
    );
    let config = write_config(
        &dir,
        "http://127.0.0.1:9",
        "1h",
        &[("crs-secure01", "ap-guangzhou")],
        SECRET_KEY,
    );
    let args = [
        "--config.file",
        &config.display().to_string(),
        "--web.config.file",
        &web.display().to_string(),
        "--web.listen-address",
        "127.0.0.1:0",
    ];
    let (status, _, stderr) = run(&args, &[], &dir.0);
    assert!(!status.success());
    assert!(
        stderr.contains("web.yml") && stderr.contains("nowhere.pem") && stderr.contains("fix:"),
        "{stderr}"
    );

    let web = dir.write(
        "web.yml",
        "basic_auth_users:\n  prometheus: plaintext-password\n",
    );
    let args = [
        "--config.check",
        "--config.file",
        &config.display().to_string(),
        "--web.config.file",
        &web.display().to_string(),
    ];
    let (status, _, stderr) = run(&args, &[], &dir.0);
    assert!(!status.success());
    assert!(stderr.contains("not a bcrypt hash"), "{stderr}");
}
