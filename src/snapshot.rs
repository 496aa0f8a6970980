//! The snapshot: what the latest polls found, per instance, and how the
//! poll cycles went. The scheduler writes it; scrapes only read it, so a
//! scrape never waits for the API.
//!
//! A failed poll keeps the last good figures of its instance and marks the
//! poll as failed: "the backup is stale" and "the exporter could not look"
//! stay two different things.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use crate::backup::BackupSummary;
use crate::config::Instance;
use crate::failure::FailureReason;

/// What is known of one instance.
#[derive(Debug, Clone)]
pub struct InstanceState {
    pub instance: Instance,
    /// The figures of the last successful poll.
    pub summary: Option<BackupSummary>,
    /// Whether the last poll worked; `None` before the first poll ended.
    pub is_last_poll_ok: Option<bool>,
    /// Unix seconds of the last successful poll.
    pub last_success_at: Option<f64>,
    /// Why the last poll failed, while it is failing.
    pub failing_since: Option<FailureReason>,
    /// Failed polls by reason, since the instance was configured.
    pub errors: [u64; FailureReason::ALL.len()],
    /// Changes with every change of this state, so that its rendering can
    /// be kept until then.
    pub generation: u64,
}

impl InstanceState {
    fn new(instance: Instance) -> Self {
        InstanceState {
            instance,
            summary: None,
            is_last_poll_ok: None,
            last_success_at: None,
            failing_since: None,
            errors: [0; FailureReason::ALL.len()],
            generation: 0,
        }
    }
}

/// How the poll cycles went.
#[derive(Debug, Clone, Copy, Default)]
pub struct CycleStats {
    pub completed: u64,
    pub last_duration: Option<Duration>,
}

/// How the last reload of the configuration went.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReloadStats {
    pub is_last_ok: bool,
    /// Unix seconds of the last successful load, the start-up one included.
    pub last_success_at: f64,
}

/// The shared snapshot.
#[derive(Debug, Default)]
pub struct SnapshotStore {
    instances: RwLock<BTreeMap<String, InstanceState>>,
    cycles: RwLock<CycleStats>,
    reload: RwLock<ReloadStats>,
    /// Set once the first cycle has finished: `/-/ready` answers 200 then.
    is_ready: AtomicBool,
    /// Set while the scheduler runs: `/-/healthy` answers 200 then.
    is_scheduler_alive: AtomicBool,
    /// Counts changes, so that scrapes can reuse a rendering of the same data.
    version: AtomicU64,
    /// The poll interval, to tell how much budget the polls need.
    interval: RwLock<Duration>,
    /// Per account and region: instances the last listing found, or `None`
    /// when it failed.
    discovery: RwLock<BTreeMap<(String, String), Option<usize>>>,
}

/// What a poll outcome changed, so that the caller logs only changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Same state as before.
    Unchanged,
    /// The first failure, or a failure for a new reason.
    StartedFailing,
    /// The first success after failures.
    Recovered,
}

impl SnapshotStore {
    pub fn new(instances: &[Instance]) -> Self {
        let store = SnapshotStore::default();
        store.set_instances(instances);
        store
    }

    /// Replaces the instance list; kept instances keep their state, removed
    /// ones disappear with their series.
    pub fn set_instances(&self, instances: &[Instance]) {
        let mut map = self
            .instances
            .write()
            .expect("no code panics holding this lock");
        self.changed();
        let mut next = BTreeMap::new();
        for instance in instances {
            let state = match map.remove(&instance.id) {
                Some(mut old) => {
                    if old.instance != *instance {
                        old.instance = instance.clone();
                        old.generation += 1;
                    }
                    old
                }
                None => InstanceState::new(instance.clone()),
            };
            next.insert(instance.id.clone(), state);
        }
        *map = next;
    }

    /// The configured instances, in ID order.
    pub fn instances(&self) -> Vec<Instance> {
        let map = self
            .instances
            .read()
            .expect("no code panics holding this lock");
        map.values().map(|s| s.instance.clone()).collect()
    }

    pub fn record_success(&self, id: &str, summary: BackupSummary, at: f64) -> Transition {
        self.update(id, |state| {
            let was_failing = state.failing_since.take().is_some();
            state.summary = Some(summary);
            state.is_last_poll_ok = Some(true);
            state.last_success_at = Some(at);
            if was_failing {
                Transition::Recovered
            } else {
                Transition::Unchanged
            }
        })
    }

    pub fn record_failure(&self, id: &str, reason: FailureReason) -> Transition {
        self.update(id, |state| {
            state.is_last_poll_ok = Some(false);
            state.errors[reason.index()] += 1;
            let previous = state.failing_since.replace(reason);
            if previous == Some(reason) {
                Transition::Unchanged
            } else {
                Transition::StartedFailing
            }
        })
    }

    fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut InstanceState) -> Transition,
    ) -> Transition {
        let mut map = self
            .instances
            .write()
            .expect("no code panics holding this lock");
        self.changed();
        // A poll of an instance removed by a reload while it ran is dropped.
        map.get_mut(id).map_or(Transition::Unchanged, |state| {
            state.generation += 1;
            change(state)
        })
    }

    /// Runs `read` over every instance's state, in ID order, under one lock.
    pub fn with_instances<T>(&self, read: impl FnOnce(&BTreeMap<String, InstanceState>) -> T) -> T {
        read(
            &self
                .instances
                .read()
                .expect("no code panics holding this lock"),
        )
    }

    pub fn record_cycle(&self, duration: Duration) {
        let mut cycles = self
            .cycles
            .write()
            .expect("no code panics holding this lock");
        self.changed();
        cycles.completed += 1;
        cycles.last_duration = Some(duration);
        self.is_ready.store(true, Ordering::Release);
    }

    /// Records a load of the configuration at `at` (Unix seconds).
    pub fn record_reload(&self, is_ok: bool, at: f64) {
        let mut reload = self
            .reload
            .write()
            .expect("no code panics holding this lock");
        self.changed();
        reload.is_last_ok = is_ok;
        if is_ok {
            reload.last_success_at = at;
        }
    }

    pub fn reload(&self) -> ReloadStats {
        *self
            .reload
            .read()
            .expect("no code panics holding this lock")
    }

    pub fn cycles(&self) -> CycleStats {
        *self
            .cycles
            .read()
            .expect("no code panics holding this lock")
    }

    /// Records a listing of instances; `found` is `None` when it failed.
    pub fn record_discovery(&self, account: &str, region: &str, found: Option<usize>) {
        let key = (account.to_string(), region.to_string());
        self.discovery
            .write()
            .expect("no code panics holding this lock")
            .insert(key, found);
        self.changed();
    }

    pub fn discovery(&self) -> BTreeMap<(String, String), Option<usize>> {
        self.discovery
            .read()
            .expect("no code panics holding this lock")
            .clone()
    }

    pub fn set_interval(&self, interval: Duration) {
        *self
            .interval
            .write()
            .expect("no code panics holding this lock") = interval;
        self.changed();
    }

    pub fn interval(&self) -> Duration {
        *self
            .interval
            .read()
            .expect("no code panics holding this lock")
    }

    /// A number that changes whenever anything in the snapshot does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    pub fn is_ready(&self) -> bool {
        self.is_ready.load(Ordering::Acquire)
    }

    pub fn set_scheduler_alive(&self, is_alive: bool) {
        self.is_scheduler_alive.store(is_alive, Ordering::Release);
    }

    pub fn is_scheduler_alive(&self) -> bool {
        self.is_scheduler_alive.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> Instance {
        Instance {
            id: id.into(),
            account: "default".into(),
            region: "ap-guangzhou".into(),
            name: None,
            labels: BTreeMap::new(),
            max_backup_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn failed_poll_keeps_the_last_good_figures() {
        let store = SnapshotStore::new(&[instance("crs-aaaaaaaa")]);
        let mut summary = BackupSummary::default();
        summary.locked = 3;
        store.record_success("crs-aaaaaaaa", summary.clone(), 100.0);
        assert_eq!(
            store.record_failure("crs-aaaaaaaa", FailureReason::Throttled),
            Transition::StartedFailing
        );
        assert_eq!(
            store.record_failure("crs-aaaaaaaa", FailureReason::Throttled),
            Transition::Unchanged
        );
        store.with_instances(|map| {
            let state = &map["crs-aaaaaaaa"];
            assert_eq!(state.summary.as_ref(), Some(&summary));
            assert_eq!(state.is_last_poll_ok, Some(false));
            assert_eq!(state.last_success_at, Some(100.0));
            assert_eq!(state.errors[FailureReason::Throttled.index()], 2);
        });
        assert_eq!(
            store.record_success("crs-aaaaaaaa", summary, 200.0),
            Transition::Recovered
        );
    }

    #[test]
    fn removed_instances_disappear_and_kept_ones_keep_their_state() {
        let store = SnapshotStore::new(&[instance("crs-aaaaaaaa"), instance("crs-bbbbbbbb")]);
        store.record_success("crs-aaaaaaaa", BackupSummary::default(), 1.0);
        store.set_instances(&[instance("crs-aaaaaaaa"), instance("crs-cccccccc")]);
        let ids: Vec<_> = store.instances().into_iter().map(|i| i.id).collect();
        assert_eq!(ids, ["crs-aaaaaaaa", "crs-cccccccc"]);
        store.with_instances(|map| assert_eq!(map["crs-aaaaaaaa"].last_success_at, Some(1.0)));
        assert_eq!(
            store.record_failure("crs-bbbbbbbb", FailureReason::Auth),
            Transition::Unchanged
        );
    }
}
