use eichhorn::StableHash;

struct Opaque;

#[derive(StableHash)]
struct Key {
    id: u64,
    payload: Opaque,
}

#[derive(StableHash)]
enum Event {
    Tick,
    Data(u32, f64),
}

fn main() {}
