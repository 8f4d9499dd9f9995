// Keyed state marked as operator state and the reverse, and a field with two roles.
use eichhorn::prelude::*;

#[operator]
struct Mixed {
    #[operator_state]
    last: ValueState<f64>,
    #[state]
    offsets: OperatorList<u64>,
    #[state]
    #[transient]
    both: ValueState<u8>,
}

fn main() {}
