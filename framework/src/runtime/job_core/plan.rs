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
//!   of that chain's subtasks in instance order: the layout `restore_shares` reads back.

use std::collections::{BTreeMap, BTreeSet};

use crate::checkpoint::CheckpointBarrier;
use crate::checkpoint::storage::{
    CheckpointMetadata, FileMetadata, OperatorMetadata, RestoredCheckpoint,
};
use crate::graph::ExecutionGraph;
use crate::state::OperatorSnapshot;
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

    /// Each subtask's share of `restored`: per operator in its chain, the state of the key
    /// groups it owns and its part of the operator state.
    ///
    /// # Errors
    ///
    /// A message naming the checkpoint and what does not fit: another max parallelism, state
    /// of an operator the job does not have (unless `allow_non_restored_state`), or state that
    /// cannot be redistributed.
    pub(crate) fn restore_shares(
        &self,
        restored: &RestoredCheckpoint,
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
            for (id, snapshots) in &restored.operators {
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
                if let Some(old) = restored.operators.get(id) {
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

    /// An empty share per subtask (a start from the beginning).
    pub(crate) fn empty_shares(&self) -> Vec<BTreeMap<String, OperatorSnapshot>> {
        vec![BTreeMap::new(); self.subtasks.len()]
    }
}
