// Every mistake in one input is reported in one build, each at its own token.
use eichhorn::StableHash;

#[derive(StableHash)]
#[stable_hash(skip)]
enum Event {
    #[stable_hash(default)]
    Tick,
    Key(#[stable_hash(skip, skip)] u64),
    Move {
        #[stable_hash]
        to: u32,
        #[stable_hash(with(path::to::hash))]
        from: u32,
    },
}

fn main() {}
