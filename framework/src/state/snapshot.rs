//! The snapshot format of operator state, and its redistribution when parallelism changes.
//!
//! Every operator instance contributes one [`OperatorSnapshot`] to a checkpoint:
//!
//! - **keyed state** as serialised entries, each tagged with its key group, sorted by
//!   `(key group, state, key)`. Restoring at another parallelism hands each new subtask the entries
//!   of the key groups it owns ([`KeyGroupRange`]); keys are never rehashed.
//! - **operator state** as named lists of serialised elements with a redistribution mode
//!   ([`OperatorStateMode`]): split (even split of the concatenated lists, Flink's `ListState`),
//!   union (every subtask gets every element) or broadcast (every subtask gets one copy).
//!
//! Values are postcard bytes; the snapshot itself is postcard-encoded by checkpoint storage. The
//! format is independent of the state backend, so a checkpoint taken with one backend restores
//! into the other.
//!
//! ## Invariants
//!
//! - `KeyedStateSnapshot::entries` is sorted by `(key_group, state, key)` and every `state` index
//!   is valid in `states`.
//! - [`redistribute`] over the snapshots of all old subtasks gives every key group to exactly one
//!   new subtask, and every split-list element to exactly one new subtask (property-tested).

use serde::{Deserialize, Serialize};

use super::key_group::{KeyGroup, KeyGroupRange};
use super::keyed::StateError;

/// One keyed-state entry: a key's value in one state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyedEntry {
    /// The key group of the key.
    pub key_group: u32,
    /// Index into [`KeyedStateSnapshot::states`].
    pub state: u32,
    /// The key (and namespace, for namespaced state), postcard-encoded.
    pub key: Vec<u8>,
    /// The value, postcard-encoded.
    pub value: Vec<u8>,
}

/// The keyed state of one operator instance (or the part of it a subtask restores).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedStateSnapshot {
    /// The state names: `(name, value type name)`; entries refer to them by index.
    pub states: Vec<StateMeta>,
    /// The entries, sorted by `(key_group, state, key)`.
    pub entries: Vec<KeyedEntry>,
}

/// A state's name and the type it was written with (checked on restore).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StateMeta {
    /// The state's name.
    pub name: String,
    /// The Rust type name of its values when it was snapshotted.
    pub type_name: String,
}

impl KeyedStateSnapshot {
    /// Whether there is no entry and no state.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.states.is_empty()
    }

    /// The index of state `name`, if present.
    pub fn state_index(&self, name: &str) -> Option<u32> {
        self.states
            .iter()
            .position(|s| s.name == name)
            .map(|i| i as u32)
    }

    /// Removes state `name` and its entries from this snapshot and returns them as a snapshot of
    /// their own (an operator restoring several kinds of keyed state from one snapshot).
    pub fn take_state(&mut self, name: &str) -> Self {
        let Some(index) = self.state_index(name) else {
            return Self::default();
        };
        let meta = self.states.remove(index as usize);
        let mut taken = Vec::new();
        let mut kept = Vec::with_capacity(self.entries.len());
        for mut entry in std::mem::take(&mut self.entries) {
            match entry.state.cmp(&index) {
                std::cmp::Ordering::Equal => {
                    entry.state = 0;
                    taken.push(entry);
                }
                std::cmp::Ordering::Greater => {
                    entry.state -= 1;
                    kept.push(entry);
                }
                std::cmp::Ordering::Less => kept.push(entry),
            }
        }
        self.entries = kept;
        Self {
            states: vec![meta],
            entries: taken,
        }
    }

    /// Keeps only the entries of key groups in `range`.
    pub fn retain_key_groups(&mut self, range: KeyGroupRange) {
        self.entries
            .retain(|e| range.contains(KeyGroup(e.key_group)));
    }

    /// Appends the entries of `other`, mapping its state indices onto this snapshot's names, and
    /// restores the sort order.
    ///
    /// # Errors
    ///
    /// [`StateError::Corrupt`] if an entry refers to a state `other` does not name.
    pub fn merge(&mut self, other: Self) -> Result<(), StateError> {
        let mut mapping = Vec::with_capacity(other.states.len());
        for meta in other.states {
            let index = match self.state_index(&meta.name) {
                Some(index) => index,
                None => {
                    self.states.push(meta);
                    (self.states.len() - 1) as u32
                }
            };
            mapping.push(index);
        }
        for mut entry in other.entries {
            entry.state = *mapping.get(entry.state as usize).ok_or_else(|| {
                StateError::Corrupt(format!(
                    "keyed entry refers to state #{} of {}",
                    entry.state,
                    mapping.len()
                ))
            })?;
            self.entries.push(entry);
        }
        self.entries.sort_unstable();
        Ok(())
    }
}

/// How an operator list state is redistributed when parallelism changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OperatorStateMode {
    /// The lists of all subtasks are concatenated and split evenly (Flink's `getListState`).
    Split,
    /// Every subtask gets the concatenation of all lists (Flink's `getUnionListState`).
    Union,
    /// All subtasks hold the same state; every new subtask gets one copy (broadcast state).
    Broadcast,
}

/// A named operator list state of one subtask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorListState {
    /// The state's name.
    pub name: String,
    /// How it is redistributed.
    pub mode: OperatorStateMode,
    /// The elements, postcard-encoded.
    pub elements: Vec<Vec<u8>>,
}

/// Everything one operator instance stores in a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// Keyed state (empty for non-keyed operators).
    pub keyed: KeyedStateSnapshot,
    /// Operator state, one entry per name.
    pub operator: Vec<OperatorListState>,
}

impl OperatorSnapshot {
    /// Whether the operator stored nothing.
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty() && self.operator.iter().all(|s| s.elements.is_empty())
    }

    /// The operator state called `name`, if any.
    pub fn operator_state(&self, name: &str) -> Option<&OperatorListState> {
        self.operator.iter().find(|s| s.name == name)
    }
}

/// A keyed snapshot that is either taken or still to be written out.
///
/// Backends that can read a consistent view while processing goes on (LMDB: a read transaction
/// opened at the barrier) return [`PendingKeyedSnapshot::Deferred`]; checkpoint storage runs the
/// closure off the data path, so the subtask continues processing at once.
pub enum PendingKeyedSnapshot {
    /// The snapshot, taken synchronously.
    Ready(KeyedStateSnapshot),
    /// Produces the snapshot later, from a view frozen at the barrier.
    Deferred(Box<dyn FnOnce() -> Result<KeyedStateSnapshot, StateError> + Send>),
}

impl std::fmt::Debug for PendingKeyedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready(s) => f.debug_tuple("Ready").field(&s.entries.len()).finish(),
            Self::Deferred(_) => f.write_str("Deferred"),
        }
    }
}

impl PendingKeyedSnapshot {
    /// Takes the snapshot (runs a deferred one).
    ///
    /// # Errors
    ///
    /// The backend failed to read its frozen view.
    pub fn complete(self) -> Result<KeyedStateSnapshot, StateError> {
        match self {
            Self::Ready(snapshot) => Ok(snapshot),
            Self::Deferred(produce) => produce(),
        }
    }
}

/// The state new subtask `index` of `parallelism` restores from the snapshots of every old
/// subtask of the same operator (in old subtask order).
///
/// Keyed entries are kept by key group; split lists are concatenated in old subtask order and
/// split into `parallelism` contiguous, even parts (the first `len % parallelism` parts one longer,
/// as Flink's round-robin-free `RoundRobinOperatorStateRepartitioner` for equal weights); union
/// lists are concatenated whole; broadcast state is taken from the first old subtask that has it.
///
/// # Errors
///
/// [`StateError::Corrupt`] if a snapshot is inconsistent, or if one name is used with two modes.
pub fn redistribute(
    old: &[OperatorSnapshot],
    max_parallelism: u32,
    parallelism: u32,
    index: u32,
) -> Result<OperatorSnapshot, StateError> {
    let range = KeyGroupRange::for_subtask(max_parallelism, parallelism, index);
    let mut keyed = KeyedStateSnapshot::default();
    for snapshot in old {
        let mut part = snapshot.keyed.clone();
        part.retain_key_groups(range);
        keyed.merge(part)?;
    }
    // Operator states by name, in first-seen order.
    let mut operator: Vec<OperatorListState> = Vec::new();
    for snapshot in old {
        for state in &snapshot.operator {
            match operator.iter_mut().find(|s| s.name == state.name) {
                None => operator.push(state.clone()),
                Some(existing) if existing.mode != state.mode => {
                    return Err(StateError::Corrupt(format!(
                        "operator state '{}' is stored as {:?} and as {:?}",
                        state.name, existing.mode, state.mode
                    )));
                }
                Some(existing) => match state.mode {
                    OperatorStateMode::Split | OperatorStateMode::Union => {
                        existing.elements.extend(state.elements.iter().cloned());
                    }
                    OperatorStateMode::Broadcast => {}
                },
            }
        }
    }
    for state in &mut operator {
        if state.mode == OperatorStateMode::Split {
            let all = std::mem::take(&mut state.elements);
            let (start, end) = split_bounds(all.len(), parallelism, index);
            state.elements = all.into_iter().skip(start).take(end - start).collect();
        }
    }
    Ok(OperatorSnapshot { keyed, operator })
}

/// The `[start, end)` of part `index` when `len` elements are split into `parts` even parts.
fn split_bounds(len: usize, parts: u32, index: u32) -> (usize, usize) {
    let parts = parts.max(1) as usize;
    let index = index as usize;
    let base = len / parts;
    let extra = len % parts;
    let start = index * base + index.min(extra);
    let end = start + base + usize::from(index < extra);
    (start.min(len), end.min(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keyed(groups: &[u32]) -> KeyedStateSnapshot {
        KeyedStateSnapshot {
            states: vec![StateMeta {
                name: "s".into(),
                type_name: "i64".into(),
            }],
            entries: groups
                .iter()
                .map(|g| KeyedEntry {
                    key_group: *g,
                    state: 0,
                    key: g.to_le_bytes().to_vec(),
                    value: vec![1],
                })
                .collect(),
        }
    }

    fn list(name: &str, mode: OperatorStateMode, elements: &[u8]) -> OperatorListState {
        OperatorListState {
            name: name.into(),
            mode,
            elements: elements.iter().map(|e| vec![*e]).collect(),
        }
    }

    #[test]
    fn split_lists_are_split_evenly_in_order() {
        let old = vec![
            OperatorSnapshot {
                keyed: KeyedStateSnapshot::default(),
                operator: vec![list("offsets", OperatorStateMode::Split, &[1, 2, 3])],
            },
            OperatorSnapshot {
                keyed: KeyedStateSnapshot::default(),
                operator: vec![list("offsets", OperatorStateMode::Split, &[4, 5])],
            },
        ];
        let parts: Vec<Vec<Vec<u8>>> = (0..3)
            .map(|i| {
                redistribute(&old, 128, 3, i).expect("consistent").operator[0]
                    .elements
                    .clone()
            })
            .collect();
        assert_eq!(
            parts,
            vec![
                vec![vec![1], vec![2]],
                vec![vec![3], vec![4]],
                vec![vec![5]]
            ]
        );
    }

    #[test]
    fn union_and_broadcast() {
        let old = vec![
            OperatorSnapshot {
                keyed: KeyedStateSnapshot::default(),
                operator: vec![
                    list("u", OperatorStateMode::Union, &[1]),
                    list("b", OperatorStateMode::Broadcast, &[7, 8]),
                ],
            },
            OperatorSnapshot {
                keyed: KeyedStateSnapshot::default(),
                operator: vec![
                    list("u", OperatorStateMode::Union, &[2]),
                    list("b", OperatorStateMode::Broadcast, &[7, 8]),
                ],
            },
        ];
        for i in 0..3 {
            let s = redistribute(&old, 128, 3, i).expect("consistent");
            assert_eq!(s.operator_state("u").expect("u").elements.len(), 2);
            assert_eq!(
                s.operator_state("b").expect("b").elements,
                vec![vec![7], vec![8]]
            );
        }
    }

    #[test]
    fn conflicting_modes_are_an_error() {
        let old = vec![
            OperatorSnapshot {
                keyed: KeyedStateSnapshot::default(),
                operator: vec![list("x", OperatorStateMode::Union, &[1])],
            },
            OperatorSnapshot {
                keyed: KeyedStateSnapshot::default(),
                operator: vec![list("x", OperatorStateMode::Split, &[2])],
            },
        ];
        assert!(matches!(
            redistribute(&old, 128, 1, 0),
            Err(StateError::Corrupt(_))
        ));
    }

    proptest! {
        #[test]
        fn every_key_group_and_element_lands_once(
            groups in proptest::collection::vec(0u32..128, 0..200),
            elements in proptest::collection::vec(any::<u8>(), 0..50),
            old_p in 1u32..6,
            new_p in 1u32..6,
        ) {
            // Old subtask i holds the groups of its own range, as a real job would.
            let old: Vec<OperatorSnapshot> = (0..old_p).map(|i| {
                let range = KeyGroupRange::for_subtask(128, old_p, i);
                let mine: Vec<u32> = groups.iter().copied().filter(|g| range.contains(KeyGroup(*g))).collect();
                let (s, e) = split_bounds(elements.len(), old_p, i);
                OperatorSnapshot {
                    keyed: keyed(&mine),
                    operator: vec![list("l", OperatorStateMode::Split, &elements[s..e])],
                }
            }).collect();
            let mut keyed_total = 0;
            let mut all_elements = Vec::new();
            for i in 0..new_p {
                let part = redistribute(&old, 128, new_p, i).expect("consistent");
                let range = KeyGroupRange::for_subtask(128, new_p, i);
                prop_assert!(part.keyed.entries.iter().all(|e| range.contains(KeyGroup(e.key_group))));
                keyed_total += part.keyed.entries.len();
                all_elements.extend(part.operator[0].elements.iter().map(|e| e[0]));
            }
            prop_assert_eq!(keyed_total, groups.len());
            prop_assert_eq!(all_elements, elements);
        }
    }
}
