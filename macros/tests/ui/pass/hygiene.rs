// The expansion uses only fully qualified paths, so local items that shadow the trait, the hasher,
// `core` or `Self`-like names change nothing, and it triggers no warnings in the user's crate.
#![deny(warnings, unused_qualifications, unused_variables)]
#![no_implicit_prelude]

extern crate eichhorn;
extern crate std;

mod shadowing {
    pub trait StableHash {}
    pub struct StableHasher;
    pub mod core {}
}

#[allow(unused_imports)]
use shadowing::{StableHash, StableHasher, core};

#[derive(eichhorn::StableHash)]
pub struct Named {
    pub state: u32,
    pub __field0: u32,
}

#[derive(eichhorn::StableHash)]
pub enum Mixed {
    Unit,
    Tuple(u32, u64),
    Fields { state: u32, __field0: u32 },
}

// Nothing is fed for these: the hasher parameter must not trigger `unused_variables`.
#[derive(eichhorn::StableHash)]
pub struct Empty;

#[derive(eichhorn::StableHash)]
pub struct AllSkipped {
    #[stable_hash(skip)]
    pub cache: u32,
}

#[derive(eichhorn::StableHash)]
pub enum Never {}

#[derive(eichhorn::StableHash)]
pub enum OnlySkipped {
    #[stable_hash(skip)]
    Gone(u32),
}

#[deprecated]
#[derive(eichhorn::StableHash)]
pub struct Old;

fn main() {
    let _ = eichhorn::StableHash::stable_hash_value(&Named { state: 1, __field0: 2 });
    let _ = eichhorn::StableHash::stable_hash_value(&Mixed::Unit);
    let _ = eichhorn::StableHash::stable_hash_value(&Mixed::Tuple(1, 2));
    let _ = eichhorn::StableHash::stable_hash_value(&Mixed::Fields { state: 1, __field0: 2 });
    let _ = eichhorn::StableHash::stable_hash_value(&Empty);
    let _ = eichhorn::StableHash::stable_hash_value(&AllSkipped { cache: 1 });
    let _ = eichhorn::StableHash::stable_hash_value(&OnlySkipped::Gone(1));
    let _ = use_macro_keys();
}

// Field types and names written outside the macro_rules that declares the key keep working: the
// expansion resolves its own identifiers at the derive's call site.
macro_rules! key_type {
    ($name:ident, $field:ident: $ty:ty) => {
        #[derive(eichhorn::StableHash)]
        pub struct $name {
            pub $field: $ty,
        }

        #[derive(eichhorn::StableHash)]
        pub enum Wrapped {
            One($ty),
        }
    };
}

key_type!(FromMacro, state: u64);

pub fn use_macro_keys() -> u64 {
    eichhorn::StableHash::stable_hash_value(&FromMacro { state: 1 })
        ^ eichhorn::StableHash::stable_hash_value(&Wrapped::One(2))
}
