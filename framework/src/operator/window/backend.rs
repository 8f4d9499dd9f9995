//! What windows (and joins) need to keep their state in the job's keyed state backend:
//! decoding the entry keys of a restored snapshot.

use serde::de::DeserializeOwned;

use crate::state::{KeyedEntry, StateError};

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
