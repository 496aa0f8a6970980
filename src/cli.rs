//! The command line, in the style of the Prometheus exporters.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::logging::{LogFormat, LogLevel};

/// The default listen address. The Prometheus wiki's port list has filled
/// the whole 9100-9999 range; 9887 is a port of that range that no widely
/// used exporter takes.
pub const DEFAULT_LISTEN_ADDRESS: &str = ":9887";

const VERSION_TEXT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("CRS_EXPORTER_REVISION"),
    ")"
);

/// Exports the backups of Tencent Cloud Redis (CRS) instances to Prometheus.
#[derive(Debug, Parser)]
#[command(name = "crs-backup-exporter", version = VERSION_TEXT, about)]
pub struct Cli {
    /// Path of the YAML configuration file.
    #[arg(
        long = "config.file",
        value_name = "PATH",
        default_value = "config.yaml"
    )]
    pub config_file: PathBuf,

    /// Load and check the configuration and the credentials, print what is
    /// wrong or "ok", and exit.
    #[arg(long = "config.check")]
    pub config_check: bool,

    /// This replica's index among --shard.count replicas; taken from the
    /// ordinal at the end of the host name (a StatefulSet pod) when not set.
    #[arg(long = "shard.index", value_name = "N")]
    pub shard_index: Option<u32>,

    /// How many replicas split the instances (and the request budget).
    #[arg(long = "shard.count", value_name = "N", default_value_t = 1)]
    pub shard_count: u32,

    #[command(flatten)]
    pub web: WebFlags,

    #[command(flatten)]
    pub log: LogFlags,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where and how metrics are served.
#[derive(Debug, Clone, Args)]
pub struct WebFlags {
    /// Address to listen on; `:PORT` listens on every interface.
    #[arg(
        long = "web.listen-address",
        value_name = "ADDRESS",
        default_value = DEFAULT_LISTEN_ADDRESS,
        global = true
    )]
    pub listen_address: String,

    /// File with TLS and basic auth settings, in the format of the
    /// Prometheus exporter toolkit; re-read when it changes.
    #[arg(long = "web.config.file", value_name = "PATH", global = true)]
    pub web_config_file: Option<PathBuf>,

    /// Path under which metrics are served.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics",
        global = true,
        value_parser = telemetry_path
    )]
    pub telemetry_path: String,
}

/// How the exporter logs.
#[derive(Debug, Clone, Args)]
pub struct LogFlags {
    /// Only log lines of this level and above.
    #[arg(long = "log.level", value_enum, default_value = "info", global = true)]
    pub level: LogLevel,

    /// Format of the log lines on standard error.
    #[arg(
        long = "log.format",
        value_enum,
        default_value = "logfmt",
        global = true
    )]
    pub format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run against a built-in simulator of the API: no cloud account needed.
    Demo {
        /// How often each simulated instance is polled.
        #[arg(
            long = "poll.interval",
            value_name = "DURATION",
            default_value = "30s",
            value_parser = demo_interval
        )]
        poll_interval: std::time::Duration,
    },
    /// Serve only the API simulator, with generated instances, and write an
    /// exporter config that points at it: for load tests and benchmarks.
    Simulator {
        /// Address the simulator listens on. (Not `listen_address`: that
        /// name would hide the global `--web.listen-address`.)
        #[arg(long = "simulator.listen-address", default_value = "127.0.0.1:9888")]
        address: String,
        /// How many instances to generate.
        #[arg(long = "simulator.instances", default_value_t = 100)]
        instances: usize,
        /// Over how many regions they are spread.
        #[arg(long = "simulator.regions", default_value_t = 4)]
        regions: usize,
        /// Backups per instance (100 fit in one page).
        #[arg(long = "simulator.backups", default_value_t = 10)]
        backups: usize,
        /// The simulator's own limit, requests per second per region.
        #[arg(long = "simulator.rate-limit", default_value_t = 20)]
        rate_limit: u32,
        /// Where to write the exporter config for these instances.
        #[arg(long = "simulator.config-out", value_name = "PATH")]
        config_out: Option<PathBuf>,
        /// The poll interval written into that config.
        #[arg(long = "simulator.poll-interval", default_value = "1m")]
        poll_interval: String,
    },
    /// Ask a running exporter whether it is healthy; exit 0 if it answers
    /// 200. For container health checks in images without a shell.
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:9887/-/healthy")]
        url: String,
        /// Accept any certificate: for checking an exporter with TLS on
        /// 127.0.0.1, whose certificate names another host.
        #[arg(long = "tls.insecure-skip-verify")]
        insecure: bool,
    },
}

fn telemetry_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("{text:?} must start with /"));
    }
    if matches!(text, "/" | "/-/healthy" | "/-/ready" | "/-/reload") {
        return Err(format!(
            "{text} is taken by another page; choose another path"
        ));
    }
    Ok(text.to_string())
}

fn demo_interval(text: &str) -> Result<std::time::Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < std::time::Duration::from_secs(1)
        || interval > std::time::Duration::from_secs(86_400)
    {
        return Err(format!("{text} is not between 1s and 24h"));
    }
    Ok(interval)
}
