// #[operator] goes on structs.
use eichhorn::prelude::*;

#[operator]
enum Alert {
    High,
    Low,
}

fn main() {}
