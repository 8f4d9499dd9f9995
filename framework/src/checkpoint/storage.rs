//! Checkpoint storage: where completed checkpoints and savepoints live, in a documented layout,
//! every file checksummed.
//!
//! ## Directory layout
//!
//! ```text
//! <checkpoint dir>/
//!  <job id>/                       one folder per run of a job (32 hex digits): a run restarts
//!                                  only from its own checkpoints; another run's are used only
//!                                  when named with `restore_from`
//!   chk-<id>/                      one folder per checkpoint (the newest `retained` are kept)
//!     task-<vertex>-<subtask>.state  the state of one subtask: every operator of its chain
//!     _metadata                    written last and atomically (write `.tmp`, fsync, rename);
//!                                  a folder without it is an incomplete checkpoint, ignored
//! <savepoint dir>/
//!   savepoint-<id>/                same format; never deleted by the framework
//! ```
//!
//! Every file is a frame: the magic `EICHHORN`, a format version (u32, little-endian), the
//! payload length (u64) and the payload's CRC-32 (u32), then the postcard payload. Reading
//! checks all four and names the file on any mismatch, so a torn or corrupted file is detected,
//! never decoded into garbage. `_metadata` lists every state file with its length and CRC.
//!
//! Without a checkpoint directory, checkpoints are kept in the JobManager's memory (Flink's
//! `JobManagerCheckpointStorage`): the same frames, held as bytes. They survive restarts of the
//! job, not of the process.
//!
//! ## Invariants
//!
//! - A checkpoint is complete iff its `_metadata` exists and every file it lists matches its
//!   length and CRC.
//! - Every state file is read back and checked after it is written, and every listed file is
//!   checked again before `_metadata` is written: damage at write time fails the checkpoint.
//! - Recovery uses the newest complete checkpoint of the run; a damaged one is reported and
//!   skipped, unless exactly-once sinks committed transactions after the checkpoint recovery
//!   would use (the job coordinator refuses that fallback, see `runtime/job_core/restore.rs`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::summary::{OperatorStateSummary, summarize_task_state};
use super::{CheckpointId, CheckpointKind};
use crate::state::OperatorSnapshot;

const MAGIC: &[u8; 8] = b"EICHHORN";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// The name of the metadata file of a checkpoint folder.
pub const METADATA_FILE: &str = "_metadata";

/// A storage failure, naming the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StorageError {
    /// The file or folder concerned.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl StorageError {
    fn new(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self {
            path: path.as_ref().display().to_string(),
            message: message.into(),
        }
    }
}

/// The state of one subtask in one checkpoint: every operator of its chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStateFile {
    /// Per operator state id, its snapshot.
    pub operators: Vec<(String, OperatorSnapshot)>,
}

/// A state file as listed in the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMetadata {
    /// The file name inside the checkpoint folder.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// The CRC-32 of the whole file.
    pub crc32: u32,
}

/// A subtask's state file once stored: its handle, and how many of its bytes each operator's
/// snapshot took (for the live metrics; not part of the checkpoint's metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredState {
    /// The file, as the checkpoint's metadata lists it.
    pub file: FileMetadata,
    /// Per operator state id with a snapshot in the file, its encoded bytes.
    pub operator_bytes: Vec<(String, u64)>,
}

/// Where one operator's state is, per subtask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorMetadata {
    /// The operator's state id (uid or generated).
    pub state_id: String,
    /// Its parallelism when the checkpoint was taken.
    pub parallelism: u32,
    /// Per subtask index, the state file holding its snapshot.
    pub files: Vec<String>,
}

/// The metadata of a complete checkpoint or savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint's id.
    pub id: CheckpointId,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// The job's name.
    pub job_name: String,
    /// The job's max parallelism (key groups): state restores only with the same value.
    pub max_parallelism: u32,
    /// Every operator with state locations.
    pub operators: Vec<OperatorMetadata>,
    /// Every state file, with length and checksum.
    pub files: Vec<FileMetadata>,
}

/// A checkpoint chosen for recovery, as the JobManager keeps it: its metadata and, per
/// operator and old subtask, the state handle of the file holding the snapshot and a summary
/// of it, never the state itself (the TaskManagers read that by handle, see
/// [`restore_plan`](super::restore_plan)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredCheckpoint {
    /// Where it was read from (a folder, or `memory:chk-<id>`).
    pub location: String,
    /// Its folder in the storage it was read from.
    pub folder: CheckpointFolder,
    /// Its metadata.
    pub metadata: CheckpointMetadata,
    /// Per operator state id: each old subtask's state, in subtask order.
    pub operators: BTreeMap<String, Vec<StoredOperatorState>>,
}

/// One old subtask's state of one operator in a checkpoint: where it is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOperatorState {
    /// The state handle of the subtask's file.
    pub file: FileMetadata,
    /// What the operator's snapshot in it holds (empty when the file has none).
    pub summary: OperatorStateSummary,
}

/// Encodes `value` as a checksummed frame.
///
/// # Errors
///
/// The value cannot be encoded.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    encode_frame_with(|frame| {
        postcard::to_extend(value, std::mem::take(frame))
            .map(|bytes| *frame = bytes)
            .map_err(|e| format!("cannot encode: {e}"))
    })
}

/// Builds a checksummed frame whose payload `write_payload` appends to the buffer it is given
/// (the state file writer streams large payloads in without a copy). The payload must be what
/// [`decode_frame`] will decode.
///
/// # Errors
///
/// What `write_payload` returned.
pub(crate) fn encode_frame_with(
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
) -> Result<Vec<u8>, String> {
    let mut frame = vec![0; HEADER_LEN];
    write_payload(&mut frame)?;
    let payload = &frame[HEADER_LEN..];
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    header[20..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame[..HEADER_LEN].copy_from_slice(&header);
    Ok(frame)
}

/// Decodes a frame written by [`encode_frame`], checking magic, version, length and checksum.
///
/// # Errors
///
/// What is wrong with the frame (never a panic, never a garbled value).
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let payload = frame_payload(bytes)?;
    postcard::from_bytes(payload).map_err(|e| format!("cannot decode: {e}"))
}

/// The payload of a frame written by [`encode_frame`], once magic, version, length and
/// checksum are checked.
///
/// # Errors
///
/// What is wrong with the frame.
pub(crate) fn frame_payload(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("not an Eichhorn state file (bad magic)".to_string());
    }
    let word = |range: std::ops::Range<usize>| -> [u8; 4] {
        let mut out = [0; 4];
        out.copy_from_slice(&bytes[range]);
        out
    };
    let version = u32::from_le_bytes(word(8..12));
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    let mut len_bytes = [0; 8];
    len_bytes.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(len_bytes);
    let crc = u32::from_le_bytes(word(20..24));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(format!(
            "truncated or extended: payload of {} bytes, header says {len}",
            payload.len()
        ));
    }
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(format!(
            "checksum mismatch: stored {crc:08x}, computed {actual:08x}"
        ));
    }
    Ok(payload)
}

/// The checkpoint storage of one run: the operations the JobManager and the checkpoint writer
/// need, behind a trait so a node's [`RuntimeEnv`](crate::runtime::RuntimeEnv) can supply
/// another store (the simulator's fault-injecting one) without either of them knowing.
///
/// [`CheckpointStorage`] implements it for the two stores Eichhorn ships, a directory and
/// memory; the layout and file format are those of the module documentation.
///
/// A folder that has a `path` (a savepoint, or a checkpoint of directory storage) is on disk
/// whatever the store; a folder without one lives in the store (memory).
///
/// # Examples
///
/// ```
/// use eichhorn::checkpoint::CheckpointId;
/// use eichhorn::checkpoint::storage::{CheckpointStorage, CheckpointStore};
///
/// let store = CheckpointStorage::memory();
/// let folder = store.folder(CheckpointId(1), None);
/// assert_eq!(folder.name, "chk-1");
/// assert!(store.checkpoint_ids().is_empty(), "nothing complete yet");
/// ```
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// The folder for checkpoint `id` (periodic checkpoints) or a savepoint under `target`.
    fn folder(&self, id: CheckpointId, savepoint_target: Option<&Path>) -> CheckpointFolder;

    /// Writes file `name` with `frame` into `folder`; returns its metadata.
    ///
    /// # Errors
    ///
    /// The file cannot be written (naming it).
    fn write_file(
        &self,
        folder: &CheckpointFolder,
        name: &str,
        frame: &[u8],
    ) -> Result<FileMetadata, StorageError>;

    /// Writes the metadata last, atomically: the checkpoint is complete from here on.
    ///
    /// # Errors
    ///
    /// The metadata cannot be written.
    fn complete(
        &self,
        folder: &CheckpointFolder,
        metadata: &CheckpointMetadata,
    ) -> Result<(), StorageError>;

    /// Removes a folder (a failed checkpoint, or one beyond the retained count).
    fn discard(&self, folder: &CheckpointFolder);

    /// Removes `folder` unless it is complete (has `_metadata`): for a write that landed after
    /// its checkpoint was aborted.
    fn discard_incomplete(&self, folder: &CheckpointFolder);

    /// The ids of periodic checkpoints that have metadata, oldest first.
    fn checkpoint_ids(&self) -> Vec<CheckpointId>;

    /// The bytes of file `name` in `folder`.
    ///
    /// # Errors
    ///
    /// The file is missing or unreadable (naming it).
    fn read_file(&self, folder: &CheckpointFolder, name: &str) -> Result<Vec<u8>, StorageError>;

    /// Keeps the newest `retained` complete checkpoints and removes older ones (and incomplete
    /// folders older than the newest complete one).
    fn prune(&self, retained: usize) {
        let ids = self.checkpoint_ids();
        let keep_from = ids.len().saturating_sub(retained.max(1));
        for id in &ids[..keep_from] {
            self.discard(&self.folder(*id, None));
        }
    }

    /// Reads and verifies a complete checkpoint or savepoint folder.
    ///
    /// # Errors
    ///
    /// A missing, truncated or corrupted file, named.
    fn load(&self, folder: &CheckpointFolder) -> Result<RestoredCheckpoint, StorageError> {
        load_with(folder, |name| self.read_file(folder, name))
    }

    /// The newest complete checkpoint that reads back intact. Damaged ones are skipped; each is
    /// reported in the returned list of problems, so recovery can say why it fell back.
    fn latest_restorable(&self) -> (Option<RestoredCheckpoint>, Vec<StorageError>) {
        let mut problems = Vec::new();
        for id in self.checkpoint_ids().into_iter().rev() {
            match self.load(&self.folder(id, None)) {
                Ok(restored) => return (Some(restored), problems),
                Err(error) => problems.push(error),
            }
        }
        (None, problems)
    }
}

/// Opens the [`CheckpointStore`] of each run on a node: the part of checkpoint storage a
/// [`RuntimeEnv`](crate::runtime::RuntimeEnv) carries (Flink's `CheckpointStorage`, which
/// creates a job's `CheckpointStorageAccess`). A node runs many jobs; each run gets a store of
/// its own, so runs never see each other's checkpoints unless told to (`restore_from`).
///
/// # Examples
///
/// ```
/// use eichhorn::checkpoint::JobId;
/// use eichhorn::checkpoint::storage::{CheckpointStoreProvider, StandardCheckpointStores};
///
/// let store = StandardCheckpointStores.open_run(JobId(7), None); // no directory: memory
/// assert!(store.checkpoint_ids().is_empty());
/// ```
pub trait CheckpointStoreProvider: Send + Sync + std::fmt::Debug {
    /// The store of run `job_id`. `run_dir` is the run's checkpoint folder
    /// (`<checkpoint dir>/<job id>`) when the job configured a checkpoint directory, `None`
    /// when it keeps checkpoints in memory.
    fn open_run(&self, job_id: super::JobId, run_dir: Option<&Path>) -> Arc<dyn CheckpointStore>;
}

/// The stores Eichhorn ships: the run's folder when the job configured a checkpoint directory,
/// otherwise a fresh memory store per run (it survives restarts of the run, not of the
/// process).
///
/// # Examples
///
/// ```
/// use eichhorn::checkpoint::JobId;
/// use eichhorn::checkpoint::storage::{CheckpointStoreProvider, StandardCheckpointStores};
///
/// let dir = tempfile::tempdir().unwrap();
/// let run = dir.path().join(JobId(7).to_string());
/// let store = StandardCheckpointStores.open_run(JobId(7), Some(&run));
/// let folder = store.folder(eichhorn::checkpoint::CheckpointId(1), None);
/// assert_eq!(folder.path, Some(run.join("chk-1")));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct StandardCheckpointStores;

impl CheckpointStoreProvider for StandardCheckpointStores {
    fn open_run(&self, _job_id: super::JobId, run_dir: Option<&Path>) -> Arc<dyn CheckpointStore> {
        match run_dir {
            Some(dir) => Arc::new(CheckpointStorage::Directory(dir.to_path_buf())),
            None => Arc::new(CheckpointStorage::memory()),
        }
    }
}

/// In-memory checkpoint storage: folder name -> file name -> bytes.
#[derive(Debug, Default)]
pub struct MemoryStore {
    folders: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// The two checkpoint stores Eichhorn ships; both implement [`CheckpointStore`].
#[derive(Debug, Clone)]
pub enum CheckpointStorage {
    /// In the JobManager's memory.
    Memory(Arc<Mutex<MemoryStore>>),
    /// In a directory, as the layout above.
    Directory(PathBuf),
}

/// The folder of one checkpoint or savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFolder {
    /// The storage it is in.
    pub name: String,
    /// The directory, for directory storage (savepoints always have one).
    pub path: Option<PathBuf>,
}

impl CheckpointStorage {
    /// Storage in memory.
    pub fn memory() -> Self {
        Self::Memory(Arc::new(Mutex::new(MemoryStore::default())))
    }
}

impl CheckpointStore for CheckpointStorage {
    fn folder(&self, id: CheckpointId, savepoint_target: Option<&Path>) -> CheckpointFolder {
        if let Some(target) = savepoint_target {
            let name = format!("savepoint-{}", id.0);
            return CheckpointFolder {
                path: Some(target.join(&name)),
                name,
            };
        }
        let name = format!("chk-{}", id.0);
        match self {
            Self::Memory(_) => CheckpointFolder { name, path: None },
            Self::Directory(root) => CheckpointFolder {
                path: Some(root.join(&name)),
                name,
            },
        }
    }

    /// Writes file `name` with `frame` into `folder`; returns its metadata.
    ///
    /// # Errors
    ///
    /// The file cannot be written (naming it).
    fn write_file(
        &self,
        folder: &CheckpointFolder,
        name: &str,
        frame: &[u8],
    ) -> Result<FileMetadata, StorageError> {
        let metadata = FileMetadata {
            name: name.to_string(),
            len: frame.len() as u64,
            crc32: crc32fast::hash(frame),
        };
        match (&folder.path, self) {
            (Some(dir), _) => {
                fs::create_dir_all(dir)
                    .map_err(|e| StorageError::new(dir, format!("cannot create: {e}")))?;
                let path = dir.join(name);
                write_synced(&path, frame)?;
                // Read back before the file counts as stored: damage at write time must fail
                // the checkpoint, never complete it.
                verify_file(&path, &metadata)?;
            }
            (None, Self::Memory(store)) => {
                let mut store = store
                    .lock()
                    .map_err(|_| StorageError::new(&folder.name, "memory storage poisoned"))?;
                store
                    .folders
                    .entry(folder.name.clone())
                    .or_default()
                    .insert(name.to_string(), frame.to_vec());
            }
            (None, Self::Directory(root)) => {
                return Err(StorageError::new(root, "checkpoint folder without a path"));
            }
        }
        Ok(metadata)
    }

    /// Writes the metadata last, atomically: the checkpoint is complete from here on.
    ///
    /// # Errors
    ///
    /// The metadata cannot be written.
    fn complete(
        &self,
        folder: &CheckpointFolder,
        metadata: &CheckpointMetadata,
    ) -> Result<(), StorageError> {
        let frame = encode_frame(metadata).map_err(|e| StorageError::new(&folder.name, e))?;
        match (&folder.path, self) {
            (Some(dir), _) => {
                fs::create_dir_all(dir)
                    .map_err(|e| StorageError::new(dir, format!("cannot create: {e}")))?;
                // Every listed file must still be there, whole, before the metadata makes the
                // checkpoint complete (each was read back and checked when it was written).
                for file in &metadata.files {
                    let path = dir.join(&file.name);
                    let len = fs::metadata(&path)
                        .map_err(|e| StorageError::new(&path, format!("cannot stat: {e}")))?
                        .len();
                    if len != file.len {
                        return Err(StorageError::new(
                            &path,
                            format!("{len} bytes, {} were written", file.len),
                        ));
                    }
                }
                let tmp = dir.join(format!("{METADATA_FILE}.tmp"));
                let path = dir.join(METADATA_FILE);
                write_synced(&tmp, &frame)?;
                verify_file(
                    &tmp,
                    &FileMetadata {
                        name: METADATA_FILE.to_string(),
                        len: frame.len() as u64,
                        crc32: crc32fast::hash(&frame),
                    },
                )?;
                fs::rename(&tmp, &path)
                    .map_err(|e| StorageError::new(&path, format!("cannot rename: {e}")))?;
                sync_dir(dir);
                Ok(())
            }
            (None, Self::Memory(store)) => {
                let mut store = store
                    .lock()
                    .map_err(|_| StorageError::new(&folder.name, "memory storage poisoned"))?;
                store
                    .folders
                    .entry(folder.name.clone())
                    .or_default()
                    .insert(METADATA_FILE.to_string(), frame);
                Ok(())
            }
            (None, Self::Directory(root)) => {
                Err(StorageError::new(root, "checkpoint folder without a path"))
            }
        }
    }

    /// Removes a folder (a failed checkpoint, or one beyond the retained count).
    fn discard(&self, folder: &CheckpointFolder) {
        match (&folder.path, self) {
            (Some(dir), _) => {
                // Best effort: a leftover folder without metadata is ignored by recovery.
                let _ = fs::remove_dir_all(dir);
            }
            (None, Self::Memory(store)) => {
                if let Ok(mut store) = store.lock() {
                    store.folders.remove(&folder.name);
                }
            }
            (None, Self::Directory(_)) => {}
        }
    }

    /// Removes `folder` unless it is complete (has `_metadata`): for a write that landed after
    /// its checkpoint was aborted.
    fn discard_incomplete(&self, folder: &CheckpointFolder) {
        let complete = match (&folder.path, self) {
            (Some(dir), _) => dir.join(METADATA_FILE).exists(),
            (None, Self::Memory(store)) => store.lock().map_or(true, |s| {
                s.folders
                    .get(&folder.name)
                    .is_some_and(|files| files.contains_key(METADATA_FILE))
            }),
            (None, Self::Directory(_)) => true,
        };
        if !complete {
            self.discard(folder);
        }
    }

    /// The ids of periodic checkpoints that have metadata, oldest first.
    fn checkpoint_ids(&self) -> Vec<CheckpointId> {
        let mut ids: Vec<CheckpointId> = match self {
            Self::Memory(store) => store
                .lock()
                .map(|s| {
                    s.folders
                        .iter()
                        .filter(|(_, files)| files.contains_key(METADATA_FILE))
                        .filter_map(|(name, _)| parse_checkpoint_folder(name))
                        .collect()
                })
                .unwrap_or_default(),
            Self::Directory(root) => fs::read_dir(root)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.path().join(METADATA_FILE).is_file())
                        .filter_map(|e| parse_checkpoint_folder(&e.file_name().to_string_lossy()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        ids.sort();
        ids
    }

    fn read_file(&self, folder: &CheckpointFolder, name: &str) -> Result<Vec<u8>, StorageError> {
        match (&folder.path, self) {
            (Some(dir), _) => {
                let path = dir.join(name);
                fs::read(&path).map_err(|e| {
                    let what = if e.kind() == std::io::ErrorKind::NotFound {
                        "missing".to_string()
                    } else {
                        format!("cannot read: {e}")
                    };
                    StorageError::new(&path, what)
                })
            }
            (None, Self::Memory(store)) => {
                let store = store
                    .lock()
                    .map_err(|_| StorageError::new(&folder.name, "memory storage poisoned"))?;
                store
                    .folders
                    .get(&folder.name)
                    .and_then(|files| files.get(name))
                    .cloned()
                    .ok_or_else(|| {
                        StorageError::new(format!("memory:{}/{name}", folder.name), "missing")
                    })
            }
            (None, Self::Directory(root)) => {
                Err(StorageError::new(root, "checkpoint folder without a path"))
            }
        }
    }
}

/// Reads and verifies the complete checkpoint or savepoint `folder`, whose files `read` returns.
fn load_with(
    folder: &CheckpointFolder,
    read: impl Fn(&str) -> Result<Vec<u8>, StorageError>,
) -> Result<RestoredCheckpoint, StorageError> {
    let location = folder.path.as_ref().map_or_else(
        || format!("memory:{}", folder.name),
        |p| p.display().to_string(),
    );
    let file_error = |name: &str, message: String| StorageError {
        path: match &folder.path {
            Some(dir) => dir.join(name).display().to_string(),
            None => format!("memory:{}/{name}", folder.name),
        },
        message,
    };
    let metadata_bytes = read(METADATA_FILE)?;
    let metadata: CheckpointMetadata =
        decode_frame(&metadata_bytes).map_err(|e| file_error(METADATA_FILE, e))?;
    // Every file is checked against its handle here, so the choice of the newest intact
    // checkpoint stays the JobManager's; only a summary of each is kept.
    let mut files: BTreeMap<String, (FileMetadata, Vec<(String, OperatorStateSummary)>)> =
        BTreeMap::new();
    for file in &metadata.files {
        let bytes = read(&file.name)?;
        if bytes.len() as u64 != file.len {
            return Err(file_error(
                &file.name,
                format!("{} bytes, metadata says {}", bytes.len(), file.len),
            ));
        }
        if crc32fast::hash(&bytes) != file.crc32 {
            return Err(file_error(
                &file.name,
                "checksum mismatch against the metadata".to_string(),
            ));
        }
        // Summarised in place: no keyed entry or list element is copied out of the bytes.
        let summaries = frame_payload(&bytes)
            .and_then(summarize_task_state)
            .map_err(|e| file_error(&file.name, e))?;
        files.insert(file.name.clone(), (file.clone(), summaries));
    }
    let mut operators = BTreeMap::new();
    for operator in &metadata.operators {
        let mut states = Vec::with_capacity(operator.files.len());
        for name in &operator.files {
            let (file, summaries) = files.get(name).ok_or_else(|| {
                file_error(
                    name,
                    "listed for an operator but not in the metadata".into(),
                )
            })?;
            let summary = summaries
                .iter()
                .find(|(id, _)| *id == operator.state_id)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            states.push(StoredOperatorState {
                file: file.clone(),
                summary,
            });
        }
        operators.insert(operator.state_id.clone(), states);
    }
    Ok(RestoredCheckpoint {
        location,
        folder: folder.clone(),
        metadata,
        operators,
    })
}

/// Reads every old subtask's snapshot of every operator of the checkpoint `restored` names,
/// as the JobManager read them before restores went by handle: the oracle the tests compare
/// restores by handle with.
#[cfg(test)]
pub(crate) fn read_snapshots(
    store: &dyn CheckpointStore,
    restored: &RestoredCheckpoint,
) -> Result<BTreeMap<String, Vec<OperatorSnapshot>>, StorageError> {
    let mut operators = BTreeMap::new();
    for (id, states) in &restored.operators {
        let mut snapshots = Vec::with_capacity(states.len());
        for state in states {
            let bytes = store.read_file(&restored.folder, &state.file.name)?;
            let file: TaskStateFile =
                decode_frame(&bytes).map_err(|e| StorageError::new(&state.file.name, e))?;
            snapshots.push(
                file.operators
                    .into_iter()
                    .find(|(state_id, _)| state_id == id)
                    .map(|(_, s)| s)
                    .unwrap_or_default(),
            );
        }
        operators.insert(id.clone(), snapshots);
    }
    Ok(operators)
}

/// Reads a savepoint or checkpoint folder on disk (to start a job from it).
///
/// # Errors
///
/// The folder has no readable metadata, or a file is damaged.
pub fn load_folder(path: &Path) -> Result<RestoredCheckpoint, StorageError> {
    let storage =
        CheckpointStorage::Directory(path.parent().map(Path::to_path_buf).unwrap_or_default());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    storage.load(&CheckpointFolder {
        name,
        path: Some(path.to_path_buf()),
    })
}

/// The problems of [`CheckpointStore::latest_restorable`] as one line, `; `-separated.
pub fn describe_problems(problems: &[StorageError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads what [`StreamEnv::restore_from`](crate::api::StreamEnv::restore_from) names: a
/// savepoint or checkpoint folder (with `_metadata`), or the checkpoint folder of a whole run
/// (`<checkpoint dir>/<job id>`, holding `chk-<n>` folders), whose newest intact checkpoint is
/// used. Returns the checkpoint and, for a run's folder, the newer checkpoints it skipped as
/// damaged.
///
/// # Errors
///
/// The path does not exist, is none of the above (a checkpoint directory holding several runs
/// is named with its runs, so the user can pick one), or holds no intact checkpoint.
pub fn load_restore_path(
    path: &Path,
) -> Result<(RestoredCheckpoint, Vec<StorageError>), StorageError> {
    if path.join(METADATA_FILE).exists() {
        return load_folder(path).map(|restored| (restored, Vec::new()));
    }
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StorageError::new(path, "no such savepoint or checkpoint"));
        }
        Err(e) => return Err(StorageError::new(path, format!("cannot read: {e}"))),
    };
    let mut checkpoints = 0usize;
    let mut runs = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if parse_checkpoint_folder(&name).is_some() {
            checkpoints += 1;
        } else if name.parse::<super::JobId>().is_ok() && entry.path().is_dir() {
            runs.push(name);
        }
    }
    if checkpoints > 0 {
        let storage = CheckpointStorage::Directory(path.to_path_buf());
        return match storage.latest_restorable() {
            (Some(restored), problems) => Ok((restored, problems)),
            (None, problems) => Err(StorageError::new(
                path,
                format!(
                    "no intact checkpoint in this run's folder: {}",
                    if problems.is_empty() {
                        "no chk-<n> folder has _metadata".to_string()
                    } else {
                        describe_problems(&problems)
                    }
                ),
            )),
        };
    }
    if !runs.is_empty() {
        runs.sort();
        let listed = runs
            .iter()
            .map(|run| {
                let storage = CheckpointStorage::Directory(path.join(run));
                match storage.checkpoint_ids().last() {
                    Some(id) => format!("{run} (newest checkpoint chk-{})", id.0),
                    None => format!("{run} (no complete checkpoint)"),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(StorageError::new(
            path,
            format!(
                "a checkpoint directory holding the checkpoints of {} run(s): {listed}; \
                 restore from one run's folder or one of its chk-<n> folders",
                runs.len()
            ),
        ));
    }
    Err(StorageError::new(
        path,
        "not a savepoint or checkpoint (no _metadata) and not a run's checkpoint folder (no \
         chk-<n> folders)",
    ))
}

fn parse_checkpoint_folder(name: &str) -> Option<CheckpointId> {
    name.strip_prefix("chk-")?.parse().ok().map(CheckpointId)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let mut file = fs::File::create(path)
        .map_err(|e| StorageError::new(path, format!("cannot create: {e}")))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| StorageError::new(path, format!("cannot write: {e}")))
}

/// Reads `path` back and checks it has the length and CRC it was written with.
fn verify_file(path: &Path, expected: &FileMetadata) -> Result<(), StorageError> {
    let bytes =
        fs::read(path).map_err(|e| StorageError::new(path, format!("cannot read back: {e}")))?;
    if bytes.len() as u64 != expected.len {
        return Err(StorageError::new(
            path,
            format!(
                "read back {} bytes, {} were written",
                bytes.len(),
                expected.len
            ),
        ));
    }
    if crc32fast::hash(&bytes) != expected.crc32 {
        return Err(StorageError::new(
            path,
            "read back with a different checksum than was written",
        ));
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable where the platform allows opening a directory; best effort.
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{OperatorListState, OperatorStateMode};

    fn sample_state(value: u8) -> TaskStateFile {
        TaskStateFile {
            operators: vec![(
                "sum".to_string(),
                OperatorSnapshot {
                    keyed: Default::default(),
                    operator: vec![OperatorListState {
                        name: "x".into(),
                        mode: OperatorStateMode::Split,
                        elements: vec![vec![value]],
                    }],
                },
            )],
        }
    }

    fn write_checkpoint(storage: &CheckpointStorage, id: u64, value: u8) -> CheckpointFolder {
        let folder = storage.folder(CheckpointId(id), None);
        let frame = encode_frame(&sample_state(value)).expect("encode");
        let file = storage
            .write_file(&folder, "task-0-0.state", &frame)
            .expect("write");
        let metadata = CheckpointMetadata {
            id: CheckpointId(id),
            kind: CheckpointKind::Checkpoint,
            job_name: "job".into(),
            max_parallelism: 128,
            operators: vec![OperatorMetadata {
                state_id: "sum".into(),
                parallelism: 1,
                files: vec!["task-0-0.state".into()],
            }],
            files: vec![file],
        };
        storage.complete(&folder, &metadata).expect("complete");
        folder
    }

    #[test]
    fn frames_detect_every_kind_of_damage() {
        let frame = encode_frame(&sample_state(3)).expect("encode");
        assert_eq!(
            decode_frame::<TaskStateFile>(&frame).expect("intact"),
            sample_state(3)
        );
        let mut flipped = frame.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(
            decode_frame::<TaskStateFile>(&flipped)
                .unwrap_err()
                .contains("checksum")
        );
        assert!(
            decode_frame::<TaskStateFile>(&frame[..frame.len() - 1])
                .unwrap_err()
                .contains("truncated")
        );
        assert!(
            decode_frame::<TaskStateFile>(&frame[..5])
                .unwrap_err()
                .contains("header")
        );
        assert!(
            decode_frame::<TaskStateFile>(b"NOTMAGIC-and-more-bytes-here")
                .unwrap_err()
                .contains("magic")
        );
    }

    #[test]
    fn directory_round_trip_and_fallback_on_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = CheckpointStorage::Directory(dir.path().to_path_buf());
        write_checkpoint(&storage, 1, 10);
        let second = write_checkpoint(&storage, 2, 20);
        // An incomplete folder (no metadata) is ignored.
        fs::create_dir_all(dir.path().join("chk-3")).expect("mkdir");
        assert_eq!(
            storage.checkpoint_ids(),
            vec![CheckpointId(1), CheckpointId(2)]
        );

        let (latest, problems) = storage.latest_restorable();
        assert!(problems.is_empty());
        assert_eq!(latest.expect("restorable").metadata.id, CheckpointId(2));

        // Corrupt checkpoint 2's state file: recovery falls back to 1 and names the file.
        let path = second.path.expect("path").join("task-0-0.state");
        let mut bytes = fs::read(&path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&path, bytes).expect("write");
        let (latest, problems) = storage.latest_restorable();
        let latest = latest.expect("falls back");
        assert_eq!(latest.metadata.id, CheckpointId(1));
        let snapshots = read_snapshots(&storage, &latest).expect("reads");
        assert_eq!(snapshots["sum"][0].operator[0].elements, vec![vec![10]]);
        assert_eq!(latest.operators["sum"][0].file.name, "task-0-0.state");
        assert_eq!(latest.operators["sum"][0].summary.lists[0].elements, 1);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].path.ends_with("task-0-0.state"),
            "{:?}",
            problems[0]
        );
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = CheckpointStorage::Directory(dir.path().to_path_buf());
        let folder = write_checkpoint(&storage, 4, 1);
        fs::remove_file(folder.path.clone().expect("path").join("task-0-0.state")).expect("rm");
        let error = storage.load(&folder).unwrap_err();
        assert!(error.path.ends_with("task-0-0.state") && error.message == "missing");
    }

    #[test]
    fn a_file_damaged_before_completion_fails_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = CheckpointStorage::Directory(dir.path().to_path_buf());
        let folder = storage.folder(CheckpointId(1), None);
        let frame = encode_frame(&sample_state(1)).expect("encode");
        let file = storage
            .write_file(&folder, "task-0-0.state", &frame)
            .expect("write");
        let path = folder.path.clone().expect("path").join("task-0-0.state");
        fs::write(&path, &frame[..frame.len() - 3]).expect("truncate");
        let metadata = CheckpointMetadata {
            id: CheckpointId(1),
            kind: CheckpointKind::Checkpoint,
            job_name: "job".into(),
            max_parallelism: 128,
            operators: Vec::new(),
            files: vec![file],
        };
        let error = storage.complete(&folder, &metadata).unwrap_err();
        assert!(error.path.ends_with("task-0-0.state"), "{error}");
        assert!(!folder.path.expect("path").join(METADATA_FILE).exists());
        assert!(storage.checkpoint_ids().is_empty(), "never completed");
    }

    #[test]
    fn a_restore_path_is_a_checkpoint_a_run_or_an_error_naming_the_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join(crate::checkpoint::JobId(1).to_string());
        let storage = CheckpointStorage::Directory(run.clone());
        write_checkpoint(&storage, 1, 10);
        let second = write_checkpoint(&storage, 2, 20);

        let (restored, problems) = load_restore_path(&run).expect("a run's folder");
        assert_eq!(restored.metadata.id, CheckpointId(2));
        assert!(problems.is_empty());
        let (restored, _) = load_restore_path(&run.join("chk-1")).expect("one checkpoint");
        assert_eq!(restored.metadata.id, CheckpointId(1));

        // The newest is damaged: the run's folder falls back and says why.
        let metadata = second.path.expect("path").join(METADATA_FILE);
        let bytes = fs::read(&metadata).expect("read");
        fs::write(&metadata, &bytes[..bytes.len() / 2]).expect("truncate");
        let (restored, problems) = load_restore_path(&run).expect("falls back");
        assert_eq!(restored.metadata.id, CheckpointId(1));
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].path.ends_with("chk-2/_metadata"),
            "{}",
            problems[0]
        );

        // The checkpoint directory itself names its runs.
        let other =
            CheckpointStorage::Directory(dir.path().join(crate::checkpoint::JobId(2).to_string()));
        write_checkpoint(&other, 7, 1);
        let error = load_restore_path(dir.path()).unwrap_err();
        assert!(
            error.message.contains("2 run(s)")
                && error.message.contains("00000000000000000000000000000001")
                && error.message.contains("chk-7"),
            "{error}"
        );
        let error = load_restore_path(&dir.path().join("nothing-here")).unwrap_err();
        assert!(error.message.contains("no such"), "{error}");
    }

    #[test]
    fn memory_storage_prunes_to_retained() {
        let storage = CheckpointStorage::memory();
        for id in 1..=4 {
            write_checkpoint(&storage, id, id as u8);
        }
        storage.prune(2);
        assert_eq!(
            storage.checkpoint_ids(),
            vec![CheckpointId(3), CheckpointId(4)]
        );
        let (latest, _) = storage.latest_restorable();
        assert_eq!(latest.expect("latest").location, "memory:chk-4");
    }
}
