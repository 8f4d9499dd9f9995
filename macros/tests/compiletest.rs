//! Compile tests for `#[derive(StableHash)]`: inputs that must compile, and inputs that must fail
//! with exactly the error in the matching `.stderr` file.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p eichhorn-macros --test
//! compiletest` and review them: each error must point at the offending token.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
