//! Runtime tests that `#[derive(StableHash)]` feeds exactly the documented bytes.
//!
//! Each test compares a derived hash with a hand-written feed of the same values (mostly tuples,
//! whose impl feeds the elements in order), so a change to the derive's byte feed, which would
//! break every savepoint, fails here.

use eichhorn::{StableHash, StableHasher};
use std::marker::PhantomData;

/// The hash of a hand-written feed.
fn feed(f: impl FnOnce(&mut StableHasher)) -> u64 {
    let mut hasher = StableHasher::new();
    f(&mut hasher);
    hasher.finish()
}

#[derive(StableHash)]
struct Named {
    a: u32,
    b: String,
}

#[derive(StableHash)]
struct Tuple(u32, String);

#[derive(StableHash)]
struct Unit;

#[test]
fn named_struct_feeds_fields_in_declaration_order() {
    let key = Named {
        a: 7,
        b: "sensor".to_string(),
    };
    assert_eq!(
        key.stable_hash_value(),
        (7u32, "sensor".to_string()).stable_hash_value()
    );
    assert_ne!(
        key.stable_hash_value(),
        ("sensor".to_string(), 7u32).stable_hash_value()
    );
}

#[test]
fn tuple_struct_feeds_fields_in_order() {
    let key = Tuple(7, "sensor".to_string());
    assert_eq!(
        key.stable_hash_value(),
        (7u32, "sensor".to_string()).stable_hash_value()
    );
}

#[test]
fn unit_struct_feeds_nothing() {
    assert_eq!(Unit.stable_hash_value(), ().stable_hash_value());
    assert_eq!(Unit.stable_hash_value(), StableHasher::new().finish());
}

#[derive(StableHash)]
enum Shape {
    Empty,
    Circle(u32),
    Rect { w: u32, h: u32 },
}

#[test]
fn enum_feeds_variant_index_then_fields() {
    assert_eq!(Shape::Empty.stable_hash_value(), 0u64.stable_hash_value());
    assert_eq!(
        Shape::Circle(5).stable_hash_value(),
        (1u64, 5u32).stable_hash_value()
    );
    assert_eq!(
        Shape::Rect { w: 3, h: 4 }.stable_hash_value(),
        (2u64, 3u32, 4u32).stable_hash_value()
    );
}

#[test]
fn enum_index_is_declaration_order_not_discriminant() {
    #[derive(StableHash)]
    #[allow(dead_code)] // Only one variant is constructed.
    enum Level {
        Low = 10,
        High = 3,
    }
    assert_eq!(Level::High.stable_hash_value(), 1u64.stable_hash_value());
}

#[test]
fn variant_index_distinguishes_equal_fields() {
    #[derive(StableHash)]
    enum Side {
        Left(u32),
        Right(u32),
    }
    assert_ne!(
        Side::Left(1).stable_hash_value(),
        Side::Right(1).stable_hash_value()
    );
}

#[derive(StableHash)]
struct Cached {
    id: u64,
    #[stable_hash(skip)]
    label: Option<String>,
    name: String,
}

#[test]
fn skipped_field_is_left_out() {
    let a = Cached {
        id: 1,
        label: None,
        name: "x".to_string(),
    };
    let b = Cached {
        id: 1,
        label: Some("cached".to_string()),
        name: "x".to_string(),
    };
    assert_ne!(a.label, b.label);
    assert_eq!(a.stable_hash_value(), b.stable_hash_value());
    assert_eq!(
        a.stable_hash_value(),
        (1u64, "x".to_string()).stable_hash_value()
    );
}

#[test]
fn skipped_tuple_field_is_left_out() {
    #[derive(StableHash)]
    struct Pair(#[stable_hash(skip)] u8, u32);
    let pair = Pair(9, 4);
    assert_eq!(pair.0, 9);
    assert_eq!(pair.stable_hash_value(), (4u32,).stable_hash_value());
}

#[derive(StableHash)]
enum Event {
    Key(u32),
    #[stable_hash(skip)]
    Tick,
    Move {
        #[stable_hash(skip)]
        at: u64,
        to: u32,
    },
}

#[test]
fn skipped_variant_feeds_nothing_and_keeps_later_indices() {
    assert_eq!(Event::Tick.stable_hash_value(), ().stable_hash_value());
    assert_eq!(
        Event::Key(3).stable_hash_value(),
        (0u64, 3u32).stable_hash_value()
    );
    // `Move` is still variant 2: skipping `Tick` does not renumber it.
    let moved = Event::Move { at: 99, to: 5 };
    assert!(matches!(moved, Event::Move { at: 99, .. }));
    assert_eq!(moved.stable_hash_value(), (2u64, 5u32).stable_hash_value());
}

#[derive(StableHash)]
struct Generic<T, U: Clone>
where
    U: Default,
{
    key: T,
    extra: U,
}

#[test]
fn generic_struct_hashes_its_fields() {
    let key = Generic {
        key: "k".to_string(),
        extra: 3u8,
    };
    assert_eq!(
        key.stable_hash_value(),
        ("k".to_string(), 3u8).stable_hash_value()
    );
}

#[derive(StableHash)]
struct Borrowed<'a, T: ?Sized, const N: usize> {
    items: [u16; N],
    rest: &'a T,
    #[stable_hash(skip)]
    marker: PhantomData<T>,
}

#[test]
fn lifetimes_const_generics_and_unsized_params_work() {
    let key: Borrowed<'_, str, 2> = Borrowed {
        items: [1, 2],
        rest: "tail",
        marker: PhantomData,
    };
    assert_eq!(
        key.stable_hash_value(),
        ([1u16, 2u16], "tail").stable_hash_value()
    );
}

#[derive(StableHash)]
enum GenericEnum<T> {
    None,
    Some(T),
}

#[test]
fn generic_enum_matches_option() {
    assert_eq!(
        GenericEnum::<u32>::None.stable_hash_value(),
        None::<u32>.stable_hash_value()
    );
    assert_eq!(
        GenericEnum::Some(8u32).stable_hash_value(),
        Some(8u32).stable_hash_value()
    );
}

#[test]
fn nested_derived_types_feed_recursively() {
    #[derive(StableHash)]
    struct Outer {
        inner: Named,
        shape: Shape,
    }
    let outer = Outer {
        inner: Named {
            a: 1,
            b: "b".to_string(),
        },
        shape: Shape::Circle(2),
    };
    let expected = feed(|h| {
        h.write_u64(1);
        h.write_bytes(b"b");
        h.write_u64(1);
        h.write_u64(2);
    });
    assert_eq!(outer.stable_hash_value(), expected);
}

#[test]
fn derived_feed_is_the_documented_raw_words() {
    let expected = feed(|h| {
        h.write_u64(7);
        h.write_bytes(b"sensor");
    });
    let key = Named {
        a: 7,
        b: "sensor".to_string(),
    };
    assert_eq!(key.stable_hash_value(), expected);
}

#[test]
fn empty_enum_derive_compiles() {
    #[derive(StableHash)]
    enum Never {}
    fn assert_impl<T: StableHash>() {}
    assert_impl::<Never>();
}
