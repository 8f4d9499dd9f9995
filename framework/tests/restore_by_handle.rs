//! Restores read state by handle on the TaskManager: the JobManager chooses the checkpoint
//! and sends each subtask a plan, and the TaskManager reads the files through its node's
//! checkpoint storage. A file that is damaged or missing by the time the TaskManager reads it
//! fails that subtask with an error naming the file and the checkpoint, and the job restarts
//! (or fails) as after any other failure.
//!
//! The damage is injected by a checkpoint store that only the TaskManager reads through (the
//! JobManager reads the savepoint folder named by `restore_from` directly), so it reaches the
//! TaskManager after the JobManager checked the savepoint. Timeouts only guard against hangs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::within;
use eichhorn::checkpoint::storage::{
    CheckpointFolder, CheckpointMetadata, CheckpointStore, CheckpointStoreProvider, FileMetadata,
    StandardCheckpointStores, StorageError,
};
use eichhorn::checkpoint::{CheckpointId, JobId, RestartStrategy};
use eichhorn::connectors::{CollectionSource, RateLimitedSource};
use eichhorn::prelude::*;
use eichhorn::runtime::RuntimeEnv;

const KEYS: u64 = 7;
const RECORDS: u64 = 2_000;

/// A running count per key, emitting `(key, count)`.
#[operator(new = false)]
#[derive(Clone)]
struct RunningCount {
    count: eichhorn::state::ValueState<u64>,
}

impl RunningCount {
    fn new() -> Self {
        Self {
            count: eichhorn::state::ValueState::new("count"),
        }
    }
}

impl KeyedProcessFunction for RunningCount {
    type Key = u64;
    type In = u64;
    type Out = (u64, u64);

    fn process_element(
        &mut self,
        value: u64,
        ctx: &mut KeyedContext<'_, '_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) {
        let count = self.count.value(ctx).unwrap_or(0) + 1;
        self.count.update(ctx, count);
        out.collect((value % KEYS, count));
    }
}

/// How the store damages what the TaskManager reads.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// One byte flipped in the middle.
    Corrupt,
    /// The file is gone.
    Missing,
}

/// Stores that damage the first `reads` reads of the keyed operator's state files
/// (`task-1-*.state`: the second chain) and pass everything else through.
#[derive(Debug)]
struct DamagingStores {
    damage: Damage,
    reads: Arc<AtomicU32>,
}

impl CheckpointStoreProvider for DamagingStores {
    fn open_run(&self, job_id: JobId, run_dir: Option<&Path>) -> Arc<dyn CheckpointStore> {
        Arc::new(DamagingStore {
            inner: StandardCheckpointStores.open_run(job_id, run_dir),
            damage: self.damage,
            reads: Arc::clone(&self.reads),
        })
    }
}

#[derive(Debug)]
struct DamagingStore {
    inner: Arc<dyn CheckpointStore>,
    damage: Damage,
    reads: Arc<AtomicU32>,
}

impl CheckpointStore for DamagingStore {
    fn folder(&self, id: CheckpointId, savepoint_target: Option<&Path>) -> CheckpointFolder {
        self.inner.folder(id, savepoint_target)
    }

    fn write_file(
        &self,
        folder: &CheckpointFolder,
        name: &str,
        frame: &[u8],
    ) -> Result<FileMetadata, StorageError> {
        self.inner.write_file(folder, name, frame)
    }

    fn complete(
        &self,
        folder: &CheckpointFolder,
        metadata: &CheckpointMetadata,
    ) -> Result<(), StorageError> {
        self.inner.complete(folder, metadata)
    }

    fn discard(&self, folder: &CheckpointFolder) {
        self.inner.discard(folder);
    }

    fn discard_incomplete(&self, folder: &CheckpointFolder) {
        self.inner.discard_incomplete(folder);
    }

    fn checkpoint_ids(&self) -> Vec<CheckpointId> {
        self.inner.checkpoint_ids()
    }

    fn read_file(&self, folder: &CheckpointFolder, name: &str) -> Result<Vec<u8>, StorageError> {
        let damaged = name.starts_with("task-1-")
            && self
                .reads
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if !damaged {
            return self.inner.read_file(folder, name);
        }
        match self.damage {
            Damage::Corrupt => {
                let mut bytes = self.inner.read_file(folder, name)?;
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x20;
                Ok(bytes)
            }
            Damage::Missing => Err(StorageError {
                path: folder
                    .path
                    .as_ref()
                    .map_or_else(|| name.to_string(), |p| p.join(name).display().to_string()),
                message: "missing".to_string(),
            }),
        }
    }
}

/// The job: a paced collection, keyed running counts at parallelism 2, collected.
fn job(env: &StreamEnv) -> CollectSink<(u64, u64)> {
    env.set_parallelism(2);
    env.add_source(
        RateLimitedSource::new(CollectionSource::new((0..RECORDS).collect()), 2_000),
        "paced numbers",
    )
    .uid("source")
    .key_by(|v: &u64| *v % KEYS)
    .process(RunningCount::new())
    .uid("counts")
    .collect_sink()
}

/// Runs the job for a while and stops it with a savepoint below `target`; returns its path.
async fn savepoint(target: &Path) -> PathBuf {
    let env = StreamEnv::new();
    let _ = job(&env);
    let handle = env.execute_async("before").await.expect("starts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let savepoint = within(handle.stop_with_savepoint(target))
        .await
        .expect("savepoint");
    within(handle.join()).await.expect("stops");
    savepoint
}

/// The job restored from `savepoint`, its TaskManager reading through `stores`.
fn restored(savepoint: &Path, stores: DamagingStores) -> (StreamEnv, CollectSink<(u64, u64)>) {
    let env = StreamEnv::new();
    let sink = job(&env);
    env.restore_from(savepoint, false);
    env.set_runtime_env(RuntimeEnv::deterministic(0).with_checkpoint_stores(Arc::new(stores)));
    (env, sink)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_damaged_or_missing_state_file_fails_the_subtask_naming_the_file_and_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let savepoint = savepoint(dir.path()).await;
    for (damage, what) in [
        (Damage::Corrupt, "the state handle says"),
        (Damage::Missing, "missing"),
    ] {
        let (env, _) = restored(
            &savepoint,
            DamagingStores {
                damage,
                reads: Arc::new(AtomicU32::new(u32::MAX)),
            },
        );
        env.set_restart_strategy(RestartStrategy::None);
        let error = within(env.execute("damaged")).await.unwrap_err();
        let message = error.to_string();
        let file = savepoint.join("task-1-");
        for expected in [
            "cannot restore checkpoint",
            savepoint.to_str().expect("utf-8"),
            file.to_str().expect("utf-8"),
            what,
            "(state restore)",
        ] {
            assert!(
                message.contains(expected),
                "{damage:?}: {expected:?} in {message}"
            );
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_damaged_read_restarts_the_job_which_restores_the_state_on_the_next_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let savepoint = savepoint(dir.path()).await;
    // The first read of one keyed file is damaged; the restart reads it intact.
    let (env, sink) = restored(
        &savepoint,
        DamagingStores {
            damage: Damage::Corrupt,
            reads: Arc::new(AtomicU32::new(1)),
        },
    );
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 10,
    });
    let result = within(env.execute("restored")).await.expect("recovers");
    assert_eq!(result.restarts, 1, "the damaged read failed one attempt");
    // The restored counts went on: each key's last count is its number of values, which a
    // lost state (counting from zero again) would not reach.
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for (key, count) in sink.take() {
        let entry = last.entry(key).or_default();
        *entry = (*entry).max(count);
    }
    let expected: BTreeMap<u64, u64> = (0..KEYS)
        .map(|k| (k, (0..RECORDS).filter(|v| v % KEYS == k).count() as u64))
        .collect();
    assert_eq!(last, expected);
}
