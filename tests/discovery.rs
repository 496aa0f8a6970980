//! Discovery and accounts: instances found through `DescribeInstances` by
//! tag, filtered by patterns, dropped when they leave; several accounts in
//! one process, each polling with its own key.

mod common;

use std::time::Duration;

use common::{simple_scenario, start_simulator, Exporter, Metrics, TempDir, SECRET_ID, SECRET_KEY};
use crs_backup_exporter::simulator::inventory::Listing;

const GZ: &str = "ap-guangzhou";

fn tagged(pairs: &[(&str, &str)], status: i64) -> Listing {
    let tags = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Listing {
        status,
        project_id: 0,
        tags,
    }
}

fn polled(m: &Metrics, id: &str) -> bool {
    m.instance("tencentcloud_redis_backup_poll_success", id, GZ, "") == Some(1.0)
}

#[test]
fn discovery_finds_tagged_live_instances_and_drops_those_that_leave() {
    let ids = [
        ("crs-found001", GZ),
        ("crs-isolat01", GZ),
        ("crs-devtag01", GZ),
        ("crs-skipme01", GZ),
        ("crs-listed01", GZ),
    ];
    let mut scenario = simple_scenario(&ids);
    scenario.instances[3].name = "orders-test".into();
    let (_runtime, sim) = start_simulator(scenario);
    sim.set_listing(
        "crs-found001",
        tagged(&[("env", "prod"), ("team", "payments")], 2),
    );
    sim.set_listing("crs-isolat01", tagged(&[("env", "prod")], -2));
    sim.set_listing("crs-devtag01", tagged(&[("env", "dev")], 2));
    sim.set_listing("crs-skipme01", tagged(&[("env", "prod")], 2));

    let dir = TempDir::new("discovery");
    let key_file = dir.write("secret_key", SECRET_KEY);
    let text = format!(
        "api:\n  endpoint: {}\n  max_retries: 0\npoll:\n  interval: 1h\n\
         credentials:\n  secret_id: {SECRET_ID}\n  secret_key_file: {}\n\
         discovery:\n  regions: [{GZ}]\n  interval: 10s\n  tags: {{env: prod}}\n  tag_labels: [team]\n\
         exclude: ['-test$']\n\
         instances:\n  - instance_id: crs-listed01\n    region: {GZ}\n    name: by-hand\n",
        sim.url(),
        key_file.display()
    );
    let config = dir.write("config.yaml", &text).display().to_string();
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &[]);
    exporter.wait_ready(Duration::from_secs(30));

    let m = exporter.wait_for(Duration::from_secs(20), |m| {
        polled(m, "crs-found001") && polled(m, "crs-listed01")
    });
    for absent in ["crs-isolat01", "crs-devtag01", "crs-skipme01"] {
        assert!(
            !m.text.contains(absent),
            "{absent} must not be watched:\n{}",
            m.text
        );
    }
    let info = "tencentcloud_redis_instance_info{instance_id=\"crs-found001\",region=\"ap-guangzhou\",instance_name=\"crs-found001\",account=\"default\",team=\"payments\"}";
    assert_eq!(m.get(info), Some(1.0), "{}", m.text);
    let discovered = "tencentcloud_redis_backup_exporter_discovered_instances{account=\"default\",region=\"ap-guangzhou\"}";
    assert_eq!(
        m.get(discovered),
        Some(2.0),
        "the tagged live ones, before patterns"
    );
    assert_eq!(m.get("tencentcloud_redis_backup_exporter_discovery_success{account=\"default\",region=\"ap-guangzhou\"}"), Some(1.0));

    // The instance is isolated: the next listing drops it and its series.
    sim.set_listing("crs-found001", tagged(&[("env", "prod")], -2));
    let m = exporter.wait_for(Duration::from_secs(25), |m| {
        !m.text.contains("crs-found001")
    });
    assert!(polled(&m, "crs-listed01"), "instances listed by hand stay");
    let listings = sim
        .arrivals()
        .iter()
        .filter(|a| a.action == "DescribeInstances")
        .count();
    assert!(listings >= 2, "listed again after the interval: {listings}");
}

#[test]
fn accounts_poll_with_their_own_keys_and_carry_their_name() {
    // Two simulators, each accepting one key: a request signed with the
    // other account's key would fail.
    let (_runtime, main_sim) = start_simulator(simple_scenario(&[("crs-account1", GZ)]));
    let mut staging = simple_scenario(&[("crs-account2", "ap-shanghai")]);
    staging.secret_id = "AKIDstaging00000000000000000000000".into();
    staging.secret_key = "staging-secret-key-5e6f".into();
    let (_runtime2, staging_sim) = start_simulator(staging);

    let dir = TempDir::new("accounts");
    let text = format!(
        "api:\n  endpoints:\n    {GZ}: {}\n    ap-shanghai: {}\n  max_retries: 0\npoll:\n  interval: 1h\n\
         credentials:\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\n\
         instances:\n  - instance_id: crs-account1\n    region: {GZ}\n\
         accounts:\n  - name: staging\n    credentials:\n      secret_id: AKIDstaging00000000000000000000000\n      \
         secret_key: staging-secret-key-5e6f\n    instances:\n      - instance_id: crs-account2\n        region: ap-shanghai\n",
        main_sim.url(),
        staging_sim.url()
    );
    let config = dir.write("config.yaml", &text).display().to_string();
    let mut exporter = Exporter::start(&dir, &["--config.file", &config], &[]);
    exporter.wait_ready(Duration::from_secs(30));
    let m = exporter.scrape();
    assert!(polled(&m, "crs-account1"), "{}", exporter.log_text());
    assert_eq!(
        m.instance(
            "tencentcloud_redis_backup_poll_success",
            "crs-account2",
            "ap-shanghai",
            ""
        ),
        Some(1.0)
    );
    assert!(m.text.contains("instance_id=\"crs-account2\",region=\"ap-shanghai\",instance_name=\"\",account=\"staging\""), "{}", m.text);
    assert!(m.text.contains("instance_id=\"crs-account1\",region=\"ap-guangzhou\",instance_name=\"\",account=\"default\""));
    assert!(
        !exporter.log_text().contains("staging-secret-key"),
        "secrets stay out of the log"
    );
}
