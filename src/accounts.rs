//! Accounts at run time: one API client per account, because each key has
//! budgets of its own; the renewal of temporary credentials; and discovery,
//! which lists each account's instances through `DescribeInstances` and
//! merges them with the instances listed by hand.
//!
//! The instances to poll are worked out here and handed to the snapshot:
//! explicit and discovered ones, each kept only when its account's include
//! and exclude patterns and this replica's shard admit it. A failed listing
//! keeps what the last good one found, so that an API hiccup does not drop
//! series; a config reload replaces everything at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::answer::ListedInstance;
use crate::client::{ApiClient, CredentialCell};
use crate::config::{Account, Config, Discovery, Filter, Instance};
use crate::credentials::{self, Credential, Resolved};
use crate::metrics::ApiMetrics;
use crate::scheduler;
use crate::shard::Shard;
use crate::snapshot::SnapshotStore;
use crate::temporary::{self, TemporarySource};

/// Every account's client, and the instances they watch.
pub struct Fleet {
    store: Arc<SnapshotStore>,
    api_metrics: ApiMetrics,
    shutdown: watch::Receiver<bool>,
    state: Mutex<FleetState>,
}

#[derive(Default)]
struct FleetState {
    clients: BTreeMap<String, Arc<ApiClient>>,
    /// Renewal and discovery tasks of the configuration in force.
    tasks: Vec<JoinHandle<()>>,
    explicit: Vec<Instance>,
    /// What the last good listing of each account and region found.
    discovered: BTreeMap<(String, String), Vec<Instance>>,
    filters: BTreeMap<String, Filter>,
    shard: Shard,
}

/// One account's credential, ready to use, and what renews it.
struct Obtained {
    credential: Credential,
    renewal: Option<(TemporarySource, i64)>,
}

impl Fleet {
    pub fn new(
        store: Arc<SnapshotStore>,
        api_metrics: ApiMetrics,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Fleet {
            store,
            api_metrics,
            shutdown,
            state: Mutex::new(FleetState::default()),
        }
    }

    /// The client of `account`, while the account is configured.
    pub fn client(&self, account: &str) -> Option<Arc<ApiClient>> {
        self.lock().clients.get(account).cloned()
    }

    /// Puts `config` in force: credentials first (so that a failure changes
    /// nothing), then clients, tasks and instances. Returns the instances
    /// that were not watched before, which the caller polls at once.
    pub async fn configure(
        self: &Arc<Self>,
        config: &Config,
        shard: Shard,
    ) -> Result<Vec<Instance>, String> {
        let mut obtained = BTreeMap::new();
        for account in &config.accounts {
            obtained.insert(account.name.clone(), obtain(account).await?);
        }

        let mut state = self.lock();
        state.tasks.drain(..).for_each(|task| task.abort());
        let mut clients = BTreeMap::new();
        for account in &config.accounts {
            let Obtained {
                credential,
                renewal,
            } = obtained.remove(&account.name).expect("obtained above");
            let client = match state.clients.remove(&account.name) {
                Some(client) => {
                    client.update(config.api.clone(), credential);
                    client
                }
                None => {
                    let cell = Arc::new(CredentialCell::new(credential));
                    Arc::new(ApiClient::new(
                        config.api.clone(),
                        cell,
                        self.api_metrics.clone(),
                    ))
                }
            };
            if let Some((source, expires_at)) = renewal {
                let cell = client.credentials();
                let http = temporary::http_client();
                let renewing =
                    temporary::keep_fresh(source, http, cell, expires_at, self.shutdown.clone());
                state.tasks.push(tokio::spawn(renewing));
            }
            clients.insert(account.name.clone(), client);
        }
        state.clients = clients;
        state.explicit = config.instances.clone();
        state.filters = config
            .accounts
            .iter()
            .map(|a| (a.name.clone(), a.filter.clone()))
            .collect();
        let FleetState {
            discovered,
            filters,
            ..
        } = &mut *state;
        discovered.retain(|(account, _), _| filters.contains_key(account));
        state.shard = shard;
        for account in config.accounts.iter().filter(|a| a.discovery.is_some()) {
            let discovering =
                Arc::clone(self).discover(account.clone(), config.default_max_backup_age);
            state.tasks.push(tokio::spawn(discovering));
        }
        Ok(self.publish(&state))
    }

    /// Lists the account's instances every discovery interval.
    async fn discover(self: Arc<Self>, account: Account, max_backup_age: std::time::Duration) {
        let discovery = account
            .discovery
            .clone()
            .expect("only accounts with discovery get here");
        let mut shutdown = self.shutdown.clone();
        loop {
            for region in &discovery.regions {
                self.list_region(&account.name, region, &discovery, max_backup_age)
                    .await;
            }
            let added = {
                let state = self.lock();
                self.publish(&state)
            };
            self.poll_now(added);
            tokio::select! {
                _ = tokio::time::sleep(discovery.interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn list_region(
        &self,
        account: &str,
        region: &str,
        discovery: &Discovery,
        max_backup_age: std::time::Duration,
    ) {
        let Some(client) = self.client(account) else {
            return;
        };
        match client.list_instances(region, discovery).await {
            Ok(listed) => {
                let instances: Vec<Instance> = listed
                    .into_iter()
                    .map(|l| to_instance(l, account, region, discovery, max_backup_age))
                    .collect();
                tracing::debug!(account, region, found = instances.len(), "instances listed");
                self.store
                    .record_discovery(account, region, Some(instances.len()));
                self.lock()
                    .discovered
                    .insert((account.to_string(), region.to_string()), instances);
            }
            Err(err) => {
                let message = "listing instances failed; the last list stays";
                tracing::warn!(account, region, cause = %err, "{message}");
                self.store.record_discovery(account, region, None);
            }
        }
    }

    /// Hands the merged instance list to the snapshot; returns the new ones.
    fn publish(&self, state: &FleetState) -> Vec<Instance> {
        let mut merged: BTreeMap<String, Instance> = BTreeMap::new();
        let discovered = state.discovered.values().flatten();
        // Listed by hand wins over discovered: its name, labels and age count.
        for instance in discovered.chain(state.explicit.iter()) {
            let is_admitted = state.shard.owns(&instance.id)
                && state
                    .filters
                    .get(&instance.account)
                    .is_some_and(|f| f.admits(instance));
            if is_admitted {
                merged.insert(instance.id.clone(), instance.clone());
            }
        }
        let before: BTreeSet<String> = self.store.instances().into_iter().map(|i| i.id).collect();
        let instances: Vec<Instance> = merged.into_values().collect();
        if instances.is_empty() {
            let message = "no instance to watch: check the instance list, discovery's \
                           filters, the include and exclude patterns, and the shard";
            tracing::warn!("{message}");
        }
        self.store.set_instances(&instances);
        let added: Vec<Instance> = instances
            .into_iter()
            .filter(|i| !before.contains(&i.id))
            .collect();
        for instance in &added {
            let (instance_id, account) = (&instance.id, &instance.account);
            tracing::info!(%instance_id, %account, "instance added");
        }
        added
    }

    /// Polls `instances` now rather than at the next cycle.
    pub fn poll_now(self: &Arc<Self>, instances: Vec<Instance>) {
        for instance in instances {
            let (fleet, store) = (Arc::clone(self), Arc::clone(&self.store));
            tokio::spawn(async move {
                if let Some(client) = fleet.client(&instance.account) {
                    scheduler::poll(&client, &store, &instance).await;
                }
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FleetState> {
        self.state.lock().expect("no code panics holding this lock")
    }
}

/// Finds an account's credential, fetching temporary ones.
async fn obtain(account: &Account) -> Result<Obtained, String> {
    let env = |key: &str| std::env::var(key).ok();
    let resolved = credentials::resolve(account.credentials.as_ref(), &env)
        .map_err(|e| format!("account {}: {e}", account.name))?;
    match resolved {
        Resolved::Keys(credential, source) => {
            let (name, id) = (&account.name, &credential.secret_id);
            let credentials = source.to_string();
            tracing::info!(account = %name, %credentials, secret_id = %id, "credentials in use");
            Ok(Obtained {
                credential,
                renewal: None,
            })
        }
        Resolved::Temporary(source) => {
            let issued = temporary::fetch(&source, &temporary::http_client())
                .await
                .map_err(|cause| {
                    format!(
                    "account {}: cannot get credentials from the {source}: {cause}; fix: check \
                     that the endpoint is reachable and the role exists, or configure keys",
                    account.name
                )
                })?;
            let expires_at = issued.expires_at;
            let name = &account.name;
            tracing::info!(account = %name, %source, expires_at, "temporary credentials obtained");
            Ok(Obtained {
                credential: issued.credential,
                renewal: Some((source, expires_at)),
            })
        }
    }
}

/// A listed instance as the scheduler polls it.
fn to_instance(
    listed: ListedInstance,
    account: &str,
    region: &str,
    discovery: &Discovery,
    max_backup_age: std::time::Duration,
) -> Instance {
    let labels = listed
        .tags
        .iter()
        .filter(|(key, _)| discovery.tag_labels.contains(key))
        .map(|(key, value)| (key.clone(), value.chars().take(128).collect()))
        .collect();
    Instance {
        id: listed.id,
        account: account.to_string(),
        region: listed
            .region
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| region.to_string()),
        name: listed.name.filter(|n| !n.is_empty()),
        labels,
        max_backup_age,
    }
}
