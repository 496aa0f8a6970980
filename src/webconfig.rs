//! The web configuration file (`--web.config.file`): TLS and basic auth for
//! the HTTP endpoint, in the format of the Prometheus exporter toolkit, so
//! one file can serve several exporters.
//!
//! The file, and the certificate files it names, are watched: a change is
//! picked up within a second by the next connection, so certificates rotate
//! without a restart. A file that no longer loads is reported and the last
//! good one stays in force. File paths in it are relative to its directory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// How often the files are looked at for changes, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How many distinct credentials the basic-auth cache remembers; bcrypt is
/// slow on purpose, and Prometheus sends the same credentials every scrape.
const AUTH_CACHE_SIZE: usize = 256;

/// A mistake in the web configuration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {problem}; fix: {fix}")]
pub struct WebConfigError {
    pub file: String,
    pub problem: String,
    pub fix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
}

/// One loaded web configuration.
pub struct WebConfig {
    /// `None` serves plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// User name to bcrypt hash; empty means no authentication.
    users: BTreeMap<String, String>,
    /// Credentials already checked: (user, SHA-256 of the password) to result.
    checked: Mutex<HashMap<(String, [u8; 32]), bool>>,
}

impl WebConfig {
    /// Plain HTTP without authentication: the default.
    pub fn open() -> Self {
        WebConfig {
            tls: None,
            users: BTreeMap::new(),
            checked: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_auth_required(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks an `Authorization` header against the users.
    pub fn is_authorized(&self, header: Option<&str>) -> bool {
        if !self.is_auth_required() {
            return true;
        }
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return false;
        };
        let key = (user.clone(), Sha256::digest(password.as_bytes()).into());
        if let Some(known) = self
            .checked
            .lock()
            .expect("no code panics holding this lock")
            .get(&key)
        {
            return *known;
        }
        let is_valid = self
            .users
            .get(&user)
            .is_some_and(|hash| bcrypt::verify(&password, hash).unwrap_or(false));
        let mut checked = self
            .checked
            .lock()
            .expect("no code panics holding this lock");
        if checked.len() >= AUTH_CACHE_SIZE {
            checked.clear();
        }
        checked.insert(key, is_valid);
        is_valid
    }
}

/// Decodes `Basic base64(user:password)`.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Loads and checks the file at `path`.
pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let file = path.display().to_string();
    let error = |problem: String, fix: &str| WebConfigError {
        file: file.clone(),
        problem,
        fix: fix.to_string(),
    };
    let raw: RawWebConfig = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|err| {
            let fix = "use the keys tls_server_config (cert_file, key_file, client_ca_file, \
                       client_auth_type, min_version) and basic_auth_users";
            error(err.to_string(), fix)
        })?;
    for (user, hash) in &raw.basic_auth_users {
        if !hash.starts_with("$2") {
            let fix = "store a bcrypt hash, e.g. from `htpasswd -nBC 10 USER`";
            return Err(error(
                format!("basic_auth_users.{user} is not a bcrypt hash"),
                fix,
            ));
        }
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let tls = raw
        .tls_server_config
        .map(|tls| tls_config(&tls, base, &error))
        .transpose()?;
    Ok(WebConfig {
        tls: tls.map(Arc::new),
        users: raw.basic_auth_users,
        checked: Mutex::new(HashMap::new()),
    })
}

type ErrFn<'a> = dyn Fn(String, &str) -> WebConfigError + 'a;

fn tls_config(
    raw: &RawTls,
    base: &Path,
    error: &ErrFn<'_>,
) -> Result<ServerConfig, WebConfigError> {
    let fix_pair = "set both tls_server_config.cert_file and tls_server_config.key_file";
    let (Some(cert_file), Some(key_file)) = (&raw.cert_file, &raw.key_file) else {
        return Err(error(
            "tls_server_config needs cert_file and key_file".into(),
            fix_pair,
        ));
    };
    let (cert_path, key_path) = (base.join(cert_file), base.join(key_file));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect())
        .map_err(|err| {
            error(
                format!(
                    "cannot read certificates from {}: {err}",
                    cert_path.display()
                ),
                "point cert_file at a PEM certificate chain",
            )
        })?;
    if certs.is_empty() {
        let problem = format!("{} holds no certificate", cert_path.display());
        return Err(error(problem, "point cert_file at a PEM certificate chain"));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|err| {
        let problem = format!(
            "cannot read a private key from {}: {err}",
            key_path.display()
        );
        error(
            problem,
            "point key_file at the PEM private key of the certificate",
        )
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match raw.min_version.as_deref() {
        None | Some("TLS12") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(other) => {
            let fix = "use TLS12 or TLS13; older versions are not offered";
            return Err(error(
                format!("min_version {other:?} is not supported"),
                fix,
            ));
        }
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|err| error(format!("TLS setup failed: {err}"), "check min_version"))?;

    let auth_type = raw.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth_type {
        "NoClientCert" => builder.with_no_client_auth(),
        "VerifyClientCertIfGiven" | "RequireAndVerifyClientCert" => {
            let roots = client_roots(raw.client_ca_file.as_deref(), base, error)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth_type == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|err| {
                error(
                    format!("client_ca_file: {err}"),
                    "give a PEM CA certificate",
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        other => {
            let fix = "use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert; \
                       client certificates that are not verified are not accepted";
            return Err(error(
                format!("client_auth_type {other:?} is not supported"),
                fix,
            ));
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|err| {
        error(
            format!("the certificate and key do not go together: {err}"),
            "use the key of the certificate",
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn client_roots(
    ca_file: Option<&Path>,
    base: &Path,
    error: &ErrFn<'_>,
) -> Result<RootCertStore, WebConfigError> {
    let Some(ca_file) = ca_file else {
        let fix = "set tls_server_config.client_ca_file to the CA that signs client certificates";
        return Err(error(
            "verifying client certificates needs client_ca_file".into(),
            fix,
        ));
    };
    let path = base.join(ca_file);
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| {
            error(
                format!("cannot read {}: {err}", path.display()),
                "give a PEM CA certificate",
            )
        })?;
    for cert in certs {
        roots.add(cert).map_err(|err| {
            error(
                format!("{}: {err}", path.display()),
                "give a PEM CA certificate",
            )
        })?;
    }
    Ok(roots)
}

/// The modification time and size of each file a configuration depends on.
type Stamps = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// The web configuration in force, reloaded when its files change.
pub struct WebConfigWatcher {
    path: Option<PathBuf>,
    current: RwLock<Arc<WebConfig>>,
    /// When the files were last looked at, and what they looked like.
    seen: Mutex<(Instant, Stamps)>,
}

impl WebConfigWatcher {
    /// Loads `path`, or serves plain HTTP without one. A bad file here
    /// stops start-up.
    pub fn new(path: Option<PathBuf>) -> Result<Self, WebConfigError> {
        let config = match &path {
            Some(path) => load(path)?,
            None => WebConfig::open(),
        };
        let stamps = path.as_deref().map(stamps).unwrap_or_default();
        Ok(WebConfigWatcher {
            path,
            current: RwLock::new(Arc::new(config)),
            seen: Mutex::new((Instant::now(), stamps)),
        })
    }

    /// The configuration for a new connection; reloads it first when its
    /// files changed since they were last looked at.
    pub fn current(&self) -> Arc<WebConfig> {
        if let Some(path) = &self.path {
            self.reload_if_changed(path);
        }
        Arc::clone(
            &self
                .current
                .read()
                .expect("no code panics holding this lock"),
        )
    }

    fn reload_if_changed(&self, path: &Path) {
        let mut seen = self.seen.lock().expect("no code panics holding this lock");
        if seen.0.elapsed() < CHECK_EVERY {
            return;
        }
        seen.0 = Instant::now();
        let now = stamps(path);
        if now == seen.1 {
            return;
        }
        seen.1 = now;
        match load(path) {
            Ok(config) => {
                *self
                    .current
                    .write()
                    .expect("no code panics holding this lock") = Arc::new(config);
                tracing::info!(file = %path.display(), "web config reloaded");
            }
            Err(err) => {
                let message = "web config not reloaded; the previous one stays in force";
                tracing::error!(cause = %err, "{message}")
            }
        }
    }
}

/// Stamps of the file and of every file it names (read leniently: a file
/// that does not parse still has its own stamp, so fixing it is noticed).
fn stamps(path: &Path) -> Stamps {
    let stamp = |p: &Path| {
        let meta = std::fs::metadata(p).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut files = vec![path.to_path_buf()];
    let base = path.parent().unwrap_or(Path::new("."));
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines() {
            let line = line.trim();
            for key in ["cert_file:", "key_file:", "client_ca_file:"] {
                if let Some(value) = line.strip_prefix(key) {
                    files.push(base.join(value.trim().trim_matches(['"', '\''])));
                }
            }
        }
    }
    files
        .into_iter()
        .map(|f| {
            let s = stamp(&f);
            (f, s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode() {
        // "alice:s3cret:with:colons"
        let header = "Basic YWxpY2U6czNjcmV0OndpdGg6Y29sb25z";
        assert_eq!(
            basic_credentials(header),
            Some(("alice".into(), "s3cret:with:colons".into()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }

    #[test]
    fn users_are_checked_against_bcrypt_hashes() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let config = WebConfig {
            tls: None,
            users: BTreeMap::from([("alice".to_string(), hash)]),
            checked: Mutex::new(HashMap::new()),
        };
        let header = |user: &str, password: &str| {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {encoded}")
        };
        assert!(config.is_authorized(Some(&header("alice", "right"))));
        assert!(
            config.is_authorized(Some(&header("alice", "right"))),
            "cached answer agrees"
        );
        assert!(!config.is_authorized(Some(&header("alice", "wrong"))));
        assert!(!config.is_authorized(Some(&header("bob", "right"))));
        assert!(!config.is_authorized(None));
        assert!(WebConfig::open().is_authorized(None));
    }
}
