//! What the integration tests share: temporary directories, free ports, the
//! real binary as a child process, and reading its metrics.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crs_backup_exporter::simulator::{self, Scenario, SimBackup, SimInstance, SimulatorHandle};

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_crs-backup-exporter");

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let unique = format!(
            "crs-test-{tag}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).expect("temp dir can be made");
        TempDir(path)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("temp file can be written");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port exists");
    listener
        .local_addr()
        .expect("bound sockets have an address")
}

/// The exporter binary running as a child; killed when dropped.
pub struct Exporter {
    child: Option<Child>,
    pub address: SocketAddr,
    pub log: PathBuf,
    /// Where standard output goes, when it is kept.
    pub stdout: Option<PathBuf>,
}

impl Exporter {
    /// Starts the binary with `args` plus a free listen address; stderr goes
    /// to `log` inside `dir`.
    pub fn start(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(dir, args, env, false)
    }

    /// As [`Exporter::start`], and keeps standard output in a file beside
    /// the log, so that a test can read everything the process wrote.
    pub fn start_keeping_stdout(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(dir, args, env, true)
    }

    fn spawn(dir: &TempDir, args: &[&str], env: &[(&str, &str)], is_stdout_kept: bool) -> Self {
        let address = free_port();
        let log = dir.0.join(format!("exporter-{}.log", address.port()));
        let stderr = std::fs::File::create(&log).expect("log file can be made");
        let stdout_path = dir.0.join(format!("exporter-{}.out", address.port()));
        let stdout = if is_stdout_kept {
            Stdio::from(std::fs::File::create(&stdout_path).expect("stdout file can be made"))
        } else {
            Stdio::null()
        };
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .arg(format!("--web.listen-address={address}"))
            .env_remove("RUST_LOG")
            .env_remove("TENCENTCLOUD_SECRET_ID")
            .env_remove("TENCENTCLOUD_SECRET_KEY")
            .env("HOME", &dir.0)
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(stderr);
        let child = command.spawn().expect("the exporter binary starts");
        Exporter {
            child: Some(child),
            address,
            log,
            stdout: is_stdout_kept.then_some(stdout_path),
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The resident memory of the process, in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Waits until `/-/ready` answers 200.
    pub fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the exporter exited with {status}; log:\n{}",
                    self.log_text()
                );
            }
            if get(&self.url("/-/ready")).is_some_and(|(code, _)| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the exporter was not ready within {within:?}; log:\n{}",
            self.log_text()
        );
    }

    pub fn scrape(&self) -> Metrics {
        let (code, body) = get(&self.url("/metrics")).expect("/metrics answers");
        assert_eq!(code, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Scrapes until `is_done` holds; fails with the last scrape and the
    /// log when `within` passes first.
    pub fn wait_for(&self, within: Duration, is_done: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + within;
        loop {
            let m = self.scrape();
            if is_done(&m) {
                return m;
            }
            let log = self.log_text();
            assert!(
                Instant::now() < deadline,
                "not reached; scrape:\n{}\nlog:\n{log}",
                m.text
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the child runs").id()
    }

    /// Sends `signal` (such as `TERM`) and waits for the exit.
    pub fn stop_with(&mut self, signal: &str, within: Duration) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "kill -{signal} {pid} failed"
        );
        let mut child = self.child.take().expect("the child runs");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("the child can be waited for") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the exporter did not exit within {within:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the binary to completion with `args`; returns its status, stdout
/// and stderr.
pub fn run(args: &[&str], env: &[(&str, &str)], home: &Path) -> (ExitStatus, String, String) {
    let output = Command::new(BINARY)
        .args(args)
        .env_remove("TENCENTCLOUD_SECRET_ID")
        .env_remove("TENCENTCLOUD_SECRET_KEY")
        .env("HOME", home)
        .envs(env.iter().copied())
        .output()
        .expect("the exporter binary runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status, text(output.stdout), text(output.stderr))
}

/// A GET over a plain socket (HTTP/1.0, so the server closes when done):
/// status code and body. Keeps the tests free of a blocking HTTP client.
pub fn get(url: &str) -> Option<(u16, String)> {
    request("GET", url)
}

/// A POST without a body, as [`get`].
pub fn post(url: &str) -> Option<(u16, String)> {
    request("POST", url)
}

/// A POST with a JSON body, as [`get`].
pub fn post_json(url: &str, body: &str) -> Option<(u16, String)> {
    request_with_body("POST", url, body)
}

/// A DELETE without a body, as [`get`].
pub fn delete(url: &str) -> Option<(u16, String)> {
    request("DELETE", url)
}

fn request(method: &str, url: &str) -> Option<(u16, String)> {
    request_with_body(method, url, "")
}

fn request_with_body(method: &str, url: &str, body: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.split_once('/') {
        Some((host, path)) => (host, format!("/{path}")),
        None => (rest, "/".to_string()),
    };
    let mut stream = TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let length = body.len();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\n{body}"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Starts the simulator on its own runtime, so that it keeps answering
/// while the test thread blocks. Keep both alive for the whole test.
pub fn start_simulator(scenario: Scenario) -> (tokio::runtime::Runtime, SimulatorHandle) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime starts");
    let handle = runtime
        .block_on(simulator::start(scenario, "127.0.0.1:0"))
        .expect("the simulator starts");
    (runtime, handle)
}

/// A scrape, as series text (`name{labels}`) to value.
#[derive(Debug)]
pub struct Metrics {
    pub series: BTreeMap<String, f64>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let series = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect();
        Metrics {
            series,
            text: text.to_string(),
        }
    }

    /// The value of `name` for an instance, with extra labels after
    /// `instance_id` and `region`, as the exporter orders them.
    pub fn instance(&self, name: &str, id: &str, region: &str, extra: &str) -> Option<f64> {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(",{extra}")
        };
        let key = format!("{name}{{instance_id=\"{id}\",region=\"{region}\"{extra}}}");
        self.series.get(&key).copied()
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.series.get(key).copied()
    }

    /// Whether any series of `name` mentions `id`.
    pub fn mentions(&self, name: &str, id: &str) -> bool {
        self.series
            .keys()
            .any(|k| k.starts_with(&format!("{name}{{")) && k.contains(id))
    }
}

/// The key pair the simple scenarios accept.
pub const SECRET_ID: &str = "AKIDcommon0000000000000000000000000";
pub const SECRET_KEY: &str = "common-secret-key-0a1b2c3d4e5f";

/// A scenario with one fresh completed backup per instance.
pub fn simple_scenario(instances: &[(&str, &str)]) -> Scenario {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let instances = instances
        .iter()
        .map(|(id, region)| SimInstance {
            id: id.to_string(),
            region: region.to_string(),
            name: id.to_string(),
            backups: vec![SimBackup {
                id: format!("{id}-b0"),
                start: now - 3600,
                status: 2,
                is_locked: false,
                size: 1,
                backup_type: "1".into(),
                remark: String::new(),
            }],
            is_legacy: false,
        })
        .collect();
    Scenario {
        secret_id: SECRET_ID.into(),
        secret_key: SECRET_KEY.into(),
        token: None,
        instances,
        rate_limit: 20,
        utc_offset: time::macros::offset!(+8),
    }
}

/// Writes `config.yaml` for the simulator at `url`, watching `instances`;
/// the secret key goes in the file `secret_key`, `secret_key` holding it.
pub fn write_config(
    dir: &TempDir,
    url: &str,
    interval: &str,
    instances: &[(&str, &str)],
    secret_key: &str,
) -> PathBuf {
    let key_file = dir.write("secret_key", secret_key);
    let mut text = format!(
        "api:\n  endpoint: {url}\n  max_retries: 0\npoll:\n  interval: {interval}\n\
         credentials:\n  secret_id: {SECRET_ID}\n  secret_key_file: {}\ninstances:\n",
        key_file.display()
    );
    for (id, region) in instances {
        text.push_str(&format!("  - instance_id: {id}\n    region: {region}\n"));
    }
    dir.write("config.yaml", &text)
}
