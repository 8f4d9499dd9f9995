//! Putting a window's entries in key order, as firing needs: a watermark fires each window's
//! keys in key order (the generic path's timer order), so the fast paths sort the keys of every
//! window they fire, ten thousand of them per window in the benchmarks.
//!
//! ## Design
//!
//! Keys are mostly integers (ids), and integers sort much faster by radix than by comparison:
//! [`KeyOrder`] maps integer keys (`u8` to `u64`, `i8` to `i64`, `usize`, `isize`, by their
//! type id) to `u64` images that order like the keys, radix-sorts the images with their
//! positions (one pass per byte in which the keys differ), and moves the entries into that
//! order. Any other key type is sorted by comparison. Both give the same order, since the keys
//! of one sort are distinct.
//!
//! ## Invariants
//!
//! - The image of an integer key orders like the key: `a < b` iff `image(a) < image(b)`.

use std::any::Any;

/// Sorts entries by key, keeping its scratch vectors between sorts.
#[derive(Debug, Default)]
pub(super) struct KeyOrder {
    /// `(image of the key, position of the entry)`.
    images: Vec<(u64, u32)>,
    /// The other buffer of the radix passes.
    scratch: Vec<(u64, u32)>,
}

impl KeyOrder {
    /// Sorts `entries`, whose keys are distinct, by key.
    pub(super) fn sort<K: Ord + 'static, V>(&mut self, entries: &mut [(K, V)]) {
        if !self.radix_sort(entries) {
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
    }

    /// Sorts `entries` by radix if their keys are integers; returns whether it did.
    fn radix_sort<K: 'static, V>(&mut self, entries: &mut [(K, V)]) -> bool {
        let Some(first) = entries.first() else {
            return true;
        };
        if image(&first.0).is_none() || u32::try_from(entries.len()).is_err() {
            return false;
        }
        self.images.clear();
        // Every key has an image (they are all of the type of the first one), and every
        // position fits in `u32` (checked above).
        self.images.extend(
            entries
                .iter()
                .zip(0u32..)
                .map(|((key, _), position)| (image(key).unwrap_or(0), position)),
        );
        radix_sort(&mut self.images, &mut self.scratch);
        // Move the entries into the order of the images: `entries[rank]` is to receive the
        // entry now at `images[rank].1`, following each cycle of the permutation once.
        for start in 0..entries.len() {
            let mut at = start;
            loop {
                let from = self.images[at].1 as usize;
                self.images[at].1 = at as u32;
                if from == start {
                    break;
                }
                entries.swap(at, from);
                at = from;
            }
        }
        true
    }
}

/// The image of an integer key as a `u64` that orders like the key; `None` for other types.
#[inline]
fn image<K: 'static>(key: &K) -> Option<u64> {
    // Signed keys have their sign bit flipped, so that negative ones order first.
    const SIGN: u64 = 1 << 63;
    let key: &dyn Any = key;
    if let Some(&key) = key.downcast_ref::<u64>() {
        Some(key)
    } else if let Some(&key) = key.downcast_ref::<u32>() {
        Some(u64::from(key))
    } else if let Some(&key) = key.downcast_ref::<usize>() {
        u64::try_from(key).ok()
    } else if let Some(&key) = key.downcast_ref::<i64>() {
        Some(key.cast_unsigned() ^ SIGN)
    } else if let Some(&key) = key.downcast_ref::<i32>() {
        Some(i64::from(key).cast_unsigned() ^ SIGN)
    } else if let Some(&key) = key.downcast_ref::<isize>() {
        i64::try_from(key)
            .ok()
            .map(|key| key.cast_unsigned() ^ SIGN)
    } else if let Some(&key) = key.downcast_ref::<u16>() {
        Some(u64::from(key))
    } else if let Some(&key) = key.downcast_ref::<i16>() {
        Some(i64::from(key).cast_unsigned() ^ SIGN)
    } else if let Some(&key) = key.downcast_ref::<u8>() {
        Some(u64::from(key))
    } else if let Some(&key) = key.downcast_ref::<i8>() {
        Some(i64::from(key).cast_unsigned() ^ SIGN)
    } else {
        None
    }
}

/// Sorts `images` by their first field (least significant byte first, skipping the bytes in
/// which all of them agree), using `scratch` as the second buffer.
fn radix_sort(images: &mut Vec<(u64, u32)>, scratch: &mut Vec<(u64, u32)>) {
    let Some(&(first, _)) = images.first() else {
        return;
    };
    let differing = images
        .iter()
        .fold(0u64, |bits, &(image, _)| bits | (image ^ first));
    scratch.clear();
    scratch.resize(images.len(), (0, 0));
    for byte in 0..8 {
        let shift = 8 * byte;
        if (differing >> shift) & 0xff == 0 {
            continue;
        }
        let mut offsets = [0usize; 256];
        for &(image, _) in images.iter() {
            offsets[((image >> shift) & 0xff) as usize] += 1;
        }
        let mut start = 0;
        for offset in &mut offsets {
            let count = *offset;
            *offset = start;
            start += count;
        }
        for &entry in images.iter() {
            let digit = ((entry.0 >> shift) & 0xff) as usize;
            scratch[offsets[digit]] = entry;
            offsets[digit] += 1;
        }
        std::mem::swap(images, scratch);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Sorts `keys` (made distinct) with their positions as values, both ways.
    fn both<K: Ord + Clone + std::fmt::Debug + 'static>(mut keys: Vec<K>) {
        keys.sort();
        keys.dedup();
        // A scrambled order: reverse, then interleave.
        keys.reverse();
        let half = keys.len() / 2;
        let mut scrambled: Vec<(K, usize)> = Vec::new();
        for i in 0..half {
            scrambled.push((keys[i + half].clone(), i + half));
            scrambled.push((keys[i].clone(), i));
        }
        if keys.len() % 2 == 1 {
            scrambled.push((keys[keys.len() - 1].clone(), keys.len() - 1));
        }
        let mut expected = scrambled.clone();
        expected.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut order = KeyOrder::default();
        order.sort(&mut scrambled);
        assert_eq!(scrambled, expected);
        // Sorting again, with the scratch vectors in use, changes nothing.
        order.sort(&mut scrambled);
        assert_eq!(scrambled, expected);
    }

    #[test]
    fn images_order_like_the_keys() {
        let signed = [i64::MIN, -300, -1, 0, 1, 255, 256, i64::MAX];
        for pair in signed.windows(2) {
            assert!(image(&pair[0]) < image(&pair[1]), "{pair:?}");
        }
        assert!(image(&i8::MIN) < image(&-1i8) && image(&-1i8) < image(&0i8));
        assert!(image(&u64::MAX) > image(&(u64::MAX - 1)));
        assert_eq!(image(&"text"), None);
        assert_eq!(image(&(1u64, 2u64)), None);
    }

    #[test]
    fn empty_and_single_entries() {
        let mut order = KeyOrder::default();
        let mut empty: Vec<(u64, ())> = Vec::new();
        order.sort(&mut empty);
        let mut one = vec![(7i32, 'a')];
        order.sort(&mut one);
        assert_eq!(one, vec![(7, 'a')]);
    }

    proptest! {
        #[test]
        fn radix_order_is_the_comparison_order(
            wide in proptest::collection::vec(any::<u64>(), 0..300),
            signed in proptest::collection::vec(any::<i64>(), 0..300),
            small in proptest::collection::vec(-40i32..40, 0..100),
            bytes in proptest::collection::vec(any::<u8>(), 0..100),
            text in proptest::collection::vec("[a-c]{0,3}", 0..50),
        ) {
            both(wide);
            both(signed);
            both(small);
            both(bytes);
            both(text);
        }
    }
}
