//! `GET /metrics`: every job's metrics in Prometheus' text exposition format, encoded by
//! `prometheus-client` from [`JobView`]s.
//!
//! Names follow Flink's Prometheus reporter (`<scope>_<metric>`, Flink's camel-case metric
//! names) under the `eichhorn_` prefix; labels are `job`, `job_id`, `vertex`, `subtask` and
//! `node` (the TaskManager), plus `operator` and `name` where they apply. The collector writes
//! families and samples in a fixed order (jobs as registered, vertices and subtasks by index),
//! never a hash map's, so two scrapes of the same state are byte-identical.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use MetricType::{Counter, Gauge};

use super::view::{CheckpointStatus, CheckpointView, JobState, JobView};
use crate::metrics::{OperatorMetricsSnapshot, SubtaskMetricsSnapshot, UserMetricKind};

type Labels = Vec<(String, String)>;

/// The text exposition of `jobs`' metrics.
pub fn encode(jobs: Vec<JobView>) -> String {
    let mut registry = Registry::with_prefix("eichhorn");
    registry.register_collector(Box::new(JobsCollector { jobs }));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

#[derive(Debug)]
struct JobsCollector {
    jobs: Vec<JobView>,
}

/// A family of samples of one type, encoded in order.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: MetricType) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        if self.samples.is_empty() {
            return Ok(());
        }
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (labels, value) in &self.samples {
            let family = metric.encode_family(labels)?;
            match self.kind {
                MetricType::Counter => ConstCounter::new(*value).encode(family)?,
                _ => ConstGauge::new(*value).encode(family)?,
            }
        }
        Ok(())
    }
}

fn job_labels(job: &JobView) -> Labels {
    vec![
        ("job".to_string(), job.name.clone()),
        ("job_id".to_string(), job.id.clone()),
    ]
}

fn task_labels(job: &JobView, vertex: &str, s: &SubtaskMetricsSnapshot) -> Labels {
    let mut labels = job_labels(job);
    labels.push(("vertex".to_string(), vertex.to_string()));
    labels.push(("subtask".to_string(), s.index.to_string()));
    labels.push(("node".to_string(), s.task_manager.clone()));
    labels
}

fn with(mut labels: Labels, key: &str, value: &str) -> Labels {
    labels.push((key.to_string(), value.to_string()));
    labels
}

/// A Prometheus metric name from a user's: letters, digits and `_` only.
fn sanitise(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// One metric read from a value of type `T`: the family's name, help and type, and the reading
/// (`None`: no sample for this value).
struct Spec<T> {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    read: fn(&T) -> Option<f64>,
}

const fn spec<T>(
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    read: fn(&T) -> Option<f64>,
) -> Spec<T> {
    Spec {
        name,
        help,
        kind,
        read,
    }
}

/// The job's metrics after `jobmanager_job_status`, in exposition order.
const JOB_METRICS: &[Spec<JobView>] = &[
    spec("jobmanager_job_numRestarts", "Restarts", Gauge, |j| {
        Some(f64::from(j.restarts))
    }),
    spec(
        "jobmanager_job_uptime",
        "Ms since the job started",
        Gauge,
        |j| Some((j.end_ms.unwrap_or(j.now_ms) - j.start_ms) as f64),
    ),
    spec(
        "jobmanager_job_numberOfCompletedCheckpoints",
        "Completed checkpoints",
        Gauge,
        |j| Some(j.checkpoints.completed as f64),
    ),
    spec(
        "jobmanager_job_numberOfFailedCheckpoints",
        "Failed checkpoints",
        Gauge,
        |j| Some(j.checkpoints.failed as f64),
    ),
    spec(
        "jobmanager_job_lastCheckpointDuration",
        "Ms from trigger to completion of the latest completed checkpoint",
        Gauge,
        |j| latest_completed(j).map(|c| c.duration_ms().unwrap_or(0) as f64),
    ),
    spec(
        "jobmanager_job_lastCheckpointSize",
        "Bytes of state in the latest completed checkpoint",
        Gauge,
        |j| latest_completed(j).map(|c| c.state_bytes as f64),
    ),
];

/// Each subtask's metrics, in exposition order.
const SUBTASK_METRICS: &[Spec<SubtaskMetricsSnapshot>] = &[
    spec(
        "taskmanager_job_task_numRecordsIn",
        "Records a subtask received",
        Counter,
        |s| Some(s.records_in as f64),
    ),
    spec(
        "taskmanager_job_task_numRecordsOut",
        "Records a subtask sent",
        Counter,
        |s| Some(s.records_out as f64),
    ),
    spec(
        "taskmanager_job_task_numRecordsInPerSecond",
        "Records a subtask received per second (over its last 1 s window)",
        Gauge,
        |s| Some(s.records_in_per_s),
    ),
    spec(
        "taskmanager_job_task_numRecordsOutPerSecond",
        "Records a subtask sent per second (over its last 1 s window)",
        Gauge,
        |s| Some(s.records_out_per_s),
    ),
    spec(
        "taskmanager_job_task_numBytesIn",
        "Bytes a subtask received (in-memory size within a process)",
        Counter,
        |s| Some(s.bytes_in as f64),
    ),
    spec(
        "taskmanager_job_task_numBytesOut",
        "Bytes a subtask sent",
        Counter,
        |s| Some(s.bytes_out as f64),
    ),
    spec(
        "taskmanager_job_task_backPressuredTimeMs",
        "Ms a subtask spent back-pressured",
        Counter,
        |s| Some(s.backpressured_ms as f64),
    ),
    spec(
        "taskmanager_job_task_buffers_inputQueueLength",
        "Input batches queued",
        Gauge,
        |s| Some(s.input_queue_batches as f64),
    ),
    spec(
        "taskmanager_job_task_buffers_inPoolUsage",
        "Queued input batches over the credits granted",
        Gauge,
        |s| {
            Some(if s.input_queue_capacity == 0 {
                0.0
            } else {
                s.input_queue_batches as f64 / s.input_queue_capacity as f64
            })
        },
    ),
    spec(
        "taskmanager_job_task_buffers_outputQueueLength",
        "Output batches waiting for credit",
        Gauge,
        |s| Some(s.output_queue_batches as f64),
    ),
    spec(
        "taskmanager_job_task_currentInputWatermark",
        "The subtask's input watermark (ms of event time)",
        Gauge,
        |s| Some(s.input_watermark as f64),
    ),
    spec(
        "taskmanager_job_task_currentOutputWatermark",
        "The watermark the subtask sent last",
        Gauge,
        |s| Some(s.output_watermark as f64),
    ),
    spec(
        "taskmanager_job_task_checkpointAlignmentTime",
        "Ms the last checkpoint's barrier alignment took",
        Gauge,
        |s| Some(s.last_alignment_ms as f64),
    ),
    spec(
        "taskmanager_job_task_checkpointStateSize",
        "Bytes of the subtask's state in the last stored checkpoint",
        Gauge,
        |s| Some(s.state_bytes as f64),
    ),
];

/// Each operator's metrics (label `operator`), in exposition order.
const OPERATOR_METRICS: &[Spec<OperatorMetricsSnapshot>] = &[
    spec(
        "taskmanager_job_task_operator_numRecordsIn",
        "Records an operator received",
        Counter,
        |o| Some(o.records_in as f64),
    ),
    spec(
        "taskmanager_job_task_operator_numRecordsOut",
        "Records an operator emitted",
        Counter,
        |o| Some(o.records_out as f64),
    ),
    spec(
        "taskmanager_job_task_operator_checkpointStateSize",
        "Bytes of an operator's state in its subtask's last stored checkpoint",
        Gauge,
        |o| Some(o.state_bytes as f64),
    ),
    spec(
        "taskmanager_job_task_operator_numLateRecordsDropped",
        "Records too late for any window",
        Counter,
        |o| Some(o.late_records as f64),
    ),
    spec(
        "taskmanager_job_task_operator_numRecordsDropped",
        "Records dropped by the operator's semantics",
        Counter,
        |o| Some(o.dropped_records as f64),
    ),
];

fn latest_completed(job: &JobView) -> Option<&CheckpointView> {
    job.checkpoints
        .latest_completed
        .as_ref()
        .filter(|c| c.status == CheckpointStatus::Completed)
}

/// The families of `specs`, empty, in order.
fn families<T>(specs: &[Spec<T>]) -> Vec<Family> {
    specs
        .iter()
        .map(|s| Family::new(s.name, s.help, s.kind))
        .collect()
}

/// Adds `value`'s reading of each spec to its family (same order as [`families`]).
fn sample<T>(specs: &[Spec<T>], families: &mut [Family], labels: &Labels, value: &T) {
    for (spec, family) in specs.iter().zip(families) {
        if let Some(reading) = (spec.read)(value) {
            family.samples.push((labels.clone(), reading));
        }
    }
}

impl Collector for JobsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut job_state = Family::new(
            "jobmanager_job_status",
            "1 for the job's current state",
            Gauge,
        );
        let mut job_families = families(JOB_METRICS);
        let mut subtask_families = families(SUBTASK_METRICS);
        let mut operator_families = families(OPERATOR_METRICS);
        let mut user_counters = Family::new(
            "taskmanager_job_task_operator_user_counter",
            "User counters and meters (label name)",
            Counter,
        );
        let mut user_gauges = Family::new(
            "taskmanager_job_task_operator_user_gauge",
            "User gauges (label name)",
            Gauge,
        );
        let mut histograms = Vec::new();
        for job in &self.jobs {
            let labels = job_labels(job);
            for state in [
                JobState::Created,
                JobState::Running,
                JobState::Restarting,
                JobState::Finished,
                JobState::Canceled,
                JobState::Failed,
            ] {
                let name = format!("{state:?}").to_uppercase();
                job_state.samples.push((
                    with(labels.clone(), "state", &name),
                    f64::from(u8::from(job.state == state)),
                ));
            }
            sample(JOB_METRICS, &mut job_families, &labels, job);
            for vertex in &job.vertices {
                for subtask in &vertex.subtasks {
                    let s = &subtask.metrics;
                    let labels = task_labels(job, &vertex.name, s);
                    sample(SUBTASK_METRICS, &mut subtask_families, &labels, s);
                    for op in &s.operators {
                        let labels = with(labels.clone(), "operator", &op.name);
                        sample(OPERATOR_METRICS, &mut operator_families, &labels, op);
                    }
                    for user in &s.user {
                        let labels = with(
                            with(labels.clone(), "operator", &user.operator),
                            "name",
                            &sanitise(&user.name),
                        );
                        match user.kind {
                            UserMetricKind::Counter | UserMetricKind::Meter => {
                                user_counters.samples.push((labels, user.value));
                            }
                            UserMetricKind::Gauge => user_gauges.samples.push((labels, user.value)),
                            UserMetricKind::Histogram => {
                                if let Some(h) = &user.histogram {
                                    histograms.push((labels, h.clone()));
                                }
                            }
                        }
                    }
                }
            }
        }
        let ordered = std::iter::once(&job_state)
            .chain(&job_families)
            .chain(&subtask_families)
            .chain(&operator_families)
            .chain([&user_counters, &user_gauges]);
        for family in ordered {
            family.encode(&mut encoder)?;
        }
        if !histograms.is_empty() {
            let mut metric = encoder.encode_descriptor(
                "taskmanager_job_task_operator_user_histogram",
                "User histograms (label name)",
                None,
                MetricType::Histogram,
            )?;
            for (labels, h) in &histograms {
                let family = metric.encode_family(labels)?;
                encode_histogram(family, h)?;
            }
        }
        Ok(())
    }
}

/// Encodes a histogram snapshot (cumulative buckets) as the encoder wants it (per bucket).
fn encode_histogram(
    mut encoder: MetricEncoder<'_>,
    h: &crate::metrics::HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut previous = 0;
    let buckets: Vec<(f64, u64)> = h
        .buckets
        .iter()
        .map(|&(bound, cumulative)| {
            let own = cumulative.saturating_sub(previous);
            previous = cumulative;
            (bound, own)
        })
        .collect();
    encoder.encode_histogram::<NoLabelSet>(h.sum as f64, h.count, &buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings<T>(specs: &[Spec<T>], value: &T) -> Vec<f64> {
        specs.iter().filter_map(|s| (s.read)(value)).collect()
    }

    fn assert_distinct(readings: &[f64], what: &str) {
        for (i, a) in readings.iter().enumerate() {
            for (j, b) in readings.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "{what}: families {i} and {j} read the same field");
            }
        }
    }

    /// Every family reads its own field: with every field distinct, so are the readings.
    #[test]
    fn each_family_reads_its_own_field() {
        let subtask = SubtaskMetricsSnapshot {
            vertex: 0,
            index: 0,
            task_manager: "local".to_string(),
            attempt: 0,
            records_in: 3,
            records_out: 5,
            bytes_in: 7,
            bytes_out: 11,
            backpressured_ms: 13,
            input_queue_batches: 17,
            input_queue_capacity: 68,
            output_queue_batches: 19,
            input_watermark: 23,
            output_watermark: 29,
            last_alignment_ms: 31,
            checkpoints_acknowledged: 37,
            state_bytes: 41,
            records_in_per_s: 43.5,
            records_out_per_s: 47.5,
            operators: Vec::new(),
            user: Vec::new(),
        };
        let read = readings(SUBTASK_METRICS, &subtask);
        assert_eq!(read.len(), SUBTASK_METRICS.len());
        assert_distinct(&read, "subtask");
        assert!(
            read.contains(&0.25),
            "in-pool usage is queued over capacity"
        );
        let operator = OperatorMetricsSnapshot {
            node: 0,
            name: "map".to_string(),
            records_in: 3,
            records_out: 5,
            late_records: 7,
            dropped_records: 11,
            state_bytes: 13,
        };
        let read = readings(OPERATOR_METRICS, &operator);
        assert_eq!(read.len(), OPERATOR_METRICS.len());
        assert_distinct(&read, "operator");
    }
}
