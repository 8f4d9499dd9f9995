//! The checkpoint writer: completes subtasks' pending snapshots and stores them, off the data
//! path.
//!
//! Subtasks hand their snapshots to the JobManager at the barrier and go on processing; this
//! actor runs deferred parts and reads frozen ones (an LMDB backend's read transaction opened at
//! the barrier), streaming them into the subtask's state file, writes it through
//! the run's [`CheckpointStore`] and reports the result. That work blocks (it reads whole frozen
//! stores and ends in fsync), so it runs as the node's [`RuntimeEnv`] says: in
//! `block_in_place` in production, in place in the deterministic env.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::protocol::{JobManagerMsg, WriterMsg};
use std::sync::Arc;

use super::RuntimeEnv;
use crate::checkpoint::storage::{
    CheckpointFolder, CheckpointStore, StoredState, encode_frame_with,
};
use crate::operator::PendingOperatorSnapshot;
use crate::state::snapshot::encode_keyed_snapshot;

/// The checkpoint writer actor.
pub(crate) struct CheckpointWriter;

pub(crate) struct WriterState {
    storage: Arc<dyn CheckpointStore>,
    /// Decides how the blocking work runs.
    env: RuntimeEnv,
    job_manager: ActorRef<JobManagerMsg>,
}

impl std::fmt::Debug for WriterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterState").finish_non_exhaustive()
    }
}

impl Actor for CheckpointWriter {
    type Msg = WriterMsg;
    type State = WriterState;
    type Arguments = (
        Arc<dyn CheckpointStore>,
        RuntimeEnv,
        ActorRef<JobManagerMsg>,
    );

    async fn pre_start(
        &self,
        _myself: ActorRef<WriterMsg>,
        (storage, env, job_manager): Self::Arguments,
    ) -> Result<WriterState, ActorProcessingErr> {
        Ok(WriterState {
            storage,
            env,
            job_manager,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WriterMsg>,
        message: WriterMsg,
        state: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        let WriterMsg::Persist {
            attempt,
            index,
            id,
            folder,
            file_name,
            snapshots,
        } = message;
        // Encoding reads whole frozen stores and storage ends in fsync: tens of milliseconds
        // of blocking work. In production the worker hands its other tasks over first
        // (`block_in_place`), so subtasks scheduled there keep running; the deterministic env
        // (a current-thread runtime has no other worker) runs it in place.
        // A slow disk, in simulations: the write takes this long first (the writer's mailbox
        // waits, as behind a slow fsync; the subtasks go on).
        if let Some(delay) = state
            .env
            .fault_injector()
            .and_then(|faults| faults.before_checkpoint_write(id.0))
        {
            tokio::time::sleep(delay).await;
        }
        let storage = state.storage.as_ref();
        let result = state
            .env
            .run_blocking(|| persist(storage, &folder, &file_name, snapshots));
        let _ = state.job_manager.send_message(JobManagerMsg::Persisted {
            attempt,
            index,
            id,
            folder,
            result,
        });
        Ok(())
    }
}

/// Per operator state id, the bytes of its part of a state file.
type OperatorBytes = Vec<(String, u64)>;

/// Encodes and stores one subtask's acknowledged state as `file_name` in `folder` (also used
/// by the test harness, which stores in place).
pub(crate) fn persist(
    storage: &dyn CheckpointStore,
    folder: &CheckpointFolder,
    file_name: &str,
    snapshots: Vec<(String, PendingOperatorSnapshot)>,
) -> Result<StoredState, String> {
    let (frame, operator_bytes) = encode_task_state(snapshots)?;
    let file = storage
        .write_file(folder, file_name, &frame)
        .map_err(|e| e.to_string())?;
    Ok(StoredState {
        file,
        operator_bytes,
    })
}

/// Encodes one subtask's state file: the frame [`encode_frame`] gives for the
/// [`TaskStateFile`] of the completed snapshots, written without building it. Keyed parts go
/// through [`encode_keyed_snapshot`], which copies a frozen store's entries (LMDB pages, the
/// copied memory tables) straight into the frame instead of allocating a
/// [`KeyedEntry`](crate::state::KeyedEntry) per entry, merging and re-encoding them. Also
/// returns the bytes each operator's part took.
///
/// [`encode_frame`]: crate::checkpoint::storage::encode_frame
/// [`TaskStateFile`]: crate::checkpoint::storage::TaskStateFile
fn encode_task_state(
    snapshots: Vec<(String, PendingOperatorSnapshot)>,
) -> Result<(Vec<u8>, OperatorBytes), String> {
    fn extend<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        postcard::to_extend(value, std::mem::take(out))
            .map(|bytes| *out = bytes)
            .map_err(|e| format!("cannot encode: {e}"))
    }
    let mut operator_bytes = Vec::with_capacity(snapshots.len());
    let frame = encode_frame_with(|out| {
        // `TaskStateFile { operators }`: the list's length, then each `(state id, snapshot)`.
        extend(&snapshots.len(), out)?;
        for (state_id, pending) in snapshots {
            let start = out.len();
            extend(&state_id, out)?;
            encode_keyed_snapshot(pending.keyed, out)
                .map_err(|e| format!("operator '{state_id}': {e}"))?;
            extend(&pending.operator, out)?;
            operator_bytes.push((state_id, (out.len() - start) as u64));
        }
        Ok(())
    })?;
    Ok((frame, operator_bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::checkpoint::storage::{TaskStateFile, decode_frame, encode_frame};
    use crate::state::snapshot::{OperatorListState, redistribute};
    use crate::state::test_support::Ctx;
    use crate::state::{
        KeyGroupRange, KeyedBackendConfig, KeyedEntry, KeyedStateSnapshot, KeyedStateStore,
        ListState, MapState, OperatorSnapshot, OperatorStateMode, PendingKeyedSnapshot,
        StateBackendKind, StateMeta, StateTtlConfig, ValueState,
    };

    const KEYS: u64 = 600;

    fn open(kind: StateBackendKind, dir: &std::path::Path, range: KeyGroupRange) -> Ctx<u64> {
        let config = match kind {
            StateBackendKind::Memory => KeyedBackendConfig {
                key_groups: range,
                ..KeyedBackendConfig::memory(128)
            },
            StateBackendKind::Lmdb => KeyedBackendConfig {
                key_groups: range,
                ..crate::state::test_support::lmdb_config(dir, 64)
            },
        };
        Ctx::new(0, KeyedStateStore::open(config).expect("opens"))
    }

    /// Several kinds of state, some with a TTL that lets part of them expire by `now = 100`,
    /// and a restored state nobody touches.
    fn fill(ctx: &mut Ctx<u64>) {
        let restored = KeyedStateSnapshot {
            states: vec![StateMeta {
                name: "untouched".into(),
                type_name: "u8".into(),
            }],
            entries: (0..KEYS)
                .map(|key| KeyedEntry {
                    key_group: crate::state::key_group_for_key(&key, 128).0,
                    state: 0,
                    key: postcard::to_allocvec(&key).expect("encodes"),
                    value: vec![7],
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        ctx.store.restore(restored).expect("restores");
        let value = ValueState::<u64>::new("value");
        let list = ListState::<String>::new("list").with_ttl(StateTtlConfig::new(100));
        let map = MapState::<u8, i32>::new("map");
        for key in 0..KEYS {
            ctx.key = key;
            ctx.now = i64::try_from(key % 3).expect("small") * 10;
            value.update(ctx, key * 10);
            list.add(ctx, format!("k{key}"));
            if key % 2 == 0 {
                map.put(ctx, (key % 7) as u8, key as i32);
            }
        }
        let mut table = ctx.store.value_table::<u64>("table").expect("table");
        for key in 0..KEYS {
            table.insert(key, key + 1).expect("insert");
        }
        ctx.now = 100;
    }

    /// The snapshots of one subtask's chain: a keyed operator with its store, timers and a
    /// deferred part; a second with only operator state.
    fn chain(
        store: &mut KeyedStateStore<u64>,
        now_ms: i64,
    ) -> Vec<(String, PendingOperatorSnapshot)> {
        let timers = KeyedStateSnapshot {
            states: vec![StateMeta {
                name: "timers".into(),
                type_name: "i64".into(),
            }],
            entries: vec![KeyedEntry {
                key_group: 3,
                state: 0,
                key: vec![1],
                value: vec![2],
            }],
        };
        let deferred = timers.clone();
        vec![
            (
                "keyed".to_string(),
                PendingOperatorSnapshot {
                    keyed: vec![
                        store.snapshot(now_ms).expect("snapshot"),
                        PendingKeyedSnapshot::Ready(timers),
                        PendingKeyedSnapshot::Deferred(Box::new(move || {
                            let mut renamed = deferred;
                            renamed.states[0].name = "more".into();
                            Ok(renamed)
                        })),
                    ],
                    operator: vec![OperatorListState {
                        name: "offsets".into(),
                        mode: OperatorStateMode::Split,
                        elements: vec![vec![1], vec![2, 3]],
                    }],
                },
            ),
            (
                "sink".to_string(),
                PendingOperatorSnapshot {
                    keyed: Vec::new(),
                    operator: vec![OperatorListState {
                        name: "pending".into(),
                        mode: OperatorStateMode::Union,
                        elements: vec![vec![9]],
                    }],
                },
            ),
        ]
    }

    fn completed(snapshots: Vec<(String, PendingOperatorSnapshot)>) -> TaskStateFile {
        TaskStateFile {
            operators: snapshots
                .into_iter()
                .map(|(id, pending)| (id, pending.complete().expect("completes")))
                .collect(),
        }
    }

    /// Every key's values, as a user reads them.
    fn contents(ctx: &mut Ctx<u64>) -> BTreeMap<u64, String> {
        let value = ValueState::<u64>::new("value");
        let list = ListState::<String>::new("list").with_ttl(StateTtlConfig::new(100));
        let map = MapState::<u8, i32>::new("map");
        let mut out = BTreeMap::new();
        for key in 0..KEYS {
            ctx.key = key;
            let table = ctx
                .store
                .value_table::<u64>("table")
                .expect("table")
                .get(&key)
                .expect("get")
                .copied();
            let seen = (value.value(ctx), list.get(ctx), map.entries(ctx), table);
            if seen != (None, Vec::new(), Vec::new(), None) {
                out.insert(key, format!("{seen:?}"));
            }
        }
        assert!(ctx.errors.is_empty(), "{:?}", ctx.errors);
        out
    }

    /// The streamed state file is byte for byte the file of the completed snapshots, on both
    /// backends; restored at parallelism 3 (split by key group) into either backend, every key
    /// reads as it did in the original store.
    #[test]
    fn streamed_state_files_equal_completed_ones_and_restore() {
        let dir = tempfile::tempdir().expect("temp dir");
        let all = KeyGroupRange::for_subtask(128, 1, 0);
        let mut files = Vec::new();
        for kind in [StateBackendKind::Memory, StateBackendKind::Lmdb] {
            let mut ctx = open(kind, &dir.path().join(format!("{kind:?}")), all);
            fill(&mut ctx);
            let (streamed, operator_bytes) =
                encode_task_state(chain(&mut ctx.store, 100)).expect("encodes");
            let expected = encode_frame(&completed(chain(&mut ctx.store, 100))).expect("encodes");
            assert_eq!(streamed, expected, "{kind:?}");
            // Each operator's share: its encoded `(state id, snapshot)`, as encoded alone.
            let completed = completed(chain(&mut ctx.store, 100));
            let alone: Vec<(String, u64)> = completed
                .operators
                .iter()
                .map(|part| {
                    let bytes = postcard::to_allocvec(part).expect("encodes");
                    (part.0.clone(), bytes.len() as u64)
                })
                .collect();
            assert_eq!(operator_bytes, alone, "{kind:?}");
            let file: TaskStateFile = decode_frame(&streamed).expect("decodes");
            let keyed = &file.operators[0].1.keyed;
            assert!(keyed.entries.is_sorted());
            // The list values of a third of the keys expired at 100.
            let list = keyed.state_index("list").expect("list");
            let lists = keyed.entries.iter().filter(|e| e.state == list).count();
            assert_eq!(lists as u64, KEYS - KEYS.div_ceil(3));
            files.push((streamed, contents(&mut ctx)));
        }
        assert_eq!(files[0], files[1], "the backends agree");
        let (frame, expected) = &files[0];
        let file: TaskStateFile = decode_frame(frame).expect("decodes");
        let old = [file.operators[0].1.clone()];
        for kind in [StateBackendKind::Memory, StateBackendKind::Lmdb] {
            let mut found = BTreeMap::new();
            for index in 0..3 {
                let OperatorSnapshot { keyed, .. } =
                    redistribute(&old, 128, 3, index).expect("redistributes");
                let range = KeyGroupRange::for_subtask(128, 3, index);
                let path = dir.path().join(format!("{kind:?}-{index}"));
                let mut ctx = open(kind, &path, range);
                ctx.store.restore(keyed).expect("restores");
                ctx.now = 100;
                let part = contents(&mut ctx);
                assert!(!part.is_empty());
                for key in part.keys() {
                    let group = crate::state::key_group_for_key(key, 128);
                    assert!(range.contains(group), "key {key} in subtask {index}");
                }
                found.extend(part);
            }
            assert_eq!(&found, expected, "{kind:?}");
        }
    }
}
