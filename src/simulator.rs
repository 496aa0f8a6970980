//! A simulator of the Redis backup API on 127.0.0.1, for the demo and the
//! tests: it checks every signature the way the service does, keeps its own
//! per-second limit, and reproduces the API's quirks (the `Status` filter
//! defaulting to `[2]`, `Limit` at most 100, `Offset` a multiple of `Limit`,
//! errors with HTTP 200, times in the API's zone without an offset).
//!
//! It records the arrival of every request, so tests can check that no
//! second ever held more requests than the budget allows.
//!
//! # Faults
//!
//! Faults ([`Fault`], in [`faults`]) make it fail the way the API and the
//! network do: latency and hangs, HTTP 502/503, connection resets, malformed,
//! truncated and oversized bodies, fields of the wrong type, a `TotalCount`
//! that lies, throttling, clock skew, an expired token. A fault is switched
//! on for one instance or for every instance that has none of its own, from
//! Rust ([`SimulatorHandle::set_fault`]) or over HTTP on the simulator's own
//! port, which is how `crs-backup-exporter simulator` is driven:
//!
//! ```text
//! POST   /-/faults  {"instance_id": "crs-00000001", "fault": {"kind": "latency", "ms": 5000}}
//! POST   /-/faults  {"fault": {"kind": "http_status", "status": 503}}   (every instance)
//! POST   /-/faults  {"instance_id": "crs-00000001", "fault": null}      (that one off)
//! DELETE /-/faults                                                      (all off)
//! GET    /-/faults                                                      (what is on)
//! ```
//!
//! Each answers 200 with the faults now on as JSON, or 400 saying what is
//! wrong with the switch. The kinds and their fields are those of [`Fault`]
//! in snake case: `latency {ms}`, `http_status {status}`, `reset`,
//! `malformed_json`, `truncated_body`, `oversized_body {bytes}`,
//! `wrong_types`, `wrong_field_types`, `lying_total {total}`,
//! `throttle {share}`, `clock_skew {secs}`, `expired_token`.
//!
//! A request without an `InstanceId` (discovery's `DescribeInstances`) meets
//! only the fault for every instance; the faults that reshape an answer
//! (`wrong_types`, `wrong_field_types`, `lying_total`) reshape backup lists
//! only.
//!
//! Note: the control endpoint has no authentication. It is meant for a
//! simulator on 127.0.0.1, where only the machine's own users reach it.

pub mod faults;
pub mod inventory;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, DATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use time::UtcOffset;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use faults::{Fault, FaultTable};

use crate::answer::format_api_time;
use crate::client::{API_VERSION, DESCRIBE_INSTANCES, DESCRIBE_INSTANCE_BACKUPS, SERVICE};
use crate::signing::{sign, utc_date, SigningInput};

/// How far the signed timestamp may be from the server's clock.
const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Where faults are switched over HTTP.
pub const FAULTS_PATH: &str = "/-/faults";

/// Where the simulator tells what has arrived so far (see [`SimState::stats`]).
pub const STATS_PATH: &str = "/-/stats";

/// The body of every answer.
type SimBody = BoxBody<Bytes, std::io::Error>;

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
    /// The `InstanceId` of the request, or empty when it had none.
    pub instance_id: String,
    /// The error code answered, `fault.<kind>` when a transport fault
    /// answered instead of the API, or `None` for success.
    pub error: Option<String>,
}

struct SimState {
    scenario: Scenario,
    arrivals: Mutex<Vec<Arrival>>,
    /// Recent arrivals per budget, for the simulator's own limit.
    windows: Mutex<HashMap<(String, String, String), VecDeque<Instant>>>,
    /// Error codes that instances answer with, switched on by tests.
    instance_errors: Mutex<HashMap<String, String>>,
    /// What `DescribeInstances` tells of instances; set by tests.
    listings: Mutex<HashMap<String, inventory::Listing>>,
    /// Faults switched on by tests, the soak, or `/-/faults`.
    faults: Mutex<FaultTable>,
    /// Requests seen under a throttle fault, so that its share is exact.
    throttle_count: AtomicU64,
    /// The last oversized body made: a soak asks for the same one often.
    oversized: Mutex<Option<Bytes>>,
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

    /// Sets what `DescribeInstances` tells of an instance: its status,
    /// project and tags.
    pub fn set_listing(&self, instance_id: &str, listing: inventory::Listing) {
        let mut listings = self
            .state
            .listings
            .lock()
            .expect("no code panics holding this lock");
        listings.insert(instance_id.to_string(), listing);
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

    /// Switches `fault` on for requests about `instance_id`, or, with
    /// `None`, off. An instance's own fault comes before the one for every
    /// instance.
    pub fn set_fault(&self, instance_id: &str, fault: Option<Fault>) {
        self.state.switch_fault(Some(instance_id), fault);
    }

    /// Switches `fault` on for every instance that has none of its own, or,
    /// with `None`, off.
    pub fn set_fault_everywhere(&self, fault: Option<Fault>) {
        self.state.switch_fault(None, fault);
    }

    /// Switches every fault off.
    pub fn clear_faults(&self) {
        *self.state.fault_table() = FaultTable::default();
    }

    /// The faults now on.
    pub fn faults(&self) -> FaultTable {
        self.state.fault_table().clone()
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

/// Reads `Limit` (default 20, from 1 to `max`) and `Offset` (a multiple of
/// `Limit`) as the API checks them.
fn page_window(request: &Value, max: i64) -> Result<(i64, i64), (String, String)> {
    let number = |key: &str, default: i64| request.get(key).map_or(Some(default), Value::as_i64);
    let limit = number("Limit", 20).unwrap_or(-1);
    let offset = number("Offset", 0).unwrap_or(-1);
    if !(1..=max).contains(&limit) {
        let message = format!("Limit must be from 1 to {max}, not {limit}");
        return Err(api_error("InvalidParameterValue", message));
    }
    if offset < 0 || offset % limit != 0 {
        let message = format!("Offset {offset} is not a multiple of Limit {limit}");
        return Err(api_error("InvalidParameterValue", message));
    }
    Ok((limit, offset))
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
        listings: Mutex::new(HashMap::new()),
        faults: Mutex::new(FaultTable::default()),
        throttle_count: AtomicU64::new(0),
        oversized: Mutex::new(None),
    });
    let (stop, mut stopped) = watch::channel(false);
    let served = Arc::clone(&state);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    serve_connection(Arc::clone(&served), stream);
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

fn serve_connection(state: Arc<SimState>, stream: TcpStream) {
    let stream = ResettableStream {
        stream,
        is_reset: Arc::new(AtomicBool::new(false)),
    };
    let is_reset = Arc::clone(&stream.is_reset);
    let service = service_fn(move |req| answer(Arc::clone(&state), Arc::clone(&is_reset), req));
    let io = TokioIo::new(stream);
    tokio::spawn(http1::Builder::new().serve_connection(io, service));
}

/// A connection that ends with a TCP reset instead of an orderly close once
/// `is_reset` is set: the reset fault.
struct ResettableStream {
    stream: TcpStream,
    is_reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        // With a linger of zero, closing the socket sends RST. It does not
        // block: nothing waits for unsent data.
        if self.is_reset.load(Ordering::Relaxed) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Answers one request; an error closes the connection unanswered.
async fn answer(
    state: Arc<SimState>,
    is_reset: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, std::io::Error> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if parts.uri.path() == FAULTS_PATH {
        return Ok(state.control(&parts.method, &body));
    }
    if parts.uri.path() == STATS_PATH {
        return Ok(state.stats());
    }
    let mut arrival = Arrival::of(&parts.headers, &body, at);
    let fault = state
        .fault_table()
        .for_instance(&arrival.instance_id)
        .cloned();
    if let Some(Fault::Latency { ms }) = fault {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    // A transport fault answers in the API's place.
    if let Some(interception) = state.transport_fault(fault.as_ref()) {
        arrival.error = fault.as_ref().map(|f| format!("fault.{}", f.kind()));
        state.record(arrival);
        return interception.into_outcome(&is_reset);
    }

    let result = if parts.method != Method::POST || parts.uri.path() != "/" {
        Err(api_error("InvalidAction", "only POST / is served"))
    } else {
        state.check_and_answer(&parts.headers, &body, at, fault.as_ref())
    };
    arrival.error = result.as_ref().err().map(|(code, _)| code.clone());
    state.record(arrival);
    Ok(api_response(result, fault.as_ref()))
}

impl Arrival {
    /// A request arrived `at`, its error not yet known.
    fn of(headers: &HeaderMap, body: &[u8], at: Instant) -> Self {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Arrival {
            at,
            region: header("x-tc-region"),
            action: header("x-tc-action"),
            instance_id: requested_instance(body),
            error: None,
        }
    }
}

/// The HTTP answer of the API, with the `Date` of a skewed clock.
fn api_response(result: ApiResult, fault: Option<&Fault>) -> Response<SimBody> {
    let mut response = json_response(StatusCode::OK, api_json(result).to_string());
    if let Some(Fault::ClockSkew { secs }) = fault {
        let date = httpdate::fmt_http_date(skewed_now(*secs));
        if let Ok(date) = HeaderValue::from_str(&date) {
            response.headers_mut().insert(DATE, date);
        }
    }
    response
}

/// The `InstanceId` of a request body, or empty.
fn requested_instance(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("InstanceId")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_default()
}

/// `{"Response": ...}` around an answer or an error, with a request ID.
fn api_json(result: ApiResult) -> Value {
    let request_id = format!("sim-{:016x}", fastrand::u64(..));
    match result {
        Ok(mut response) => {
            response["RequestId"] = json!(request_id);
            json!({ "Response": response })
        }
        Err((code, message)) => {
            let error = json!({ "Code": code, "Message": message });
            json!({ "Response": { "Error": error, "RequestId": request_id } })
        }
    }
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<SimBody> {
    let body = Full::new(body.into()).map_err(|never| match never {});
    let mut response = Response::new(body.boxed());
    *response.status_mut() = status;
    let kind = HeaderValue::from_static("application/json");
    response.headers_mut().insert(CONTENT_TYPE, kind);
    response
}

/// An answer that announces 4096 bytes, sends the start of one, and closes.
fn truncated_response() -> Response<SimBody> {
    let sent = Bytes::from_static(br#"{"Response": {"TotalCount": 1, "BackupSet": [{"BackupId":"#);
    let mut response = Response::new(faults::TruncatedBody::new(sent).boxed());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("4096"));
    response
}

/// What a transport fault does instead of the API.
enum Interception {
    Answer(Response<SimBody>),
    /// Close the connection with a reset, answering nothing.
    Reset,
}

impl Interception {
    /// The service's outcome: an answer, or an error, on which the
    /// connection closes with a reset.
    fn into_outcome(self, is_reset: &AtomicBool) -> Result<Response<SimBody>, std::io::Error> {
        match self {
            Interception::Answer(response) => Ok(response),
            Interception::Reset => {
                is_reset.store(true, Ordering::Relaxed);
                let reset = std::io::Error::new(ErrorKind::ConnectionReset, "reset on purpose");
                Err(reset)
            }
        }
    }
}

/// The time on a server clock `secs` seconds off.
fn skewed_now(secs: i64) -> SystemTime {
    let off = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::now() + off
    } else {
        SystemTime::now() - off
    }
}

type ApiResult = Result<Value, (String, String)>;

/// An answer in the shape an answer fault gives it.
fn shaped(answer: Map<String, Value>, fault: Option<&Fault>) -> Map<String, Value> {
    match fault {
        Some(Fault::WrongTypes) => faults::with_wrong_types(answer),
        Some(Fault::WrongFieldTypes) => faults::with_wrong_field_types(answer),
        _ => answer,
    }
}

fn api_error(code: &str, message: impl Into<String>) -> (String, String) {
    (code.to_string(), message.into())
}

impl SimState {
    fn record(&self, arrival: Arrival) {
        self.arrivals
            .lock()
            .expect("no code panics holding this lock")
            .push(arrival);
    }

    fn fault_table(&self) -> std::sync::MutexGuard<'_, FaultTable> {
        self.faults
            .lock()
            .expect("no code panics holding this lock")
    }

    fn switch_fault(&self, instance_id: Option<&str>, fault: Option<Fault>) {
        let scope = instance_id.unwrap_or("every instance");
        match &fault {
            Some(fault) => tracing::info!(scope, kind = fault.kind(), ?fault, "fault on"),
            None => tracing::info!(scope, "fault off"),
        }
        self.fault_table().set(instance_id, fault);
    }

    /// `/-/faults`: switches faults, and answers with those now on.
    fn control(&self, method: &Method, body: &[u8]) -> Response<SimBody> {
        let outcome = match *method {
            Method::GET => Ok(()),
            Method::DELETE => {
                *self.fault_table() = FaultTable::default();
                tracing::info!("every fault off");
                Ok(())
            }
            Method::POST => faults::FaultSwitch::parse(body)
                .map(|switch| self.switch_fault(switch.instance_id.as_deref(), switch.fault)),
            _ => Err(format!(
                "{method} is not served here; use GET, POST or DELETE"
            )),
        };
        match outcome {
            Ok(()) => {
                let table = serde_json::to_string(&*self.fault_table())
                    .expect("faults serialize: they hold strings and numbers");
                json_response(StatusCode::OK, table)
            }
            Err(message) => {
                let body = json!({ "error": message }).to_string();
                json_response(StatusCode::BAD_REQUEST, body)
            }
        }
    }

    /// What a transport fault answers instead of the API, if one is on.
    fn transport_fault(&self, fault: Option<&Fault>) -> Option<Interception> {
        let answer = |status, body| Some(Interception::Answer(json_response(status, body)));
        match fault? {
            Fault::Reset => Some(Interception::Reset),
            Fault::HttpStatus { status } => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
                let mut response = json_response(status, faults::gateway_page(status.as_u16()));
                let html = HeaderValue::from_static("text/html");
                response.headers_mut().insert(CONTENT_TYPE, html);
                Some(Interception::Answer(response))
            }
            Fault::MalformedJson => answer(StatusCode::OK, faults::malformed_json()),
            Fault::OversizedBody { bytes } => answer(StatusCode::OK, self.oversized_body(*bytes)),
            Fault::TruncatedBody => Some(Interception::Answer(truncated_response())),
            _ => None,
        }
    }

    fn oversized_body(&self, bytes: usize) -> Bytes {
        let mut cached = self
            .oversized
            .lock()
            .expect("no code panics holding this lock");
        match cached.as_ref() {
            Some(body) if body.len() == bytes => body.clone(),
            _ => cached.insert(faults::oversized_json(bytes)).clone(),
        }
    }

    fn check_and_answer(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        at: Instant,
        fault: Option<&Fault>,
    ) -> ApiResult {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let clock_skew = match fault {
            Some(Fault::ClockSkew { secs }) => *secs,
            _ => 0,
        };
        let secret_id = self.check_signature(headers, body, clock_skew)?;
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
        self.check_api_fault(fault)?;
        match action {
            DESCRIBE_INSTANCE_BACKUPS => self.describe_instance_backups(region, body, fault),
            DESCRIBE_INSTANCES => self.describe_instances(region, body),
            other => Err(api_error(
                "InvalidAction",
                format!("action {other:?} is not supported"),
            )),
        }
    }

    /// The errors of the API faults that reject a request.
    fn check_api_fault(&self, fault: Option<&Fault>) -> Result<(), (String, String)> {
        match fault {
            Some(Fault::ExpiredToken) => Err(api_error(
                "AuthFailure.TokenFailure",
                "the token has expired",
            )),
            Some(Fault::Throttle { share })
                if faults::is_throttled(&self.throttle_count, *share) =>
            {
                Err(api_error(
                    "RequestLimitExceeded",
                    "too many requests (a throttle switched on in the simulator)",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Checks the signature as the service does, on a clock `clock_skew`
    /// seconds off; returns the SecretId.
    fn check_signature(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        clock_skew: i64,
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
        let server_time = crate::client::unix_now() + clock_skew;
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

    fn describe_instance_backups(
        &self,
        region: &str,
        body: &[u8],
        fault: Option<&Fault>,
    ) -> ApiResult {
        let request: Value = serde_json::from_slice(body)
            .map_err(|_| api_error("InvalidParameter.InvalidParameter", "the body is not JSON"))?;
        let id = request
            .get("InstanceId")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some(code) = self.injected_error(id) {
            return Err(api_error(&code, "an error switched on in the simulator"));
        }
        let (limit, offset) = page_window(&request, 100)?;
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
        let (skipped, total) = match fault {
            Some(Fault::LyingTotal { total }) => (0, *total),
            _ => (offset as usize, matching.len() as u64),
        };
        // A lying answer repeats the instance's backups to fill every page.
        let is_padded = total > matching.len() as u64 && !matching.is_empty();
        let repeats = if is_padded { usize::MAX } else { 1 };
        let page: Vec<Value> = std::iter::repeat_n(&matching, repeats)
            .flatten()
            .skip(skipped)
            .take(limit as usize)
            .map(|backup| self.backup_json(instance, backup))
            .collect();
        let key = if instance.is_legacy {
            "RedisBackupSet"
        } else {
            "BackupSet"
        };
        let mut answer = Map::new();
        answer.insert("TotalCount".into(), json!(total));
        answer.insert(key.into(), Value::Array(page));
        Ok(Value::Object(shaped(answer, fault)))
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

impl SimState {
    /// `/-/stats`: what has arrived so far, as JSON, for a benchmark or a
    /// load test that runs the simulator in another process: the number of
    /// requests, the most of one region and action within any one second,
    /// and the error codes answered, with how often each.
    ///
    /// Note: it walks every arrival kept since the start, so it costs time
    /// in proportion to the requests seen; ask it once at the end of a run.
    fn stats(&self) -> Response<SimBody> {
        let mut moments: BTreeMap<(String, String), Vec<Instant>> = BTreeMap::new();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let total = {
            let arrivals = self
                .arrivals
                .lock()
                .expect("no code panics holding this lock");
            for arrival in arrivals.iter() {
                let budget = (arrival.region.clone(), arrival.action.clone());
                moments.entry(budget).or_default().push(arrival.at);
                if let Some(code) = &arrival.error {
                    *errors.entry(code.clone()).or_default() += 1;
                }
            }
            arrivals.len()
        };
        let busiest: Vec<Value> = moments
            .into_iter()
            .map(|((region, action), at)| {
                let most = busiest_window(at, Duration::from_secs(1));
                json!({ "region": region, "action": action, "busiest_second": most })
            })
            .collect();
        let stats = json!({ "arrivals": total, "budgets": busiest, "errors": errors });
        json_response(StatusCode::OK, stats.to_string())
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
