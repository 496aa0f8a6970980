//! The simulator's `/-/stats` page: what a benchmark in another process
//! reads to check the rate limit held.

use crs_backup_exporter::client::{unix_now, API_VERSION, DESCRIBE_INSTANCE_BACKUPS, SERVICE};
use crs_backup_exporter::signing::{sign, SigningInput};
use crs_backup_exporter::simulator::{self, Scenario, STATS_PATH};
use serde_json::Value;

const CONTENT_TYPE: &str = "application/json";

/// Sends one signed `DescribeInstanceBackups` for the first instance.
async fn describe(http: &reqwest::Client, scenario: &Scenario, url: &str, host: &str) {
    let instance = &scenario.instances[0];
    let body = format!(
        r#"{{"InstanceId":"{}","Limit":100,"Offset":0}}"#,
        instance.id
    );
    let timestamp = unix_now();
    let signature = sign(&SigningInput {
        secret_id: &scenario.secret_id,
        secret_key: &scenario.secret_key,
        service: SERVICE,
        host,
        timestamp,
        content_type: CONTENT_TYPE,
        body: body.as_bytes(),
    });
    let response = http
        .post(url)
        .header("authorization", signature.authorization)
        .header("content-type", CONTENT_TYPE)
        .header("x-tc-action", DESCRIBE_INSTANCE_BACKUPS)
        .header("x-tc-version", API_VERSION)
        .header("x-tc-timestamp", timestamp.to_string())
        .header("x-tc-region", &instance.region)
        .body(body)
        .send()
        .await
        .expect("the simulator answers");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn stats_count_arrivals_the_busiest_second_and_errors_by_code() {
    let scenario = Scenario::generated(2, 1, 3, 2, unix_now());
    let sim = simulator::start(scenario.clone(), "127.0.0.1:0")
        .await
        .expect("the simulator starts on a free port");
    let (url, host) = (sim.url(), sim.addr.to_string());
    let http = reqwest::Client::new();

    // Three within a second against a limit of two: the third is throttled.
    for _ in 0..3 {
        describe(&http, &scenario, &url, &host).await;
    }

    let stats: Value = http
        .get(format!("{url}{STATS_PATH}"))
        .send()
        .await
        .expect("the simulator answers")
        .json()
        .await
        .expect("the stats are JSON");
    assert_eq!(stats["arrivals"], 3);
    let budget = &stats["budgets"][0];
    assert_eq!(budget["region"], scenario.instances[0].region.as_str());
    assert_eq!(budget["action"], DESCRIBE_INSTANCE_BACKUPS);
    assert_eq!(budget["busiest_second"], 3);
    assert_eq!(stats["errors"]["RequestLimitExceeded"], 1);
}
