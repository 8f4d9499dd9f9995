//! Where an attempt restores from: pure decisions over what storage returned.
//!
//! The coordinator core asks storage for the run's newest intact checkpoint (and, without
//! one, for the savepoint or checkpoint the run started from) and decides here, with what
//! exactly-once sinks reported they committed, whether restoring it is safe.
//!
//! ## Invariants
//!
//! - A restart never falls back silently past a checkpoint whose transactions exactly-once
//!   sinks committed: replaying from before it would write that output again. Unless the user
//!   allows it, that is a [`JobError::Restore`], which a restart cannot repair.
//! - The commit log is bounded: it keeps the details of the newest
//!   [`COMMITS_DETAILED_MAX`] checkpoints with commits and, for older ones, the newest id, so
//!   the decision stays exact while its message shortens.

use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpoint::CheckpointId;
use crate::checkpoint::storage::{RestoredCheckpoint, StorageError, describe_problems};
use crate::error::JobError;
use crate::operator::TRANSACTIONS_STATE;

/// Checkpoints whose commits the log describes in detail; older ones are only counted.
pub(crate) const COMMITS_DETAILED_MAX: usize = 64;

/// What exactly-once sinks committed, per checkpoint of this run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CommitLog {
    detailed: BTreeMap<CheckpointId, Vec<String>>,
    /// Checkpoints whose details were dropped, and the newest of them.
    dropped: u64,
    newest_dropped: Option<CheckpointId>,
}

impl CommitLog {
    /// Records that `what` was committed at checkpoint `id`.
    pub(crate) fn record(&mut self, id: CheckpointId, what: String) {
        if self.newest_dropped.is_some_and(|newest| id <= newest) {
            // Older than every detailed entry: its details would be dropped at once.
            return;
        }
        self.detailed.entry(id).or_default().push(what);
        while self.detailed.len() > COMMITS_DETAILED_MAX {
            let Some((oldest, _)) = self.detailed.pop_first() else {
                break;
            };
            self.dropped += 1;
            self.newest_dropped = self.newest_dropped.max(Some(oldest));
        }
    }

    /// The commits of checkpoints newer than `floor` (0: all), described one per checkpoint;
    /// empty when there are none.
    pub(crate) fn newer_than(&self, floor: u64) -> Vec<String> {
        let mut described: Vec<String> = Vec::new();
        if let Some(newest) = self.newest_dropped
            && newest.0 > floor
        {
            described.push(format!(
                "commits of earlier checkpoints up to checkpoint {} ({} checkpoints in all; \
                 details not kept)",
                newest.0, self.dropped
            ));
        }
        described.extend(
            self.detailed
                .range(CheckpointId(floor.saturating_add(1))..)
                .map(|(id, what)| format!("checkpoint {}: {}", id.0, what.join(", "))),
        );
        described
    }
}

/// Decides on the savepoint or checkpoint a run starts from, as `read` returned it for `path`
/// (see [`load_restore_path`](crate::checkpoint::storage::load_restore_path)). Given an
/// earlier run's folder whose newest checkpoints are damaged, it falls back to the newest
/// intact one only if that run had no exactly-once sink (whose commits at the damaged
/// checkpoint would be duplicated) or the fallback is allowed.
///
/// # Errors
///
/// [`JobError::Restore`]: nothing to restore, or a fallback that would duplicate output.
pub(crate) fn initial_restore(
    path: &Path,
    read: Result<(RestoredCheckpoint, Vec<StorageError>), StorageError>,
    allow_fallback: bool,
) -> Result<RestoredCheckpoint, JobError> {
    let (restored, problems) = read.map_err(|e| JobError::Restore(e.to_string()))?;
    if problems.is_empty() {
        return Ok(restored);
    }
    let damaged = describe_problems(&problems);
    let message = format!(
        "{}: newer checkpoints are damaged ({damaged}); the newest intact one is checkpoint {} \
         ({})",
        path.display(),
        restored.metadata.id.0,
        restored.location
    );
    if holds_transactions(&restored) && !allow_fallback {
        return Err(JobError::Restore(format!(
            "{message}; the run's exactly-once sinks committed the transactions of the damaged \
             checkpoints when they completed, so restoring an older one would write that output \
             again: repair the damaged checkpoint, restore a chk-<n> folder by name, or allow the \
             fallback (allow_fallback_past_commits)"
        )));
    }
    tracing::warn!("{message}: restoring it");
    Ok(restored)
}

/// Decides whether the next attempt may restore `restored` (the run's newest intact
/// checkpoint, else its starting point, else `None`: the beginning), given the damaged
/// checkpoints storage skipped (`problems`) and what sinks committed.
///
/// # Errors
///
/// [`JobError::Restore`] when sinks committed at a checkpoint newer than `restored` and the
/// fallback is not allowed: the message names the damaged checkpoints and the commits.
pub(crate) fn restart_point(
    restored: Option<RestoredCheckpoint>,
    problems: &[StorageError],
    commits: &CommitLog,
    allow_fallback: bool,
) -> Result<Option<RestoredCheckpoint>, JobError> {
    let floor = restored.as_ref().map_or(0, |r| r.metadata.id.0);
    let committed = commits.newer_than(floor);
    if committed.is_empty() {
        return Ok(restored);
    }
    let target = restored.as_ref().map_or_else(
        || "the beginning".to_string(),
        |r| format!("checkpoint {} ({})", r.metadata.id.0, r.location),
    );
    let damaged = if problems.is_empty() {
        "they are missing".to_string()
    } else {
        describe_problems(problems)
    };
    let message = format!(
        "cannot restart from {target} without duplicating committed output: the newer \
         checkpoints cannot be used ({damaged}), and exactly-once sinks already committed \
         their transactions ({}); repair the damaged checkpoint, or allow the fallback \
         (allow_fallback_past_commits) to accept that output twice",
        committed.join("; ")
    );
    if !allow_fallback {
        return Err(JobError::Restore(message));
    }
    tracing::warn!("{message}; falling back as allowed");
    Ok(restored)
}

/// Whether a checkpoint holds transactions of an exactly-once (two-phase-commit) sink.
pub(crate) fn holds_transactions(restored: &RestoredCheckpoint) -> bool {
    restored.operators.values().flatten().any(|state| {
        state
            .summary
            .lists
            .iter()
            .any(|list| list.name == TRANSACTIONS_STATE && list.elements > 0)
    })
}
