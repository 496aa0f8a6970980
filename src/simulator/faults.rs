//! Faults the simulator can put on its answers: one per instance, and one
//! for every instance that has none of its own, switched at run time.
//!
//! Each fault imitates one way the API, or the network in front of it,
//! fails. Transport faults (latency, HTTP errors, resets, broken or huge
//! bodies) act before the request is checked, as a gateway would; API faults
//! (throttling, clock skew, an expired token, answers of odd shape) act
//! inside the API's own checks. No fault on means the simulator behaves
//! exactly as without this module.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The size of an oversized body when none is given: well past the
/// exporter's 4 MiB cap on answers.
pub const DEFAULT_OVERSIZED_BYTES: usize = 6 * 1024 * 1024;

/// What a lying `TotalCount` claims when none is given.
pub const DEFAULT_LYING_TOTAL: u64 = 100_000;

/// No fault may hold an answer back longer than this, so that every test
/// and soak run ends by itself.
const MAX_LATENCY_MS: u64 = 10 * 60 * 1000;

/// No oversized body may be larger than this.
const MAX_OVERSIZED_BYTES: usize = 64 * 1024 * 1024;

/// One fault. In JSON the kind names it: `{"kind": "latency", "ms": 3000}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answers normally, `ms` milliseconds late. Longer than the client's
    /// timeout, this is a hang.
    Latency { ms: u64 },
    /// Answers with this HTTP status (such as 502 or 503) and an HTML page,
    /// as a gateway in front of the API does.
    HttpStatus { status: u16 },
    /// Reads the request, then closes the connection with a TCP reset and
    /// no answer.
    Reset,
    /// Answers HTTP 200 with a body that is not JSON: it stops mid-object.
    MalformedJson,
    /// Promises more bytes in `Content-Length` than it sends, then closes.
    TruncatedBody,
    /// Answers well-formed JSON of about `bytes` bytes, far larger than any
    /// real answer.
    OversizedBody {
        #[serde(default = "default_oversized_bytes")]
        bytes: usize,
    },
    /// Answers with the count and the list in other JSON types:
    /// `TotalCount` a string, `BackupSet` an object of backups by ID.
    WrongTypes,
    /// Answers every field the exporter reads in another JSON type that
    /// still holds the value: numbers as strings, `Locked` a boolean,
    /// `BackupType` a number.
    WrongFieldTypes,
    /// Claims `total` backups and answers every page, whatever its offset,
    /// with the same full page (the instance's backups repeated to fill it).
    LyingTotal {
        #[serde(default = "default_lying_total")]
        total: u64,
    },
    /// Answers `RequestLimitExceeded` to this share (0 to 1) of requests,
    /// spread evenly: 0.5 throttles every second request.
    Throttle { share: f64 },
    /// Runs the server's clock `secs` seconds off (ahead when positive):
    /// past five minutes every signature has "expired", and the `Date`
    /// header of every answer shows that clock.
    ClockSkew { secs: i64 },
    /// Rejects every request with `AuthFailure.TokenFailure`, as the API
    /// does once temporary credentials have expired.
    ExpiredToken,
}

fn default_oversized_bytes() -> usize {
    DEFAULT_OVERSIZED_BYTES
}

fn default_lying_total() -> u64 {
    DEFAULT_LYING_TOTAL
}

impl Fault {
    /// The name of the kind, as in JSON; also what the simulator records as
    /// the error of a request the fault answered.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Latency { .. } => "latency",
            Fault::HttpStatus { .. } => "http_status",
            Fault::Reset => "reset",
            Fault::MalformedJson => "malformed_json",
            Fault::TruncatedBody => "truncated_body",
            Fault::OversizedBody { .. } => "oversized_body",
            Fault::WrongTypes => "wrong_types",
            Fault::WrongFieldTypes => "wrong_field_types",
            Fault::LyingTotal { .. } => "lying_total",
            Fault::Throttle { .. } => "throttle",
            Fault::ClockSkew { .. } => "clock_skew",
            Fault::ExpiredToken => "expired_token",
        }
    }

    /// Whether the fault's figures are ones the simulator can serve.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            Fault::Latency { ms } if ms > MAX_LATENCY_MS => {
                Err(format!("latency ms must be at most {MAX_LATENCY_MS}"))
            }
            Fault::HttpStatus { status } if !(400..=599).contains(&status) => Err(format!(
                "http_status status must be from 400 to 599, not {status}"
            )),
            Fault::OversizedBody { bytes } if bytes > MAX_OVERSIZED_BYTES => Err(format!(
                "oversized_body bytes must be at most {MAX_OVERSIZED_BYTES}"
            )),
            Fault::Throttle { share } if !(0.0..=1.0).contains(&share) => {
                Err(format!("throttle share must be from 0 to 1, not {share}"))
            }
            _ => Ok(()),
        }
    }
}

/// Every fault switched on.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FaultTable {
    /// The fault of every instance that has none of its own.
    pub everywhere: Option<Fault>,
    /// Faults of single instances, by instance ID.
    pub instances: BTreeMap<String, Fault>,
}

impl FaultTable {
    /// The fault that applies to a request for `instance_id`.
    pub fn for_instance(&self, instance_id: &str) -> Option<&Fault> {
        self.instances.get(instance_id).or(self.everywhere.as_ref())
    }

    /// Switches `fault` on (or, with `None`, off) for one instance or, with
    /// no instance, for every instance.
    pub fn set(&mut self, instance_id: Option<&str>, fault: Option<Fault>) {
        match (instance_id, fault) {
            (None, fault) => self.everywhere = fault,
            (Some(id), Some(fault)) => {
                self.instances.insert(id.to_string(), fault);
            }
            (Some(id), None) => {
                self.instances.remove(id);
            }
        }
    }
}

/// The body of `POST /-/faults`: `{"instance_id": "crs-...", "fault": {...}}`.
/// Without `instance_id` the fault is for every instance; a `fault` that is
/// `null` or absent switches off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSwitch {
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub fault: Option<Fault>,
}

impl FaultSwitch {
    /// Reads and checks a switch sent to the control endpoint.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let switch: FaultSwitch =
            serde_json::from_slice(body).map_err(|err| format!("not a fault switch: {err}"))?;
        match &switch.fault {
            Some(fault) => fault.check().map(|()| switch),
            None => Ok(switch),
        }
    }
}

/// Whether request number `n` (counting from 0) of those under a throttle
/// of `share` is throttled: exactly `share` of every run of requests is,
/// spread evenly, so that tests can count on it.
pub fn is_throttled(counter: &AtomicU64, share: f64) -> bool {
    let n = counter.fetch_add(1, Ordering::Relaxed) as f64;
    ((n + 1.0) * share).floor() > (n * share).floor()
}

/// The page a gateway shows with an HTTP error.
pub fn gateway_page(status: u16) -> Bytes {
    Bytes::from(format!(
        "<html><head><title>{status}</title></head>\
         <body><h1>{status}</h1><p>the upstream server did not answer</p></body></html>"
    ))
}

/// A body that starts as an answer and stops mid-object.
pub fn malformed_json() -> Bytes {
    Bytes::from_static(
        br#"{"Response": {"TotalCount": 1, "BackupSet": [{"BackupId": "cut-", "Status": 2,"#,
    )
}

/// Well-formed JSON of `bytes` bytes: an empty answer padded with a string.
pub fn oversized_json(bytes: usize) -> Bytes {
    let head =
        r#"{"Response":{"TotalCount":0,"BackupSet":[],"RequestId":"sim-oversized","Padding":""#;
    let tail = r#""}}"#;
    let padding = bytes.saturating_sub(head.len() + tail.len());
    let mut text = String::with_capacity(bytes);
    text.push_str(head);
    text.extend(std::iter::repeat_n('x', padding));
    text.push_str(tail);
    Bytes::from(text)
}

/// `TotalCount` as a string and the list as an object of backups by ID.
pub fn with_wrong_types(mut answer: Map<String, Value>) -> Map<String, Value> {
    if let Some(count) = answer.get_mut("TotalCount") {
        *count = json!(count.to_string());
    }
    let list = answer
        .remove("BackupSet")
        .or_else(|| answer.remove("RedisBackupSet"));
    let by_id: Map<String, Value> = match list {
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(n, item)| (text_of(item.get("BackupId")).unwrap_or(n.to_string()), item))
            .collect(),
        _ => Map::new(),
    };
    answer.insert("BackupSet".into(), Value::Object(by_id));
    answer
}

/// Every number the exporter reads as a string, `Locked` as a boolean and
/// `BackupType` as a number: odd types, the same values.
pub fn with_wrong_field_types(mut answer: Map<String, Value>) -> Map<String, Value> {
    if let Some(count) = answer.get_mut("TotalCount") {
        *count = json!(count.to_string());
    }
    for key in ["BackupSet", "RedisBackupSet"] {
        if let Some(Value::Array(items)) = answer.get_mut(key) {
            items.iter_mut().for_each(odd_field_types);
        }
    }
    answer
}

fn odd_field_types(backup: &mut Value) {
    let Value::Object(fields) = backup else {
        return;
    };
    for key in ["Status", "BackupSize", "FullBackup", "InstanceType"] {
        if let Some(value) = fields.get_mut(key).filter(|v| v.is_number()) {
            *value = json!(value.to_string());
        }
    }
    if let Some(locked) = fields.get_mut("Locked") {
        *locked = json!(locked.as_i64() == Some(1));
    }
    if let Some(kind) = fields.get_mut("BackupType") {
        let number = kind.as_str().and_then(|s| s.parse::<i64>().ok());
        if let Some(number) = number {
            *kind = json!(number);
        }
    }
}

fn text_of(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_string)
}

/// A body that sends `sent`, waits a moment so that the server writes it
/// out, and then fails: the server closes the connection short of the
/// `Content-Length` it announced.
pub struct TruncatedBody {
    sent: Option<Bytes>,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl TruncatedBody {
    pub fn new(sent: Bytes) -> Self {
        let pause = Box::pin(tokio::time::sleep(Duration::from_millis(50)));
        TruncatedBody {
            sent: Some(sent),
            pause,
        }
    }
}

impl Body for TruncatedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(bytes) = self.sent.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        std::task::ready!(self.pause.as_mut().poll(cx));
        let cut = std::io::Error::other("the body is cut short on purpose");
        Poll::Ready(Some(Err(cut)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_faults_come_before_the_fault_for_every_instance() {
        let mut table = FaultTable::default();
        table.set(None, Some(Fault::Reset));
        table.set(Some("crs-00000001"), Some(Fault::MalformedJson));
        assert_eq!(
            table.for_instance("crs-00000001"),
            Some(&Fault::MalformedJson)
        );
        assert_eq!(table.for_instance("crs-00000002"), Some(&Fault::Reset));
        table.set(None, None);
        table.set(Some("crs-00000001"), None);
        assert_eq!(table, FaultTable::default());
    }

    #[test]
    fn switches_read_from_json_with_defaults_and_checks() {
        let switch =
            FaultSwitch::parse(br#"{"instance_id":"crs-1","fault":{"kind":"oversized_body"}}"#)
                .unwrap();
        assert_eq!(switch.instance_id.as_deref(), Some("crs-1"));
        let bytes = DEFAULT_OVERSIZED_BYTES;
        assert_eq!(switch.fault, Some(Fault::OversizedBody { bytes }));

        let off = FaultSwitch::parse(br#"{"fault":null}"#).unwrap();
        assert_eq!((off.instance_id, off.fault), (None, None));

        for bad in [
            &br#"{"fault":{"kind":"http_status","status":200}}"#[..],
            br#"{"fault":{"kind":"throttle","share":2}}"#,
            br#"{"fault":{"kind":"no_such_fault"}}"#,
            br#"{"instance":"crs-1"}"#,
            b"not json",
        ] {
            assert!(
                FaultSwitch::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn throttle_share_is_exact_over_every_run() {
        let counter = AtomicU64::new(0);
        let throttled = (0..100).filter(|_| is_throttled(&counter, 0.3)).count();
        assert_eq!(throttled, 30);
        let counter = AtomicU64::new(0);
        assert!((0..10).all(|_| is_throttled(&counter, 1.0)));
        let counter = AtomicU64::new(0);
        assert!((0..10).all(|_| !is_throttled(&counter, 0.0)));
    }

    #[test]
    fn oversized_body_is_json_of_the_size_asked() {
        let body = oversized_json(5 * 1024 * 1024);
        assert_eq!(body.len(), 5 * 1024 * 1024);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["Response"]["TotalCount"], 0);
        assert!(serde_json::from_slice::<Value>(&malformed_json()).is_err());
    }

    #[test]
    fn odd_types_keep_the_values() {
        let answer = json!({"TotalCount": 1, "BackupSet": [
            {"BackupId": "b1", "Status": 2, "Locked": 1, "BackupSize": 5, "BackupType": "1"}
        ]});
        let Value::Object(answer) = answer else {
            unreachable!()
        };
        let odd = with_wrong_field_types(answer.clone());
        assert_eq!(
            Value::Object(odd),
            json!({"TotalCount": "1", "BackupSet": [
                {"BackupId": "b1", "Status": "2", "Locked": true,
                 "BackupSize": "5", "BackupType": 1}
            ]})
        );
        let wrong = with_wrong_types(answer);
        assert_eq!(wrong["TotalCount"], json!("1"));
        assert_eq!(wrong["BackupSet"]["b1"]["Status"], json!(2));
    }
}
