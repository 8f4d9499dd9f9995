//! How keyed state encodes: keys through a [`KeyCodec`] captured where `K: Key` is known, values
//! as one postcard value with nothing left over ([`decode_exact`]), and the sort word of
//! encoded key bytes ([`key_word`]) that the memory backend's frozen tables and LMDB's key order
//! both sort by.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::key_group::{KeyGroup, key_group_for_key};
use crate::api::Key;

/// How a store encodes, decodes and places its keys, captured where `K: Key` is known (open,
/// restore, snapshot) so the access paths only need the weaker bounds the handles promise.
pub(crate) struct KeyCodec<K> {
    pub(crate) encode: fn(&K, Vec<u8>) -> Result<Vec<u8>, postcard::Error>,
    pub(crate) decode: fn(&[u8]) -> Result<K, String>,
    pub(crate) key_group: fn(&K, u32) -> KeyGroup,
}

impl<K> Clone for KeyCodec<K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for KeyCodec<K> {}

impl<K: Key> KeyCodec<K> {
    pub(crate) fn new() -> Self {
        Self {
            encode: encode_into::<K>,
            decode: decode_exact::<K>,
            key_group: key_group_for_key::<K>,
        }
    }
}

fn encode_into<T: Serialize>(value: &T, buf: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_extend(value, buf)
}

/// Decodes `bytes` as one postcard `T` with nothing left over.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
        Err(error) => Err(error.to_string()),
    }
}

/// The first eight bytes of `bytes` as a big-endian word, zero-padded: sorts as `bytes` do,
/// up to ties.
#[inline]
pub(crate) fn key_word(bytes: &[u8]) -> u64 {
    if let Some(word) = bytes.first_chunk::<8>() {
        return u64::from_be_bytes(*word);
    }
    let len = bytes.len();
    if let (Some(head), Some(tail)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        // 4 to 7 bytes: the head, then the tail's last `len - 4` bytes (two loads, overlapping).
        let head = u64::from(u32::from_be_bytes(*head)) << 32;
        let tail = u64::from(u32::from_be_bytes(*tail)) << (8 * (8 - len));
        return head | (tail & 0xffff_ffff);
    }
    bytes
        .iter()
        .zip((0..8u32).rev())
        .fold(0, |word, (&byte, shift)| {
            word | u64::from(byte) << (8 * shift)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_exact_rejects_garbage_and_trailing_bytes() {
        let bytes = postcard::to_allocvec(&7u32).expect("encodes");
        assert_eq!(decode_exact::<u32>(&bytes), Ok(7));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode_exact::<u32>(&longer),
            Err("1 trailing bytes".to_string())
        );
        assert!(decode_exact::<u32>(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_exact::<String>(&[5, b'a']).is_err());
    }
}
