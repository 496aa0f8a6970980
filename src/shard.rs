//! Sharding: several replicas split the instances between them by a stable
//! hash of the instance ID, and split the request budget too, since replicas
//! that share an API key share its per-second limit.
//!
//! The hash is the first eight bytes of the SHA-256 of the ID, so every
//! replica, of any version on any platform, agrees on who polls what.

use sha2::{Digest, Sha256};

use crate::config::Config;

/// This replica's place among `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// Builds the shard from the flags; without an index, the ordinal at the
    /// end of `hostname` (`exporter-2` in a StatefulSet) is used.
    pub fn from_flags(
        index: Option<u32>,
        count: u32,
        hostname: Option<&str>,
    ) -> Result<Shard, String> {
        if count == 0 {
            return Err("--shard.count is 0; fix: use 1 or more".into());
        }
        let index = match index {
            Some(index) => index,
            None if count == 1 => 0,
            None => ordinal(hostname.unwrap_or("")).ok_or_else(|| {
                "--shard.count is set but not --shard.index, and the host name ends in no \
                 ordinal; fix: pass --shard.index, or run as a StatefulSet"
                    .to_string()
            })?,
        };
        if index >= count {
            return Err(format!(
                "shard index {index} is not below --shard.count {count}; fix: use an index \
                 from 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    pub fn owns(&self, instance_id: &str) -> bool {
        self.count <= 1 || bucket(instance_id, self.count) == self.index
    }

    /// Keeps this shard's instances and its share of the budget.
    pub fn apply(&self, mut config: Config) -> Config {
        if self.count <= 1 {
            return config;
        }
        config.instances.retain(|i| self.owns(&i.id));
        config.api.rate_limit = (config.api.rate_limit / self.count).max(1);
        config
    }
}

/// Which of `count` shards an instance belongs to.
pub fn bucket(instance_id: &str, count: u32) -> u32 {
    let digest = Sha256::digest(instance_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(count)) as u32
}

/// The number after the last `-` of a host name.
fn ordinal(hostname: &str) -> Option<u32> {
    hostname.rsplit_once('-')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instance_has_exactly_one_shard_and_shards_are_even() {
        let ids: Vec<String> = (0..3000).map(|n| format!("crs-{n:08}")).collect();
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        let mut sizes = [0; 3];
        for id in &ids {
            let owners: Vec<_> = shards.iter().filter(|s| s.owns(id)).collect();
            assert_eq!(owners.len(), 1, "{id}");
            sizes[owners[0].index as usize] += 1;
        }
        assert!(sizes.iter().all(|n| (900..1100).contains(n)), "{sizes:?}");
    }

    #[test]
    fn the_split_is_stable_across_versions() {
        // Computed independently (Python's hashlib): the first eight bytes of
        // SHA-256, big-endian, modulo the count. A change of hash fails here.
        assert_eq!(bucket("crs-00000000", 4), 2);
        assert_eq!(bucket("crs-5a4py64p", 4), 3);
        assert_eq!(bucket("crs-5a4py64p", 7), 4);
        assert_eq!(bucket("crs-demo0001", 7), 6);
    }

    #[test]
    fn the_index_comes_from_the_statefulset_ordinal() {
        assert_eq!(
            Shard::from_flags(None, 3, Some("crs-backup-exporter-2")),
            Ok(Shard { index: 2, count: 3 })
        );
        assert!(Shard::from_flags(None, 3, Some("laptop")).is_err());
        assert!(Shard::from_flags(Some(3), 3, None)
            .unwrap_err()
            .contains("not below"));
        assert_eq!(Shard::from_flags(None, 1, None), Ok(Shard::default()));
    }
}
