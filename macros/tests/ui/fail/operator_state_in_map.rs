// Keyed state in a function without a key is one error, on the impl.
use eichhorn::prelude::*;

#[operator]
struct Doubler {
    #[state]
    seen: ValueState<u64>,
}

impl MapFunction<u64> for Doubler {
    type Out = u64;
    fn map(&mut self, value: u64) -> u64 {
        value * 2
    }
}

fn main() {}
