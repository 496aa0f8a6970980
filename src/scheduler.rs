//! The scheduler: poll cycles over every configured instance.
//!
//! The first cycle polls every instance at once and lets the rate limiter
//! pace them, so the exporter is ready as soon as the budget allows. Later
//! cycles spread the polls evenly over the interval, so the API sees a
//! steady trickle instead of a burst every few minutes. Each poll runs in
//! its own task: a slow or failing instance delays no other.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::ApiClient;
use crate::config::Instance;
use crate::snapshot::{SnapshotStore, Transition};

/// How long polls already under way may finish after shutdown was asked.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Runs poll cycles until `shutdown` turns true.
pub struct Scheduler {
    pub client: Arc<ApiClient>,
    pub store: Arc<SnapshotStore>,
    /// The poll interval; a reload may change it.
    pub interval: watch::Receiver<Duration>,
}

impl Scheduler {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        self.store.set_scheduler_alive(true);
        let mut cycle = 0u64;
        loop {
            let started = Instant::now();
            let is_finished = self.run_cycle(cycle, &mut shutdown).await;
            if !is_finished {
                break;
            }
            let took = started.elapsed();
            self.store.record_cycle(took);
            tracing::debug!(cycle, ?took, "poll cycle finished");
            let interval = *self.interval.borrow();
            if took > interval {
                tracing::warn!(
                    ?took,
                    ?interval,
                    "poll cycle took longer than poll.interval"
                );
            }
            cycle += 1;
            tokio::select! {
                _ = tokio::time::sleep_until(started + interval) => {}
                _ = shutdown.changed() => break,
            }
        }
        self.store.set_scheduler_alive(false);
    }

    /// Polls every instance once; false when shutdown interrupted the cycle.
    async fn run_cycle(&self, cycle: u64, shutdown: &mut watch::Receiver<bool>) -> bool {
        let instances = self.store.instances();
        let spacing = if cycle == 0 || instances.is_empty() {
            Duration::ZERO
        } else {
            *self.interval.borrow() / instances.len() as u32
        };
        let mut polls = JoinSet::new();
        for (index, instance) in instances.into_iter().enumerate() {
            let delay = spacing * index as u32;
            let (client, store) = (Arc::clone(&self.client), Arc::clone(&self.store));
            let mut stop = shutdown.clone();
            polls.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => poll(&client, &store, &instance).await,
                    _ = stop.changed() => {}
                }
            });
        }
        loop {
            tokio::select! {
                next = polls.join_next() => if next.is_none() { return true },
                _ = shutdown.changed() => {
                    finish_within_grace(polls).await;
                    return false;
                }
            }
        }
    }
}

/// Lets polls under way finish, up to [`SHUTDOWN_GRACE`]; then drops them.
/// Polls only read, so nothing is lost by dropping one.
async fn finish_within_grace(mut polls: JoinSet<()>) {
    let all_done = async { while polls.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, all_done)
        .await
        .is_err()
    {
        tracing::info!("polls still running at shutdown were abandoned");
    }
}

/// Polls one instance and records the outcome; logs only changes of state.
pub async fn poll(client: &ApiClient, store: &SnapshotStore, instance: &Instance) {
    let started = Instant::now();
    match client.poll_backups(instance).await {
        Ok(summary) => {
            let backups = summary.total();
            let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
            if store.record_success(&instance.id, summary, now) == Transition::Recovered {
                let (instance_id, region) = (&instance.id, &instance.region);
                tracing::info!(%instance_id, %region, "poll works again");
            }
            let took = started.elapsed();
            tracing::debug!(instance_id = %instance.id, backups, ?took, "poll finished");
        }
        Err(err) => {
            if store.record_failure(&instance.id, err.reason) == Transition::StartedFailing {
                tracing::error!(
                    instance_id = %instance.id,
                    region = %instance.region,
                    reason = %err.reason,
                    cause = %err.detail,
                    "poll failed; last good figures stay on /metrics"
                );
            } else {
                tracing::debug!(instance_id = %instance.id, cause = %err, "poll failed again");
            }
        }
    }
}
