//! A key hash that is the same on every node, in every run and in every version.
//!
//! Keyed streams route a record to the subtask that owns its key group, and a savepoint restores
//! a key group's state to whichever subtask owns it next. Both only work if every process computes
//! the same hash for the same key, forever. `std`'s `Hash` is fed to a randomly seeded hasher and
//! its byte feed is not promised to be stable across Rust versions, so keys implement
//! [`StableHash`] instead: a fixed, documented byte feed into a fixed algorithm ([`StableHasher`]).
//!
//! ## The algorithm (frozen: changing it breaks every savepoint)
//!
//! The hasher folds 64-bit little-endian words with `h = (rotl(h, 5) ^ w) * 0x517cc1b727220a95`
//! (FxHash's step) starting from `0x243f6a8885a308d3`, and finishes with the splitmix64 finalizer
//! so every input bit reaches every output bit. Byte strings are fed as their length followed by
//! 8-byte little-endian chunks (the last chunk zero-padded). Integers are widened to 64 bits
//! (`usize`/`isize` too, so 32- and 64-bit nodes agree); 128-bit integers are two words, low first.
//!
//! Derive it for your own key types with `#[derive(StableHash)]`, which feeds the fields in order.

/// A type whose hash is stable across processes, runs and versions.
///
/// # Examples
///
/// ```
/// use eichhorn::{StableHash, StableHasher};
///
/// let a = ("sensor-1".to_string(), 7u32).stable_hash_value();
/// let b = ("sensor-1".to_string(), 7u32).stable_hash_value();
/// assert_eq!(a, b);
/// // The value is frozen: it is part of the savepoint format.
/// let mut h = StableHasher::new();
/// 42u64.stable_hash(&mut h);
/// assert_eq!(h.finish(), 42u64.stable_hash_value());
/// ```
pub trait StableHash {
    /// Feeds this value into `state`.
    fn stable_hash(&self, state: &mut StableHasher);

    /// Hashes this value alone with a fresh [`StableHasher`].
    fn stable_hash_value(&self) -> u64 {
        let mut hasher = StableHasher::new();
        self.stable_hash(&mut hasher);
        hasher.finish()
    }
}

/// The fixed hash function behind [`StableHash`]. See the module docs for the algorithm.
#[derive(Debug, Clone)]
pub struct StableHasher {
    state: u64,
}

const STABLE_HASH_SEED: u64 = 0x243f_6a88_85a3_08d3;
const STABLE_HASH_MULTIPLIER: u64 = 0x517c_c1b7_2722_0a95;

impl StableHasher {
    /// A hasher in its initial state.
    pub fn new() -> Self {
        Self {
            state: STABLE_HASH_SEED,
        }
    }

    /// Feeds one 64-bit word.
    #[inline]
    pub fn write_u64(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(STABLE_HASH_MULTIPLIER);
    }

    /// Feeds a byte string: its length, then its bytes in 8-byte little-endian chunks.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.write_u64(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    /// The hash of everything fed so far (the hasher can keep going).
    #[inline]
    pub fn finish(&self) -> u64 {
        splitmix64(self.state)
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// The splitmix64 finalizer: a bijective mix in which every input bit affects every output bit.
#[inline]
pub fn splitmix64(mut z: u64) -> u64 {
    z ^= z >> 30;
    z = z.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^= z >> 27;
    z = z.wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

macro_rules! stable_hash_widening {
    ($($t:ty => $via:ty),* $(,)?) => {$(
        impl StableHash for $t {
            #[inline]
            fn stable_hash(&self, state: &mut StableHasher) {
                // Sign-extend signed types so -1i8 and -1i64 agree; widen unsigned ones.
                state.write_u64(*self as $via as u64);
            }
        }
    )*};
}

stable_hash_widening!(
    u8 => u64, u16 => u64, u32 => u64, u64 => u64, usize => u64,
    i8 => i64, i16 => i64, i32 => i64, i64 => i64, isize => i64,
);

impl StableHash for u128 {
    fn stable_hash(&self, state: &mut StableHasher) {
        state.write_u64(*self as u64);
        state.write_u64((*self >> 64) as u64);
    }
}

impl StableHash for i128 {
    fn stable_hash(&self, state: &mut StableHasher) {
        (*self as u128).stable_hash(state);
    }
}

impl StableHash for bool {
    fn stable_hash(&self, state: &mut StableHasher) {
        state.write_u64(u64::from(*self));
    }
}

impl StableHash for char {
    fn stable_hash(&self, state: &mut StableHasher) {
        state.write_u64(u64::from(u32::from(*self)));
    }
}

impl StableHash for () {
    fn stable_hash(&self, _state: &mut StableHasher) {}
}

impl StableHash for str {
    fn stable_hash(&self, state: &mut StableHasher) {
        state.write_bytes(self.as_bytes());
    }
}

impl StableHash for String {
    fn stable_hash(&self, state: &mut StableHasher) {
        self.as_str().stable_hash(state);
    }
}

impl<T: StableHash> StableHash for [T] {
    fn stable_hash(&self, state: &mut StableHasher) {
        state.write_u64(self.len() as u64);
        for item in self {
            item.stable_hash(state);
        }
    }
}

impl<T: StableHash> StableHash for Vec<T> {
    fn stable_hash(&self, state: &mut StableHasher) {
        self.as_slice().stable_hash(state);
    }
}

impl<T: StableHash, const N: usize> StableHash for [T; N] {
    fn stable_hash(&self, state: &mut StableHasher) {
        self.as_slice().stable_hash(state);
    }
}

impl<T: StableHash> StableHash for Option<T> {
    fn stable_hash(&self, state: &mut StableHasher) {
        match self {
            None => state.write_u64(0),
            Some(value) => {
                state.write_u64(1);
                value.stable_hash(state);
            }
        }
    }
}

impl<T: StableHash + ?Sized> StableHash for &T {
    fn stable_hash(&self, state: &mut StableHasher) {
        (**self).stable_hash(state);
    }
}

impl<T: StableHash + ?Sized> StableHash for Box<T> {
    fn stable_hash(&self, state: &mut StableHasher) {
        (**self).stable_hash(state);
    }
}

impl<T: StableHash + ?Sized> StableHash for std::sync::Arc<T> {
    fn stable_hash(&self, state: &mut StableHasher) {
        (**self).stable_hash(state);
    }
}

macro_rules! stable_hash_tuple {
    ($($name:ident)+) => {
        impl<$($name: StableHash),+> StableHash for ($($name,)+) {
            #[allow(non_snake_case)]
            fn stable_hash(&self, state: &mut StableHasher) {
                let ($($name,)+) = self;
                $($name.stable_hash(state);)+
            }
        }
    };
}

stable_hash_tuple!(A);
stable_hash_tuple!(A B);
stable_hash_tuple!(A B C);
stable_hash_tuple!(A B C D);
stable_hash_tuple!(A B C D E);
stable_hash_tuple!(A B C D E F);

#[cfg(test)]
mod tests {
    use super::*;

    /// These values are part of the savepoint format. If this test fails, the hash changed and
    /// every savepoint taken before would restore keys into the wrong key groups.
    #[test]
    fn hash_values_are_frozen() {
        assert_eq!(0u64.stable_hash_value(), 0x3df1_0dc6_e422_66a2);
        assert_eq!(42u64.stable_hash_value(), 0xf466_04fb_1447_8386);
        assert_eq!("hello".stable_hash_value(), 0x40f2_15e0_3a71_a946);
        assert_eq!(("user", 7u32).stable_hash_value(), 0x4a21_3282_ce22_519d);
        assert_eq!(
            crate::state::key_group_for_key(&"hello".to_string(), 128).0,
            70
        );
    }

    #[test]
    fn widths_agree() {
        assert_eq!(5u8.stable_hash_value(), 5u64.stable_hash_value());
        assert_eq!((-1i8).stable_hash_value(), (-1i64).stable_hash_value());
        assert_eq!(7usize.stable_hash_value(), 7u64.stable_hash_value());
        assert_eq!(
            "abc".stable_hash_value(),
            String::from("abc").stable_hash_value()
        );
    }

    #[test]
    fn strings_with_shared_prefixes_differ() {
        assert_ne!("a".stable_hash_value(), "a\0".stable_hash_value());
        assert_ne!(
            "abcdefgh".stable_hash_value(),
            "abcdefgh\0".stable_hash_value()
        );
        assert_ne!(
            ("ab", "c").stable_hash_value(),
            ("a", "bc").stable_hash_value()
        );
    }
}
