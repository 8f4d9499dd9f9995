//! Placement: which slot of which TaskManager runs each subtask.
//!
//! Slot sharing as in Flink's default (one slot-sharing group for the whole job): a slot runs at
//! most one subtask of every chain, so subtask `i` of every chain goes to *shared slot* `i`, and a
//! job needs as many slots as its largest chain parallelism. Shared slots are taken from the
//! TaskManagers evenly (Flink's `cluster.evenly-spread-out-slots`): round-robin over the
//! TaskManagers in id order, each giving its next free slot, skipping those that are full. The
//! result depends only on the graph and the offered slots, never on the order they were offered
//! in.
//!
//! ## Invariants (checked by [`Placement::validate`])
//!
//! - every subtask is placed exactly once, on a TaskManager that offered slots, in a slot below
//!   the number it offered;
//! - no slot runs two subtasks of the same chain.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::execution_graph::ExecutionGraph;

/// A TaskManager of the cluster (one per node). Locally there is one, [`TaskManagerId::LOCAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskManagerId(pub u32);

impl TaskManagerId {
    /// The TaskManager of a job that runs in one process.
    pub const LOCAL: Self = Self(0);
}

impl std::fmt::Display for TaskManagerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "taskmanager-{}", self.0)
    }
}

/// What one TaskManager offers: its number of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotOffer {
    /// The TaskManager.
    pub task_manager: TaskManagerId,
    /// How many slots it has.
    pub slots: u32,
}

/// One slot of one TaskManager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotId {
    /// The TaskManager.
    pub task_manager: TaskManagerId,
    /// The slot's index on it, below its number of slots.
    pub slot: u32,
}

/// Why subtasks cannot be placed, or why a placement does not fit its graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Fewer slots than the job's largest chain parallelism.
    #[error(
        "not enough task slots: the job needs {required} (its largest parallelism, one slot per \
         parallel instance with slot sharing) but the task managers offer {available} ({offers})"
    )]
    NotEnoughSlots {
        /// Slots the job needs.
        required: u32,
        /// Slots offered in total.
        available: u64,
        /// The offers, readable (`taskmanager-0: 2 slots, ...`).
        offers: String,
    },
    /// Two offers name the same TaskManager.
    #[error("task manager {0} offered slots twice")]
    DuplicateTaskManager(TaskManagerId),
    /// A placement does not match the graph it is meant for.
    #[error("invalid placement: {0}")]
    Invalid(String),
}

/// The slot of every subtask (by the subtask's flat index in the execution graph).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The offers it was made from, sorted by TaskManager id.
    offers: Vec<SlotOffer>,
    /// The slot of each subtask.
    slots: Vec<SlotId>,
}

impl Placement {
    /// Places the subtasks of `graph` on the slots `offers` make.
    ///
    /// # Errors
    ///
    /// [`PlacementError::NotEnoughSlots`] when the offers hold fewer slots than the largest
    /// chain parallelism; [`PlacementError::DuplicateTaskManager`] when one TaskManager offers
    /// twice.
    pub fn place(graph: &ExecutionGraph, offers: &[SlotOffer]) -> Result<Self, PlacementError> {
        let offers = sorted_offers(offers)?;
        let required = graph.job.max_vertex_parallelism();
        let available: u64 = offers.iter().map(|o| u64::from(o.slots)).sum();
        if available < u64::from(required) {
            return Err(PlacementError::NotEnoughSlots {
                required,
                available,
                offers: describe(&offers),
            });
        }
        // Shared slot k: round-robin over the TaskManagers with free slots, in id order.
        let mut shared = Vec::with_capacity(required as usize);
        let mut next_free = vec![0u32; offers.len()];
        while shared.len() < required as usize {
            for (offer, next) in offers.iter().zip(&mut next_free) {
                if shared.len() == required as usize {
                    break;
                }
                if *next < offer.slots {
                    shared.push(SlotId {
                        task_manager: offer.task_manager,
                        slot: *next,
                    });
                    *next += 1;
                }
            }
        }
        let slots = graph
            .subtasks
            .iter()
            .map(|plan| shared[plan.id.index as usize])
            .collect();
        Ok(Self { offers, slots })
    }

    /// The placement of a job that runs in one process: one TaskManager
    /// ([`TaskManagerId::LOCAL`]) with as many slots as the largest chain parallelism.
    pub fn local(graph: &ExecutionGraph) -> Self {
        let offer = SlotOffer {
            task_manager: TaskManagerId::LOCAL,
            slots: graph.job.max_vertex_parallelism(),
        };
        let slots = graph
            .subtasks
            .iter()
            .map(|plan| SlotId {
                task_manager: TaskManagerId::LOCAL,
                slot: plan.id.index,
            })
            .collect();
        Self {
            offers: vec![offer],
            slots,
        }
    }

    /// The slot of subtask `subtask` (flat index), if there is such a subtask.
    pub fn slot_of(&self, subtask: usize) -> Option<SlotId> {
        self.slots.get(subtask).copied()
    }

    /// The slot of every subtask, by flat index.
    pub fn slots(&self) -> &[SlotId] {
        &self.slots
    }

    /// The TaskManagers and their slots, in id order.
    pub fn offers(&self) -> &[SlotOffer] {
        &self.offers
    }

    /// The subtasks (flat indices) that `task_manager` runs, in order.
    pub fn subtasks_on(&self, task_manager: TaskManagerId) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(move |(_, slot)| slot.task_manager == task_manager)
            .map(|(index, _)| index)
    }

    /// Checks that this placement fits `graph` (see the module's invariants).
    ///
    /// # Errors
    ///
    /// [`PlacementError::Invalid`] naming the first subtask or slot that breaks one.
    pub fn validate(&self, graph: &ExecutionGraph) -> Result<(), PlacementError> {
        let invalid = |what: String| Err(PlacementError::Invalid(what));
        let offers = sorted_offers(&self.offers)?;
        if offers != self.offers {
            return invalid("the task managers are not in id order".to_string());
        }
        if self.slots.len() != graph.subtasks.len() {
            return invalid(format!(
                "{} subtask(s) placed, but the graph has {}",
                self.slots.len(),
                graph.subtasks.len()
            ));
        }
        let capacity: BTreeMap<TaskManagerId, u32> = self
            .offers
            .iter()
            .map(|o| (o.task_manager, o.slots))
            .collect();
        let mut taken = BTreeMap::new();
        for (index, (slot, plan)) in self.slots.iter().zip(&graph.subtasks).enumerate() {
            match capacity.get(&slot.task_manager) {
                None => {
                    return invalid(format!(
                        "subtask {index} is placed on {}, which offered no slots",
                        slot.task_manager
                    ));
                }
                Some(&slots) if slot.slot >= slots => {
                    return invalid(format!(
                        "subtask {index} is placed in slot {} of {}, which has {slots}",
                        slot.slot, slot.task_manager
                    ));
                }
                Some(_) => {}
            }
            if let Some(other) = taken.insert((*slot, plan.id.vertex), index) {
                return invalid(format!(
                    "subtasks {other} and {index} of one chain share slot {} of {}",
                    slot.slot, slot.task_manager
                ));
            }
        }
        Ok(())
    }
}

/// `offers` in id order, or the TaskManager that offered twice.
fn sorted_offers(offers: &[SlotOffer]) -> Result<Vec<SlotOffer>, PlacementError> {
    let mut sorted = offers.to_vec();
    sorted.sort_by_key(|o| o.task_manager);
    for pair in sorted.windows(2) {
        if pair[0].task_manager == pair[1].task_manager {
            return Err(PlacementError::DuplicateTaskManager(pair[0].task_manager));
        }
    }
    Ok(sorted)
}

fn describe(offers: &[SlotOffer]) -> String {
    if offers.is_empty() {
        return "no task manager registered".to_string();
    }
    offers
        .iter()
        .map(|o| format!("{}: {} slot(s)", o.task_manager, o.slots))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::graph::testing::pipeline;
    use crate::graph::{ExecutionConfig, JobGraph, PartitionKind};

    fn graph(parallelism: &[u32]) -> ExecutionGraph {
        // Rebalance everywhere: no chaining, one chain per operator.
        let partitions = vec![PartitionKind::Rebalance; parallelism.len() - 1];
        let stream = pipeline(parallelism, &partitions);
        ExecutionGraph::build(
            JobGraph::build(stream, &ExecutionConfig::default()).expect("a valid graph"),
        )
    }

    fn offer(task_manager: u32, slots: u32) -> SlotOffer {
        SlotOffer {
            task_manager: TaskManagerId(task_manager),
            slots,
        }
    }

    fn slot(task_manager: u32, slot: u32) -> SlotId {
        SlotId {
            task_manager: TaskManagerId(task_manager),
            slot,
        }
    }

    #[test]
    fn the_local_placement_runs_subtask_i_of_every_chain_in_slot_i() {
        let graph = graph(&[1, 3, 2]);
        let placement = Placement::local(&graph);
        assert_eq!(placement.offers(), [offer(0, 3)]);
        let slots: Vec<u32> = placement.slots().iter().map(|s| s.slot).collect();
        assert_eq!(slots, [0, 0, 1, 2, 0, 1]);
        placement.validate(&graph).expect("valid");
        assert_eq!(placement.subtasks_on(TaskManagerId::LOCAL).count(), 6);
    }

    #[test]
    fn slots_are_spread_over_task_managers_in_id_order() {
        let graph = graph(&[4, 4]);
        // Offered out of order: the result is the same as in order.
        let placement =
            Placement::place(&graph, &[offer(9, 1), offer(2, 4), offer(5, 2)]).expect("enough");
        let shared = [slot(2, 0), slot(5, 0), slot(9, 0), slot(2, 1)];
        let expected: Vec<SlotId> = shared.iter().chain(&shared).copied().collect();
        assert_eq!(placement.slots(), expected.as_slice());
        assert_eq!(placement.offers(), [offer(2, 4), offer(5, 2), offer(9, 1)]);
        let again =
            Placement::place(&graph, &[offer(2, 4), offer(5, 2), offer(9, 1)]).expect("enough");
        assert_eq!(again, placement);
        assert_eq!(
            placement.subtasks_on(TaskManagerId(2)).collect::<Vec<_>>(),
            [0, 3, 4, 7]
        );
        placement.validate(&graph).expect("valid");
    }

    #[test]
    fn too_few_slots_is_a_clear_error() {
        let graph = graph(&[2, 5, 1]);
        let error = Placement::place(&graph, &[offer(0, 2), offer(1, 2)]).expect_err("short");
        assert_eq!(
            error,
            PlacementError::NotEnoughSlots {
                required: 5,
                available: 4,
                offers: "taskmanager-0: 2 slot(s), taskmanager-1: 2 slot(s)".to_string(),
            }
        );
        let message = error.to_string();
        assert!(
            message.contains("needs 5") && message.contains("offer 4"),
            "{message}"
        );
        let none = Placement::place(&graph, &[]).expect_err("no slots");
        assert!(
            none.to_string().contains("no task manager registered"),
            "{none}"
        );
    }

    #[test]
    fn a_task_manager_offering_twice_is_an_error() {
        let graph = graph(&[1, 1]);
        assert_eq!(
            Placement::place(&graph, &[offer(1, 1), offer(0, 1), offer(1, 3)]),
            Err(PlacementError::DuplicateTaskManager(TaskManagerId(1)))
        );
    }

    #[test]
    fn validate_refuses_placements_that_break_an_invariant() {
        let graph = graph(&[2, 2]);
        let good = Placement::place(&graph, &[offer(0, 1), offer(1, 1)]).expect("enough");
        good.validate(&graph).expect("valid");
        let mut short = good.clone();
        short.slots.pop();
        let mut beyond = good.clone();
        beyond.slots[1] = slot(1, 1);
        let mut stranger = good.clone();
        stranger.slots[0] = slot(7, 0);
        let mut shared = good.clone();
        shared.slots[1] = shared.slots[0];
        let mut unsorted = good.clone();
        unsorted.offers.reverse();
        for (what, bad) in [
            ("short", short),
            ("beyond", beyond),
            ("stranger", stranger),
            ("shared", shared),
            ("unsorted", unsorted),
        ] {
            assert!(
                matches!(bad.validate(&graph), Err(PlacementError::Invalid(_))),
                "{what}"
            );
        }
    }

    proptest! {
        #[test]
        fn every_subtask_is_placed_once_within_the_slot_limits(
            parallelism in prop::collection::vec(1u32..8, 2..5),
            slots in prop::collection::vec(0u32..6, 0..4),
            rotate in 0usize..4,
        ) {
            let graph = graph(&parallelism);
            let mut offers: Vec<SlotOffer> = slots
                .iter()
                .enumerate()
                .map(|(tm, &n)| offer(tm as u32 * 3, n))
                .collect();
            let required = *parallelism.iter().max().expect("nodes");
            let available: u32 = slots.iter().sum();
            let placed = Placement::place(&graph, &offers);
            if available < required {
                let short = matches!(placed, Err(PlacementError::NotEnoughSlots { .. }));
                prop_assert!(short);
                return Ok(());
            }
            let placement = placed.expect("enough slots");
            placement.validate(&graph).expect("valid");
            prop_assert_eq!(placement.slots().len(), graph.subtask_count());
            // Slot limits: no TaskManager runs more subtasks of one chain than it has slots.
            for o in &offers {
                for vertex in 0..parallelism.len() as u32 {
                    let here = placement
                        .subtasks_on(o.task_manager)
                        .filter(|&s| graph.subtasks[s].id.vertex == vertex)
                        .count();
                    prop_assert!(here <= o.slots as usize);
                }
            }
            // Deterministic: the order of the offers does not matter.
            if !offers.is_empty() {
                let len = offers.len();
                offers.rotate_left(rotate % len);
            }
            prop_assert_eq!(Placement::place(&graph, &offers).expect("enough"), placement);
        }
    }
}
