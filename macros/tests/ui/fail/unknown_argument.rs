use eichhorn::StableHash;

#[derive(StableHash)]
struct Key {
    id: u64,
    #[stable_hash(rename = "label")]
    label: String,
}

fn main() {}
