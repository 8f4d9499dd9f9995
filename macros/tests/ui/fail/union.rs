use eichhorn::StableHash;

#[derive(StableHash)]
union Bits {
    int: u32,
    float: f32,
}

// The fallback impl keeps this from adding a "`StableHash` is not implemented" error.
fn assert_stable_hash<T: StableHash>() {}

fn main() {
    assert_stable_hash::<Bits>();
}
