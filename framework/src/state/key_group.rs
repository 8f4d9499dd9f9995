//! Key groups: the unit in which keyed state is owned and moved.
//!
//! As in Flink, a key belongs to key group `hash(key) % max_parallelism`, and key group `g`
//! belongs to subtask `g * parallelism / max_parallelism`. Each subtask therefore owns a
//! contiguous [`KeyGroupRange`]; when parallelism changes, whole key groups move, never single
//! keys, so state can be redistributed without rehashing it.
//!
//! ## Invariants
//!
//! - `1 <= parallelism <= max_parallelism <= MAX_PARALLELISM_LIMIT`.
//! - The ranges of subtasks `0..parallelism` are disjoint, contiguous and cover
//!   `0..max_parallelism` (property-tested below).

use super::stable_hash::StableHash;

/// The default number of key groups (Flink's default for small jobs).
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// The largest supported number of key groups (Flink's upper bound, 2^15).
pub const MAX_PARALLELISM_LIMIT: u32 = 1 << 15;

const _: () = assert!(DEFAULT_MAX_PARALLELISM <= MAX_PARALLELISM_LIMIT);

/// The index of a key group, in `0..max_parallelism`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct KeyGroup(pub u32);

/// The key group a key belongs to.
///
/// # Examples
///
/// ```
/// use eichhorn::state::{key_group_for_key, subtask_for_key_group};
///
/// let group = key_group_for_key(&"user-17".to_string(), 128);
/// assert!(group.0 < 128);
/// assert!(subtask_for_key_group(group, 128, 4) < 4);
/// ```
#[inline]
pub fn key_group_for_key<K: StableHash + ?Sized>(key: &K, max_parallelism: u32) -> KeyGroup {
    key_group_for_hash(key.stable_hash_value(), max_parallelism)
}

/// The key group of a key whose stable hash is `hash`.
#[inline]
pub fn key_group_for_hash(hash: u64, max_parallelism: u32) -> KeyGroup {
    debug_assert!(max_parallelism > 0);
    // The same value as `%`, without a division on the per-record path for the usual
    // power-of-two max parallelism.
    if max_parallelism.is_power_of_two() {
        KeyGroup((hash & u64::from(max_parallelism - 1)) as u32)
    } else {
        KeyGroup((hash % u64::from(max_parallelism)) as u32)
    }
}

/// The subtask (operator index) that owns `key_group` at `parallelism`.
#[inline]
pub fn subtask_for_key_group(key_group: KeyGroup, max_parallelism: u32, parallelism: u32) -> u32 {
    debug_assert!(key_group.0 < max_parallelism);
    debug_assert!(parallelism >= 1 && parallelism <= max_parallelism);
    let scaled = u64::from(key_group.0) * u64::from(parallelism);
    if max_parallelism.is_power_of_two() {
        (scaled >> max_parallelism.trailing_zeros()) as u32
    } else {
        (scaled / u64::from(max_parallelism)) as u32
    }
}

/// A contiguous, inclusive-exclusive range of key groups owned by one subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyGroupRange {
    /// First key group in the range.
    pub start: u32,
    /// One past the last key group in the range.
    pub end: u32,
}

impl KeyGroupRange {
    /// The key groups owned by `subtask` of `parallelism`, with `max_parallelism` key groups
    /// (the inverse of [`subtask_for_key_group`], as Flink's `KeyGroupRangeAssignment`).
    pub fn for_subtask(max_parallelism: u32, parallelism: u32, subtask: u32) -> Self {
        assert!(parallelism >= 1 && parallelism <= max_parallelism && subtask < parallelism);
        let max = u64::from(max_parallelism);
        let p = u64::from(parallelism);
        let s = u64::from(subtask);
        let start = (s * max).div_ceil(p);
        let end = ((s + 1) * max).div_ceil(p);
        Self {
            start: start as u32,
            end: end as u32,
        }
    }

    /// Whether `key_group` is in this range.
    pub fn contains(&self, key_group: KeyGroup) -> bool {
        self.start <= key_group.0 && key_group.0 < self.end
    }

    /// The number of key groups in the range.
    pub fn len(&self) -> u32 {
        self.end - self.start
    }

    /// Whether the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ranges_partition_the_key_groups(max in 1u32..2048, p_seed in 0u32..2048) {
            let parallelism = 1 + p_seed % max;
            let mut next = 0;
            for subtask in 0..parallelism {
                let range = KeyGroupRange::for_subtask(max, parallelism, subtask);
                prop_assert_eq!(range.start, next);
                next = range.end;
                for g in range.start..range.end {
                    prop_assert_eq!(subtask_for_key_group(KeyGroup(g), max, parallelism), subtask);
                }
            }
            prop_assert_eq!(next, max);
        }

        #[test]
        fn fast_paths_agree_with_the_formula(hash in any::<u64>(), shift in 0u32..16, p_seed in any::<u32>()) {
            let max = 1u32 << shift;
            let parallelism = 1 + p_seed % max;
            let group = key_group_for_hash(hash, max);
            prop_assert_eq!(u64::from(group.0), hash % u64::from(max));
            prop_assert_eq!(
                u64::from(subtask_for_key_group(group, max, parallelism)),
                u64::from(group.0) * u64::from(parallelism) / u64::from(max)
            );
        }

        #[test]
        fn key_group_is_in_bounds(key in any::<u64>(), max in 1u32..MAX_PARALLELISM_LIMIT) {
            prop_assert!(key_group_for_key(&key, max).0 < max);
        }
    }

    #[test]
    fn keys_spread_over_subtasks() {
        let mut counts = [0u32; 4];
        for key in 0..10_000u64 {
            let group = key_group_for_key(&key, DEFAULT_MAX_PARALLELISM);
            counts[subtask_for_key_group(group, DEFAULT_MAX_PARALLELISM, 4) as usize] += 1;
        }
        for count in counts {
            assert!((2_000..3_000).contains(&count), "{counts:?}");
        }
    }
}
