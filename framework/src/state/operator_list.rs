//! Operator list state as plain fields: [`OperatorList`] (split on rescaling) and
//! [`UnionList`] (every subtask gets all elements), Flink's `getListState` and
//! `getUnionListState`.
//!
//! A field of one of these types in an `#[operator]` struct holds the subtask's elements in
//! memory like a `Vec` (it dereferences to one). The derived operator restores it before `open`
//! and stores it at every checkpoint under the field's state name, so the function only reads
//! and writes the list. By hand, the same happens with
//! [`StateInitContext::list_state`](crate::operator::StateInitContext::list_state) and
//! [`StateSnapshotContext::add_list_state`](crate::operator::StateSnapshotContext::add_list_state).

use std::ops::{Deref, DerefMut};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StateError;
use super::schema::{StateField, StateFieldKind, layout_of};
use super::snapshot::OperatorStateMode;
use crate::operator::{StateInitContext, StateSnapshotContext};

macro_rules! operator_list {
    ($(#[$doc:meta])* $name:ident, $mode:expr, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name<T> {
            name: String,
            elements: Vec<T>,
        }

        impl<T> $name<T> {
            /// An empty list stored under `name`.
            pub fn new(name: &str) -> Self {
                Self {
                    name: name.to_string(),
                    elements: Vec::new(),
                }
            }

            /// The name the list is stored under.
            pub fn name(&self) -> &str {
                &self.name
            }
        }

        impl<T: Serialize + DeserializeOwned> $name<T> {
            /// Replaces the elements with this subtask's share of the restored list (empty
            /// when nothing was restored).
            ///
            /// # Errors
            ///
            /// A restored element does not decode as `T`.
            pub fn restore(&mut self, ctx: &mut StateInitContext) -> Result<(), StateError> {
                self.elements = ctx.list_state(&self.name)?;
                Ok(())
            }

            /// Stores the elements in the checkpoint `ctx` takes.
            ///
            /// # Errors
            ///
            /// An element cannot be encoded.
            pub fn snapshot(&self, ctx: &mut StateSnapshotContext) -> Result<(), StateError> {
                ctx.add_list_state(&self.name, $mode, &self.elements)
            }
        }

        impl<T> Deref for $name<T> {
            type Target = Vec<T>;
            fn deref(&self) -> &Vec<T> {
                &self.elements
            }
        }

        impl<T> DerefMut for $name<T> {
            fn deref_mut(&mut self) -> &mut Vec<T> {
                &mut self.elements
            }
        }

        impl<T: DeserializeOwned + 'static> StateField for $name<T> {
            const KIND: StateFieldKind = $kind;
            fn state_name(&self) -> &str {
                &self.name
            }
            fn layout() -> String {
                layout_of::<T>()
            }
        }
    };
}

operator_list!(
    /// Operator list state that is split evenly over the subtasks when the parallelism changes
    /// (Flink's `ListState` from `getListState`), for example a source's pending offsets.
    OperatorList,
    OperatorStateMode::Split,
    StateFieldKind::OperatorList
);

operator_list!(
    /// Operator list state of which every subtask gets all elements on restore (Flink's union
    /// list state), for example the open transactions of every old subtask.
    UnionList,
    OperatorStateMode::Union,
    StateFieldKind::UnionList
);
