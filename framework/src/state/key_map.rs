//! The map a typed state is stored in ([`KeyMap`]): an `FxHashMap` (a fixed-seed hasher, never
//! std's `RandomState`) for handles and the runtime's value tables alike; the memory backend's
//! tables and LMDB's caches are both one. Nothing iterates one where the order could reach an
//! output: snapshots and key listings sort.

use std::hash::Hash;

use rustc_hash::FxHashMap;

/// A map from keys to values: the storage of one typed state (or of its LMDB cache).
pub(crate) trait KeyMap<K, V>: Default + Send + 'static {
    /// The value of `key`.
    fn get(&self, key: &K) -> Option<&V>;
    /// The value of `key`, mutably.
    fn get_mut(&mut self, key: &K) -> Option<&mut V>;
    /// Sets the value of `key`, returning the old one.
    fn insert(&mut self, key: K, value: V) -> Option<V>;
    /// Removes `key`, returning its value.
    fn remove(&mut self, key: &K) -> Option<V>;
    /// The value of `key`, inserted with `default` if absent (one lookup).
    fn get_or_insert_with(&mut self, key: K, default: impl FnOnce() -> V) -> &mut V;
    /// The number of keys.
    fn len(&self) -> usize;
    /// Removes every key.
    fn clear(&mut self);
    /// Calls `f` for every entry, stopping at the first error (in the map's order).
    fn try_for_each<E>(&self, f: impl FnMut(&K, &V) -> Result<(), E>) -> Result<(), E>;
    /// Calls `f` for every entry, mutably.
    fn for_each_mut(&mut self, f: impl FnMut(&K, &mut V));
}

impl<K: Hash + Eq + Send + 'static, V: Send + 'static> KeyMap<K, V> for FxHashMap<K, V> {
    #[inline]
    fn get(&self, key: &K) -> Option<&V> {
        Self::get(self, key)
    }
    #[inline]
    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        Self::get_mut(self, key)
    }
    #[inline]
    fn insert(&mut self, key: K, value: V) -> Option<V> {
        Self::insert(self, key, value)
    }
    #[inline]
    fn remove(&mut self, key: &K) -> Option<V> {
        Self::remove(self, key)
    }
    #[inline]
    fn get_or_insert_with(&mut self, key: K, default: impl FnOnce() -> V) -> &mut V {
        self.entry(key).or_insert_with(default)
    }
    fn len(&self) -> usize {
        Self::len(self)
    }
    fn clear(&mut self) {
        Self::clear(self);
    }
    // The order is the hasher's (fixed seed, so the same in every run); callers sort.
    fn try_for_each<E>(&self, mut f: impl FnMut(&K, &V) -> Result<(), E>) -> Result<(), E> {
        self.iter().try_for_each(|(k, v)| f(k, v))
    }
    fn for_each_mut(&mut self, mut f: impl FnMut(&K, &mut V)) {
        self.iter_mut().for_each(|(k, v)| f(k, v));
    }
}
