//! The scheduler: poll cycles over every configured instance.
//!
//! The first cycle polls every instance at once and lets the rate limiter
//! pace them, so the exporter is ready as soon as the budget allows. Later
//! cycles spread the polls evenly over the interval, so the API sees a
//! steady trickle instead of a burst every few minutes. Each poll runs in
//! its own task and cycles start on time whatever the polls do: a slow or
//! hanging instance delays no other, and is not polled again while its
//! previous poll still runs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::accounts::Fleet;
use crate::client::ApiClient;
use crate::config::Instance;
use crate::snapshot::{SnapshotStore, Transition};

/// How long polls already under way may finish after shutdown was asked.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Runs poll cycles until `shutdown` turns true.
pub struct Scheduler {
    /// The client of each account.
    pub fleet: Arc<Fleet>,
    pub store: Arc<SnapshotStore>,
    /// The poll interval; a reload may change it.
    pub interval: watch::Receiver<Duration>,
}

impl Scheduler {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let _alive = AliveFlag::raise(Arc::clone(&self.store));
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut polls = JoinSet::new();
        let mut previous: Option<Arc<CycleProgress>> = None;
        for cycle in 0u64.. {
            let started = Instant::now();
            let interval = *self.interval.borrow();
            if previous.as_ref().is_some_and(|p| !p.is_done()) {
                tracing::warn!(?interval, "poll cycle took longer than poll.interval");
            }
            let progress = self.start_cycle(cycle, interval, &in_flight, &mut polls, &shutdown);
            previous = Some(progress);

            // Polls run on their own; the next cycle starts on time whatever
            // they do, and reaping finished ones keeps the set small.
            let next = started.checked_add(interval).unwrap_or(started);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    Some(_) = polls.join_next(), if !polls.is_empty() => {}
                    _ = shutdown.changed() => {
                        finish_within_grace(polls).await;
                        return;
                    }
                }
            }
        }
    }

    /// Spawns one poll per instance, spread over the interval after the
    /// first cycle; the last one to finish records the cycle.
    fn start_cycle(
        &self,
        cycle: u64,
        interval: Duration,
        in_flight: &Arc<Mutex<HashSet<String>>>,
        polls: &mut JoinSet<()>,
        shutdown: &watch::Receiver<bool>,
    ) -> Arc<CycleProgress> {
        let instances = self.store.instances();
        let progress = Arc::new(CycleProgress::new(instances.len(), Arc::clone(&self.store)));
        let spacing = if cycle == 0 || instances.is_empty() {
            Duration::ZERO
        } else {
            interval / instances.len() as u32
        };
        for (index, instance) in instances.into_iter().enumerate() {
            let delay = spacing * index as u32;
            let (fleet, store) = (Arc::clone(&self.fleet), Arc::clone(&self.store));
            let (in_flight, progress) = (Arc::clone(in_flight), Arc::clone(&progress));
            let mut stop = shutdown.clone();
            polls.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
                let lock = || in_flight.lock().expect("no code panics holding this lock");
                let is_free = lock().insert(instance.id.clone());
                // An account removed by a reload meanwhile has no client.
                match fleet.client(&instance.account) {
                    Some(client) if is_free => {
                        poll(&client, &store, &instance).await;
                        lock().remove(&instance.id);
                    }
                    _ if !is_free => {
                        let instance_id = &instance.id;
                        tracing::debug!(%instance_id, "the previous poll still runs; skipped");
                    }
                    _ => {}
                }
                progress.finish_one();
            });
        }
        progress
    }
}

/// Counts the polls of one cycle still to finish, and records the cycle
/// when the last one does.
struct CycleProgress {
    remaining: AtomicUsize,
    started: Instant,
    store: Arc<SnapshotStore>,
}

impl CycleProgress {
    fn new(polls: usize, store: Arc<SnapshotStore>) -> Self {
        let progress = CycleProgress {
            remaining: AtomicUsize::new(polls),
            started: Instant::now(),
            store,
        };
        if polls == 0 {
            progress.store.record_cycle(Duration::ZERO);
        }
        progress
    }

    fn finish_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let took = self.started.elapsed();
            self.store.record_cycle(took);
            tracing::debug!(?took, "poll cycle finished");
        }
    }

    fn is_done(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }
}

/// Marks the scheduler alive for `/-/healthy` while it exists, so that the
/// endpoint turns unhealthy however the scheduler ends, a panic included.
struct AliveFlag(Arc<SnapshotStore>);

impl AliveFlag {
    fn raise(store: Arc<SnapshotStore>) -> Self {
        store.set_scheduler_alive(true);
        AliveFlag(store)
    }
}

impl Drop for AliveFlag {
    fn drop(&mut self) {
        self.0.set_scheduler_alive(false);
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
