//! Tests of the job coordinator core alone: no actors, no tokio, virtual time in a variable.
//!
//! A [`Harness`] plays the adapter: it answers the core's storage reads from an in-memory model
//! of the run's checkpoints, deploys every attempt at once, stores metadata, and keeps
//! everything else the core produced for the test to look at.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use proptest::prelude::*;

use super::plan::PlannedVertex;
use super::*;
use crate::checkpoint::restore_plan::OperatorStateSummary;
use crate::checkpoint::storage::{CheckpointMetadata, StoredOperatorState};
use crate::checkpoint::{CoordinatorConfig, RestartStrategy};
use crate::state::OperatorSnapshot;
use crate::state::{OperatorListState, OperatorStateMode};

const INTERVAL_MS: u64 = 100;
const TIMEOUT_MS: u64 = 1_000;
const DELAY_MS: u64 = 50;

fn plan(parallelisms: &[u32]) -> DeploymentPlan {
    let vertices = parallelisms
        .iter()
        .enumerate()
        .map(|(v, parallelism)| PlannedVertex {
            name: format!("chain-{v}"),
            parallelism: *parallelism,
            state_ids: vec![format!("op-{v}")],
        })
        .collect();
    DeploymentPlan::new("job".to_string(), 128, vertices)
}

fn config() -> JobCoreConfig {
    JobCoreConfig {
        coordinator: CoordinatorConfig {
            interval_ms: Some(INTERVAL_MS),
            timeout_ms: TIMEOUT_MS,
            min_pause_ms: 0,
            tolerable_failures: 0,
        },
        retained: 2,
        allow_fallback_past_commits: false,
        restart_strategy: RestartStrategy::FixedDelay {
            attempts: 3,
            delay_ms: DELAY_MS,
        },
        restore_path: None,
        allow_non_restored_state: false,
    }
}

/// A stored checkpoint of the model storage.
#[derive(Debug, Clone)]
struct Stored {
    metadata: CheckpointMetadata,
    damaged: bool,
    /// Whether it holds a two-phase-commit sink's transactions.
    transactions: bool,
}

/// The adapter, played in memory.
struct Harness {
    core: JobCore<u32>,
    now: i64,
    /// The run's complete checkpoints (savepoints included, as the directory would hold them).
    storage: BTreeMap<CheckpointId, Stored>,
    /// What `RestorePath` reads return.
    restore_path_answer: Option<Result<(RestoredCheckpoint, Vec<StorageError>), StorageError>>,
    /// Whether the next metadata write fails.
    metadata_fails: bool,
    /// Whether acknowledged state is stored at once (else it waits in `persists`).
    auto_persist: bool,
    /// Store requests not answered yet: (attempt, index, id).
    persists: Vec<(u32, usize, CheckpointId)>,
    /// Every output not answered by the harness itself, in order.
    log: Vec<Output<u32>>,
    /// The attempt deployed last.
    deployed: Option<Deployment>,
    timer: Option<i64>,
}

impl Harness {
    fn new(plan: DeploymentPlan, config: JobCoreConfig) -> Self {
        Self {
            core: JobCore::new(plan, config),
            now: 0,
            storage: BTreeMap::new(),
            restore_path_answer: None,
            metadata_fails: false,
            auto_persist: true,
            persists: Vec::new(),
            log: Vec::new(),
            deployed: None,
            timer: None,
        }
    }

    /// A harness whose job runs (attempt 0 deployed).
    fn running(parallelisms: &[u32], config: JobCoreConfig) -> Self {
        let mut h = Self::new(plan(parallelisms), config);
        h.core.handle_start(h.now);
        h.pump();
        assert!(h.deployed.is_some(), "deployed: {:?}", h.log);
        h.log.clear();
        h
    }

    fn attempt(&self) -> u32 {
        self.deployed.as_ref().map_or(0, |d| d.attempt)
    }

    fn subtasks(&self) -> usize {
        self.core.plan.subtask_count()
    }

    /// Answers every request of the core, until it has none.
    fn pump(&mut self) {
        while let Some(output) = self.core.poll() {
            match output {
                Output::Read(read) => {
                    let answer = self.answer(read);
                    self.core.handle_storage_read(answer, self.now);
                }
                Output::Deploy(deployment) => {
                    let attempt = deployment.attempt;
                    self.deployed = Some(deployment);
                    self.core.handle_deployed(attempt, Ok(()), self.now);
                }
                Output::DrainAttempt { .. } => self.core.handle_attempt_drained(self.now),
                Output::Persist {
                    attempt, index, id, ..
                } => {
                    self.persists.push((attempt, index, id));
                    if self.auto_persist {
                        self.persist(self.persists.len() - 1, true);
                    }
                }
                Output::WriteMetadata { location, metadata } => {
                    let result = if std::mem::take(&mut self.metadata_fails) {
                        Err(StorageError {
                            path: format!("chk-{}/_metadata", location.id.0),
                            message: "disk full".to_string(),
                        })
                    } else {
                        if location.savepoint_target.is_none() {
                            self.storage.insert(
                                location.id,
                                Stored {
                                    metadata: metadata.clone(),
                                    damaged: false,
                                    transactions: false,
                                },
                            );
                        }
                        Ok(())
                    };
                    let id = location.id;
                    self.log.push(Output::WriteMetadata { location, metadata });
                    self.core.handle_metadata_written(id, result, self.now);
                }
                Output::SetTimer(at) => {
                    self.timer = at;
                    self.log.push(Output::SetTimer(at));
                }
                other => self.log.push(other),
            }
        }
    }

    fn answer(&mut self, read: StorageRead) -> StorageReadResult {
        match read {
            StorageRead::CheckpointIds => {
                StorageReadResult::CheckpointIds(self.storage.keys().copied().collect())
            }
            StorageRead::RestorePath(path) => StorageReadResult::RestorePath(
                self.restore_path_answer.clone().unwrap_or_else(|| {
                    Err(StorageError {
                        path: path.display().to_string(),
                        message: "no such savepoint or checkpoint".to_string(),
                    })
                }),
            ),
            StorageRead::LatestRestorable => {
                let mut problems = Vec::new();
                for (id, stored) in self.storage.iter().rev() {
                    if stored.damaged {
                        problems.push(StorageError {
                            path: format!("memory:chk-{}/task-0-0.state", id.0),
                            message: "checksum mismatch against the metadata".to_string(),
                        });
                    } else {
                        return StorageReadResult::LatestRestorable {
                            restored: Some(restored(stored)),
                            problems,
                        };
                    }
                }
                StorageReadResult::LatestRestorable {
                    restored: None,
                    problems,
                }
            }
        }
    }

    /// Answers store request `k` (in `persists`).
    fn persist(&mut self, k: usize, ok: bool) {
        let (attempt, index, id) = self.persists.remove(k);
        let file_name = self.core.plan.file_name(index);
        let folder = CheckpointFolder {
            name: format!("chk-{}", id.0),
            path: None,
        };
        let result = if ok {
            Ok(FileMetadata {
                name: file_name,
                len: 1,
                crc32: 0,
            })
        } else {
            Err(format!("{file_name}: cannot write"))
        };
        self.core
            .handle_persisted(attempt, index, id, folder, result, self.now);
    }

    /// Time passes to `to` and the timer fires if due.
    fn advance_to(&mut self, to: i64) {
        self.now = to;
        if self.timer.is_some_and(|at| at <= to) {
            self.core.handle_timeout(self.now);
            self.pump();
        }
    }

    /// Fires the timer, wherever it is.
    fn fire_timer(&mut self) {
        let at = self.timer.expect("a timer is armed");
        self.advance_to(at.max(self.now));
    }

    fn ack(&mut self, index: usize, id: CheckpointId) {
        let attempt = self.attempt();
        self.core
            .handle_acknowledge(attempt, index, id, index as u32, self.now);
        self.pump();
    }

    fn ack_all(&mut self, id: CheckpointId) {
        for index in 0..self.subtasks() {
            self.ack(index, id);
        }
    }

    fn fail_subtask(&mut self, index: usize, recoverable: bool) {
        let attempt = self.attempt();
        self.core.handle_subtask_failed(
            attempt,
            index,
            SubtaskFailure {
                operator: Some("Fragile".to_string()),
                task: None,
                message: "boom".to_string(),
                recoverable,
            },
            self.now,
        );
        self.pump();
    }

    /// The barriers triggered since the log was last cleared (one per checkpoint).
    fn triggered(&self) -> Vec<CheckpointBarrier> {
        self.commands()
            .into_iter()
            .filter_map(|(index, command)| match command {
                SubtaskCommand::TriggerCheckpoint(barrier)
                | SubtaskCommand::FinalCheckpoint { barrier, .. }
                    if index == 0 =>
                {
                    Some(barrier)
                }
                _ => None,
            })
            .collect()
    }

    fn commands(&self) -> Vec<(usize, SubtaskCommand)> {
        self.log
            .iter()
            .filter_map(|o| match o {
                Output::ToSubtask { index, command, .. } => Some((*index, *command)),
                _ => None,
            })
            .collect()
    }

    /// The checkpoints subtasks were told completed, in order (once per checkpoint).
    fn completed(&self) -> Vec<CheckpointId> {
        self.commands()
            .into_iter()
            .filter_map(|(index, command)| match command {
                SubtaskCommand::CheckpointComplete { id, .. } if index == 0 => Some(id),
                _ => None,
            })
            .collect()
    }

    fn concluded(&self) -> Option<&Result<JobStatus, JobError>> {
        self.log.iter().find_map(|o| match o {
            Output::Concluded(outcome) => Some(outcome),
            _ => None,
        })
    }

    fn discarded(&self) -> Vec<CheckpointId> {
        self.log
            .iter()
            .filter_map(|o| match o {
                Output::Discard(location) => Some(location.id),
                _ => None,
            })
            .collect()
    }

    /// Triggers the next periodic checkpoint and returns its barrier.
    fn next_checkpoint(&mut self) -> CheckpointBarrier {
        self.log.clear();
        self.fire_timer();
        let triggered = self.triggered();
        assert_eq!(triggered.len(), 1, "{:?}", self.log);
        triggered[0]
    }
}

fn restored(stored: &Stored) -> RestoredCheckpoint {
    let transactions = OperatorSnapshot {
        operator: vec![OperatorListState {
            name: crate::operator::TRANSACTIONS_STATE.to_string(),
            mode: OperatorStateMode::Union,
            elements: vec![vec![1]],
        }],
        ..OperatorSnapshot::default()
    };
    let operators = stored
        .metadata
        .operators
        .iter()
        .map(|op| {
            let snapshot = if stored.transactions {
                transactions.clone()
            } else {
                OperatorSnapshot::default()
            };
            let states = op
                .files
                .iter()
                .map(|name| StoredOperatorState {
                    file: FileMetadata {
                        name: name.clone(),
                        len: 0,
                        crc32: 0,
                    },
                    summary: OperatorStateSummary::of(&snapshot),
                })
                .collect();
            (op.state_id.clone(), states)
        })
        .collect();
    RestoredCheckpoint {
        location: format!("memory:chk-{}", stored.metadata.id.0),
        folder: CheckpointFolder {
            name: format!("chk-{}", stored.metadata.id.0),
            path: None,
        },
        metadata: stored.metadata.clone(),
        operators,
    }
}

#[test]
fn a_checkpoint_completes_only_after_every_acknowledgement() {
    let mut h = Harness::running(&[1, 2], config());
    assert_eq!(
        h.timer,
        Some(INTERVAL_MS as i64),
        "the first trigger is due"
    );
    let barrier = h.next_checkpoint();
    assert_eq!(barrier.id, CheckpointId(1));
    assert_eq!(h.commands().len(), 3, "every subtask is triggered");
    assert_eq!(
        h.timer,
        Some(INTERVAL_MS as i64 + TIMEOUT_MS as i64),
        "timeout"
    );
    h.log.clear();
    h.ack(2, barrier.id);
    h.ack(0, barrier.id);
    h.ack(0, barrier.id);
    assert!(h.completed().is_empty(), "two of three: {:?}", h.log);
    assert!(
        !h.log
            .iter()
            .any(|o| matches!(o, Output::WriteMetadata { .. })),
        "no metadata before the last state file"
    );
    h.ack(1, barrier.id);
    let Some(Output::WriteMetadata { metadata, .. }) = h.log.first() else {
        panic!("metadata first: {:?}", h.log);
    };
    assert_eq!(metadata.files.len(), 3);
    assert_eq!(
        metadata
            .files
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["task-0-0.state", "task-1-0.state", "task-1-1.state"]
    );
    assert_eq!(h.completed(), [barrier.id]);
    assert_eq!(h.commands().len(), 3, "every subtask hears of it");
    assert!(
        h.log
            .iter()
            .any(|o| matches!(o, Output::Prune { retained: 2 }))
    );
    assert_eq!(h.core.completed_checkpoints(), 1);
    assert_eq!(h.timer, Some(2 * INTERVAL_MS as i64), "the next trigger");
}

#[test]
fn a_decline_or_a_timeout_aborts_the_checkpoint_and_the_next_one_proceeds() {
    let mut config = config();
    config.coordinator.tolerable_failures = 5;
    let mut h = Harness::running(&[2], config);
    let first = h.next_checkpoint();
    h.ack(0, first.id);
    h.core.handle_decline(0, 1, first.id, "not ready", h.now);
    h.pump();
    assert_eq!(h.discarded(), [first.id]);
    // A late acknowledgement of the aborted checkpoint changes nothing.
    h.ack(1, first.id);
    assert!(h.completed().is_empty());

    let second = h.next_checkpoint();
    assert_eq!(second.id, CheckpointId(2));
    h.ack(0, second.id);
    h.log.clear();
    h.advance_to(h.now + TIMEOUT_MS as i64);
    assert_eq!(h.discarded(), [second.id], "timed out: {:?}", h.log);
    // The next one was due long ago: it starts at once.
    assert_eq!(h.triggered().len(), 1);
    let third = h.triggered()[0];
    assert_eq!(third.id, CheckpointId(3));
    h.ack_all(third.id);
    assert_eq!(h.completed(), [third.id]);
    assert!(h.concluded().is_none());
    assert_eq!(h.core.restarts(), 0, "tolerated");
}

#[test]
fn a_subtask_failure_restarts_from_the_newest_completed_checkpoint() {
    let mut h = Harness::running(&[2], config());
    for _ in 0..2 {
        let barrier = h.next_checkpoint();
        h.ack_all(barrier.id);
    }
    let pending = h.next_checkpoint();
    h.ack(0, pending.id);
    h.log.clear();
    h.fail_subtask(1, true);
    assert!(
        matches!(h.log[..], [
        Output::Discard(CheckpointLocation { id, .. }),
        Output::StopAttempt { attempt: 0 },
        Output::Status(StatusEvent::Restarting { attempt: 1, delay_ms: DELAY_MS, .. }),
        Output::SetTimer(Some(_)),
    ] if id == pending.id),
        "{:?}",
        h.log
    );
    // Nothing of the old attempt counts any more.
    h.ack(1, pending.id);
    h.core.handle_input_finished(0, 0, h.now);
    h.fail_subtask(0, true);
    assert_eq!(h.core.restarts(), 1);
    h.fire_timer();
    let deployed = h.deployed.clone().expect("deployed");
    assert_eq!(deployed.attempt, 1);
    assert_eq!(deployed.restored_from, Some(CheckpointId(2)));
    assert_eq!(h.core.restored_from(), Some("memory:chk-2"));
    // Numbering goes on past the aborted checkpoint.
    let next = h.next_checkpoint();
    assert_eq!(next.id, CheckpointId(4));
    h.ack_all(next.id);
    assert_eq!(h.completed(), [next.id]);
}

#[test]
fn the_restart_strategy_limit_fails_the_job() {
    let mut config = config();
    config.restart_strategy = RestartStrategy::FixedDelay {
        attempts: 1,
        delay_ms: 0,
    };
    let mut h = Harness::running(&[1], config);
    h.fail_subtask(0, true);
    assert_eq!(h.attempt(), 1, "no delay: redeployed at once");
    assert!(h.concluded().is_none());
    h.fail_subtask(0, true);
    match h.concluded() {
        Some(Err(JobError::TaskFailed {
            task,
            operator,
            message,
        })) => {
            assert_eq!(task, "chain-0 (1/1)");
            assert_eq!(operator, "Fragile");
            assert_eq!(message, "boom");
        }
        other => panic!("the job fails: {other:?}"),
    }
    assert!(h.core.is_ended());
    assert_eq!(h.timer, None, "no timer after the end");
}

#[test]
fn an_unrecoverable_error_fails_the_job_at_once() {
    let mut h = Harness::running(&[2], config());
    h.fail_subtask(1, false);
    match h.concluded() {
        Some(Err(JobError::TaskFailed { message, .. })) => {
            assert!(message.contains("a restart cannot fix this"), "{message}");
        }
        other => panic!("the job fails: {other:?}"),
    }
    assert_eq!(h.core.restarts(), 0);
    assert!(
        !h.log
            .iter()
            .any(|o| matches!(o, Output::StopAttempt { .. }))
    );
}

/// Completes checkpoints 1 and 2, reports a sink commit at 2, damages 2 and fails a subtask.
fn restart_past_a_damaged_checkpoint(allow: bool, committed: bool) -> Harness {
    let mut config = config();
    config.allow_fallback_past_commits = allow;
    let mut h = Harness::running(&[1, 1], config);
    for _ in 0..2 {
        let barrier = h.next_checkpoint();
        h.ack_all(barrier.id);
    }
    if committed {
        h.core.handle_committed(
            1,
            vec![CommitReport {
                checkpoint: CheckpointId(2),
                operator: "Sink".to_string(),
                records: 7,
            }],
            h.now,
        );
    }
    h.storage.get_mut(&CheckpointId(2)).expect("stored").damaged = true;
    h.log.clear();
    h.fail_subtask(0, true);
    h.fire_timer();
    h
}

#[test]
fn a_fallback_past_a_damaged_checkpoint_is_refused_after_commits_unless_allowed() {
    let h = restart_past_a_damaged_checkpoint(false, true);
    match h.concluded() {
        Some(Err(JobError::Restore(message))) => {
            assert!(
                message.contains("cannot restart from checkpoint 1"),
                "{message}"
            );
            assert!(message.contains("memory:chk-2/task-0-0.state"), "{message}");
            assert!(
                message.contains("checkpoint 2: Sink in chain-1 (1/1): 7 records"),
                "{message}"
            );
        }
        other => panic!("refused: {other:?}"),
    }
    assert_eq!(h.attempt(), 0, "no attempt deployed");

    let allowed = restart_past_a_damaged_checkpoint(true, true);
    assert!(allowed.concluded().is_none());
    assert_eq!(allowed.attempt(), 1);
    assert_eq!(
        allowed.deployed.as_ref().and_then(|d| d.restored_from),
        Some(CheckpointId(1))
    );

    let nothing_committed = restart_past_a_damaged_checkpoint(false, false);
    assert!(nothing_committed.concluded().is_none());
    assert_eq!(
        nothing_committed.attempt(),
        1,
        "no commit: falling back is safe"
    );
}

#[test]
fn a_restored_checkpoint_with_transactions_counts_as_committed() {
    let mut h = Harness::running(&[1], config());
    let barrier = h.next_checkpoint();
    h.ack_all(barrier.id);
    h.storage.get_mut(&barrier.id).expect("stored").transactions = true;
    h.fail_subtask(0, true);
    h.fire_timer();
    assert_eq!(
        h.attempt(),
        1,
        "restored from 1, whose sinks commit on restore"
    );
    let second = h.next_checkpoint();
    h.ack_all(second.id);
    // Both checkpoints are damaged now: falling back to the beginning would redo the commits
    // that restoring checkpoint 1 made.
    for stored in h.storage.values_mut() {
        stored.damaged = true;
    }
    h.log.clear();
    h.fail_subtask(0, true);
    h.fire_timer();
    match h.concluded() {
        Some(Err(JobError::Restore(message))) => {
            assert!(
                message.contains("cannot restart from the beginning"),
                "{message}"
            );
            assert!(message.contains("checkpoint 1: the transactions pending in it"));
        }
        other => panic!("refused: {other:?}"),
    }
}

#[test]
fn stop_with_savepoint_completes_the_savepoint_then_stops_every_subtask() {
    let mut config = config();
    config.coordinator.interval_ms = None;
    let mut h = Harness::running(&[1, 2], config);
    assert_eq!(h.timer, None, "no periodic checkpoints");
    let target = PathBuf::from("/savepoints");
    let request = h.core.handle_savepoint_request(target.clone(), true, h.now);
    h.pump();
    let triggered = h.triggered();
    assert_eq!(
        triggered.len(),
        1,
        "a savepoint starts at once: {:?}",
        h.log
    );
    let barrier = triggered[0];
    assert_eq!(barrier.kind, CheckpointKind::Savepoint);
    h.log.clear();
    h.ack_all(barrier.id);
    let written = h.log.iter().find_map(|o| match o {
        Output::WriteMetadata { location, metadata } => Some((location.clone(), metadata.kind)),
        _ => None,
    });
    let location = CheckpointLocation {
        id: barrier.id,
        savepoint_target: Some(target),
    };
    assert_eq!(written, Some((location.clone(), CheckpointKind::Savepoint)));
    let done = h.log.iter().find_map(|o| match o {
        Output::SavepointDone { request: r, result } if *r == request => Some(result.clone()),
        _ => None,
    });
    assert!(
        matches!(done, Some(Ok(ref l)) if *l == location),
        "{done:?}"
    );
    let commands = h.commands();
    let complete = commands
        .iter()
        .position(|(_, c)| matches!(c, SubtaskCommand::CheckpointComplete { .. }));
    let stop = commands
        .iter()
        .position(|(_, c)| *c == SubtaskCommand::Stop);
    assert!(
        complete < stop,
        "sinks commit before the stop: {commands:?}"
    );
    assert_eq!(
        commands
            .iter()
            .filter(|(_, c)| *c == SubtaskCommand::Stop)
            .count(),
        3
    );
    assert_eq!(
        h.core.completed_checkpoints(),
        0,
        "a savepoint is no checkpoint"
    );
    for index in 0..3 {
        assert!(h.concluded().is_none());
        h.core.handle_subtask_stopped(0, index, h.now);
        h.pump();
    }
    assert!(matches!(h.concluded(), Some(Ok(JobStatus::Canceled))));
}

#[test]
fn a_failed_savepoint_answers_its_request_and_the_job_goes_on() {
    let mut h = Harness::running(&[1], config());
    let request = h
        .core
        .handle_savepoint_request(PathBuf::from("/sp"), true, h.now);
    h.pump();
    let barrier = h.triggered()[0];
    h.metadata_fails = true;
    h.log.clear();
    h.ack_all(barrier.id);
    assert!(h.log.iter().any(|o| matches!(
        o,
        Output::SavepointDone { request: r, result: Err(JobError::Checkpoint(m)) }
            if *r == request && m.contains("disk full")
    )));
    assert_eq!(h.discarded(), [barrier.id]);
    assert!(h.completed().is_empty());
    // A failed finalisation counts like a decline: with no failures tolerated, a restart.
    assert_eq!(h.core.restarts(), 1);
}

/// Every subtask reports the end of its input; the final checkpoint runs; all finish.
fn run_to_the_end(h: &mut Harness) {
    let attempt = h.attempt();
    h.log.clear();
    for index in 0..h.subtasks() {
        assert!(
            h.triggered().is_empty(),
            "no final checkpoint before all ended"
        );
        h.core.handle_input_finished(attempt, index, h.now);
        h.pump();
    }
    let commands = h.commands();
    assert_eq!(commands.len(), h.subtasks(), "{:?}", h.log);
    let barrier = h.triggered()[0];
    h.log.clear();
    h.ack_all(barrier.id);
    assert_eq!(h.completed(), [barrier.id]);
    assert!(
        h.commands()
            .iter()
            .all(|(_, c)| matches!(c, SubtaskCommand::CheckpointComplete { is_final: true, .. }))
    );
    for index in 0..h.subtasks() {
        assert!(h.concluded().is_none());
        let metrics = vec![(
            NodeId(0),
            OperatorCounters {
                records_in: 10,
                ..OperatorCounters::default()
            },
        )];
        h.core
            .handle_subtask_finished(attempt, index, metrics.clone(), h.now);
        // A duplicate report counts once.
        h.core
            .handle_subtask_finished(attempt, index, metrics, h.now);
        h.pump();
    }
    assert!(matches!(h.concluded(), Some(Ok(JobStatus::Finished))));
    assert_eq!(
        h.core.counters()[&NodeId(0)].records_in,
        10 * h.subtasks() as u64
    );
}

#[test]
fn end_of_input_takes_the_final_checkpoint_then_finishes() {
    let mut h = Harness::running(&[1, 3], config());
    let pending = h.next_checkpoint();
    h.ack(0, pending.id);
    run_to_the_end(&mut h);
    assert_eq!(
        h.core.completed_checkpoints(),
        1,
        "the final one, stored; the pending one was aborted"
    );

    // Without periodic checkpoints the final one only commits: nothing is stored.
    let mut config = config();
    config.coordinator.interval_ms = None;
    let mut h = Harness::running(&[2], config);
    run_to_the_end(&mut h);
    assert!(h.persists.is_empty());
    assert_eq!(h.core.completed_checkpoints(), 0);
    assert!(h.storage.is_empty());
}

#[test]
fn end_of_input_aborts_the_pending_checkpoint_and_a_waiting_savepoint_becomes_the_final_one() {
    let mut h = Harness::running(&[2], config());
    h.auto_persist = false;
    let pending = h.next_checkpoint();
    h.ack(0, pending.id);
    let request = h
        .core
        .handle_savepoint_request(PathBuf::from("/sp"), true, h.now);
    h.log.clear();
    h.core.handle_input_finished(0, 0, h.now);
    h.core.handle_input_finished(0, 1, h.now);
    h.pump();
    assert_eq!(h.discarded(), [pending.id]);
    let commands = h.commands();
    let SubtaskCommand::FinalCheckpoint { barrier, persist } = commands[0].1 else {
        panic!("the final checkpoint: {commands:?}");
    };
    assert!(persist);
    assert_eq!(barrier.kind, CheckpointKind::Savepoint);
    // The aborted checkpoint's write lands late: its folder goes.
    h.auto_persist = true;
    h.persist(0, true);
    h.pump();
    assert!(
        h.log
            .iter()
            .any(|o| matches!(o, Output::DiscardIncomplete(f) if f.name == "chk-1")),
        "{:?}",
        h.log
    );
    // A savepoint asked for now is refused: the final checkpoint commits everything.
    let late = h
        .core
        .handle_savepoint_request(PathBuf::from("/sp"), false, h.now);
    h.pump();
    assert!(h.log.iter().any(|o| matches!(
        o,
        Output::SavepointDone { request, result: Err(_) } if *request == late
    )));
    h.log.clear();
    h.ack_all(barrier.id);
    assert!(h.log.iter().any(|o| matches!(
        o,
        Output::SavepointDone { request: r, result: Ok(_) } if *r == request
    )));
    assert!(
        !h.commands().iter().any(|(_, c)| *c == SubtaskCommand::Stop),
        "a final savepoint needs no stop"
    );
}

#[test]
fn the_run_goes_on_numbering_its_own_checkpoints_and_restores_its_starting_point() {
    let mut config = config();
    config.restore_path = Some(PathBuf::from("/savepoints/savepoint-7"));
    let mut h = Harness::new(plan(&[1]), config);
    let metadata = h.core.plan.metadata(
        CheckpointBarrier {
            id: CheckpointId(7),
            kind: CheckpointKind::Savepoint,
        },
        &BTreeMap::new(),
    );
    let savepoint = restored(&Stored {
        metadata,
        damaged: false,
        transactions: false,
    });
    h.restore_path_answer = Some(Ok((savepoint, Vec::new())));
    h.core.handle_start(h.now);
    h.pump();
    assert_eq!(
        h.deployed.as_ref().and_then(|d| d.restored_from),
        Some(CheckpointId(7))
    );
    assert_eq!(h.next_checkpoint().id, CheckpointId(8));
    // It fails before a checkpoint of its own completed: it restarts from its savepoint.
    h.fail_subtask(0, true);
    h.fire_timer();
    assert_eq!(h.attempt(), 1);
    assert_eq!(
        h.deployed.as_ref().and_then(|d| d.restored_from),
        Some(CheckpointId(7))
    );
}

#[test]
fn a_starting_point_that_cannot_be_read_fails_before_any_deployment() {
    let mut config = config();
    config.restore_path = Some(PathBuf::from("/nowhere"));
    let mut h = Harness::new(plan(&[1]), config);
    h.core.handle_start(h.now);
    h.pump();
    assert!(h.deployed.is_none());
    match h.concluded() {
        Some(Err(JobError::Restore(message))) => assert!(message.contains("/nowhere")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn out_of_range_and_unexpected_inputs_are_errors_or_ignored_never_panics() {
    let mut h = Harness::running(&[1], config());
    let barrier = h.next_checkpoint();
    h.core.handle_acknowledge(0, 9, barrier.id, 0, h.now);
    h.core.handle_input_finished(0, 9, h.now);
    h.core.handle_subtask_finished(0, 9, Vec::new(), h.now);
    h.core.handle_committed(9, Vec::new(), h.now);
    h.core
        .handle_metadata_written(CheckpointId(99), Ok(()), h.now);
    h.core.handle_deployed(5, Ok(()), h.now);
    h.pump();
    assert!(h.concluded().is_none());
    assert!(h.completed().is_empty());
    h.core
        .handle_storage_read(StorageReadResult::CheckpointIds(Vec::new()), h.now);
    h.pump();
    assert!(matches!(h.concluded(), Some(Err(JobError::Internal(m))) if m.contains("no read")));
}

#[test]
fn cancel_ends_the_job_and_fails_every_waiting_savepoint() {
    let mut h = Harness::running(&[2], config());
    h.auto_persist = false;
    let first = h
        .core
        .handle_savepoint_request(PathBuf::from("/sp"), false, h.now);
    h.pump();
    let in_flight = h.triggered()[0];
    let waiting = h
        .core
        .handle_savepoint_request(PathBuf::from("/sp"), false, h.now);
    h.ack(0, in_flight.id);
    h.log.clear();
    h.core.handle_cancel(h.now);
    h.pump();
    let failed: Vec<SavepointRequestId> = h
        .log
        .iter()
        .filter_map(|o| match o {
            Output::SavepointDone {
                request,
                result: Err(_),
            } => Some(*request),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [waiting, first]);
    assert_eq!(h.discarded(), [in_flight.id], "no partial savepoint stays");
    assert!(matches!(h.concluded(), Some(Ok(JobStatus::Canceled))));
    assert_eq!(h.timer, None);
    // The late store lands after the end: nothing happens any more.
    h.log.clear();
    h.persist(0, true);
    h.pump();
    assert!(h.log.is_empty(), "{:?}", h.log);
    let after = h
        .core
        .handle_savepoint_request(PathBuf::from("/sp"), false, h.now);
    h.pump();
    assert!(matches!(
        &h.log[..],
        [Output::SavepointDone { request, result: Err(_) }] if *request == after
    ));
}

#[test]
fn savepoint_requests_wait_their_turn_up_to_a_limit() {
    let mut h = Harness::running(&[1], config());
    let periodic = h.next_checkpoint();
    h.log.clear();
    let requests: Vec<SavepointRequestId> = (0..=SAVEPOINT_REQUESTS_MAX)
        .map(|_| {
            h.core
                .handle_savepoint_request(PathBuf::from("/sp"), false, h.now)
        })
        .collect();
    h.pump();
    assert!(h.triggered().is_empty(), "one checkpoint at a time");
    let refused: Vec<SavepointRequestId> = h
        .log
        .iter()
        .filter_map(|o| match o {
            Output::SavepointDone {
                request,
                result: Err(JobError::Checkpoint(m)),
            } if m.contains("already waiting") => Some(*request),
            _ => None,
        })
        .collect();
    assert_eq!(refused, [requests[SAVEPOINT_REQUESTS_MAX]]);
    // Each completion starts the next savepoint at once, in the order asked.
    h.log.clear();
    h.ack_all(periodic.id);
    for expected in &requests[..SAVEPOINT_REQUESTS_MAX] {
        let triggered = h.triggered();
        assert_eq!(triggered.len(), 1, "{:?}", h.log);
        assert_eq!(triggered[0].kind, CheckpointKind::Savepoint);
        h.log.clear();
        h.ack_all(triggered[0].id);
        assert!(h.log.iter().any(|o| matches!(
            o,
            Output::SavepointDone { request, result: Ok(_) } if request == expected
        )));
    }
    assert!(h.triggered().is_empty());
}

#[test]
fn a_savepoint_interrupted_by_a_restart_is_taken_by_the_next_attempt() {
    let mut h = Harness::running(&[2], config());
    let request = h
        .core
        .handle_savepoint_request(PathBuf::from("/sp"), false, h.now);
    h.pump();
    let first = h.triggered()[0];
    h.ack(0, first.id);
    h.fail_subtask(1, true);
    assert!(
        !h.log
            .iter()
            .any(|o| matches!(o, Output::SavepointDone { .. }))
    );
    h.log.clear();
    h.fire_timer();
    assert_eq!(h.attempt(), 1);
    let again = h.triggered();
    assert_eq!(again.len(), 1, "asked again once deployed: {:?}", h.log);
    assert_eq!(again[0].kind, CheckpointKind::Savepoint);
    assert!(again[0].id > first.id);
    h.log.clear();
    h.ack_all(again[0].id);
    assert!(h.log.iter().any(|o| matches!(
        o,
        Output::SavepointDone { request: r, result: Ok(l) } if *r == request && l.id == again[0].id
    )));
}

#[test]
fn a_final_checkpoint_whose_metadata_cannot_be_stored_restarts_the_job() {
    let mut config = config();
    config.coordinator.tolerable_failures = 10;
    let mut h = Harness::running(&[1], config);
    h.core.handle_input_finished(0, 0, h.now);
    h.pump();
    let barrier = h.triggered()[0];
    h.metadata_fails = true;
    h.ack_all(barrier.id);
    assert!(h.completed().is_empty());
    assert_eq!(
        h.core.restarts(),
        1,
        "the final checkpoint is never tolerated"
    );
    h.fire_timer();
    assert_eq!(h.attempt(), 1);
    run_to_the_end(&mut h);
}

/// What a property-test step does.
#[derive(Debug, Clone)]
enum Step {
    /// Subtask `index` acknowledges the pending checkpoint (or, `stale`, the one before).
    Ack { index: usize, stale: bool },
    /// Store request `k` (modulo the waiting ones) is answered.
    Persisted { k: usize, ok: bool },
    /// Subtask `index` declines the pending checkpoint.
    Decline { index: usize },
    /// Time passes.
    Advance { ms: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..4usize, proptest::bool::weighted(0.1))
            .prop_map(|(index, stale)| Step::Ack { index, stale }),
        4 => (0..8usize, proptest::bool::weighted(0.9))
            .prop_map(|(k, ok)| Step::Persisted { k, ok }),
        1 => (0..4usize).prop_map(|index| Step::Decline { index }),
        2 => (1..1_500i64).prop_map(|ms| Step::Advance { ms }),
    ]
}

proptest! {
    /// Random interleavings of acknowledgements, stores, declines and timeouts: a checkpoint
    /// never completes without every subtask's state stored, an aborted one never completes,
    /// and completions come in increasing id order.
    #[test]
    fn no_checkpoint_completes_without_every_ack_or_out_of_order(
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let mut config = config();
        config.coordinator.tolerable_failures = u32::MAX;
        let mut h = Harness::running(&[1, 3], config);
        h.auto_persist = false;
        let subtasks = h.subtasks();
        let mut stored: BTreeMap<CheckpointId, BTreeSet<usize>> = BTreeMap::new();
        let mut aborted: BTreeSet<CheckpointId> = BTreeSet::new();
        let mut completed: Vec<CheckpointId> = Vec::new();
        let mut seen = 0;
        for step in steps {
            let pending = h.core.in_flight.as_ref().map(|f| f.barrier.id);
            match step {
                Step::Ack { index, stale } => {
                    let id = match pending {
                        Some(id) if stale => CheckpointId(id.0.saturating_sub(1)),
                        Some(id) => id,
                        None => CheckpointId(1),
                    };
                    h.ack(index % subtasks, id);
                }
                Step::Persisted { k, ok } => {
                    if !h.persists.is_empty() {
                        let k = k % h.persists.len();
                        let (_, index, id) = h.persists[k];
                        if ok && Some(id) == pending {
                            stored.entry(id).or_default().insert(index);
                        }
                        h.persist(k, ok);
                        h.pump();
                    }
                }
                Step::Decline { index } => {
                    if let Some(id) = pending {
                        h.core.handle_decline(0, index % subtasks, id, "busy", h.now);
                        h.pump();
                    }
                }
                Step::Advance { ms } => h.advance_to(h.now + ms),
            }
            for output in &h.log[seen..] {
                match output {
                    Output::Discard(location) => {
                        aborted.insert(location.id);
                    }
                    Output::WriteMetadata { location, metadata } => {
                        let all: BTreeSet<usize> = (0..subtasks).collect();
                        prop_assert_eq!(stored.get(&location.id), Some(&all));
                        prop_assert_eq!(metadata.files.len(), subtasks);
                    }
                    Output::ToSubtask {
                        index: 0,
                        command: SubtaskCommand::CheckpointComplete { id, .. },
                        ..
                    } => {
                        prop_assert!(!aborted.contains(id), "aborted {:?} completed", id);
                        prop_assert!(
                            completed.last().is_none_or(|last| last < id),
                            "{:?} after {:?}", id, completed
                        );
                        completed.push(*id);
                    }
                    Output::Concluded(outcome) => {
                        prop_assert!(false, "the job ended: {:?}", outcome);
                    }
                    _ => {}
                }
            }
            seen = h.log.len();
        }
        prop_assert_eq!(h.core.completed_checkpoints(), completed.len() as u64);
    }
}
