//! The state layer's error, and the constructors that name what and where for the two kinds
//! every part of the layer reports (an entry that does not decode, one that does not encode).
//!
//! It sits below every other file of `state/`: the tables, the backends, the snapshot format
//! and the handles all return it, and it imports none of them.

/// A keyed-state error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A state name used with two value types or kinds.
    #[error("state '{name}' holds {registered}, not {requested}")]
    TypeMismatch {
        /// The state's name.
        name: String,
        /// The type it was registered (or restored) with.
        registered: String,
        /// The type asked for.
        requested: String,
    },
    /// Stored state that cannot be read back (a decode failure, an inconsistent snapshot).
    #[error("corrupt state: {0}")]
    Corrupt(String),
    /// A key or value that cannot be encoded.
    #[error("cannot encode state: {0}")]
    Encode(String),
    /// The state backend failed (LMDB I/O, a full map, a bad configuration).
    #[error("state backend: {0}")]
    Backend(String),
}

/// A decode failure of a stored entry, naming the state and key group.
pub(crate) fn corrupt(
    name: &str,
    key_group: u32,
    what: &str,
    error: impl std::fmt::Display,
) -> StateError {
    StateError::Corrupt(format!(
        "state '{name}', key group {key_group}: cannot decode {what}: {error}"
    ))
}

/// An encode failure, naming the state and key group.
pub(crate) fn encode_error(
    name: &str,
    key_group: u32,
    what: &str,
    error: impl std::fmt::Display,
) -> StateError {
    StateError::Encode(format!(
        "state '{name}', key group {key_group}: cannot encode {what}: {error}"
    ))
}
