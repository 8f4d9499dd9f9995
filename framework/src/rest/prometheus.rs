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

use super::view::{CheckpointStatus, JobState, JobView};
use crate::metrics::{SubtaskMetricsSnapshot, UserMetricKind};

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

impl Collector for JobsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let mut job_state = Family::new(
            "jobmanager_job_status",
            "1 for the job's current state",
            Gauge,
        );
        let mut restarts = Family::new("jobmanager_job_numRestarts", "Restarts", Gauge);
        let mut uptime = Family::new("jobmanager_job_uptime", "Ms since the job started", Gauge);
        let mut completed = Family::new(
            "jobmanager_job_numberOfCompletedCheckpoints",
            "Completed checkpoints",
            Gauge,
        );
        let mut failed = Family::new(
            "jobmanager_job_numberOfFailedCheckpoints",
            "Failed checkpoints",
            Gauge,
        );
        let mut last_duration = Family::new(
            "jobmanager_job_lastCheckpointDuration",
            "Ms from trigger to completion of the latest completed checkpoint",
            Gauge,
        );
        let mut last_size = Family::new(
            "jobmanager_job_lastCheckpointSize",
            "Bytes of state in the latest completed checkpoint",
            Gauge,
        );
        let mut records_in = Family::new(
            "taskmanager_job_task_numRecordsIn",
            "Records a subtask received",
            Counter,
        );
        let mut records_out = Family::new(
            "taskmanager_job_task_numRecordsOut",
            "Records a subtask sent",
            Counter,
        );
        let mut records_in_rate = Family::new(
            "taskmanager_job_task_numRecordsInPerSecond",
            "Records a subtask received per second (over its last 1 s window)",
            Gauge,
        );
        let mut records_out_rate = Family::new(
            "taskmanager_job_task_numRecordsOutPerSecond",
            "Records a subtask sent per second (over its last 1 s window)",
            Gauge,
        );
        let mut bytes_in = Family::new(
            "taskmanager_job_task_numBytesIn",
            "Bytes a subtask received (in-memory size within a process)",
            Counter,
        );
        let mut bytes_out = Family::new(
            "taskmanager_job_task_numBytesOut",
            "Bytes a subtask sent",
            Counter,
        );
        let mut backpressured = Family::new(
            "taskmanager_job_task_backPressuredTimeMs",
            "Ms a subtask spent back-pressured",
            Counter,
        );
        let mut in_queue = Family::new(
            "taskmanager_job_task_buffers_inputQueueLength",
            "Input batches queued",
            Gauge,
        );
        let mut in_usage = Family::new(
            "taskmanager_job_task_buffers_inPoolUsage",
            "Queued input batches over the credits granted",
            Gauge,
        );
        let mut out_queue = Family::new(
            "taskmanager_job_task_buffers_outputQueueLength",
            "Output batches waiting for credit",
            Gauge,
        );
        let mut in_watermark = Family::new(
            "taskmanager_job_task_currentInputWatermark",
            "The subtask's input watermark (ms of event time)",
            Gauge,
        );
        let mut out_watermark = Family::new(
            "taskmanager_job_task_currentOutputWatermark",
            "The watermark the subtask sent last",
            Gauge,
        );
        let mut alignment = Family::new(
            "taskmanager_job_task_checkpointAlignmentTime",
            "Ms the last checkpoint's barrier alignment took",
            Gauge,
        );
        let mut state_size = Family::new(
            "taskmanager_job_task_checkpointStateSize",
            "Bytes of the subtask's state in the last stored checkpoint",
            Gauge,
        );
        let mut op_in = Family::new(
            "taskmanager_job_task_operator_numRecordsIn",
            "Records an operator received",
            Counter,
        );
        let mut op_out = Family::new(
            "taskmanager_job_task_operator_numRecordsOut",
            "Records an operator emitted",
            Counter,
        );
        let mut op_state = Family::new(
            "taskmanager_job_task_operator_checkpointStateSize",
            "Bytes of an operator's state in its subtask's last stored checkpoint",
            Gauge,
        );
        let mut op_late = Family::new(
            "taskmanager_job_task_operator_numLateRecordsDropped",
            "Records too late for any window",
            Counter,
        );
        let mut op_dropped = Family::new(
            "taskmanager_job_task_operator_numRecordsDropped",
            "Records dropped by the operator's semantics",
            Counter,
        );
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
            restarts
                .samples
                .push((labels.clone(), f64::from(job.restarts)));
            let end = job.end_ms.unwrap_or(job.now_ms);
            uptime
                .samples
                .push((labels.clone(), (end - job.start_ms) as f64));
            completed
                .samples
                .push((labels.clone(), job.checkpoints.completed as f64));
            failed
                .samples
                .push((labels.clone(), job.checkpoints.failed as f64));
            if let Some(latest) = &job.checkpoints.latest_completed
                && latest.status == CheckpointStatus::Completed
            {
                last_duration
                    .samples
                    .push((labels.clone(), latest.duration_ms().unwrap_or(0) as f64));
                last_size
                    .samples
                    .push((labels.clone(), latest.state_bytes as f64));
            }
            for vertex in &job.vertices {
                for subtask in &vertex.subtasks {
                    let s = &subtask.metrics;
                    let labels = task_labels(job, &vertex.name, s);
                    records_in
                        .samples
                        .push((labels.clone(), s.records_in as f64));
                    records_out
                        .samples
                        .push((labels.clone(), s.records_out as f64));
                    records_in_rate
                        .samples
                        .push((labels.clone(), s.records_in_per_s));
                    records_out_rate
                        .samples
                        .push((labels.clone(), s.records_out_per_s));
                    bytes_in.samples.push((labels.clone(), s.bytes_in as f64));
                    bytes_out.samples.push((labels.clone(), s.bytes_out as f64));
                    backpressured
                        .samples
                        .push((labels.clone(), s.backpressured_ms as f64));
                    in_queue
                        .samples
                        .push((labels.clone(), s.input_queue_batches as f64));
                    let usage = if s.input_queue_capacity == 0 {
                        0.0
                    } else {
                        s.input_queue_batches as f64 / s.input_queue_capacity as f64
                    };
                    in_usage.samples.push((labels.clone(), usage));
                    out_queue
                        .samples
                        .push((labels.clone(), s.output_queue_batches as f64));
                    in_watermark
                        .samples
                        .push((labels.clone(), s.input_watermark as f64));
                    out_watermark
                        .samples
                        .push((labels.clone(), s.output_watermark as f64));
                    alignment
                        .samples
                        .push((labels.clone(), s.last_alignment_ms as f64));
                    state_size
                        .samples
                        .push((labels.clone(), s.state_bytes as f64));
                    for op in &s.operators {
                        let labels = with(labels.clone(), "operator", &op.name);
                        op_in.samples.push((labels.clone(), op.records_in as f64));
                        op_out.samples.push((labels.clone(), op.records_out as f64));
                        op_state
                            .samples
                            .push((labels.clone(), op.state_bytes as f64));
                        op_late
                            .samples
                            .push((labels.clone(), op.late_records as f64));
                        op_dropped.samples.push((labels, op.dropped_records as f64));
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
        for family in [
            &job_state,
            &restarts,
            &uptime,
            &completed,
            &failed,
            &last_duration,
            &last_size,
            &records_in,
            &records_out,
            &records_in_rate,
            &records_out_rate,
            &bytes_in,
            &bytes_out,
            &backpressured,
            &in_queue,
            &in_usage,
            &out_queue,
            &in_watermark,
            &out_watermark,
            &alignment,
            &state_size,
            &op_in,
            &op_out,
            &op_state,
            &op_late,
            &op_dropped,
            &user_counters,
            &user_gauges,
        ] {
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
