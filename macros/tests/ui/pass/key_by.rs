// One #[key] field keys by it; several make a tuple; tuple structs and generics work.
use eichhorn::prelude::*;

#[derive(KeyBy)]
struct Reading {
    #[key]
    sensor_id: String,
    temperature: f64,
}

#[derive(KeyBy)]
struct Click<T: Clone> {
    #[key]
    site: String,
    payload: T,
    #[key]
    page: u32,
}

#[derive(KeyBy)]
struct Pair(#[key] u64, String);

fn main() {
    let reading = Reading { sensor_id: "s1".into(), temperature: 1.0 };
    assert_eq!(reading.key(), "s1");
    let click = Click { site: "a".into(), payload: (), page: 3 };
    assert_eq!(click.key(), ("a".to_string(), 3));
    assert_eq!(Pair(9, String::new()).key(), 9);
    let _ = (reading.temperature, click.payload, Pair(1, "x".into()).1);
}
