//! What windows (and joins) need to keep their state in the job's keyed state backend: each
//! store's own directory and share of the cache, decoding entry keys of a restored snapshot,
//! and taking a state's entries out of a restored snapshot with their key groups checked
//! ([`take_checked`]), which every path of the window operator restores through.
//!
//! An operator may open several [`KeyedStateStore`](crate::state::KeyedStateStore)s (one per
//! key type: `(key, window)` for contents and trigger state, the key for merging sets). Each
//! LMDB store is an environment of its own, so each gets a directory beside the operator's
//! (`<dir>-<part>`: removed when the store is dropped, as the operator's own would be) and an
//! equal share of the operator's cache bound, so that the operator as a whole keeps to it.

use std::path::PathBuf;

use serde::de::DeserializeOwned;

use crate::operator::checkpointing::{check_key_group, take_keyed_entries};
use crate::state::{
    KeyedBackendConfig, KeyedEntry, KeyedStateSnapshot, StableHash, StateBackendKind, StateError,
};

/// The configuration of store `part` of an operator with `stores` stores in all: a directory
/// of its own beside the operator's, and `1 / stores` of its cache entries (at least one).
pub(crate) fn store_config(
    config: &KeyedBackendConfig,
    part: &str,
    stores: usize,
) -> KeyedBackendConfig {
    let local_dir = match (config.kind, config.local_dir.file_name()) {
        (StateBackendKind::Lmdb, Some(name)) => {
            let mut name = name.to_os_string();
            name.push("-");
            name.push(part);
            config.local_dir.with_file_name(name)
        }
        // Memory stores need no directory; an LMDB store without one fails to open, naming it.
        _ => PathBuf::new(),
    };
    KeyedBackendConfig {
        local_dir,
        cache_entries: (config.cache_entries / stores.max(1)).max(1),
        ..config.clone()
    }
}

/// Decodes the key of a restored entry of state `name` (the key with its namespace).
///
/// # Errors
///
/// [`StateError::Corrupt`], naming the state and the key group, if the bytes do not decode as
/// one `E` with nothing left over.
pub(crate) fn decode_entry_key<E: DeserializeOwned>(
    name: &str,
    entry: &KeyedEntry,
) -> Result<E, StateError> {
    match postcard::take_from_bytes::<E>(&entry.key) {
        Ok((key, [])) => Ok(key),
        Ok((_, rest)) => Err(StateError::Corrupt(format!(
            "state '{name}', key group {}: cannot decode a key: {} trailing bytes",
            entry.key_group,
            rest.len()
        ))),
        Err(error) => Err(StateError::Corrupt(format!(
            "state '{name}', key group {}: cannot decode a key: {error}",
            entry.key_group
        ))),
    }
}

/// Decodes the value of a restored (or snapshotted) entry of state `name`.
///
/// # Errors
///
/// [`StateError::Corrupt`], naming the state and the key group, if the bytes do not decode as
/// one `V` with nothing left over.
pub(crate) fn decode_entry_value<V: DeserializeOwned>(
    name: &str,
    entry: &KeyedEntry,
) -> Result<V, StateError> {
    match postcard::take_from_bytes::<V>(&entry.value) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(StateError::Corrupt(format!(
            "state '{name}', key group {}: cannot decode a value: {} trailing bytes",
            entry.key_group,
            rest.len()
        ))),
        Err(error) => Err(StateError::Corrupt(format!(
            "state '{name}', key group {}: cannot decode a value: {error}",
            entry.key_group
        ))),
    }
}

/// Takes state `name` out of `keyed`, decoded (see [`take_keyed_entries`]), checking that each
/// entry's key (`key_of` its entry key) is in the key group it was stored in.
///
/// # Errors
///
/// [`StateError::Corrupt`] for an entry that does not decode or is in another key group.
pub(super) fn take_checked<E, V, K: StableHash>(
    keyed: &mut KeyedStateSnapshot,
    name: &str,
    max_parallelism: u32,
    key_of: fn(&E) -> &K,
) -> Result<Vec<(E, V)>, StateError>
where
    E: DeserializeOwned,
    V: DeserializeOwned,
{
    take_keyed_entries::<E, V>(keyed, name)?
        .into_iter()
        .map(|(group, entry_key, value)| {
            check_key_group(key_of(&entry_key), group, max_parallelism, name)?;
            Ok((entry_key, value))
        })
        .collect()
}

/// The key of an entry key with a namespace (for [`take_checked`]).
pub(super) fn first<K, N>(entry_key: &(K, N)) -> &K {
    &entry_key.0
}

/// The key of an entry key without a namespace (for [`take_checked`]).
pub(super) fn itself<K>(key: &K) -> &K {
    key
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn stores_get_their_own_directory_and_a_share_of_the_cache() {
        let config = KeyedBackendConfig {
            kind: StateBackendKind::Lmdb,
            local_dir: Path::new("/tmp/job/subtask-0/node-3").to_path_buf(),
            cache_entries: 100,
            ..KeyedBackendConfig::memory(128)
        };
        let contents = store_config(&config, "contents", 3);
        assert_eq!(
            contents.local_dir,
            Path::new("/tmp/job/subtask-0/node-3-contents")
        );
        assert_eq!(contents.cache_entries, 33);
        assert_eq!(store_config(&config, "x", 1000).cache_entries, 1);
        let memory = store_config(&KeyedBackendConfig::memory(128), "contents", 2);
        assert_eq!(memory.kind, StateBackendKind::Memory);
        assert!(memory.local_dir.as_os_str().is_empty());
    }
}
