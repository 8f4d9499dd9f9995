//! Restoring by state handle: the JobManager plans, the TaskManager reads.
//!
//! A checkpoint's `_metadata` lists every subtask's state file with its length and CRC-32: its
//! **state handle** ([`FileMetadata`]: a path relative to the checkpoint folder, a size, a
//! checksum). A restore does not move state bytes through the JobManager. The JobManager reads
//! the metadata, checks every listed file against its handle while it chooses the newest intact
//! checkpoint, and keeps only an [`OperatorStateSummary`] per operator and old subtask (its keyed
//! state names, how many keyed entries it has and the key groups they span, and each operator
//! list's name, mode and length). From those it computes a [`SubtaskRestorePlan`] per new
//! subtask: which files to read, and per operator of the chain the key-group range to keep, the
//! keyed state names, and which elements of which lists to take. The TaskManager that runs the
//! subtask reads exactly those files through its node's
//! [`CheckpointStore`], checks each against its handle and builds the subtask's share
//! (`read_share`).
//!
//! ## Invariants
//!
//! - `plan_operator` followed by `assemble_operator` gives exactly what
//!   [`redistribute`](crate::state::snapshot::redistribute) gives over the snapshots of every old
//!   subtask (property-tested below, and against the coordinator's whole restore in
//!   `runtime/job_core/plan.rs`): keyed entries of the new subtask's key groups, the keyed state
//!   names of every old subtask in first-seen order, split lists concatenated in old subtask
//!   order and cut into even parts, union lists whole, broadcast lists from the first old subtask
//!   holding them, lists in first-seen order.
//! - A plan names a file only when the share needs something from it: keyed entries whose key
//!   groups overlap the new range, or list elements.
//! - A file is decoded only after its length and CRC-32 match the handle; a mismatch, a missing
//!   file or a plan that does not fit the file is a [`RestoreError`] naming the file and the
//!   checkpoint, never a panic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CheckpointId;
use super::storage::{
    CheckpointFolder, CheckpointStore, FileMetadata, TaskStateFile, decode_frame,
};
pub use super::summary::{ListSummary, OperatorStateSummary};
use crate::state::snapshot::split_bounds;
use crate::state::{
    KeyGroupRange, KeyedStateSnapshot, OperatorListState, OperatorSnapshot, OperatorStateMode,
    StateError, StateMeta,
};

/// What one new subtask restores: the files to read and, per operator of its chain, what to
/// take from them. Small, serde, and sent to the TaskManager in place of the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskRestorePlan {
    /// The checkpoint restored.
    pub checkpoint: CheckpointId,
    /// Where it is, for messages (a folder, or `memory:chk-<id>`).
    pub location: String,
    /// Its folder in the run's storage.
    pub folder: CheckpointFolder,
    /// The state handles of the files to read, each at most once.
    pub files: Vec<FileMetadata>,
    /// Per operator with state for this subtask, what to take.
    pub operators: Vec<OperatorRestorePlan>,
}

/// One operator's share: what to take from which file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRestorePlan {
    /// The operator's state id.
    pub state_id: String,
    /// The key groups the new subtask owns.
    pub key_groups: KeyGroupRange,
    /// The keyed state names of the share, in first-seen order over the old subtasks.
    pub states: Vec<StateMeta>,
    /// The files (indices into [`SubtaskRestorePlan::files`]) whose keyed entries may fall in
    /// `key_groups`.
    pub keyed: Vec<u32>,
    /// The operator lists of the share, in first-seen order over the old subtasks.
    pub lists: Vec<ListRestorePlan>,
}

/// One operator list of a share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRestorePlan {
    /// The list's name.
    pub name: String,
    /// Its mode.
    pub mode: OperatorStateMode,
    /// Its elements, piece after piece (no piece: the list is there, empty).
    pub pieces: Vec<ListPiece>,
}

/// A run of elements of one list in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPiece {
    /// The file (an index into [`SubtaskRestorePlan::files`]).
    pub file: u32,
    /// The list's position among the operator's lists in that file.
    pub list: u32,
    /// The first element taken.
    pub start: u64,
    /// One past the last element taken.
    pub end: u64,
}

/// A share could not be read: the file and the checkpoint, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot restore checkpoint {} ({location}): {path}: {message}", checkpoint.0)]
pub struct RestoreError {
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// Where it is.
    pub location: String,
    /// The file concerned.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// Plans one operator's share for new subtask `index` of `parallelism` from `old`, the
/// summaries of every old subtask of the operator in old subtask order. File references in the
/// result are positions in `old`; `None` when the share is empty (nothing to restore).
///
/// # Errors
///
/// [`StateError::Corrupt`] when one list name is stored with two modes (as
/// [`redistribute`](crate::state::snapshot::redistribute) says).
pub(crate) fn plan_operator(
    state_id: &str,
    old: &[&OperatorStateSummary],
    max_parallelism: u32,
    parallelism: u32,
    index: u32,
) -> Result<Option<OperatorRestorePlan>, StateError> {
    let range = KeyGroupRange::for_subtask(max_parallelism, parallelism, index);
    let mut states: Vec<StateMeta> = Vec::new();
    let mut keyed = Vec::new();
    for (j, summary) in old.iter().enumerate() {
        for meta in &summary.states {
            if !states.iter().any(|s| s.name == meta.name) {
                states.push(meta.clone());
            }
        }
        if let Some((lo, hi)) = summary.key_groups
            && lo < range.end
            && hi >= range.start
        {
            keyed.push(j as u32);
        }
    }
    // Per list name in first-seen order: its mode and its occurrences (old subtask, position
    // among that snapshot's lists, length).
    struct Occurrences {
        name: String,
        mode: OperatorStateMode,
        runs: Vec<(u32, u32, u64)>,
    }
    let mut lists: Vec<Occurrences> = Vec::new();
    for (j, summary) in old.iter().enumerate() {
        for (k, list) in summary.lists.iter().enumerate() {
            let run = (j as u32, k as u32, list.elements);
            match lists.iter_mut().find(|l| l.name == list.name) {
                None => lists.push(Occurrences {
                    name: list.name.clone(),
                    mode: list.mode,
                    runs: vec![run],
                }),
                Some(existing) if existing.mode != list.mode => {
                    return Err(StateError::Corrupt(format!(
                        "operator state '{}' is stored as {:?} and as {:?}",
                        list.name, existing.mode, list.mode
                    )));
                }
                Some(existing) => match list.mode {
                    OperatorStateMode::Split | OperatorStateMode::Union => existing.runs.push(run),
                    OperatorStateMode::Broadcast => {}
                },
            }
        }
    }
    let lists: Vec<ListRestorePlan> = lists
        .into_iter()
        .map(|list| {
            let whole = |&(file, k, len): &(u32, u32, u64)| ListPiece {
                file,
                list: k,
                start: 0,
                end: len,
            };
            let pieces: Vec<ListPiece> = match list.mode {
                OperatorStateMode::Split => {
                    let total: u64 = list.runs.iter().map(|r| r.2).sum();
                    let (start, end) = split_bounds(total as usize, parallelism, index);
                    let (start, end) = (start as u64, end as u64);
                    let mut offset = 0u64;
                    let mut pieces = Vec::new();
                    for &(file, k, len) in &list.runs {
                        let from = start.max(offset);
                        let to = end.min(offset + len);
                        if from < to {
                            pieces.push(ListPiece {
                                file,
                                list: k,
                                start: from - offset,
                                end: to - offset,
                            });
                        }
                        offset += len;
                    }
                    pieces
                }
                OperatorStateMode::Union | OperatorStateMode::Broadcast => {
                    list.runs.iter().filter(|r| r.2 > 0).map(whole).collect()
                }
            };
            ListRestorePlan {
                name: list.name,
                mode: list.mode,
                pieces,
            }
        })
        .collect();
    let empty = states.is_empty() && keyed.is_empty() && lists.iter().all(|l| l.pieces.is_empty());
    if empty {
        return Ok(None);
    }
    Ok(Some(OperatorRestorePlan {
        state_id: state_id.to_string(),
        key_groups: range,
        states,
        keyed,
        lists,
    }))
}

/// Builds one operator's share from the snapshots `plan` names: `snapshot(file)` is the
/// operator's snapshot in that file (of [`SubtaskRestorePlan::files`]), taken at most once per
/// file.
///
/// # Errors
///
/// A message saying what does not fit: a list or element the file does not have, or keyed
/// entries that refer to states their snapshot does not name.
pub(crate) fn assemble_operator(
    plan: &OperatorRestorePlan,
    mut snapshot: impl FnMut(u32) -> Result<OperatorSnapshot, String>,
) -> Result<OperatorSnapshot, String> {
    let mut parts: BTreeMap<u32, OperatorSnapshot> = BTreeMap::new();
    let files = plan.keyed.iter().copied().chain(
        plan.lists
            .iter()
            .flat_map(|l| l.pieces.iter().map(|p| p.file)),
    );
    for file in files {
        if let std::collections::btree_map::Entry::Vacant(entry) = parts.entry(file) {
            entry.insert(snapshot(file)?);
        }
    }
    fn part(
        parts: &mut BTreeMap<u32, OperatorSnapshot>,
        file: u32,
    ) -> Result<&mut OperatorSnapshot, String> {
        parts
            .get_mut(&file)
            .ok_or_else(|| format!("file #{file} was not read"))
    }
    let range = plan.key_groups;
    let mut keyed = KeyedStateSnapshot {
        states: plan.states.clone(),
        entries: Vec::new(),
    };
    for &file in &plan.keyed {
        let old = &mut part(&mut parts, file)?.keyed;
        let mine = KeyedStateSnapshot {
            states: std::mem::take(&mut old.states),
            entries: std::mem::take(&mut old.entries)
                .into_iter()
                .filter(|e| range.start <= e.key_group && e.key_group < range.end)
                .collect(),
        };
        keyed
            .merge(mine)
            .map_err(|e| format!("operator '{}': {e}", plan.state_id))?;
    }
    let mut operator = Vec::with_capacity(plan.lists.len());
    for list in &plan.lists {
        let mut elements = Vec::new();
        for piece in &list.pieces {
            let old = part(&mut parts, piece.file)?;
            let source = old.operator.get_mut(piece.list as usize).ok_or_else(|| {
                format!(
                    "operator '{}' has no list #{} ('{}')",
                    plan.state_id, piece.list, list.name
                )
            })?;
            if source.name != list.name || source.mode != list.mode {
                return Err(format!(
                    "operator '{}': list #{} is '{}' ({:?}), the plan expects '{}' ({:?})",
                    plan.state_id, piece.list, source.name, source.mode, list.name, list.mode
                ));
            }
            let len = source.elements.len() as u64;
            if piece.start > piece.end || piece.end > len {
                return Err(format!(
                    "operator '{}': list '{}' has {len} elements, the plan takes {}..{}",
                    plan.state_id, list.name, piece.start, piece.end
                ));
            }
            elements.extend(
                source.elements[piece.start as usize..piece.end as usize]
                    .iter_mut()
                    .map(std::mem::take),
            );
        }
        operator.push(OperatorListState {
            name: list.name.clone(),
            mode: list.mode,
            elements,
        });
    }
    Ok(OperatorSnapshot { keyed, operator })
}

/// Reads the share `plan` describes through `store`: every file once, checked against its
/// handle (length and CRC-32) before it is decoded, then every operator's part assembled.
///
/// # Errors
///
/// A [`RestoreError`] naming the file and the checkpoint: the file is missing or unreadable,
/// its length or checksum differs from the handle, it does not decode, or it does not hold
/// what the plan takes from it.
pub(crate) fn read_share(
    store: &dyn CheckpointStore,
    plan: &SubtaskRestorePlan,
) -> Result<BTreeMap<String, OperatorSnapshot>, RestoreError> {
    let error = |name: &str, message: String| RestoreError {
        checkpoint: plan.checkpoint,
        location: plan.location.clone(),
        path: match &plan.folder.path {
            Some(dir) => dir.join(name).display().to_string(),
            None => format!("memory:{}/{name}", plan.folder.name),
        },
        message,
    };
    let mut files: Vec<Option<TaskStateFile>> = Vec::with_capacity(plan.files.len());
    for handle in &plan.files {
        let bytes = store
            .read_file(&plan.folder, &handle.name)
            .map_err(|e| RestoreError {
                checkpoint: plan.checkpoint,
                location: plan.location.clone(),
                path: e.path,
                message: e.message,
            })?;
        if bytes.len() as u64 != handle.len {
            return Err(error(
                &handle.name,
                format!(
                    "{} bytes, the state handle says {}",
                    bytes.len(),
                    handle.len
                ),
            ));
        }
        let crc = crc32fast::hash(&bytes);
        if crc != handle.crc32 {
            return Err(error(
                &handle.name,
                format!(
                    "checksum {crc:08x}, the state handle says {:08x}",
                    handle.crc32
                ),
            ));
        }
        let state: TaskStateFile =
            decode_frame(&bytes).map_err(|message| error(&handle.name, message))?;
        files.push(Some(state));
    }
    let mut share = BTreeMap::new();
    for operator in &plan.operators {
        let snapshot = assemble_operator(operator, |file| {
            let name = plan
                .files
                .get(file as usize)
                .map_or("(no such file)", |h| h.name.as_str());
            let state = files
                .get_mut(file as usize)
                .and_then(Option::as_mut)
                .ok_or_else(|| {
                    format!("the plan names file #{file}, it lists {}", plan.files.len())
                })?;
            let position = state
                .operators
                .iter()
                .position(|(id, _)| *id == operator.state_id);
            match position {
                Some(position) => Ok(std::mem::take(&mut state.operators[position].1)),
                None => Err(format!(
                    "{name} holds no state of operator '{}'",
                    operator.state_id
                )),
            }
        })
        .map_err(|message| RestoreError {
            checkpoint: plan.checkpoint,
            location: plan.location.clone(),
            path: plan.location.clone(),
            message,
        })?;
        share.insert(operator.state_id.clone(), snapshot);
    }
    Ok(share)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::checkpoint::storage::{CheckpointStorage, encode_frame};
    use crate::checkpoint::summary::summarize_task_state;
    use crate::state::KeyedEntry;
    use crate::state::snapshot::redistribute;

    const MAX_PARALLELISM: u32 = 16;

    fn list(name: &str, mode: OperatorStateMode, elements: &[u8]) -> OperatorListState {
        OperatorListState {
            name: name.into(),
            mode,
            elements: elements.iter().map(|e| vec![*e]).collect(),
        }
    }

    /// A snapshot of old subtask `index` of `parallelism`: entries of its own key groups only,
    /// as a keyed backend stores them.
    fn old_snapshot(
        index: u32,
        parallelism: u32,
        groups: &[u32],
        states: &[&str],
        lists: Vec<OperatorListState>,
    ) -> OperatorSnapshot {
        let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, parallelism, index);
        let states: Vec<StateMeta> = states
            .iter()
            .map(|name| StateMeta {
                name: (*name).into(),
                type_name: "u8".into(),
            })
            .collect();
        let mut entries: Vec<KeyedEntry> = groups
            .iter()
            .map(|g| range.start + g % (range.end - range.start))
            .enumerate()
            .filter(|_| !states.is_empty())
            .map(|(i, key_group)| KeyedEntry {
                key_group,
                state: (i % states.len()) as u32,
                key: vec![i as u8],
                value: vec![index as u8],
            })
            .collect();
        entries.sort_unstable();
        OperatorSnapshot {
            keyed: KeyedStateSnapshot { states, entries },
            operator: lists,
        }
    }

    /// The share through a plan, with the snapshots in memory.
    fn planned(
        old: &[OperatorSnapshot],
        parallelism: u32,
        index: u32,
    ) -> Result<Option<OperatorSnapshot>, String> {
        let summaries: Vec<OperatorStateSummary> =
            old.iter().map(OperatorStateSummary::of).collect();
        let refs: Vec<&OperatorStateSummary> = summaries.iter().collect();
        let Some(plan) = plan_operator("op", &refs, MAX_PARALLELISM, parallelism, index)
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let mut taken = std::collections::BTreeSet::new();
        assemble_operator(&plan, |file| {
            assert!(taken.insert(file), "file {file} taken twice");
            Ok(old[file as usize].clone())
        })
        .map(Some)
    }

    proptest! {
        /// Planning then assembling gives what `redistribute` gives over all old snapshots, at
        /// every new parallelism, and the plan names only files it takes something from.
        #[test]
        fn planned_shares_equal_redistribute(
            old_parallelism in 1u32..6,
            new_parallelism in 1u32..7,
            groups in proptest::collection::vec(proptest::collection::vec(0u32..64, 0..8), 6),
            lists in proptest::collection::vec(
                proptest::collection::vec((0usize..3, proptest::collection::vec(0u8..255, 0..5)), 0..3),
                6,
            ),
            keyed in any::<bool>(),
        ) {
            let names = ["a", "b", "c"];
            let old: Vec<OperatorSnapshot> = (0..old_parallelism)
                .map(|i| {
                    // One mode per name, so no conflict (conflicts are tested on their own).
                    let lists = lists[i as usize]
                        .iter()
                        .map(|(name, elements)| {
                            let mode = [OperatorStateMode::Split, OperatorStateMode::Union, OperatorStateMode::Broadcast][*name];
                            list(names[*name], mode, elements)
                        })
                        .collect();
                    let states: &[&str] = if keyed { if i % 2 == 0 { &["x", "y"] } else { &["y"] } } else { &[] };
                    old_snapshot(i, old_parallelism, &groups[i as usize], states, lists)
                })
                .collect();
            for index in 0..new_parallelism {
                let expected = redistribute(&old, MAX_PARALLELISM, new_parallelism, index)
                    .map_err(|e| e.to_string());
                let expected = expected.map(|s| if s.is_empty() { None } else { Some(s) });
                prop_assert_eq!(planned(&old, new_parallelism, index), expected);
            }
        }
    }

    proptest! {
        /// Summarising a state file in its bytes gives what summarising it decoded gives.
        #[test]
        fn summaries_in_place_equal_summaries_of_decoded_snapshots(
            groups in proptest::collection::vec(proptest::collection::vec(0u32..64, 0..8), 1..4),
            elements in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..4),
        ) {
            let operators: Vec<(String, OperatorSnapshot)> = groups
                .iter()
                .enumerate()
                .map(|(i, groups)| {
                    let lists = elements
                        .iter()
                        .enumerate()
                        .map(|(k, e)| list(&format!("l{k}"), OperatorStateMode::Union, e))
                        .collect();
                    let states: &[&str] = if groups.is_empty() { &[] } else { &["x", "y"] };
                    (format!("op-{i}"), old_snapshot(i as u32 % 2, 2, groups, states, lists))
                })
                .collect();
            let file = TaskStateFile { operators };
            let frame = encode_frame(&file).expect("encodes");
            let in_place = crate::checkpoint::storage::frame_payload(&frame)
                .and_then(summarize_task_state)
                .expect("summarises");
            let decoded: Vec<(String, OperatorStateSummary)> = file
                .operators
                .iter()
                .map(|(id, s)| (id.clone(), OperatorStateSummary::of(s)))
                .collect();
            prop_assert_eq!(in_place, decoded);
        }
    }

    #[test]
    fn a_list_stored_with_two_modes_is_refused_as_redistribute_refuses_it() {
        let old = vec![
            old_snapshot(
                0,
                2,
                &[],
                &[],
                vec![list("l", OperatorStateMode::Split, &[1])],
            ),
            old_snapshot(
                1,
                2,
                &[],
                &[],
                vec![list("l", OperatorStateMode::Union, &[2])],
            ),
        ];
        let expected = redistribute(&old, MAX_PARALLELISM, 1, 0)
            .unwrap_err()
            .to_string();
        assert_eq!(planned(&old, 1, 0).unwrap_err(), expected);
    }

    #[test]
    fn a_rescale_reads_only_the_files_it_needs() {
        // Four old subtasks with keyed state only; the first of two new subtasks owns the key
        // groups of old subtasks 0 and 1.
        let old: Vec<OperatorSnapshot> = (0..4)
            .map(|i| old_snapshot(i, 4, &[0, 1, 2, 3], &["x"], Vec::new()))
            .collect();
        let summaries: Vec<OperatorStateSummary> =
            old.iter().map(OperatorStateSummary::of).collect();
        let refs: Vec<&OperatorStateSummary> = summaries.iter().collect();
        let plan = plan_operator("op", &refs, MAX_PARALLELISM, 2, 0)
            .expect("plans")
            .expect("not empty");
        assert_eq!(plan.keyed, vec![0, 1]);
        assert_eq!(plan.key_groups, KeyGroupRange { start: 0, end: 8 });
    }

    /// A one-operator checkpoint of two old subtasks in `store`, and the plan of new subtask 0
    /// of 1.
    fn stored_plan(store: &CheckpointStorage) -> SubtaskRestorePlan {
        let folder = store.folder(CheckpointId(3), None);
        let mut files = Vec::new();
        for i in 0..2 {
            let state = TaskStateFile {
                operators: vec![(
                    "op".to_string(),
                    old_snapshot(
                        i,
                        2,
                        &[1, 2],
                        &["x"],
                        vec![list("l", OperatorStateMode::Union, &[i as u8])],
                    ),
                )],
            };
            let frame = encode_frame(&state).expect("encodes");
            files.push(
                store
                    .write_file(&folder, &format!("task-0-{i}.state"), &frame)
                    .expect("writes"),
            );
        }
        let summaries: Vec<OperatorStateSummary> = (0..2)
            .map(|i| {
                OperatorStateSummary::of(&old_snapshot(
                    i,
                    2,
                    &[1, 2],
                    &["x"],
                    vec![list("l", OperatorStateMode::Union, &[i as u8])],
                ))
            })
            .collect();
        let refs: Vec<&OperatorStateSummary> = summaries.iter().collect();
        let operator = plan_operator("op", &refs, MAX_PARALLELISM, 1, 0)
            .expect("plans")
            .expect("not empty");
        SubtaskRestorePlan {
            checkpoint: CheckpointId(3),
            location: "memory:chk-3".to_string(),
            folder,
            files,
            operators: vec![operator],
        }
    }

    #[test]
    fn a_share_is_read_by_handle_and_equals_redistribute() {
        let store = CheckpointStorage::memory();
        let plan = stored_plan(&store);
        let share = read_share(&store, &plan).expect("reads");
        let old: Vec<OperatorSnapshot> = (0..2)
            .map(|i| {
                old_snapshot(
                    i,
                    2,
                    &[1, 2],
                    &["x"],
                    vec![list("l", OperatorStateMode::Union, &[i as u8])],
                )
            })
            .collect();
        assert_eq!(
            share["op"],
            redistribute(&old, MAX_PARALLELISM, 1, 0).expect("redistributes")
        );
    }

    #[test]
    fn a_missing_or_corrupt_file_is_named_with_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CheckpointStorage::Directory(dir.path().to_path_buf());
        let plan = stored_plan(&store);
        let path = dir.path().join("chk-3").join("task-0-1.state");

        let mut bytes = std::fs::read(&path).expect("reads");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        std::fs::write(&path, &bytes).expect("writes");
        let error = read_share(&store, &plan).unwrap_err();
        assert_eq!(error.checkpoint, CheckpointId(3));
        assert!(error.path.ends_with("chk-3/task-0-1.state"), "{error}");
        assert!(error.message.contains("checksum"), "{error}");
        let text = error.to_string();
        assert!(
            text.contains("checkpoint 3") && text.contains("task-0-1.state"),
            "{text}"
        );

        bytes.truncate(10);
        std::fs::write(&path, &bytes).expect("writes");
        let error = read_share(&store, &plan).unwrap_err();
        assert!(error.message.contains("the state handle says"), "{error}");

        std::fs::remove_file(&path).expect("removes");
        let error = read_share(&store, &plan).unwrap_err();
        assert!(
            error.path.ends_with("task-0-1.state") && error.message == "missing",
            "{error}"
        );
        assert!(
            error.to_string().contains("cannot restore checkpoint 3"),
            "{error}"
        );
    }

    #[test]
    fn a_plan_that_does_not_fit_the_file_is_an_error_not_a_panic() {
        let store = CheckpointStorage::memory();
        let mut plan = stored_plan(&store);
        plan.operators[0].lists[0].pieces[0].end = 99;
        let error = read_share(&store, &plan).unwrap_err();
        assert!(error.message.contains("has 1 elements"), "{error}");
        let mut plan = stored_plan(&store);
        plan.operators[0].state_id = "other".into();
        let error = read_share(&store, &plan).unwrap_err();
        assert!(
            error.message.contains("no state of operator 'other'"),
            "{error}"
        );
    }
}
