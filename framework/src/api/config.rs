//! Job-wide execution settings.

use crate::error::GraphError;
use crate::state::{DEFAULT_MAX_PARALLELISM, MAX_PARALLELISM_LIMIT};

/// The largest batch a record writer may build (records and control elements).
pub const BATCH_RECORDS_LIMIT: usize = 1 << 16;
/// The largest number of credits (batches) a receiver may grant one channel.
pub const CREDITS_PER_CHANNEL_LIMIT: u32 = 1024;

const _: () = assert!(BATCH_RECORDS_LIMIT as u64 * CREDITS_PER_CHANNEL_LIMIT as u64 <= 1 << 26);

/// Where subtask actors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskExecutor {
    /// [`TaskExecutor::DedicatedThreads`] on a multi-thread tokio runtime,
    /// [`TaskExecutor::Shared`] on a current-thread runtime (tests, the simulator).
    Auto,
    /// On the ambient tokio runtime. Deterministic on a current-thread runtime with paused
    /// time; on a multi-thread runtime, work stealing moves subtasks between cores.
    Shared,
    /// Each subtask on its own OS thread with a current-thread tokio runtime, as Flink runs one
    /// thread per task: a subtask keeps its caches (a keyed operator's hash map above all).
    DedicatedThreads,
}

/// Execution settings of a job (Flink's `ExecutionConfig` plus the network buffer settings).
///
/// The bound on memory between two subtasks is
/// `credits_per_channel * batch_records_max` records per channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionConfig {
    /// Parallelism of operators that do not set their own (default 1).
    pub parallelism: u32,
    /// Number of key groups, the upper bound for any operator's parallelism (default 128).
    pub max_parallelism: u32,
    /// Records (and control elements) per batch between subtasks (default 4096).
    ///
    /// Larger batches amortise the cost of waking the receiving subtask: on the rolling-count
    /// benchmark 4096 runs 1.8x faster than 1024 (see `docs/ARCHITECTURE.md`).
    pub batch_records_max: usize,
    /// Batches a receiver buffers per input channel (default 4).
    pub credits_per_channel: u32,
    /// How long a partially filled batch may wait before it is sent, in milliseconds
    /// (Flink's buffer timeout; default 5; 0 sends after every processing step).
    pub buffer_timeout_ms: u64,
    /// Records a source may emit per poll before the subtask handles other messages
    /// (default 1024).
    pub source_poll_records_max: usize,
    /// How long an idle source waits before it is polled again, in milliseconds (default 10).
    pub source_idle_poll_ms: u64,
    /// Whether operators are chained (default true).
    pub chaining_enabled: bool,
    /// Seed of every random choice the runtime makes (shuffle partitioning), for reproducible
    /// runs (default 0).
    pub seed: u64,
    /// Where subtasks run (default [`TaskExecutor::Auto`]).
    pub executor: TaskExecutor,
    /// How often periodic watermark generators emit, in milliseconds of processing time
    /// (Flink's `autoWatermarkInterval`; default 200; 0 turns periodic emission off).
    pub auto_watermark_interval_ms: u64,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        Self {
            parallelism: 1,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            batch_records_max: 4096,
            credits_per_channel: 4,
            buffer_timeout_ms: 5,
            source_poll_records_max: 1024,
            source_idle_poll_ms: 10,
            chaining_enabled: true,
            seed: 0,
            executor: TaskExecutor::Auto,
            auto_watermark_interval_ms: 200,
        }
    }
}

impl ExecutionConfig {
    /// Checks every value is in range.
    ///
    /// # Errors
    ///
    /// [`GraphError::InvalidConfig`] naming the setting and its valid range.
    pub fn validate(&self) -> Result<(), GraphError> {
        let bad = |what: String| Err(GraphError::InvalidConfig(what));
        if self.max_parallelism == 0 || self.max_parallelism > MAX_PARALLELISM_LIMIT {
            return bad(format!(
                "max_parallelism {} is outside 1..={MAX_PARALLELISM_LIMIT}",
                self.max_parallelism
            ));
        }
        if self.parallelism == 0 || self.parallelism > self.max_parallelism {
            return bad(format!(
                "parallelism {} is outside 1..={} (max_parallelism)",
                self.parallelism, self.max_parallelism
            ));
        }
        if self.batch_records_max == 0 || self.batch_records_max > BATCH_RECORDS_LIMIT {
            return bad(format!(
                "batch_records_max {} is outside 1..={BATCH_RECORDS_LIMIT}",
                self.batch_records_max
            ));
        }
        if self.credits_per_channel == 0 || self.credits_per_channel > CREDITS_PER_CHANNEL_LIMIT {
            return bad(format!(
                "credits_per_channel {} is outside 1..={CREDITS_PER_CHANNEL_LIMIT}",
                self.credits_per_channel
            ));
        }
        if self.source_poll_records_max == 0 {
            return bad("source_poll_records_max must be at least 1".to_string());
        }
        if self.source_idle_poll_ms == 0 {
            return bad("source_idle_poll_ms must be at least 1".to_string());
        }
        Ok(())
    }
}
