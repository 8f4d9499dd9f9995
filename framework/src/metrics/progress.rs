//! The terminal progress line of a bounded job: records read, bytes of the input file and the
//! rate, redrawn on stderr twice a second, only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{JobMetrics, SubtaskMetricsSnapshot};
use crate::connectors::{FILE_BYTES_METRIC, FILE_BYTES_READ_METRIC};
use crate::time::Clock;

/// How often the line is redrawn.
const REFRESH: Duration = Duration::from_millis(500);

/// A running progress line; [`Progress::finish`] draws the last state and ends the line.
#[derive(Debug)]
pub(crate) struct Progress {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Draws the final line and stops.
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Starts the progress line for `metrics` if stderr is a terminal, timed by the node's `clock`.
pub(crate) fn start_if_terminal(metrics: JobMetrics, clock: Arc<dyn Clock>) -> Option<Progress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let started = clock.now_ms();
        let mut ticks = tokio::time::interval(REFRESH);
        loop {
            let last = tokio::select! {
                biased;
                _ = &mut stopped => true,
                _ = ticks.tick() => false,
            };
            let now_ms = clock.now_ms();
            let elapsed_ms = u64::try_from(now_ms - started).unwrap_or(0);
            let line = render(&metrics.snapshot_at(now_ms), elapsed_ms);
            let mut stderr = std::io::stderr().lock();
            // A terminal that cannot be written to only loses the progress line.
            let _ = write!(stderr, "\r\x1b[2K{line}");
            if last {
                let _ = writeln!(stderr);
                return;
            }
            let _ = stderr.flush();
        }
    });
    Some(Progress { stop, task })
}

/// The line for `subtasks` after `elapsed_ms`: records the sources read, the input file's
/// bytes read out of its length (when a file source reports them), the rate.
pub(crate) fn render(subtasks: &[SubtaskMetricsSnapshot], elapsed_ms: u64) -> String {
    let mut records = 0u64;
    let mut bytes_read = 0f64;
    let mut bytes_total = 0f64;
    for s in subtasks.iter().filter(|s| s.input_queue_capacity == 0) {
        records += s.operators.first().map_or(0, |head| head.records_out);
        for user in &s.user {
            match user.name.as_str() {
                FILE_BYTES_READ_METRIC => bytes_read += user.value,
                FILE_BYTES_METRIC => bytes_total += user.value,
                _ => {}
            }
        }
    }
    let rate = records
        .saturating_mul(1000)
        .checked_div(elapsed_ms)
        .unwrap_or(0);
    let mut line = format!("{records} records read");
    if bytes_total > 0.0 {
        let percent = (100.0 * bytes_read / bytes_total).min(100.0);
        line.push_str(&format!(
            ", {} of {} bytes ({percent:.0}%)",
            bytes_read as u64, bytes_total as u64
        ));
    }
    line.push_str(&format!(", {rate} records/s"));
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::SubtaskMetrics;
    use crate::operator::NodeId;

    #[test]
    fn the_line_counts_source_records_and_file_bytes() {
        let source = SubtaskMetrics::new(
            0,
            0,
            "local",
            vec![(NodeId(0), "Source".to_string(), "node-0".to_string())],
        );
        let group = source.metric_group("Source");
        group.gauge(FILE_BYTES_METRIC).set(1000.0);
        group.gauge(FILE_BYTES_READ_METRIC).set(250.0);
        let mut snapshot = source.snapshot();
        snapshot.operators[0].records_out = 5_000;
        let line = render(&[snapshot], 2_000);
        assert_eq!(
            line,
            "5000 records read, 250 of 1000 bytes (25%), 2500 records/s"
        );
    }

    #[test]
    fn without_a_file_the_line_has_no_bytes() {
        let source = SubtaskMetrics::new(
            0,
            0,
            "local",
            vec![(NodeId(0), "Source".to_string(), "node-0".to_string())],
        );
        assert_eq!(
            render(&[source.snapshot()], 0),
            "0 records read, 0 records/s"
        );
    }
}
