//! Temporary credentials: the instance role of a Tencent Cloud VM, read from
//! the metadata service, and Kubernetes workload identity, exchanged with STS
//! `AssumeRoleWithWebIdentity`. Both expire, so a task renews them well
//! before they do; when a renewal fails the current ones stay in use while
//! they are valid, and renewal is tried again.
//!
//! Every URL here is configurable, so tests and private networks can point
//! them at their own servers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde_json::Value;
use tokio::sync::watch;

use crate::client::{unix_now, CredentialCell};
use crate::credentials::{read_secret_file, Credential, Secret};

/// The metadata service of Tencent Cloud VMs.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://metadata.tencentyun.com";

/// The STS service that exchanges web identity tokens.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.tencentcloudapi.com";

/// The largest answer read from the metadata service or STS: theirs are a
/// few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How much of an error message from STS goes into a log line.
const MAX_MESSAGE_CHARS: usize = 300;

/// How long a renewal waits after a failed one.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Lifetime asked of STS for each set of credentials.
const SESSION_SECONDS: u64 = 7200;

/// Where temporary credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemporarySource {
    /// The role attached to this VM; `role` is looked up when not given.
    InstanceRole { metadata: Url, role: Option<String> },
    /// A Kubernetes service account token exchanged for a CAM role.
    WebIdentity {
        sts: Url,
        region: String,
        role_arn: String,
        provider_id: String,
        token_file: PathBuf,
    },
}

impl std::fmt::Display for TemporarySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemporarySource::InstanceRole { metadata, .. } => {
                write!(f, "instance role from {metadata}")
            }
            TemporarySource::WebIdentity { sts, role_arn, .. } => {
                write!(f, "web identity for {role_arn} from {sts}")
            }
        }
    }
}

/// Credentials and the moment they stop working.
#[derive(Debug, Clone)]
pub struct Issued {
    pub credential: Credential,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Asks the source for a fresh set of credentials.
pub async fn fetch(source: &TemporarySource, http: &reqwest::Client) -> Result<Issued, String> {
    match source {
        TemporarySource::InstanceRole { metadata, role } => {
            from_instance_role(http, metadata, role.as_deref()).await
        }
        TemporarySource::WebIdentity { .. } => from_web_identity(http, source).await,
    }
}

async fn from_instance_role(
    http: &reqwest::Client,
    metadata: &Url,
    role: Option<&str>,
) -> Result<Issued, String> {
    let base = format!(
        "{}/latest/meta-data/cam/security-credentials/",
        metadata.as_str().trim_end_matches('/')
    );
    let role = match role {
        Some(role) => role.to_string(),
        None => {
            let listing = get_text(http, &base).await?;
            let first = listing.lines().map(str::trim).find(|l| !l.is_empty());
            let role =
                first.ok_or("the metadata service lists no role: attach a CAM role to the VM")?;
            if role.len() > 128 || !role.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("the metadata service listed something that is not a role name".into());
            }
            role.to_string()
        }
    };
    let answer: Value = serde_json::from_str(&get_text(http, &format!("{base}{role}")).await?)
        .map_err(|err| {
            format!("the metadata service's answer for role {role} is not JSON: {err}")
        })?;
    if let Some(code) = answer
        .get("Code")
        .and_then(Value::as_str)
        .filter(|c| *c != "Success")
    {
        return Err(format!(
            "the metadata service answered {code} for role {role}"
        ));
    }
    issued(&answer, &answer)
        .ok_or_else(|| format!("the metadata service's answer for role {role} lacks credentials"))
}

async fn from_web_identity(
    http: &reqwest::Client,
    source: &TemporarySource,
) -> Result<Issued, String> {
    let TemporarySource::WebIdentity {
        sts,
        region,
        role_arn,
        provider_id,
        token_file,
    } = source
    else {
        unreachable!("called for web identity sources only");
    };
    let token = read_secret_file(token_file).map_err(|err| err.to_string())?;
    let body = serde_json::json!({
        "ProviderId": provider_id,
        "WebIdentityToken": token,
        "RoleArn": role_arn,
        "RoleSessionName": format!("crs-backup-exporter-{}", unix_now()),
        "DurationSeconds": SESSION_SECONDS,
    });
    // This action is authenticated by the token in the body, not signed.
    let response = http
        .post(sts.clone())
        .header("Authorization", "SKIP")
        .header("Content-Type", "application/json")
        .header("X-TC-Action", "AssumeRoleWithWebIdentity")
        .header("X-TC-Version", "2018-08-13")
        .header("X-TC-Region", region)
        .header("X-TC-Timestamp", unix_now().to_string())
        .body(body.to_string())
        .send()
        .await
        .map_err(|err| format!("STS at {sts}: {}", err.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("STS at {sts} answered HTTP {status}"));
    }
    let text = read_capped(response)
        .await
        .map_err(|err| format!("STS at {sts}: {err}"))?;
    let answer: Value = serde_json::from_str(&text)
        .map_err(|err| format!("STS answered something that is not JSON: {err}"))?;
    let response = answer
        .get("Response")
        .ok_or("STS answered without a Response object")?;
    if let Some(error) = response.get("Error") {
        let code = error
            .get("Code")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let message = error.get("Message").and_then(Value::as_str).unwrap_or("");
        let message: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
        return Err(format!("STS refused the exchange: {code}: {message}"));
    }
    let credentials = response
        .get("Credentials")
        .ok_or("STS answered without Credentials")?;
    issued(credentials, response).ok_or_else(|| "STS's credentials are incomplete".to_string())
}

/// Reads `TmpSecretId`, `TmpSecretKey` and `Token` from `keys`, and
/// `ExpiredTime` from `times`.
fn issued(keys: &Value, times: &Value) -> Option<Issued> {
    let text = |name: &str| {
        keys.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let credential = Credential {
        secret_id: text("TmpSecretId")?.to_string(),
        secret_key: Secret::new(text("TmpSecretKey")?),
        token: text("Token").map(Secret::new),
    };
    let expires_at = times.get("ExpiredTime").and_then(Value::as_i64)?;
    Some(Issued {
        credential,
        expires_at,
    })
}

async fn get_text(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|err| format!("{url}: {}", err.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{url} answered HTTP {status}"));
    }
    read_capped(response)
        .await
        .map_err(|err| format!("{url}: {err}"))
}

/// Reads an answer of at most [`MAX_ANSWER_BYTES`] as text.
async fn read_capped(mut response: reqwest::Response) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| err.without_url().to_string())?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "the answer is not UTF-8 text".to_string())
}

/// When to renew credentials that expire at `expires_at`, issued `now`:
/// halfway through their life, and at most five minutes before the end.
pub fn renew_at(now: i64, expires_at: i64) -> i64 {
    let life = (expires_at - now).max(0);
    expires_at - (life / 2).min(300)
}

/// Keeps `cell` filled with valid credentials from `source` until shutdown.
pub async fn keep_fresh(
    source: TemporarySource,
    http: reqwest::Client,
    cell: Arc<CredentialCell>,
    mut expires_at: i64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = renew_at(unix_now(), expires_at);
    loop {
        let wait = Duration::from_secs((next - unix_now()).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        match fetch(&source, &http).await {
            Ok(fresh) => {
                expires_at = fresh.expires_at;
                tracing::info!(%source, expires_at, "temporary credentials renewed");
                cell.set(fresh.credential);
                next = renew_at(unix_now(), expires_at);
            }
            Err(cause) => {
                let remaining = expires_at - unix_now();
                if remaining > 0 {
                    let message = "renewing credentials failed; the current ones stay in use";
                    tracing::warn!(%source, %cause, remaining_seconds = remaining, "{message}");
                } else {
                    let message = "renewing credentials failed and the current ones have expired";
                    tracing::error!(%source, %cause, "{message}");
                }
                // Try again soon, and before the current ones run out.
                let retry = RETRY_AFTER.as_secs() as i64;
                next = unix_now()
                    + if remaining > 1 {
                        retry.min(remaining / 2)
                    } else {
                        retry
                    };
            }
        }
    }
}

/// The HTTP client for the metadata service and STS.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        // Neither service redirects; following one would hand the web
        // identity token to another host.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the HTTP client starts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_halfway_or_five_minutes_before_the_end() {
        assert_eq!(renew_at(0, 7200), 6900);
        assert_eq!(renew_at(0, 100), 50);
        assert_eq!(renew_at(100, 50), 50, "already expired: renew now");
    }

    #[test]
    fn answers_without_every_field_give_no_credentials() {
        let full = serde_json::json!({
            "TmpSecretId": "AKIDt", "TmpSecretKey": "k", "Token": "t", "ExpiredTime": 5
        });
        assert_eq!(issued(&full, &full).map(|i| i.expires_at), Some(5));
        let partial = serde_json::json!({"TmpSecretId": "AKIDt", "ExpiredTime": 5});
        assert!(issued(&partial, &partial).is_none());
    }
}
