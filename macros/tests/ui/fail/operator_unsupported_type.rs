// A #[state] field must be keyed state; the error is on the field's type.
use eichhorn::prelude::*;

#[operator]
struct Alert {
    #[state]
    history: Vec<f64>,
    threshold: f64,
}

fn main() {
    let _ = Alert::new(1.0);
}
