//! The configuration: read from a YAML file with every key overridable from
//! the environment, then checked as a whole before anything starts.
//!
//! Reading and checking are two steps on purpose. The file's shape (`Raw*`
//! types) is what people type; [`Config`] is what the program runs with:
//! durations parsed, endpoints resolved, limits known to be sane. Every
//! mistake found on the way is a [`ConfigError`] that names the file, the key
//! and the fix, because a wrong config should stop start-up, not a poll.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use crate::client::redacted;
use serde::Deserialize;
use time::UtcOffset;

/// Prefix of the environment variables that override config keys:
/// `CRS_EXPORTER__API__RATE_LIMIT=30` sets `api.rate_limit`.
pub const ENV_PREFIX: &str = "CRS_EXPORTER";

/// The separator between the prefix and the key parts in those variables.
pub const ENV_SEPARATOR: &str = "__";

/// How old the newest completed backup may get before it counts as stale,
/// unless configured: a nightly backup plus two hours of slack.
pub const DEFAULT_MAX_BACKUP_AGE: Duration = Duration::from_secs(26 * 3600);

/// Labels that the exporter sets itself and configured labels may not use.
const RESERVED_LABELS: [&str; 6] = [
    "instance_id",
    "region",
    "instance_name",
    "account",
    "job",
    "instance",
];

/// The highest request budget accepted: far above what the API grants a
/// key, low enough that the limiter's slots stay small.
const MAX_RATE_LIMIT: u32 = 1000;

/// The most configured labels one instance may carry, to keep series small.
const MAX_LABELS_PER_INSTANCE: usize = 16;

/// A mistake in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {problem}; fix: {fix}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub problem: String,
    pub fix: String,
}

/// The configuration as written, before checking.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub poll: RawPoll,
    #[serde(default)]
    pub defaults: RawDefaults,
    pub credentials: Option<RawCredentials>,
    #[serde(default)]
    pub instances: Vec<RawInstance>,
    pub discovery: Option<RawDiscovery>,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
}

/// A further account: its own credentials, instances and discovery.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    #[serde(default)]
    pub name: String,
    pub credentials: Option<RawCredentials>,
    #[serde(default)]
    pub instances: Vec<RawInstance>,
    pub discovery: Option<RawDiscovery>,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Finding instances through `DescribeInstances`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    #[serde(default)]
    pub regions: Vec<String>,
    pub interval: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub tag_keys: Vec<String>,
    #[serde(default)]
    pub project_ids: Vec<i64>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub tag_labels: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub endpoint: Option<String>,
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    pub rate_limit: Option<u32>,
    pub timezone: Option<String>,
    pub timeout: Option<String>,
    pub max_retries: Option<u32>,
    pub max_pages: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoll {
    pub interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub max_backup_age: Option<String>,
}

#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    /// `keys` (the default), `instance_role` or `web_identity`.
    pub source: Option<String>,
    pub secret_id: Option<String>,
    pub secret_key: Option<String>,
    pub secret_key_file: Option<PathBuf>,
    pub token: Option<String>,
    /// Instance role: the role's name, looked up when not given.
    pub role_name: Option<String>,
    /// Instance role: the metadata service.
    pub metadata_endpoint: Option<String>,
    /// Web identity: STS, and the region sent to it.
    pub sts_endpoint: Option<String>,
    pub sts_region: Option<String>,
    /// Web identity: taken from TKE_ROLE_ARN, TKE_PROVIDER_ID and
    /// TKE_WEB_IDENTITY_TOKEN_FILE when not given.
    pub role_arn: Option<String>,
    pub provider_id: Option<String>,
    pub web_identity_token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstance {
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub region: String,
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub max_backup_age: Option<String>,
}

/// The checked configuration the exporter runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub api: ApiSettings,
    pub poll_interval: Duration,
    /// Every account; the top-level credentials, instances and discovery
    /// form the account named [`DEFAULT_ACCOUNT`].
    pub accounts: Vec<Account>,
    /// The instances listed by hand, of every account.
    pub instances: Vec<Instance>,
    /// The age threshold of instances that discovery finds.
    pub default_max_backup_age: Duration,
}

impl Config {
    /// The default account's credentials block.
    pub fn credentials(&self) -> Option<&RawCredentials> {
        self.accounts
            .iter()
            .find(|a| a.name == DEFAULT_ACCOUNT)?
            .credentials
            .as_ref()
    }
}

/// The name of the account the top-level keys describe.
pub const DEFAULT_ACCOUNT: &str = "default";

/// One API key's worth of instances.
#[derive(Debug, Clone)]
pub struct Account {
    /// A bounded label value: letters, digits, `-` and `_`.
    pub name: String,
    pub credentials: Option<RawCredentials>,
    pub discovery: Option<Discovery>,
    pub filter: Filter,
}

/// What discovery asks `DescribeInstances` for, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub regions: Vec<String>,
    pub interval: Duration,
    pub tags: BTreeMap<String, String>,
    pub tag_keys: Vec<String>,
    pub project_ids: Vec<i64>,
    pub search: Vec<String>,
    /// Tags copied into labels of `tencentcloud_redis_instance_info`.
    pub tag_labels: Vec<String>,
}

/// Patterns over instance IDs and names; an instance is watched when it
/// matches an include pattern (or there are none) and no exclude pattern.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub include: Vec<regex_lite::Regex>,
    pub exclude: Vec<regex_lite::Regex>,
}

impl Filter {
    pub fn admits(&self, instance: &Instance) -> bool {
        let name = instance.name.as_deref().unwrap_or("");
        let matches = |re: &regex_lite::Regex| re.is_match(&instance.id) || re.is_match(name);
        (self.include.is_empty() || self.include.iter().any(matches))
            && !self.exclude.iter().any(matches)
    }
}

/// How to reach and treat the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Overrides the host for every region.
    pub endpoint: Option<Url>,
    /// Overrides the host for one region; wins over `endpoint`.
    pub region_endpoints: BTreeMap<String, Url>,
    /// Requests per second per credential, region and action.
    pub rate_limit: u32,
    /// Offset of the zone-less times in the API's answers.
    pub utc_offset: UtcOffset,
    /// Deadline of one HTTP request.
    pub timeout: Duration,
    /// Further tries of a request that failed in a way worth retrying.
    pub max_retries: u32,
    /// Pages read at most per poll, whatever `TotalCount` claims.
    pub max_pages: u32,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            endpoint: None,
            region_endpoints: BTreeMap::new(),
            rate_limit: 20,
            utc_offset: time::macros::offset!(+8),
            timeout: Duration::from_secs(10),
            max_retries: 2,
            max_pages: 100,
        }
    }
}

impl ApiSettings {
    /// The URL requests for `region` go to.
    pub fn endpoint_for(&self, region: &str) -> Url {
        if let Some(url) = self.region_endpoints.get(region).or(self.endpoint.as_ref()) {
            return url.clone();
        }
        // Every region, the isolated financial ones included, answers on
        // its own host; the format is fixed and always a valid URL.
        Url::parse(&format!("https://redis.{region}.tencentcloudapi.com"))
            .expect("a region checked by the config forms a valid host")
    }
}

/// One Redis instance whose backups are watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// The account whose key polls it.
    pub account: String,
    pub region: String,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub max_backup_age: Duration,
}

/// Reads and checks the file at `path`, with the environment's overrides.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let raw = read(path)?;
    check(raw, &path.display().to_string())
}

/// Reads the file and the environment into the raw shape.
pub fn read(path: &Path) -> Result<RawConfig, ConfigError> {
    let file = path.display().to_string();
    if !path.exists() {
        return Err(ConfigError {
            file,
            key: "(file)".into(),
            problem: "the file does not exist".into(),
            fix: "pass --config.file with the path of your config, or start from \
                  config.example.yaml"
                .into(),
        });
    }
    let env = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR)
        .try_parsing(true);
    config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Yaml))
        .add_source(env)
        .build()
        .and_then(|c| c.try_deserialize::<RawConfig>())
        .map_err(|err| load_error(&file, err))
}

fn load_error(file: &str, err: config::ConfigError) -> ConfigError {
    let text = hide_values(&err.to_string());
    let fix = if text.contains("unknown field") {
        "correct the key's spelling, in the file or in a CRS_EXPORTER__ environment \
         variable; config.example.yaml lists every key"
    } else if text.contains("invalid type") || text.contains("invalid value") {
        "give the key a value of the type config.example.yaml shows"
    } else {
        "make the file valid YAML in the shape of config.example.yaml"
    };
    let key = text
        .rsplit_once("for key `")
        .and_then(|(_, rest)| rest.split('`').next())
        .unwrap_or("(file)")
        .to_string();
    ConfigError {
        file: file.to_string(),
        key,
        problem: text,
        fix: fix.into(),
    }
}

/// Takes the quoted values out of a parser's message: the value of a
/// mistyped key may be a secret (`credentials: AKID...:key`), and the
/// message names the key anyway.
fn hide_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find("string \"") {
        let (before, quoted) = rest.split_at(start + "string ".len());
        out.push_str(before);
        match quoted[1..].find('"') {
            Some(end) => {
                out.push_str("(value not shown)");
                rest = &quoted[end + 2..];
            }
            None => {
                rest = quoted;
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

impl std::fmt::Debug for RawCredentials {
    /// Everything but the secret key and the token, which print as `..`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |value: &Option<String>| value.as_ref().map(|_| "..");
        f.debug_struct("RawCredentials")
            .field("source", &self.source)
            .field("secret_id", &self.secret_id)
            .field("secret_key", &hidden(&self.secret_key))
            .field("secret_key_file", &self.secret_key_file)
            .field("token", &hidden(&self.token))
            .field("role_name", &self.role_name)
            .field("metadata_endpoint", &self.metadata_endpoint)
            .field("sts_endpoint", &self.sts_endpoint)
            .field("role_arn", &self.role_arn)
            .finish_non_exhaustive()
    }
}

/// Checks the raw configuration as a whole; `file` names it in errors.
pub fn check(raw: RawConfig, file: &str) -> Result<Config, ConfigError> {
    let err = |key: &str, problem: String, fix: &str| ConfigError {
        file: file.to_string(),
        key: key.to_string(),
        problem,
        fix: fix.to_string(),
    };
    let api = check_api(&raw.api, &err)?;
    let poll_interval = match &raw.poll.interval {
        Some(text) => duration("poll.interval", text, &err)?,
        None => Duration::from_secs(300),
    };
    if poll_interval < Duration::from_secs(1) {
        return Err(err(
            "poll.interval",
            "is shorter than 1s".into(),
            "use 1s or more, e.g. 5m",
        ));
    }
    let default_age = match &raw.defaults.max_backup_age {
        Some(text) => duration("defaults.max_backup_age", text, &err)?,
        None => DEFAULT_MAX_BACKUP_AGE,
    };
    let mut accounts = Vec::new();
    let mut instances = Vec::new();
    let has_default = raw.credentials.is_some()
        || !raw.instances.is_empty()
        || raw.discovery.is_some()
        || raw.accounts.is_empty();
    if has_default {
        let top = RawAccount {
            name: DEFAULT_ACCOUNT.into(),
            credentials: raw.credentials,
            instances: raw.instances,
            discovery: raw.discovery,
            include: raw.include,
            exclude: raw.exclude,
        };
        let (account, listed) = check_account(&top, "", &api, default_age, &err)?;
        accounts.push(account);
        instances.extend(listed);
    }
    for (index, raw_account) in raw.accounts.iter().enumerate() {
        let prefix = format!("accounts[{index}].");
        check_account_name(&format!("{prefix}name"), &raw_account.name, &accounts, &err)?;
        let (account, listed) = check_account(raw_account, &prefix, &api, default_age, &err)?;
        accounts.push(account);
        instances.extend(listed);
    }
    if instances.is_empty() && accounts.iter().all(|a| a.discovery.is_none()) {
        let fix = "list at least one instance with instance_id and region, or set up discovery";
        return Err(err("instances", "is empty or missing".into(), fix));
    }
    let mut seen = HashSet::new();
    for instance in &instances {
        if !seen.insert(instance.id.as_str()) {
            let problem = format!("{} is listed twice (in two accounts)", instance.id);
            return Err(err(
                "instances",
                problem,
                "keep the instance in one account only",
            ));
        }
    }
    Ok(Config {
        api,
        poll_interval,
        accounts,
        instances,
        default_max_backup_age: default_age,
    })
}

/// Checks one account; `prefix` is its place in the file (empty for the
/// top-level keys).
fn check_account(
    raw: &RawAccount,
    prefix: &str,
    api: &ApiSettings,
    default_age: Duration,
    err: &ErrFn<'_>,
) -> Result<(Account, Vec<Instance>), ConfigError> {
    let scoped =
        |key: &str, problem: String, fix: &str| err(&format!("{prefix}{key}"), problem, fix);
    let scoped: &ErrFn<'_> = &scoped;
    if raw.name != DEFAULT_ACCOUNT && raw.credentials.is_none() {
        let fix = "give the account a credentials block; the environment and the profile file \
                   serve the top-level account only";
        return Err(scoped("credentials", "is missing".into(), fix));
    }
    let mut instances = check_instances(&raw.instances, default_age, scoped)?;
    for (index, instance) in instances.iter_mut().enumerate() {
        let key = format!("instances[{index}].region");
        check_region_exists(&key, &instance.region, api, scoped)?;
        instance.account = raw.name.clone();
    }
    check_credentials(raw.credentials.as_ref(), scoped)?;
    let discovery = raw
        .discovery
        .as_ref()
        .map(|d| check_discovery(d, api, scoped))
        .transpose()?;
    let filter = Filter {
        include: patterns("include", &raw.include, scoped)?,
        exclude: patterns("exclude", &raw.exclude, scoped)?,
    };
    let account = Account {
        name: raw.name.clone(),
        credentials: raw.credentials.clone(),
        discovery,
        filter,
    };
    Ok((account, instances))
}

fn check_account_name(
    key: &str,
    name: &str,
    before: &[Account],
    err: &ErrFn<'_>,
) -> Result<(), ConfigError> {
    let is_valid = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !is_valid {
        let fix = "name the account with up to 32 letters, digits, - or _";
        return Err(err(key, format!("{name:?} is not an account name"), fix));
    }
    if before.iter().any(|a| a.name == name) {
        let fix = "give every account its own name; the top-level keys are the account \"default\"";
        return Err(err(key, format!("{name:?} is used twice"), fix));
    }
    Ok(())
}

fn check_discovery(
    raw: &RawDiscovery,
    api: &ApiSettings,
    err: &ErrFn<'_>,
) -> Result<Discovery, ConfigError> {
    if raw.regions.is_empty() {
        let fix = "list the regions to search, such as [ap-guangzhou]";
        return Err(err("discovery.regions", "is empty or missing".into(), fix));
    }
    for (index, region) in raw.regions.iter().enumerate() {
        let key = format!("discovery.regions[{index}]");
        check_region(&key, region, err)?;
        check_region_exists(&key, region, api, err)?;
    }
    let interval = match &raw.interval {
        Some(text) => duration("discovery.interval", text, err)?,
        None => Duration::from_secs(600),
    };
    if interval < Duration::from_secs(10) {
        let fix = "use 10s or more; instances come and go in minutes, not seconds";
        return Err(err("discovery.interval", "is shorter than 10s".into(), fix));
    }
    for name in &raw.tag_labels {
        if !is_label_name(name) || RESERVED_LABELS.contains(&name.as_str()) {
            let fix = "copy tags whose keys are valid label names and not set by the exporter";
            return Err(err(
                "discovery.tag_labels",
                format!("{name:?} cannot be a label"),
                fix,
            ));
        }
    }
    Ok(Discovery {
        regions: raw.regions.clone(),
        interval,
        tags: raw.tags.clone(),
        tag_keys: raw.tag_keys.clone(),
        project_ids: raw.project_ids.clone(),
        search: raw.search.clone(),
        tag_labels: raw.tag_labels.clone(),
    })
}

fn patterns(
    key: &str,
    raw: &[String],
    err: &ErrFn<'_>,
) -> Result<Vec<regex_lite::Regex>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(index, text)| {
            regex_lite::Regex::new(text).map_err(|cause| {
                let fix = "write a regular expression, such as ^orders- or -test$";
                err(
                    &format!("{key}[{index}]"),
                    format!("{text:?} is not a pattern: {cause}"),
                    fix,
                )
            })
        })
        .collect()
}

type ErrFn<'a> = dyn Fn(&str, String, &str) -> ConfigError + 'a;

fn check_api(raw: &RawApi, err: &ErrFn<'_>) -> Result<ApiSettings, ConfigError> {
    let defaults = ApiSettings::default();
    let endpoint = raw
        .endpoint
        .as_deref()
        .map(|u| parse_endpoint("api.endpoint", u, err))
        .transpose()?;
    let mut region_endpoints = BTreeMap::new();
    for (region, url) in &raw.endpoints {
        let key = format!("api.endpoints.{region}");
        check_region(&key, region, err)?;
        region_endpoints.insert(region.clone(), parse_endpoint(&key, url, err)?);
    }
    let rate_limit = raw.rate_limit.unwrap_or(defaults.rate_limit);
    if rate_limit == 0 {
        let fix = "set a positive number of requests per second; the API allows 20";
        return Err(err(
            "api.rate_limit",
            "is 0, so no request could ever be sent".into(),
            fix,
        ));
    }
    if rate_limit > MAX_RATE_LIMIT {
        let fix = format!("use at most {MAX_RATE_LIMIT}; the API allows 20 to 50 per key");
        return Err(err(
            "api.rate_limit",
            format!("{rate_limit} is far above any API limit"),
            &fix,
        ));
    }
    let utc_offset = match &raw.timezone {
        Some(text) => utc_offset(text).ok_or_else(|| {
            let fix = "write an offset such as \"+08:00\" (Beijing time, the API's default)";
            err("api.timezone", format!("{text:?} is not a UTC offset"), fix)
        })?,
        None => defaults.utc_offset,
    };
    let timeout = match &raw.timeout {
        Some(text) => duration("api.timeout", text, err)?,
        None => defaults.timeout,
    };
    if timeout.is_zero() {
        return Err(err(
            "api.timeout",
            "is 0".into(),
            "use a timeout such as 10s",
        ));
    }
    if timeout > Duration::from_secs(300) {
        return Err(err(
            "api.timeout",
            "is longer than 5m".into(),
            "use a timeout such as 10s",
        ));
    }
    let max_pages = raw.max_pages.unwrap_or(defaults.max_pages);
    if max_pages == 0 || max_pages > 1000 {
        let fix = "use 1 to 1000; 100 pages hold 10000 backups";
        return Err(err(
            "api.max_pages",
            format!("{max_pages} is out of range"),
            fix,
        ));
    }
    let max_retries = raw.max_retries.unwrap_or(defaults.max_retries);
    if max_retries > 10 {
        let fix = "use 0 to 10; each retry waits longer, so more only delay the failure";
        return Err(err(
            "api.max_retries",
            format!("{max_retries} is out of range"),
            fix,
        ));
    }
    Ok(ApiSettings {
        endpoint,
        region_endpoints,
        rate_limit,
        utc_offset,
        timeout,
        max_retries,
        max_pages,
    })
}

fn check_instances(
    raw: &[RawInstance],
    default_age: Duration,
    err: &ErrFn<'_>,
) -> Result<Vec<Instance>, ConfigError> {
    let mut seen = HashSet::new();
    let mut instances = Vec::with_capacity(raw.len());
    for (index, item) in raw.iter().enumerate() {
        let key = |field: &str| format!("instances[{index}].{field}");
        check_instance_id(&key("instance_id"), &item.instance_id, err)?;
        if !seen.insert(item.instance_id.clone()) {
            let problem = format!("{} is listed twice", item.instance_id);
            return Err(err(&key("instance_id"), problem, "remove the second entry"));
        }
        check_region(&key("region"), &item.region, err)?;
        check_labels(&key("labels"), &item.labels, err)?;
        let max_backup_age = match &item.max_backup_age {
            Some(text) => duration(&key("max_backup_age"), text, err)?,
            None => default_age,
        };
        instances.push(Instance {
            id: item.instance_id.clone(),
            account: DEFAULT_ACCOUNT.into(),
            region: item.region.clone(),
            name: item.name.clone().filter(|n| !n.is_empty()),
            labels: item.labels.clone(),
            max_backup_age,
        });
    }
    Ok(instances)
}

fn check_instance_id(key: &str, id: &str, err: &ErrFn<'_>) -> Result<(), ConfigError> {
    let body = id.strip_prefix("crs-").unwrap_or("");
    let is_valid = body.len() == 8
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if is_valid {
        return Ok(());
    }
    let problem = if id.is_empty() {
        "is missing".to_string()
    } else {
        format!("{id:?} is not an instance ID")
    };
    Err(err(
        key,
        problem,
        "copy the ID from the console: crs- and 8 lowercase letters or digits",
    ))
}

fn check_region(key: &str, region: &str, err: &ErrFn<'_>) -> Result<(), ConfigError> {
    let parts: Vec<&str> = region.split('-').collect();
    let is_valid = parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if is_valid {
        return Ok(());
    }
    let problem = if region.is_empty() {
        "is missing".to_string()
    } else {
        format!("{region:?} is not a region")
    };
    Err(err(
        key,
        problem,
        "write the region as the console shows it, such as ap-guangzhou",
    ))
}

/// Regions where TencentDB for Redis is offered. A region missing here (a
/// new one) is accepted once `api.endpoints` names its endpoint, or when
/// `api.endpoint` sends every region elsewhere.
pub const KNOWN_REGIONS: [&str; 22] = [
    "ap-guangzhou",
    "ap-shanghai",
    "ap-nanjing",
    "ap-beijing",
    "ap-chengdu",
    "ap-chongqing",
    "ap-hongkong",
    "ap-taipei",
    "ap-singapore",
    "ap-jakarta",
    "ap-bangkok",
    "ap-seoul",
    "ap-tokyo",
    "ap-mumbai",
    "na-siliconvalley",
    "na-ashburn",
    "na-toronto",
    "sa-saopaulo",
    "eu-frankfurt",
    "ap-shanghai-fsi",
    "ap-shenzhen-fsi",
    "ap-beijing-fsi",
];

fn check_region_exists(
    key: &str,
    region: &str,
    api: &ApiSettings,
    err: &ErrFn<'_>,
) -> Result<(), ConfigError> {
    let is_known = KNOWN_REGIONS.contains(&region)
        || api.region_endpoints.contains_key(region)
        || api.endpoint.is_some();
    if is_known {
        return Ok(());
    }
    let closest = KNOWN_REGIONS
        .iter()
        .min_by_key(|known| edit_distance(known, region));
    let fix = format!(
        "check the spelling{}; a region newer than this exporter works once \
         api.endpoints.{region} names its endpoint",
        closest
            .map(|c| format!(" (did you mean {c}?)"))
            .unwrap_or_default()
    );
    Err(err(
        key,
        format!("{region:?} is not a region TencentDB for Redis is known in"),
        &fix,
    ))
}

/// The Levenshtein distance, to suggest the region meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn check_labels(
    key: &str,
    labels: &BTreeMap<String, String>,
    err: &ErrFn<'_>,
) -> Result<(), ConfigError> {
    if labels.len() > MAX_LABELS_PER_INSTANCE {
        let problem = format!("has {} labels", labels.len());
        let fix = format!("keep at most {MAX_LABELS_PER_INSTANCE} labels per instance");
        return Err(err(key, problem, &fix));
    }
    for (name, value) in labels {
        let label_key = format!("{key}.{name}");
        if !is_label_name(name) || name.starts_with("__") {
            let fix = "use letters, digits and underscores, not starting with a digit or __";
            return Err(err(
                &label_key,
                format!("{name:?} is not a Prometheus label name"),
                fix,
            ));
        }
        if RESERVED_LABELS.contains(&name.as_str()) {
            let fix = format!(
                "pick another name; {} are set by the exporter",
                RESERVED_LABELS.join(", ")
            );
            return Err(err(&label_key, format!("{name:?} is reserved"), &fix));
        }
        if value.chars().count() > 128 {
            return Err(err(
                &label_key,
                "is longer than 128 characters".into(),
                "shorten the value",
            ));
        }
    }
    Ok(())
}

fn check_credentials(raw: Option<&RawCredentials>, err: &ErrFn<'_>) -> Result<(), ConfigError> {
    let Some(raw) = raw else { return Ok(()) };
    match raw.source.as_deref() {
        None | Some("keys") => {}
        Some("instance_role" | "web_identity") => return check_temporary_source(raw, err),
        Some(other) => {
            let fix = "use keys, instance_role or web_identity";
            return Err(err(
                "credentials.source",
                format!("{other:?} is not a source"),
                fix,
            ));
        }
    }
    let has_key = raw.secret_key.is_some() || raw.secret_key_file.is_some();
    if raw.secret_key.is_some() && raw.secret_key_file.is_some() {
        let fix = "keep only one of credentials.secret_key and credentials.secret_key_file";
        return Err(err(
            "credentials",
            "sets both secret_key and secret_key_file".into(),
            fix,
        ));
    }
    if raw.secret_id.is_none() || !has_key {
        let fix = "set credentials.secret_id and credentials.secret_key (or secret_key_file), \
                   or remove the credentials block to use the environment";
        return Err(err("credentials", "is incomplete".into(), fix));
    }
    let is_blank = |value: &Option<String>| value.as_deref().is_some_and(|v| v.trim().is_empty());
    if is_blank(&raw.secret_id) || is_blank(&raw.secret_key) {
        let fix = "fill in credentials.secret_id and credentials.secret_key";
        return Err(err(
            "credentials",
            "has an empty secret_id or secret_key".into(),
            fix,
        ));
    }
    if raw
        .token
        .as_deref()
        .is_some_and(|t| t.chars().any(char::is_control))
    {
        let fix = "copy the token again without line breaks";
        return Err(err(
            "credentials.token",
            "holds a line break or control character".into(),
            fix,
        ));
    }
    if let Some(path) = &raw.secret_key_file {
        if let Err(io) = std::fs::metadata(path) {
            let problem = format!("{} cannot be read: {io}", path.display());
            let fix = "point it at the file holding the secret key";
            return Err(err("credentials.secret_key_file", problem, fix));
        }
    }
    Ok(())
}

fn check_temporary_source(raw: &RawCredentials, err: &ErrFn<'_>) -> Result<(), ConfigError> {
    let has_keys = raw.secret_id.is_some()
        || raw.secret_key.is_some()
        || raw.secret_key_file.is_some()
        || raw.token.is_some();
    if has_keys {
        let fix = "remove secret_id, secret_key, secret_key_file and token: the source issues them";
        return Err(err(
            "credentials",
            "mixes keys with a temporary source".into(),
            fix,
        ));
    }
    for (key, value) in [
        ("credentials.metadata_endpoint", &raw.metadata_endpoint),
        ("credentials.sts_endpoint", &raw.sts_endpoint),
    ] {
        if let Some(url) = value {
            parse_endpoint(key, url, err)?;
        }
    }
    Ok(())
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn duration(key: &str, text: &str, err: &ErrFn<'_>) -> Result<Duration, ConfigError> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let fix = format!("add a unit, such as {trimmed}s or {trimmed}m");
        return Err(err(key, format!("{text:?} has no unit"), &fix));
    }
    let parsed = humantime::parse_duration(trimmed).map_err(|cause| {
        err(
            key,
            format!("{text:?} is not a duration ({cause})"),
            "write a duration such as 30s, 5m or 26h",
        )
    })?;
    if parsed.is_zero() {
        return Err(err(
            key,
            format!("{text:?} is zero"),
            "write a duration above zero",
        ));
    }
    if parsed > MAX_DURATION {
        let fix = "write a duration of at most a year, such as 30d";
        return Err(err(key, format!("{text:?} is longer than a year"), fix));
    }
    Ok(parsed)
}

/// No setting needs a longer duration; far longer ones overflow clocks.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

fn parse_endpoint(key: &str, text: &str, err: &ErrFn<'_>) -> Result<Url, ConfigError> {
    let fix = "write a URL such as https://redis.tencentcloudapi.com";
    // The value is not repeated: a URL may carry a password.
    let url = Url::parse(text).map_err(|cause| err(key, format!("is not a URL ({cause})"), fix))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        let problem = format!("{} is not an http or https URL with a host", redacted(&url));
        return Err(err(key, problem, fix));
    }
    Ok(url)
}

/// Parses `+08:00`, `-05:30`, `+8`, `Z` or `UTC`.
pub fn utc_offset(text: &str) -> Option<UtcOffset> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("z") || text.eq_ignore_ascii_case("utc") {
        return Some(UtcOffset::UTC);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1i8, &text[1..]),
        b'-' => (-1i8, &text[1..]),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':').unwrap_or((rest, "0"));
    let is_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !is_digits(hours) || !is_digits(minutes) {
        return None;
    }
    let hours: i8 = hours.parse().ok().filter(|h| (0..=14).contains(h))?;
    let minutes: i8 = minutes.parse().ok().filter(|m| (0..60).contains(m))?;
    UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("crs-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:x}.yaml", fxhash(yaml)));
        std::fs::write(&path, yaml).unwrap();
        let result = load(&path);
        let _ = std::fs::remove_file(&path);
        result
    }

    fn fxhash(text: &str) -> u64 {
        text.bytes().fold(0xcbf29ce484222325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        })
    }

    const MINIMAL: &str = "instances:\n  - instance_id: crs-5a4py64p\n    region: ap-guangzhou\n";

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.api.rate_limit, 20);
        assert_eq!(config.api.utc_offset, time::macros::offset!(+8));
        assert_eq!(config.api.timeout, Duration::from_secs(10));
        assert_eq!(config.poll_interval, Duration::from_secs(300));
        assert_eq!(config.instances[0].max_backup_age, DEFAULT_MAX_BACKUP_AGE);
        assert_eq!(
            config.api.endpoint_for("ap-shanghai-fsi").as_str(),
            "https://redis.ap-shanghai-fsi.tencentcloudapi.com/"
        );
    }

    #[test]
    fn region_endpoint_wins_over_the_global_one() {
        let api = "api:\n  endpoint: http://127.0.0.1:1\n  \
                   endpoints:\n    ap-beijing: http://127.0.0.1:2\n";
        let yaml = format!("{api}{MINIMAL}");
        let config = parse(&yaml).unwrap();
        assert_eq!(config.api.endpoint_for("ap-beijing").port(), Some(2));
        assert_eq!(config.api.endpoint_for("ap-guangzhou").port(), Some(1));
    }

    #[test]
    fn labels_keep_their_case() {
        let yaml = format!("{MINIMAL}    labels: {{Team: payments, env: prod}}\n");
        let config = parse(&yaml).unwrap();
        assert_eq!(
            config.instances[0].labels.get("Team").map(String::as_str),
            Some("payments")
        );
    }

    fn error_of(yaml: &str) -> ConfigError {
        parse(yaml).expect_err("config should be rejected")
    }

    #[test]
    fn a_mistyped_secret_is_not_repeated_in_the_error() {
        let err = error_of(&format!("credentials: AKIDx:my-secret-key-999\n{MINIMAL}"));
        assert!(!err.to_string().contains("my-secret-key-999"), "{err}");
        assert!(err.to_string().contains("credentials"), "{err}");
        let raw = RawCredentials {
            secret_key: Some("hidden-key".into()),
            ..RawCredentials::default()
        };
        assert!(!format!("{raw:?}").contains("hidden-key"));
    }

    #[test]
    fn misspelt_key_names_the_key_and_the_fix() {
        let err = error_of(&format!("poll:\n  intervall: 5m\n{MINIMAL}"));
        assert!(err.problem.contains("intervall"), "{err}");
        assert!(err.fix.contains("spelling"), "{err}");
    }

    #[test]
    fn duration_without_unit_is_rejected_with_the_fix() {
        let err = error_of(&format!("poll:\n  interval: 300\n{MINIMAL}"));
        assert_eq!(err.key, "poll.interval");
        assert!(err.fix.contains("300s"), "{err}");
    }

    #[test]
    fn empty_instance_list_is_rejected() {
        assert_eq!(error_of("instances: []\n").key, "instances");
        assert_eq!(error_of("poll:\n  interval: 5m\n").key, "instances");
    }

    #[test]
    fn duplicated_instance_is_rejected() {
        let err = error_of(&format!(
            "{MINIMAL}  - instance_id: crs-5a4py64p\n    region: ap-beijing\n"
        ));
        assert_eq!(err.key, "instances[1].instance_id");
        assert!(err.problem.contains("twice"));
    }

    #[test]
    fn absurd_values_are_rejected_before_they_can_hurt() {
        let err = error_of(&format!("api:\n  rate_limit: 4294967295\n{MINIMAL}"));
        assert_eq!(err.key, "api.rate_limit");
        let err = error_of(&format!("poll:\n  interval: 300000000000y\n{MINIMAL}"));
        assert_eq!(err.key, "poll.interval");
        let err = error_of(&format!("defaults:\n  max_backup_age: 0s\n{MINIMAL}"));
        assert_eq!(err.key, "defaults.max_backup_age");
        let err = error_of(&format!(
            "credentials:\n  secret_id: ''\n  secret_key: ''\n{MINIMAL}"
        ));
        assert_eq!(err.key, "credentials");
    }

    #[test]
    fn zero_rate_limit_is_rejected() {
        let err = error_of(&format!("api:\n  rate_limit: 0\n{MINIMAL}"));
        assert_eq!(err.key, "api.rate_limit");
    }

    #[test]
    fn malformed_instance_id_and_region_are_rejected() {
        let err = error_of("instances:\n  - instance_id: redis-1\n    region: ap-guangzhou\n");
        assert_eq!(err.key, "instances[0].instance_id");
        let err = error_of("instances:\n  - instance_id: crs-5a4py64p\n    region: Guangzhou\n");
        assert_eq!(err.key, "instances[0].region");
    }

    #[test]
    fn a_region_that_does_not_exist_is_rejected_with_the_closest_one() {
        let err = error_of("instances:\n  - instance_id: crs-5a4py64p\n    region: ap-guangzou\n");
        assert_eq!(err.key, "instances[0].region");
        assert!(err.fix.contains("did you mean ap-guangzhou?"), "{err}");
        let yaml = "api:\n  endpoints:\n    ap-newcity: https://redis.ap-newcity.example\n\
                    instances:\n  - instance_id: crs-5a4py64p\n    region: ap-newcity\n";
        assert!(
            parse(yaml).is_ok(),
            "an explicit endpoint admits a new region"
        );
    }

    #[test]
    fn reserved_and_invalid_labels_are_rejected() {
        let err = error_of(&format!("{MINIMAL}    labels: {{region: x}}\n"));
        assert_eq!(err.key, "instances[0].labels.region");
        let err = error_of(&format!("{MINIMAL}    labels: {{\"my-team\": x}}\n"));
        assert_eq!(err.key, "instances[0].labels.my-team");
    }

    #[test]
    fn bad_timezone_and_endpoint_are_rejected() {
        assert_eq!(
            error_of(&format!("api:\n  timezone: Beijing\n{MINIMAL}")).key,
            "api.timezone"
        );
        assert_eq!(
            error_of(&format!("api:\n  endpoint: ftp://x\n{MINIMAL}")).key,
            "api.endpoint"
        );
    }

    #[test]
    fn missing_secret_key_file_is_rejected() {
        let yaml = format!(
            "credentials:\n  secret_id: AKIDx\n  secret_key_file: /nonexistent/key\n{MINIMAL}"
        );
        assert_eq!(error_of(&yaml).key, "credentials.secret_key_file");
    }

    #[test]
    fn missing_file_says_how_to_pass_one() {
        let err = load(Path::new("/nonexistent/config.yaml")).unwrap_err();
        assert!(err.fix.contains("--config.file"));
    }

    #[test]
    fn offsets_parse_in_the_usual_spellings() {
        assert_eq!(utc_offset("+08:00"), Some(time::macros::offset!(+8)));
        assert_eq!(utc_offset("-05:30"), Some(time::macros::offset!(-5:30)));
        assert_eq!(utc_offset("UTC"), Some(UtcOffset::UTC));
        assert_eq!(utc_offset("8"), None);
        assert_eq!(utc_offset("+25:00"), None);
        assert_eq!(utc_offset("++8"), None);
        assert_eq!(utc_offset("+08:-0"), None);
    }
}
