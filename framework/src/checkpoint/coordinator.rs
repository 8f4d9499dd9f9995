//! The checkpoint coordinator's decisions, as a pure core (Flink's `CheckpointCoordinator`).
//!
//! The JobManager feeds it the time, acknowledgements and declines; it answers which barrier to
//! inject, when a checkpoint completed, and when failed checkpoints must fail the job. It reads
//! no clock and does no I/O.
//!
//! ## Invariants
//!
//! - Checkpoint ids increase by one per trigger, starting at `first_id`; an id is never reused,
//!   also across restarts (the JobManager carries the coordinator over).
//! - At most one checkpoint is pending at a time (Flink's default `maxConcurrentCheckpoints` 1).
//! - A periodic checkpoint starts no earlier than `interval_ms` after the previous trigger and
//!   `min_pause_ms` after the previous checkpoint ended.
//! - A checkpoint completes once every subtask acknowledged it; it fails on a decline or after
//!   `timeout_ms`. More than `tolerable_failures` consecutive failures fail the job.
//! - Periodic checkpoints go on while some sources have finished (Flink's FLIP-147): finished
//!   subtasks still acknowledge, with their final state. They stop only when the whole job
//!   finished its input; the final checkpoint then covers the rest and is never aborted.

use std::collections::BTreeSet;

use super::{CheckpointBarrier, CheckpointId, CheckpointKind};

/// The coordinator's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Periodic checkpoint interval; `None` takes only the final checkpoint and savepoints.
    pub interval_ms: Option<u64>,
    /// A checkpoint not complete after this long fails.
    pub timeout_ms: u64,
    /// The least time between the end of one checkpoint and the start of the next.
    pub min_pause_ms: u64,
    /// Consecutive failed checkpoints tolerated before the job fails.
    pub tolerable_failures: u32,
}

/// A checkpoint in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCheckpoint {
    /// The barrier sent for it.
    pub barrier: CheckpointBarrier,
    /// When it was triggered.
    pub started_ms: i64,
    /// Subtasks that acknowledged it.
    pub acknowledged: BTreeSet<usize>,
    /// Whether it is the final checkpoint of a bounded job.
    pub is_final: bool,
}

/// What an acknowledgement, decline or tick led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorEvent {
    /// Nothing changed that the JobManager must act on.
    Nothing,
    /// Every subtask acknowledged: the checkpoint is complete (write its metadata, notify).
    Completed(PendingCheckpoint),
    /// The checkpoint failed; `fail_job` if the tolerable failures are exceeded.
    Failed {
        /// The failed checkpoint.
        checkpoint: PendingCheckpoint,
        /// Why.
        reason: String,
        /// Whether the job must fail (restart) because of it.
        fail_job: bool,
    },
}

/// Decides when checkpoints start, complete and fail.
#[derive(Debug, Clone)]
pub struct CheckpointCoordinator {
    config: CoordinatorConfig,
    subtasks: usize,
    next_id: u64,
    pending: Option<PendingCheckpoint>,
    last_trigger_ms: Option<i64>,
    last_end_ms: Option<i64>,
    consecutive_failures: u32,
    savepoint_requested: bool,
    /// Every subtask finished its input: only the final checkpoint may run now.
    finishing: bool,
    latest_completed: Option<CheckpointId>,
    /// The completed checkpoint before `latest_completed`, for a completion that cannot be
    /// finalised (see [`CheckpointCoordinator::finalization_failed`]).
    previous_completed: Option<CheckpointId>,
}

impl CheckpointCoordinator {
    /// A coordinator for a job of `subtasks` subtasks, whose first checkpoint gets `first_id`.
    pub fn new(config: CoordinatorConfig, subtasks: usize, first_id: u64) -> Self {
        Self {
            config,
            subtasks,
            next_id: first_id.max(1),
            pending: None,
            last_trigger_ms: None,
            last_end_ms: None,
            consecutive_failures: 0,
            savepoint_requested: false,
            finishing: false,
            latest_completed: None,
            previous_completed: None,
        }
    }

    /// The checkpoint in progress.
    pub fn pending(&self) -> Option<&PendingCheckpoint> {
        self.pending.as_ref()
    }

    /// The newest completed checkpoint.
    pub fn latest_completed(&self) -> Option<CheckpointId> {
        self.latest_completed
    }

    /// Numbers the next checkpoint after `id` at least (a run that continues its own stored
    /// checkpoints, or starts from a savepoint, never reuses their ids).
    pub fn skip_past(&mut self, id: CheckpointId) {
        self.next_id = self.next_id.max(id.0.saturating_add(1));
    }

    /// The id the next checkpoint gets.
    pub fn next_id(&self) -> CheckpointId {
        CheckpointId(self.next_id)
    }

    /// The job was (re)deployed at `now_ms`: forget the pending checkpoint, the finishing
    /// state and a savepoint request (the JobManager asks again for the savepoints still
    /// waiting); ids go on from where they were.
    pub fn reset(&mut self, now_ms: i64) {
        self.pending = None;
        self.finishing = false;
        self.savepoint_requested = false;
        self.last_trigger_ms = Some(now_ms);
        self.last_end_ms = None;
    }

    /// The user asked for a savepoint: it starts as soon as no checkpoint is pending.
    pub fn request_savepoint(&mut self) {
        self.savepoint_requested = true;
    }

    /// When the pending checkpoint times out, if one is pending.
    pub fn deadline_ms(&self) -> Option<i64> {
        let pending = self.pending.as_ref()?;
        Some(
            pending
                .started_ms
                .saturating_add(i64::try_from(self.config.timeout_ms).unwrap_or(i64::MAX)),
        )
    }

    /// Whether the whole job finished its input (only the final checkpoint may run).
    pub fn is_finishing(&self) -> bool {
        self.finishing
    }

    /// Whether a savepoint request waits.
    pub fn savepoint_requested(&self) -> bool {
        self.savepoint_requested
    }

    /// Every subtask finished its input: periodic checkpoints and savepoints stop, the final
    /// checkpoint covers the rest. Returns the pending checkpoint, which the final one replaces,
    /// if any.
    pub fn job_finishing(&mut self) -> Option<PendingCheckpoint> {
        self.finishing = true;
        if self.pending.as_ref().is_some_and(|p| p.is_final) {
            return None;
        }
        self.pending.take()
    }

    /// The barrier to inject now, if a periodic checkpoint or a requested savepoint is due.
    pub fn trigger_due(&mut self, now_ms: i64) -> Option<CheckpointBarrier> {
        if self.pending.is_some() || self.finishing {
            return None;
        }
        let paused = self.last_end_ms.is_some_and(|end| {
            now_ms < end.saturating_add(i64::try_from(self.config.min_pause_ms).unwrap_or(i64::MAX))
        });
        if self.savepoint_requested {
            self.savepoint_requested = false;
            return Some(self.start(now_ms, CheckpointKind::Savepoint, false));
        }
        let interval = self.config.interval_ms?;
        let due = self.last_trigger_ms.is_none_or(|last| {
            now_ms >= last.saturating_add(i64::try_from(interval).unwrap_or(i64::MAX))
        });
        if due && !paused {
            return Some(self.start(now_ms, CheckpointKind::Checkpoint, false));
        }
        None
    }

    /// When `trigger_due` should next be asked, if periodic checkpoints run.
    pub fn next_due_ms(&self) -> Option<i64> {
        let interval = i64::try_from(self.config.interval_ms?).unwrap_or(i64::MAX);
        let pause = i64::try_from(self.config.min_pause_ms).unwrap_or(i64::MAX);
        let by_interval = self
            .last_trigger_ms
            .map_or(0, |t| t.saturating_add(interval));
        let by_pause = self.last_end_ms.map_or(0, |t| t.saturating_add(pause));
        Some(by_interval.max(by_pause))
    }

    /// Starts the final checkpoint (every subtask finished its input). Replaces any pending
    /// checkpoint.
    pub fn trigger_final(&mut self, now_ms: i64) -> CheckpointBarrier {
        self.start(now_ms, CheckpointKind::Checkpoint, true)
    }

    /// Like [`CheckpointCoordinator::trigger_final`], for a final checkpoint that is also the
    /// savepoint a user asked for (stop-with-savepoint when the input already ended: the
    /// savepoint holds the final state).
    pub fn trigger_final_savepoint(&mut self, now_ms: i64) -> CheckpointBarrier {
        self.savepoint_requested = false;
        self.start(now_ms, CheckpointKind::Savepoint, true)
    }

    fn start(&mut self, now_ms: i64, kind: CheckpointKind, is_final: bool) -> CheckpointBarrier {
        let barrier = CheckpointBarrier {
            id: CheckpointId(self.next_id),
            kind,
        };
        self.next_id += 1;
        self.last_trigger_ms = Some(now_ms);
        self.pending = Some(PendingCheckpoint {
            barrier,
            started_ms: now_ms,
            acknowledged: BTreeSet::new(),
            is_final,
        });
        barrier
    }

    /// Subtask `subtask` stored its state for checkpoint `id`.
    pub fn acknowledge(
        &mut self,
        id: CheckpointId,
        subtask: usize,
        now_ms: i64,
    ) -> CoordinatorEvent {
        let Some(pending) = self.pending.as_mut() else {
            return CoordinatorEvent::Nothing;
        };
        if pending.barrier.id != id || subtask >= self.subtasks {
            return CoordinatorEvent::Nothing;
        }
        pending.acknowledged.insert(subtask);
        if pending.acknowledged.len() < self.subtasks {
            return CoordinatorEvent::Nothing;
        }
        let Some(done) = self.pending.take() else {
            return CoordinatorEvent::Nothing;
        };
        self.last_end_ms = Some(now_ms);
        self.consecutive_failures = 0;
        self.previous_completed = self.latest_completed.replace(id);
        CoordinatorEvent::Completed(done)
    }

    /// `checkpoint` had every acknowledgement ([`CoordinatorEvent::Completed`]) but could not
    /// be finalised (its metadata could not be stored): it did not complete after all, and
    /// counts as a failed checkpoint, like a decline (Flink's finalisation failure).
    pub fn finalization_failed(
        &mut self,
        checkpoint: PendingCheckpoint,
        reason: String,
        now_ms: i64,
    ) -> CoordinatorEvent {
        if self.latest_completed != Some(checkpoint.barrier.id) {
            return CoordinatorEvent::Nothing;
        }
        self.latest_completed = self.previous_completed.take();
        self.last_end_ms = Some(now_ms);
        self.consecutive_failures += 1;
        let fail_job =
            checkpoint.is_final || self.consecutive_failures > self.config.tolerable_failures;
        CoordinatorEvent::Failed {
            checkpoint,
            reason,
            fail_job,
        }
    }

    /// Checkpoint `id` failed (a subtask declined it, or storage failed).
    pub fn fail(&mut self, id: CheckpointId, reason: String, now_ms: i64) -> CoordinatorEvent {
        if self.pending.as_ref().is_none_or(|p| p.barrier.id != id) {
            return CoordinatorEvent::Nothing;
        }
        let Some(checkpoint) = self.pending.take() else {
            return CoordinatorEvent::Nothing;
        };
        self.last_end_ms = Some(now_ms);
        self.consecutive_failures += 1;
        let fail_job =
            checkpoint.is_final || self.consecutive_failures > self.config.tolerable_failures;
        CoordinatorEvent::Failed {
            checkpoint,
            reason,
            fail_job,
        }
    }

    /// Fails the pending checkpoint if it ran past its timeout.
    pub fn tick(&mut self, now_ms: i64) -> CoordinatorEvent {
        let Some(pending) = &self.pending else {
            return CoordinatorEvent::Nothing;
        };
        let deadline = pending
            .started_ms
            .saturating_add(i64::try_from(self.config.timeout_ms).unwrap_or(i64::MAX));
        if now_ms < deadline {
            return CoordinatorEvent::Nothing;
        }
        let id = pending.barrier.id;
        self.fail(
            id,
            format!(
                "checkpoint {} expired after {} ms",
                id.0, self.config.timeout_ms
            ),
            now_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval: Option<u64>) -> CoordinatorConfig {
        CoordinatorConfig {
            interval_ms: interval,
            timeout_ms: 1000,
            min_pause_ms: 50,
            tolerable_failures: 1,
        }
    }

    #[test]
    fn periodic_trigger_respects_interval_and_pause() {
        let mut c = CheckpointCoordinator::new(config(Some(100)), 2, 1);
        c.reset(0);
        assert_eq!(c.trigger_due(50), None);
        let b = c.trigger_due(100).expect("due");
        assert_eq!(b.id, CheckpointId(1));
        assert_eq!(c.trigger_due(300), None, "one pending at a time");
        assert_eq!(c.acknowledge(b.id, 0, 310), CoordinatorEvent::Nothing);
        assert!(matches!(
            c.acknowledge(b.id, 1, 320),
            CoordinatorEvent::Completed(_)
        ));
        assert_eq!(c.latest_completed(), Some(CheckpointId(1)));
        // Interval passed (200 >= 100 + 100) but the pause after 320 holds until 370.
        assert_eq!(c.trigger_due(350), None);
        assert_eq!(c.trigger_due(370).map(|b| b.id), Some(CheckpointId(2)));
    }

    #[test]
    fn duplicate_and_foreign_acks_do_not_complete() {
        let mut c = CheckpointCoordinator::new(config(Some(10)), 2, 1);
        c.reset(0);
        let b = c.trigger_due(10).expect("due");
        assert_eq!(c.acknowledge(b.id, 0, 11), CoordinatorEvent::Nothing);
        assert_eq!(c.acknowledge(b.id, 0, 12), CoordinatorEvent::Nothing);
        assert_eq!(
            c.acknowledge(CheckpointId(9), 1, 12),
            CoordinatorEvent::Nothing
        );
        assert_eq!(c.acknowledge(b.id, 7, 12), CoordinatorEvent::Nothing);
    }

    #[test]
    fn timeouts_count_towards_tolerable_failures() {
        let mut c = CheckpointCoordinator::new(config(Some(10)), 1, 1);
        c.reset(0);
        c.trigger_due(10).expect("due");
        assert!(matches!(
            c.tick(1010),
            CoordinatorEvent::Failed {
                fail_job: false,
                ..
            }
        ));
        c.trigger_due(2000).expect("due");
        assert!(matches!(
            c.tick(3000),
            CoordinatorEvent::Failed { fail_job: true, .. }
        ));
    }

    #[test]
    fn periodic_checkpoints_stop_only_when_the_job_finishes() {
        let mut c = CheckpointCoordinator::new(config(Some(10)), 2, 1);
        c.reset(0);
        let b = c.trigger_due(10).expect("due");
        let pending = c
            .job_finishing()
            .expect("the pending checkpoint is handed back");
        assert_eq!(pending.barrier, b);
        assert_eq!(c.trigger_due(1_000), None, "only the final checkpoint now");
        c.request_savepoint();
        assert_eq!(c.trigger_due(2_000), None, "no savepoint either");
        let f = c.trigger_final(2_001);
        assert_eq!(f.id, CheckpointId(2));
        // A redeployed job checkpoints again.
        c.reset(3_000);
        assert!(c.trigger_due(3_010).is_some());
    }

    #[test]
    fn a_completion_that_cannot_be_stored_counts_as_a_failure() {
        let mut c = CheckpointCoordinator::new(config(Some(10)), 1, 1);
        c.reset(0);
        let first = c.trigger_due(10).expect("due");
        let CoordinatorEvent::Completed(done) = c.acknowledge(first.id, 0, 11) else {
            panic!("one subtask: complete");
        };
        let second = c.trigger_due(100).expect("due");
        let CoordinatorEvent::Completed(stored_badly) = c.acknowledge(second.id, 0, 101) else {
            panic!("one subtask: complete");
        };
        assert_eq!(c.latest_completed(), Some(second.id));
        assert_eq!(
            c.finalization_failed(done, "stale".into(), 102),
            CoordinatorEvent::Nothing,
            "only the latest completion can fail to finalise"
        );
        assert!(matches!(
            c.finalization_failed(stored_badly, "disk full".into(), 103),
            CoordinatorEvent::Failed {
                fail_job: false,
                ..
            }
        ));
        assert_eq!(c.latest_completed(), Some(first.id));
        // The tolerable failure is used up: one more fails the job.
        let third = c.trigger_due(200).expect("due");
        assert!(matches!(
            c.fail(third.id, "declined".into(), 201),
            CoordinatorEvent::Failed { fail_job: true, .. }
        ));
    }

    #[test]
    fn skip_past_never_lowers_the_next_id() {
        let mut c = CheckpointCoordinator::new(config(None), 1, 5);
        c.skip_past(CheckpointId(2));
        assert_eq!(c.next_id(), CheckpointId(5));
        c.skip_past(CheckpointId(9));
        assert_eq!(c.next_id(), CheckpointId(10));
    }

    #[test]
    fn savepoint_runs_without_interval_and_final_after_finishing() {
        let mut c = CheckpointCoordinator::new(config(None), 1, 5);
        c.reset(0);
        assert_eq!(c.trigger_due(1_000_000), None);
        c.request_savepoint();
        let s = c.trigger_due(1).expect("savepoint");
        assert_eq!((s.id, s.kind), (CheckpointId(5), CheckpointKind::Savepoint));
        assert!(matches!(
            c.acknowledge(s.id, 0, 2),
            CoordinatorEvent::Completed(_)
        ));
        assert_eq!(c.job_finishing(), None);
        let f = c.trigger_final(3);
        assert_eq!(f.id, CheckpointId(6));
        assert_eq!(
            c.job_finishing(),
            None,
            "the final checkpoint is never aborted"
        );
        match c.acknowledge(f.id, 0, 4) {
            CoordinatorEvent::Completed(p) => assert!(p.is_final),
            other => panic!("final checkpoint did not complete: {other:?}"),
        }
    }
}
