// Generic keys: every type parameter gets a `StableHash` bound; user bounds, where clauses,
// lifetimes and const parameters are kept.
#![deny(warnings)]

use eichhorn::StableHash;
use std::fmt::Debug;

#[derive(StableHash)]
pub struct Pair<'a, K: Debug, V, const N: usize>
where
    V: Clone + 'a,
{
    pub key: &'a K,
    pub values: [V; N],
}

#[derive(StableHash)]
pub enum Either<L, R> {
    Left(L),
    Right { value: R },
}

#[derive(StableHash)]
pub struct Unsized<'a, T: ?Sized>(pub &'a T);

fn assert_stable_hash<T: StableHash + ?Sized>() {}

fn main() {
    assert_stable_hash::<Pair<'static, u32, String, 3>>();
    assert_stable_hash::<Either<u8, Vec<String>>>();
    assert_stable_hash::<Unsized<'static, str>>();
    let _ = Pair { key: &1u32, values: [2u8; 2] }.stable_hash_value();
    let _ = Either::<u8, u8>::Left(1).stable_hash_value();
    let _ = Either::<u8, u8>::Right { value: 1 }.stable_hash_value();
}
