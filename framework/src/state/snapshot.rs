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
//! Keyed state stores hand their snapshot over frozen ([`FrozenKeyedState`]): checkpoint storage
//! streams it into the state file with [`encode_keyed_snapshot`], which writes the same bytes as
//! encoding the [`KeyedStateSnapshot`] but copies each entry from where the backend keeps it,
//! without a [`KeyedEntry`] (two allocations) per entry, a merge and a sort of them all.
//!
//! ## Invariants
//!
//! - `KeyedStateSnapshot::entries` is sorted by `(key_group, state, key)` and every `state` index
//!   is valid in `states`.
//! - [`redistribute`] over the snapshots of all old subtasks gives every key group to exactly one
//!   new subtask, and every split-list element to exactly one new subtask (property-tested).

use serde::{Deserialize, Serialize};

use super::error::StateError;
use super::key_group::{KeyGroup, KeyGroupRange};

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
/// Operators that copy their state at the barrier return [`PendingKeyedSnapshot::Deferred`]
/// (encoded later); keyed state stores return [`PendingKeyedSnapshot::Frozen`], a view frozen
/// at the barrier (LMDB: a read transaction; memory: a copy of the tables) that checkpoint
/// storage streams into the state file off the data path, so the subtask continues processing
/// at once.
pub enum PendingKeyedSnapshot {
    /// The snapshot, taken synchronously.
    Ready(KeyedStateSnapshot),
    /// Produces the snapshot later, from a view frozen at the barrier.
    Deferred(Box<dyn FnOnce() -> Result<KeyedStateSnapshot, StateError> + Send>),
    /// A view frozen at the barrier, read out in snapshot order later without building a
    /// [`KeyedEntry`] per entry (see [`encode_keyed_snapshot`]).
    Frozen(FrozenKeyedState),
}

impl std::fmt::Debug for PendingKeyedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready(s) => f.debug_tuple("Ready").field(&s.entries.len()).finish(),
            Self::Deferred(_) => f.write_str("Deferred"),
            Self::Frozen(frozen) => f.debug_tuple("Frozen").field(frozen).finish(),
        }
    }
}

impl PendingKeyedSnapshot {
    /// Takes the snapshot (runs a deferred one, reads a frozen one out).
    ///
    /// # Errors
    ///
    /// The backend failed to read its frozen view.
    pub fn complete(self) -> Result<KeyedStateSnapshot, StateError> {
        match self {
            Self::Ready(snapshot) => Ok(snapshot),
            Self::Deferred(produce) => produce(),
            Self::Frozen(frozen) => frozen.into_snapshot(),
        }
    }
}

/// One keyed entry seen in place: its key and value borrowed from wherever they are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyedEntryRef<'a> {
    /// The key group of the key.
    pub key_group: u32,
    /// Index into the states of the snapshot the entry belongs to.
    pub state: u32,
    /// The key (and namespace), postcard-encoded.
    pub key: &'a [u8],
    /// The value, postcard-encoded.
    pub value: &'a [u8],
}

impl KeyedEntryRef<'_> {
    fn to_owned_entry(self) -> KeyedEntry {
        KeyedEntry {
            key_group: self.key_group,
            state: self.state,
            key: self.key.to_vec(),
            value: self.value.to_vec(),
        }
    }
}

impl<'a> From<&'a KeyedEntry> for KeyedEntryRef<'a> {
    fn from(entry: &'a KeyedEntry) -> Self {
        Self {
            key_group: entry.key_group,
            state: entry.state,
            key: &entry.key,
            value: &entry.value,
        }
    }
}

/// The entries of a frozen keyed state, read out once, in snapshot order.
pub(crate) trait FrozenEntries: Send {
    /// About how many entries there are (an upper bound when some may be left out).
    fn len_hint(&self) -> usize;

    /// Calls `visit` with every entry in `(key group, state, key)` order, stopping at the first
    /// error. State indices refer to the frozen state's `states`.
    fn read(
        self: Box<Self>,
        visit: &mut dyn FnMut(KeyedEntryRef<'_>) -> Result<(), StateError>,
    ) -> Result<(), StateError>;
}

/// A keyed state store's view frozen at a barrier, to be read out later off the data path.
///
/// Reading it is one pass in snapshot order over entries that stay where the backend keeps
/// them (LMDB pages, a copy of the memory tables); [`encode_keyed_snapshot`] writes them
/// straight into the state file, [`FrozenKeyedState::into_snapshot`] builds the
/// [`KeyedStateSnapshot`].
pub struct FrozenKeyedState {
    /// The state names: entries refer to them by index. They may be renamed before reading.
    pub states: Vec<StateMeta>,
    entries: Box<dyn FrozenEntries>,
}

impl std::fmt::Debug for FrozenKeyedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenKeyedState")
            .field("states", &self.states)
            .field("len_hint", &self.entries.len_hint())
            .finish()
    }
}

impl FrozenKeyedState {
    pub(crate) fn new(states: Vec<StateMeta>, entries: Box<dyn FrozenEntries>) -> Self {
        Self { states, entries }
    }

    /// About how many entries there are (an upper bound: expired values are left out).
    pub fn len_hint(&self) -> usize {
        self.entries.len_hint()
    }

    /// Reads every entry into a [`KeyedStateSnapshot`].
    ///
    /// # Errors
    ///
    /// The backend failed to read its view, or an entry refers to a state it does not name.
    pub fn into_snapshot(self) -> Result<KeyedStateSnapshot, StateError> {
        let Self { states, entries } = self;
        let mut out = Vec::with_capacity(entries.len_hint());
        let count = states.len();
        entries.read(&mut |entry| {
            check_state(entry, count)?;
            out.push(entry.to_owned_entry());
            Ok(())
        })?;
        debug_assert!(out.is_sorted());
        Ok(KeyedStateSnapshot {
            states,
            entries: out,
        })
    }
}

fn check_state(entry: KeyedEntryRef<'_>, states: usize) -> Result<(), StateError> {
    if (entry.state as usize) < states {
        Ok(())
    } else {
        Err(StateError::Corrupt(format!(
            "keyed entry of key group {} refers to state #{} of {states}",
            entry.key_group, entry.state
        )))
    }
}

/// Appends the postcard encoding of the [`KeyedStateSnapshot`] that merging `parts` in order
/// gives ([`KeyedStateSnapshot::merge`] into an empty snapshot): the same bytes as
/// `postcard::to_extend(&merged, out)`, without building the merged snapshot.
///
/// Frozen parts are read once and their entries copied straight from where the backend keeps
/// them into `out`; the largest one whose state indices keep their order when mapped onto the
/// merged names is streamed, the other parts (usually small: timers, window contents) are
/// interleaved with it in sort order.
///
/// # Errors
///
/// A backend failed to read its frozen view, a deferred part failed, or a part is inconsistent
/// (an entry referring to a state its part does not name).
pub fn encode_keyed_snapshot(
    parts: Vec<PendingKeyedSnapshot>,
    out: &mut Vec<u8>,
) -> Result<(), StateError> {
    // The merged names and each part's mapping onto them, as `merge` assigns them.
    let mut states: Vec<StateMeta> = Vec::new();
    let mut owned: Vec<(Vec<u32>, KeyedStateSnapshot)> = Vec::new();
    let mut frozen: Vec<(Vec<u32>, Box<dyn FrozenEntries>)> = Vec::new();
    for part in parts {
        let (metas, body) = match part {
            PendingKeyedSnapshot::Ready(snapshot) => (snapshot.states.clone(), Ok(snapshot)),
            PendingKeyedSnapshot::Deferred(produce) => {
                let snapshot = produce()?;
                (snapshot.states.clone(), Ok(snapshot))
            }
            PendingKeyedSnapshot::Frozen(FrozenKeyedState { states, entries }) => {
                (states, Err(entries))
            }
        };
        let mut mapping = Vec::with_capacity(metas.len());
        for meta in metas {
            let index = match states.iter().position(|s| s.name == meta.name) {
                Some(index) => index,
                None => {
                    states.push(meta);
                    states.len() - 1
                }
            };
            mapping.push(index as u32);
        }
        match body {
            Ok(snapshot) => owned.push((mapping, snapshot)),
            Err(entries) => frozen.push((mapping, entries)),
        }
    }
    // The streamed part: the largest frozen one whose mapping keeps the order of its entries.
    let driver = (0..frozen.len())
        .filter(|&i| frozen[i].0.is_sorted_by(|a, b| a < b))
        .max_by_key(|&i| (frozen[i].1.len_hint(), std::cmp::Reverse(i)))
        .map(|i| frozen.remove(i));
    // Every other frozen part is read into memory.
    for (mapping, entries) in frozen {
        let mut read = Vec::with_capacity(entries.len_hint());
        entries.read(&mut |entry| {
            read.push(entry.to_owned_entry());
            Ok(())
        })?;
        owned.push((
            mapping,
            KeyedStateSnapshot {
                states: Vec::new(),
                entries: read,
            },
        ));
    }
    let mut side: Vec<KeyedEntryRef<'_>> = Vec::new();
    for (mapping, snapshot) in &owned {
        for entry in &snapshot.entries {
            let mut entry = KeyedEntryRef::from(entry);
            entry.state = map_state(mapping, entry)?;
            side.push(entry);
        }
    }
    side.sort_unstable();

    postcard::to_extend(&states, std::mem::take(out))
        .map(|bytes| *out = bytes)
        .map_err(|e| StateError::Encode(format!("keyed state names: {e}")))?;
    let mut count: u64 = 0;
    let mut body = Vec::new();
    let mut side = side.into_iter().peekable();
    if let Some((mapping, entries)) = driver {
        body.reserve(entries.len_hint().saturating_mul(16));
        entries.read(&mut |mut entry| {
            entry.state = map_state(&mapping, entry)?;
            while let Some(next) = side.next_if(|next| *next < entry) {
                push_entry(&mut body, next);
                count += 1;
            }
            push_entry(&mut body, entry);
            count += 1;
            Ok(())
        })?;
    }
    for entry in side {
        push_entry(&mut body, entry);
        count += 1;
    }
    push_varint(out, count);
    out.extend_from_slice(&body);
    Ok(())
}

/// The merged index of `entry`'s state.
fn map_state(mapping: &[u32], entry: KeyedEntryRef<'_>) -> Result<u32, StateError> {
    mapping.get(entry.state as usize).copied().ok_or_else(|| {
        StateError::Corrupt(format!(
            "keyed entry refers to state #{} of {}",
            entry.state,
            mapping.len()
        ))
    })
}

/// Appends `entry` as postcard encodes a [`KeyedEntry`].
#[inline]
fn push_entry(out: &mut Vec<u8>, entry: KeyedEntryRef<'_>) {
    push_varint(out, u64::from(entry.key_group));
    push_varint(out, u64::from(entry.state));
    push_varint(out, entry.key.len() as u64);
    out.extend_from_slice(entry.key);
    push_varint(out, entry.value.len() as u64);
    out.extend_from_slice(entry.value);
}

/// Appends `value` as postcard's varint (LEB128: seven bits per byte, low bits first).
#[inline]
pub(crate) fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
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
pub(crate) fn split_bounds(len: usize, parts: u32, index: u32) -> (usize, usize) {
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

    /// A frozen part over entries in memory (sorted), as a backend's view would give them.
    struct VecFrozen(Vec<KeyedEntry>);

    impl FrozenEntries for VecFrozen {
        fn len_hint(&self) -> usize {
            self.0.len()
        }
        fn read(
            self: Box<Self>,
            visit: &mut dyn FnMut(KeyedEntryRef<'_>) -> Result<(), StateError>,
        ) -> Result<(), StateError> {
            self.0.iter().try_for_each(|entry| visit(entry.into()))
        }
    }

    /// How a test part is handed over.
    #[derive(Debug, Clone, Copy)]
    enum PartKind {
        Ready,
        Deferred,
        Frozen,
    }

    fn pending(kind: PartKind, snapshot: KeyedStateSnapshot) -> PendingKeyedSnapshot {
        match kind {
            PartKind::Ready => PendingKeyedSnapshot::Ready(snapshot),
            PartKind::Deferred => PendingKeyedSnapshot::Deferred(Box::new(move || Ok(snapshot))),
            PartKind::Frozen => PendingKeyedSnapshot::Frozen(FrozenKeyedState::new(
                snapshot.states,
                Box::new(VecFrozen(snapshot.entries)),
            )),
        }
    }

    /// What the old path stored: every part completed and merged, then encoded.
    fn merged_bytes(parts: Vec<PendingKeyedSnapshot>) -> Result<Vec<u8>, StateError> {
        let mut merged = KeyedStateSnapshot::default();
        for part in parts {
            merged.merge(part.complete()?)?;
        }
        Ok(postcard::to_allocvec(&merged).expect("encodes"))
    }

    fn streamed_bytes(parts: Vec<PendingKeyedSnapshot>) -> Result<Vec<u8>, StateError> {
        let mut out = vec![0xAB];
        encode_keyed_snapshot(parts, &mut out)?;
        assert_eq!(out[0], 0xAB, "appends");
        Ok(out.split_off(1))
    }

    fn part_strategy() -> impl Strategy<Value = (PartKind, KeyedStateSnapshot)> {
        let kind = prop_oneof![
            Just(PartKind::Ready),
            Just(PartKind::Deferred),
            Just(PartKind::Frozen)
        ];
        // Names from a small pool, so that parts share states (in any order).
        let names = proptest::sample::subsequence(vec!["a", "b", "c", "d"], 0..=4).prop_shuffle();
        (kind, names).prop_flat_map(|(kind, names)| {
            let states = names.len() as u32;
            let entry = (
                0u32..4,
                0..states.max(1),
                vec(0u8..3, 0..10),
                vec(any::<u8>(), 0..3),
            );
            let entries = if states == 0 {
                vec(entry, 0..1).boxed()
            } else {
                vec(entry, 0..40).boxed()
            };
            (Just(kind), Just(names), entries).prop_map(|(kind, names, entries)| {
                let mut entries: Vec<KeyedEntry> = entries
                    .into_iter()
                    .filter(|_| !names.is_empty())
                    .map(|(key_group, state, key, value)| KeyedEntry {
                        key_group,
                        state,
                        key,
                        value,
                    })
                    .collect();
                entries.sort_unstable();
                let states = names
                    .iter()
                    .map(|name| StateMeta {
                        name: (*name).to_string(),
                        type_name: "t".into(),
                    })
                    .collect();
                (kind, KeyedStateSnapshot { states, entries })
            })
        })
    }

    use proptest::collection::vec;

    proptest! {
        /// Streaming gives the bytes of the merged snapshot, whatever the parts' kinds, sizes and
        /// shared states.
        #[test]
        fn streamed_keyed_snapshots_encode_as_merged_ones(
            parts in vec(part_strategy(), 0..5),
        ) {
            let build = || parts.iter().cloned().map(|(kind, s)| pending(kind, s)).collect();
            let expected = merged_bytes(build()).expect("consistent");
            prop_assert_eq!(streamed_bytes(build()).expect("consistent"), expected.clone());
            let decoded: KeyedStateSnapshot = postcard::from_bytes(&expected).expect("decodes");
            prop_assert!(decoded.entries.is_sorted());
        }
    }

    #[test]
    fn a_part_naming_too_few_states_is_an_error() {
        for kind in [PartKind::Ready, PartKind::Deferred, PartKind::Frozen] {
            let mut bad = keyed(&[1, 2]);
            bad.entries[1].state = 1;
            let parts = || vec![pending(kind, keyed(&[0])), pending(kind, bad.clone())];
            assert!(matches!(merged_bytes(parts()), Err(StateError::Corrupt(_))));
            assert!(matches!(
                streamed_bytes(parts()),
                Err(StateError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn varints_encode_as_postcard_does() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            push_varint(&mut out, value);
            assert_eq!(out, postcard::to_allocvec(&value).expect("encodes"));
        }
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
