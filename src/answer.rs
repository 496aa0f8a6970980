//! Reading the API's answers: one page of `DescribeInstanceBackups`, or the
//! error the API put in its body.
//!
//! Every field is read leniently from a JSON tree rather than through a
//! strict schema: a field may be missing, `null` or of a surprising type in
//! some generation of the API, and one odd backup must not fail the poll.
//! The list sits under `BackupSet` today and under `RedisBackupSet` in older
//! answers; both are read.

use serde_json::{Map, Value};
use time::macros::format_description;
use time::{PrimitiveDateTime, UtcOffset};

use crate::backup::Backup;

/// One page of backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPage {
    /// `TotalCount`, when the answer carried a usable one.
    pub total_count: Option<u64>,
    pub backups: Vec<Backup>,
}

/// Why an answer gave no page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The API answered with an error in its body.
    #[error("api error {code}: {message}")]
    Api { code: String, message: String },
    /// The body is not an answer of this API.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// Parses the body of a `DescribeInstanceBackups` answer.
pub fn parse_backup_page(body: &[u8], offset: UtcOffset) -> Result<BackupPage, AnswerError> {
    backup_page(&parse_response(body)?, offset)
}

/// Reads the page out of an opened answer (see [`parse_response`]).
pub fn backup_page(
    response: &Map<String, Value>,
    offset: UtcOffset,
) -> Result<BackupPage, AnswerError> {
    let total_count = response.get("TotalCount").and_then(as_u64);
    // A `null` under one key must not hide a list under the other.
    let present = |key: &str| response.get(key).filter(|v| !v.is_null());
    let list = present("BackupSet").or_else(|| present("RedisBackupSet"));
    let backups = match list {
        // An entry that is not an object is an odd backup: it counts as
        // `unknown`, so that the count still matches the list.
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| parse_backup(item, offset))
            .collect(),
        Some(Value::Null) | None if total_count.unwrap_or(0) == 0 => Vec::new(),
        Some(Value::Null) | None => {
            return Err(AnswerError::Malformed(format!(
                "TotalCount is {} but neither BackupSet nor RedisBackupSet holds a list",
                total_count.unwrap_or(0)
            )))
        }
        Some(other) => {
            return Err(AnswerError::Malformed(format!(
                "the backup list is {}, not an array",
                type_name(other)
            )))
        }
    };
    Ok(BackupPage {
        total_count,
        backups,
    })
}

/// Opens `{"Response": {...}}` and turns an `Error` inside into an error.
pub fn parse_response(body: &[u8]) -> Result<Map<String, Value>, AnswerError> {
    let mut root: Value = serde_json::from_slice(body)
        .map_err(|err| AnswerError::Malformed(format!("not JSON: {err}")))?;
    let response = match root.get_mut("Response").map(Value::take) {
        Some(Value::Object(response)) => response,
        _ => return Err(AnswerError::Malformed("no Response object".into())),
    };
    if let Some(error) = response.get("Error").filter(|e| !e.is_null()) {
        return Err(api_error(error));
    }
    Ok(response)
}

fn api_error(error: &Value) -> AnswerError {
    let code = error.get("Code").and_then(Value::as_str).unwrap_or("");
    let message = error.get("Message").and_then(Value::as_str).unwrap_or("");
    if code.is_empty() {
        return AnswerError::Malformed("an Error object without a Code".into());
    }
    AnswerError::Api {
        code: code.to_string(),
        message: message.to_string(),
    }
}

fn parse_backup(item: &Value, offset: UtcOffset) -> Backup {
    let field = |name: &str| item.get(name).filter(|v| !v.is_null());
    Backup {
        id: field("BackupId").and_then(as_text),
        start_time: field("StartTime")
            .and_then(Value::as_str)
            .and_then(|s| api_time(s, offset)),
        status: field("Status").and_then(as_i64),
        is_locked: field("Locked").is_some_and(is_true),
        size_bytes: field("BackupSize").and_then(as_u64),
        backup_type: field("BackupType").and_then(as_text),
    }
}

/// One instance as `DescribeInstances` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedInstance {
    pub id: String,
    pub name: Option<String>,
    pub region: Option<String>,
    /// `2` running, `1` in a workflow, `0` initialising, `-2` isolated,
    /// `-3` waiting for deletion.
    pub status: Option<i64>,
    pub project_id: Option<i64>,
    pub tags: Vec<(String, String)>,
}

impl ListedInstance {
    /// Whether its backups are worth watching: not isolated, not on its way
    /// out, not still being set up. An unknown status is watched rather
    /// than missed.
    pub fn is_live(&self) -> bool {
        !matches!(self.status, Some(0 | -2 | -3))
    }
}

/// Reads one page of a `DescribeInstances` answer: `TotalCount` and the
/// instances with an ID (entries without one cannot be polled).
pub fn instance_page(response: &Map<String, Value>) -> (Option<u64>, Vec<ListedInstance>) {
    let total = response.get("TotalCount").and_then(as_u64);
    let items = response.get("InstanceSet").and_then(Value::as_array);
    let instances = items
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let field = |name: &str| item.get(name).filter(|v| !v.is_null());
            let tags = field("InstanceTags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            Some(ListedInstance {
                id: field("InstanceId").and_then(Value::as_str)?.to_string(),
                name: field("InstanceName").and_then(as_text),
                region: field("Region").and_then(Value::as_str).map(str::to_string),
                status: field("Status").and_then(as_i64),
                project_id: field("ProjectId").and_then(as_i64),
                tags: tags
                    .filter_map(|tag| {
                        let key = tag.get("TagKey").and_then(Value::as_str)?;
                        let value = tag.get("TagValue").and_then(as_text).unwrap_or_default();
                        Some((key.to_string(), value))
                    })
                    .collect(),
            })
        })
        .collect();
    (total, instances)
}

/// Converts the API's zone-less `YYYY-MM-DD hh:mm:ss` to Unix seconds.
pub fn api_time(text: &str, offset: UtcOffset) -> Option<i64> {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let local = PrimitiveDateTime::parse(text.trim(), format).ok()?;
    Some(local.assume_offset(offset).unix_timestamp())
}

/// Formats Unix seconds the way the API writes times, in its offset.
pub fn format_api_time(unix: i64, offset: UtcOffset) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.checked_to_offset(offset))
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| whole(n.as_f64()?)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A float with nothing after the point, such as `2.0`, as an integer.
fn whole(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_true(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        other => as_i64(other) == Some(1),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{StatusBucket, SummaryBuilder};
    use time::macros::offset;

    const BEIJING: UtcOffset = offset!(+8);

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|err| panic!("fixture {path}: {err}"))
    }

    fn summary_of(name: &str) -> crate::backup::BackupSummary {
        let page = parse_backup_page(&fixture(name), BEIJING).expect("fixture parses");
        let mut builder = SummaryBuilder::default();
        page.backups.iter().for_each(|b| {
            builder.add(b);
        });
        builder.finish()
    }

    #[test]
    fn beijing_time_converts_to_unix_seconds() {
        assert_eq!(api_time("2026-06-01 02:00:48", BEIJING), Some(1780250448));
        assert_eq!(format_api_time(1780250448, BEIJING), "2026-06-01 02:00:48");
        assert_eq!(api_time("2026-06-01T02:00:48", BEIJING), None);
        assert_eq!(api_time("", BEIJING), None);
    }

    #[test]
    fn full_answer_counts_every_status_and_finds_the_newest_completed_backup() {
        let page = parse_backup_page(&fixture("describe-instance-backups.json"), BEIJING).unwrap();
        assert_eq!(page.total_count, Some(5));
        let types: Vec<_> = page
            .backups
            .iter()
            .map(|b| b.backup_type.as_deref())
            .collect();
        assert_eq!(types.iter().filter(|t| **t == Some("0")).count(), 1);
        assert_eq!(types.iter().filter(|t| **t == Some("1")).count(), 3);
        assert_eq!(types.iter().filter(|t| **t == Some("2")).count(), 1);

        let summary = summary_of("describe-instance-backups.json");
        for (bucket, expected) in [
            (StatusBucket::Normal, 1),
            (StatusBucket::RdbConverted, 1),
            (StatusBucket::InProgress, 1),
            (StatusBucket::Expired, 1),
            (StatusBucket::RdbConverting, 1),
            (StatusBucket::Deleted, 0),
            (StatusBucket::Unknown, 0),
        ] {
            assert_eq!(summary.count(bucket), expected, "{bucket:?}");
        }
        assert_eq!(summary.locked, 1);
        let newest = summary.newest_completed.unwrap();
        assert_eq!(newest.start_time, 1780250448);
        assert_eq!(newest.size_bytes, Some(2147483648));
    }

    #[test]
    fn legacy_list_key_is_read() {
        let summary = summary_of("describe-instance-backups-legacy-key.json");
        assert_eq!(summary.count(StatusBucket::Normal), 2);
        assert_eq!(summary.total(), 2);
        assert_eq!(summary.locked, 1);
        assert_eq!(summary.newest_completed.unwrap().start_time, 1536036786);
        assert_eq!(summary.newest_completed.unwrap().size_bytes, None);
    }

    #[test]
    fn nulls_unknown_fields_and_unknown_codes_are_not_rejected() {
        let summary = summary_of("describe-instance-backups-nulls.json");
        assert_eq!(summary.total(), 2);
        assert_eq!(summary.count(StatusBucket::Normal), 1);
        assert_eq!(summary.count(StatusBucket::Unknown), 1);
        assert_eq!(summary.locked, 0);
        assert_eq!(summary.newest_completed.unwrap().start_time, 1780341000);
        assert_eq!(summary.newest_completed.unwrap().size_bytes, None);
    }

    #[test]
    fn empty_answer_has_no_backups_and_no_newest() {
        let summary = summary_of("describe-instance-backups-empty.json");
        assert_eq!(summary.total(), 0);
        assert!(StatusBucket::ALL.iter().all(|b| summary.count(*b) == 0));
        assert_eq!(summary.newest_completed, None);
    }

    #[test]
    fn error_answers_carry_their_code() {
        for (file, code) in [
            (
                "error-instance-not-exists.json",
                "ResourceNotFound.InstanceNotExists",
            ),
            ("error-internal.json", "InternalError.InternalError"),
            (
                "error-no-cam-permission.json",
                "UnauthorizedOperation.NoCAMAuthed",
            ),
            ("error-request-limit-exceeded.json", "RequestLimitExceeded"),
            (
                "error-request-limit-uin.json",
                "RequestLimitExceeded.UinLimitExceeded",
            ),
            ("error-signature-expire.json", "AuthFailure.SignatureExpire"),
            (
                "error-signature-failure.json",
                "AuthFailure.SignatureFailure",
            ),
        ] {
            match parse_backup_page(&fixture(file), BEIJING) {
                Err(AnswerError::Api { code: got, .. }) => assert_eq!(got, code, "{file}"),
                other => panic!("{file}: expected an api error, got {other:?}"),
            }
        }
    }

    #[test]
    fn instance_lists_keep_what_discovery_needs_and_skip_entries_without_an_id() {
        let body = br#"{"Response":{"TotalCount":3,"InstanceSet":[
            {"InstanceId":"crs-aaaaaaaa","InstanceName":"orders","Region":"ap-guangzhou","Status":2,
             "ProjectId":0,"InstanceTags":[{"TagKey":"team","TagValue":"payments"}]},
            {"InstanceId":"crs-bbbbbbbb","Status":-2,"InstanceTags":null},
            {"InstanceName":"no id"}],"RequestId":"r"}}"#;
        let (total, instances) = instance_page(&parse_response(body).unwrap());
        assert_eq!(total, Some(3));
        assert_eq!(instances.len(), 2);
        assert_eq!(
            instances[0].tags,
            [("team".to_string(), "payments".to_string())]
        );
        assert!(instances[0].is_live());
        assert!(
            !instances[1].is_live(),
            "isolated instances are not watched"
        );
    }

    #[test]
    fn a_positive_total_without_a_list_is_an_error() {
        let body = br#"{"Response":{"TotalCount":3,"RequestId":"x"}}"#;
        let err = parse_backup_page(body, BEIJING).unwrap_err();
        assert!(err.to_string().contains("TotalCount is 3"), "{err}");
    }

    #[test]
    fn broken_bodies_are_malformed_not_panics() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"Response\":7}",
            b"{\"Response\":{\"BackupSet\":5}}",
        ] {
            assert!(matches!(
                parse_backup_page(body, BEIJING),
                Err(AnswerError::Malformed(_))
            ));
        }
    }
}
