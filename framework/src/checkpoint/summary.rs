//! Summaries of state files, read in place: what the JobManager keeps of a checkpoint's state
//! (per operator: keyed state names, entry counts, key groups, list names, modes and lengths),
//! enough to check a checkpoint and plan a restore (`restore_plan.rs`) without holding or
//! shipping any state. Kept apart from the plans so the storage layer, which summarises each
//! file as it checks it, does not import the planning that imports it.

use serde::Deserialize;

use crate::state::{OperatorSnapshot, OperatorStateMode, StateMeta};

/// What the JobManager keeps of one operator's snapshot in one state file: enough to plan a
/// restore, nothing of the state itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorStateSummary {
    /// The keyed state names (with their value types), in the snapshot's order.
    pub states: Vec<StateMeta>,
    /// How many keyed entries the snapshot holds.
    pub keyed_entries: u64,
    /// The smallest and the largest key group holding an entry; `None` without entries.
    pub key_groups: Option<(u32, u32)>,
    /// Every operator list, in the snapshot's order.
    pub lists: Vec<ListSummary>,
}

/// One operator list of a snapshot, without its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSummary {
    /// The list's name.
    pub name: String,
    /// How it is redistributed.
    pub mode: OperatorStateMode,
    /// How many elements it has.
    pub elements: u64,
}

impl OperatorStateSummary {
    /// The summary of `snapshot`.
    pub fn of(snapshot: &OperatorSnapshot) -> Self {
        let entries = &snapshot.keyed.entries;
        let key_groups = entries.iter().fold(None, |span, entry| match span {
            None => Some((entry.key_group, entry.key_group)),
            Some((lo, hi)) => Some((u32::min(lo, entry.key_group), u32::max(hi, entry.key_group))),
        });
        Self {
            states: snapshot.keyed.states.clone(),
            keyed_entries: entries.len() as u64,
            key_groups,
            lists: snapshot
                .operator
                .iter()
                .map(|list| ListSummary {
                    name: list.name.clone(),
                    mode: list.mode,
                    elements: list.elements.len() as u64,
                })
                .collect(),
        }
    }

    /// Whether the snapshot stored nothing (as [`OperatorSnapshot::is_empty`] says).
    pub fn is_empty(&self) -> bool {
        self.keyed_entries == 0
            && self.states.is_empty()
            && self.lists.iter().all(|list| list.elements == 0)
    }
}

/// Summarises the postcard payload of a state file ([`TaskStateFile`]) per operator, reading
/// the bytes in place: keys, values and list elements are skipped over, never copied (the
/// JobManager checks and summarises whole checkpoints; it must not hold their state).
///
/// # Errors
///
/// The payload does not decode as a state file.
pub(crate) fn summarize_task_state(
    payload: &[u8],
) -> Result<Vec<(String, OperatorStateSummary)>, String> {
    let view: TaskStateView<'_> =
        postcard::from_bytes(payload).map_err(|e| format!("cannot decode: {e}"))?;
    Ok(view
        .operators
        .into_iter()
        .map(|(id, snapshot)| {
            let summary = OperatorStateSummary {
                states: snapshot.keyed.states,
                keyed_entries: snapshot.keyed.entries.count,
                key_groups: snapshot.keyed.entries.key_groups,
                lists: snapshot
                    .operator
                    .into_iter()
                    .map(|list| ListSummary {
                        name: list.name.to_string(),
                        mode: list.mode,
                        elements: list.elements.count,
                    })
                    .collect(),
            };
            (id.to_string(), summary)
        })
        .collect())
}

/// [`TaskStateFile`] as it lies in its bytes (the same postcard layout; `Vec<u8>` and `&[u8]`
/// encode alike), borrowed and counted rather than decoded.
#[derive(Deserialize)]
struct TaskStateView<'a> {
    #[serde(borrow)]
    operators: Vec<(&'a str, SnapshotView<'a>)>,
}

/// [`OperatorSnapshot`] in its bytes.
#[derive(Deserialize)]
struct SnapshotView<'a> {
    keyed: KeyedView,
    #[serde(borrow)]
    operator: Vec<ListView<'a>>,
}

/// [`KeyedStateSnapshot`] in its bytes: the state names, and the entries counted.
#[derive(Deserialize)]
struct KeyedView {
    states: Vec<StateMeta>,
    entries: EntriesCount,
}

/// [`OperatorListState`] in its bytes: the elements counted.
#[derive(Deserialize)]
struct ListView<'a> {
    name: &'a str,
    mode: OperatorStateMode,
    elements: ElementsCount,
}

/// One keyed entry in its bytes (`KeyedEntry`'s layout).
#[derive(Deserialize)]
struct EntryView<'a> {
    key_group: u32,
    _state: u32,
    #[serde(borrow)]
    _key: &'a [u8],
    #[serde(borrow)]
    _value: &'a [u8],
}

/// A sequence of keyed entries, counted, with the key groups they span.
struct EntriesCount {
    count: u64,
    key_groups: Option<(u32, u32)>,
}

impl<'de> Deserialize<'de> for EntriesCount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = EntriesCount;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of keyed entries")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<EntriesCount, A::Error> {
                let mut count = 0u64;
                let mut key_groups: Option<(u32, u32)> = None;
                while let Some(entry) = seq.next_element::<EntryView<'de>>()? {
                    count += 1;
                    let g = entry.key_group;
                    key_groups = Some(key_groups.map_or((g, g), |(lo, hi)| (lo.min(g), hi.max(g))));
                }
                Ok(EntriesCount { count, key_groups })
            }
        }
        deserializer.deserialize_seq(Entries)
    }
}

/// A sequence of list elements, counted.
struct ElementsCount {
    count: u64,
}

impl<'de> Deserialize<'de> for ElementsCount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Elements;
        impl<'de> serde::de::Visitor<'de> for Elements {
            type Value = ElementsCount;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of list elements")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ElementsCount, A::Error> {
                let mut count = 0u64;
                while seq.next_element::<&'de [u8]>()?.is_some() {
                    count += 1;
                }
                Ok(ElementsCount { count })
            }
        }
        deserializer.deserialize_seq(Elements)
    }
}
