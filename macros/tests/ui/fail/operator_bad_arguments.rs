// Every wrong argument is reported at once, each on its own token.
use eichhorn::prelude::*;

#[operator(uidd = "alert", new = "no")]
struct Alert {
    #[state(nme = "last")]
    last: ValueState<f64>,
    #[state(name = "count", name = "other")]
    count: ValueState<u64>,
    #[state(name = 7)]
    seen: ValueState<bool>,
    #[state(reduce = |a: i64, b: i64| a + b)]
    total: ValueState<i64>,
    #[state(name = "_timers")]
    reserved: ValueState<i64>,
    #[transient(default)]
    scratch: u64,
}

fn main() {}
