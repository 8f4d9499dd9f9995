//! The oracles: what must hold after any run with faults, checked against a fault-free run of
//! the same job.
//!
//! - **Exactly-once**: the rows the exactly-once sink committed are the fault-free run's rows,
//!   as a multiset.
//! - **No loss or duplication per key** (with [`Oracles::sequenced`]): every row carries its
//!   key and a sequence number; per key, each number the fault-free run committed is committed
//!   exactly once, and no other.
//! - **Checkpoint consistency** (with [`Oracles::sequenced`]): a transaction commits only when
//!   its checkpoint completed, so replaying the commit log shows what each completed
//!   checkpoint made visible. After every commit, each committed row equals the fault-free
//!   row with the same key and number (state restored from a checkpoint must give the values
//!   the fault-free run had there: a running sum restored wrong shows in every later row), and,
//!   for a job that emits each key's rows in order ([`Oracles::ordered_per_key`]), each key's
//!   committed rows are a gap-free prefix of the fault-free ones.
//! - **Liveness**: once the faults are over the job finishes: the faulted run must end within a
//!   virtual-time bound derived from the fault-free run, counted from when the plan's timed
//!   faults are over ([`liveness_bound_after`]), not fail.
//! - **Determinism**: the faulted run, run again with the same seed and plan, gives the same
//!   trace hash.
//!
//! The functions here are pure: they compare data the simulation collected.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Maps a row to its key (shown with `Debug`) and its sequence number within the key.
pub type KeySeq<T> = Arc<dyn Fn(&T) -> (String, u64) + Send + Sync>;

/// Which oracles a check applies beyond exactly-once and liveness, which always apply.
pub struct Oracles<T> {
    pub(crate) sequenced: Option<KeySeq<T>>,
    pub(crate) ordered_per_key: bool,
    pub(crate) determinism: bool,
}

impl<T> fmt::Debug for Oracles<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oracles")
            .field("sequenced", &self.sequenced.is_some())
            .field("ordered_per_key", &self.ordered_per_key)
            .field("determinism", &self.determinism)
            .finish()
    }
}

impl<T> Clone for Oracles<T> {
    fn clone(&self) -> Self {
        Self {
            sequenced: self.sequenced.clone(),
            ordered_per_key: self.ordered_per_key,
            determinism: self.determinism,
        }
    }
}

impl<T> Default for Oracles<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Oracles<T> {
    /// Exactly-once, liveness and determinism.
    pub fn new() -> Self {
        Self {
            sequenced: None,
            ordered_per_key: false,
            determinism: true,
        }
    }

    /// Also the per-key sequence and checkpoint-consistency oracles, with `key_seq` giving a
    /// row's key and its sequence number within the key (numbers unique per key).
    pub fn sequenced<K: fmt::Debug>(
        mut self,
        key_seq: impl Fn(&T) -> (K, u64) + Send + Sync + 'static,
    ) -> Self {
        self.sequenced = Some(Arc::new(move |row| {
            let (key, seq) = key_seq(row);
            (format!("{key:?}"), seq)
        }));
        self
    }

    /// Whether the job emits each key's rows in sequence order (a running aggregate, windows
    /// fired in order): then every commit must leave each key with a gap-free prefix.
    pub fn ordered_per_key(mut self, ordered: bool) -> Self {
        self.ordered_per_key = ordered;
        self
    }

    /// Skips the determinism oracle (it runs the faulted run a second time).
    pub fn without_determinism(mut self) -> Self {
        self.determinism = false;
        self
    }
}

/// What an oracle found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The committed rows differ from the fault-free run's.
    ExactlyOnce {
        /// Rows of the fault-free run missing.
        missing: usize,
        /// Rows committed more often than in the fault-free run.
        duplicated: usize,
        /// Rows the fault-free run committed.
        expected: usize,
    },
    /// A key's sequence numbers have a gap, a repeat, or a stranger.
    Sequence {
        /// The key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// After a commit, what was visible was not a state of the fault-free run.
    Consistency {
        /// The commit (counting from 1) after which it showed.
        commit: usize,
        /// The transaction it committed.
        transaction: String,
        /// The key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The job did not finish within the bound, or failed.
    Liveness {
        /// What happened.
        problem: String,
    },
    /// Two runs of the same seed and plan differed.
    Nondeterministic {
        /// The first run's trace hash.
        first: u64,
        /// The second run's.
        second: u64,
    },
}

impl Finding {
    /// The oracle's name.
    pub fn oracle(&self) -> &'static str {
        match self {
            Self::ExactlyOnce { .. } => "exactly-once",
            Self::Sequence { .. } => "no-loss-no-duplicates",
            Self::Consistency { .. } => "checkpoint-consistency",
            Self::Liveness { .. } => "liveness",
            Self::Nondeterministic { .. } => "determinism",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} oracle: ", self.oracle())?;
        match self {
            Self::ExactlyOnce {
                missing,
                duplicated,
                expected,
            } => write!(
                f,
                "{missing} rows missing, {duplicated} duplicated (of {expected} the fault-free \
                 run committed)"
            ),
            Self::Sequence { key, problem } => write!(f, "key {key}: {problem}"),
            Self::Consistency {
                commit,
                transaction,
                key,
                problem,
            } => write!(
                f,
                "after commit {commit} (transaction {transaction}), key {key}: {problem}"
            ),
            Self::Liveness { problem } => f.write_str(problem),
            Self::Nondeterministic { first, second } => write!(
                f,
                "the same seed and plan gave trace {first:#018x}, then {second:#018x}"
            ),
        }
    }
}

/// The virtual time a faulted run may take: the fault-free run's time once per run the
/// crashes make, twice over for replays after restarts, plus 30 s for restarts and slow
/// checkpoints. A run that stalls (a lost credit, a barrier that never aligns) hits it; the
/// checkpoint timeout (10 minutes by default) lies far beyond it.
pub fn liveness_bound(fault_free: Duration, crashes: usize) -> Duration {
    fault_free * (crashes as u32 + 2) + Duration::from_secs(30)
}

/// [`liveness_bound`] counted from when the plan's timed faults are over
/// ([`FaultPlan::faults_end`](crate::FaultPlan::faults_end): the last partition healed, the
/// network perfect again, the last node back): what "the job finishes once the faults stop"
/// means for a plan whose faults reach far into the run.
pub fn liveness_bound_after(
    fault_free: Duration,
    crashes: usize,
    faults_end: Duration,
) -> Duration {
    faults_end + liveness_bound(fault_free, crashes)
}

/// Rows of `expected` missing from `found`, and rows `found` has more often, as multisets of
/// their postcard bytes.
///
/// # Errors
///
/// A row could not be serialised.
pub fn compare<T: serde::Serialize>(
    expected: &[T],
    found: &[T],
) -> Result<(usize, usize), postcard::Error> {
    // Both sides encoded into one buffer each and sorted: equal rows sit together, and one
    // merge counts what only one side has (no allocation per row).
    let expected = Encoded::sorted(expected)?;
    let found = Encoded::sorted(found)?;
    let (mut missing, mut duplicated) = (0, 0);
    let (mut e, mut f) = (0, 0);
    while e < expected.len() || f < found.len() {
        let order = match (expected.row(e), found.row(f)) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, _) => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                missing += 1;
                e += 1;
            }
            std::cmp::Ordering::Greater => {
                duplicated += 1;
                f += 1;
            }
            std::cmp::Ordering::Equal => {
                e += 1;
                f += 1;
            }
        }
    }
    Ok((missing, duplicated))
}

/// Rows encoded with postcard into one buffer, in the order of their bytes.
struct Encoded {
    bytes: Vec<u8>,
    rows: Vec<std::ops::Range<usize>>,
}

impl Encoded {
    fn sorted<T: serde::Serialize>(rows: &[T]) -> Result<Self, postcard::Error> {
        let mut bytes = Vec::new();
        let mut ranges = Vec::with_capacity(rows.len());
        for row in rows {
            let start = bytes.len();
            bytes = postcard::to_extend(row, bytes)?;
            ranges.push(start..bytes.len());
        }
        ranges.sort_unstable_by(|a, b| bytes[a.clone()].cmp(&bytes[b.clone()]));
        Ok(Self {
            bytes,
            rows: ranges,
        })
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn row(&self, index: usize) -> Option<&[u8]> {
        self.rows.get(index).map(|range| &self.bytes[range.clone()])
    }
}

/// The exactly-once oracle.
///
/// # Errors
///
/// A row could not be serialised.
pub fn check_exactly_once<T: serde::Serialize>(
    expected: &[T],
    found: &[T],
) -> Result<Option<Finding>, postcard::Error> {
    let (missing, duplicated) = compare(expected, found)?;
    Ok(
        (missing > 0 || duplicated > 0).then_some(Finding::ExactlyOnce {
            missing,
            duplicated,
            expected: expected.len(),
        }),
    )
}

/// The per-key sequence oracle: every number the fault-free run committed for a key is
/// committed exactly once, and no other.
pub fn check_sequences<T>(
    expected: &[T],
    found: &[T],
    key_seq: &dyn Fn(&T) -> (String, u64),
) -> Option<Finding> {
    let mut want: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for row in expected {
        let (key, seq) = key_seq(row);
        want.entry(key).or_default().insert(seq);
    }
    let mut got: BTreeMap<String, BTreeMap<u64, usize>> = BTreeMap::new();
    for row in found {
        let (key, seq) = key_seq(row);
        *got.entry(key).or_default().entry(seq).or_default() += 1;
    }
    let keys: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    let empty_want = BTreeSet::new();
    let empty_got = BTreeMap::new();
    for key in keys {
        let want = want.get(key).unwrap_or(&empty_want);
        let got = got.get(key).unwrap_or(&empty_got);
        if let Some((seq, n)) = got.iter().find(|(_, n)| **n > 1) {
            return Some(Finding::Sequence {
                key: key.clone(),
                problem: format!("sequence number {seq} committed {n} times"),
            });
        }
        if let Some(seq) = want.iter().find(|s| !got.contains_key(s)) {
            let missing = want.iter().filter(|s| !got.contains_key(s)).count();
            return Some(Finding::Sequence {
                key: key.clone(),
                problem: format!(
                    "sequence number {seq} never committed ({missing} of {} missing)",
                    want.len()
                ),
            });
        }
        if let Some(seq) = got.keys().find(|s| !want.contains(s)) {
            return Some(Finding::Sequence {
                key: key.clone(),
                problem: format!("sequence number {seq} committed, the fault-free run has none"),
            });
        }
    }
    None
}

/// The checkpoint-consistency oracle: replays the commit log; after every commit each
/// committed row must equal the fault-free row with its key and number, and with `ordered`,
/// each key's committed numbers must be a prefix of the fault-free ones.
///
/// # Errors
///
/// A row could not be serialised.
pub fn check_consistency<T: serde::Serialize>(
    expected: &[T],
    log: &[(String, Vec<T>)],
    key_seq: &dyn Fn(&T) -> (String, u64),
    ordered: bool,
) -> Result<Option<Finding>, postcard::Error> {
    // The fault-free rows' bytes, in one buffer, by key and number.
    let mut want_bytes = Vec::new();
    let mut want: BTreeMap<String, BTreeMap<u64, std::ops::Range<usize>>> = BTreeMap::new();
    for row in expected {
        let (key, seq) = key_seq(row);
        let start = want_bytes.len();
        want_bytes = postcard::to_extend(row, want_bytes)?;
        want.entry(key)
            .or_default()
            .insert(seq, start..want_bytes.len());
    }
    // Each key's numbers in order (the map's keys), for the prefix check.
    let want_seqs: BTreeMap<&String, Vec<u64>> = want
        .iter()
        .map(|(key, rows)| (key, rows.keys().copied().collect()))
        .collect();
    let mut encoded = Vec::new();
    let mut table: BTreeMap<&str, &[T]> = BTreeMap::new();
    let mut visible: BTreeMap<String, BTreeMap<u64, usize>> = BTreeMap::new();
    for (index, (name, rows)) in log.iter().enumerate() {
        let commit = index + 1;
        let finding = |key: String, problem: String| Finding::Consistency {
            commit,
            transaction: name.clone(),
            key,
            problem,
        };
        if let Some(before) = table.insert(name, rows) {
            // The same transaction committed again (after a restore): it must not change.
            let same = before.len() == rows.len()
                && before
                    .iter()
                    .zip(rows)
                    .map(|(a, b)| Ok(postcard::to_stdvec(a)? == postcard::to_stdvec(b)?))
                    .collect::<Result<Vec<bool>, postcard::Error>>()?
                    .into_iter()
                    .all(|same| same);
            if !same {
                return Ok(Some(finding(
                    "-".into(),
                    "a transaction committed again with other rows".into(),
                )));
            }
            continue;
        }
        let mut touched = BTreeSet::new();
        for row in rows {
            let (key, seq) = key_seq(row);
            match want.get(&key).and_then(|rows| rows.get(&seq)) {
                None => {
                    return Ok(Some(finding(
                        key,
                        format!("sequence number {seq}: no such row in the fault-free run"),
                    )));
                }
                Some(range) => {
                    encoded.clear();
                    encoded = postcard::to_extend(row, encoded)?;
                    if want_bytes[range.clone()] != encoded[..] {
                        return Ok(Some(finding(
                            key,
                            format!(
                                "sequence number {seq}: the row differs from the fault-free run's"
                            ),
                        )));
                    }
                }
            }
            if !visible.contains_key(&key) {
                visible.insert(key.clone(), BTreeMap::new());
            }
            let count = visible
                .get_mut(&key)
                .expect("inserted above")
                .entry(seq)
                .or_default();
            *count += 1;
            if *count > 1 {
                return Ok(Some(finding(
                    key,
                    format!("sequence number {seq} visible twice"),
                )));
            }
            touched.insert(key);
        }
        if ordered {
            for key in touched {
                let seen = &visible[&key];
                let prefix = &want_seqs[&key][..seen.len().min(want_seqs[&key].len())];
                if !prefix.iter().eq(seen.keys()) {
                    let gap = prefix
                        .iter()
                        .find(|s| !seen.contains_key(s))
                        .copied()
                        .unwrap_or_default();
                    return Ok(Some(finding(
                        key,
                        format!(
                            "{} rows visible but sequence number {gap} is not: not a state of \
                             the fault-free run",
                            seen.len()
                        ),
                    )));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Triple = (u8, u64, u64);

    fn key_seq(row: &Triple) -> (String, u64) {
        (row.0.to_string(), row.1)
    }

    const EXPECTED: [(u8, u64, u64); 5] =
        [(1, 1, 10), (1, 2, 30), (2, 1, 5), (1, 3, 60), (2, 2, 6)];

    #[test]
    fn sequences_find_gaps_repeats_and_strangers() {
        assert_eq!(check_sequences(&EXPECTED, &EXPECTED, &key_seq), None);
        let mut lost = EXPECTED.to_vec();
        lost.remove(1);
        let finding = check_sequences(&EXPECTED, &lost, &key_seq).unwrap();
        assert!(
            finding
                .to_string()
                .contains("key 1: sequence number 2 never"),
            "{finding}"
        );
        let mut twice = EXPECTED.to_vec();
        twice.push((2, 1, 5));
        let finding = check_sequences(&EXPECTED, &twice, &key_seq).unwrap();
        assert!(
            finding.to_string().contains("1 committed 2 times"),
            "{finding}"
        );
        let mut stranger = EXPECTED.to_vec();
        stranger.push((3, 9, 0));
        assert!(check_sequences(&EXPECTED, &stranger, &key_seq).is_some());
    }

    #[test]
    fn consistency_replays_the_commit_log() {
        type Log = Vec<(String, Vec<Triple>)>;
        let log = |commits: &[(&str, &[Triple])]| -> Log {
            commits
                .iter()
                .map(|(n, r)| (n.to_string(), r.to_vec()))
                .collect()
        };
        let good = log(&[
            ("a", &[(1, 1, 10), (2, 1, 5)]),
            ("b", &[(1, 2, 30)]),
            ("b", &[(1, 2, 30)]),
            ("c", &[(1, 3, 60), (2, 2, 6)]),
        ]);
        assert_eq!(
            check_consistency(&EXPECTED, &good, &key_seq, true).unwrap(),
            None
        );
        // A restored running sum that lost an input.
        let wrong = log(&[("a", &[(1, 1, 10)]), ("b", &[(1, 2, 20)])]);
        let finding = check_consistency(&EXPECTED, &wrong, &key_seq, true)
            .unwrap()
            .unwrap();
        assert!(
            finding
                .to_string()
                .contains("after commit 2 (transaction b), key 1"),
            "{finding}"
        );
        // A gap: key 1's second row is not visible when its third is.
        let gap = log(&[("a", &[(1, 1, 10)]), ("c", &[(1, 3, 60)])]);
        let finding = check_consistency(&EXPECTED, &gap, &key_seq, true)
            .unwrap()
            .unwrap();
        assert!(
            finding.to_string().contains("sequence number 2 is not"),
            "{finding}"
        );
        assert_eq!(
            check_consistency(&EXPECTED, &gap, &key_seq, false).unwrap(),
            None
        );
        // The same row under two transactions.
        let twice = log(&[("a", &[(1, 1, 10)]), ("x", &[(1, 1, 10)])]);
        assert!(
            check_consistency(&EXPECTED, &twice, &key_seq, false)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn exactly_once_counts_missing_and_duplicated() {
        let found = [(1u8, 1u64, 10u64), (1, 1, 10)];
        let finding = check_exactly_once(&EXPECTED[..2], &found).unwrap().unwrap();
        assert_eq!(
            finding,
            Finding::ExactlyOnce {
                missing: 1,
                duplicated: 1,
                expected: 2
            }
        );
        assert_eq!(check_exactly_once(&EXPECTED, &EXPECTED).unwrap(), None);
    }
}
