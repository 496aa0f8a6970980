//! The API client: signed requests within the budget, retries of passing
//! troubles, and the paging of `DescribeInstanceBackups`.
//!
//! Every request, first tries, later pages and retries alike, takes a slot
//! of its budget first (see [`crate::ratelimit`]). A throttled answer pauses
//! the whole budget of its credential and region, not just the one poll.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use serde::Serialize;

use crate::answer::{backup_page, instance_page, parse_response, AnswerError, ListedInstance};
use crate::backup::{BackupSummary, StatusBucket, SummaryBuilder};
use crate::config::{ApiSettings, Discovery, Instance};
use crate::credentials::Credential;
use crate::failure::FailureReason;
use crate::metrics::ApiMetrics;
use crate::ratelimit::{BudgetKey, RateLimiters};
use crate::signing::{sign, SigningInput};
use serde_json::{Map, Value};

pub const SERVICE: &str = "redis";
pub const API_VERSION: &str = "2018-04-12";
pub const DESCRIBE_INSTANCE_BACKUPS: &str = "DescribeInstanceBackups";
pub const DESCRIBE_INSTANCES: &str = "DescribeInstances";

/// Instances asked for per page of `DescribeInstances` (its maximum is 1000;
/// smaller pages keep each answer small).
const INSTANCE_PAGE_LIMIT: u64 = 100;

/// The content type sent and signed, byte for byte.
const CONTENT_TYPE_JSON: &str = "application/json";

/// Backups asked for per page: the API's maximum.
pub const PAGE_LIMIT: u64 = 100;

/// The largest answer read. A full page is about 100 KB; anything far
/// larger is not an answer of this API and is not held in memory.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The first retry waits about this long; each further one twice as long.
const RETRY_BASE: Duration = Duration::from_millis(500);

/// No retry waits longer than this.
const RETRY_CAP: Duration = Duration::from_secs(10);

/// Why a request or a poll failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct PollError {
    pub reason: FailureReason,
    /// What went wrong, for the log; never holds a secret.
    pub detail: String,
}

/// Where the credential comes from; swapped when temporary credentials are
/// renewed, read for every request.
#[derive(Debug)]
pub struct CredentialCell(RwLock<Arc<Credential>>);

impl CredentialCell {
    pub fn new(credential: Credential) -> Self {
        CredentialCell(RwLock::new(Arc::new(credential)))
    }

    pub fn get(&self) -> Arc<Credential> {
        Arc::clone(&self.0.read().expect("no code panics holding this lock"))
    }

    pub fn set(&self, credential: Credential) {
        *self.0.write().expect("no code panics holding this lock") = Arc::new(credential);
    }
}

/// The body of one `DescribeInstanceBackups` request, fields in the order
/// they are sent.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BackupsRequest<'a> {
    instance_id: &'a str,
    limit: u64,
    offset: u64,
    status: [i64; 6],
}

/// A signing, rate-limited client of the Redis API.
pub struct ApiClient {
    /// Swapped whole on reload: requests under way keep what they started with.
    http: RwLock<reqwest::Client>,
    settings: RwLock<Arc<ApiSettings>>,
    credentials: Arc<CredentialCell>,
    limiters: RateLimiters,
    metrics: ApiMetrics,
}

impl ApiClient {
    pub fn new(
        settings: ApiSettings,
        credentials: Arc<CredentialCell>,
        metrics: ApiMetrics,
    ) -> Self {
        let http = RwLock::new(http_client(settings.timeout));
        let limiters = RateLimiters::new(settings.rate_limit);
        let settings = RwLock::new(Arc::new(settings));
        ApiClient {
            http,
            settings,
            credentials,
            limiters,
            metrics,
        }
    }

    /// The credential in use; swapped by renewals.
    pub fn credentials(&self) -> Arc<CredentialCell> {
        Arc::clone(&self.credentials)
    }

    /// The settings requests start with now.
    pub fn settings(&self) -> Arc<ApiSettings> {
        Arc::clone(
            &self
                .settings
                .read()
                .expect("no code panics holding this lock"),
        )
    }

    /// Takes new settings and credentials, as a reload brings them.
    pub fn update(&self, settings: ApiSettings, credential: Credential) {
        if settings.timeout != self.settings().timeout {
            *self.http.write().expect("no code panics holding this lock") =
                http_client(settings.timeout);
        }
        self.limiters
            .set_limit(settings.rate_limit, settings.timeout);
        *self
            .settings
            .write()
            .expect("no code panics holding this lock") = Arc::new(settings);
        self.credentials.set(credential);
    }

    /// Reads every page of an instance's backups and sums them up.
    pub async fn poll_backups(&self, instance: &Instance) -> Result<BackupSummary, PollError> {
        let settings = self.settings();
        let mut builder = SummaryBuilder::default();
        let mut offset = 0;
        for _ in 0..settings.max_pages {
            let body = serde_json::to_vec(&BackupsRequest {
                instance_id: &instance.id,
                limit: PAGE_LIMIT,
                offset,
                status: StatusBucket::REQUESTED_CODES,
            })
            .expect("a struct of strings and numbers serializes");
            let answer = self
                .call(&instance.region, DESCRIBE_INSTANCE_BACKUPS, body)
                .await?;
            let page = backup_page(&answer, settings.utc_offset).map_err(|err| {
                let reason = FailureReason::BadAnswer;
                PollError {
                    reason,
                    detail: err.to_string(),
                }
            })?;
            let received = page.backups.len() as u64;
            let added = page
                .backups
                .iter()
                .filter(|backup| builder.add(backup))
                .count();
            offset += PAGE_LIMIT;
            let is_short = received < PAGE_LIMIT;
            // A full page of backups already counted means the list repeats
            // itself, whatever TotalCount claims.
            let is_repeat = added == 0;
            if is_short || is_repeat || page.total_count.is_some_and(|total| offset >= total) {
                return Ok(builder.finish());
            }
        }
        tracing::warn!(
            instance_id = %instance.id,
            pages = settings.max_pages,
            "stopped reading backups at api.max_pages; counts cover the newest pages only"
        );
        Ok(builder.finish())
    }

    /// Lists the live instances of `region` that match the discovery
    /// filters, reading every page.
    pub async fn list_instances(
        &self,
        region: &str,
        discovery: &Discovery,
    ) -> Result<Vec<ListedInstance>, PollError> {
        let max_pages = self.settings().max_pages;
        let mut found = Vec::new();
        let mut offset = 0;
        for _ in 0..max_pages {
            let body = instances_request(discovery, offset);
            let answer = self.call(region, DESCRIBE_INSTANCES, body).await?;
            let (total, page) = instance_page(&answer);
            let received = page.len() as u64;
            found.extend(page.into_iter().filter(ListedInstance::is_live));
            offset += INSTANCE_PAGE_LIMIT;
            if received < INSTANCE_PAGE_LIMIT || total.is_some_and(|t| offset >= t) {
                return Ok(found);
            }
        }
        tracing::warn!(
            region,
            pages = max_pages,
            "stopped listing instances at api.max_pages"
        );
        Ok(found)
    }

    /// Sends one request, retrying passing troubles within the budget, and
    /// returns the opened `Response` object of the answer.
    pub async fn call(
        &self,
        region: &str,
        action: &'static str,
        body: Vec<u8>,
    ) -> Result<Map<String, Value>, PollError> {
        let mut attempt = 0;
        loop {
            let outcome = self.send_once(region, action, &body).await;
            let Err(err) = outcome else { return outcome };
            if !err.reason.is_retryable() || attempt >= self.settings().max_retries {
                return Err(err);
            }
            let backoff = backoff(attempt);
            if err.reason == FailureReason::Throttled {
                self.budget(region, action).pause_for(backoff);
            }
            let attempt_number = attempt + 1;
            tracing::warn!(region, action, attempt_number, ?backoff, cause = %err, "retrying");
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    fn budget(&self, region: &str, action: &'static str) -> Arc<crate::ratelimit::RateLimiter> {
        let key = BudgetKey {
            secret_id: self.credentials.get().secret_id.clone(),
            region: region.into(),
            action,
        };
        self.limiters.get(&key)
    }

    async fn send_once(
        &self,
        region: &str,
        action: &'static str,
        body: &[u8],
    ) -> Result<Map<String, Value>, PollError> {
        let slot = self.budget(region, action).acquire().await;
        self.metrics.observe_admission(
            action,
            region,
            self.limiters.limit(),
            slot.waited.as_secs_f64(),
        );

        let started = Instant::now();
        let result = self.exchange(region, action, body).await;
        // The slot goes back only now that the answer is in (see ratelimit).
        drop(slot);

        let elapsed = started.elapsed().as_secs_f64();
        let (answer, server_date) = match result {
            Ok(exchanged) => exchanged,
            Err((err, code)) => {
                self.metrics.observe_request(action, &code, elapsed);
                return Err(err);
            }
        };
        let opened = parse_response(&answer);
        let code = match &opened {
            Ok(_) => "Success".to_string(),
            Err(AnswerError::Api { code, .. }) => bounded_code(code),
            Err(AnswerError::Malformed(_)) => "bad_body".to_string(),
        };
        self.metrics.observe_request(action, &code, elapsed);
        opened.map_err(|err| match err {
            AnswerError::Api { code, message } => PollError {
                reason: FailureReason::of_api_code(&code),
                detail: {
                    // The server writes these; keep log lines a sane length.
                    let code: String = code.chars().take(80).collect();
                    let message: String = message.chars().take(300).collect();
                    match clock_skew_note(&code, server_date) {
                        Some(note) => format!("{code}: {message} ({note})"),
                        None => format!("{code}: {message}"),
                    }
                },
            },
            AnswerError::Malformed(detail) => PollError {
                reason: FailureReason::BadAnswer,
                detail,
            },
        })
    }

    /// One HTTP exchange; on failure also the `code` label it counts under.
    async fn exchange(
        &self,
        region: &str,
        action: &str,
        body: &[u8],
    ) -> Result<(Vec<u8>, Option<SystemTime>), (PollError, String)> {
        let url = self.settings().endpoint_for(region);
        let http = self
            .http
            .read()
            .expect("no code panics holding this lock")
            .clone();
        let headers = self.headers(&url, region, action, body);
        let sent = http
            .post(url.clone())
            .headers(headers)
            .body(body.to_vec())
            .send()
            .await;
        let mut response = sent.map_err(transport_error)?;
        let server_date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let status = response.status().as_u16();
        if status != 200 {
            let reason = FailureReason::of_http_status(status);
            return Err((
                PollError {
                    reason,
                    detail: format!("HTTP status {status} from {}", redacted(&url)),
                },
                format!("http_{status}"),
            ));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                let detail = format!("answer larger than {MAX_ANSWER_BYTES} bytes");
                return Err((
                    PollError {
                        reason: FailureReason::BadAnswer,
                        detail,
                    },
                    "bad_body".into(),
                ));
            }
            answer.extend_from_slice(&chunk);
        }
        Ok((answer, server_date))
    }

    fn headers(&self, url: &Url, region: &str, action: &str, body: &[u8]) -> HeaderMap {
        let credential = self.credentials.get();
        let host = host_header(url);
        let timestamp = unix_now();
        let signature = sign(&SigningInput {
            secret_id: &credential.secret_id,
            secret_key: credential.secret_key.expose(),
            service: SERVICE,
            host: &host,
            timestamp,
            content_type: CONTENT_TYPE_JSON,
            body,
        });
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            // Values are ASCII made here or checked by the config; one that
            // is not (a token with a newline) is left out and the API
            // answers with an authentication error that says so.
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        put(AUTHORIZATION.as_str(), &signature.authorization);
        put(CONTENT_TYPE.as_str(), CONTENT_TYPE_JSON);
        put("x-tc-action", action);
        put("x-tc-version", API_VERSION);
        put("x-tc-timestamp", &timestamp.to_string());
        put("x-tc-region", region);
        if let Some(token) = &credential.token {
            put("x-tc-token", token.expose());
        }
        headers
    }
}

fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("crs-backup-exporter/", env!("CARGO_PKG_VERSION")))
        // The API never redirects. Following one would send the signed
        // request, session token included, to another host.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        // Building fails only when the TLS backend cannot start, which is a
        // broken installation, not something to run on with.
        .expect("the HTTP client starts")
}

/// The body of one `DescribeInstances` request: only the filters in use.
fn instances_request(discovery: &Discovery, offset: u64) -> Vec<u8> {
    let mut body = serde_json::json!({ "Limit": INSTANCE_PAGE_LIMIT, "Offset": offset });
    let tags: Vec<Value> = discovery
        .tags
        .iter()
        .map(|(key, value)| serde_json::json!({ "TagKey": key, "TagValue": value }))
        .collect();
    let filters = [
        ("InstanceTags", Value::from(tags)),
        ("TagKeys", Value::from(discovery.tag_keys.clone())),
        ("ProjectIds", Value::from(discovery.project_ids.clone())),
        ("SearchKeys", Value::from(discovery.search.clone())),
    ];
    for (key, value) in filters {
        if value.as_array().is_some_and(|a| !a.is_empty()) {
            body[key] = value;
        }
    }
    serde_json::to_vec(&body).expect("a JSON value serializes")
}

/// The `Host` header reqwest sends for `url`, which is what gets signed.
pub fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// For an expired signature, says how far the local clock is from the
/// API's, as its `Date` header tells: the usual cause is a drifting clock.
fn clock_skew_note(code: &str, server_date: Option<SystemTime>) -> Option<String> {
    if code != "AuthFailure.SignatureExpire" {
        return None;
    }
    let Some(server) = server_date else {
        return Some("the local clock is probably more than 5 minutes off; sync it (NTP)".into());
    };
    let skew = match SystemTime::now().duration_since(server) {
        Ok(ahead) => format!("{}s ahead of", ahead.as_secs()),
        Err(behind) => format!("{}s behind", behind.duration().as_secs()),
    };
    Some(format!(
        "the local clock is {skew} the API's; sync it (NTP)"
    ))
}

/// Error codes come from the server; keep the label's values bounded and
/// printable whatever it sends.
fn bounded_code(code: &str) -> String {
    let is_plain = code.len() <= 80 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
    if is_plain {
        code.to_string()
    } else {
        "invalid_error_code".into()
    }
}

/// A URL fit for a log line: any user name and password taken out.
pub fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

fn transport_error(err: reqwest::Error) -> (PollError, String) {
    let kind = if err.is_timeout() {
        "transport_timeout"
    } else if err.is_connect() {
        "transport_connect"
    } else {
        "transport_other"
    };
    // Without the URL: a proxy password in it must not reach the log. The
    // causes below say what really happened (reset, refused, cut short).
    let err = err.without_url();
    let mut detail = format!("{kind}: {err}");
    let mut cause = std::error::Error::source(&err);
    while let Some(inner) = cause {
        detail.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    (
        PollError {
            reason: FailureReason::Transport,
            detail,
        },
        kind.to_string(),
    )
}

/// How long to wait before retry number `attempt + 1`: exponential, capped,
/// with jitter so that many instances do not retry in step.
fn backoff(attempt: u32) -> Duration {
    let base = RETRY_BASE
        .saturating_mul(1 << attempt.min(16))
        .min(RETRY_CAP);
    base.mul_f64(0.5 + fastrand::f64())
}

pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_carries_a_port_only_when_not_the_default() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            host_header(&url("https://redis.tencentcloudapi.com")),
            "redis.tencentcloudapi.com"
        );
        assert_eq!(
            host_header(&url("https://redis.tencentcloudapi.com:443/")),
            "redis.tencentcloudapi.com"
        );
        assert_eq!(host_header(&url("http://127.0.0.1:8080")), "127.0.0.1:8080");
        assert_eq!(host_header(&url("http://[::1]:9")), "[::1]:9");
    }

    #[test]
    fn request_body_sends_every_status_and_the_page() {
        let body = serde_json::to_string(&BackupsRequest {
            instance_id: "crs-fsi00001",
            limit: PAGE_LIMIT,
            offset: 200,
            status: StatusBucket::REQUESTED_CODES,
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"InstanceId":"crs-fsi00001","Limit":100,"Offset":200,"Status":[1,2,3,4,-1,-2]}"#
        );
    }

    #[test]
    fn urls_in_log_lines_carry_no_password() {
        let url = Url::parse("http://proxyuser:proxy-password@127.0.0.1:8080/x?token=t#f").unwrap();
        assert_eq!(redacted(&url), "http://127.0.0.1:8080/x");
    }

    #[test]
    fn odd_error_codes_do_not_become_label_values() {
        assert_eq!(
            bounded_code("RequestLimitExceeded.UinLimitExceeded"),
            "RequestLimitExceeded.UinLimitExceeded"
        );
        assert_eq!(bounded_code("bad code\n"), "invalid_error_code");
        assert_eq!(bounded_code(&"A".repeat(200)), "invalid_error_code");
    }

    #[test]
    fn expired_signature_says_how_far_the_clock_is_off() {
        let server = SystemTime::now() - Duration::from_secs(600);
        let note = clock_skew_note("AuthFailure.SignatureExpire", Some(server)).unwrap();
        assert!(
            note.starts_with("the local clock is 600s ahead of") || note.contains("601s ahead"),
            "{note}"
        );
        assert_eq!(
            clock_skew_note("AuthFailure.SignatureFailure", Some(server)),
            None
        );
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        for attempt in 0..40 {
            let wait = backoff(attempt);
            assert!(wait <= RETRY_CAP.mul_f64(1.5), "{attempt}: {wait:?}");
            assert!(wait >= RETRY_BASE.mul_f64(0.5), "{attempt}: {wait:?}");
        }
    }
}
