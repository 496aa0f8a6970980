//! The real binary against the API simulator on 127.0.0.1: exact figures
//! on /metrics for every kind of instance, the request budget as the server
//! counts it, failed polls, shutdown, and start-up errors.

mod common;

use std::time::{Duration, Instant};

use common::{get, run, start_simulator, Exporter, TempDir};
use crs_backup_exporter::simulator::{Scenario, SimBackup, SimInstance};

const SECRET_ID: &str = "AKIDintegration00000000000000000000";
const SECRET_KEY: &str = "integration-secret-key-9f8e7d6c5b4a";
const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn backup(id: &str, start: i64, status: i64, is_locked: bool, size: u64) -> SimBackup {
    SimBackup {
        id: id.into(),
        start,
        status,
        is_locked,
        size,
        backup_type: "1".into(),
        remark: "a remark, never a label".into(),
    }
}

fn instance(id: &str, region: &str, backups: Vec<SimBackup>) -> SimInstance {
    SimInstance {
        id: id.into(),
        region: region.into(),
        name: id.into(),
        backups,
        is_legacy: false,
    }
}

/// The instances every test serves; `paged_count` backups for crs-paged001.
fn scenario(now: i64, paged_count: i64, rate_limit: u32) -> Scenario {
    let fresh = vec![
        backup("f-2", now - HOUR, 2, false, 2147483648),
        backup("f-4", now - DAY, 4, true, 2147400000),
        backup("f-1", now - 10 * 60, 1, false, 0),
        backup("f-m1", now - 7 * DAY, -1, false, 2100000000),
        backup("f-3", now - 2 * DAY, 3, false, 2140000000),
    ];
    let stale = vec![
        backup("s-0", now - 3 * DAY, 2, false, 1000),
        backup("s-1", now - 4 * DAY, 2, false, 999),
    ];
    let paged = (0..paged_count)
        .map(|n| {
            backup(
                &format!("p-{n}"),
                now - HOUR * (n + 1),
                if n < 200 { 2 } else { -1 },
                n % 100 == 0,
                1000 + n as u64,
            )
        })
        .collect();
    let locked = (0..3)
        .map(|n| backup(&format!("l-{n}"), now - DAY * (n + 1), 2, true, 5))
        .collect();
    let mut legacy = instance(
        "crs-legcy001",
        "ap-chengdu",
        vec![
            backup("g-0", now - 5 * HOUR, 2, true, 0),
            backup("g-1", now - 6 * HOUR, 2, false, 0),
        ],
    );
    legacy.is_legacy = true;
    Scenario {
        secret_id: SECRET_ID.into(),
        secret_key: SECRET_KEY.into(),
        token: None,
        instances: vec![
            instance("crs-fresh001", "ap-guangzhou", fresh),
            instance("crs-stale001", "ap-guangzhou", stale),
            instance("crs-paged001", "ap-beijing", paged),
            instance("crs-lockd001", "ap-shanghai", locked),
            instance("crs-empty001", "ap-shanghai", Vec::new()),
            legacy,
        ],
        rate_limit,
        utc_offset: time::macros::offset!(+8),
    }
}

/// A config for the simulator at `url`; the secret key comes from a file.
fn config(dir: &TempDir, url: &str, rate_limit: u32, interval: &str) -> String {
    let key_file = dir.write("secret_key", &format!("{SECRET_KEY}\n"));
    let text = format!(
        "api:\n  endpoint: {url}\n  rate_limit: {rate_limit}\n  max_retries: 0\n\
         poll:\n  interval: {interval}\n\
         credentials:\n  secret_id: {SECRET_ID}\n  secret_key_file: {}\n\
         instances:\n\
         \x20 - instance_id: crs-fresh001\n    region: ap-guangzhou\n    name: orders-cache\n    labels: {{team: payments}}\n    max_backup_age: 2h\n\
         \x20 - instance_id: crs-stale001\n    region: ap-guangzhou\n\
         \x20 - instance_id: crs-paged001\n    region: ap-beijing\n\
         \x20 - instance_id: crs-lockd001\n    region: ap-shanghai\n\
         \x20 - instance_id: crs-empty001\n    region: ap-shanghai\n\
         \x20 - instance_id: crs-gone0001\n    region: ap-guangzhou\n\
         \x20 - instance_id: crs-legcy001\n    region: ap-chengdu\n",
        key_file.display()
    );
    dir.write("config.yaml", &text).display().to_string()
}

#[test]
fn metrics_show_exact_figures_for_every_kind_of_instance() {
    let now = unix_now();
    let (_runtime, sim) = start_simulator(scenario(now, 250, 20));
    let dir = TempDir::new("figures");
    let config = config(&dir, &sim.url(), 20, "1h");
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    let before_scrape = now as f64;
    let m = exporter.scrape();
    let at = |name: &str, id: &str, region: &str, extra: &str| m.instance(name, id, region, extra);
    let status = |id: &str, region: &str, s: &str| {
        at(
            "tencentcloud_redis_backups",
            id,
            region,
            &format!("status=\"{s}\""),
        )
    };

    // A fresh instance with one backup of each status.
    let (id, gz) = ("crs-fresh001", "ap-guangzhou");
    for (s, expected) in [
        ("in_progress", 1.0),
        ("normal", 1.0),
        ("rdb_converting", 1.0),
        ("rdb_converted", 1.0),
        ("expired", 1.0),
        ("deleted", 0.0),
        ("unknown", 0.0),
    ] {
        assert_eq!(status(id, gz, s), Some(expected), "{id} {s}");
    }
    assert_eq!(
        at("tencentcloud_redis_backups_locked", id, gz, ""),
        Some(1.0)
    );
    assert_eq!(
        at(
            "tencentcloud_redis_backup_last_success_timestamp_seconds",
            id,
            gz,
            ""
        ),
        Some((now - HOUR) as f64)
    );
    assert_eq!(
        at(
            "tencentcloud_redis_backup_last_success_size_bytes",
            id,
            gz,
            ""
        ),
        Some(2147483648.0)
    );
    assert_eq!(
        at(
            "tencentcloud_redis_backup_oldest_in_progress_start_timestamp_seconds",
            id,
            gz,
            ""
        ),
        Some((now - 600) as f64)
    );
    assert_eq!(
        at("tencentcloud_redis_backup_max_age_seconds", id, gz, ""),
        Some(7200.0)
    );
    assert_eq!(
        at("tencentcloud_redis_backup_poll_success", id, gz, ""),
        Some(1.0)
    );
    let age = at(
        "tencentcloud_redis_backup_last_success_age_seconds",
        id,
        gz,
        "",
    )
    .unwrap();
    let after_scrape = unix_now() as f64 + 1.0;
    assert!(
        age >= before_scrape - (now - HOUR) as f64 && age <= after_scrape - (now - HOUR) as f64,
        "age {age}"
    );
    let info = "tencentcloud_redis_instance_info{instance_id=\"crs-fresh001\",region=\"ap-guangzhou\",instance_name=\"orders-cache\",account=\"default\",team=\"payments\"}";
    assert_eq!(m.get(info), Some(1.0), "{}", m.text);

    // A stale instance: the newest completed backup is three days old.
    let (id, _) = ("crs-stale001", gz);
    assert_eq!(status(id, gz, "normal"), Some(2.0));
    assert_eq!(
        at(
            "tencentcloud_redis_backup_last_success_timestamp_seconds",
            id,
            gz,
            ""
        ),
        Some((now - 3 * DAY) as f64)
    );
    assert_eq!(
        at("tencentcloud_redis_backup_max_age_seconds", id, gz, ""),
        Some(93600.0)
    );
    let age = at(
        "tencentcloud_redis_backup_last_success_age_seconds",
        id,
        gz,
        "",
    )
    .unwrap();
    assert!(
        age >= (3 * DAY) as f64 && age < (3 * DAY + 60) as f64,
        "age {age}"
    );

    // 250 backups over three pages, each counted once.
    let (id, bj) = ("crs-paged001", "ap-beijing");
    assert_eq!(status(id, bj, "normal"), Some(200.0));
    assert_eq!(status(id, bj, "expired"), Some(50.0));
    assert_eq!(
        at("tencentcloud_redis_backups_locked", id, bj, ""),
        Some(3.0)
    );
    assert_eq!(
        at(
            "tencentcloud_redis_backup_last_success_size_bytes",
            id,
            bj,
            ""
        ),
        Some(1000.0)
    );
    let pages = sim.arrivals().iter().filter(|a| a.region == bj).count();
    assert_eq!(pages, 3, "one request per page of 100");

    // Locked backups.
    assert_eq!(
        at(
            "tencentcloud_redis_backups_locked",
            "crs-lockd001",
            "ap-shanghai",
            ""
        ),
        Some(3.0)
    );

    // No backups at all: zero counts, and no newest backup to speak of.
    let (id, sh) = ("crs-empty001", "ap-shanghai");
    for s in [
        "in_progress",
        "normal",
        "rdb_converting",
        "rdb_converted",
        "expired",
        "deleted",
        "unknown",
    ] {
        assert_eq!(status(id, sh, s), Some(0.0), "{id} {s}");
    }
    assert_eq!(
        at("tencentcloud_redis_backup_poll_success", id, sh, ""),
        Some(1.0)
    );
    assert!(!m.mentions(
        "tencentcloud_redis_backup_last_success_timestamp_seconds",
        id
    ));
    assert!(!m.mentions("tencentcloud_redis_backup_last_success_age_seconds", id));

    // An instance the API does not know: the poll fails, nothing is invented.
    let id = "crs-gone0001";
    assert_eq!(
        at("tencentcloud_redis_backup_poll_success", id, gz, ""),
        Some(0.0)
    );
    assert_eq!(
        at(
            "tencentcloud_redis_backup_poll_errors_total",
            id,
            gz,
            "reason=\"instance_not_found\""
        ),
        Some(1.0)
    );
    assert!(!m.mentions("tencentcloud_redis_backups", id));
    assert!(!m.mentions(
        "tencentcloud_redis_backup_poll_last_success_timestamp_seconds",
        id
    ));
    assert_eq!(
        at("tencentcloud_redis_backup_max_age_seconds", id, gz, ""),
        Some(93600.0)
    );

    // The old list key.
    assert_eq!(status("crs-legcy001", "ap-chengdu", "normal"), Some(2.0));
    assert_eq!(
        at(
            "tencentcloud_redis_backups_locked",
            "crs-legcy001",
            "ap-chengdu",
            ""
        ),
        Some(1.0)
    );

    // Every request was signed right and answered.
    let requests = |code: &str| {
        m.get(&format!("tencentcloud_redis_api_requests_total{{action=\"DescribeInstanceBackups\",code=\"{code}\"}}"))
    };
    assert_eq!(requests("Success"), Some(8.0), "{}", m.text);
    assert_eq!(requests("ResourceNotFound.InstanceNotExists"), Some(1.0));
    assert!(!m.text.contains("AuthFailure"), "{}", m.text);
    assert_eq!(
        m.get("tencentcloud_redis_backup_exporter_instances"),
        Some(7.0)
    );
    assert_eq!(
        m.get("tencentcloud_redis_backup_exporter_cycles_total"),
        Some(1.0)
    );
    assert!(m
        .text
        .contains("tencentcloud_redis_backup_exporter_build_info{revision="));
    assert!(m.text.contains("# HELP tencentcloud_redis_backups "));
    assert!(!m.text.contains("remark"), "remarks are never labels");
    assert!(!m.text.contains("f-2"), "backup IDs are never labels");
}

#[test]
fn requests_never_exceed_the_budget_in_any_second() {
    // 12 pages in one region against a budget of 4 a second, polled in a
    // tight loop; the simulator enforces the same limit.
    let (_runtime, sim) = start_simulator(scenario(unix_now(), 1150, 4));
    let dir = TempDir::new("budget");
    let config = config(&dir, &sim.url(), 4, "1s");
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &[]);
    let started = Instant::now();
    exporter.wait_ready(Duration::from_secs(30));
    let first_cycle = started.elapsed();
    std::thread::sleep(Duration::from_secs(4));

    let arrivals = sim.arrivals();
    let beijing = arrivals.iter().filter(|a| a.region == "ap-beijing").count();
    assert!(
        beijing >= 24,
        "at least two full cycles of 12 pages, saw {beijing}"
    );
    assert_eq!(
        sim.busiest_second(),
        4,
        "the budget is used, and never exceeded"
    );
    let throttled = arrivals
        .iter()
        .filter(|a| a.error.as_deref() == Some("RequestLimitExceeded"))
        .count();
    assert_eq!(throttled, 0);
    // 12 pages at 4 a second need a little over 2 seconds; far more would
    // mean the budget is left unused.
    assert!(
        first_cycle < Duration::from_secs(6),
        "first cycle took {first_cycle:?}"
    );
    let m = exporter.scrape();
    assert_eq!(
        m.instance(
            "tencentcloud_redis_backups",
            "crs-paged001",
            "ap-beijing",
            "status=\"expired\""
        ),
        Some(950.0)
    );
}

#[test]
fn failed_poll_keeps_the_last_good_figures_and_recovers() {
    let now = unix_now();
    let (_runtime, sim) = start_simulator(scenario(now, 10, 20));
    let dir = TempDir::new("failing");
    let config = config(&dir, &sim.url(), 20, "1s");
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    let (id, gz) = ("crs-fresh001", "ap-guangzhou");

    sim.set_instance_error(id, Some("InternalError.InternalError"));
    let m = exporter.wait_for(Duration::from_secs(20), |m| {
        m.instance("tencentcloud_redis_backup_poll_success", id, gz, "") == Some(0.0)
    });
    assert_eq!(
        m.instance("tencentcloud_redis_backups", id, gz, "status=\"normal\""),
        Some(1.0)
    );
    assert_eq!(
        m.instance(
            "tencentcloud_redis_backup_last_success_timestamp_seconds",
            id,
            gz,
            ""
        ),
        Some((now - HOUR) as f64)
    );
    assert!(
        m.instance(
            "tencentcloud_redis_backup_poll_errors_total",
            id,
            gz,
            "reason=\"server_error\""
        ) >= Some(1.0)
    );
    assert_eq!(
        m.instance(
            "tencentcloud_redis_backup_poll_success",
            "crs-stale001",
            gz,
            ""
        ),
        Some(1.0),
        "other instances poll on"
    );
    let last_ok = m
        .instance(
            "tencentcloud_redis_backup_poll_last_success_timestamp_seconds",
            id,
            gz,
            "",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let later = exporter.scrape();
    assert_eq!(
        later.instance(
            "tencentcloud_redis_backup_poll_last_success_timestamp_seconds",
            id,
            gz,
            ""
        ),
        Some(last_ok)
    );

    sim.set_instance_error(id, None);
    exporter.wait_for(Duration::from_secs(20), |m| {
        m.instance("tencentcloud_redis_backup_poll_success", id, gz, "") == Some(1.0)
    });
    let log = exporter.log_text();
    assert_eq!(
        log.matches("poll failed; last good figures stay on /metrics")
            .filter(|_| true)
            .count(),
        2,
        "logged once per change, for the failing and the unknown instance:\n{log}"
    );
    assert!(log.contains("poll works again"), "{log}");
}

#[test]
fn scrapes_never_call_the_api() {
    let (_runtime, sim) = start_simulator(scenario(unix_now(), 10, 20));
    let dir = TempDir::new("scrapes");
    let config = config(&dir, &sim.url(), 20, "1h");
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    let before = sim.arrivals().len();
    for _ in 0..20 {
        exporter.scrape();
    }
    assert_eq!(sim.arrivals().len(), before);
}

#[test]
fn health_endpoints_and_landing_page_answer() {
    let (_runtime, sim) = start_simulator(scenario(unix_now(), 10, 20));
    let dir = TempDir::new("health");
    let config = config(&dir, &sim.url(), 20, "1h");
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    assert_eq!(get(&exporter.url("/-/healthy")).map(|r| r.0), Some(200));
    let (code, page) = get(&exporter.url("/")).unwrap();
    assert_eq!(code, 200);
    assert!(
        page.contains("href=\"/metrics\"") && page.contains(env!("CARGO_PKG_VERSION")),
        "{page}"
    );
    assert_eq!(get(&exporter.url("/nothing-here")).map(|r| r.0), Some(404));
}

#[test]
fn sigterm_stops_the_exporter_with_status_zero() {
    let (_runtime, sim) = start_simulator(scenario(unix_now(), 10, 20));
    let dir = TempDir::new("sigterm");
    let config = config(&dir, &sim.url(), 20, "1s");
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    let status = exporter.stop_with("TERM", Duration::from_secs(8));
    assert!(status.success(), "{status}; log:\n{}", exporter.log_text());
    assert!(exporter.log_text().contains("shutting down"));
}

#[test]
fn bad_config_stops_start_up_with_the_file_the_key_and_the_fix() {
    let dir = TempDir::new("badconfig");
    let path = dir.write("config.yaml", "poll:\n  interval: 300\ninstances:\n  - instance_id: crs-5a4py64p\n    region: ap-guangzhou\n");
    let path = path.display().to_string();
    let (status, _, stderr) = run(&["--config.file", &path], &[], &dir.0);
    assert!(!status.success());
    assert!(
        stderr.contains(&path)
            && stderr.contains("poll.interval")
            && stderr.contains("fix: add a unit"),
        "{stderr}"
    );

    let (status, _, stderr) = run(
        &[
            "--config.file",
            &format!("{}/missing.yaml", dir.0.display()),
        ],
        &[],
        &dir.0,
    );
    assert!(!status.success());
    assert!(
        stderr.contains("missing.yaml") && stderr.contains("--config.file"),
        "{stderr}"
    );
}

#[test]
fn config_check_says_ok_or_names_what_is_wrong() {
    let dir = TempDir::new("check");
    let key_file = dir.write("key", "k");
    let text = format!(
        "credentials:\n  secret_id: AKIDx\n  secret_key_file: {}\ninstances:\n  - instance_id: crs-5a4py64p\n    region: ap-guangzhou\n",
        key_file.display()
    );
    let path = dir.write("config.yaml", &text).display().to_string();
    let (status, stdout, stderr) = run(&["--config.check", "--config.file", &path], &[], &dir.0);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "ok");

    // The environment overrides any key, and is checked like the file.
    let env = [("CRS_EXPORTER__API__RATE_LIMIT", "0")];
    let (status, _, stderr) = run(&["--config.check", "--config.file", &path], &env, &dir.0);
    assert!(!status.success());
    assert!(
        stderr.contains("api.rate_limit") && stderr.contains("fix:"),
        "{stderr}"
    );

    // Without any credentials the check fails and says where to put them.
    let bare = dir.write(
        "bare.yaml",
        "instances:\n  - instance_id: crs-5a4py64p\n    region: ap-guangzhou\n",
    );
    let (status, _, stderr) = run(
        &[
            "--config.check",
            "--config.file",
            &bare.display().to_string(),
        ],
        &[],
        &dir.0,
    );
    assert!(!status.success());
    assert!(stderr.contains("TENCENTCLOUD_SECRET_ID"), "{stderr}");
}

#[test]
fn secrets_never_appear_in_logs_or_metrics() {
    let (_runtime, sim) = start_simulator(scenario(unix_now(), 10, 20));
    let dir = TempDir::new("secrets");
    let config = config(&dir, &sim.url(), 20, "1s");
    let mut exporter = Exporter::start(
        &dir,
        &["--config.file", &config, "--log.level", "debug"],
        &[],
    );
    exporter.wait_ready(Duration::from_secs(30));
    sim.set_instance_error("crs-fresh001", Some("AuthFailure.SignatureFailure"));
    exporter.wait_for(Duration::from_secs(20), |m| {
        m.instance(
            "tencentcloud_redis_backup_poll_success",
            "crs-fresh001",
            "ap-guangzhou",
            "",
        ) == Some(0.0)
    });
    let metrics = exporter.scrape().text;
    exporter.stop_with("TERM", Duration::from_secs(8));
    let log = exporter.log_text();
    assert!(log.contains("level=debug"), "debug logging was on");
    assert!(!log.contains(SECRET_KEY) && !metrics.contains(SECRET_KEY));
}

#[test]
fn version_flag_prints_version_and_revision() {
    let dir = TempDir::new("version");
    let (status, stdout, _) = run(&["--version"], &[], &dir.0);
    assert!(status.success());
    assert!(
        stdout.contains(env!("CARGO_PKG_VERSION")) && stdout.contains("revision"),
        "{stdout}"
    );
}
