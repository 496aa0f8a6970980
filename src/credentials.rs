//! API credentials: where they come from, and keeping them out of sight.
//!
//! Sources are tried in the order the official SDKs use: the config's
//! `credentials` block, then the environment, then the profile file. A
//! secret lives in a [`Secret`], whose `Debug` prints a placeholder, so a
//! stray `{:?}` in a log line or a panic cannot leak it.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::RawCredentials;

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
    #[error("{path}: {problem}; fix: give it a [default] section with secret_id and secret_key")]
    Profile { path: String, problem: String },
}

/// Finds the credential, trying each source in order.
///
/// `env` reads an environment variable; tests pass a map instead of the
/// process environment.
pub fn resolve(
    configured: Option<&RawCredentials>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Credential, CredentialSource), CredentialError> {
    if let Some(raw) = configured {
        return from_config(raw).map(|c| (c, CredentialSource::Config));
    }
    if let Some(credential) = from_environment(env) {
        return Ok((credential, CredentialSource::Environment));
    }
    let profile = profile_path(env);
    match profile.as_deref().filter(|p| p.exists()) {
        Some(path) => from_profile(path).map(|c| (c, CredentialSource::ProfileFile(path.into()))),
        None => Err(CredentialError::Missing {
            profile: profile.map_or("~/.tencentcloud/credentials".into(), |p| {
                p.display().to_string()
            }),
        }),
    }
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
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|err| CredentialError::SecretFile {
            path: path.display().to_string(),
            cause: err.to_string(),
        })
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
        let (credential, source) = resolve(Some(&raw), &env).unwrap();
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
        let (credential, source) = resolve(None, &env).unwrap();
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
        let (credential, source) = resolve(None, &env).unwrap();
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
        let (credential, _) = resolve(Some(&raw), &env_of(&[])).unwrap();
        assert_eq!(credential.secret_key.expose(), "s3cr3t");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
