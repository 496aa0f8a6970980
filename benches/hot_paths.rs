//! The hot paths, measured with criterion: reading one full page of the
//! API's answer, signing one request, and rendering `/metrics`.
//!
//!     cargo bench --bench hot_paths -- --quick
//!
//! Rendering has two paths. After the snapshot changed (every poll changes
//! it), a scrape prepares the per-instance text anew; until the next change,
//! scrapes reuse that text and only write the ages. Both are measured, at
//! 1,000 and 10,000 instances. BENCHMARKS.md holds the figures of one run.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use serde_json::{json, Value};
use time::macros::offset;
use time::UtcOffset;

use crs_backup_exporter::answer::{format_api_time, parse_backup_page};
use crs_backup_exporter::backup::{Backup, BackupSummary, SummaryBuilder};
use crs_backup_exporter::config::{Instance, DEFAULT_ACCOUNT};
use crs_backup_exporter::metrics::Metrics;
use crs_backup_exporter::signing::{sign, SigningInput};
use crs_backup_exporter::snapshot::SnapshotStore;

/// The API writes times in Beijing time.
const BEIJING: UtcOffset = offset!(+8);

/// A fixed moment, so that every run renders the same text.
const NOW: i64 = 1_780_250_448;

fn now() -> f64 {
    NOW as f64 + 3600.0
}

/// A full page: 100 backups with every field the API sends today.
fn full_page() -> Vec<u8> {
    let backups: Vec<Value> = (0..100i64)
        .map(|n| {
            let start = NOW - n * 86_400;
            json!({
                "BackupId": format!("165706342-5832225-{start}"),
                "BackupSize": 2_147_483_648u64 - n as u64,
                "BackupType": "1",
                "Encrypted": false,
                "EndTime": format_api_time(start + 21, BEIJING),
                "ExpireTime": format_api_time(start + 7 * 86_400, BEIJING),
                "FileType": "RDB-Redis 6.2",
                "FullBackup": 0,
                "InstanceId": "crs-ei43p3gr",
                "InstanceName": "orders-cache",
                "InstanceType": 16,
                "Locked": i64::from(n == 3),
                "Region": "ap-guangzhou",
                "Remark": "",
                "StartTime": format_api_time(start, BEIJING),
                "Status": if n < 7 { 2 } else { -1 },
            })
        })
        .collect();
    let answer = json!({
        "Response": {
            "TotalCount": 250,
            "BackupSet": backups,
            "RequestId": "6e7b5c0e-8a51-4f3a-9d0c-1d2f3a4b5c6d",
        }
    });
    serde_json::to_vec(&answer).expect("a JSON value serializes")
}

fn parsing(c: &mut Criterion) {
    let body = full_page();
    c.bench_function("parse_backup_page/100_backups", |b| {
        b.iter(|| parse_backup_page(black_box(&body), BEIJING))
    });
}

fn signing(c: &mut Criterion) {
    let body = br#"{"InstanceId":"crs-ei43p3gr","Limit":100,"Offset":0,"Status":[1,2,3,4,-1,-2]}"#;
    c.bench_function("sign/describe_instance_backups", |b| {
        b.iter(|| {
            sign(black_box(&SigningInput {
                secret_id: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
                secret_key: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
                service: "redis",
                host: "redis.tencentcloudapi.com",
                timestamp: NOW,
                content_type: "application/json",
                body,
            }))
        })
    });
}

/// What a poll of a simulated instance finds: seven normal backups, one of
/// them locked, and three expired ones.
fn summary() -> BackupSummary {
    let mut builder = SummaryBuilder::default();
    for n in 0..10i64 {
        builder.add(&Backup {
            id: Some(format!("backup-{n}")),
            start_time: Some(NOW - n * 86_400),
            status: Some(if n < 7 { 2 } else { -1 }),
            is_locked: n == 0,
            size_bytes: Some(1 << 30),
            backup_type: Some("1".into()),
        });
    }
    builder.finish()
}

/// A snapshot of `count` instances, each polled once.
fn snapshot(count: usize) -> (Arc<SnapshotStore>, Vec<String>) {
    let instances: Vec<Instance> = (0..count)
        .map(|n| Instance {
            id: format!("crs-{n:08}"),
            account: DEFAULT_ACCOUNT.into(),
            region: "ap-guangzhou".into(),
            name: Some(format!("cache-{n}")),
            labels: BTreeMap::new(),
            max_backup_age: Duration::from_secs(26 * 3600),
        })
        .collect();
    let store = Arc::new(SnapshotStore::new(&instances));
    store.set_interval(Duration::from_secs(300));
    let summary = summary();
    for instance in &instances {
        store.record_success(&instance.id, summary.clone(), now());
    }
    let ids = instances.into_iter().map(|i| i.id).collect();
    (store, ids)
}

fn rendering(c: &mut Criterion) {
    // A render of 10,000 instances takes a good part of a second after a
    // change: samples of equal size keep the run to seconds per benchmark.
    let mut group = c.benchmark_group("render");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for count in [1_000, 10_000] {
        let (store, ids) = snapshot(count);
        let metrics = Metrics::new(Arc::clone(&store), now);
        let summary = summary();

        // Each iteration records a poll, as the scheduler does, so the
        // render that follows prepares every instance's text again.
        let mut next = 0;
        group.bench_function(format!("after_a_poll/{count}_instances"), |b| {
            b.iter(|| {
                store.record_success(&ids[next % ids.len()], summary.clone(), now());
                next += 1;
                black_box(metrics.render())
            })
        });

        // Nothing changes between iterations: the prepared text is reused.
        group.bench_function(format!("unchanged/{count}_instances"), |b| {
            b.iter(|| black_box(metrics.render()))
        });
    }
    group.finish();
}

criterion_group!(benches, parsing, signing, rendering);
criterion_main!(benches);
