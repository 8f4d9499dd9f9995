//! Fault injection for checkpoint storage: damage a stored checkpoint the ways disks and
//! people do (a flipped byte, a torn file, a lost file, a lost folder), to watch recovery
//! detect it. Used by `checkpointed_count --damage-checkpoint`, by the tests of recovery, and
//! meant for the simulator's storage faults. Never called by the runtime itself.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::storage::METADATA_FILE;

/// A way to damage a checkpoint folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointDamage {
    /// Flip one byte in the middle of a state file (caught by its checksum).
    FlipByte,
    /// Cut a state file in half (a torn write).
    TruncateState,
    /// Delete a state file.
    DeleteState,
    /// Cut `_metadata` in half.
    TruncateMetadata,
    /// Delete the whole checkpoint folder.
    DeleteCheckpoint,
}

impl CheckpointDamage {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::FlipByte,
        Self::TruncateState,
        Self::DeleteState,
        Self::TruncateMetadata,
        Self::DeleteCheckpoint,
    ];

    /// The kind's name, as [`FromStr`] reads it (`flip-byte`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::FlipByte => "flip-byte",
            Self::TruncateState => "truncate-state",
            Self::DeleteState => "delete-state",
            Self::TruncateMetadata => "truncate-metadata",
            Self::DeleteCheckpoint => "delete-checkpoint",
        }
    }

    /// Damages the checkpoint in `folder` this way (the state file with the smallest name,
    /// for the kinds that damage one).
    ///
    /// # Errors
    ///
    /// The folder has no state file, or a file cannot be changed (naming it).
    pub fn apply(self, folder: &Path) -> Result<(), String> {
        let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
        let state_file = || {
            std::fs::read_dir(folder)
                .map_err(|e| io(folder, e))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "state"))
                .min()
                .ok_or_else(|| format!("{}: no state file", folder.display()))
        };
        match self {
            Self::FlipByte => {
                let path = state_file()?;
                let mut bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
                let middle = bytes.len() / 2;
                if let Some(byte) = bytes.get_mut(middle) {
                    *byte ^= 0x5a;
                }
                std::fs::write(&path, bytes).map_err(|e| io(&path, e))
            }
            Self::TruncateState | Self::TruncateMetadata => {
                let path = if self == Self::TruncateState {
                    state_file()?
                } else {
                    folder.join(METADATA_FILE)
                };
                let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
                std::fs::write(&path, &bytes[..bytes.len() / 2]).map_err(|e| io(&path, e))
            }
            Self::DeleteState => {
                let path = state_file()?;
                std::fs::remove_file(&path).map_err(|e| io(&path, e))
            }
            Self::DeleteCheckpoint => std::fs::remove_dir_all(folder).map_err(|e| io(folder, e)),
        }
    }
}

impl fmt::Display for CheckpointDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CheckpointDamage {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("'{text}' is not a damage: one of {}", names.join(", "))
            })
    }
}

/// The newest complete checkpoint folder (`chk-<n>` with `_metadata`) of a run's checkpoint
/// folder `run_dir`, if any.
pub fn newest_complete_checkpoint(run_dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(run_dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().join(METADATA_FILE).is_file())
        .filter_map(|e| {
            let id: u64 = e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok()?;
            Some((id, e.path()))
        })
        .max()
        .map(|(_, path)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_listed() {
        for kind in CheckpointDamage::ALL {
            assert_eq!(kind.name().parse::<CheckpointDamage>(), Ok(kind));
        }
        let error = "melt".parse::<CheckpointDamage>().unwrap_err();
        assert!(error.contains("flip-byte"), "{error}");
    }

    #[test]
    fn every_damage_is_detected_by_storage() {
        use crate::checkpoint::storage::{
            CheckpointStorage, CheckpointStore, TaskStateFile, encode_frame,
        };
        use crate::checkpoint::{CheckpointId, CheckpointKind};
        for kind in CheckpointDamage::ALL {
            let dir = tempfile::tempdir().expect("tempdir");
            let storage = CheckpointStorage::Directory(dir.path().to_path_buf());
            let folder = storage.folder(CheckpointId(1), None);
            let frame = encode_frame(&TaskStateFile::default()).expect("encode");
            let file = storage
                .write_file(&folder, "task-0-0.state", &frame)
                .expect("write");
            let metadata = crate::checkpoint::storage::CheckpointMetadata {
                id: CheckpointId(1),
                kind: CheckpointKind::Checkpoint,
                job_name: "job".into(),
                max_parallelism: 128,
                operators: Vec::new(),
                files: vec![file],
            };
            storage.complete(&folder, &metadata).expect("complete");
            let path = newest_complete_checkpoint(dir.path()).expect("complete checkpoint");
            kind.apply(&path).expect("damages");
            let (restored, _) = storage.latest_restorable();
            assert!(restored.is_none(), "{kind}: damage not detected");
        }
    }
}
