//! Procedural macros for Eichhorn.
//!
//! Use them through the `eichhorn` crate, which re-exports each macro next to the trait it
//! implements (`eichhorn::StableHash` is both the trait and its derive); the expansions refer to
//! `::eichhorn::...`, so this crate is not meant to be used on its own.
//!
//! ## Design
//!
//! Each derive runs in four steps, one module each, after thiserror's `impl` crate:
//! `ast` parses the input without judging it, `valid` checks every rule and collects all
//! errors (each spanned on the offending token), `expand` writes the impl with fully qualified
//! paths, and on error `fallback` emits the errors next to an impl that always compiles, so the
//! user sees the real mistake rather than a cascade of "trait not implemented" errors.

mod ast;
mod expand;
mod fallback;
mod key_by;
mod operator;
mod span;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `eichhorn::StableHash`, the process-, run- and version-stable key hash.
///
/// # Byte feed (frozen)
///
/// The derived impl feeds the value into the `StableHasher` as follows. This is part of the
/// savepoint and wire format: keys are routed to key groups by this hash, so changing any rule
/// below (or the order of fields or variants in a key type) moves keys to other key groups and
/// breaks every existing savepoint.
///
/// - **Struct with named fields:** each field in declaration order, by
///   `StableHash::stable_hash(&self.field, state)`. Field names are not fed, so
///   `struct K { a: u32, b: String }` hashes exactly like the tuple `(a, b)`.
/// - **Tuple struct:** each field in declaration order, likewise.
/// - **Unit struct:** nothing (it hashes like `()`).
/// - **Enum:** the variant's index, then the variant's fields in declaration order. The index is
///   the variant's position in declaration order starting at 0, fed as
///   `state.write_u64(index as u64)`; explicit discriminants (`A = 5`) are ignored. A unit variant
///   feeds only its index. An enum with no variants has the body `match *self {}`.
/// - **`#[stable_hash(skip)]` on a field:** the field is left out; the other fields are fed as if
///   it were not there. Use it for caches and other data that is not part of the key's identity.
/// - **`#[stable_hash(skip)]` on a variant:** the variant feeds nothing at all, not even its
///   index. Skipped variants still count when numbering the others, so marking a variant
///   skipped never changes how the other variants hash.
///
/// # Generics
///
/// Every type parameter `T` gets a `T: StableHash` bound in the impl's where clause (as serde's
/// derives do), whether or not a field uses it; bounds and where clauses already on the type are
/// kept. Lifetime and const parameters get no bound.
///
/// # Errors
///
/// The derive rejects, each with an error spanned on the offending token:
///
/// - unions (on the `union` keyword): which field is active is unknown, so there is no stable feed;
/// - any `#[stable_hash(...)]` argument other than `skip`, a duplicate `skip`, and any argument on
///   the type itself;
/// - a field whose type does not implement `StableHash` (rustc's error, on the field's type).
///
/// All errors in one input are reported together.
///
/// # Examples
///
/// ```
/// use eichhorn::StableHash;
///
/// #[derive(StableHash)]
/// struct SensorKey {
///     site: String,
///     sensor: u32,
///     #[stable_hash(skip)]
///     cached_label: Option<String>,
/// }
///
/// #[derive(StableHash)]
/// enum Route {
///     Local,             // feeds 0
///     Remote(u32),       // feeds 1, then the u32
///     Both { hop: u16 }, // feeds 2, then the u16
/// }
///
/// let key = SensorKey { site: "north".into(), sensor: 7, cached_label: None };
/// assert_eq!(key.stable_hash_value(), ("north".to_string(), 7u32).stable_hash_value());
/// assert_ne!(Route::Local.stable_hash_value(), Route::Remote(0).stable_hash_value());
/// # let _ = Route::Both { hop: 1 };
/// ```
#[proc_macro_derive(StableHash, attributes(stable_hash))]
pub fn derive_stable_hash(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}

/// Derives an Eichhorn operator from a struct: Flink's rich function, with its state declared
/// as fields.
///
/// Fields marked `#[state]` are **keyed state** (`ValueState`, `ListState`, `MapState`,
/// `ReducingState`, `AggregatingState`), registered under a stable name and scoped to the
/// current key; fields marked `#[operator_state]` are **operator state** (`OperatorList`,
/// `UnionList`, or a broadcast `MapStateDescriptor`); `#[transient]` fields are runtime-only
/// (`Default::default()` at construction, never stored); every other field is
/// **configuration**. Then implement the function trait (`KeyedProcessFunction`,
/// `MapFunction`, `SinkFunction`, ...) for the struct as usual.
///
/// The macro generates:
///
/// - `new(config fields...)` in declaration order, which creates every state field
///   (`#[operator(new = false)]` to write your own);
/// - `#[derive(Clone)]` unless the struct derives it (each subtask gets a clone);
/// - `eichhorn::api::Operator`: the **uid** (`#[operator(uid = "...")]`, else the type's module
///   path) under which the state is stored in savepoints; the **state schema** stored with
///   every checkpoint and compared on restore, so a savepoint whose state no longer matches the
///   fields fails with an error naming the field and the change; the restore and snapshot of
///   operator list fields;
/// - `eichhorn::api::Unkeyed` when there is no `#[state]` field, which every function kind
///   without a key requires: keyed state in, say, a map function is a compile error.
///
/// # Field options
///
/// - `#[state(name = "...")]`, `#[operator_state(name = "...")]`: the state name (default: the
///   field's name). Names must be unique and must not start with `_`.
/// - `#[state(ttl = 60_000)]` (milliseconds) or `#[state(ttl = StateTtlConfig::new(..)...)]`.
/// - `#[state(reduce = |a, b| a + b)]`: required for `ReducingState`.
/// - `#[state(aggregate = MyAggregate)]`: required for `AggregatingState`.
///
/// # Errors
///
/// Misuse is one compile error on the offending token: a field type that is not state, keyed
/// state marked `#[operator_state]` (or the reverse), duplicate state names, unknown or repeated
/// options, a reducing or aggregating field without its function, a struct without named
/// fields, and (through `Unkeyed`) keyed state in a function that has no key.
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
/// use eichhorn::state::ValueState;
///
/// /// Alerts when a sensor's temperature jumped by more than `threshold`.
/// #[operator]
/// struct TemperatureAlert {
///     #[state]
///     last_temperature: ValueState<f64>,
///     threshold: f64,
/// }
///
/// impl KeyedFlatMapFunction for TemperatureAlert {
///     type Key = String;
///     type In = (String, f64);
///     type Out = (String, f64, f64);
///     fn flat_map(&mut self, (id, t): (String, f64), ctx: &mut KeyedContext<'_, '_, String>, out: &mut Collector<'_, Self::Out>) {
///         if let Some(last) = self.last_temperature.value(ctx) && (t - last).abs() > self.threshold {
///             out.collect((id, t, t - last));
///         }
///         self.last_temperature.update(ctx, t);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let env = StreamEnv::new();
/// let alerts = env
///     .from_collection(vec![("s1".to_string(), 20.0), ("s1".to_string(), 22.5), ("s1".to_string(), 22.0)])
///     .key_by(|(id, _): &(String, f64)| id.clone())
///     .flat_map_function(TemperatureAlert::new(1.7))
///     .collect_sink();
/// env.execute("alerts").await.unwrap();
/// assert_eq!(alerts.take(), vec![("s1".to_string(), 22.5, 2.5)]);
/// # }
/// ```
#[proc_macro_attribute]
pub fn operator(attr: TokenStream, item: TokenStream) -> TokenStream {
    operator::operator(attr.into(), item.into()).into()
}

/// Derives `eichhorn::api::KeyBy` from the fields marked `#[key]`, so `stream.keyed()`
/// partitions by them (instead of `key_by(|r| r.sensor_id.clone())`).
///
/// One `#[key]` field is the key (cloned); several make a tuple key in declaration order. The
/// key type must be an `eichhorn::api::Key` (rustc reports a field type that is not, on the
/// field). Errors: no `#[key]` field (on the type's name), `#[key]` with arguments or given
/// twice, `#[key]` on the type, enums and unions.
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Serialize, Deserialize, KeyBy)]
/// struct Click {
///     #[key]
///     site: String,
///     #[key]
///     page: u32,
///     at_ms: i64,
/// }
///
/// let click = Click { site: "a".into(), page: 7, at_ms: 0 };
/// assert_eq!(click.key(), ("a".to_string(), 7));
/// # let _ = click.at_ms;
/// ```
#[proc_macro_derive(KeyBy, attributes(key))]
pub fn derive_key_by(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    key_by::derive(&input).into()
}
