//! A simulator of the Redis backup API on 127.0.0.1, for the demo and the
//! tests: it checks every signature the way the service does, keeps its own
//! per-second limit, and reproduces the API's quirks (the `Status` filter
//! defaulting to `[2]`, `Limit` at most 100, `Offset` a multiple of `Limit`,
//! errors with HTTP 200, times in the API's zone without an offset).
//!
//! It records the arrival of every request, so tests can check that no
//! second ever held more requests than the budget allows.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use time::UtcOffset;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::answer::format_api_time;
use crate::client::{API_VERSION, DESCRIBE_INSTANCE_BACKUPS, SERVICE};
use crate::signing::{sign, utc_date, SigningInput};

/// How far the signed timestamp may be from the server's clock.
const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// One backup the simulator knows.
#[derive(Debug, Clone)]
pub struct SimBackup {
    pub id: String,
    /// Unix seconds.
    pub start: i64,
    pub status: i64,
    pub is_locked: bool,
    pub size: u64,
    /// `"0"` manual, `"1"` automatic, `"2"` spec change.
    pub backup_type: String,
    pub remark: String,
}

/// One instance the simulator knows.
#[derive(Debug, Clone)]
pub struct SimInstance {
    pub id: String,
    pub region: String,
    pub name: String,
    pub backups: Vec<SimBackup>,
    /// Answer the list under the old key `RedisBackupSet`, with the old fields.
    pub is_legacy: bool,
}

/// What the simulator serves.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub secret_id: String,
    pub secret_key: String,
    /// When set, requests must carry this `X-TC-Token`.
    pub token: Option<String>,
    pub instances: Vec<SimInstance>,
    /// Requests per second per credential, region and action.
    pub rate_limit: u32,
    /// The zone of the times in answers.
    pub utc_offset: UtcOffset,
}

impl Scenario {
    /// `count` instances spread over `regions` regions, each with
    /// `backups` nightly backups, the newest an hour before `now`: for load
    /// tests, soak runs and benchmarks. IDs are `crs-` and eight digits.
    pub fn generated(
        count: usize,
        regions: usize,
        backups: usize,
        rate_limit: u32,
        now: i64,
    ) -> Self {
        let region_names: Vec<String> = (0..regions.max(1)).map(|r| format!("ap-sim{r}")).collect();
        let instances = (0..count)
            .map(|n| {
                let history = (0..backups as i64)
                    .map(|b| SimBackup {
                        id: format!("sim-{n}-{b}"),
                        start: now - 3600 - b * 86_400,
                        status: if b < 7 { 2 } else { -1 },
                        is_locked: b == 0 && n % 10 == 0,
                        size: 1 << 30,
                        backup_type: "1".into(),
                        remark: String::new(),
                    })
                    .collect();
                SimInstance {
                    id: format!("crs-{n:08}"),
                    region: region_names[n % region_names.len()].clone(),
                    name: format!("sim-{n}"),
                    backups: history,
                    is_legacy: false,
                }
            })
            .collect();
        Scenario {
            secret_id: "AKIDsimulator000000000000000000000000".into(),
            secret_key: format!("sim-{:016x}", fastrand::u64(..)),
            token: None,
            instances,
            rate_limit,
            utc_offset: time::macros::offset!(+8),
        }
    }

    /// An exporter configuration that watches every instance of this
    /// scenario through the simulator at `url`.
    pub fn exporter_config(&self, url: &str, rate_limit: u32, interval: &str) -> String {
        let mut text = format!(
            "api:\n  endpoint: {url}\n  rate_limit: {rate_limit}\npoll:\n  interval: {interval}\n\
             credentials:\n  secret_id: {}\n  secret_key: {}\ninstances:\n",
            self.secret_id, self.secret_key
        );
        for instance in &self.instances {
            text.push_str(&format!(
                "  - instance_id: {}\n    region: {}\n",
                instance.id, instance.region
            ));
        }
        text
    }
}

/// One request as the simulator saw it arrive.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub region: String,
    pub action: String,
    /// The error code answered, or `None` for success.
    pub error: Option<String>,
}

struct SimState {
    scenario: Scenario,
    arrivals: Mutex<Vec<Arrival>>,
    /// Recent arrivals per budget, for the simulator's own limit.
    windows: Mutex<HashMap<(String, String, String), VecDeque<Instant>>>,
    /// Error codes that instances answer with, switched on by tests.
    instance_errors: Mutex<HashMap<String, String>>,
}

/// A running simulator; dropping it stops the server.
pub struct SimulatorHandle {
    pub addr: SocketAddr,
    state: Arc<SimState>,
    _stop: watch::Sender<bool>,
}

impl SimulatorHandle {
    /// The URL to give the exporter as `api.endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes every request for `instance_id` answer with the error `code`,
    /// or, with `None`, answer normally again.
    pub fn set_instance_error(&self, instance_id: &str, code: Option<&str>) {
        let mut errors = self
            .state
            .instance_errors
            .lock()
            .expect("no code panics holding this lock");
        match code {
            Some(code) => errors.insert(instance_id.to_string(), code.to_string()),
            None => errors.remove(instance_id),
        };
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state
            .arrivals
            .lock()
            .expect("no code panics holding this lock")
            .clone()
    }

    /// The most requests of one region and action that arrived within any
    /// one second.
    pub fn busiest_second(&self) -> usize {
        let mut by_budget: HashMap<(String, String), Vec<Instant>> = HashMap::new();
        for arrival in self.arrivals() {
            by_budget
                .entry((arrival.region, arrival.action))
                .or_default()
                .push(arrival.at);
        }
        by_budget
            .into_values()
            .map(|times| busiest_window(times, Duration::from_secs(1)))
            .max()
            .unwrap_or(0)
    }
}

/// The most moments that fall into any one window.
pub fn busiest_window(mut moments: Vec<Instant>, window: Duration) -> usize {
    moments.sort();
    let mut most = 0;
    let mut first = 0;
    for last in 0..moments.len() {
        while moments[last].duration_since(moments[first]) >= window {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

/// Starts the simulator on `address` (such as `127.0.0.1:0`).
pub async fn start(scenario: Scenario, address: &str) -> std::io::Result<SimulatorHandle> {
    let listener = TcpListener::bind(address).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(SimState {
        scenario,
        arrivals: Mutex::new(Vec::new()),
        windows: Mutex::new(HashMap::new()),
        instance_errors: Mutex::new(HashMap::new()),
    });
    let (stop, mut stopped) = watch::channel(false);
    let served = Arc::clone(&state);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let state = Arc::clone(&served);
                    let service = service_fn(move |req| answer(Arc::clone(&state), req));
                    let io = TokioIo::new(stream);
                    tokio::spawn(http1::Builder::new().serve_connection(io, service));
                }
                _ = stopped.changed() => break,
            }
        }
    });
    Ok(SimulatorHandle {
        addr,
        state,
        _stop: stop,
    })
}

async fn answer(
    state: Arc<SimState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (region, action) = (header("x-tc-region"), header("x-tc-action"));

    let result = if parts.method != hyper::Method::POST || parts.uri.path() != "/" {
        Err((
            "InvalidAction".to_string(),
            "only POST / is served".to_string(),
        ))
    } else {
        state.check_and_answer(&parts.headers, &body, at)
    };
    let request_id = format!("sim-{:016x}", fastrand::u64(..));
    let (error, json) = match result {
        Ok(mut response) => {
            response["RequestId"] = json!(request_id);
            (None, json!({ "Response": response }))
        }
        Err((code, message)) => {
            let error = json!({ "Code": code, "Message": message });
            (
                Some(code),
                json!({ "Response": { "Error": error, "RequestId": request_id } }),
            )
        }
    };
    let arrival = Arrival {
        at,
        region,
        action,
        error,
    };
    state
        .arrivals
        .lock()
        .expect("no code panics holding this lock")
        .push(arrival);

    let mut response = Response::new(Full::new(Bytes::from(json.to_string())));
    let kind = hyper::header::HeaderValue::from_static("application/json");
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, kind);
    Ok(response)
}

type ApiResult = Result<Value, (String, String)>;

fn api_error(code: &str, message: impl Into<String>) -> (String, String) {
    (code.to_string(), message.into())
}

impl SimState {
    fn check_and_answer(&self, headers: &HeaderMap, body: &[u8], at: Instant) -> ApiResult {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let secret_id = self.check_signature(headers, body)?;
        if header("x-tc-version") != API_VERSION {
            return Err(api_error(
                "InvalidParameterValue",
                format!("unsupported version {:?}", header("x-tc-version")),
            ));
        }
        let region = header("x-tc-region");
        if region.is_empty() {
            return Err(api_error(
                "MissingParameter",
                "the request lacks X-TC-Region",
            ));
        }
        let action = header("x-tc-action");
        self.check_rate(&secret_id, region, action, at)?;
        match action {
            DESCRIBE_INSTANCE_BACKUPS => self.describe_instance_backups(region, body),
            other => Err(api_error(
                "InvalidAction",
                format!("action {other:?} is not supported"),
            )),
        }
    }

    /// Checks the signature as the service does; returns the SecretId.
    fn check_signature(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<String, (String, String)> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let failure = |message: &str| api_error("AuthFailure.SignatureFailure", message);
        let authorization = header("authorization");
        let rest = authorization
            .strip_prefix("TC3-HMAC-SHA256 Credential=")
            .ok_or_else(|| failure("the Authorization header is not TC3-HMAC-SHA256"))?;
        let (credential, rest) = rest
            .split_once(", SignedHeaders=")
            .ok_or_else(|| failure("no SignedHeaders"))?;
        let (signed_headers, signature) = rest
            .split_once(", Signature=")
            .ok_or_else(|| failure("no Signature"))?;
        let mut scope = credential.splitn(4, '/');
        let (secret_id, date, service, terminator) = (
            scope.next().unwrap_or(""),
            scope.next().unwrap_or(""),
            scope.next().unwrap_or(""),
            scope.next().unwrap_or(""),
        );
        if secret_id != self.scenario.secret_id {
            return Err(api_error(
                "AuthFailure.SecretIdNotFound",
                "the SecretId is not found",
            ));
        }
        let timestamp: i64 = header("x-tc-timestamp")
            .parse()
            .map_err(|_| failure("X-TC-Timestamp is not a number"))?;
        let server_time = crate::client::unix_now();
        if (server_time - timestamp).abs() > MAX_CLOCK_SKEW_SECS {
            let message =
                format!("Signature expired. Timestamp:{timestamp}, server time:{server_time}");
            return Err(api_error("AuthFailure.SignatureExpire", message));
        }
        if date != utc_date(timestamp) || service != SERVICE || terminator != "tc3_request" {
            return Err(failure(
                "the credential scope does not match the timestamp and service",
            ));
        }
        if signed_headers != "content-type;host" {
            return Err(failure("SignedHeaders must be content-type;host"));
        }
        let expected = sign(&SigningInput {
            secret_id,
            secret_key: &self.scenario.secret_key,
            service: SERVICE,
            host: header("host"),
            timestamp,
            content_type: header("content-type"),
            body,
        });
        if expected.signature != signature {
            return Err(failure("the signature does not match"));
        }
        if let Some(token) = &self.scenario.token {
            if header("x-tc-token") != token {
                return Err(api_error(
                    "AuthFailure.TokenFailure",
                    "the token is missing or wrong",
                ));
            }
        }
        Ok(secret_id.to_string())
    }

    /// The simulator's own limit, counted by arrival over any one second.
    fn check_rate(
        &self,
        secret_id: &str,
        region: &str,
        action: &str,
        at: Instant,
    ) -> Result<(), (String, String)> {
        let mut windows = self
            .windows
            .lock()
            .expect("no code panics holding this lock");
        let window = windows
            .entry((secret_id.into(), region.into(), action.into()))
            .or_default();
        while window
            .front()
            .is_some_and(|first| at.duration_since(*first) >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        window.push_back(at);
        let limit = self.scenario.rate_limit as usize;
        if window.len() > limit {
            let message = format!(
                "{} requests arrived within a second; the limit is {limit} a second",
                window.len()
            );
            return Err(api_error("RequestLimitExceeded", message));
        }
        Ok(())
    }

    fn describe_instance_backups(&self, region: &str, body: &[u8]) -> ApiResult {
        let request: Value = serde_json::from_slice(body)
            .map_err(|_| api_error("InvalidParameter.InvalidParameter", "the body is not JSON"))?;
        let id = request
            .get("InstanceId")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some(code) = self.injected_error(id) {
            return Err(api_error(&code, "an error switched on in the simulator"));
        }
        let limit = request
            .get("Limit")
            .map_or(Some(20), Value::as_i64)
            .unwrap_or(-1);
        let offset = request
            .get("Offset")
            .map_or(Some(0), Value::as_i64)
            .unwrap_or(-1);
        if !(1..=100).contains(&limit) {
            return Err(api_error(
                "InvalidParameterValue",
                format!("Limit must be from 1 to 100, not {limit}"),
            ));
        }
        if offset < 0 || offset % limit != 0 {
            return Err(api_error(
                "InvalidParameterValue",
                format!("Offset {offset} is not a multiple of Limit {limit}"),
            ));
        }
        // The filter the API applies when none is sent: normal backups only.
        let statuses: Vec<i64> = match request.get("Status") {
            Some(Value::Array(codes)) => codes.iter().filter_map(Value::as_i64).collect(),
            _ => vec![2],
        };
        let instance = self
            .scenario
            .instances
            .iter()
            .find(|i| i.id == id && i.region == region)
            .ok_or_else(|| {
                api_error(
                    "ResourceNotFound.InstanceNotExists",
                    format!("instance {id} does not exist in {region}"),
                )
            })?;
        let mut matching: Vec<&SimBackup> = instance
            .backups
            .iter()
            .filter(|b| statuses.contains(&b.status))
            .collect();
        matching.sort_by_key(|b| std::cmp::Reverse(b.start));
        let page: Vec<Value> = matching
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(|backup| self.backup_json(instance, backup))
            .collect();
        let key = if instance.is_legacy {
            "RedisBackupSet"
        } else {
            "BackupSet"
        };
        Ok(json!({ "TotalCount": matching.len(), key: page }))
    }

    fn injected_error(&self, instance_id: &str) -> Option<String> {
        let errors = self
            .instance_errors
            .lock()
            .expect("no code panics holding this lock");
        errors.get(instance_id).cloned()
    }

    fn backup_json(&self, instance: &SimInstance, backup: &SimBackup) -> Value {
        let time = |unix: i64| format_api_time(unix, self.scenario.utc_offset);
        let mut value = json!({
            "BackupId": backup.id,
            "StartTime": time(backup.start),
            "BackupType": backup.backup_type,
            "Status": backup.status,
            "Remark": backup.remark,
            "Locked": i64::from(backup.is_locked),
        });
        if !instance.is_legacy {
            let is_running = backup.status == 1;
            let extra = json!({
                "EndTime": if is_running { String::new() } else { time(backup.start + 25) },
                "ExpireTime": time(backup.start + 7 * 86400),
                "BackupSize": backup.size,
                "FullBackup": 0,
                "InstanceType": 16,
                "InstanceId": instance.id,
                "InstanceName": instance.name,
                "Region": instance.region,
                "FileType": "RDB-Redis 6.2",
                "Encrypted": false,
            });
            if let (Value::Object(map), Value::Object(more)) = (&mut value, extra) {
                map.extend(more);
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_window_counts_half_open_seconds() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let one_second = Duration::from_secs(1);
        assert_eq!(busiest_window(vec![at(0), at(500), at(999)], one_second), 3);
        assert_eq!(
            busiest_window(vec![at(0), at(1000), at(2000)], one_second),
            1
        );
        assert_eq!(busiest_window(vec![], one_second), 0);
    }
}
