//! The subtask actor: a thin adapter around one [`SubtaskCore`].
//!
//! STYLE.md section 1: the core (`runtime/subtask_core.rs`) holds all of a subtask's protocol
//! logic; this actor turns each mailbox message into one `handle_*` call on it, then carries out
//! what the core produced: batches to the consumers' mailboxes, credits back to the producers,
//! acknowledgements and reports to the JobManager, timers through `send_after` on the node's
//! clock. It never awaits inside a handler, so credits, control and cancellation are never stuck
//! behind flow control.
//!
//! ## Message protocol
//!
//! 1. `Wire` (from the JobManager): the actor refs of every channel peer.
//! 2. `Start`: open the chain, grant initial credits upstream, sources start polling.
//! 3. `Data` / `Credit` / `Poll` / `Flush` / `ProcessingTime` while running, and the checkpoint
//!    messages from the JobManager.
//! 4. When all inputs ended (or the source finished) and every batch has been delivered, the
//!    subtask reports the end of its input and waits for the job's final checkpoint; after it
//!    completed, the subtask closes its chain, reports its metrics to the JobManager and stops.
//!
//! A failure the core reports fails the actor with its [`SubtaskError`]; the TaskManager (its
//! supervisor) reports it to the JobManager.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::env::{FaultInjector, InjectedFault, SubtaskInput};
use super::gauges::ChannelGauges;
use super::protocol::{JobManagerMsg, SubtaskArgs, SubtaskMsg};
use super::subtask_core::{SubtaskCore, SubtaskCoreArgs, SubtaskOutput, TimerKind};
use crate::time::Clock;

/// The subtask actor.
pub(crate) struct SubtaskActor;

/// The actor's state: the core, and what only the adapter knows (peers, clock, JobManager).
pub(crate) struct SubtaskState {
    core: SubtaskCore,
    index: usize,
    attempt: u32,
    /// Job-wide channel numbers of the inputs and outputs, for the occupancy gauges.
    input_channels: Vec<usize>,
    output_channels: Vec<usize>,
    outputs: Vec<(ActorRef<SubtaskMsg>, usize)>,
    inputs: Vec<(ActorRef<SubtaskMsg>, usize)>,
    clock: Arc<dyn Clock>,
    job_manager: ActorRef<JobManagerMsg>,
    gauges: Arc<ChannelGauges>,
    faults: Option<Arc<dyn FaultInjector>>,
    subtasks: usize,
    /// Inputs handled so far (batches and source polls), for the fault injector.
    inputs_handled: u64,
    /// Why the TaskManager could not read this subtask's restored state: it fails at `Start`.
    restore_failure: Option<String>,
}

impl SubtaskActor {
    /// Carries out everything the core produced, in order.
    fn carry_out(
        &self,
        myself: &ActorRef<SubtaskMsg>,
        state: &mut SubtaskState,
    ) -> Result<(), ActorProcessingErr> {
        while let Some(output) = state.core.poll_output() {
            match output {
                SubtaskOutput::Transmit { output, batch } => {
                    let (consumer, consumer_input) = &state.outputs[output];
                    state
                        .gauges
                        .sent(state.output_channels[output], batch.records());
                    let message = SubtaskMsg::Data {
                        channel: *consumer_input,
                        batch,
                    };
                    if consumer.send_message(message).is_err() {
                        state.core.handle_peer_gone();
                    }
                }
                SubtaskOutput::ReturnCredit {
                    input,
                    credits,
                    records,
                } => {
                    if records > 0 {
                        state.gauges.consumed(state.input_channels[input], records);
                    }
                    let (producer, producer_output) = &state.inputs[input];
                    // The producer may have finished after sending its last batch; a credit
                    // for a finished producer is moot.
                    let _ = producer.send_message(SubtaskMsg::Credit {
                        channel: *producer_output,
                        credits,
                    });
                }
                SubtaskOutput::Acknowledge { barrier, snapshots } => {
                    let _ = state.job_manager.send_message(JobManagerMsg::Acknowledge {
                        attempt: state.attempt,
                        index: state.index,
                        barrier,
                        snapshots,
                    });
                }
                SubtaskOutput::Decline { id, reason } => {
                    let _ = state.job_manager.send_message(JobManagerMsg::Decline {
                        attempt: state.attempt,
                        index: state.index,
                        id,
                        reason,
                    });
                }
                SubtaskOutput::Committed(commits) => {
                    let _ = state.job_manager.send_message(JobManagerMsg::Committed {
                        index: state.index,
                        commits,
                    });
                }
                SubtaskOutput::ArmTimer { kind, at_ms } => {
                    let delay_ms =
                        u64::try_from(at_ms.saturating_sub(state.clock.now_ms())).unwrap_or(0);
                    let message = match kind {
                        TimerKind::ProcessingTime => || SubtaskMsg::ProcessingTime,
                        TimerKind::Flush => || SubtaskMsg::Flush,
                        TimerKind::IdlePoll => || SubtaskMsg::Poll,
                    };
                    // The timer task runs detached; the handle is not needed.
                    drop(myself.send_after(Duration::from_millis(delay_ms), message));
                }
                SubtaskOutput::PollSoon => myself.send_message(SubtaskMsg::Poll)?,
                SubtaskOutput::InputFinished => {
                    let _ = state
                        .job_manager
                        .send_message(JobManagerMsg::InputFinished {
                            attempt: state.attempt,
                            index: state.index,
                        });
                }
                SubtaskOutput::Finished { metrics } => {
                    let _ = state
                        .job_manager
                        .send_message(JobManagerMsg::SubtaskFinished {
                            attempt: state.attempt,
                            index: state.index,
                            metrics,
                        });
                    myself.stop(None);
                }
                SubtaskOutput::Stopped => {
                    let _ = state
                        .job_manager
                        .send_message(JobManagerMsg::SubtaskStopped {
                            attempt: state.attempt,
                            index: state.index,
                        });
                    myself.stop(None);
                }
                SubtaskOutput::Failed(error) => return Err(Box::new(error)),
            }
        }
        Ok(())
    }
}

impl Actor for SubtaskActor {
    type Msg = SubtaskMsg;
    type State = SubtaskState;
    type Arguments = SubtaskArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SubtaskMsg>,
        args: SubtaskArgs,
    ) -> Result<SubtaskState, ActorProcessingErr> {
        let plan = &args.graph.subtasks[args.index];
        let input_channels = plan.inputs.iter().map(|c| c.channel).collect();
        let output_channels = plan.outputs.iter().map(|c| c.channel).collect();
        // A share its TaskManager could not read fails the subtask when it starts (a failure
        // in `pre_start` would fail the deployment, and with it the job, without a restart).
        let (restored, restore_failure) = match args.restored {
            Ok(restored) => (restored, None),
            Err(error) => (std::collections::BTreeMap::new(), Some(error)),
        };
        let core = SubtaskCore::build(SubtaskCoreArgs {
            graph: Arc::clone(&args.graph),
            registry: Arc::clone(&args.registry),
            index: args.index,
            config: args.config,
            job_name: args.job_name,
            attempt_number: args.attempt_number,
            job_id: args.job_id,
            restored,
            restored_from: args.restored_from,
            local_dir: args.local_dir,
            metrics: Some(args.metrics),
        })?;
        Ok(SubtaskState {
            core,
            index: args.index,
            attempt: args.attempt_number,
            input_channels,
            output_channels,
            outputs: Vec::new(),
            inputs: Vec::new(),
            clock: args.clock,
            job_manager: args.job_manager,
            gauges: args.gauges,
            faults: args.faults,
            subtasks: args.graph.subtasks.len(),
            inputs_handled: 0,
            restore_failure,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SubtaskMsg>,
        message: SubtaskMsg,
        state: &mut SubtaskState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(faults) = &state.faults
            && matches!(
                message,
                SubtaskMsg::Data { .. } | SubtaskMsg::Poll | SubtaskMsg::TriggerCheckpoint(_)
            )
        {
            state.inputs_handled += 1;
            let at = SubtaskInput {
                subtask: state.index,
                subtasks: state.subtasks,
                attempt: state.attempt,
                input: state.inputs_handled,
                now_ms: state.clock.now_ms(),
            };
            match faults.before_input(at) {
                None => {}
                Some(InjectedFault::Fail(reason)) => {
                    state.core.handle_injected_failure(&reason);
                    return self.carry_out(&myself, state);
                }
                Some(InjectedFault::Stall(duration)) => tokio::time::sleep(duration).await,
            }
        }
        let now_ms = state.clock.now_ms();
        let core = &mut state.core;
        match message {
            SubtaskMsg::Wire { outputs, inputs } => {
                assert_eq!(outputs.len(), core.output_count());
                assert_eq!(inputs.len(), core.input_count());
                state.outputs = outputs;
                state.inputs = inputs;
                return Ok(());
            }
            SubtaskMsg::Start => match state.restore_failure.take() {
                Some(error) => core.handle_restore_failure(error),
                None => core.handle_start(now_ms),
            },
            SubtaskMsg::Data { channel, batch } => core.handle_batch(now_ms, channel, batch),
            SubtaskMsg::Credit { channel, credits } => {
                core.handle_credit(now_ms, channel, credits);
            }
            SubtaskMsg::Poll => core.handle_poll(now_ms),
            SubtaskMsg::Flush => core.handle_timer(now_ms, TimerKind::Flush),
            SubtaskMsg::ProcessingTime => core.handle_timer(now_ms, TimerKind::ProcessingTime),
            SubtaskMsg::TriggerCheckpoint(barrier) => {
                core.handle_trigger_checkpoint(now_ms, barrier);
            }
            SubtaskMsg::FinalCheckpoint { barrier, persist } => {
                core.handle_final_checkpoint(now_ms, barrier, persist);
            }
            SubtaskMsg::CheckpointComplete { id, is_final } => {
                core.handle_checkpoint_complete(now_ms, id, is_final);
            }
            SubtaskMsg::Stop => core.handle_stop(now_ms),
        }
        self.carry_out(&myself, state)
    }
}

impl std::fmt::Debug for SubtaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}
