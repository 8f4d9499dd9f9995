// Reducing and aggregating state need their functions.
use eichhorn::prelude::*;

#[operator]
struct Totals {
    #[state]
    sum: ReducingState<i64>,
    #[state]
    mean: AggregatingState<f64, (f64, u64), f64>,
}

fn main() {}
