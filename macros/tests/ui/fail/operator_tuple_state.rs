// State fields need names.
use eichhorn::prelude::*;

#[operator]
struct Alert(#[state] ValueState<f64>, f64);

fn main() {}
