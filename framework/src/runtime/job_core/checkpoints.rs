//! The checkpoint lifecycle of the job coordinator core: triggering, acknowledgements and
//! stores, declines, timeouts, the metadata written last, completion and its notification,
//! savepoints and the final checkpoint.
//!
//! ## Invariants
//!
//! - One checkpoint is in flight at most ([`InFlight`]); the coordinator's pending checkpoint is
//!   the in-flight one until every acknowledgement arrived, then the metadata is written
//!   (`finalizing`) and only its success completes the checkpoint.
//! - A subtask's acknowledgement counts once its state is stored (`handle_persisted`), never
//!   before; a commit-only final checkpoint, which stores nothing, counts the acknowledgement
//!   itself.

use super::*;

impl<S> JobCore<S> {
    /// Subtask `index` took its snapshot for checkpoint `id`; `state` is what it acknowledged
    /// with.
    pub(crate) fn handle_acknowledge(
        &mut self,
        attempt: u32,
        index: usize,
        id: CheckpointId,
        state: S,
        now_ms: i64,
    ) {
        if self.is_current(attempt, index)
            && let Some(in_flight) = &self.in_flight
            && in_flight.barrier.id == id
            && in_flight.finalizing.is_none()
        {
            if in_flight.persist {
                self.outputs.push_back(Output::Persist {
                    attempt,
                    index,
                    id,
                    location: in_flight.location.clone(),
                    file_name: self.plan.file_name(index),
                    state,
                });
            } else {
                // A commit-only final checkpoint: nothing to store.
                let event = self.coordinator.acknowledge(id, index, now_ms);
                self.on_coordinator_event(event, now_ms);
            }
        }
        self.settle(now_ms);
    }

    /// Subtask `index` cannot take part in checkpoint `id`.
    pub(crate) fn handle_decline(
        &mut self,
        attempt: u32,
        index: usize,
        id: CheckpointId,
        reason: &str,
        now_ms: i64,
    ) {
        if self.is_current(attempt, index) {
            let reason = format!("{} declined it: {reason}", self.plan.task_name(index));
            let event = self.coordinator.fail(id, reason, now_ms);
            self.on_coordinator_event(event, now_ms);
        }
        self.settle(now_ms);
    }

    /// The answer to an [`Output::Persist`]: subtask `index`'s state for checkpoint `id` is
    /// stored in `folder` (or could not be).
    pub(crate) fn handle_persisted(
        &mut self,
        attempt: u32,
        index: usize,
        id: CheckpointId,
        folder: CheckpointFolder,
        result: Result<FileMetadata, String>,
        now_ms: i64,
    ) {
        let current = self.is_current(attempt, index);
        match self.in_flight.as_mut() {
            Some(in_flight)
                if current
                    && in_flight.barrier.id == id
                    && in_flight.finalizing.is_none()
                    && in_flight.persist =>
            {
                let event = match result {
                    Ok(file) => {
                        in_flight.files.insert(index, file);
                        self.coordinator.acknowledge(id, index, now_ms)
                    }
                    Err(message) => self.coordinator.fail(id, message, now_ms),
                };
                self.on_coordinator_event(event, now_ms);
            }
            // A second store of a checkpoint whose metadata is being written: its folder stays.
            Some(in_flight) if current && in_flight.barrier.id == id => {}
            // A write for a checkpoint that was aborted (or of an earlier attempt) landed
            // after its folder was removed and made it again: remove it, so no partial
            // checkpoint or savepoint folder stays behind.
            _ if self.phase != Phase::Ended => {
                self.outputs.push_back(Output::DiscardIncomplete(folder));
            }
            _ => {}
        }
        self.settle(now_ms);
    }

    /// The answer to an [`Output::WriteMetadata`] for checkpoint `id`.
    pub(crate) fn handle_metadata_written(
        &mut self,
        id: CheckpointId,
        result: Result<(), StorageError>,
        now_ms: i64,
    ) {
        let finalizing = self.phase == Phase::Running
            && self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.barrier.id == id && f.finalizing.is_some());
        if finalizing && let Some(mut in_flight) = self.in_flight.take() {
            match result {
                Ok(()) => {
                    if in_flight.barrier.kind == CheckpointKind::Checkpoint {
                        self.completed_checkpoints += 1;
                        self.outputs.push_back(Output::Prune {
                            retained: self.config.retained,
                        });
                    }
                    let job = self.plan.job_name();
                    tracing::debug!(job = %job, checkpoint = id.0, "checkpoint complete");
                    self.finish_completion(in_flight);
                }
                Err(error) => {
                    let job = self.plan.job_name();
                    tracing::warn!(job = %job, "checkpoint {} failed: {error}", id.0);
                    let event = match in_flight.finalizing.take() {
                        Some(pending) => {
                            self.coordinator
                                .finalization_failed(pending, error.to_string(), now_ms)
                        }
                        None => CoordinatorEvent::Nothing,
                    };
                    self.outputs
                        .push_back(Output::Status(StatusEvent::CheckpointFailed {
                            id,
                            reason: error.to_string(),
                        }));
                    self.outputs
                        .push_back(Output::Discard(in_flight.location.clone()));
                    if let Some(request) = in_flight.savepoint {
                        self.outputs.push_back(Output::SavepointDone {
                            request: request.id,
                            result: Err(JobError::Checkpoint(error.to_string())),
                        });
                    }
                    if in_flight.is_final
                        || matches!(event, CoordinatorEvent::Failed { fail_job: true, .. })
                    {
                        self.fail(
                            JobError::Checkpoint(format!("checkpoint {} failed: {error}", id.0)),
                            now_ms,
                        );
                    }
                }
            }
        }
        self.settle(now_ms);
    }

    /// Every subtask finished its input: take the final checkpoint. A savepoint in flight or
    /// waiting becomes this final checkpoint, stored into the savepoint's target: the savepoint
    /// then holds the final state, and the sinks commit everything when it completes.
    pub(super) fn start_final_checkpoint(&mut self, now_ms: i64) {
        let mut savepoint = None;
        if let Some(aborted) = self.coordinator.job_finishing()
            && self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.barrier.id == aborted.barrier.id)
            && let Some(in_flight) = self.in_flight.take()
        {
            self.outputs.push_back(Output::Discard(in_flight.location));
            savepoint = in_flight.savepoint;
        }
        if savepoint.is_none() {
            savepoint = self.savepoint_requests.pop_front();
        }
        let barrier = if savepoint.is_some() {
            self.coordinator.trigger_final_savepoint(now_ms)
        } else {
            self.coordinator.trigger_final(now_ms)
        };
        let persist = self.config.coordinator.interval_ms.is_some() || savepoint.is_some();
        self.start_checkpoint(barrier, savepoint, true, persist);
    }

    /// Tells every subtask to take checkpoint `barrier` and starts collecting its state.
    pub(super) fn start_checkpoint(
        &mut self,
        barrier: CheckpointBarrier,
        savepoint: Option<SavepointRequest>,
        is_final: bool,
        persist: bool,
    ) {
        let location = CheckpointLocation {
            id: barrier.id,
            savepoint_target: savepoint.as_ref().map(|s| s.target.clone()),
        };
        self.in_flight = Some(InFlight {
            barrier,
            location,
            files: BTreeMap::new(),
            savepoint,
            is_final,
            persist,
            finalizing: None,
        });
        self.outputs
            .push_back(Output::Status(StatusEvent::CheckpointTriggered {
                id: barrier.id,
                savepoint: barrier.kind == CheckpointKind::Savepoint,
                is_final,
            }));
        let command = if is_final {
            SubtaskCommand::FinalCheckpoint { barrier, persist }
        } else {
            SubtaskCommand::TriggerCheckpoint(barrier)
        };
        self.tell_every_subtask(command);
    }

    pub(super) fn tell_every_subtask(&mut self, command: SubtaskCommand) {
        for index in 0..self.plan.subtask_count() {
            self.outputs.push_back(Output::ToSubtask {
                attempt: self.attempt,
                index,
                command,
            });
        }
    }

    pub(super) fn on_coordinator_event(&mut self, event: CoordinatorEvent, now_ms: i64) {
        match event {
            CoordinatorEvent::Nothing => {}
            CoordinatorEvent::Completed(pending) => self.complete_checkpoint(pending),
            CoordinatorEvent::Failed {
                checkpoint,
                reason,
                fail_job,
            } => {
                let id = checkpoint.barrier.id;
                tracing::warn!(job = %self.plan.job_name(), "checkpoint {} failed: {reason}", id.0);
                self.abort_in_flight(id, &reason);
                if fail_job {
                    self.fail(
                        JobError::Checkpoint(format!(
                            "checkpoint {} failed and the tolerable failures are exceeded: \
                             {reason}",
                            id.0
                        )),
                        now_ms,
                    );
                }
            }
        }
    }

    pub(super) fn abort_in_flight(&mut self, id: CheckpointId, reason: &str) {
        if self.in_flight.as_ref().is_some_and(|f| f.barrier.id == id)
            && let Some(in_flight) = self.in_flight.take()
        {
            self.outputs
                .push_back(Output::Status(StatusEvent::CheckpointFailed {
                    id,
                    reason: reason.to_string(),
                }));
            self.outputs.push_back(Output::Discard(in_flight.location));
            if let Some(request) = in_flight.savepoint {
                self.outputs.push_back(Output::SavepointDone {
                    request: request.id,
                    result: Err(JobError::Checkpoint(format!(
                        "savepoint {} failed: {reason}",
                        id.0
                    ))),
                });
            }
        }
    }

    /// Every subtask acknowledged: write the metadata (it completes the checkpoint), or
    /// complete a checkpoint that stores nothing at once.
    pub(super) fn complete_checkpoint(&mut self, pending: PendingCheckpoint) {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return;
        };
        if in_flight.barrier.id != pending.barrier.id {
            return;
        }
        if in_flight.persist {
            let metadata = self.plan.metadata(in_flight.barrier, &in_flight.files);
            let location = in_flight.location.clone();
            in_flight.finalizing = Some(pending);
            self.outputs
                .push_back(Output::WriteMetadata { location, metadata });
        } else if let Some(in_flight) = self.in_flight.take() {
            self.finish_completion(in_flight);
        }
    }

    /// The checkpoint is complete: tell the subtasks (sinks commit), answer its savepoint
    /// request, and stop the job if the savepoint asked for it.
    pub(super) fn finish_completion(&mut self, in_flight: InFlight) {
        self.final_completed |= in_flight.is_final;
        self.outputs
            .push_back(Output::Status(StatusEvent::CheckpointCompleted {
                id: in_flight.barrier.id,
            }));
        self.tell_every_subtask(SubtaskCommand::CheckpointComplete {
            id: in_flight.barrier.id,
            is_final: in_flight.is_final,
        });
        if let Some(request) = in_flight.savepoint {
            self.outputs.push_back(Output::SavepointDone {
                request: request.id,
                result: Ok(in_flight.location),
            });
            // A final savepoint needs no stop: every subtask finishes after committing.
            if request.stop && !in_flight.is_final {
                // Stop after the completion: every subtask handles it (sinks commit) before
                // the in-band stop, then reports; the job ends when all stopped.
                self.stopping = true;
                self.finished.iter_mut().for_each(|f| *f = false);
                self.tell_every_subtask(SubtaskCommand::Stop);
                if self.finished.is_empty() {
                    self.conclude(Ok(JobStatus::Canceled));
                }
            }
        }
    }
}
