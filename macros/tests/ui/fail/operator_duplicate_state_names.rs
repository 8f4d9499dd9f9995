// Two fields may not register the same state name; the error is on the second name.
use eichhorn::prelude::*;

#[operator]
struct Alert {
    #[state(name = "last")]
    last_temperature: ValueState<f64>,
    #[state(name = "last")]
    last_humidity: ValueState<f64>,
}

fn main() {}
