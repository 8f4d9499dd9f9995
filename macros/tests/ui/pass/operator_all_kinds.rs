// Every field kind and option, generics, a unit struct and a tuple struct.
use eichhorn::prelude::*;
use eichhorn::state::StateFieldKind;

#[operator]
struct Sum;

impl AggregateFunction<f64> for Sum {
    type Acc = f64;
    type Out = f64;
    fn create_accumulator(&mut self) -> f64 {
        0.0
    }
    fn add(&mut self, value: f64, acc: f64) -> f64 {
        acc + value
    }
    fn get_result(&mut self, acc: &f64) -> f64 {
        *acc
    }
    fn merge(&mut self, a: f64, b: f64) -> f64 {
        a + b
    }
}

/// Uses every kind of state.
#[operator(uid = "everything")]
#[derive(Debug)]
pub struct Everything<T: Clone + Send + 'static> {
    #[state]
    value: ValueState<i64>,
    #[state(name = "recent", ttl = 60_000)]
    list: ListState<u8>,
    #[state(ttl = StateTtlConfig::new(1_000))]
    map: MapState<String, u64>,
    #[state(reduce = |a: i64, b: i64| a.max(b))]
    max: ReducingState<i64>,
    #[state(aggregate = Sum)]
    sum: AggregatingState<f64, f64, f64>,
    #[operator_state]
    offsets: OperatorList<u64>,
    #[operator_state(name = "all-offsets")]
    union: UnionList<u64>,
    #[operator_state]
    rules: MapStateDescriptor<String, f64>,
    #[transient]
    scratch: Vec<T>,
    label: T,
    threshold: f64,
}

#[operator(new = false)]
struct Custom {
    factor: u64,
}

impl Custom {
    fn new() -> Self {
        Self { factor: 2 }
    }
}

impl MapFunction<u64> for Custom {
    type Out = u64;
    fn map(&mut self, value: u64) -> u64 {
        value * self.factor
    }
}

#[operator]
#[derive(Clone, Copy)]
struct Pair(u8, u8);

fn main() {
    let everything = Everything::new("x".to_string(), 1.5);
    let schema = everything.state_schema();
    let kinds: Vec<(String, String, StateFieldKind, bool)> = schema
        .fields
        .iter()
        .map(|f| (f.field.clone(), f.state.clone(), f.kind, f.ttl))
        .collect();
    assert_eq!(kinds.len(), 8);
    assert_eq!(kinds[1], ("list".into(), "recent".into(), StateFieldKind::List, true));
    assert_eq!(schema.fields[0].type_text, "ValueState<i64>");
    assert_eq!(schema.fields[4].type_text, "AggregatingState<f64, f64, f64>");
    assert_eq!(kinds[6].1, "all-offsets");
    assert_eq!(kinds[7].2, StateFieldKind::Broadcast);
    assert_eq!(<Everything<String> as Operator>::default_uid(), Some("everything"));
    assert!(<Custom as Operator>::default_uid().is_some_and(|uid| uid.ends_with("::Custom")));
    assert_eq!(everything.threshold, 1.5);
    assert!(everything.scratch.is_empty());
    let _ = (everything.label.clone(), everything.clone());
    let _ = (Custom::new().factor, Sum::new(), Pair(1, 2).0);
}
