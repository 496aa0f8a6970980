//! Every fault of the API and the network, one test each: the real binary
//! against the simulator, with the fault switched on for one instance.
//!
//! Each test checks what an operator relies on: the instance's poll fails
//! with the right reason and the right request code, its last good figures
//! stay on /metrics, the other instance polls on, /metrics answers fast,
//! the process lives on, retries happen only where they can help, and the
//! instance recovers once the fault is off. A last test runs every fault at
//! once and searches everything the process wrote for the secrets.

mod common;

use std::time::{Duration, Instant};

use common::{
    delete, free_port, get, post_json, simple_scenario, start_simulator, write_config, Exporter,
    Metrics, TempDir, SECRET_KEY,
};
use crs_backup_exporter::failure::FailureReason;
use crs_backup_exporter::simulator::{Fault, SimulatorHandle};
use tokio::runtime::Runtime;

const FAULTY: &str = "crs-faulty01";
const HEALTHY: &str = "crs-health01";
const GZ: &str = "ap-guangzhou";
const TOKEN: &str = "session-token-fault-tests-4d2c9e";

const POLL_SUCCESS: &str = "tencentcloud_redis_backup_poll_success";
const POLL_ERRORS: &str = "tencentcloud_redis_backup_poll_errors_total";
const LAST_POLL: &str = "tencentcloud_redis_backup_poll_last_success_timestamp_seconds";
const LAST_BACKUP: &str = "tencentcloud_redis_backup_last_success_timestamp_seconds";
const BACKUPS: &str = "tencentcloud_redis_backups";

/// A bound on one scrape while the API misbehaves: /metrics reads a
/// snapshot and never waits on the API, so only a scrape that hangs comes
/// near it. How fast scrapes are is measured in BENCHMARKS.md, not here.
const FAST_SCRAPE: Duration = Duration::from_secs(10);

/// How long any awaited change may take.
const WAIT: Duration = Duration::from_secs(20);

/// An exporter polling two instances of one region every second through
/// the simulator, with a one-second API timeout. Fields drop in order: the
/// simulator stops, then the exporter is killed, then the rest goes.
struct Run {
    sim: SimulatorHandle,
    exporter: Exporter,
    _dir: TempDir,
    _runtime: Runtime,
}

impl Run {
    /// Starts and waits for the first cycle; `env` adds to the
    /// `api.timeout: 1s` and `api.max_retries` overrides.
    fn start(tag: &str, max_retries: &str, env: &[(&str, &str)]) -> Self {
        let instances = [(FAULTY, GZ), (HEALTHY, GZ)];
        let (runtime, sim) = start_simulator(simple_scenario(&instances));
        let dir = TempDir::new(tag);
        let config = write_config(&dir, &sim.url(), "1s", &instances, SECRET_KEY);
        let config = config.display().to_string();
        let mut all_env = vec![
            ("CRS_EXPORTER__API__TIMEOUT", "1s"),
            ("CRS_EXPORTER__API__MAX_RETRIES", max_retries),
        ];
        all_env.extend_from_slice(env);
        let args = ["--config.file", &config, "--log.level", "debug"];
        let mut exporter = Exporter::start(&dir, &args, &all_env);
        exporter.wait_ready(Duration::from_secs(15));
        Run {
            sim,
            exporter,
            _dir: dir,
            _runtime: runtime,
        }
    }

    /// A scrape, which must answer fast whatever the API does.
    fn scrape(&self) -> Metrics {
        let started = Instant::now();
        let metrics = self.exporter.scrape();
        let took = started.elapsed();
        assert!(took < FAST_SCRAPE, "a scrape took {took:?}");
        metrics
    }

    /// Scrapes until `is_done` holds, for at most 20 seconds.
    fn wait_for(&self, what: &str, is_done: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = self.scrape();
            if is_done(&m) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "waited in vain for: {what}\nlast scrape:\n{}\nlog:\n{}",
                m.text,
                self.exporter.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Requests for `id` that the simulator saw, with the error answered.
    fn arrivals_for(&self, id: &str) -> Vec<Option<String>> {
        let arrivals = self.sim.arrivals().into_iter();
        arrivals
            .filter(|a| a.instance_id == id)
            .map(|a| a.error)
            .collect()
    }
}

fn poll_success(m: &Metrics, id: &str) -> Option<f64> {
    m.instance(POLL_SUCCESS, id, GZ, "")
}

fn errors(m: &Metrics, id: &str, reason: &str) -> f64 {
    let reason = format!("reason=\"{reason}\"");
    m.instance(POLL_ERRORS, id, GZ, &reason).unwrap_or(0.0)
}

fn requests(m: &Metrics, code: &str) -> f64 {
    let key = format!(
        "tencentcloud_redis_api_requests_total{{action=\"DescribeInstanceBackups\",code=\"{code}\"}}"
    );
    m.get(&key).unwrap_or(0.0)
}

/// Every reason label and its count for `id`.
fn all_errors(m: &Metrics, id: &str) -> Vec<(&'static str, f64)> {
    FailureReason::ALL
        .iter()
        .map(|r| (r.label(), errors(m, id, r.label())))
        .collect()
}

/// What a fault must show.
struct Expected {
    /// The `reason` label of the failed polls.
    reason: &'static str,
    /// The `code` label of the failed requests.
    code: &'static str,
    /// Requests per failed poll: 2 where the fault is retried (with
    /// `api.max_retries: 1`), 1 where retrying cannot help; `None` where
    /// the code is shared with successful requests and cannot be counted.
    attempts: Option<f64>,
}

/// Switches `fault` on for the faulty instance, checks every promise while
/// it is on, switches it off, checks the recovery; returns the log.
fn check_survives(run: &mut Run, fault: Fault, expected: Expected) -> String {
    let before = run.scrape();
    let good_backup = before.instance(LAST_BACKUP, FAULTY, GZ, "");
    assert!(good_backup.is_some(), "{}", before.text);
    let errors_before = all_errors(&before, FAULTY);
    let requests_before = requests(&before, expected.code);
    let failed_before = errors(&before, FAULTY, expected.reason);

    run.sim.set_fault(FAULTY, Some(fault.clone()));
    let failing = run.wait_for("the faulty instance's poll fails", |m| {
        poll_success(m, FAULTY) == Some(0.0)
            && errors(m, FAULTY, expected.reason) > failed_before
            && requests(m, expected.code) > requests_before
    });

    // The last good figures stay; no other reason is counted.
    let normal = failing.instance(BACKUPS, FAULTY, GZ, "status=\"normal\"");
    assert_eq!(normal, Some(1.0), "{}", failing.text);
    assert_eq!(failing.instance(LAST_BACKUP, FAULTY, GZ, ""), good_backup);
    for ((label, now), (_, then)) in all_errors(&failing, FAULTY).iter().zip(&errors_before) {
        assert!(*label == expected.reason || now == then, "{label} counted");
    }

    // The other instance polls on, and is polled again while this fails.
    assert_eq!(poll_success(&failing, HEALTHY), Some(1.0));
    let healthy_polled = failing.instance(LAST_POLL, HEALTHY, GZ, "");
    let faulty_polled = failing.instance(LAST_POLL, FAULTY, GZ, "");
    let later = run.wait_for("the healthy instance is polled again", |m| {
        m.instance(LAST_POLL, HEALTHY, GZ, "") > healthy_polled
    });
    assert_eq!(poll_success(&later, HEALTHY), Some(1.0));
    if poll_success(&later, FAULTY) == Some(0.0) {
        assert_eq!(later.instance(LAST_POLL, FAULTY, GZ, ""), faulty_polled);
    }
    assert!(run.exporter.is_running(), "{}", run.exporter.log_text());

    // Off again: the instance recovers.
    run.sim.set_fault(FAULTY, None);
    let recovered = run.wait_for("the faulty instance recovers", |m| {
        poll_success(m, FAULTY) == Some(1.0)
    });
    assert!(run.exporter.is_running(), "{}", run.exporter.log_text());
    check_attempts(&recovered, &expected, requests_before, failed_before);

    let log = run.exporter.log_text();
    let failed_line = log
        .lines()
        .find(|l| l.contains("poll failed; last good figures stay") && l.contains(FAULTY));
    let failed_line = failed_line.unwrap_or_else(|| panic!("no failure logged:\n{log}"));
    let reason = format!("reason={}", expected.reason);
    assert!(failed_line.contains(&reason), "{failed_line}");
    assert!(log.contains("poll works again"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    log
}

/// Failed requests are failed polls times the attempts of each, give or
/// take the poll under way when the fault went off.
fn check_attempts(m: &Metrics, expected: &Expected, requests_before: f64, failed_before: f64) {
    let Some(attempts) = expected.attempts else {
        return;
    };
    let failed_polls = errors(m, FAULTY, expected.reason) - failed_before;
    let failed_requests = requests(m, expected.code) - requests_before;
    let least = failed_polls * attempts;
    assert!(
        failed_requests >= least && failed_requests < least + attempts,
        "{failed_requests} failed requests for {failed_polls} failed polls \
         of {attempts} attempts each\n{}",
        m.text
    );
}

#[test]
fn a_hang_longer_than_the_timeout_is_a_transport_error_and_scrapes_stay_fast() {
    let mut run = Run::start("hang", "1", &[]);
    let hang = Fault::Latency { ms: 5000 };
    let expected = Expected {
        reason: "transport",
        code: "transport_timeout",
        attempts: Some(2.0),
    };
    check_survives(&mut run, hang, expected);

    // Latency well under the timeout costs time, not the poll.
    let before = run.scrape();
    run.sim.set_fault(FAULTY, Some(Fault::Latency { ms: 300 }));
    let seen = run.arrivals_for(FAULTY).len();
    run.wait_for("two slow polls", |_| {
        run.arrivals_for(FAULTY).len() >= seen + 2
    });
    let after = run.scrape();
    assert_eq!(poll_success(&after, FAULTY), Some(1.0));
    assert_eq!(all_errors(&after, FAULTY), all_errors(&before, FAULTY));
}

#[test]
fn gateway_errors_502_and_503_are_server_errors_and_retried() {
    let mut run = Run::start("gateway", "1", &[]);
    for status in [502, 503] {
        let code = if status == 502 {
            "http_502"
        } else {
            "http_503"
        };
        let expected = Expected {
            reason: "server_error",
            code,
            attempts: Some(2.0),
        };
        check_survives(&mut run, Fault::HttpStatus { status }, expected);
    }
}

#[test]
fn a_connection_reset_is_a_transport_error_and_retried() {
    let mut run = Run::start("reset", "1", &[]);
    let expected = Expected {
        reason: "transport",
        code: "transport_other",
        attempts: Some(2.0),
    };
    check_survives(&mut run, Fault::Reset, expected);
}

#[test]
fn malformed_json_is_a_bad_answer_and_not_retried() {
    let mut run = Run::start("malformed", "1", &[]);
    let expected = Expected {
        reason: "bad_answer",
        code: "bad_body",
        attempts: Some(1.0),
    };
    check_survives(&mut run, Fault::MalformedJson, expected);
}

#[test]
fn a_truncated_body_is_a_transport_error_and_retried() {
    let mut run = Run::start("truncated", "1", &[]);
    let expected = Expected {
        reason: "transport",
        code: "transport_other",
        attempts: Some(2.0),
    };
    check_survives(&mut run, Fault::TruncatedBody, expected);
}

#[test]
fn an_oversized_body_stops_at_the_cap_without_growing_memory() {
    let mut run = Run::start("oversized", "1", &[]);
    let bytes = 8 * 1024 * 1024;
    let expected = Expected {
        reason: "bad_answer",
        code: "bad_body",
        attempts: Some(1.0),
    };
    let log = check_survives(&mut run, Fault::OversizedBody { bytes }, expected);
    assert!(log.contains("answer larger than 4194304 bytes"), "{log}");

    // Each answer is dropped at the cap: memory stays far below what
    // holding these bodies would take.
    let rss = run.exporter.rss_kib().expect("/proc tells the memory");
    assert!(rss < 96 * 1024, "the exporter holds {rss} KiB");
}

#[test]
fn a_list_of_the_wrong_type_is_a_bad_answer() {
    // The envelope is fine, so the request counts as a success; the page
    // inside cannot be read, so the poll fails.
    let mut run = Run::start("wrongtypes", "1", &[]);
    let expected = Expected {
        reason: "bad_answer",
        code: "Success",
        attempts: None,
    };
    let log = check_survives(&mut run, Fault::WrongTypes, expected);
    assert!(
        log.contains("the backup list is an object, not an array"),
        "{log}"
    );
}

#[test]
fn fields_of_odd_types_are_read_leniently() {
    let run = Run::start("oddfields", "1", &[]);
    let before = run.scrape();
    run.sim.set_fault(FAULTY, Some(Fault::WrongFieldTypes));
    let seen = run.arrivals_for(FAULTY).len();
    run.wait_for("two polls with odd types", |_| {
        run.arrivals_for(FAULTY).len() >= seen + 2
    });
    let after = run.scrape();
    assert_eq!(poll_success(&after, FAULTY), Some(1.0), "{}", after.text);
    for name in [
        "tencentcloud_redis_backups_locked",
        LAST_BACKUP,
        "tencentcloud_redis_backup_last_success_size_bytes",
    ] {
        let (then, now) = (
            before.instance(name, FAULTY, GZ, ""),
            after.instance(name, FAULTY, GZ, ""),
        );
        assert!(
            then.is_some() && then == now,
            "{name}: {then:?} then, {now:?} now"
        );
    }
    let normal = after.instance(BACKUPS, FAULTY, GZ, "status=\"normal\"");
    assert_eq!(normal, Some(1.0));
    assert_eq!(all_errors(&after, FAULTY), all_errors(&before, FAULTY));
}

#[test]
fn a_lying_total_count_stops_at_the_first_page_that_brings_nothing_new() {
    // Every page repeats the same backups; TotalCount claims 100000.
    let run = Run::start("lyingtotal", "1", &[("CRS_EXPORTER__API__MAX_PAGES", "50")]);
    run.sim
        .set_fault(FAULTY, Some(Fault::LyingTotal { total: 100_000 }));
    let seen = run.arrivals_for(FAULTY).len();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let m = run.scrape();

    // A poll a second, each reading the page and its repeat: two requests,
    // not the 50 pages max_pages would allow.
    let requests = run.arrivals_for(FAULTY).len() - seen;
    let polls = started.elapsed().as_secs() as usize + 2;
    assert!(
        requests <= 2 * polls,
        "{requests} requests in at most {polls} polls"
    );
    assert!(!run
        .exporter
        .log_text()
        .contains("stopped reading backups at api.max_pages"));

    // The repeated backup is counted once, and the poll stands.
    assert_eq!(poll_success(&m, FAULTY), Some(1.0));
    assert_eq!(
        m.instance(BACKUPS, FAULTY, GZ, "status=\"normal\""),
        Some(1.0)
    );
    assert_eq!(poll_success(&m, HEALTHY), Some(1.0));
}

#[test]
fn throttling_every_request_fails_the_poll_as_throttled() {
    let mut run = Run::start("throttled", "1", &[]);
    let expected = Expected {
        reason: "throttled",
        code: "RequestLimitExceeded",
        attempts: Some(2.0),
    };
    let log = check_survives(&mut run, Fault::Throttle { share: 1.0 }, expected);
    assert!(log.contains("retrying"), "{log}");
}

#[test]
fn throttling_bursts_are_absorbed_by_retries() {
    // Every second request is throttled: each poll's retry gets through.
    let run = Run::start("bursts", "1", &[]);
    run.sim
        .set_fault(FAULTY, Some(Fault::Throttle { share: 0.5 }));
    let m = run.wait_for("some requests throttled", |m| {
        assert_eq!(poll_success(m, FAULTY), Some(1.0), "{}", m.text);
        requests(m, "RequestLimitExceeded") >= 3.0
    });
    assert_eq!(errors(&m, FAULTY, "throttled"), 0.0);
    assert_eq!(poll_success(&m, HEALTHY), Some(1.0));
}

#[test]
fn clock_skew_is_an_auth_failure_that_says_how_far_the_clock_is_off() {
    // The API's clock runs an hour ahead of this machine's.
    let mut run = Run::start("clockskew", "1", &[]);
    let expected = Expected {
        reason: "auth",
        code: "AuthFailure.SignatureExpire",
        attempts: Some(1.0),
    };
    let log = check_survives(&mut run, Fault::ClockSkew { secs: 3600 }, expected);
    let note = "the local clock is ";
    let at = log
        .find(note)
        .unwrap_or_else(|| panic!("no clock note:\n{log}"));
    let rest = &log[at + note.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let seconds: u64 = digits.parse().expect("the note gives seconds");
    assert!(
        (3595..=3605).contains(&seconds),
        "{}",
        &rest[..60.min(rest.len())]
    );
    // The log escapes the apostrophe of "API's".
    assert!(
        rest[digits.len()..].starts_with("s behind the API"),
        "{rest}"
    );
}

#[test]
fn an_expired_token_is_an_auth_failure_and_not_retried() {
    let mut run = Run::start("expiredtoken", "1", &[]);
    let expected = Expected {
        reason: "auth",
        code: "AuthFailure.TokenFailure",
        attempts: Some(1.0),
    };
    check_survives(&mut run, Fault::ExpiredToken, expected);
}

#[test]
fn the_simulator_command_switches_faults_over_http() {
    let dir = TempDir::new("simcommand");
    let address = free_port().to_string();
    let config = dir.0.join("exporter.yaml").display().to_string();
    let sim_args = [
        "simulator",
        "--simulator.listen-address",
        &address,
        "--simulator.instances",
        "3",
        "--simulator.regions",
        "1",
        "--simulator.poll-interval",
        "1s",
        "--simulator.config-out",
        &config,
    ];
    let simulator = Exporter::start(&dir, &sim_args, &[]);
    let faults = format!("http://{address}/-/faults");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&faults).is_none() {
        assert!(Instant::now() < deadline, "{}", simulator.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let env = [
        ("CRS_EXPORTER__API__TIMEOUT", "1s"),
        ("CRS_EXPORTER__API__MAX_RETRIES", "0"),
    ];
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &env);
    exporter.wait_ready(Duration::from_secs(15));
    let (id, region) = ("crs-00000001", "ap-sim0");
    let success = |m: &Metrics, id: &str| m.instance(POLL_SUCCESS, id, region, "");

    let switch =
        r#"{"instance_id": "crs-00000001", "fault": {"kind": "http_status", "status": 503}}"#;
    let (code, table) = post_json(&faults, switch).expect("the simulator answers");
    assert_eq!(code, 200, "{table}");
    assert!(
        table.contains(r#""crs-00000001":{"kind":"http_status","status":503}"#),
        "{table}"
    );
    let m = exporter.wait_for(WAIT, |m| success(m, id) == Some(0.0));
    let reason = m.instance(POLL_ERRORS, id, region, "reason=\"server_error\"");
    assert!(reason >= Some(1.0), "{}", m.text);
    assert_eq!(success(&m, "crs-00000000"), Some(1.0));

    let (code, answer) = post_json(&faults, r#"{"fault": {"kind": "warp"}}"#).unwrap();
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("not a fault switch"), "{answer}");
    let (code, table) = delete(&faults).unwrap();
    assert_eq!(
        (code, table.as_str()),
        (200, r#"{"everywhere":null,"instances":{}}"#)
    );
    exporter.wait_for(WAIT, |m| success(m, id) == Some(1.0));
    assert!(exporter.is_running());
}

#[test]
fn secrets_never_appear_while_every_fault_is_on() {
    let faults = [
        Fault::Latency { ms: 3000 },
        Fault::HttpStatus { status: 502 },
        Fault::Reset,
        Fault::MalformedJson,
        Fault::TruncatedBody,
        Fault::OversizedBody { bytes: 5 << 20 },
        Fault::WrongTypes,
        Fault::WrongFieldTypes,
        Fault::LyingTotal { total: 100_000 },
        Fault::Throttle { share: 1.0 },
        Fault::ClockSkew { secs: -3600 },
        Fault::ExpiredToken,
    ];
    let ids: Vec<String> = (0..=faults.len())
        .map(|n| format!("crs-fault{n:03}"))
        .collect();
    let instances: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), GZ)).collect();
    let mut scenario = simple_scenario(&instances);
    scenario.token = Some(TOKEN.into());
    let (_runtime, sim) = start_simulator(scenario);

    let dir = TempDir::new("secrets-faults");
    let config = write_config(&dir, &sim.url(), "1s", &instances, SECRET_KEY);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "credentials:\n",
        &format!("credentials:\n  token: {TOKEN}\n"),
    );
    std::fs::write(&config, text).unwrap();
    let config = config.display().to_string();
    let env = [
        ("CRS_EXPORTER__API__TIMEOUT", "1s"),
        ("CRS_EXPORTER__API__MAX_RETRIES", "1"),
        ("CRS_EXPORTER__API__MAX_PAGES", "3"),
    ];
    let args = ["--config.file", &config, "--log.level", "debug"];
    let mut exporter = Exporter::start_keeping_stdout(&dir, &args, &env);
    exporter.wait_ready(Duration::from_secs(15));

    // Every fault on at once, one instance each; the last instance has none.
    for (id, fault) in ids.iter().zip(&faults) {
        sim.set_fault(id, Some(fault.clone()));
    }
    let failing: Vec<&str> = ids
        .iter()
        .zip(&faults)
        .filter(|(_, f)| !matches!(f, Fault::WrongFieldTypes | Fault::LyingTotal { .. }))
        .map(|(id, _)| id.as_str())
        .collect();
    let mut bodies = Vec::new();
    let mut scrape_until = |what: &str, is_done: &dyn Fn(&Metrics) -> bool| {
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, body) = get(&exporter.url("/metrics")).expect("/metrics answers");
            assert_eq!(code, 200);
            let m = Metrics::parse(&body);
            bodies.push(body);
            if is_done(&m) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited in vain for {what}:\n{}",
                m.text
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    scrape_until("every faulty poll to fail", &|m| {
        failing
            .iter()
            .all(|id| m.instance(POLL_SUCCESS, id, GZ, "") == Some(0.0))
    });
    sim.clear_faults();
    scrape_until("every instance to recover", &|m| {
        ids.iter()
            .all(|id| m.instance(POLL_SUCCESS, id, GZ, "") == Some(1.0))
    });
    let status = exporter.stop_with("TERM", Duration::from_secs(10));
    assert!(status.success(), "{status}");

    let log = exporter.log_text();
    let stdout = std::fs::read_to_string(exporter.stdout.as_ref().unwrap()).unwrap();
    assert!(
        log.contains("level=debug") && log.contains("retrying"),
        "{log}"
    );
    assert!(log.contains("AuthFailure.TokenFailure"), "{log}");
    for (name, text) in [("log", &log), ("stdout", &stdout)] {
        assert!(
            !text.contains(SECRET_KEY),
            "the secret key is in the {name}"
        );
        assert!(!text.contains(TOKEN), "the token is in the {name}");
    }
    for body in &bodies {
        assert!(!body.contains(SECRET_KEY) && !body.contains(TOKEN));
    }
    assert!(bodies.len() > 5, "{} scrapes", bodies.len());
}
