//! The deployment plan: what the job coordinator knows of the job's shape.
//!
//! Which subtasks exist (flat index -> chain and parallel instance), what they are called in
//! errors, which file each one's state goes to, and which operator states each chain holds.
//! Pure data, taken once from the execution graph; the coordinator core reads nothing else of
//! the graph, so it needs no factories, closures or actor references.
//!
//! ## Invariants
//!
//! - Subtasks are numbered chain by chain, instance by instance (the execution graph's flat
//!   order); every chain has `parallelism` of them.
//! - A checkpoint's metadata lists, per chain and per operator state in chain order, the files
//!   of that chain's subtasks in instance order: the layout `restore_plans` reads back.
//! - A restore plan names only state handles and what to take from each file, never state:
//!   the TaskManagers read the files (see `checkpoint::restore_plan`).

use std::collections::{BTreeMap, BTreeSet};

use crate::checkpoint::CheckpointBarrier;
use crate::checkpoint::restore_plan::{OperatorStateSummary, SubtaskRestorePlan, plan_operator};
use crate::checkpoint::storage::{
    CheckpointMetadata, FileMetadata, OperatorMetadata, RestoredCheckpoint,
};
use crate::graph::ExecutionGraph;
#[cfg(test)]
use crate::state::OperatorSnapshot;
#[cfg(test)]
use crate::state::snapshot::redistribute;

/// One chain (job vertex) of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedVertex {
    /// `"Source: numbers -> Map"`.
    pub(crate) name: String,
    /// Its parallel instances.
    pub(crate) parallelism: u32,
    /// The state id of every operator of the chain, head first.
    pub(crate) state_ids: Vec<String>,
}

/// One subtask of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlannedSubtask {
    vertex: u32,
    index: u32,
}

/// The job's shape as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeploymentPlan {
    job_name: String,
    max_parallelism: u32,
    vertices: Vec<PlannedVertex>,
    subtasks: Vec<PlannedSubtask>,
}

impl DeploymentPlan {
    /// A plan of `vertices`, whose subtasks are numbered chain by chain.
    pub(crate) fn new(
        job_name: String,
        max_parallelism: u32,
        vertices: Vec<PlannedVertex>,
    ) -> Self {
        let subtasks = vertices
            .iter()
            .enumerate()
            .flat_map(|(v, vertex)| {
                (0..vertex.parallelism).map(move |index| PlannedSubtask {
                    vertex: v as u32,
                    index,
                })
            })
            .collect();
        Self {
            job_name,
            max_parallelism,
            vertices,
            subtasks,
        }
    }

    /// The plan of `graph`.
    pub(crate) fn from_graph(graph: &ExecutionGraph, job_name: &str) -> Self {
        let job = &graph.job;
        let vertices = job
            .vertices
            .iter()
            .map(|vertex| PlannedVertex {
                name: vertex.name.clone(),
                parallelism: vertex.parallelism,
                state_ids: vertex
                    .nodes
                    .iter()
                    .map(|n| job.stream.node(*n).state_id())
                    .collect(),
            })
            .collect();
        let plan = Self::new(job_name.to_string(), job.max_parallelism, vertices);
        debug_assert!(
            plan.subtasks
                .iter()
                .zip(&graph.subtasks)
                .all(|(mine, theirs)| mine.vertex == theirs.id.vertex
                    && mine.index == theirs.id.index)
                && plan.subtasks.len() == graph.subtasks.len(),
            "the plan numbers subtasks as the execution graph does"
        );
        plan
    }

    /// The job's name.
    pub(crate) fn job_name(&self) -> &str {
        &self.job_name
    }

    /// How many subtasks the job has.
    pub(crate) fn subtask_count(&self) -> usize {
        self.subtasks.len()
    }

    /// `"Map -> Sink (2/4)"`; `"subtask <i>"` for an index the plan does not have.
    pub(crate) fn task_name(&self, index: usize) -> String {
        match self.subtasks.get(index) {
            Some(subtask) => {
                let vertex = &self.vertices[subtask.vertex as usize];
                format!(
                    "{} ({}/{})",
                    vertex.name,
                    subtask.index + 1,
                    vertex.parallelism
                )
            }
            None => format!("subtask {index}"),
        }
    }

    /// The name of subtask `index`'s state file in a checkpoint folder.
    pub(crate) fn file_name(&self, index: usize) -> String {
        match self.subtasks.get(index) {
            Some(subtask) => format!("task-{}-{}.state", subtask.vertex, subtask.index),
            None => format!("task-unknown-{index}.state"),
        }
    }

    /// The metadata of checkpoint `barrier` whose subtasks' files are `files`.
    pub(crate) fn metadata(
        &self,
        barrier: CheckpointBarrier,
        files: &BTreeMap<usize, FileMetadata>,
    ) -> CheckpointMetadata {
        let mut operators = Vec::new();
        for (v, vertex) in self.vertices.iter().enumerate() {
            let names: Vec<String> = self
                .subtasks
                .iter()
                .enumerate()
                .filter(|(_, s)| s.vertex as usize == v)
                .map(|(index, _)| self.file_name(index))
                .collect();
            for state_id in &vertex.state_ids {
                operators.push(OperatorMetadata {
                    state_id: state_id.clone(),
                    parallelism: vertex.parallelism,
                    files: names.clone(),
                });
            }
        }
        CheckpointMetadata {
            id: barrier.id,
            kind: barrier.kind,
            job_name: self.job_name.clone(),
            max_parallelism: self.max_parallelism,
            operators,
            files: files.values().cloned().collect(),
        }
    }

    /// Each subtask's restore plan for `restored`: per operator in its chain, which state
    /// files hold something of the key groups it owns or of its part of the operator state,
    /// and what to take from them; `None` for a subtask that restores nothing. Computed from
    /// the metadata and the summaries the JobManager keeps; the TaskManager running the subtask
    /// reads the files (`checkpoint::restore_plan::read_share`).
    ///
    /// # Errors
    ///
    /// A message naming the checkpoint and what does not fit: another max parallelism, state
    /// of an operator the job does not have (unless `allow_non_restored_state`), or state that
    /// cannot be redistributed.
    pub(crate) fn restore_plans(
        &self,
        restored: &RestoredCheckpoint,
        allow_non_restored_state: bool,
    ) -> Result<Vec<Option<SubtaskRestorePlan>>, String> {
        if restored.metadata.max_parallelism != self.max_parallelism {
            return Err(format!(
                "{} was taken with max parallelism {}, the job has {}: keyed state cannot move \
                 between different numbers of key groups",
                restored.location, restored.metadata.max_parallelism, self.max_parallelism
            ));
        }
        if !allow_non_restored_state {
            let known: BTreeSet<&String> =
                self.vertices.iter().flat_map(|v| &v.state_ids).collect();
            for (id, states) in &restored.operators {
                if !known.contains(id) && states.iter().any(|s| !s.summary.is_empty()) {
                    return Err(format!(
                        "{} holds state of operator '{id}', which is not in this job; set \
                         allow_non_restored_state to start without it",
                        restored.location
                    ));
                }
            }
        }
        let mut plans = Vec::with_capacity(self.subtasks.len());
        for subtask in &self.subtasks {
            let vertex = &self.vertices[subtask.vertex as usize];
            let mut files: Vec<FileMetadata> = Vec::new();
            let mut operators = Vec::new();
            for id in &vertex.state_ids {
                let Some(old) = restored.operators.get(id) else {
                    continue;
                };
                let summaries: Vec<&OperatorStateSummary> =
                    old.iter().map(|state| &state.summary).collect();
                let planned = plan_operator(
                    id,
                    &summaries,
                    self.max_parallelism,
                    vertex.parallelism,
                    subtask.index,
                )
                .map_err(|e| format!("{}: operator '{id}': {e}", restored.location))?;
                let Some(mut plan) = planned else {
                    continue;
                };
                // The plan names old subtasks; the subtask's plan names its files, once each.
                let mut file_of = |old_index: u32| -> u32 {
                    let handle = &old[old_index as usize].file;
                    match files.iter().position(|f| f.name == handle.name) {
                        Some(position) => position as u32,
                        None => {
                            files.push(handle.clone());
                            (files.len() - 1) as u32
                        }
                    }
                };
                for file in &mut plan.keyed {
                    *file = file_of(*file);
                }
                for list in &mut plan.lists {
                    for piece in &mut list.pieces {
                        piece.file = file_of(piece.file);
                    }
                }
                operators.push(plan);
            }
            plans.push((!operators.is_empty()).then(|| SubtaskRestorePlan {
                checkpoint: restored.metadata.id,
                location: restored.location.clone(),
                folder: restored.folder.clone(),
                files,
                operators,
            }));
        }
        Ok(plans)
    }

    /// Each subtask's share of `restored`, redistributed from `snapshots` (every old subtask's
    /// snapshot of every operator) as the JobManager did before restores went by handle: the
    /// oracle of the restore plans.
    #[cfg(test)]
    pub(crate) fn restore_shares(
        &self,
        restored: &RestoredCheckpoint,
        snapshots: &BTreeMap<String, Vec<OperatorSnapshot>>,
        allow_non_restored_state: bool,
    ) -> Result<Vec<BTreeMap<String, OperatorSnapshot>>, String> {
        if restored.metadata.max_parallelism != self.max_parallelism {
            return Err(format!(
                "{} was taken with max parallelism {}, the job has {}: keyed state cannot move \
                 between different numbers of key groups",
                restored.location, restored.metadata.max_parallelism, self.max_parallelism
            ));
        }
        if !allow_non_restored_state {
            let known: BTreeSet<&String> =
                self.vertices.iter().flat_map(|v| &v.state_ids).collect();
            for (id, snapshots) in snapshots {
                if !known.contains(id) && snapshots.iter().any(|s| !s.is_empty()) {
                    return Err(format!(
                        "{} holds state of operator '{id}', which is not in this job; set \
                         allow_non_restored_state to start without it",
                        restored.location
                    ));
                }
            }
        }
        let mut shares = Vec::with_capacity(self.subtasks.len());
        for subtask in &self.subtasks {
            let vertex = &self.vertices[subtask.vertex as usize];
            let mut mine = BTreeMap::new();
            for id in &vertex.state_ids {
                if let Some(old) = snapshots.get(id) {
                    let share =
                        redistribute(old, self.max_parallelism, vertex.parallelism, subtask.index)
                            .map_err(|e| format!("{}: operator '{id}': {e}", restored.location))?;
                    if !share.is_empty() {
                        mine.insert(id.clone(), share);
                    }
                }
            }
            shares.push(mine);
        }
        Ok(shares)
    }

    /// No restore for any subtask (a start from the beginning).
    pub(crate) fn no_restore(&self) -> Vec<Option<SubtaskRestorePlan>> {
        vec![None; self.subtasks.len()]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::checkpoint::restore_plan::read_share;
    use crate::checkpoint::storage::{
        CheckpointStorage, CheckpointStore, TaskStateFile, encode_frame, read_snapshots,
    };
    use crate::checkpoint::{CheckpointId, CheckpointKind};
    use crate::state::{
        KeyGroupRange, KeyedEntry, KeyedStateSnapshot, OperatorListState, OperatorStateMode,
        StateMeta,
    };

    const MAX_PARALLELISM: u32 = 16;

    /// Two chains: a source chained with a map, and a keyed sum; the old job also had an
    /// operator the new one dropped (`gone`).
    fn job(parallelisms: [u32; 2], with_gone: bool) -> DeploymentPlan {
        let mut first = vec!["source".to_string(), "map".to_string()];
        if with_gone {
            first.push("gone".to_string());
        }
        DeploymentPlan::new(
            "job".to_string(),
            MAX_PARALLELISM,
            vec![
                PlannedVertex {
                    name: "Source -> Map".to_string(),
                    parallelism: parallelisms[0],
                    state_ids: first,
                },
                PlannedVertex {
                    name: "Sum".to_string(),
                    parallelism: parallelisms[1],
                    state_ids: vec!["sum".to_string()],
                },
            ],
        )
    }

    /// What one old subtask's operator stored: entries in the key groups the subtask owned,
    /// and lists whose mode follows from their name.
    #[derive(Debug, Clone)]
    struct Stored {
        groups: Vec<u32>,
        lists: Vec<(usize, Vec<u8>)>,
    }

    fn snapshot(stored: &Stored, range: KeyGroupRange, index: usize) -> OperatorSnapshot {
        let names = ["split", "union", "broadcast", "_finished"];
        let modes = [
            OperatorStateMode::Split,
            OperatorStateMode::Union,
            OperatorStateMode::Broadcast,
            OperatorStateMode::Union,
        ];
        let states = if stored.groups.is_empty() {
            Vec::new()
        } else {
            vec![
                StateMeta {
                    name: format!("s{}", index % 2),
                    type_name: "u64".into(),
                },
                StateMeta {
                    name: "count".into(),
                    type_name: "u64".into(),
                },
            ]
        };
        let mut entries: Vec<KeyedEntry> = stored
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| KeyedEntry {
                key_group: range.start + g % (range.end - range.start),
                state: (i % 2) as u32,
                key: vec![i as u8, index as u8],
                value: vec![index as u8],
            })
            .collect();
        entries.sort_unstable();
        entries.dedup_by(|a, b| (a.key_group, a.state, &a.key) == (b.key_group, b.state, &b.key));
        OperatorSnapshot {
            keyed: KeyedStateSnapshot { states, entries },
            operator: stored
                .lists
                .iter()
                .map(|(name, elements)| OperatorListState {
                    name: names[*name].to_string(),
                    mode: modes[*name],
                    elements: elements.iter().map(|e| vec![*e, index as u8]).collect(),
                })
                .collect(),
        }
    }

    /// Writes a complete checkpoint of `old` (every old subtask's file and the metadata) into
    /// `store`, each operator of every old subtask storing the next of `contents`.
    fn write_checkpoint(store: &CheckpointStorage, old: &DeploymentPlan, contents: &[Stored]) {
        let barrier = CheckpointBarrier {
            id: CheckpointId(5),
            kind: CheckpointKind::Checkpoint,
        };
        let folder = store.folder(barrier.id, None);
        let mut files = BTreeMap::new();
        let mut next = 0;
        for (index, subtask) in old.subtasks.iter().enumerate() {
            let vertex = &old.vertices[subtask.vertex as usize];
            let range =
                KeyGroupRange::for_subtask(MAX_PARALLELISM, vertex.parallelism, subtask.index);
            let operators = vertex
                .state_ids
                .iter()
                .map(|id| {
                    let stored = &contents[next % contents.len()];
                    next += 1;
                    (id.clone(), snapshot(stored, range, index))
                })
                // An operator without state writes nothing to the file.
                .filter(|(_, s)| !s.is_empty())
                .collect();
            let frame = encode_frame(&TaskStateFile { operators }).expect("encodes");
            let file = store
                .write_file(&folder, &old.file_name(index), &frame)
                .expect("writes");
            files.insert(index, file);
        }
        store
            .complete(&folder, &old.metadata(barrier, &files))
            .expect("completes");
    }

    fn stored() -> impl Strategy<Value = Stored> {
        (
            proptest::collection::vec(0u32..64, 0..6),
            proptest::collection::vec(
                (0usize..4, proptest::collection::vec(any::<u8>(), 0..4)),
                0..3,
            ),
        )
            .prop_map(|(groups, lists)| Stored { groups, lists })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Restoring by handle (the JobManager's plans, the TaskManagers reading the files) gives
        /// every new subtask exactly the share the JobManager used to compute from the whole
        /// checkpoint, at any change of parallelism, with and without operators the job no longer
        /// has; and where that refused the checkpoint, so do the plans, with the same message.
        #[test]
        fn restore_plans_give_what_restore_shares_gave(
            old_parallelisms in (1u32..5, 1u32..5),
            new_parallelisms in (1u32..6, 1u32..6),
            contents in proptest::collection::vec(stored(), 1..12),
            with_gone in any::<bool>(),
            allow_non_restored_state in any::<bool>(),
        ) {
            let store = CheckpointStorage::memory();
            let old = job([old_parallelisms.0, old_parallelisms.1], with_gone);
            write_checkpoint(&store, &old, &contents);
            let restored = store.load(&store.folder(CheckpointId(5), None)).expect("loads");
            let new = job([new_parallelisms.0, new_parallelisms.1], false);

            let snapshots = read_snapshots(&store, &restored).expect("reads");
            let expected = new.restore_shares(&restored, &snapshots, allow_non_restored_state);
            let by_handle = new
                .restore_plans(&restored, allow_non_restored_state)
                .map(|plans| {
                    plans
                        .iter()
                        .map(|plan| match plan {
                            Some(plan) => {
                                prop_assert!(!plan.operators.is_empty());
                                Ok(read_share(&store, plan).expect("reads by handle"))
                            }
                            None => Ok(BTreeMap::new()),
                        })
                        .collect::<Result<Vec<_>, TestCaseError>>()
                });
            match (by_handle, expected) {
                (Ok(shares), Ok(expected)) => prop_assert_eq!(shares?, expected),
                (Err(by_handle), Err(expected)) => prop_assert_eq!(by_handle, expected),
                (by_handle, expected) => prop_assert!(
                    false,
                    "by handle: {:?}, expected: {:?}",
                    by_handle.map(|_| ()),
                    expected.map(|_| ())
                ),
            }
        }
    }

    #[test]
    fn another_max_parallelism_is_refused_naming_the_checkpoint() {
        let store = CheckpointStorage::memory();
        let old = job([2, 2], false);
        write_checkpoint(
            &store,
            &old,
            &[Stored {
                groups: vec![1],
                lists: Vec::new(),
            }],
        );
        let restored = store
            .load(&store.folder(CheckpointId(5), None))
            .expect("loads");
        let mut new = job([2, 2], false);
        new.max_parallelism = 32;
        let error = new.restore_plans(&restored, false).unwrap_err();
        assert!(
            error.contains("memory:chk-5") && error.contains("max parallelism 16"),
            "{error}"
        );
    }

    #[test]
    fn at_the_same_parallelism_a_keyed_subtask_reads_only_its_own_file() {
        let store = CheckpointStorage::memory();
        let old = job([3, 3], false);
        write_checkpoint(
            &store,
            &old,
            &[Stored {
                groups: vec![0, 1, 2, 3],
                lists: Vec::new(),
            }],
        );
        let restored = store
            .load(&store.folder(CheckpointId(5), None))
            .expect("loads");
        let plans = job([3, 3], false)
            .restore_plans(&restored, false)
            .expect("plans");
        for (index, plan) in plans.iter().enumerate() {
            let plan = plan.as_ref().expect("every subtask has keyed state");
            assert_eq!(
                plan.files
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>(),
                vec![old.file_name(index)],
                "subtask {index}"
            );
        }
    }
}
