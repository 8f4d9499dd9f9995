//! Keyed state: named, typed values per key, scoped to the key of the element being processed.
//!
//! A [`KeyedStateStore`] holds one table per state name (`BTreeMap<key, value>`, ordered so
//! snapshots and iteration are deterministic). Users reach it through state handles such as
//! [`ValueState`], which they keep in their function and use with the function's keyed context;
//! the context supplies the current key. Asking for a state under a name that was registered with
//! another type is an error naming both types, never a garbled value.
//!
//! This is the in-memory layout; the state backends (memory and LMDB), key-group snapshots and
//! TTL build on it.

use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// A keyed-state error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A state name used with two value types.
    #[error("state '{name}' holds {registered}, not {requested}")]
    TypeMismatch {
        /// The state's name.
        name: String,
        /// The type it was registered with.
        registered: &'static str,
        /// The type asked for.
        requested: &'static str,
    },
}

struct StateTable {
    name: String,
    type_name: &'static str,
    /// A `BTreeMap<K, T>`.
    values: Box<dyn Any + Send>,
}

/// The keyed state of one operator instance.
pub struct KeyedStateStore<K> {
    tables: Vec<StateTable>,
    _key: PhantomData<fn(K)>,
}

impl<K> std::fmt::Debug for KeyedStateStore<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStateStore")
            .field(
                "states",
                &self.tables.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<K> Default for KeyedStateStore<K> {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            _key: PhantomData,
        }
    }
}

impl<K: Ord + Send + 'static> KeyedStateStore<K> {
    /// The table of state `name`, created empty on first use.
    ///
    /// # Errors
    ///
    /// [`StateError::TypeMismatch`] if `name` holds another type.
    pub fn table<T: Send + 'static>(
        &mut self,
        name: &str,
    ) -> Result<&mut BTreeMap<K, T>, StateError> {
        let index = match self.tables.iter().position(|t| t.name == name) {
            Some(index) => index,
            None => {
                self.tables.push(StateTable {
                    name: name.to_string(),
                    type_name: std::any::type_name::<T>(),
                    values: Box::new(BTreeMap::<K, T>::new()),
                });
                self.tables.len() - 1
            }
        };
        let table = &mut self.tables[index];
        let registered = table.type_name;
        table
            .values
            .downcast_mut::<BTreeMap<K, T>>()
            .ok_or_else(|| StateError::TypeMismatch {
                name: name.to_string(),
                registered,
                requested: std::any::type_name::<T>(),
            })
    }
}

/// Access to the keyed state of the current key: what a state handle needs from a context.
pub trait KeyedStateAccess<K> {
    /// The key of the element (or timer) being processed.
    fn current_key(&self) -> &K;
    /// The operator's keyed state.
    fn state_store(&mut self) -> &mut KeyedStateStore<K>;
    /// Reports a state error: the task fails with it.
    fn state_error(&mut self, error: StateError);
}

/// A single value per key (Flink's `ValueState`).
///
/// # Examples
///
/// ```
/// use eichhorn::state::ValueState;
///
/// // Kept in a keyed function; read and written through its context:
/// // `self.last.value(ctx)`, `self.last.update(ctx, 21.5)`, `self.last.clear(ctx)`.
/// let last: ValueState<f64> = ValueState::new("last-temperature");
/// assert_eq!(last.name(), "last-temperature");
/// ```
pub struct ValueState<T> {
    name: String,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        Self::new(&self.name)
    }
}

impl<T> std::fmt::Debug for ValueState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueState")
            .field("name", &self.name)
            .finish()
    }
}

impl<T> ValueState<T> {
    /// A handle on the value state called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            _type: PhantomData,
        }
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<T: Clone + Send + 'static> ValueState<T> {
    /// The current key's value, if any.
    pub fn value<K: Ord + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Option<T> {
        let key = ctx.current_key().clone();
        match ctx.state_store().table::<T>(&self.name) {
            Ok(table) => table.get(&key).cloned(),
            Err(error) => {
                ctx.state_error(error);
                None
            }
        }
    }

    /// Sets the current key's value.
    pub fn update<K: Ord + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: T,
    ) {
        let key = ctx.current_key().clone();
        match ctx.state_store().table::<T>(&self.name) {
            Ok(table) => {
                table.insert(key, value);
            }
            Err(error) => ctx.state_error(error),
        }
    }

    /// Removes the current key's value.
    pub fn clear<K: Ord + Clone + Send + 'static>(&self, ctx: &mut impl KeyedStateAccess<K>) {
        let key = ctx.current_key().clone();
        match ctx.state_store().table::<T>(&self.name) {
            Ok(table) => {
                table.remove(&key);
            }
            Err(error) => ctx.state_error(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ctx {
        key: String,
        store: KeyedStateStore<String>,
        errors: Vec<StateError>,
    }

    impl KeyedStateAccess<String> for Ctx {
        fn current_key(&self) -> &String {
            &self.key
        }
        fn state_store(&mut self) -> &mut KeyedStateStore<String> {
            &mut self.store
        }
        fn state_error(&mut self, error: StateError) {
            self.errors.push(error);
        }
    }

    #[test]
    fn values_are_scoped_to_the_current_key() {
        let mut ctx = Ctx {
            key: "a".into(),
            store: KeyedStateStore::default(),
            errors: Vec::new(),
        };
        let state = ValueState::<i64>::new("count");
        assert_eq!(state.value(&mut ctx), None);
        state.update(&mut ctx, 3);
        ctx.key = "b".into();
        assert_eq!(state.value(&mut ctx), None);
        state.update(&mut ctx, 7);
        ctx.key = "a".into();
        assert_eq!(state.value(&mut ctx), Some(3));
        state.clear(&mut ctx);
        assert_eq!(state.value(&mut ctx), None);
        assert!(ctx.errors.is_empty());
    }

    #[test]
    fn a_name_with_another_type_is_an_error() {
        let mut ctx = Ctx {
            key: "a".into(),
            store: KeyedStateStore::default(),
            errors: Vec::new(),
        };
        ValueState::<i64>::new("x").update(&mut ctx, 1);
        assert_eq!(ValueState::<String>::new("x").value(&mut ctx), None);
        assert_eq!(
            ctx.errors,
            vec![StateError::TypeMismatch {
                name: "x".into(),
                registered: "i64",
                requested: "alloc::string::String",
            }]
        );
    }
}
