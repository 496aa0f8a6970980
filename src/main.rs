//! The `crs-backup-exporter` binary: reads the flags and the configuration,
//! starts logging, runs the exporter until SIGTERM or SIGINT, and exits
//! non-zero with a message that says what to fix when it cannot start.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::sync::watch;

use crs_backup_exporter::app::{self, ConfigSource, WebOptions};
use crs_backup_exporter::cli::{Cli, Command};
use crs_backup_exporter::shard::Shard;
use crs_backup_exporter::{config, credentials, demo, logging, simulator, webconfig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log.level, cli.log.format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let outcome = runtime.block_on(dispatch(cli));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("crs-backup-exporter: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), String> {
    let web = WebOptions {
        listen_address: cli.web.listen_address.clone(),
        telemetry_path: cli.web.telemetry_path.clone(),
        config_file: cli.web.web_config_file.clone(),
    };
    match cli.command {
        Some(Command::Healthcheck { url, insecure }) => healthcheck(&url, insecure).await,
        Some(Command::Demo { poll_interval }) => run_demo(web, poll_interval).await,
        Some(Command::Simulator {
            address,
            instances,
            regions,
            backups,
            rate_limit,
            config_out,
            poll_interval,
        }) => {
            let scenario = simulator::Scenario::generated(
                instances,
                regions,
                backups,
                rate_limit,
                time::OffsetDateTime::now_utc().unix_timestamp(),
            );
            run_simulator(scenario, &address, config_out, &poll_interval).await
        }
        None if cli.config_check => check_config(&cli),
        None => run_exporter(&cli, web).await,
    }
}

fn check_config(cli: &Cli) -> Result<(), String> {
    let config = config::load(&cli.config_file).map_err(|e| e.to_string())?;
    let env = |key: &str| std::env::var(key).ok();
    for account in &config.accounts {
        credentials::resolve(account.credentials.as_ref(), &env)
            .map_err(|e| format!("account {}: {e}", account.name))?;
    }
    if let Some(web_config) = &cli.web.web_config_file {
        webconfig::load(web_config).map_err(|e| e.to_string())?;
    }
    println!("ok");
    Ok(())
}

async fn run_exporter(cli: &Cli, web: WebOptions) -> Result<(), String> {
    let hostname = std::env::var("HOSTNAME").ok();
    let shard = Shard::from_flags(cli.shard_index, cli.shard_count, hostname.as_deref())?;
    let config = config::load(&cli.config_file).map_err(|e| e.to_string())?;
    let all = config.instances.len();
    let config_rate = config.api.rate_limit;
    let config = shard.apply(config);
    if shard.count > config_rate {
        tracing::warn!(
            count = shard.count,
            rate_limit = config_rate,
            "more replicas than requests per second: each replica keeps 1 request a second, \
             so together they exceed api.rate_limit; use fewer replicas or more keys"
        );
    }
    if shard.count > 1 {
        tracing::info!(
            index = shard.index,
            count = shard.count,
            instances = config.instances.len(),
            of = all,
            rate_limit = config.api.rate_limit,
            "this replica polls its share of the instances with its share of the budget"
        );
    }
    tracing::info!(
        file = %cli.config_file.display(),
        accounts = config.accounts.len(),
        listed_instances = config.instances.len(),
        "config loaded"
    );
    let source = ConfigSource {
        file: cli.config_file.clone(),
        shard,
    };
    app::run(config, Some(source), web, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn run_demo(web: WebOptions, interval: Duration) -> Result<(), String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let sim = simulator::start(demo::scenario(now), "127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot start the API simulator: {e}"))?;
    tracing::info!(url = %sim.url(), "API simulator started for the demo");
    let config = demo::config(&sim.url(), interval);
    app::run(config, None, web, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn run_simulator(
    scenario: simulator::Scenario,
    address: &str,
    config_out: Option<std::path::PathBuf>,
    poll_interval: &str,
) -> Result<(), String> {
    let rate_limit = scenario.rate_limit;
    let config = |url: &str| scenario.exporter_config(url, rate_limit, poll_interval);
    let sim = simulator::start(scenario.clone(), address)
        .await
        .map_err(|e| format!("cannot start the simulator on {address}: {e}"))?;
    if let Some(path) = &config_out {
        std::fs::write(path, config(&sim.url()))
            .map_err(|e| format!("{}: cannot write the config: {e}", path.display()))?;
    }
    let instances = scenario.instances.len();
    tracing::info!(url = %sim.url(), instances, "API simulator serving");
    let mut stop = shutdown_signal();
    let _ = stop.changed().await;
    Ok(())
}

async fn healthcheck(url: &str, insecure: bool) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .danger_accept_invalid_certs(insecure)
        .build()
        .map_err(|e| format!("cannot start an HTTP client: {e}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    match response.status().as_u16() {
        200 => Ok(()),
        status => Err(format!("{url} answered {status}")),
    }
}

/// A receiver that turns true at the first SIGTERM or SIGINT.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = sender.send(true);
    });
    receiver
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    // Installing a handler fails only when the runtime has no signal
    // driver, which `enable_all` rules out.
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
