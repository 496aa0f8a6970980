//! Backups as the exporter counts them: status buckets and the summary of
//! one instance's backup list.
//!
//! The API's status codes are the stable truth; newer SDKs describe some of
//! them differently, so each code gets one name here and anything else lands
//! in `unknown` instead of failing the poll.

use std::collections::HashSet;

/// One backup, with every field the exporter reads made optional: any of
/// them may be missing or `null` in some generation of the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backup {
    pub id: Option<String>,
    /// Start time in Unix seconds, converted with the configured offset.
    pub start_time: Option<i64>,
    pub status: Option<i64>,
    pub is_locked: bool,
    pub size_bytes: Option<u64>,
    /// `BackupType` as the API wrote it; its meaning differs between docs.
    pub backup_type: Option<String>,
}

/// The bucket a status code is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusBucket {
    InProgress,
    Normal,
    RdbConverting,
    RdbConverted,
    Expired,
    Deleted,
    Unknown,
}

impl StatusBucket {
    /// Every bucket, in the order the metrics list them.
    pub const ALL: [StatusBucket; 7] = [
        StatusBucket::InProgress,
        StatusBucket::Normal,
        StatusBucket::RdbConverting,
        StatusBucket::RdbConverted,
        StatusBucket::Expired,
        StatusBucket::Deleted,
        StatusBucket::Unknown,
    ];

    /// Every status code the exporter asks for; the API's filter defaults to
    /// `[2]` when none is sent, which would hide all other backups.
    pub const REQUESTED_CODES: [i64; 6] = [1, 2, 3, 4, -1, -2];

    pub fn from_code(code: Option<i64>) -> Self {
        match code {
            Some(1) => StatusBucket::InProgress,
            Some(2) => StatusBucket::Normal,
            Some(3) => StatusBucket::RdbConverting,
            Some(4) => StatusBucket::RdbConverted,
            Some(-1) => StatusBucket::Expired,
            Some(-2) => StatusBucket::Deleted,
            _ => StatusBucket::Unknown,
        }
    }

    /// The value of the `status` label.
    pub fn label(self) -> &'static str {
        match self {
            StatusBucket::InProgress => "in_progress",
            StatusBucket::Normal => "normal",
            StatusBucket::RdbConverting => "rdb_converting",
            StatusBucket::RdbConverted => "rdb_converted",
            StatusBucket::Expired => "expired",
            StatusBucket::Deleted => "deleted",
            StatusBucket::Unknown => "unknown",
        }
    }

    /// A completed backup can be restored from: normal, or normal and being
    /// (or done being) converted to an RDB file.
    pub fn is_completed(self) -> bool {
        matches!(
            self,
            StatusBucket::Normal | StatusBucket::RdbConverting | StatusBucket::RdbConverted
        )
    }

    fn index(self) -> usize {
        StatusBucket::ALL
            .iter()
            .position(|b| *b == self)
            .expect("ALL lists every bucket")
    }
}

/// The newest completed backup of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedBackup {
    pub start_time: i64,
    pub size_bytes: Option<u64>,
}

/// What one successful poll found for one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupSummary {
    counts: [u64; 7],
    pub locked: u64,
    pub newest_completed: Option<CompletedBackup>,
    pub oldest_in_progress_start: Option<i64>,
}

impl BackupSummary {
    pub fn count(&self, bucket: StatusBucket) -> u64 {
        self.counts[bucket.index()]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Builds a [`BackupSummary`] page by page, counting a backup that appears
/// on two pages (the list can shift while it is read) only once.
#[derive(Debug, Default)]
pub struct SummaryBuilder {
    summary: BackupSummary,
    seen_ids: HashSet<String>,
}

impl SummaryBuilder {
    /// Adds one backup; returns false when its ID was already counted.
    pub fn add(&mut self, backup: &Backup) -> bool {
        if let Some(id) = &backup.id {
            if !self.seen_ids.insert(id.clone()) {
                return false;
            }
        }
        let bucket = StatusBucket::from_code(backup.status);
        self.summary.counts[bucket.index()] += 1;
        if backup.is_locked {
            self.summary.locked += 1;
        }
        if let Some(start) = backup.start_time {
            self.note_times(bucket, start, backup.size_bytes);
        }
        true
    }

    fn note_times(&mut self, bucket: StatusBucket, start: i64, size_bytes: Option<u64>) {
        let summary = &mut self.summary;
        if bucket.is_completed()
            && summary
                .newest_completed
                .is_none_or(|n| start > n.start_time)
        {
            summary.newest_completed = Some(CompletedBackup {
                start_time: start,
                size_bytes,
            });
        }
        if bucket == StatusBucket::InProgress
            && summary
                .oldest_in_progress_start
                .is_none_or(|oldest| start < oldest)
        {
            summary.oldest_in_progress_start = Some(start);
        }
    }

    /// How many distinct backups were added.
    pub fn len(&self) -> u64 {
        self.summary.total()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn finish(self) -> BackupSummary {
        self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(id: &str, status: i64, start: i64) -> Backup {
        Backup {
            id: Some(id.into()),
            start_time: Some(start),
            status: Some(status),
            ..Backup::default()
        }
    }

    #[test]
    fn a_backup_seen_on_two_pages_counts_once() {
        let mut builder = SummaryBuilder::default();
        assert!(builder.add(&backup("a", 2, 10)));
        assert!(!builder.add(&backup("a", 2, 10)));
        assert!(builder.add(&backup("b", 2, 20)));
        let summary = builder.finish();
        assert_eq!(summary.count(StatusBucket::Normal), 2);
        assert_eq!(summary.newest_completed.map(|n| n.start_time), Some(20));
    }

    #[test]
    fn backups_without_an_id_are_all_counted() {
        let mut builder = SummaryBuilder::default();
        let anonymous = Backup {
            status: Some(2),
            ..Backup::default()
        };
        assert!(builder.add(&anonymous));
        assert!(builder.add(&anonymous));
        assert_eq!(builder.finish().count(StatusBucket::Normal), 2);
    }

    #[test]
    fn in_progress_and_expired_backups_are_not_the_newest_completed() {
        let mut builder = SummaryBuilder::default();
        builder.add(&backup("old", 4, 100));
        builder.add(&backup("running", 1, 300));
        builder.add(&backup("gone", -1, 400));
        let summary = builder.finish();
        assert_eq!(summary.newest_completed.map(|n| n.start_time), Some(100));
        assert_eq!(summary.oldest_in_progress_start, Some(300));
    }

    #[test]
    fn unknown_and_missing_codes_land_in_unknown() {
        assert_eq!(StatusBucket::from_code(Some(9)), StatusBucket::Unknown);
        assert_eq!(StatusBucket::from_code(None), StatusBucket::Unknown);
        assert_eq!(StatusBucket::from_code(Some(-2)), StatusBucket::Deleted);
    }
}
