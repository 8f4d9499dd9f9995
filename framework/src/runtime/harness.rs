//! A harness that runs whole small jobs on subtask cores, without actors or tokio.
//!
//! In the spirit of quinn-proto's `Pair`: every subtask of the job is a [`SubtaskCore`], wired
//! to the others and to a small coordinator in a plain loop on virtual time. Messages travel in
//! ordered queues, one per (sender, receiver) pair, as actor mailboxes deliver them; which
//! non-empty queue delivers next is chosen by a seeded generator, so one seed is one
//! interleaving and many seeds explore many. Timers fire when virtual time reaches them; time
//! advances by one millisecond per delivered message and jumps to the next timer when nothing
//! else is pending.
//!
//! The coordinator here is deliberately small: it triggers periodic checkpoints, completes one
//! when every subtask acknowledged it, runs the final checkpoint once every subtask finished its
//! input, and after a recoverable failure restarts every subtask from the newest completed
//! checkpoint (each subtask gets back its own snapshots: the parallelism does not change). It
//! keeps completed checkpoints in memory and writes nothing. Storage, savepoints and the
//! restart strategy's policies are the JobManager's and are tested there.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::subtask_core::{SubtaskCore, SubtaskCoreArgs, SubtaskError, SubtaskOutput, TimerKind};
use crate::api::{ExecutionConfig, StreamEnv};
use crate::checkpoint::{CheckpointBarrier, CheckpointId, CheckpointKind, JobId};
use crate::graph::{ExecutionGraph, JobGraph};
use crate::operator::{ErasedBatch, PendingOperatorSnapshot};
use crate::state::OperatorSnapshot;

/// Who sends or receives a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Endpoint {
    Subtask(usize),
    Coordinator,
}

/// A message in flight.
enum Message {
    Data {
        channel: usize,
        batch: ErasedBatch,
    },
    Credit {
        channel: usize,
        credits: u32,
    },
    Poll,
    Trigger(CheckpointBarrier),
    Final(CheckpointBarrier),
    Complete {
        id: CheckpointId,
        is_final: bool,
    },
    Ack {
        barrier: CheckpointBarrier,
        snapshots: Vec<(String, PendingOperatorSnapshot)>,
    },
    Decline(CheckpointId),
    InputFinished,
    Finished,
    Failed(SubtaskError),
}

impl Message {
    fn label(&self) -> String {
        match self {
            Self::Data { channel, batch } => format!("data c{channel} n{}", batch.records()),
            Self::Credit { channel, credits } => format!("credit c{channel} +{credits}"),
            Self::Poll => "poll".to_string(),
            Self::Trigger(b) => format!("trigger {}", b.id.0),
            Self::Final(b) => format!("final {}", b.id.0),
            Self::Complete { id, is_final } => format!("complete {} {is_final}", id.0),
            Self::Ack { barrier, .. } => format!("ack {}", barrier.id.0),
            Self::Decline(id) => format!("decline {}", id.0),
            Self::InputFinished => "input finished".to_string(),
            Self::Finished => "finished".to_string(),
            Self::Failed(error) => format!("failed: {error}"),
        }
    }
}

/// How a harness run ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Every subtask finished after the final checkpoint.
    Finished,
    /// A subtask failed and no restart was left.
    Failed(SubtaskError),
    /// The step budget ran out first (a livelock or a job that never ends).
    OutOfSteps,
}

/// A checkpoint waiting for acknowledgements.
struct InFlight {
    barrier: CheckpointBarrier,
    is_final: bool,
    acks: BTreeMap<usize, Vec<(String, PendingOperatorSnapshot)>>,
}

/// A job's subtask cores and a minimal coordinator, on virtual time.
pub(crate) struct Harness {
    graph: Arc<ExecutionGraph>,
    registry: Arc<super::registry::OperatorRegistry>,
    config: ExecutionConfig,
    cores: Vec<SubtaskCore>,
    /// Per subtask: job-wide channel numbers of its inputs and outputs, and the peer (subtask,
    /// channel index there) of each.
    inputs: Vec<Vec<(usize, usize, usize)>>,
    outputs: Vec<Vec<(usize, usize, usize)>>,
    queues: BTreeMap<(Endpoint, Endpoint), VecDeque<Message>>,
    timers: BTreeSet<(i64, u64, usize, TimerKind)>,
    timer_seq: u64,
    now_ms: i64,
    rng: u64,
    local_dir: tempfile::TempDir,
    // The coordinator.
    attempt: u32,
    restarts_left: u32,
    next_checkpoint: u64,
    next_trigger_ms: Option<i64>,
    in_flight: Option<InFlight>,
    latest: Option<(CheckpointId, Vec<BTreeMap<String, OperatorSnapshot>>)>,
    input_finished: Vec<bool>,
    finished: Vec<bool>,
    outcome: Option<Outcome>,
    // Observations.
    /// Batches sent and not yet given back as credit, per job-wide channel, and the maximum.
    in_flight_batches: Vec<u32>,
    max_in_flight_batches: u32,
    completed: Vec<CheckpointId>,
    trace: Vec<String>,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    crate::state::splitmix64(*state)
}

impl Harness {
    /// Builds the job declared on `env` and starts every subtask. `seed` picks the delivery
    /// order; `restarts` is how many recoverable failures the job survives.
    pub(crate) fn new(env: &StreamEnv, seed: u64, restarts: u32) -> Self {
        let (stream, registry, config, _) = env.take_graph().expect("a valid job");
        let registry = Arc::new(registry);
        let job = JobGraph::build(stream, &config).expect("a valid job graph");
        let graph = Arc::new(ExecutionGraph::build(job));
        let count = graph.subtasks.len();
        let inputs = graph
            .subtasks
            .iter()
            .map(|plan| {
                plan.inputs
                    .iter()
                    .map(|c| (c.channel, c.producer, c.producer_output))
                    .collect()
            })
            .collect();
        let outputs = graph
            .subtasks
            .iter()
            .map(|plan| {
                plan.outputs
                    .iter()
                    .map(|c| (c.channel, c.consumer, c.consumer_input))
                    .collect()
            })
            .collect();
        let next_trigger_ms = config
            .checkpointing
            .interval_ms
            .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
        let mut harness = Self {
            in_flight_batches: vec![0; graph.channel_count],
            graph,
            registry,
            config,
            cores: Vec::new(),
            inputs,
            outputs,
            queues: BTreeMap::new(),
            timers: BTreeSet::new(),
            timer_seq: 0,
            now_ms: 0,
            rng: seed,
            local_dir: tempfile::tempdir().expect("a temporary directory"),
            attempt: 0,
            restarts_left: restarts,
            next_checkpoint: 1,
            next_trigger_ms,
            in_flight: None,
            latest: None,
            input_finished: vec![false; count],
            finished: vec![false; count],
            outcome: None,
            max_in_flight_batches: 0,
            completed: Vec::new(),
            trace: Vec::new(),
        };
        harness.deploy();
        harness
    }

    /// Builds and starts every subtask core of the current attempt, restored from the newest
    /// completed checkpoint if there is one.
    fn deploy(&mut self) {
        let count = self.graph.subtasks.len();
        let (restored_from, mut restored) = match &self.latest {
            Some((id, snapshots)) => (Some(*id), snapshots.clone()),
            None => (None, vec![BTreeMap::new(); count]),
        };
        self.cores = (0..count)
            .map(|index| {
                SubtaskCore::build(SubtaskCoreArgs {
                    graph: Arc::clone(&self.graph),
                    registry: Arc::clone(&self.registry),
                    index,
                    config: self.config.clone(),
                    job_name: "harness".to_string(),
                    attempt_number: self.attempt,
                    job_id: JobId::from_seed(0xE1C4),
                    restored: std::mem::take(&mut restored[index]),
                    restored_from,
                    local_dir: self
                        .local_dir
                        .path()
                        .join(format!("attempt-{}/subtask-{index}", self.attempt)),
                    metrics: None,
                })
                .expect("the chain assembles")
            })
            .collect();
        self.input_finished = vec![false; count];
        self.finished = vec![false; count];
        for index in 0..count {
            self.cores[index].handle_start(self.now_ms);
            self.collect(index);
        }
    }

    /// The trace of delivered messages, one line each: equal for equal seeds.
    pub(crate) fn trace(&self) -> &[String] {
        &self.trace
    }

    /// The checkpoints that completed, in order (the final one included).
    pub(crate) fn completed(&self) -> &[CheckpointId] {
        &self.completed
    }

    /// The most batches ever sent on one channel and not yet credited back.
    pub(crate) fn max_in_flight_batches(&self) -> u32 {
        self.max_in_flight_batches
    }

    /// The attempt number (0 before any restart).
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Runs until the job ends or `max_steps` messages were delivered.
    pub(crate) fn run(&mut self, max_steps: u64) -> Outcome {
        for _ in 0..max_steps {
            if let Some(outcome) = self.outcome.take() {
                return outcome;
            }
            if !self.step() {
                break;
            }
        }
        self.outcome.take().unwrap_or(Outcome::OutOfSteps)
    }

    /// Delivers one message or fires one timer; false when nothing can ever happen again.
    fn step(&mut self) -> bool {
        self.maybe_trigger();
        let ready: Vec<(Endpoint, Endpoint)> = self
            .queues
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(key, _)| *key)
            .collect();
        let due_timer = self
            .timers
            .first()
            .is_some_and(|(at, ..)| *at <= self.now_ms);
        let choices = ready.len() + usize::from(due_timer);
        if choices == 0 {
            // Idle: jump to the next timer or the next periodic trigger.
            let next = self
                .timers
                .first()
                .map(|(at, ..)| *at)
                .into_iter()
                .chain(self.next_trigger_ms.filter(|_| self.in_flight.is_none()))
                .min();
            return match next {
                Some(at) => {
                    self.now_ms = self.now_ms.max(at);
                    true
                }
                None => false,
            };
        }
        let pick = usize::try_from(splitmix64(&mut self.rng) % choices as u64).unwrap_or(0);
        self.now_ms += 1;
        if pick == ready.len() {
            let (at, seq, index, kind) = self.timers.pop_first().expect("a due timer");
            let _ = (at, seq);
            self.trace
                .push(format!("{} -> s{index}: timer {kind:?}", self.now_ms));
            self.cores[index].handle_timer(self.now_ms, kind);
            self.collect(index);
            return true;
        }
        let (from, to) = ready[pick];
        let message = self
            .queues
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front)
            .expect("a non-empty queue");
        self.trace.push(format!(
            "{} {from:?} -> {to:?}: {}",
            self.now_ms,
            message.label()
        ));
        match to {
            Endpoint::Subtask(index) => self.deliver_to_subtask(index, message),
            Endpoint::Coordinator => {
                let Endpoint::Subtask(index) = from else {
                    unreachable!("the coordinator sends only to subtasks")
                };
                self.deliver_to_coordinator(index, message);
            }
        }
        true
    }

    fn deliver_to_subtask(&mut self, index: usize, message: Message) {
        let now = self.now_ms;
        let core = &mut self.cores[index];
        match message {
            Message::Data { channel, batch } => core.handle_batch(now, channel, batch),
            Message::Credit { channel, credits } => core.handle_credit(now, channel, credits),
            Message::Poll => core.handle_poll(now),
            Message::Trigger(barrier) => core.handle_trigger_checkpoint(now, barrier),
            Message::Final(barrier) => core.handle_final_checkpoint(now, barrier, true),
            Message::Complete { id, is_final } => {
                core.handle_checkpoint_complete(now, id, is_final);
            }
            other => unreachable!("a subtask does not receive {}", other.label()),
        }
        self.collect(index);
    }

    /// Carries out what core `index` produced.
    fn collect(&mut self, index: usize) {
        let me = Endpoint::Subtask(index);
        while let Some(output) = self.cores[index].poll_output() {
            let (to, message) = match output {
                SubtaskOutput::Transmit { output, batch } => {
                    let (channel, consumer, consumer_input) = self.outputs[index][output];
                    self.in_flight_batches[channel] += 1;
                    self.max_in_flight_batches = self
                        .max_in_flight_batches
                        .max(self.in_flight_batches[channel]);
                    (
                        Endpoint::Subtask(consumer),
                        Message::Data {
                            channel: consumer_input,
                            batch,
                        },
                    )
                }
                SubtaskOutput::ReturnCredit { input, credits, .. } => {
                    let (channel, producer, producer_output) = self.inputs[index][input];
                    self.in_flight_batches[channel] =
                        self.in_flight_batches[channel].saturating_sub(credits);
                    (
                        Endpoint::Subtask(producer),
                        Message::Credit {
                            channel: producer_output,
                            credits,
                        },
                    )
                }
                SubtaskOutput::Acknowledge { barrier, snapshots } => {
                    (Endpoint::Coordinator, Message::Ack { barrier, snapshots })
                }
                SubtaskOutput::Decline { id, .. } => (Endpoint::Coordinator, Message::Decline(id)),
                SubtaskOutput::Committed(_) => continue,
                SubtaskOutput::ArmTimer { kind, at_ms } => {
                    self.timer_seq += 1;
                    self.timers.insert((at_ms, self.timer_seq, index, kind));
                    continue;
                }
                SubtaskOutput::PollSoon => (me, Message::Poll),
                SubtaskOutput::InputFinished => (Endpoint::Coordinator, Message::InputFinished),
                SubtaskOutput::Finished { .. } => (Endpoint::Coordinator, Message::Finished),
                SubtaskOutput::Stopped => continue,
                SubtaskOutput::Failed(error) => (Endpoint::Coordinator, Message::Failed(error)),
            };
            self.queues.entry((me, to)).or_default().push_back(message);
        }
    }

    fn send_all(&mut self, make: impl Fn() -> Message) {
        for index in 0..self.cores.len() {
            self.queues
                .entry((Endpoint::Coordinator, Endpoint::Subtask(index)))
                .or_default()
                .push_back(make());
        }
    }

    /// Triggers a periodic checkpoint when one is due and none is in flight.
    fn maybe_trigger(&mut self) {
        let Some(due) = self.next_trigger_ms else {
            return;
        };
        if self.in_flight.is_some() || self.now_ms < due || self.input_finished.iter().all(|f| *f) {
            return;
        }
        let interval = self.config.checkpointing.interval_ms.unwrap_or(1);
        self.next_trigger_ms = Some(self.now_ms + i64::try_from(interval).unwrap_or(i64::MAX));
        let barrier = self.next_barrier();
        self.in_flight = Some(InFlight {
            barrier,
            is_final: false,
            acks: BTreeMap::new(),
        });
        self.send_all(|| Message::Trigger(barrier));
    }

    fn next_barrier(&mut self) -> CheckpointBarrier {
        let barrier = CheckpointBarrier {
            id: CheckpointId(self.next_checkpoint),
            kind: CheckpointKind::Checkpoint,
        };
        self.next_checkpoint += 1;
        barrier
    }

    fn deliver_to_coordinator(&mut self, index: usize, message: Message) {
        match message {
            Message::Ack { barrier, snapshots } => {
                let Some(in_flight) = &mut self.in_flight else {
                    return;
                };
                if in_flight.barrier != barrier {
                    return;
                }
                assert!(
                    in_flight.acks.insert(index, snapshots).is_none(),
                    "subtask {index} acknowledged checkpoint {} twice",
                    barrier.id.0
                );
                if in_flight.acks.len() == self.cores.len() {
                    self.complete_checkpoint();
                }
            }
            Message::Decline(id) => {
                if self.in_flight.as_ref().is_some_and(|f| f.barrier.id == id) {
                    self.in_flight = None;
                }
            }
            Message::InputFinished => {
                self.input_finished[index] = true;
                if self.input_finished.iter().all(|f| *f) {
                    // The final checkpoint replaces whatever periodic one is in flight.
                    let barrier = self.next_barrier();
                    self.in_flight = Some(InFlight {
                        barrier,
                        is_final: true,
                        acks: BTreeMap::new(),
                    });
                    self.send_all(|| Message::Final(barrier));
                }
            }
            Message::Finished => {
                self.finished[index] = true;
                if self.finished.iter().all(|f| *f) {
                    self.outcome = Some(Outcome::Finished);
                }
            }
            Message::Failed(error) => {
                if error.recoverable && self.restarts_left > 0 {
                    self.restarts_left -= 1;
                    self.restart();
                } else {
                    self.outcome = Some(Outcome::Failed(error));
                }
            }
            other => unreachable!("the coordinator does not receive {}", other.label()),
        }
    }

    fn complete_checkpoint(&mut self) {
        let in_flight = self.in_flight.take().expect("a checkpoint in flight");
        let id = in_flight.barrier.id;
        let snapshots = in_flight
            .acks
            .into_values()
            .map(|parts| {
                parts
                    .into_iter()
                    .map(|(state_id, pending)| {
                        (state_id, pending.complete().expect("a readable snapshot"))
                    })
                    .collect()
            })
            .collect();
        self.latest = Some((id, snapshots));
        self.completed.push(id);
        let is_final = in_flight.is_final;
        self.send_all(|| Message::Complete { id, is_final });
    }

    /// Drops every subtask and every message and timer of the failed attempt, and deploys the
    /// next attempt from the newest completed checkpoint.
    fn restart(&mut self) {
        self.trace.push(format!("{} restart", self.now_ms));
        self.queues.clear();
        self.timers.clear();
        self.in_flight = None;
        self.in_flight_batches.iter_mut().for_each(|n| *n = 0);
        self.attempt += 1;
        self.deploy();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::{Harness, Outcome};
    use crate::api::{Operator, SinkContext, TwoPhaseCommitSink, Unkeyed};
    use crate::operator::window::{TimeDomain, WindowAssigner};
    use crate::prelude::*;

    const SEEDS: u64 = 24;
    const STEPS: u64 = 2_000_000;

    /// Committed rows per transaction name.
    type Table = Arc<Mutex<BTreeMap<String, Vec<(u64, u64)>>>>;

    /// An exactly-once sink into a shared table: a transaction's rows become visible when it
    /// commits, under its unique name, so a repeated commit stores the same rows again.
    #[derive(Clone, Default)]
    struct TableSink {
        table: Table,
        prefix: String,
        next: u64,
    }

    impl Operator for TableSink {}
    impl Unkeyed for TableSink {}

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Staged {
        name: String,
        rows: Vec<(u64, u64)>,
    }

    impl TwoPhaseCommitSink<(u64, u64)> for TableSink {
        type Txn = Staged;

        fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
            self.prefix = format!("{}-{}", ctx.subtask_index, ctx.attempt_number);
            Ok(())
        }
        fn begin_transaction(&mut self) -> Result<Staged, FunctionError> {
            self.next += 1;
            Ok(Staged {
                name: format!("{}-{}", self.prefix, self.next),
                rows: Vec::new(),
            })
        }
        fn invoke(
            &mut self,
            txn: &mut Staged,
            value: (u64, u64),
            _ctx: &SinkContext,
        ) -> Result<(), FunctionError> {
            txn.rows.push(value);
            Ok(())
        }
        fn pre_commit(&mut self, _txn: &mut Staged) -> Result<(), FunctionError> {
            Ok(())
        }
        fn commit(&mut self, txn: Staged) -> Result<(), FunctionError> {
            if !txn.rows.is_empty() {
                self.table
                    .lock()
                    .map_err(|_| "table poisoned")?
                    .insert(txn.name, txn.rows);
            }
            Ok(())
        }
        fn abort(&mut self, _txn: Staged) -> Result<(), FunctionError> {
            Ok(())
        }
    }

    /// Panics at the `at`-th record it sees over all attempts (once).
    fn failing_at(at: u64) -> impl Fn(u64) -> u64 + Clone + Send + 'static {
        let seen = Arc::new(AtomicU64::new(0));
        move |value| {
            if seen.fetch_add(1, Ordering::SeqCst) + 1 == at {
                panic!("injected failure at record {at}");
            }
            value
        }
    }

    fn small_batches(env: &StreamEnv) {
        env.configure(|c| {
            c.batch_records_max = 4;
            c.credits_per_channel = 2;
            c.source_poll_records_max = 8;
        });
    }

    /// Per key `value % 5`: the running sum of the values `1..=records`.
    fn rolling_sums(env: &StreamEnv, records: u64, fail_at: Option<u64>) -> TableSink {
        let sink = TableSink::default();
        env.from_generator(records, |i| i + 1)
            .map(fail_at.map_or_else(|| failing_at(0), failing_at))
            .map(|v: u64| (v % 5, v))
            .key_by(|pair: &(u64, u64)| pair.0)
            .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
            .add_two_phase_sink(sink.clone());
        sink
    }

    /// Checks exactly-once rolling sums: per key one output per input record (nothing lost,
    /// nothing twice), the largest being the key's total.
    fn check_rolling_sums(sink: &TableSink, records: u64, seed: u64) {
        let mut per_key: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (key, sum) in sink.table.lock().unwrap().values().flatten() {
            per_key.entry(*key).or_default().push(*sum);
        }
        for key in 0..5 {
            let values: Vec<u64> = (1..=records).filter(|v| v % 5 == key).collect();
            let outputs = per_key.remove(&key).unwrap_or_default();
            assert_eq!(
                outputs.len(),
                values.len(),
                "seed {seed}: key {key} has {} outputs for {} records",
                outputs.len(),
                values.len()
            );
            assert_eq!(
                outputs.iter().max().copied(),
                Some(values.iter().sum()),
                "seed {seed}: key {key}'s total"
            );
        }
    }

    #[test]
    fn a_keyed_job_commits_every_record_once_under_many_interleavings() {
        for parallelism in [1, 2, 4] {
            for seed in 0..SEEDS {
                let env = StreamEnv::new();
                env.set_parallelism(parallelism);
                env.enable_checkpointing(7);
                small_batches(&env);
                let sink = rolling_sums(&env, 300, None);
                let mut harness = Harness::new(&env, seed, 0);
                let outcome = harness.run(STEPS);
                assert!(
                    matches!(outcome, Outcome::Finished),
                    "seed {seed}: {outcome:?}"
                );
                check_rolling_sums(&sink, 300, seed);
                assert!(
                    harness.completed().len() > 1,
                    "seed {seed}: periodic checkpoints completed before the final one"
                );
            }
        }
    }

    /// A failure in the middle restarts every subtask from the newest completed checkpoint;
    /// the aligned barriers made that checkpoint consistent, so the committed output is still
    /// every record exactly once, whatever the interleaving.
    #[test]
    fn a_failure_restarts_from_the_last_checkpoint_exactly_once() {
        for parallelism in [2, 4] {
            for seed in 0..SEEDS {
                let env = StreamEnv::new();
                env.set_parallelism(parallelism);
                env.enable_checkpointing(5);
                small_batches(&env);
                let sink = rolling_sums(&env, 400, Some(250));
                let mut harness = Harness::new(&env, seed, 1);
                let outcome = harness.run(STEPS);
                assert!(
                    matches!(outcome, Outcome::Finished),
                    "seed {seed}: {outcome:?}"
                );
                assert_eq!(harness.attempt(), 1, "seed {seed}: one restart");
                check_rolling_sums(&sink, 400, seed);
            }
        }
    }

    #[test]
    fn without_a_restart_left_the_failure_names_the_operator() {
        let env = StreamEnv::new();
        env.set_parallelism(2);
        small_batches(&env);
        let _sink = rolling_sums(&env, 100, Some(30));
        let outcome = Harness::new(&env, 7, 0).run(STEPS);
        let Outcome::Failed(error) = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert_eq!(error.operator, "Map");
        assert!(
            error.message.contains("injected failure at record 30"),
            "{error}"
        );
    }

    #[test]
    fn credits_bound_the_batches_in_flight_on_every_channel() {
        for seed in 0..SEEDS {
            let env = StreamEnv::new();
            env.set_parallelism(2);
            small_batches(&env);
            let _sink = rolling_sums(&env, 500, None);
            let mut harness = Harness::new(&env, seed, 0);
            assert!(matches!(harness.run(STEPS), Outcome::Finished));
            let max = harness.max_in_flight_batches();
            assert!(max <= 2, "seed {seed}: {max} batches in flight, 2 credits");
            assert!(max > 0);
        }
    }

    /// Event-time windows fire from the minimum watermark over all input channels: the sums
    /// per key and window equal a sequential computation, whatever the interleaving.
    #[test]
    fn watermarks_fire_every_window_once_with_its_whole_content() {
        let records = 400u64;
        let mut expected: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for v in 1..=records {
            *expected.entry((v % 3, v / 20)).or_default() += v;
        }
        let mut expected: Vec<(u64, u64)> = expected
            .into_iter()
            .map(|((key, _), sum)| (key, sum))
            .collect();
        expected.sort_unstable();
        for parallelism in [1, 2, 4] {
            for seed in 0..SEEDS {
                let env = StreamEnv::new();
                env.set_parallelism(parallelism);
                small_batches(&env);
                let sums = env
                    .from_generator(records, |i| i + 1)
                    .assign_timestamps_and_watermarks(
                        WatermarkStrategy::for_bounded_out_of_orderness(0)
                            .with_timestamp_assigner(|v: &u64, _| i64::try_from(*v).unwrap()),
                    )
                    .map(|v: u64| (v % 3, v))
                    .key_by(|pair: &(u64, u64)| pair.0)
                    .window(WindowAssigner::tumbling(TimeDomain::EventTime, 20, 0).unwrap())
                    .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
                    .collect_sink();
                let outcome = Harness::new(&env, seed, 0).run(STEPS);
                assert!(
                    matches!(outcome, Outcome::Finished),
                    "seed {seed}: {outcome:?}"
                );
                let mut got = sums.take();
                got.sort_unstable();
                assert_eq!(got, expected, "parallelism {parallelism}, seed {seed}");
            }
        }
    }

    #[test]
    fn one_seed_is_one_interleaving() {
        let trace = |seed| {
            let env = StreamEnv::new();
            env.set_parallelism(2);
            env.enable_checkpointing(5);
            small_batches(&env);
            let _sink = rolling_sums(&env, 200, Some(120));
            let mut harness = Harness::new(&env, seed, 1);
            assert!(matches!(harness.run(STEPS), Outcome::Finished));
            harness.trace().to_vec()
        };
        assert_eq!(trace(3), trace(3));
        assert_ne!(trace(3), trace(4), "another seed, another interleaving");
    }
}
