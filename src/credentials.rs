//! API credentials: where they come from, and keeping them out of sight.
//!
//! Sources are tried in the order the official SDKs use: the config's
//! `credentials` block, then the environment, then the profile file. A
//! secret lives in a [`Secret`], whose `Debug` prints a placeholder, so a
//! stray `{:?}` in a log line or a panic cannot leak it.

use std::fmt;
use std::path::{Path, PathBuf};

use reqwest::Url;

use crate::config::RawCredentials;
use crate::temporary::{TemporarySource, DEFAULT_METADATA_ENDPOINT, DEFAULT_STS_ENDPOINT};

/// The longest secret file read: keys are 32 characters, tokens a few KB.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for signing and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A key pair, with the session token of temporary credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Not secret on its own: it names the key, and appears in the signed
    /// `Authorization` header in the clear.
    pub secret_id: String,
    pub secret_key: Secret,
    pub token: Option<Secret>,
}

/// Where a credential was found, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Config,
    Environment,
    ProfileFile(PathBuf),
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Config => f.write_str("config file"),
            CredentialSource::Environment => f.write_str("environment"),
            CredentialSource::ProfileFile(path) => write!(f, "profile file {}", path.display()),
        }
    }
}

/// Why no credential could be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "no credentials found; fix: set credentials.secret_id and credentials.secret_key \
         (or secret_key_file) in the config, or TENCENTCLOUD_SECRET_ID and \
         TENCENTCLOUD_SECRET_KEY in the environment, or write {profile} with a [default] \
         section holding secret_id and secret_key"
    )]
    Missing { profile: String },
    #[error(
        "{path}: cannot read the secret key file: {cause}; fix: check the path and its permissions"
    )]
    SecretFile { path: String, cause: String },
    #[error(
        "web identity needs credentials.{missing}; fix: set it in the credentials block, \
         or run in a pod with workload identity enabled"
    )]
    WebIdentity { missing: String },
    #[error("{path}: {problem}; fix: give it a [default] section with secret_id and secret_key")]
    Profile { path: String, problem: String },
}

/// What [`resolve`] found: keys to use as they are, or a source that
/// issues temporary ones.
#[derive(Debug, Clone)]
pub enum Resolved {
    Keys(Credential, CredentialSource),
    Temporary(TemporarySource),
}

/// Finds the credential, trying each source in order: the config block,
/// the environment, the profile file, and Kubernetes workload identity when
/// its `TKE_*` variables are set.
///
/// `env` reads an environment variable; tests pass a map instead of the
/// process environment.
pub fn resolve(
    configured: Option<&RawCredentials>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, CredentialError> {
    if let Some(raw) = configured {
        return match raw.source.as_deref() {
            Some("instance_role") => Ok(Resolved::Temporary(instance_role(raw))),
            Some("web_identity") => web_identity(raw, env).map(Resolved::Temporary),
            _ => from_config(raw).map(|c| Resolved::Keys(c, CredentialSource::Config)),
        };
    }
    if let Some(credential) = from_environment(env) {
        return Ok(Resolved::Keys(credential, CredentialSource::Environment));
    }
    let profile = profile_path(env);
    if let Some(path) = profile.as_deref().filter(|p| p.exists()) {
        let source = CredentialSource::ProfileFile(path.into());
        return from_profile(path).map(|c| Resolved::Keys(c, source));
    }
    if env("TKE_ROLE_ARN").is_some() {
        return web_identity(&RawCredentials::default(), env).map(Resolved::Temporary);
    }
    Err(CredentialError::Missing {
        profile: profile.map_or("~/.tencentcloud/credentials".into(), |p| {
            p.display().to_string()
        }),
    })
}

fn instance_role(raw: &RawCredentials) -> TemporarySource {
    let endpoint = raw
        .metadata_endpoint
        .as_deref()
        .unwrap_or(DEFAULT_METADATA_ENDPOINT);
    TemporarySource::InstanceRole {
        // Checked by the config; the default is a valid URL.
        metadata: Url::parse(endpoint).expect("the metadata endpoint is a checked URL"),
        role: raw.role_name.clone().filter(|r| !r.is_empty()),
    }
}

fn web_identity(
    raw: &RawCredentials,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<TemporarySource, CredentialError> {
    let pick = |configured: &Option<String>, variable: &str| {
        configured
            .clone()
            .or_else(|| env(variable))
            .filter(|v| !v.is_empty())
    };
    let missing = |what: &str| CredentialError::WebIdentity {
        missing: what.to_string(),
    };
    let token_file = raw
        .web_identity_token_file
        .clone()
        .or_else(|| env("TKE_WEB_IDENTITY_TOKEN_FILE").map(PathBuf::from))
        .ok_or_else(|| missing("web_identity_token_file (or TKE_WEB_IDENTITY_TOKEN_FILE)"))?;
    let sts = raw.sts_endpoint.as_deref().unwrap_or(DEFAULT_STS_ENDPOINT);
    Ok(TemporarySource::WebIdentity {
        sts: Url::parse(sts).expect("the STS endpoint is a checked URL"),
        region: pick(&raw.sts_region, "TKE_REGION")
            .ok_or_else(|| missing("sts_region (or TKE_REGION)"))?,
        role_arn: pick(&raw.role_arn, "TKE_ROLE_ARN")
            .ok_or_else(|| missing("role_arn (or TKE_ROLE_ARN)"))?,
        provider_id: pick(&raw.provider_id, "TKE_PROVIDER_ID")
            .ok_or_else(|| missing("provider_id (or TKE_PROVIDER_ID)"))?,
        token_file,
    })
}

fn from_config(raw: &RawCredentials) -> Result<Credential, CredentialError> {
    let secret_key = match (&raw.secret_key, &raw.secret_key_file) {
        (Some(key), _) => key.clone(),
        (None, Some(path)) => read_secret_file(path)?,
        (None, None) => String::new(),
    };
    Ok(Credential {
        secret_id: raw.secret_id.clone().unwrap_or_default().trim().to_string(),
        secret_key: Secret::new(secret_key),
        token: raw.token.clone().filter(|t| !t.is_empty()).map(Secret::new),
    })
}

/// Reads a secret from a file, as Kubernetes mounts them: surrounding white
/// space (the trailing newline most editors add) is not part of the secret.
pub fn read_secret_file(path: &Path) -> Result<String, CredentialError> {
    use std::io::Read;
    let failure = |cause: String| CredentialError::SecretFile {
        path: path.display().to_string(),
        cause,
    };
    // A secret is short; reading at most a little more than the longest one
    // keeps a wrong path (a device, a log file) from exhausting memory.
    let mut secret = String::new();
    let file = std::fs::File::open(path).map_err(|err| failure(err.to_string()))?;
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_string(&mut secret)
        .map_err(|err| failure(err.to_string()))?;
    if secret.len() as u64 > MAX_SECRET_BYTES {
        return Err(failure(format!(
            "the file is larger than {MAX_SECRET_BYTES} bytes"
        )));
    }
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(failure("the file is empty".into()));
    }
    Ok(secret.to_string())
}

fn from_environment(env: &dyn Fn(&str) -> Option<String>) -> Option<Credential> {
    let id = env("TENCENTCLOUD_SECRET_ID").filter(|v| !v.is_empty())?;
    let key = env("TENCENTCLOUD_SECRET_KEY").filter(|v| !v.is_empty())?;
    let token = env("TENCENTCLOUD_TOKEN")
        .or_else(|| env("TENCENTCLOUD_SECURITY_TOKEN"))
        .filter(|v| !v.is_empty());
    Some(Credential {
        secret_id: id,
        secret_key: Secret::new(key),
        token: token.map(Secret::new),
    })
}

fn profile_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(path) = env("TENCENTCLOUD_CREDENTIALS_FILE").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    env("HOME").map(|home| Path::new(&home).join(".tencentcloud").join("credentials"))
}

fn from_profile(path: &Path) -> Result<Credential, CredentialError> {
    let problem = |problem: &str| CredentialError::Profile {
        path: path.display().to_string(),
        problem: problem.to_string(),
    };
    let source = config::File::from(path).format(config::FileFormat::Ini);
    let profile = config::Config::builder()
        .add_source(source)
        .build()
        .map_err(|_| problem("is not a valid INI file"))?;
    let get = |key: &str| {
        profile
            .get_string(&format!("default.{key}"))
            .ok()
            .filter(|v| !v.is_empty())
    };
    let secret_id = get("secret_id").ok_or_else(|| problem("has no secret_id in [default]"))?;
    let secret_key = get("secret_key").ok_or_else(|| problem("has no secret_key in [default]"))?;
    Ok(Credential {
        secret_id,
        secret_key: Secret::new(secret_key),
        token: get("token").map(Secret::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    fn keys(resolved: Resolved) -> (Credential, CredentialSource) {
        match resolved {
            Resolved::Keys(credential, source) => (credential, source),
            other => panic!("expected keys, got {other:?}"),
        }
    }

    #[test]
    fn workload_identity_comes_from_the_tke_variables() {
        let env = env_of(&[
            ("HOME", "/nonexistent-home"),
            ("TKE_ROLE_ARN", "qcs::cam::uin/1:roleName/exporter"),
            ("TKE_PROVIDER_ID", "tke-oidc"),
            ("TKE_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("TKE_REGION", "ap-guangzhou"),
        ]);
        match resolve(None, &env).unwrap() {
            Resolved::Temporary(TemporarySource::WebIdentity {
                role_arn,
                region,
                sts,
                ..
            }) => {
                assert_eq!(role_arn, "qcs::cam::uin/1:roleName/exporter");
                assert_eq!(region, "ap-guangzhou");
                assert_eq!(sts.as_str(), "https://sts.tencentcloudapi.com/");
            }
            other => panic!("expected web identity, got {other:?}"),
        }
        let partial = env_of(&[("HOME", "/nonexistent-home"), ("TKE_ROLE_ARN", "arn")]);
        let err = resolve(None, &partial).unwrap_err().to_string();
        assert!(err.contains("TKE_WEB_IDENTITY_TOKEN_FILE"), "{err}");
    }

    #[test]
    fn instance_role_is_used_only_when_configured() {
        let raw = RawCredentials {
            source: Some("instance_role".into()),
            metadata_endpoint: Some("http://127.0.0.1:1".into()),
            ..RawCredentials::default()
        };
        match resolve(Some(&raw), &env_of(&[])).unwrap() {
            Resolved::Temporary(TemporarySource::InstanceRole { metadata, role }) => {
                assert_eq!(metadata.port(), Some(1));
                assert_eq!(role, None);
            }
            other => panic!("expected the instance role, got {other:?}"),
        }
    }

    #[test]
    fn secrets_never_print() {
        let credential = Credential {
            secret_id: "AKIDvisible".into(),
            secret_key: Secret::new("very-secret-key"),
            token: Some(Secret::new("very-secret-token")),
        };
        let printed = format!("{credential:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(printed.contains("AKIDvisible"));
    }

    #[test]
    fn config_block_wins_over_the_environment() {
        let raw = RawCredentials {
            secret_id: Some("AKIDconfig".into()),
            secret_key: Some("k".into()),
            ..RawCredentials::default()
        };
        let env = env_of(&[
            ("TENCENTCLOUD_SECRET_ID", "AKIDenv"),
            ("TENCENTCLOUD_SECRET_KEY", "e"),
        ]);
        let (credential, source) = keys(resolve(Some(&raw), &env).unwrap());
        assert_eq!(credential.secret_id, "AKIDconfig");
        assert_eq!(source, CredentialSource::Config);
    }

    #[test]
    fn environment_with_token_is_read() {
        let env = env_of(&[
            ("TENCENTCLOUD_SECRET_ID", "AKIDenv"),
            ("TENCENTCLOUD_SECRET_KEY", "e"),
            ("TENCENTCLOUD_TOKEN", "t"),
        ]);
        let (credential, source) = keys(resolve(None, &env).unwrap());
        assert_eq!(source, CredentialSource::Environment);
        assert_eq!(credential.token.as_ref().map(Secret::expose), Some("t"));
    }

    #[test]
    fn profile_file_is_the_last_resort() {
        let dir = std::env::temp_dir().join(format!("crs-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials");
        std::fs::write(
            &path,
            "[default]\nsecret_id = AKIDprofile\nsecret_key = p\n",
        )
        .unwrap();
        let env = env_of(&[("TENCENTCLOUD_CREDENTIALS_FILE", path.to_str().unwrap())]);
        let (credential, source) = keys(resolve(None, &env).unwrap());
        assert_eq!(credential.secret_id, "AKIDprofile");
        assert_eq!(credential.secret_key.expose(), "p");
        assert_eq!(source, CredentialSource::ProfileFile(path.clone()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nothing_found_says_every_way_to_fix_it() {
        let env = env_of(&[("HOME", "/nonexistent-home")]);
        let err = resolve(None, &env).unwrap_err().to_string();
        assert!(err.contains("TENCENTCLOUD_SECRET_ID"), "{err}");
        assert!(
            err.contains("/nonexistent-home/.tencentcloud/credentials"),
            "{err}"
        );
    }

    #[test]
    fn secret_file_is_trimmed() {
        let dir = std::env::temp_dir().join(format!("crs-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let raw = RawCredentials {
            secret_id: Some("AKIDfile".into()),
            secret_key_file: Some(path),
            ..RawCredentials::default()
        };
        let (credential, _) = keys(resolve(Some(&raw), &env_of(&[])).unwrap());
        assert_eq!(credential.secret_key.expose(), "s3cr3t");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
