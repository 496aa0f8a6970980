//! Peers that misbehave on purpose: clients that open connections and never
//! finish a request, an API endpoint that redirects elsewhere, and one
//! instance whose API hangs while others should go on being polled.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    get, simple_scenario, start_simulator, write_config, Exporter, TempDir, SECRET_ID, SECRET_KEY,
};

const GZ: &str = "ap-guangzhou";

#[test]
fn idle_connections_are_cut_off_and_do_not_starve_the_probes() {
    let (_runtime, sim) = start_simulator(simple_scenario(&[("crs-slowlor1", GZ)]));
    let dir = TempDir::new("slowloris");
    let config = write_config(&dir, &sim.url(), "1h", &[("crs-slowlor1", GZ)], SECRET_KEY);
    let mut exporter =
        Exporter::start(&dir, &["--config.file", &config.display().to_string()], &[]);
    exporter.wait_ready(Duration::from_secs(30));

    // More half-sent requests than the exporter serves at once.
    let mut idle = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(exporter.address).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        idle.push(stream);
    }
    let asked = Instant::now();
    let (code, _) = get(&exporter.url("/-/healthy")).expect("the probe is answered");
    assert_eq!(code, 200);
    assert!(
        asked.elapsed() < Duration::from_secs(25),
        "probe took {:?}",
        asked.elapsed()
    );

    // The idle ones were closed by the exporter, not left open forever.
    let first = &mut idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buffer = [0u8; 256];
    let read = first.read(&mut buffer);
    assert!(
        read.is_ok(),
        "the exporter ended the connection rather than hold it: {read:?}"
    );
    let log = exporter.log_text();
    assert!(!log.contains("Too many open files"), "{log}");
}

#[test]
fn a_redirecting_endpoint_is_not_followed_and_gets_no_token() {
    // The second server counts every connection it receives.
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere_address = elsewhere.local_addr().unwrap();
    let visits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&visits);
    std::thread::spawn(move || {
        for stream in elsewhere.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let redirector = TcpListener::bind("127.0.0.1:0").unwrap();
    let redirector_address = redirector.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in redirector.incoming().flatten() {
            let mut buffer = [0u8; 8192];
            let _ = stream.read(&mut buffer);
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{elsewhere_address}/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });

    let dir = TempDir::new("redirect");
    let text = format!(
        "api:\n  endpoint: http://{redirector_address}\n  max_retries: 0\npoll:\n  interval: 1h\n\
         credentials:\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\n  token: session-token-never-forwarded\n\
         instances:\n  - instance_id: crs-redirct1\n    region: {GZ}\n"
    );
    let config = dir.write("config.yaml", &text).display().to_string();
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    let m = exporter.scrape();
    assert_eq!(
        m.instance(
            "tencentcloud_redis_backup_poll_success",
            "crs-redirct1",
            GZ,
            ""
        ),
        Some(0.0)
    );
    assert_eq!(m.get("tencentcloud_redis_api_requests_total{action=\"DescribeInstanceBackups\",code=\"http_307\"}"), Some(1.0));
    assert_eq!(
        visits.load(Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
}

#[test]
fn a_hanging_instance_does_not_slow_the_polls_of_the_others() {
    let instances = [("crs-hanging1", GZ), ("crs-healthy1", "ap-shanghai")];
    let (_runtime, sim) = start_simulator(simple_scenario(&instances));
    // Requests for one region go to a server that accepts and never answers.
    let black_hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_address = black_hole.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in black_hole.incoming().flatten() {
            held.push(stream);
        }
    });
    let dir = TempDir::new("hanging");
    let key_file = dir.write("secret_key", SECRET_KEY);
    let text = format!(
        "api:\n  endpoint: {}\n  endpoints:\n    {GZ}: http://{hole_address}\n  timeout: 5s\n  max_retries: 0\n\
         poll:\n  interval: 1s\ncredentials:\n  secret_id: {SECRET_ID}\n  secret_key_file: {}\n\
         instances:\n  - instance_id: crs-hanging1\n    region: {GZ}\n  - instance_id: crs-healthy1\n    region: ap-shanghai\n",
        sim.url(),
        key_file.display()
    );
    let config = dir.write("config.yaml", &text).display().to_string();
    let _exporter = Exporter::start(&dir, &["--config.file", &config], &[]);

    // Over six seconds the healthy instance is polled about once a second,
    // although every poll of the other one hangs for five.
    std::thread::sleep(Duration::from_secs(7));
    let healthy = sim
        .arrivals()
        .iter()
        .filter(|a| a.region == "ap-shanghai")
        .count();
    assert!(
        healthy >= 5,
        "the healthy instance was polled {healthy} times in 7 s"
    );
}
