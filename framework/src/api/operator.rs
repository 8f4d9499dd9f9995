//! What every user function is besides its function trait: an [`Operator`] with an identity and
//! declared state, normally derived with [`#[operator]`](crate::operator).
//!
//! Every function trait ([`MapFunction`](super::MapFunction),
//! [`KeyedProcessFunction`](super::KeyedProcessFunction), [`SinkFunction`](super::SinkFunction),
//! ...) has `Operator` as a supertrait, so the runtime can ask any function for
//!
//! - its **default uid** ([`Operator::default_uid`]): `#[operator(uid = "...")]` or the type's
//!   path, under which its state is stored in savepoints unless `.uid(..)` sets another;
//! - its **state schema** ([`Operator::state_schema`]): the state fields, stored with every
//!   checkpoint and compared on restore ([`crate::state::StateSchema::check_restore`]);
//! - the **state fields it restores and snapshots itself** (operator list and union list
//!   fields; keyed state fields are handles into the keyed backend and need nothing).
//!
//! Functions that are not keyed also implement the marker [`Unkeyed`], which `#[operator]`
//! derives only for structs without `#[state]` fields: keyed state in a map function is then a
//! compile error on the `impl MapFunction` line, not a failure at run time.
//!
//! Writing the impls by hand (`impl Operator for MyFn {}` and, when not keyed,
//! `impl Unkeyed for MyFn {}`) is possible; `#[operator]` is the intended way.

use crate::operator::{FunctionError, StateInitContext, StateSnapshotContext, UnrecoverableError};
use crate::state::{OperatorStateMode, SCHEMA_STATE, StateSchema};

/// A user function's identity and declared state (derived by [`#[operator]`](macro@crate::operator)).
pub trait Operator {
    /// The uid its state is stored under when the job sets none with `.uid(..)`: the
    /// `#[operator(uid = "...")]` argument or the type's module path. `None`: the position in
    /// the graph (not stable when the job changes).
    fn default_uid() -> Option<&'static str>
    where
        Self: Sized,
    {
        None
    }

    /// The state fields, for checkpoints and the restore check.
    fn state_schema(&self) -> StateSchema {
        StateSchema::empty()
    }

    /// Restores the fields that hold operator state (list, union list), before `open`.
    ///
    /// # Errors
    ///
    /// The restored state does not decode.
    fn restore_state_fields(&mut self, _ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        Ok(())
    }

    /// Stores the fields that hold operator state when a checkpoint passes.
    ///
    /// # Errors
    ///
    /// The state cannot be encoded.
    fn snapshot_state_fields(&self, _ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// A function without keyed state (no `#[state]` fields): what every function that does not
/// run on a keyed stream must be.
#[diagnostic::on_unimplemented(
    message = "`{Self}` must be an `#[operator]` without keyed state to be this kind of function",
    label = "`{Self}` has `#[state]` fields (keyed state), or is not an `#[operator]`",
    note = "keyed state is scoped to the current key: use it in a KeyedProcessFunction, KeyedCoProcessFunction, KeyedBroadcastProcessFunction or KeyedFlatMapFunction, or make the field `#[operator_state]`"
)]
pub trait Unkeyed: Operator {}

/// Checks the restored schema against `function`'s and restores its state fields; operators
/// call it first in `initialize_state`, before any keyed state is restored.
pub(crate) fn initialize_fields<F: Operator>(
    function: &mut F,
    ctx: &mut StateInitContext,
) -> Result<(), FunctionError> {
    let schema = function.state_schema();
    let stored: Vec<StateSchema> = ctx.list_state(SCHEMA_STATE)?;
    if let Some(stored) = stored.first() {
        // The same checkpoint and code give the same mismatch: a restart cannot fix it.
        schema
            .check_restore(
                stored,
                &format!("with uid '{}'", ctx.state_id()),
                ctx.allows_non_restored_state(),
            )
            .map_err(UnrecoverableError::new)?;
    }
    function.restore_state_fields(ctx)
}

/// Stores `function`'s schema and state fields; operators call it in `snapshot_state`.
pub(crate) fn snapshot_fields<F: Operator>(
    function: &F,
    ctx: &mut StateSnapshotContext,
) -> Result<(), FunctionError> {
    let schema = function.state_schema();
    if !schema.fields.is_empty() {
        ctx.add_list_state(SCHEMA_STATE, OperatorStateMode::Broadcast, &[schema])?;
    }
    function.snapshot_state_fields(ctx)
}

/// Implements [`Operator`] and [`Unkeyed`] with the defaults, for the framework's own function
/// types (`impl_plain_operator!(Type; <generics> where bounds)`).
macro_rules! impl_plain_operator {
    ($ty:ty $(; $($generics:tt)*)?) => {
        impl$(<$($generics)*>)? $crate::api::Operator for $ty {}
        impl$(<$($generics)*>)? $crate::api::Unkeyed for $ty {}
    };
}
pub(crate) use impl_plain_operator;
