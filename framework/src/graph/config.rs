//! Job-wide execution settings: plain serde data, part of the job descriptor (see
//! [`JobDescriptor`](super::JobDescriptor)) and so of its fingerprint, except for the fields that
//! name one run or one node ([`ExecutionConfig::job_id`], [`ExecutionConfig::local_state_dir`],
//! [`ExecutionConfig::restore`]).
//!
//! Everything a job's configuration holds is serialisable. What is not (the node's clock,
//! executor and blocking policies, checkpoint storage) is not configuration of the job but of the
//! node that runs it: it lives in the runtime's `RuntimeEnv`, which each process builds for
//! itself and never sends.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{JobId, RestartStrategy};
use crate::error::GraphError;
use crate::state::{DEFAULT_MAX_PARALLELISM, MAX_PARALLELISM_LIMIT, StateBackendKind};

/// The largest batch a record writer may build (records and control elements).
pub const BATCH_RECORDS_LIMIT: usize = 1 << 16;
/// The largest number of credits (batches) a receiver may grant one channel.
pub const CREDITS_PER_CHANNEL_LIMIT: u32 = 1024;

const _: () = assert!(BATCH_RECORDS_LIMIT as u64 * CREDITS_PER_CHANNEL_LIMIT as u64 <= 1 << 26);

/// Execution settings of a job (Flink's `ExecutionConfig` plus the network buffer settings).
///
/// The bound on memory between two subtasks is
/// `credits_per_channel * batch_records_max` records per channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// How often periodic watermark generators emit, in milliseconds of processing time
    /// (Flink's `autoWatermarkInterval`; default 200; 0 turns periodic emission off).
    pub auto_watermark_interval_ms: u64,
    /// Checkpoint settings (periodic checkpoints are off by default; the final checkpoint of
    /// a bounded job always runs).
    pub checkpointing: CheckpointConfig,
    /// Where keyed state lives (default memory).
    pub state_backend: StateBackendKind,
    /// Where backends keep local working files (LMDB); default: the system's temporary
    /// directory.
    pub local_state_dir: Option<PathBuf>,
    /// LMDB: entries the write-back cache of one operator instance holds (default 65,536).
    pub state_cache_entries: usize,
    /// LMDB: map size of one operator instance, in bytes (default 4 GiB; address space only).
    pub lmdb_map_size: usize,
    /// What happens when a subtask fails; `None` picks Flink's default: no restart without
    /// periodic checkpoints, fixed delay (unlimited attempts, 1 s) with them.
    pub restart_strategy: Option<RestartStrategy>,
    /// Start the job from this savepoint or retained checkpoint.
    pub restore: Option<RestoreSettings>,
    /// The id of this run (its checkpoints go to `<checkpoint dir>/<job id>/`); `None` (the
    /// default) lets the runtime pick a new one for every run, as Flink does. Set it only to
    /// make runs reproducible (the simulator sets it from its seed): two runs with the same id
    /// and checkpoint directory share their checkpoints.
    pub job_id: Option<JobId>,
}

/// Exactly-once (aligned barriers) or at-least-once (no alignment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CheckpointingMode {
    /// Multi-input subtasks align barriers: state reflects exactly the records before them.
    #[default]
    ExactlyOnce,
    /// Barriers are counted, not aligned: faster, but after recovery some records may be
    /// applied twice.
    AtLeastOnce,
}

/// Checkpoint settings (Flink's `CheckpointConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// Periodic checkpoint interval in milliseconds of processing time; `None` (the default)
    /// takes no periodic checkpoints.
    pub interval_ms: Option<u64>,
    /// Exactly-once or at-least-once.
    pub mode: CheckpointingMode,
    /// A checkpoint not complete after this long fails (default 10 minutes).
    pub timeout_ms: u64,
    /// The least pause between the end of one checkpoint and the start of the next (default 0).
    pub min_pause_ms: u64,
    /// Consecutive failed checkpoints tolerated before the job fails over (default 0).
    pub tolerable_failures: u32,
    /// Completed checkpoints kept (default 2, so a damaged newest one has a fallback).
    pub retained: usize,
    /// Where checkpoints are written, one folder per run (`<directory>/<job id>/chk-<n>`);
    /// `None` keeps them in the JobManager's memory.
    pub directory: Option<PathBuf>,
    /// Whether a restart may fall back past a damaged or missing checkpoint whose transactions
    /// exactly-once sinks already committed (default `false`). Falling back replays records
    /// whose output is already committed, so it duplicates that output: by default the job
    /// fails instead, naming the damaged checkpoint and what was committed after the
    /// checkpoint it could use.
    pub allow_fallback_past_commits: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            interval_ms: None,
            mode: CheckpointingMode::ExactlyOnce,
            timeout_ms: 600_000,
            min_pause_ms: 0,
            tolerable_failures: 0,
            retained: 2,
            directory: None,
            allow_fallback_past_commits: false,
        }
    }
}

/// Where a job restores its state from at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSettings {
    /// A savepoint folder (`savepoint-<id>`), a retained checkpoint folder
    /// (`<checkpoint dir>/<job id>/chk-<id>`), or the checkpoint folder of a whole run
    /// (`<checkpoint dir>/<job id>`: its newest intact checkpoint).
    pub path: PathBuf,
    /// Whether state of operators that no longer exist may be skipped (otherwise an error).
    pub allow_non_restored_state: bool,
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
            auto_watermark_interval_ms: 200,
            checkpointing: CheckpointConfig::default(),
            state_backend: StateBackendKind::Memory,
            local_state_dir: None,
            state_cache_entries: 1 << 16,
            lmdb_map_size: 4 << 30,
            restart_strategy: None,
            restore: None,
            job_id: None,
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
        if self.checkpointing.interval_ms == Some(0) {
            return bad("checkpoint interval must be at least 1 ms".to_string());
        }
        if self.checkpointing.timeout_ms == 0 {
            return bad("checkpoint timeout must be at least 1 ms".to_string());
        }
        if self.checkpointing.retained == 0 {
            return bad("retained checkpoints must be at least 1".to_string());
        }
        if self.state_cache_entries == 0 {
            return bad("state_cache_entries must be at least 1".to_string());
        }
        if let Some(strategy) = &self.restart_strategy {
            strategy.validate().map_err(GraphError::InvalidConfig)?;
        }
        Ok(())
    }
}

impl ExecutionConfig {
    /// The restart strategy in force: the configured one, or Flink's default.
    pub fn effective_restart_strategy(&self) -> RestartStrategy {
        match (&self.restart_strategy, self.checkpointing.interval_ms) {
            (Some(strategy), _) => strategy.clone(),
            (None, Some(_)) => RestartStrategy::default_with_checkpointing(),
            (None, None) => RestartStrategy::None,
        }
    }
}
