//! Keyed state handles: [`ValueState`], [`ListState`], [`MapState`], [`ReducingState`] and
//! [`AggregatingState`] (Flink's state primitives).
//!
//! A handle is a name and a type, nothing more: it lives in a keyed function and reaches the
//! current key's state through the function's context ([`KeyedStateAccess`]), so one handle
//! serves every key and every backend. Methods never return errors: a state error (a type
//! mismatch, corrupt restored bytes, a backend failure) is reported through
//! [`KeyedStateAccess::state_error`], which fails the task, and the method returns nothing (or an
//! empty result).
//!
//! Each handle can carry a TTL ([`StateTtlConfig`], `.with_ttl(..)`): expired values are never
//! returned, a read that meets one removes it, and snapshots leave them out. List state expires
//! per element, map state per entry.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::StateError;
use super::keyed::{HandleTable, KeyedStateAccess, KeyedStateScope, KeyedStateStore, StateHint};
use super::lmdb::Slot;
use super::table::{StateKind, StateSpec};
use super::ttl::{Expiry, Live, StateTtlConfig, Ttl, TtlStored, TtlValue};
use crate::api::Key;
use crate::api::functions::AggregateFunction;

/// Runs `op` on the current key's entry of state `spec`; reports an error to the context.
fn run<K, S, R>(
    ctx: &mut impl KeyedStateAccess<K>,
    spec: StateSpec<'_, S>,
    hint: &StateHint,
    op: impl FnOnce(&mut HandleTable<'_, K, S>, &K) -> Result<R, StateError>,
) -> Option<R>
where
    K: Ord + Hash + Clone + Send + 'static,
    S: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    let (key, store) = ctx.key_and_store();
    let result = store
        .access_hinted::<S, FxHashMap<K, S>, FxHashMap<K, Slot<S>>>(spec, hint)
        .and_then(|mut table| op(&mut table, &key));
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            ctx.state_error(error);
            None
        }
    }
}

/// The processing time TTL needs (0 without TTL: the context is not asked).
fn now_for<K>(ttl: Option<Ttl>, ctx: &impl KeyedStateAccess<K>) -> i64 {
    if ttl.is_some() {
        ctx.current_processing_time()
    } else {
        0
    }
}

/// What a read found.
enum Seen<S> {
    Absent,
    Expired,
    Live(S),
    Pruned(S),
}

/// The current key's live value: expired parts are removed from the state (a read that meets
/// an expired value removes it), and with `OnReadAndWrite` the value is stamped.
fn read_live<K, S>(
    table: &mut HandleTable<'_, K, S>,
    key: &K,
    ttl: Option<Ttl>,
    now_ms: i64,
) -> Result<Option<S>, StateError>
where
    K: Ord + Hash + Clone + Send + 'static,
    S: TtlStored,
{
    let seen = match table.get(key)? {
        None => Seen::Absent,
        Some(stored) => match ttl {
            None => Seen::Live(stored.clone()),
            Some(ttl) => match stored.live(now_ms, ttl.ttl_ms) {
                Live::Expired => Seen::Expired,
                Live::Unchanged => Seen::Live(stored.clone()),
                Live::Pruned(live) => Seen::Pruned(live),
            },
        },
    };
    let update_on_read = ttl.is_some_and(|ttl| ttl.update_on_read);
    match seen {
        Seen::Absent => Ok(None),
        Seen::Expired => {
            table.remove(key)?;
            Ok(None)
        }
        Seen::Live(value) => {
            if update_on_read && let Some(stored) = table.get_mut(key)? {
                stored.touch(now_ms);
            }
            Ok(Some(value))
        }
        Seen::Pruned(mut live) => {
            if update_on_read {
                live.touch(now_ms);
            }
            table.insert(key.clone(), live.clone())?;
            Ok(Some(live))
        }
    }
}

fn describe_value<T>() -> String {
    std::any::type_name::<T>().to_string()
}

fn describe_list<T>() -> String {
    format!("ListState<{}>", std::any::type_name::<T>())
}

fn describe_map<UK, UV>() -> String {
    format!(
        "MapState<{}, {}>",
        std::any::type_name::<UK>(),
        std::any::type_name::<UV>()
    )
}

fn describe_reducing<T>() -> String {
    format!("ReducingState<{}>", std::any::type_name::<T>())
}

fn describe_aggregating<ACC>() -> String {
    format!("AggregatingState<{}>", std::any::type_name::<ACC>())
}

/// A keyed state handle seen without its value types: what [`KeyedStateStore::keys`] and
/// [`KeyedStateStore::apply_to_state`] take to find the keys holding a value of its state
/// (Flink's `StateDescriptor` in `applyToKeyedState`). Every handle implements it; it cannot be
/// implemented outside this crate.
pub trait KeyedStateHandle: sealed::Sealed {
    /// The state's name.
    fn state_name(&self) -> &str;

    /// The keys holding a live value of this state in `store` (see [`KeyedStateStore::keys`]).
    #[doc(hidden)]
    fn live_keys<K: Key>(
        &self,
        store: &mut KeyedStateStore<K>,
        now_ms: i64,
    ) -> Result<Vec<K>, StateError>;
}

/// Visiting a store's keys by handle: these methods of [`KeyedStateStore`] take a
/// [`KeyedStateHandle`], so they live beside it rather than with the store (which knows no
/// handle).
impl<K: Key> KeyedStateStore<K> {
    /// The keys that hold a live value of `state` (not expired at `now_ms`, for a handle with a
    /// TTL), in key group order and, within a key group, by the key's postcard bytes: the
    /// snapshot order, the same on both backends and in every run. LMDB writes its cache back
    /// first and then scans the range of `key group ++ state id` of each key group, in
    /// database order.
    ///
    /// # Errors
    ///
    /// [`StateError::TypeMismatch`] if the state holds another type or kind;
    /// [`StateError::Corrupt`] if stored bytes do not decode; [`StateError::Backend`] if LMDB
    /// fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::state::{KeyedStateStore, StateError, ValueState};
    ///
    /// # fn main() -> Result<(), StateError> {
    /// let mut store = KeyedStateStore::<String>::default();
    /// let count = ValueState::<u64>::new("count");
    /// store.apply_to_state(&count, 0, |_, _| {})?; // no key yet
    /// for key in ["b", "a"] {
    ///     let mut scope = store.scope(key.to_string(), 0);
    ///     count.update(&mut scope, 1);
    ///     scope.into_result()?;
    /// }
    /// assert_eq!(store.keys(&count, 0)?.len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn keys<H: KeyedStateHandle>(
        &mut self,
        state: &H,
        now_ms: i64,
    ) -> Result<Vec<K>, StateError> {
        state.live_keys(self, now_ms)
    }

    /// Calls `function` for every key holding a live value of `state`, in the order of
    /// [`KeyedStateStore::keys`], with a context scoped to the key: pass it to the handles to
    /// read, change or clear the key's state (any state, not only `state`). Flink's
    /// `applyToKeyedState`. The keys are listed before the first call, so the function may
    /// change or remove what it visits.
    ///
    /// # Errors
    ///
    /// As [`KeyedStateStore::keys`], or the first state error a handle reported inside
    /// `function` (the remaining keys are not visited).
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::state::{KeyedStateStore, StateError, ValueState};
    ///
    /// # fn main() -> Result<(), StateError> {
    /// let mut store = KeyedStateStore::<u32>::default();
    /// let count = ValueState::<u64>::new("count");
    /// for key in [3, 1, 2] {
    ///     let mut scope = store.scope(key, 0);
    ///     count.update(&mut scope, u64::from(key) * 10);
    ///     scope.into_result()?;
    /// }
    /// // Halve every count, drop the key 2.
    /// store.apply_to_state(&count, 0, |key, scope| match *key {
    ///     2 => count.clear(scope),
    ///     _ => {
    ///         let halved = count.value(scope).unwrap_or(0) / 2;
    ///         count.update(scope, halved);
    ///     }
    /// })?;
    /// let mut scope = store.scope(3, 0);
    /// assert_eq!(count.value(&mut scope), Some(15));
    /// scope.into_result()?;
    /// let mut keys = store.keys(&count, 0)?;
    /// keys.sort();
    /// assert_eq!(keys, vec![1, 3]);
    /// # Ok(()) }
    /// ```
    pub fn apply_to_state<H: KeyedStateHandle>(
        &mut self,
        state: &H,
        now_ms: i64,
        mut function: impl FnMut(&K, &mut KeyedStateScope<'_, K>),
    ) -> Result<(), StateError> {
        let keys = self.keys(state, now_ms)?;
        for key in &keys {
            let mut scope = KeyedStateScope::borrowed(key, self, now_ms);
            function(key, &mut scope);
            scope.into_result()?;
        }
        Ok(())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A single value per key (Flink's `ValueState`).
///
/// # Examples
///
/// ```
/// use eichhorn::state::{KeyedStateAccess, KeyedStateStore, StateError, StateTtlConfig, ValueState};
/// # struct Ctx { key: String, now: i64, store: KeyedStateStore<String> }
/// # impl KeyedStateAccess<String> for Ctx {
/// #     fn current_key(&self) -> &String { &self.key }
/// #     fn state_store(&mut self) -> &mut KeyedStateStore<String> { &mut self.store }
/// #     fn state_error(&mut self, error: StateError) { panic!("{error}") }
/// #     fn current_processing_time(&self) -> i64 { self.now }
/// # }
/// # let mut ctx = Ctx { key: "sensor-1".into(), now: 0, store: KeyedStateStore::default() };
///
/// // Kept in a keyed function; `ctx` is its context (a `KeyedContext` in a process function).
/// let last: ValueState<f64> = ValueState::new("last-temperature");
/// assert_eq!(last.value(&mut ctx), None);
/// last.update(&mut ctx, 21.5);
/// assert_eq!(last.value(&mut ctx), Some(21.5));
/// last.clear(&mut ctx);
/// assert_eq!(last.value(&mut ctx), None);
///
/// // With a TTL, a value is gone once `ttl_ms` of processing time passed since its write.
/// let seen: ValueState<bool> = ValueState::new("seen").with_ttl(StateTtlConfig::new(1_000));
/// seen.update(&mut ctx, true);
/// ctx.now = 1_000;
/// assert_eq!(seen.value(&mut ctx), None);
/// ```
pub struct ValueState<T> {
    name: String,
    ttl: Option<StateTtlConfig>,
    /// Where the store last found this state.
    hint: StateHint,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            ttl: self.ttl,
            hint: StateHint::default(),
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for ValueState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueState")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl<T> ValueState<T> {
    /// A handle on the value state called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ttl: None,
            hint: StateHint::default(),
            _type: PhantomData,
        }
    }

    /// The same handle with a time-to-live.
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state's TTL, if any.
    pub fn ttl(&self) -> Option<StateTtlConfig> {
        self.ttl
    }
}

impl<T: Clone + Serialize + DeserializeOwned + Send + 'static> ValueState<T> {
    fn spec(&self, ttl: Option<Ttl>) -> StateSpec<'_, TtlValue<T>> {
        StateSpec {
            name: &self.name,
            kind: StateKind::Value,
            describe: describe_value::<T>,
            expiry: ttl.map(Expiry::new),
        }
    }

    /// The current key's value, if any (and not expired).
    pub fn value<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Option<T> {
        let ttl = self.ttl.map(|t| t.ttl());
        let now = now_for(ttl, ctx);
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            Ok(read_live(table, key, ttl, now)?.map(|v| v.value))
        })
        .flatten()
    }

    /// Sets the current key's value.
    pub fn update<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: T,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        let stamp = ttl.map(|_| ctx.current_processing_time());
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            table.insert(key.clone(), TtlValue::new(value, stamp))
        });
    }

    /// Removes the current key's value.
    pub fn clear<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            table.remove(key)
        });
    }
}

impl<T> sealed::Sealed for ValueState<T> {}

impl<T> KeyedStateHandle for ValueState<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    fn state_name(&self) -> &str {
        &self.name
    }

    fn live_keys<K: Key>(
        &self,
        store: &mut KeyedStateStore<K>,
        now_ms: i64,
    ) -> Result<Vec<K>, StateError> {
        store.live_keys(self.spec(self.ttl.map(|t| t.ttl())), now_ms)
    }
}

/// A list of values per key (Flink's `ListState`).
///
/// # Examples
///
/// ```
/// use eichhorn::state::{KeyedStateAccess, KeyedStateStore, ListState, StateError};
/// # struct Ctx { key: u32, store: KeyedStateStore<u32> }
/// # impl KeyedStateAccess<u32> for Ctx {
/// #     fn current_key(&self) -> &u32 { &self.key }
/// #     fn state_store(&mut self) -> &mut KeyedStateStore<u32> { &mut self.store }
/// #     fn state_error(&mut self, error: StateError) { panic!("{error}") }
/// # }
/// # let mut ctx = Ctx { key: 7, store: KeyedStateStore::default() };
///
/// let readings: ListState<i32> = ListState::new("readings");
/// readings.add(&mut ctx, 1);
/// readings.add_all(&mut ctx, [2, 3]);
/// assert_eq!(readings.get(&mut ctx), vec![1, 2, 3]);
/// readings.update(&mut ctx, vec![9]);
/// assert_eq!(readings.get(&mut ctx), vec![9]);
/// readings.clear(&mut ctx);
/// assert!(readings.get(&mut ctx).is_empty());
/// ```
pub struct ListState<T> {
    name: String,
    ttl: Option<StateTtlConfig>,
    /// Where the store last found this state.
    hint: StateHint,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ListState<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            ttl: self.ttl,
            hint: StateHint::default(),
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for ListState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListState")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl<T> ListState<T> {
    /// A handle on the list state called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ttl: None,
            hint: StateHint::default(),
            _type: PhantomData,
        }
    }

    /// The same handle with a time-to-live (per element).
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state's TTL, if any.
    pub fn ttl(&self) -> Option<StateTtlConfig> {
        self.ttl
    }
}

impl<T: Clone + Serialize + DeserializeOwned + Send + 'static> ListState<T> {
    fn spec(&self, ttl: Option<Ttl>) -> StateSpec<'_, Vec<TtlValue<T>>> {
        StateSpec {
            name: &self.name,
            kind: StateKind::List,
            describe: describe_list::<T>,
            expiry: ttl.map(Expiry::new),
        }
    }

    /// The current key's elements in insertion order (empty if none).
    pub fn get<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Vec<T> {
        let ttl = self.ttl.map(|t| t.ttl());
        let now = now_for(ttl, ctx);
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            Ok(read_live(table, key, ttl, now)?
                .map(|list| list.into_iter().map(|e| e.value).collect())
                .unwrap_or_default())
        })
        .unwrap_or_default()
    }

    /// Appends `value` to the current key's list.
    pub fn add<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: T,
    ) {
        self.add_all(ctx, [value]);
    }

    /// Appends `values` to the current key's list (nothing happens for none).
    pub fn add_all<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        values: impl IntoIterator<Item = T>,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        let stamp = ttl.map(|_| ctx.current_processing_time());
        let mut values = values
            .into_iter()
            .map(|v| TtlValue::new(v, stamp))
            .peekable();
        if values.peek().is_none() {
            return;
        }
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            match table.get_mut(key)? {
                Some(list) => {
                    list.extend(values);
                    Ok(())
                }
                None => table.insert(key.clone(), values.collect()),
            }
        });
    }

    /// Replaces the current key's list (an empty one clears it).
    pub fn update<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        values: Vec<T>,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        let stamp = ttl.map(|_| ctx.current_processing_time());
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            if values.is_empty() {
                table.remove(key)
            } else {
                let list = values.into_iter().map(|v| TtlValue::new(v, stamp));
                table.insert(key.clone(), list.collect())
            }
        });
    }

    /// Removes the current key's list.
    pub fn clear<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            table.remove(key)
        });
    }
}

impl<T> sealed::Sealed for ListState<T> {}

impl<T> KeyedStateHandle for ListState<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    fn state_name(&self) -> &str {
        &self.name
    }

    fn live_keys<K: Key>(
        &self,
        store: &mut KeyedStateStore<K>,
        now_ms: i64,
    ) -> Result<Vec<K>, StateError> {
        store.live_keys(self.spec(self.ttl.map(|t| t.ttl())), now_ms)
    }
}

/// A map per key (Flink's `MapState`), iterated in user-key order.
///
/// # Examples
///
/// ```
/// use eichhorn::state::{KeyedStateAccess, KeyedStateStore, MapState, StateError};
/// # struct Ctx { key: u32, store: KeyedStateStore<u32> }
/// # impl KeyedStateAccess<u32> for Ctx {
/// #     fn current_key(&self) -> &u32 { &self.key }
/// #     fn state_store(&mut self) -> &mut KeyedStateStore<u32> { &mut self.store }
/// #     fn state_error(&mut self, error: StateError) { panic!("{error}") }
/// # }
/// # let mut ctx = Ctx { key: 7, store: KeyedStateStore::default() };
///
/// let visits: MapState<String, u32> = MapState::new("visits");
/// visits.put(&mut ctx, "home".to_string(), 2);
/// visits.put(&mut ctx, "about".to_string(), 1);
/// assert_eq!(visits.get(&mut ctx, &"home".to_string()), Some(2));
/// assert!(visits.contains(&mut ctx, &"about".to_string()));
/// assert_eq!(visits.keys(&mut ctx), vec!["about".to_string(), "home".to_string()]);
/// visits.remove(&mut ctx, &"home".to_string());
/// assert_eq!(visits.entries(&mut ctx), vec![("about".to_string(), 1)]);
/// visits.clear(&mut ctx);
/// assert!(visits.is_empty(&mut ctx));
/// ```
pub struct MapState<UK, UV> {
    name: String,
    ttl: Option<StateTtlConfig>,
    /// Where the store last found this state.
    hint: StateHint,
    _type: PhantomData<fn() -> (UK, UV)>,
}

impl<UK, UV> Clone for MapState<UK, UV> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            ttl: self.ttl,
            hint: StateHint::default(),
            _type: PhantomData,
        }
    }
}

impl<UK, UV> std::fmt::Debug for MapState<UK, UV> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapState")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl<UK, UV> MapState<UK, UV> {
    /// A handle on the map state called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ttl: None,
            hint: StateHint::default(),
            _type: PhantomData,
        }
    }

    /// The same handle with a time-to-live (per map entry).
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state's TTL, if any.
    pub fn ttl(&self) -> Option<StateTtlConfig> {
        self.ttl
    }
}

type StoredMap<UK, UV> = BTreeMap<UK, TtlValue<UV>>;

impl<UK, UV> MapState<UK, UV>
where
    UK: Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    UV: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    fn spec(&self, ttl: Option<Ttl>) -> StateSpec<'_, StoredMap<UK, UV>> {
        StateSpec {
            name: &self.name,
            kind: StateKind::Map,
            describe: describe_map::<UK, UV>,
            expiry: ttl.map(Expiry::new),
        }
    }

    /// Looks `user_key` up in the current key's map: `f` of its live value, if any.
    fn lookup<K: Ord + Hash + Clone + Send + 'static, R>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
        f: impl FnOnce(&UV) -> R,
    ) -> Option<R> {
        let ttl = self.ttl.map(|t| t.ttl());
        let now = now_for(ttl, ctx);
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            let seen = match table.get(key)?.and_then(|map| map.get(user_key)) {
                None => Seen::Absent,
                Some(entry) if ttl.is_some_and(|t| entry.is_expired(now, t.ttl_ms)) => {
                    Seen::Expired
                }
                Some(entry) => Seen::Live(f(&entry.value)),
            };
            match seen {
                Seen::Absent | Seen::Pruned(_) => Ok(None),
                Seen::Expired => {
                    remove_user_key(table, key, user_key)?;
                    Ok(None)
                }
                Seen::Live(result) => {
                    if ttl.is_some_and(|t| t.update_on_read)
                        && let Some(entry) = table.get_mut(key)?.and_then(|m| m.get_mut(user_key))
                    {
                        entry.touch(now);
                    }
                    Ok(Some(result))
                }
            }
        })
        .flatten()
    }

    /// The current key's live map (expired entries removed).
    fn live_map<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> StoredMap<UK, UV> {
        let ttl = self.ttl.map(|t| t.ttl());
        let now = now_for(ttl, ctx);
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            Ok(read_live(table, key, ttl, now)?.unwrap_or_default())
        })
        .unwrap_or_default()
    }

    /// The value of `user_key` in the current key's map.
    pub fn get<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
    ) -> Option<UV> {
        self.lookup(ctx, user_key, UV::clone)
    }

    /// Whether the current key's map holds `user_key`.
    pub fn contains<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
    ) -> bool {
        self.lookup(ctx, user_key, |_| ()).is_some()
    }

    /// Sets `user_key` to `value` in the current key's map.
    pub fn put<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: UK,
        value: UV,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        let entry = TtlValue::new(value, ttl.map(|_| ctx.current_processing_time()));
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            match table.get_mut(key)? {
                Some(map) => {
                    map.insert(user_key, entry);
                    Ok(())
                }
                None => table.insert(key.clone(), BTreeMap::from([(user_key, entry)])),
            }
        });
    }

    /// Sets every `(user_key, value)` of `entries` in the current key's map.
    pub fn put_all<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        entries: impl IntoIterator<Item = (UK, UV)>,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        let stamp = ttl.map(|_| ctx.current_processing_time());
        let mut entries = entries
            .into_iter()
            .map(|(k, v)| (k, TtlValue::new(v, stamp)))
            .peekable();
        if entries.peek().is_none() {
            return;
        }
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            match table.get_mut(key)? {
                Some(map) => {
                    map.extend(entries);
                    Ok(())
                }
                None => table.insert(key.clone(), entries.collect()),
            }
        });
    }

    /// Removes `user_key` from the current key's map.
    pub fn remove<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            remove_user_key(table, key, user_key)
        });
    }

    /// The current key's entries, in user-key order.
    pub fn entries<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Vec<(UK, UV)> {
        self.live_map(ctx)
            .into_iter()
            .map(|(k, e)| (k, e.value))
            .collect()
    }

    /// The current key's user keys, in order.
    pub fn keys<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Vec<UK> {
        self.live_map(ctx).into_keys().collect()
    }

    /// The current key's values, in user-key order.
    pub fn values<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Vec<UV> {
        self.live_map(ctx).into_values().map(|e| e.value).collect()
    }

    /// Whether the current key's map has no (live) entry.
    pub fn is_empty<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> bool {
        self.live_map(ctx).is_empty()
    }

    /// Removes the current key's whole map.
    pub fn clear<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            table.remove(key)
        });
    }
}

/// Removes one user key; an emptied map is removed whole (no empty entries in snapshots).
fn remove_user_key<K, UK, UV>(
    table: &mut HandleTable<'_, K, StoredMap<UK, UV>>,
    key: &K,
    user_key: &UK,
) -> Result<(), StateError>
where
    K: Ord + Hash + Clone + Send + 'static,
    UK: Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    UV: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    let emptied = match table.get(key)? {
        Some(map) if map.contains_key(user_key) => map.len() == 1,
        _ => return Ok(()),
    };
    if emptied {
        table.remove(key)
    } else {
        if let Some(map) = table.get_mut(key)? {
            map.remove(user_key);
        }
        Ok(())
    }
}

impl<UK, UV> sealed::Sealed for MapState<UK, UV> {}

impl<UK, UV> KeyedStateHandle for MapState<UK, UV>
where
    UK: Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    UV: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    fn state_name(&self) -> &str {
        &self.name
    }

    fn live_keys<K: Key>(
        &self,
        store: &mut KeyedStateStore<K>,
        now_ms: i64,
    ) -> Result<Vec<K>, StateError> {
        store.live_keys(self.spec(self.ttl.map(|t| t.ttl())), now_ms)
    }
}

/// One value per key that every added value is reduced into (Flink's `ReducingState`).
///
/// # Examples
///
/// ```
/// use eichhorn::state::{KeyedStateAccess, KeyedStateStore, ReducingState, StateError};
/// # struct Ctx { key: u32, store: KeyedStateStore<u32> }
/// # impl KeyedStateAccess<u32> for Ctx {
/// #     fn current_key(&self) -> &u32 { &self.key }
/// #     fn state_store(&mut self) -> &mut KeyedStateStore<u32> { &mut self.store }
/// #     fn state_error(&mut self, error: StateError) { panic!("{error}") }
/// # }
/// # let mut ctx = Ctx { key: 7, store: KeyedStateStore::default() };
///
/// let max: ReducingState<i64> = ReducingState::new("max", |a: i64, b: i64| a.max(b));
/// for reading in [3, 9, 4] {
///     max.add(&mut ctx, reading);
/// }
/// assert_eq!(max.get(&mut ctx), Some(9));
/// max.clear(&mut ctx);
/// assert_eq!(max.get(&mut ctx), None);
/// ```
pub struct ReducingState<T> {
    name: String,
    ttl: Option<StateTtlConfig>,
    /// Where the store last found this state.
    hint: StateHint,
    reduce: Arc<dyn Fn(T, T) -> T + Send + Sync>,
}

impl<T> Clone for ReducingState<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            ttl: self.ttl,
            hint: StateHint::default(),
            reduce: Arc::clone(&self.reduce),
        }
    }
}

impl<T> std::fmt::Debug for ReducingState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReducingState")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<T> ReducingState<T> {
    /// A handle on the reducing state called `name`; `reduce(current, added)` combines values.
    pub fn new(name: &str, reduce: impl Fn(T, T) -> T + Send + Sync + 'static) -> Self {
        Self {
            name: name.to_string(),
            ttl: None,
            hint: StateHint::default(),
            reduce: Arc::new(reduce),
        }
    }

    /// The same handle with a time-to-live.
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state's TTL, if any.
    pub fn ttl(&self) -> Option<StateTtlConfig> {
        self.ttl
    }
}

impl<T: Clone + Serialize + DeserializeOwned + Send + 'static> ReducingState<T> {
    fn spec(&self, ttl: Option<Ttl>) -> StateSpec<'_, TtlValue<T>> {
        StateSpec {
            name: &self.name,
            kind: StateKind::Reducing,
            describe: describe_reducing::<T>,
            expiry: ttl.map(Expiry::new),
        }
    }

    /// Reduces `value` into the current key's value (or makes it the value).
    pub fn add<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: T,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        let now = now_for(ttl, ctx);
        let stamp = ttl.map(|_| now);
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            let next = match read_live(table, key, ttl, now)? {
                Some(current) => (self.reduce)(current.value, value),
                None => value,
            };
            table.insert(key.clone(), TtlValue::new(next, stamp))
        });
    }

    /// The current key's reduced value, if any.
    pub fn get<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Option<T> {
        let ttl = self.ttl.map(|t| t.ttl());
        let now = now_for(ttl, ctx);
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            Ok(read_live(table, key, ttl, now)?.map(|v| v.value))
        })
        .flatten()
    }

    /// Removes the current key's value.
    pub fn clear<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        run(ctx, self.spec(ttl), &self.hint, |table, key| {
            table.remove(key)
        });
    }
}

/// An [`AggregateFunction`] without its own type, so the handle names only `IN, ACC, OUT`.
trait DynAggregate<IN, ACC, OUT>: Send {
    fn create(&mut self) -> ACC;
    fn add(&mut self, value: IN, accumulator: ACC) -> ACC;
    fn result(&mut self, accumulator: &ACC) -> OUT;
    fn clone_box(&self) -> Box<dyn DynAggregate<IN, ACC, OUT>>;
}

impl<F, IN, ACC, OUT> DynAggregate<IN, ACC, OUT> for F
where
    F: AggregateFunction<IN, Acc = ACC, Out = OUT>,
{
    fn create(&mut self) -> ACC {
        self.create_accumulator()
    }
    fn add(&mut self, value: IN, accumulator: ACC) -> ACC {
        AggregateFunction::add(self, value, accumulator)
    }
    fn result(&mut self, accumulator: &ACC) -> OUT {
        self.get_result(accumulator)
    }
    fn clone_box(&self) -> Box<dyn DynAggregate<IN, ACC, OUT>> {
        Box::new(self.clone())
    }
}

impl<T> sealed::Sealed for ReducingState<T> {}

impl<T> KeyedStateHandle for ReducingState<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    fn state_name(&self) -> &str {
        &self.name
    }

    fn live_keys<K: Key>(
        &self,
        store: &mut KeyedStateStore<K>,
        now_ms: i64,
    ) -> Result<Vec<K>, StateError> {
        store.live_keys(self.spec(self.ttl.map(|t| t.ttl())), now_ms)
    }
}

/// One accumulator per key that added values are aggregated into with an
/// [`AggregateFunction`] (Flink's `AggregatingState`). The accumulator is what is stored.
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::{AggregateFunction, operator};
/// use eichhorn::state::{AggregatingState, KeyedStateAccess, KeyedStateStore, StateError};
/// # struct Ctx { key: u32, store: KeyedStateStore<u32> }
/// # impl KeyedStateAccess<u32> for Ctx {
/// #     fn current_key(&self) -> &u32 { &self.key }
/// #     fn state_store(&mut self) -> &mut KeyedStateStore<u32> { &mut self.store }
/// #     fn state_error(&mut self, error: StateError) { panic!("{error}") }
/// # }
/// # let mut ctx = Ctx { key: 7, store: KeyedStateStore::default() };
///
/// #[operator]
/// struct Average;
/// impl AggregateFunction<f64> for Average {
///     type Acc = (f64, u64);
///     type Out = f64;
///     fn create_accumulator(&mut self) -> (f64, u64) { (0.0, 0) }
///     fn add(&mut self, v: f64, (sum, n): (f64, u64)) -> (f64, u64) { (sum + v, n + 1) }
///     fn get_result(&mut self, (sum, n): &(f64, u64)) -> f64 { sum / *n as f64 }
///     fn merge(&mut self, a: (f64, u64), b: (f64, u64)) -> (f64, u64) { (a.0 + b.0, a.1 + b.1) }
/// }
///
/// let mut average: AggregatingState<f64, (f64, u64), f64> =
///     AggregatingState::new("average", Average);
/// average.add(&mut ctx, 2.0);
/// average.add(&mut ctx, 4.0);
/// assert_eq!(average.get(&mut ctx), Some(3.0));
/// average.clear(&mut ctx);
/// assert_eq!(average.get(&mut ctx), None);
/// ```
pub struct AggregatingState<IN, ACC, OUT> {
    name: String,
    ttl: Option<StateTtlConfig>,
    /// Where the store last found this state.
    hint: StateHint,
    function: Box<dyn DynAggregate<IN, ACC, OUT>>,
}

impl<IN, ACC, OUT> Clone for AggregatingState<IN, ACC, OUT> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            ttl: self.ttl,
            hint: StateHint::default(),
            function: self.function.clone_box(),
        }
    }
}

impl<IN, ACC, OUT> std::fmt::Debug for AggregatingState<IN, ACC, OUT> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregatingState")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<IN, ACC, OUT> AggregatingState<IN, ACC, OUT> {
    /// A handle on the aggregating state called `name`, aggregating with `function`.
    pub fn new<F>(name: &str, function: F) -> Self
    where
        F: AggregateFunction<IN, Acc = ACC, Out = OUT>,
    {
        Self {
            name: name.to_string(),
            ttl: None,
            hint: StateHint::default(),
            function: Box::new(function),
        }
    }

    /// The same handle with a time-to-live.
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state's TTL, if any.
    pub fn ttl(&self) -> Option<StateTtlConfig> {
        self.ttl
    }
}

impl<IN, ACC, OUT> AggregatingState<IN, ACC, OUT>
where
    ACC: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    fn spec(name: &str, ttl: Option<Ttl>) -> StateSpec<'_, TtlValue<ACC>> {
        StateSpec {
            name,
            kind: StateKind::Aggregating,
            describe: describe_aggregating::<ACC>,
            expiry: ttl.map(Expiry::new),
        }
    }

    /// Adds `value` to the current key's accumulator (a new one if none).
    pub fn add<K: Ord + Hash + Clone + Send + 'static>(
        &mut self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: IN,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        let now = now_for(ttl, ctx);
        let stamp = ttl.map(|_| now);
        let function = &mut self.function;
        run(
            ctx,
            Self::spec(&self.name, ttl),
            &self.hint,
            |table, key| {
                let accumulator = match read_live(table, key, ttl, now)? {
                    Some(current) => current.value,
                    None => function.create(),
                };
                let accumulator = function.add(value, accumulator);
                table.insert(key.clone(), TtlValue::new(accumulator, stamp))
            },
        );
    }

    /// The result of the current key's accumulator, if it has one.
    pub fn get<K: Ord + Hash + Clone + Send + 'static>(
        &mut self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Option<OUT> {
        let ttl = self.ttl.map(|t| t.ttl());
        let now = now_for(ttl, ctx);
        let accumulator = run(
            ctx,
            Self::spec(&self.name, ttl),
            &self.hint,
            |table, key| read_live(table, key, ttl, now),
        )
        .flatten()?;
        Some(self.function.result(&accumulator.value))
    }

    /// Removes the current key's accumulator.
    pub fn clear<K: Ord + Hash + Clone + Send + 'static>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) {
        let ttl = self.ttl.map(|t| t.ttl());
        run(
            ctx,
            Self::spec(&self.name, ttl),
            &self.hint,
            |table, key| table.remove(key),
        );
    }
}

impl<IN, ACC, OUT> sealed::Sealed for AggregatingState<IN, ACC, OUT> {}

impl<IN, ACC, OUT> KeyedStateHandle for AggregatingState<IN, ACC, OUT>
where
    ACC: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    fn state_name(&self) -> &str {
        &self.name
    }

    fn live_keys<K: Key>(
        &self,
        store: &mut KeyedStateStore<K>,
        now_ms: i64,
    ) -> Result<Vec<K>, StateError> {
        store.live_keys(Self::spec(&self.name, self.ttl.map(|t| t.ttl())), now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_support::{Ctx, on_both_backends};
    use crate::state::{KeyedStateSnapshot, TtlUpdateType};

    fn snapshot<K: crate::api::Key>(ctx: &mut Ctx<K>, now_ms: i64) -> KeyedStateSnapshot {
        ctx.store
            .snapshot(now_ms)
            .and_then(|p| p.complete())
            .expect("snapshot")
    }

    /// The keys of state `name` in a snapshot, decoded.
    fn snapshot_keys(snapshot: &KeyedStateSnapshot, name: &str) -> Vec<String> {
        let state = snapshot.state_index(name).expect("state present");
        let mut keys: Vec<String> = snapshot
            .entries
            .iter()
            .filter(|e| e.state == state)
            .map(|e| postcard::from_bytes(&e.key).expect("key decodes"))
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn values_are_scoped_to_the_current_key() {
        on_both_backends("a".to_string(), |ctx| {
            let state = ValueState::<i64>::new("count");
            assert_eq!(state.value(ctx), None);
            state.update(ctx, 3);
            ctx.key = "b".into();
            assert_eq!(state.value(ctx), None);
            state.update(ctx, 7);
            ctx.key = "a".into();
            assert_eq!(state.value(ctx), Some(3));
            state.update(ctx, 4);
            assert_eq!(state.value(ctx), Some(4));
            state.clear(ctx);
            assert_eq!(state.value(ctx), None);
            ctx.key = "b".into();
            assert_eq!(state.value(ctx), Some(7));
        });
    }

    #[test]
    fn list_state_adds_updates_and_clears() {
        on_both_backends(1u32, |ctx| {
            let list = ListState::<String>::new("list");
            assert!(list.get(ctx).is_empty());
            list.add(ctx, "x".into());
            list.add_all(ctx, ["y".to_string(), "z".to_string()]);
            list.add_all(ctx, Vec::new());
            assert_eq!(list.get(ctx), vec!["x", "y", "z"]);
            ctx.key = 2;
            assert!(list.get(ctx).is_empty());
            list.add_all(ctx, Vec::new());
            list.update(ctx, vec!["only".into()]);
            assert_eq!(list.get(ctx), vec!["only"]);
            list.update(ctx, Vec::new());
            assert!(list.get(ctx).is_empty());
            ctx.key = 1;
            list.clear(ctx);
            assert!(list.get(ctx).is_empty());
            // Nothing empty is left behind.
            assert!(
                ctx.store
                    .snapshot(0)
                    .and_then(|p| p.complete())
                    .expect("snapshot")
                    .entries
                    .is_empty()
            );
        });
    }

    #[test]
    fn map_state_puts_gets_removes_and_iterates() {
        on_both_backends(1u32, |ctx| {
            let map = MapState::<u8, String>::new("map");
            assert!(map.is_empty(ctx));
            map.put(ctx, 3, "three".into());
            map.put_all(ctx, [(1, "one".to_string()), (2, "two".to_string())]);
            map.put(ctx, 3, "THREE".into());
            assert_eq!(map.get(ctx, &3), Some("THREE".to_string()));
            assert_eq!(map.get(ctx, &4), None);
            assert!(map.contains(ctx, &1));
            assert!(!map.contains(ctx, &9));
            assert_eq!(map.keys(ctx), vec![1, 2, 3]);
            assert_eq!(map.values(ctx), vec!["one", "two", "THREE"]);
            map.remove(ctx, &2);
            map.remove(ctx, &9);
            assert_eq!(
                map.entries(ctx),
                vec![(1, "one".to_string()), (3, "THREE".to_string())]
            );
            ctx.key = 2;
            assert!(map.is_empty(ctx));
            map.put(ctx, 1, "other".into());
            map.remove(ctx, &1);
            assert!(map.is_empty(ctx));
            ctx.key = 1;
            assert!(!map.is_empty(ctx));
            map.clear(ctx);
            assert!(map.is_empty(ctx));
            assert!(
                ctx.store
                    .snapshot(0)
                    .and_then(|p| p.complete())
                    .expect("snapshot")
                    .entries
                    .is_empty()
            );
        });
    }

    /// Handle tables are hash maps: the order keys were written in must not reach a snapshot
    /// or a key listing, on either backend (LMDB with a 16-entry cache, so most keys go
    /// through write-back), and both backends write the same bytes.
    #[test]
    fn write_order_never_reaches_snapshots_or_key_listings() {
        let dir = tempfile::tempdir().expect("temp dir");
        let counts = MapState::<i64, u64>::new("counts");
        let last = ValueState::<u64>::new("last");
        let keys = 300u64;
        let orders: [Vec<u64>; 3] = [
            (0..keys).collect(),
            (0..keys).rev().collect(),
            (0..keys).map(|i| i * 7919 % keys).collect(),
        ];
        let mut runs = Vec::new();
        for (o, order) in orders.iter().enumerate() {
            for mut ctx in [
                Ctx::memory(0u64),
                Ctx::lmdb(0u64, &dir.path().join(format!("store-{o}")), 16),
            ] {
                for &key in order {
                    ctx.key = key;
                    counts.put(&mut ctx, -(key as i64 % 3), key);
                    counts.put(&mut ctx, key as i64 % 5, key * 2);
                    last.update(&mut ctx, key);
                }
                let listed = ctx.store.keys(&counts, 0).expect("keys");
                assert_eq!(listed.len() as u64, keys);
                assert!(ctx.errors.is_empty(), "{:?}", ctx.errors);
                runs.push((listed, snapshot(&mut ctx, 0)));
            }
        }
        for run in &runs[1..] {
            assert_eq!(run, &runs[0]);
        }
    }

    /// A context that does not lend its key and store at once gets the default, which clones
    /// the key: the handles behave the same through it.
    #[test]
    fn a_context_that_only_names_its_key_works_the_same() {
        struct Plain {
            key: String,
            store: KeyedStateStore<String>,
            errors: Vec<StateError>,
        }
        impl KeyedStateAccess<String> for Plain {
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
        let mut plain = Plain {
            key: "a".into(),
            store: KeyedStateStore::default(),
            errors: Vec::new(),
        };
        let mut lending = Ctx::memory("a".to_string());
        let map = MapState::<u8, u32>::new("map");
        for (i, key) in ["a", "b", "a", "c", "b", "a"].into_iter().enumerate() {
            plain.key = key.into();
            lending.key = key.into();
            let i = i as u32;
            map.put(&mut plain, (i % 3) as u8, i);
            map.put(&mut lending, (i % 3) as u8, i);
            map.remove(&mut plain, &((i + 1) % 3).try_into().expect("small"));
            map.remove(&mut lending, &((i + 1) % 3).try_into().expect("small"));
            assert_eq!(map.entries(&mut plain), map.entries(&mut lending));
        }
        assert!(plain.errors.is_empty() && lending.errors.is_empty());
        let snapshot_of = |store: &mut KeyedStateStore<String>| {
            store
                .snapshot(0)
                .and_then(|p| p.complete())
                .expect("snapshot")
        };
        assert_eq!(
            snapshot_of(&mut plain.store),
            snapshot_of(&mut lending.store)
        );
    }

    #[test]
    fn reducing_state_reduces_per_key() {
        on_both_backends(1u32, |ctx| {
            let sum = ReducingState::new("sum", |a: i64, b: i64| a + b);
            assert_eq!(sum.get(ctx), None);
            sum.add(ctx, 2);
            sum.add(ctx, 5);
            ctx.key = 2;
            sum.add(ctx, 100);
            ctx.key = 1;
            assert_eq!(sum.get(ctx), Some(7));
            sum.clone().clear(ctx);
            assert_eq!(sum.get(ctx), None);
            ctx.key = 2;
            assert_eq!(sum.get(ctx), Some(100));
        });
    }

    #[derive(Clone)]
    struct Average;
    crate::api::operator::impl_plain_operator!(Average);

    impl AggregateFunction<f64> for Average {
        type Acc = (f64, u64);
        type Out = f64;
        fn create_accumulator(&mut self) -> (f64, u64) {
            (0.0, 0)
        }
        fn add(&mut self, value: f64, (sum, count): (f64, u64)) -> (f64, u64) {
            (sum + value, count + 1)
        }
        fn get_result(&mut self, (sum, count): &(f64, u64)) -> f64 {
            sum / *count as f64
        }
        fn merge(&mut self, a: (f64, u64), b: (f64, u64)) -> (f64, u64) {
            (a.0 + b.0, a.1 + b.1)
        }
    }

    #[test]
    fn aggregating_state_aggregates_per_key() {
        on_both_backends(1u32, |ctx| {
            let mut average = AggregatingState::new("avg", Average);
            assert_eq!(average.get(ctx), None);
            average.add(ctx, 1.0);
            average.add(ctx, 3.0);
            ctx.key = 2;
            average.add(ctx, 10.0);
            ctx.key = 1;
            assert_eq!(average.get(ctx), Some(2.0));
            let mut copy = average.clone();
            copy.add(ctx, 5.0);
            assert_eq!(average.get(ctx), Some(3.0));
            average.clear(ctx);
            assert_eq!(average.get(ctx), None);
            ctx.key = 2;
            assert_eq!(average.get(ctx), Some(10.0));
        });
    }

    #[test]
    fn many_keys_and_states_survive_write_back_and_eviction() {
        on_both_backends(0u64, |ctx| {
            let value = ValueState::<u64>::new("v");
            let list = ListState::<u64>::new("l");
            let map = MapState::<u64, u64>::new("m");
            for key in 0..200 {
                ctx.key = key;
                value.update(ctx, key);
                list.add(ctx, key);
                list.add(ctx, key + 1);
                map.put(ctx, key % 3, key);
            }
            for key in (0..200).rev() {
                ctx.key = key;
                assert_eq!(value.value(ctx), Some(key));
                assert_eq!(list.get(ctx), vec![key, key + 1]);
                assert_eq!(map.entries(ctx), vec![(key % 3, key)]);
            }
            let snapshot = snapshot(ctx, 0);
            assert_eq!(snapshot.entries.len(), 600);
        });
    }

    #[test]
    fn a_name_with_another_type_or_kind_is_an_error() {
        let mut ctx = Ctx::memory("a".to_string());
        ValueState::<i64>::new("x").update(&mut ctx, 1);
        assert_eq!(ValueState::<String>::new("x").value(&mut ctx), None);
        assert!(ListState::<i64>::new("x").get(&mut ctx).is_empty());
        assert_eq!(
            ctx.take_errors(),
            vec![
                StateError::TypeMismatch {
                    name: "x".into(),
                    registered: "i64".into(),
                    requested: "alloc::string::String".into(),
                },
                StateError::TypeMismatch {
                    name: "x".into(),
                    registered: "i64".into(),
                    requested: "ListState<i64>".into(),
                },
            ]
        );
        assert_eq!(
            ctx.store.value_table::<i64>("x").err(),
            Some(StateError::TypeMismatch {
                name: "x".into(),
                registered: "i64".into(),
                requested: "ValueTable<i64>".into(),
            })
        );
        // The state itself is untouched.
        assert_eq!(ValueState::<i64>::new("x").value(&mut ctx), Some(1));
        assert_eq!(
            StateError::TypeMismatch {
                name: "slot".into(),
                registered: "u32".into(),
                requested: "alloc::string::String".into()
            }
            .to_string(),
            "state 'slot' holds u32, not alloc::string::String"
        );
    }

    #[test]
    fn a_value_expires_after_its_ttl() {
        on_both_backends("k".to_string(), |ctx| {
            let state = ValueState::<u32>::new("v").with_ttl(StateTtlConfig::new(100));
            ctx.now = 1_000;
            state.update(ctx, 1);
            ctx.now = 1_099;
            assert_eq!(state.value(ctx), Some(1));
            ctx.now = 1_100;
            assert_eq!(state.value(ctx), None);
            // A write starts a new life.
            state.update(ctx, 2);
            ctx.now = 1_150;
            assert_eq!(state.value(ctx), Some(2));
        });
    }

    #[test]
    fn on_read_and_write_extends_the_ttl_on_read() {
        on_both_backends("k".to_string(), |ctx| {
            let ttl = StateTtlConfig::new(100).update_on_read_and_write();
            assert_eq!(ttl.update_type, TtlUpdateType::OnReadAndWrite);
            let state = ValueState::<u32>::new("v").with_ttl(ttl);
            state.update(ctx, 1);
            ctx.now = 60;
            assert_eq!(state.value(ctx), Some(1));
            ctx.now = 150;
            assert_eq!(state.value(ctx), Some(1), "the read at 60 extended it");
            ctx.now = 250;
            assert_eq!(state.value(ctx), None);
        });
    }

    #[test]
    fn on_create_and_write_does_not_extend_on_read() {
        on_both_backends("k".to_string(), |ctx| {
            let ttl = StateTtlConfig::new(100)
                .update_on_read_and_write()
                .update_on_create_and_write();
            let state = ValueState::<u32>::new("v").with_ttl(ttl);
            state.update(ctx, 1);
            ctx.now = 60;
            assert_eq!(state.value(ctx), Some(1));
            ctx.now = 150;
            assert_eq!(state.value(ctx), None);
        });
    }

    #[test]
    fn lists_expire_per_element_and_maps_per_entry() {
        on_both_backends(1u32, |ctx| {
            let ttl = StateTtlConfig::new(100);
            let list = ListState::<u8>::new("l").with_ttl(ttl);
            let map = MapState::<u8, u8>::new("m").with_ttl(ttl);
            list.add(ctx, 1);
            map.put(ctx, 1, 10);
            ctx.now = 50;
            list.add(ctx, 2);
            map.put(ctx, 2, 20);
            ctx.now = 100;
            assert_eq!(list.get(ctx), vec![2]);
            assert_eq!(map.get(ctx, &1), None);
            assert!(!map.contains(ctx, &1));
            assert_eq!(map.entries(ctx), vec![(2, 20)]);
            ctx.now = 150;
            assert!(list.get(ctx).is_empty());
            assert!(map.is_empty(ctx));
        });
    }

    #[test]
    fn reducing_and_aggregating_state_expire() {
        on_both_backends(1u32, |ctx| {
            let ttl = StateTtlConfig::new(100);
            let sum = ReducingState::new("sum", |a: u32, b: u32| a + b).with_ttl(ttl);
            let mut average = AggregatingState::new("avg", Average).with_ttl(ttl);
            sum.add(ctx, 1);
            average.add(ctx, 4.0);
            ctx.now = 100;
            // The expired value is not reduced into: the sum starts again.
            sum.add(ctx, 2);
            assert_eq!(sum.get(ctx), Some(2));
            assert_eq!(average.get(ctx), None);
        });
    }

    #[test]
    fn expired_values_are_left_out_of_snapshots() {
        on_both_backends("a".to_string(), |ctx| {
            let ttl = StateTtlConfig::new(100);
            let value = ValueState::<u32>::new("v").with_ttl(ttl);
            let list = ListState::<u32>::new("l").with_ttl(ttl);
            let map = MapState::<u32, u32>::new("m").with_ttl(ttl);
            let plain = ValueState::<u32>::new("plain");
            value.update(ctx, 1);
            list.add(ctx, 1);
            map.put(ctx, 1, 1);
            plain.update(ctx, 1);
            ctx.now = 50;
            ctx.key = "b".into();
            value.update(ctx, 2);
            list.add(ctx, 2);
            ctx.key = "a".into();
            list.add(ctx, 3);
            map.put(ctx, 2, 2);

            let at_120 = snapshot(ctx, 120);
            assert_eq!(snapshot_keys(&at_120, "v"), vec!["b"]);
            assert_eq!(snapshot_keys(&at_120, "l"), vec!["a", "b"]);
            assert_eq!(snapshot_keys(&at_120, "m"), vec!["a"]);
            assert_eq!(snapshot_keys(&at_120, "plain"), vec!["a"]);
            // Per element: key a's list keeps only the element written at 50.
            let l = at_120.state_index("l").expect("l");
            let a_list = at_120
                .entries
                .iter()
                .find(|e| e.state == l && e.key == postcard::to_allocvec("a").expect("encodes"))
                .expect("a's list");
            let decoded: Vec<TtlValue<u32>> = postcard::from_bytes(&a_list.value).expect("decodes");
            assert_eq!(decoded, vec![TtlValue::new(3, Some(50))]);
            // The live state itself is unchanged by the snapshot.
            let at_0 = snapshot(ctx, 0);
            assert_eq!(snapshot_keys(&at_0, "v"), vec!["a", "b"]);
            let at_200 = snapshot(ctx, 200);
            assert!(snapshot_keys(&at_200, "v").is_empty());
            assert_eq!(snapshot_keys(&at_200, "plain"), vec!["a"]);
        });
    }

    #[test]
    fn reading_an_expired_value_removes_it() {
        on_both_backends("a".to_string(), |ctx| {
            let value = ValueState::<u32>::new("v").with_ttl(StateTtlConfig::new(100));
            value.update(ctx, 1);
            ctx.now = 100;
            assert_eq!(value.value(ctx), None);
            // A snapshot "in the past" would still see it, had the read not removed it.
            assert!(snapshot(ctx, 0).entries.is_empty());
        });
    }
}
