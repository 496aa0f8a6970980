//! Reloading the configuration: on POST /-/reload and on SIGHUP, new
//! instances are polled and removed ones lose their series; a bad file
//! changes nothing and says so.

mod common;

use std::time::Duration;

use common::{
    get, post, simple_scenario, start_simulator, write_config, Exporter, TempDir, SECRET_KEY,
};

const GZ: &str = "ap-guangzhou";
const RELOAD_OK: &str = "tencentcloud_redis_backup_exporter_config_last_reload_successful";

#[test]
fn post_reload_polls_new_instances_and_drops_removed_ones() {
    let all = [
        ("crs-reload01", GZ),
        ("crs-reload02", GZ),
        ("crs-reload03", GZ),
    ];
    let (_runtime, sim) = start_simulator(simple_scenario(&all));
    let dir = TempDir::new("reload");
    let config = write_config(&dir, &sim.url(), "1h", &all[..2], SECRET_KEY);
    let mut exporter =
        Exporter::start(&dir, &["--config.file", &config.display().to_string()], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    assert_eq!(exporter.scrape().get(RELOAD_OK), Some(1.0));

    write_config(&dir, &sim.url(), "1h", &all[1..], SECRET_KEY);
    let (code, body) = post(&exporter.url("/-/reload")).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body.trim(),
        "config reloaded: 2 instances, 1 added, 1 removed"
    );

    // The new instance is polled at once, not an hour later.
    let m = exporter.wait_for(Duration::from_secs(20), |m| {
        m.instance(
            "tencentcloud_redis_backup_poll_success",
            "crs-reload03",
            GZ,
            "",
        ) == Some(1.0)
    });
    assert!(
        !m.text.contains("crs-reload01"),
        "removed instance's series are gone:\n{}",
        m.text
    );
    assert_eq!(
        m.instance(
            "tencentcloud_redis_backups",
            "crs-reload02",
            GZ,
            "status=\"normal\""
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get("tencentcloud_redis_backup_exporter_instances"),
        Some(2.0)
    );
    assert_eq!(m.get(RELOAD_OK), Some(1.0));
    assert_eq!(
        get(&exporter.url("/-/reload")).map(|r| r.0),
        Some(405),
        "reload needs POST"
    );
}

#[test]
fn failed_reload_keeps_the_old_config_and_says_so() {
    let instances = [("crs-keepme01", GZ)];
    let (_runtime, sim) = start_simulator(simple_scenario(&instances));
    let dir = TempDir::new("badreload");
    let config = write_config(&dir, &sim.url(), "1h", &instances, SECRET_KEY);
    let mut exporter =
        Exporter::start(&dir, &["--config.file", &config.display().to_string()], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    let loaded_at = exporter
        .scrape()
        .get("tencentcloud_redis_backup_exporter_config_last_reload_success_timestamp_seconds")
        .unwrap();

    dir.write("config.yaml", "poll:\n  intervall: 5m\ninstances: []\n");
    let (code, body) = post(&exporter.url("/-/reload")).unwrap();
    assert_eq!(code, 500);
    assert!(
        body.contains("config.yaml") && body.contains("intervall") && body.contains("fix:"),
        "{body}"
    );
    let m = exporter.scrape();
    assert_eq!(m.get(RELOAD_OK), Some(0.0));
    assert_eq!(
        m.get("tencentcloud_redis_backup_exporter_config_last_reload_success_timestamp_seconds"),
        Some(loaded_at)
    );
    assert_eq!(
        m.instance(
            "tencentcloud_redis_backup_poll_success",
            "crs-keepme01",
            GZ,
            ""
        ),
        Some(1.0)
    );
    assert!(exporter
        .log_text()
        .contains("config not reloaded; the previous one stays"));

    write_config(&dir, &sim.url(), "1h", &instances, SECRET_KEY);
    assert_eq!(post(&exporter.url("/-/reload")).map(|r| r.0), Some(200));
    assert_eq!(exporter.scrape().get(RELOAD_OK), Some(1.0));
}

#[test]
fn sighup_reloads_and_picks_up_a_rotated_secret_key_file() {
    let instances = [("crs-rotate01", GZ)];
    let (_runtime, sim) = start_simulator(simple_scenario(&instances));
    let dir = TempDir::new("rotate");
    let config = write_config(&dir, &sim.url(), "1s", &instances, "an-old-revoked-key\n");
    let mut exporter =
        Exporter::start(&dir, &["--config.file", &config.display().to_string()], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    let m = exporter.scrape();
    assert_eq!(
        m.instance(
            "tencentcloud_redis_backup_poll_errors_total",
            "crs-rotate01",
            GZ,
            "reason=\"auth\""
        ),
        Some(1.0)
    );

    dir.write("secret_key", &format!("{SECRET_KEY}\n"));
    let pid = exporter.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    exporter.wait_for(Duration::from_secs(20), |m| {
        m.instance(
            "tencentcloud_redis_backup_poll_success",
            "crs-rotate01",
            GZ,
            "",
        ) == Some(1.0)
    });
    let log = exporter.log_text();
    assert!(log.contains("config reloaded"), "{log}");
    assert!(
        !log.contains(SECRET_KEY) && !log.contains("an-old-revoked-key"),
        "{log}"
    );
}
