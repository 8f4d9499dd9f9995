// Using an operator as a function kind it does not implement names the missing trait.
use eichhorn::prelude::*;

#[operator]
struct Doubler {
    factor: u64,
}

fn main() {
    let env = StreamEnv::new();
    let _ = env.from_collection(vec![1u64, 2, 3]).map_function(Doubler::new(2));
}
