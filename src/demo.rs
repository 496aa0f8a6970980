//! The built-in demo: a simulator with a handful of instances whose backup
//! histories show every case the dashboards and alerts care about, and the
//! configuration that points the exporter at it. No cloud account needed.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{
    Account, ApiSettings, Config, Filter, Instance, RawCredentials, DEFAULT_ACCOUNT,
    DEFAULT_MAX_BACKUP_AGE,
};
use crate::simulator::{Scenario, SimBackup, SimInstance};

/// The demo's key pair; it opens nothing but the local simulator.
pub const DEMO_SECRET_ID: &str = "AKIDdemo0000000000000000000000000000";
const DEMO_SECRET_KEY: &str = "demo-key-of-the-local-simulator";

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;
const GIB: u64 = 1 << 30;

/// The simulated instances, with histories relative to `now` (Unix seconds).
pub fn scenario(now: i64) -> Scenario {
    let mut inventory = nightly("inventory", now - 5 * HOUR, 7, 3 * GIB);
    inventory[1].is_locked = true;
    inventory[2].is_locked = true;
    inventory[3].status = 4;
    inventory.push(backup("inventory-run", now - 5 * 60, 1, 0, "0"));

    let instances = vec![
        instance(
            "crs-demo0001",
            "ap-guangzhou",
            "orders-cache",
            nightly("orders", now - 2 * HOUR, 10, 2 * GIB),
        ),
        instance(
            "crs-demo0002",
            "ap-guangzhou",
            "sessions",
            nightly("sessions", now - 3 * DAY, 5, GIB / 2),
        ),
        instance("crs-demo0003", "ap-shanghai", "inventory", inventory),
        instance(
            "crs-demo0004",
            "ap-beijing",
            "analytics",
            hourly("analytics", now - 30 * 60, 250, 8 * GIB),
        ),
        instance("crs-demo0006", "ap-shanghai-fsi", "new-cluster", Vec::new()),
    ];
    Scenario {
        secret_id: DEMO_SECRET_ID.into(),
        secret_key: DEMO_SECRET_KEY.into(),
        token: None,
        instances,
        rate_limit: 20,
        utc_offset: time::macros::offset!(+8),
    }
}

/// The exporter's configuration for the demo: every simulated instance,
/// plus `crs-demo0005`, which the simulator does not know.
pub fn config(simulator_url: &str, interval: Duration) -> Config {
    let endpoint = reqwest::Url::parse(simulator_url).expect("the simulator's URL is valid");
    let watched = [
        (
            "crs-demo0001",
            "ap-guangzhou",
            "orders-cache",
            Some(("team", "payments")),
        ),
        (
            "crs-demo0002",
            "ap-guangzhou",
            "sessions",
            Some(("team", "web")),
        ),
        (
            "crs-demo0003",
            "ap-shanghai",
            "inventory",
            Some(("team", "logistics")),
        ),
        (
            "crs-demo0004",
            "ap-beijing",
            "analytics",
            Some(("team", "data")),
        ),
        ("crs-demo0005", "ap-guangzhou", "legacy-queue", None),
        ("crs-demo0006", "ap-shanghai-fsi", "new-cluster", None),
    ];
    let instances = watched
        .into_iter()
        .map(|(id, region, name, label)| Instance {
            id: id.into(),
            account: DEFAULT_ACCOUNT.into(),
            region: region.into(),
            name: Some(name.into()),
            labels: label
                .map(|(k, v)| BTreeMap::from([(k.to_string(), v.to_string())]))
                .unwrap_or_default(),
            max_backup_age: DEFAULT_MAX_BACKUP_AGE,
        })
        .collect();
    Config {
        api: ApiSettings {
            endpoint: Some(endpoint),
            ..ApiSettings::default()
        },
        poll_interval: interval,
        accounts: vec![Account {
            name: DEFAULT_ACCOUNT.into(),
            credentials: Some(RawCredentials {
                secret_id: Some(DEMO_SECRET_ID.into()),
                secret_key: Some(DEMO_SECRET_KEY.into()),
                ..RawCredentials::default()
            }),
            discovery: None,
            filter: Filter::default(),
        }],
        default_max_backup_age: DEFAULT_MAX_BACKUP_AGE,
        instances,
    }
}

fn instance(id: &str, region: &str, name: &str, backups: Vec<SimBackup>) -> SimInstance {
    SimInstance {
        id: id.into(),
        region: region.into(),
        name: name.into(),
        backups,
        is_legacy: false,
    }
}

/// One automatic backup a night, the newest at `newest`; those older than
/// the seven days of retention have expired.
fn nightly(tag: &str, newest: i64, count: i64, size: u64) -> Vec<SimBackup> {
    (0..count)
        .map(|n| {
            let status = if n < 7 { 2 } else { -1 };
            backup(
                &format!("{tag}-{n}"),
                newest - n * DAY,
                status,
                size - n as u64 * 1_000_000,
                "1",
            )
        })
        .collect()
}

/// One manual backup an hour, as a job might take them.
fn hourly(tag: &str, newest: i64, count: i64, size: u64) -> Vec<SimBackup> {
    (0..count)
        .map(|n| {
            let status = if n < 168 { 2 } else { -1 };
            backup(
                &format!("{tag}-{n}"),
                newest - n * HOUR,
                status,
                size + n as u64,
                "0",
            )
        })
        .collect()
}

fn backup(id: &str, start: i64, status: i64, size: u64, backup_type: &str) -> SimBackup {
    SimBackup {
        id: format!("demo-{id}"),
        start,
        status,
        is_locked: false,
        size,
        backup_type: backup_type.into(),
        remark: String::new(),
    }
}
