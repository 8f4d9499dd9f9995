//! Keys scoped to a namespace: one key's state split into many entries (a join buffer per
//! timestamp, a window's contents per window) in a [`KeyedStateStore`](super::KeyedStateStore).
//!
//! A [`Namespaced`] key hashes as its key alone ([`StableHash`]), so every entry of a key lives
//! in the key group of the key and moves with the key's other state when parallelism changes.
//! It serialises as the pair `(key, namespace)`: a store of namespaced keys writes the same
//! snapshot entries as an operator that writes `(key, namespace)` entry keys by hand, so the
//! two layouts restore into each other.
//!
//! ## Invariants
//!
//! - `Namespaced { key, namespace }` has the key group of `key`.
//! - Its postcard bytes are those of the tuple `(key, namespace)`.

use serde::{Deserialize, Serialize};

use super::stable_hash::{StableHash, StableHasher};

/// A key and a namespace within it, hashed (for key groups) as the key alone.
///
/// # Examples
///
/// ```
/// use eichhorn::state::namespaced::Namespaced;
/// use eichhorn::state::{KeyedStateStore, StableHash, key_group_for_key};
///
/// # fn main() -> Result<(), eichhorn::state::StateError> {
/// let entry = Namespaced::new("sensor-1".to_string(), 1_000i64);
/// assert_eq!(entry.stable_hash_value(), "sensor-1".to_string().stable_hash_value());
/// assert_eq!(key_group_for_key(&entry, 128), key_group_for_key(&entry.key, 128));
///
/// let mut store = KeyedStateStore::<Namespaced<String, i64>>::default();
/// let mut buffers = store.value_table::<Vec<u32>>("buffer")?;
/// buffers.get_or_insert_with(entry.clone(), Vec::new)?.push(7);
/// assert_eq!(buffers.get(&entry)?, Some(&vec![7]));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Namespaced<K, N> {
    /// The key: it decides the key group.
    pub key: K,
    /// The namespace within the key (a timestamp, a window).
    pub namespace: N,
}

impl<K, N> Namespaced<K, N> {
    /// `key` scoped to `namespace`.
    pub const fn new(key: K, namespace: N) -> Self {
        Self { key, namespace }
    }
}

impl<K: StableHash, N> StableHash for Namespaced<K, N> {
    fn stable_hash(&self, state: &mut StableHasher) {
        self.key.stable_hash(state);
    }

    fn stable_hash_value(&self) -> u64 {
        self.key.stable_hash_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::key_group_for_key;

    #[test]
    fn encodes_as_the_pair_and_hashes_as_the_key() {
        for (key, namespace) in [(0u64, i64::MIN), (300, -1), (u64::MAX, 1 << 40)] {
            let entry = Namespaced::new(key, namespace);
            assert_eq!(
                postcard::to_allocvec(&entry).expect("encodes"),
                postcard::to_allocvec(&(key, namespace)).expect("encodes")
            );
            assert_eq!(key_group_for_key(&entry, 128), key_group_for_key(&key, 128));
            let back: Namespaced<u64, i64> =
                postcard::from_bytes(&postcard::to_allocvec(&(key, namespace)).expect("encodes"))
                    .expect("decodes");
            assert_eq!(back, entry);
        }
    }
}
