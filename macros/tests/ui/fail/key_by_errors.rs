// KeyBy needs #[key] fields, plain ones, on a struct.
use eichhorn::prelude::*;

#[derive(KeyBy)]
struct NoKey {
    sensor_id: String,
}

#[derive(KeyBy)]
#[key]
struct OnType {
    #[key(sensor)]
    sensor_id: String,
}

#[derive(KeyBy)]
enum Event {
    A,
}

fn main() {}
