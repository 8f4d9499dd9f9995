//! State backend selection and the configuration of one keyed backend instance.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::key_group::KeyGroupRange;

/// Where keyed state lives while a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StateBackendKind {
    /// Typed in-memory maps; snapshots serialise them (Flink's heap backend).
    #[default]
    Memory,
    /// LMDB through heed, with a bounded in-memory write-back cache in front; snapshots read a
    /// consistent LMDB view opened at the barrier (in the role of Flink's RocksDB backend).
    Lmdb,
}

impl std::str::FromStr for StateBackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(Self::Memory),
            "lmdb" => Ok(Self::Lmdb),
            other => Err(format!(
                "unknown state backend '{other}' (expected 'memory' or 'lmdb')"
            )),
        }
    }
}

/// What one keyed backend instance (one operator, one subtask) needs to open.
#[derive(Debug, Clone)]
pub struct KeyedBackendConfig {
    /// Memory or LMDB.
    pub kind: StateBackendKind,
    /// A directory private to this operator instance and attempt (the LMDB environment lives
    /// here); created if missing, removed when the backend is dropped.
    pub local_dir: PathBuf,
    /// The number of key groups.
    pub max_parallelism: u32,
    /// The key groups this instance owns.
    pub key_groups: KeyGroupRange,
    /// LMDB: the most entries the write-back cache holds before it writes back (one write
    /// transaction per write-back).
    pub cache_entries: usize,
    /// LMDB: the map size in bytes (the largest the database may grow).
    pub lmdb_map_size: usize,
}

impl KeyedBackendConfig {
    /// An in-memory backend owning every key group of `max_parallelism` (tests, tools).
    pub fn memory(max_parallelism: u32) -> Self {
        Self {
            kind: StateBackendKind::Memory,
            local_dir: PathBuf::new(),
            max_parallelism,
            key_groups: KeyGroupRange::for_subtask(max_parallelism, 1, 0),
            cache_entries: 0,
            lmdb_map_size: 0,
        }
    }
}
