//! Per-subtask cells (relaxed atomics written once per step by the subtask core; the state size
//! by the JobManager when the state file is stored), the core's
//! writer that keeps the counts in plain integers between steps, and serialisable snapshots.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::user::{MetricGroup, UserMetricSnapshot, UserMetrics};
use crate::graph::ExecutionGraph;
use crate::operator::{NodeId, OperatorCounters};

/// The watermark value of a subtask that has not seen one yet (`i64::MIN`, as Flink's
/// `Long.MIN_VALUE`).
pub const WATERMARK_NONE: i64 = i64::MIN;

/// The window over which the writer measures records per second, in ms of the node's clock.
pub const RATE_WINDOW_MS: i64 = 1_000;

/// One operator's counters inside a subtask.
#[derive(Debug)]
struct OperatorCells {
    node: NodeId,
    name: String,
    /// The id its state is stored under (uid or generated), to place its share of a state file.
    state_id: String,
    records_in: AtomicU64,
    records_out: AtomicU64,
    late_records: AtomicU64,
    dropped_records: AtomicU64,
    state_bytes: AtomicU64,
}

/// The live metrics of one subtask: written by its subtask core once per step, read by
/// anyone (the REST server, Prometheus, the progress line).
#[derive(Debug)]
pub struct SubtaskMetrics {
    vertex: u32,
    index: u32,
    /// The TaskManager the subtask runs on (`"local"` in one process).
    task_manager: String,
    records_in: AtomicU64,
    records_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    backpressured_ms: AtomicU64,
    input_queue_batches: AtomicU64,
    input_queue_capacity: AtomicU64,
    output_queue_batches: AtomicU64,
    input_watermark: AtomicI64,
    output_watermark: AtomicI64,
    last_alignment_ms: AtomicU64,
    checkpoints_acknowledged: AtomicU64,
    state_bytes: AtomicU64,
    /// Records in and out per second over the last full [`RATE_WINDOW_MS`] window, as `f64`
    /// bits, and the node-clock time that window ended.
    records_in_per_s: AtomicU64,
    records_out_per_s: AtomicU64,
    rates_at_ms: AtomicI64,
    /// The attempt whose core writes the cells.
    attempt: AtomicU64,
    operators: Vec<OperatorCells>,
    user: Arc<UserMetrics>,
}

impl SubtaskMetrics {
    /// Empty cells for subtask `index` of vertex `vertex`, whose chain holds `operators`
    /// (graph node, name, and the id its state is stored under).
    pub fn new(
        vertex: u32,
        index: u32,
        task_manager: impl Into<String>,
        operators: Vec<(NodeId, String, String)>,
    ) -> Self {
        Self {
            vertex,
            index,
            task_manager: task_manager.into(),
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            backpressured_ms: AtomicU64::new(0),
            input_queue_batches: AtomicU64::new(0),
            input_queue_capacity: AtomicU64::new(0),
            output_queue_batches: AtomicU64::new(0),
            input_watermark: AtomicI64::new(WATERMARK_NONE),
            output_watermark: AtomicI64::new(WATERMARK_NONE),
            last_alignment_ms: AtomicU64::new(0),
            checkpoints_acknowledged: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            records_in_per_s: AtomicU64::new(0f64.to_bits()),
            records_out_per_s: AtomicU64::new(0f64.to_bits()),
            rates_at_ms: AtomicI64::new(i64::MIN),
            attempt: AtomicU64::new(0),
            operators: operators
                .into_iter()
                .map(|(node, name, state_id)| OperatorCells {
                    node,
                    name,
                    state_id,
                    records_in: AtomicU64::new(0),
                    records_out: AtomicU64::new(0),
                    late_records: AtomicU64::new(0),
                    dropped_records: AtomicU64::new(0),
                    state_bytes: AtomicU64::new(0),
                })
                .collect(),
            user: Arc::new(UserMetrics::default()),
        }
    }

    /// The vertex (operator chain) index.
    pub fn vertex(&self) -> u32 {
        self.vertex
    }

    /// The subtask's index in its vertex.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The user metric group of operator `operator` in this subtask.
    pub fn metric_group(&self, operator: &str) -> MetricGroup {
        MetricGroup::new(Arc::clone(&self.user), operator.to_string())
    }

    /// Records the stored size of the subtask's state in the last checkpoint, in all and per
    /// operator state id (written by the JobManager when the state file is stored: the cells
    /// the core does not write). Operators absent from `operators` stored nothing.
    pub(crate) fn set_state_bytes(&self, bytes: u64, operators: &[(String, u64)]) {
        self.state_bytes.store(bytes, Ordering::Relaxed);
        for cells in &self.operators {
            let own = operators
                .iter()
                .find(|(state_id, _)| *state_id == cells.state_id)
                .map_or(0, |(_, bytes)| *bytes);
            cells.state_bytes.store(own, Ordering::Relaxed);
        }
    }

    /// A copy of every value, to serialise, read at `now_ms` of the clock the subtask core
    /// publishes with: rates whose window ended more than two windows ago are reported as 0
    /// (the core publishes at the end of each step, and a subtask without input takes no steps).
    pub fn snapshot_at(&self, now_ms: i64) -> SubtaskMetricsSnapshot {
        let mut snapshot = self.snapshot();
        let rates_at = self.rates_at_ms.load(Ordering::Relaxed);
        if rates_at == i64::MIN || now_ms.saturating_sub(rates_at) > 2 * RATE_WINDOW_MS {
            snapshot.records_in_per_s = 0.0;
            snapshot.records_out_per_s = 0.0;
        }
        snapshot
    }

    /// A copy of every value as last published, to serialise (rates as measured, however old:
    /// see [`snapshot_at`](Self::snapshot_at)).
    pub fn snapshot(&self) -> SubtaskMetricsSnapshot {
        let load = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
        let rate = |cell: &AtomicU64| f64::from_bits(cell.load(Ordering::Relaxed));
        SubtaskMetricsSnapshot {
            vertex: self.vertex,
            index: self.index,
            task_manager: self.task_manager.clone(),
            attempt: load(&self.attempt),
            records_in: load(&self.records_in),
            records_out: load(&self.records_out),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            backpressured_ms: load(&self.backpressured_ms),
            input_queue_batches: load(&self.input_queue_batches),
            input_queue_capacity: load(&self.input_queue_capacity),
            output_queue_batches: load(&self.output_queue_batches),
            input_watermark: self.input_watermark.load(Ordering::Relaxed),
            output_watermark: self.output_watermark.load(Ordering::Relaxed),
            last_alignment_ms: load(&self.last_alignment_ms),
            checkpoints_acknowledged: load(&self.checkpoints_acknowledged),
            state_bytes: load(&self.state_bytes),
            records_in_per_s: rate(&self.records_in_per_s),
            records_out_per_s: rate(&self.records_out_per_s),
            operators: self
                .operators
                .iter()
                .map(|c| OperatorMetricsSnapshot {
                    node: c.node.0,
                    name: c.name.clone(),
                    records_in: load(&c.records_in),
                    records_out: load(&c.records_out),
                    late_records: load(&c.late_records),
                    dropped_records: load(&c.dropped_records),
                    state_bytes: load(&c.state_bytes),
                })
                .collect(),
            user: self.user.snapshot(),
        }
    }
}

/// The live metrics of every subtask of a job, in the execution graph's subtask order.
#[derive(Debug, Clone)]
pub struct JobMetrics {
    subtasks: Arc<[Arc<SubtaskMetrics>]>,
}

impl JobMetrics {
    /// Cells for every subtask of `graph`, each on TaskManager `task_manager`.
    pub(crate) fn for_graph(graph: &ExecutionGraph, task_manager: &str) -> Self {
        let subtasks = graph
            .subtasks
            .iter()
            .map(|plan| {
                let vertex = &graph.job.vertices[plan.id.vertex as usize];
                let operators = vertex
                    .nodes
                    .iter()
                    .map(|n| {
                        let node = graph.job.stream.node(*n);
                        (*n, node.name.clone(), node.state_id())
                    })
                    .collect();
                Arc::new(SubtaskMetrics::new(
                    plan.id.vertex,
                    plan.id.index,
                    task_manager,
                    operators,
                ))
            })
            .collect();
        Self { subtasks }
    }

    /// The cells of every subtask, in the execution graph's order.
    pub fn subtasks(&self) -> &[Arc<SubtaskMetrics>] {
        &self.subtasks
    }

    /// A snapshot of every subtask at `now_ms` (see [`SubtaskMetrics::snapshot_at`]).
    pub fn snapshot_at(&self, now_ms: i64) -> Vec<SubtaskMetricsSnapshot> {
        self.subtasks
            .iter()
            .map(|s| s.snapshot_at(now_ms))
            .collect()
    }
}

/// One operator's counters in a [`SubtaskMetricsSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorMetricsSnapshot {
    /// The operator's graph node id.
    pub node: u32,
    /// The operator's name.
    pub name: String,
    /// Records the operator received.
    pub records_in: u64,
    /// Records the operator emitted (main and side outputs).
    pub records_out: u64,
    /// Records too late for any window.
    pub late_records: u64,
    /// Records dropped by the operator's semantics.
    pub dropped_records: u64,
    /// Bytes of the operator's state in the subtask's last stored checkpoint.
    pub state_bytes: u64,
}

/// Every metric of one subtask at one moment: what the REST server serves and what a
/// TaskManager reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskMetricsSnapshot {
    /// The vertex (operator chain) index.
    pub vertex: u32,
    /// The subtask's index in its vertex.
    pub index: u32,
    /// The TaskManager it runs on.
    pub task_manager: String,
    /// The attempt that wrote the values.
    pub attempt: u64,
    /// Records that entered the subtask from its input channels (a source: records it read).
    pub records_in: u64,
    /// Records the subtask sent on its output channels (a sink: 0).
    pub records_out: u64,
    /// Bytes in: in one process the in-memory size of the records received.
    pub bytes_in: u64,
    /// Bytes out: in one process the in-memory size of the records sent.
    pub bytes_out: u64,
    /// Milliseconds spent back-pressured (output batches waiting for credit), in total.
    pub backpressured_ms: u64,
    /// Input batches queued, not yet processed.
    pub input_queue_batches: u64,
    /// How many input batches may be queued (credits over all input channels).
    pub input_queue_capacity: u64,
    /// Output batches waiting for credit.
    pub output_queue_batches: u64,
    /// The watermark of the subtask's inputs ([`WATERMARK_NONE`] before the first).
    pub input_watermark: i64,
    /// The watermark the subtask's chain emitted last ([`WATERMARK_NONE`] before the first).
    pub output_watermark: i64,
    /// How long the last checkpoint's barrier alignment took, in ms.
    pub last_alignment_ms: u64,
    /// Checkpoints this subtask acknowledged in the current attempt.
    pub checkpoints_acknowledged: u64,
    /// Bytes of the subtask's state file in the last stored checkpoint.
    pub state_bytes: u64,
    /// Records in per second over the last [`RATE_WINDOW_MS`] window (Flink's
    /// `numRecordsInPerSecond`; for a source, what its head operator produced).
    pub records_in_per_s: f64,
    /// Records out per second over the same window.
    pub records_out_per_s: f64,
    /// Per operator of the chain, head first.
    pub operators: Vec<OperatorMetricsSnapshot>,
    /// The user's metrics.
    pub user: Vec<UserMetricSnapshot>,
}

/// The subtask core's side: counts kept in plain integers between steps, published into the
/// shared cells once per step.
#[derive(Debug)]
pub(crate) struct SubtaskMetricsWriter {
    cells: Arc<SubtaskMetrics>,
    records_in: u64,
    records_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    backpressured_ms: u64,
    /// Since when the subtask is back-pressured, if it is.
    backpressured_since_ms: Option<i64>,
    /// The checkpoint whose barriers are being aligned, and when its first barrier arrived.
    alignment: Option<(u64, i64)>,
    last_alignment_ms: u64,
    checkpoints_acknowledged: u64,
    output_watermark: i64,
    /// The rate window being measured: when it started and the counts then (records in as
    /// the rates count them, records out).
    rate_window: Option<(i64, u64, u64)>,
    /// Reused for the operators' counters (no allocation per step).
    scratch: Vec<(NodeId, OperatorCounters)>,
}

impl SubtaskMetricsWriter {
    /// A writer into `cells` for attempt `attempt`; the cells start again from zero.
    pub(crate) fn new(cells: Arc<SubtaskMetrics>, attempt: u32, input_capacity: u64) -> Self {
        cells.attempt.store(u64::from(attempt), Ordering::Relaxed);
        cells
            .input_queue_capacity
            .store(input_capacity, Ordering::Relaxed);
        cells
            .input_watermark
            .store(WATERMARK_NONE, Ordering::Relaxed);
        cells
            .output_watermark
            .store(WATERMARK_NONE, Ordering::Relaxed);
        Self {
            cells,
            records_in: 0,
            records_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            backpressured_ms: 0,
            backpressured_since_ms: None,
            alignment: None,
            last_alignment_ms: 0,
            checkpoints_acknowledged: 0,
            output_watermark: WATERMARK_NONE,
            rate_window: None,
            scratch: Vec::new(),
        }
    }

    /// A batch of `records` (`bytes`) was taken from an input channel.
    pub(crate) fn batch_in(&mut self, records: u32, bytes: u64) {
        self.records_in += u64::from(records);
        self.bytes_in += bytes;
    }

    /// A batch of `records` (`bytes`) was handed out on an output channel.
    pub(crate) fn batch_out(&mut self, records: u32, bytes: u64) {
        self.records_out += u64::from(records);
        self.bytes_out += bytes;
    }

    /// A barrier of checkpoint `id` arrived at `now_ms`; starts the alignment clock at the first.
    pub(crate) fn barrier_arrived(&mut self, id: u64, now_ms: i64) {
        if self.alignment.is_none_or(|(aligning, _)| aligning != id) {
            self.alignment = Some((id, now_ms));
        }
    }

    /// The subtask acknowledged checkpoint `id` at `now_ms`: its alignment (if any) ended.
    pub(crate) fn acknowledged(&mut self, id: u64, now_ms: i64) {
        self.checkpoints_acknowledged += 1;
        if let Some((aligning, since)) = self.alignment
            && aligning == id
        {
            self.last_alignment_ms = u64::try_from(now_ms.saturating_sub(since)).unwrap_or(0);
            self.alignment = None;
        }
    }

    /// The chain emitted `watermark` downstream.
    pub(crate) fn output_watermark(&mut self, watermark: i64) {
        self.output_watermark = self.output_watermark.max(watermark);
    }

    /// Publishes every value at the end of a step at `now_ms`. `fill` writes the chain's
    /// operator counters into the buffer it is given.
    pub(crate) fn publish(
        &mut self,
        now_ms: i64,
        step: StepFigures,
        fill: impl FnOnce(&mut Vec<(NodeId, OperatorCounters)>),
    ) {
        match (step.backpressured, self.backpressured_since_ms) {
            (true, None) => self.backpressured_since_ms = Some(now_ms),
            (false, Some(since)) => {
                self.backpressured_ms += u64::try_from(now_ms.saturating_sub(since)).unwrap_or(0);
                self.backpressured_since_ms = None;
            }
            _ => {}
        }
        let open_ms = self.backpressured_since_ms.map_or(0, |since| {
            u64::try_from(now_ms.saturating_sub(since)).unwrap_or(0)
        });
        let cells = &self.cells;
        let store = |cell: &AtomicU64, value: u64| cell.store(value, Ordering::Relaxed);
        store(&cells.records_in, self.records_in);
        store(&cells.records_out, self.records_out);
        store(&cells.bytes_in, self.bytes_in);
        store(&cells.bytes_out, self.bytes_out);
        store(&cells.backpressured_ms, self.backpressured_ms + open_ms);
        store(&cells.input_queue_batches, step.input_queue_batches);
        store(&cells.output_queue_batches, step.output_queue_batches);
        store(&cells.last_alignment_ms, self.last_alignment_ms);
        store(
            &cells.checkpoints_acknowledged,
            self.checkpoints_acknowledged,
        );
        cells
            .input_watermark
            .store(step.input_watermark, Ordering::Relaxed);
        cells
            .output_watermark
            .store(self.output_watermark, Ordering::Relaxed);
        self.scratch.clear();
        fill(&mut self.scratch);
        for (node, counters) in &self.scratch {
            if let Some(op) = cells.operators.iter().find(|c| c.node == *node) {
                store(&op.records_in, counters.records_in);
                store(&op.records_out, counters.records_out);
                store(&op.late_records, counters.late_records);
                store(&op.dropped_records, counters.dropped_records);
            }
        }
        // Rates: a chain without input channels (a source) counts what its head produced,
        // as the vertex totals do.
        let records_in = if step.has_inputs {
            self.records_in
        } else {
            cells
                .operators
                .first()
                .map_or(0, |head| head.records_out.load(Ordering::Relaxed))
        };
        match self.rate_window {
            None => self.rate_window = Some((now_ms, records_in, self.records_out)),
            Some((since, start_in, start_out)) if now_ms - since >= RATE_WINDOW_MS => {
                let seconds = (now_ms - since) as f64 / 1_000.0;
                let per_s = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
                let rate_in = per_s(records_in, start_in);
                let rate_out = per_s(self.records_out, start_out);
                store(&cells.records_in_per_s, rate_in.to_bits());
                store(&cells.records_out_per_s, rate_out.to_bits());
                cells.rates_at_ms.store(now_ms, Ordering::Relaxed);
                self.rate_window = Some((now_ms, records_in, self.records_out));
            }
            Some(_) => {}
        }
    }
}

/// What a step's end looks like, for [`SubtaskMetricsWriter::publish`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepFigures {
    /// Output batches wait for credit.
    pub(crate) backpressured: bool,
    /// Input batches queued.
    pub(crate) input_queue_batches: u64,
    /// Output batches waiting for credit.
    pub(crate) output_queue_batches: u64,
    /// The input watermark ([`WATERMARK_NONE`] before the first).
    pub(crate) input_watermark: i64,
    /// The subtask has input channels (is not a source chain).
    pub(crate) has_inputs: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells() -> Arc<SubtaskMetrics> {
        Arc::new(SubtaskMetrics::new(
            1,
            0,
            "local",
            vec![
                (NodeId(3), "Map".to_string(), "node-3".to_string()),
                (NodeId(4), "Sink".to_string(), "sink-uid".to_string()),
            ],
        ))
    }

    fn step(backpressured: bool) -> StepFigures {
        StepFigures {
            backpressured,
            input_queue_batches: 1,
            output_queue_batches: u64::from(backpressured),
            input_watermark: 5,
            has_inputs: true,
        }
    }

    #[test]
    fn publishing_mirrors_the_counts_and_the_operators() {
        let cells = cells();
        let mut writer = SubtaskMetricsWriter::new(Arc::clone(&cells), 2, 8);
        writer.batch_in(10, 160);
        writer.batch_out(7, 112);
        writer.publish(0, step(false), |out| {
            out.push((
                NodeId(3),
                OperatorCounters {
                    records_in: 10,
                    records_out: 7,
                    ..OperatorCounters::default()
                },
            ));
        });
        let snapshot = cells.snapshot();
        assert_eq!((snapshot.records_in, snapshot.records_out), (10, 7));
        assert_eq!((snapshot.bytes_in, snapshot.bytes_out), (160, 112));
        assert_eq!(snapshot.attempt, 2);
        assert_eq!(snapshot.input_queue_capacity, 8);
        assert_eq!(snapshot.input_watermark, 5);
        assert_eq!(snapshot.operators[0].records_in, 10);
        assert_eq!(snapshot.operators[0].records_out, 7);
        assert_eq!(snapshot.operators[1].records_in, 0);
    }

    #[test]
    fn back_pressured_time_adds_up_across_steps_and_counts_while_open() {
        let cells = cells();
        let mut writer = SubtaskMetricsWriter::new(Arc::clone(&cells), 0, 2);
        writer.publish(100, step(true), |_| {});
        writer.publish(130, step(true), |_| {});
        assert_eq!(
            cells.snapshot().backpressured_ms,
            30,
            "still back-pressured"
        );
        writer.publish(150, step(false), |_| {});
        writer.publish(400, step(false), |_| {});
        writer.publish(410, step(true), |_| {});
        writer.publish(415, step(false), |_| {});
        assert_eq!(cells.snapshot().backpressured_ms, 55);
    }

    #[test]
    fn alignment_runs_from_the_first_barrier_to_the_acknowledgement() {
        let cells = cells();
        let mut writer = SubtaskMetricsWriter::new(Arc::clone(&cells), 0, 2);
        writer.barrier_arrived(4, 1_000);
        writer.barrier_arrived(4, 1_030);
        writer.acknowledged(4, 1_042);
        writer.publish(1_042, step(false), |_| {});
        let snapshot = cells.snapshot();
        assert_eq!(snapshot.last_alignment_ms, 42);
        assert_eq!(snapshot.checkpoints_acknowledged, 1);
    }

    #[test]
    fn rates_cover_whole_windows_and_go_stale_without_steps() {
        let cells = cells();
        let mut writer = SubtaskMetricsWriter::new(Arc::clone(&cells), 0, 2);
        writer.batch_in(100, 0);
        writer.publish(0, step(false), |_| {});
        writer.batch_in(500, 0);
        writer.batch_out(250, 0);
        writer.publish(600, step(false), |_| {});
        assert_eq!(
            cells.snapshot_at(600).records_in_per_s,
            0.0,
            "no full window yet"
        );
        writer.batch_in(1_500, 0);
        writer.batch_out(750, 0);
        writer.publish(1_000, step(false), |_| {});
        let snapshot = cells.snapshot_at(1_000);
        assert_eq!(snapshot.records_in_per_s, 2_000.0);
        assert_eq!(snapshot.records_out_per_s, 1_000.0);
        // The next window starts where this one ended: 3 s with 300 records.
        writer.batch_in(300, 0);
        writer.publish(4_000, step(false), |_| {});
        assert_eq!(cells.snapshot_at(4_000).records_in_per_s, 100.0);
        assert_eq!(cells.snapshot_at(6_000).records_in_per_s, 100.0);
        assert_eq!(
            cells.snapshot_at(6_001).records_in_per_s,
            0.0,
            "no step for over two windows: nothing flows"
        );
    }

    #[test]
    fn a_source_chain_rates_what_its_head_produced() {
        let cells = cells();
        let mut writer = SubtaskMetricsWriter::new(Arc::clone(&cells), 0, 0);
        let source_step = StepFigures {
            has_inputs: false,
            ..step(false)
        };
        let produced = |n| {
            move |out: &mut Vec<(NodeId, OperatorCounters)>| {
                out.push((
                    NodeId(3),
                    OperatorCounters {
                        records_out: n,
                        ..OperatorCounters::default()
                    },
                ));
            }
        };
        writer.publish(0, source_step, produced(0));
        writer.publish(2_000, source_step, produced(5_000));
        assert_eq!(cells.snapshot_at(2_000).records_in_per_s, 2_500.0);
    }

    #[test]
    fn state_bytes_are_placed_by_state_id() {
        let cells = cells();
        cells.set_state_bytes(
            500,
            &[("sink-uid".to_string(), 420), ("node-9".to_string(), 7)],
        );
        let snapshot = cells.snapshot();
        assert_eq!(snapshot.state_bytes, 500);
        let per_operator: Vec<u64> = snapshot.operators.iter().map(|o| o.state_bytes).collect();
        assert_eq!(
            per_operator,
            [0, 420],
            "Map stored nothing; node-9 is not in the chain"
        );
        cells.set_state_bytes(80, &[("node-3".to_string(), 60)]);
        let per_operator: Vec<u64> = cells
            .snapshot()
            .operators
            .iter()
            .map(|o| o.state_bytes)
            .collect();
        assert_eq!(per_operator, [60, 0], "each store replaces the last");
    }

    #[test]
    fn snapshots_round_trip_through_json_and_postcard() {
        let cells = cells();
        cells.metric_group("Map").counter("seen").inc_by(3);
        let snapshot = cells.snapshot();
        let json = serde_json::to_string(&snapshot).expect("json");
        let back: SubtaskMetricsSnapshot = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, snapshot);
        let bytes = postcard::to_allocvec(&snapshot).expect("postcard");
        let back: SubtaskMetricsSnapshot = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, snapshot);
    }
}
