//! The job as data (issue 12, item 4): running the same job-building code twice gives the same
//! descriptor and fingerprint; parallelism, partitioning, uids and state schemas change it;
//! the descriptor round-trips through its encoding; and the job still runs from it.

use eichhorn::graph::{JobDescriptor, TaskManagerId};
use eichhorn::prelude::*;

#[operator(uid = "sums")]
#[derive(Debug, Clone)]
struct UnsignedSum {
    #[state]
    sum: ValueState<u64>,
}

impl KeyedProcessFunction for UnsignedSum {
    type Key = u64;
    type In = u64;
    type Out = (u64, u64);

    fn process_element(
        &mut self,
        value: u64,
        ctx: &mut KeyedContext<'_, '_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) {
        let sum = self.sum.value(ctx).unwrap_or(0) + value;
        self.sum.update(ctx, sum);
        out.collect((value % 7, sum));
    }
}

/// The same uid and name as [`UnsignedSum`], another state layout.
#[operator(uid = "sums")]
#[derive(Debug, Clone)]
struct SignedSum {
    #[state]
    sum: ValueState<i64>,
}

impl KeyedProcessFunction for SignedSum {
    type Key = u64;
    type In = u64;
    type Out = (u64, u64);

    fn process_element(
        &mut self,
        value: u64,
        ctx: &mut KeyedContext<'_, '_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) {
        let sum = self.sum.value(ctx).unwrap_or(0) + value as i64;
        self.sum.update(ctx, sum);
        out.collect((value % 7, sum as u64));
    }
}

/// What a variant of the job changes.
#[derive(Debug, Clone, Copy, Default)]
struct Variant {
    map_parallelism: Option<u32>,
    rescale: bool,
    map_uid: Option<&'static str>,
    signed: bool,
}

/// The job-building code every "process" runs.
fn build(variant: Variant) -> (StreamEnv, CollectSink<(u64, u64)>) {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let mut doubled = env
        .from_collection((0..100u64).collect::<Vec<_>>())
        .map(|x| x * 2);
    if let Some(p) = variant.map_parallelism {
        doubled = doubled.set_parallelism(p);
    }
    if let Some(uid) = variant.map_uid {
        doubled = doubled.uid(uid);
    }
    let doubled = if variant.rescale {
        doubled.rescale()
    } else {
        doubled.rebalance()
    };
    let keyed = doubled.filter(|x| x % 3 != 0).key_by(|x| x % 7);
    let summed = if variant.signed {
        keyed.process(SignedSum::new())
    } else {
        keyed.process(UnsignedSum::new())
    };
    let sink = summed.collect_sink();
    (env, sink)
}

fn descriptor(variant: Variant) -> JobDescriptor {
    build(variant)
        .0
        .job_descriptor("sums")
        .expect("a valid job")
}

fn fingerprint(variant: Variant) -> eichhorn::graph::JobFingerprint {
    descriptor(variant).fingerprint().expect("encodes")
}

#[test]
fn two_builds_of_the_same_job_agree() {
    let (first, second) = (
        descriptor(Variant::default()),
        descriptor(Variant::default()),
    );
    assert_eq!(first, second);
    assert_eq!(first.fingerprint().unwrap(), second.fingerprint().unwrap());
    assert_eq!(first.encode().unwrap(), second.encode().unwrap());
}

#[test]
fn parallelism_partitioning_uids_and_state_schemas_change_the_fingerprint() {
    let base = fingerprint(Variant::default());
    let variants = [
        (
            "parallelism",
            Variant {
                map_parallelism: Some(3),
                ..Variant::default()
            },
        ),
        (
            "partitioning",
            Variant {
                rescale: true,
                ..Variant::default()
            },
        ),
        (
            "uid",
            Variant {
                map_uid: Some("doubler"),
                ..Variant::default()
            },
        ),
        (
            "state schema",
            Variant {
                signed: true,
                ..Variant::default()
            },
        ),
    ];
    for (what, variant) in variants {
        assert_ne!(
            fingerprint(variant),
            base,
            "changing the {what} must change it"
        );
    }
    // The names and uids are what the schema check distinguished, not the function types.
    let signed = descriptor(Variant {
        signed: true,
        ..Variant::default()
    });
    let unsigned = descriptor(Variant::default());
    let names = |d: &JobDescriptor| -> Vec<(String, Option<String>)> {
        d.execution_graph()
            .job_graph()
            .stream_graph()
            .nodes()
            .iter()
            .map(|n| (n.name.clone(), n.uid.clone()))
            .collect()
    };
    assert_eq!(names(&signed), names(&unsigned));
}

#[test]
fn the_descriptor_round_trips_and_places_every_subtask_locally() {
    let descriptor = descriptor(Variant {
        map_parallelism: Some(4),
        ..Variant::default()
    });
    let decoded = JobDescriptor::decode(&descriptor.encode().unwrap()).expect("decodes");
    assert_eq!(decoded, descriptor);
    let placement = descriptor.placement();
    assert_eq!(placement.offers().len(), 1);
    assert_eq!(placement.offers()[0].task_manager, TaskManagerId::LOCAL);
    assert_eq!(placement.offers()[0].slots, 4);
    assert_eq!(
        placement.subtasks_on(TaskManagerId::LOCAL).count(),
        descriptor.execution_graph().subtask_count()
    );
    let state = &descriptor
        .execution_graph()
        .job_graph()
        .stream_graph()
        .nodes();
    let sums = state
        .iter()
        .find(|n| n.uid.as_deref() == Some("sums"))
        .expect("the sums");
    assert_eq!(sums.state_schema.fields.len(), 1);
    assert_eq!(sums.state_schema.fields[0].field, "sum");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_job_runs_after_its_descriptor_was_taken() {
    let (env, sink) = build(Variant::default());
    let before = env.job_descriptor("sums").unwrap().fingerprint().unwrap();
    assert_eq!(before, fingerprint(Variant::default()));
    env.execute("sums").await.expect("runs");
    // Rebalancing over two map subtasks reorders a key's records, so compare what does not
    // depend on the order: per key, as many sums as records, rising, ending at the total.
    let mut actual = std::collections::BTreeMap::<u64, Vec<u64>>::new();
    for (key, sum) in sink.take() {
        actual.entry(key).or_default().push(sum);
    }
    let mut expected = std::collections::BTreeMap::<u64, (usize, u64)>::new();
    for x in (0..100u64).map(|x| x * 2).filter(|x| x % 3 != 0) {
        let (count, total) = expected.entry(x % 7).or_default();
        *count += 1;
        *total += x;
    }
    let summary: std::collections::BTreeMap<u64, (usize, u64)> = actual
        .iter()
        .map(|(key, sums)| {
            assert!(sums.windows(2).all(|w| w[0] < w[1]), "key {key}: {sums:?}");
            (*key, (sums.len(), *sums.last().expect("a sum")))
        })
        .collect();
    assert_eq!(summary, expected);
}

/// A window function counting its windows in a `u64` operator list.
#[operator(uid = "window-counter")]
#[derive(Debug)]
struct WideCounter {
    #[operator_state]
    fired: OperatorList<u64>,
}

impl ProcessWindowFunction<u64, u64> for WideCounter {
    type Out = u64;
    fn process(
        &mut self,
        _key: &u64,
        _ctx: &eichhorn::operator::window::WindowContext,
        elements: Vec<u64>,
        out: &mut Collector<'_, u64>,
    ) {
        self.fired.push(1);
        out.collect(elements.len() as u64);
    }
}

/// The same uid as [`WideCounter`], counting in a `u32` operator list.
#[operator(uid = "window-counter")]
#[derive(Debug)]
struct NarrowCounter {
    #[operator_state]
    fired: OperatorList<u32>,
}

impl ProcessWindowFunction<u64, u64> for NarrowCounter {
    type Out = u64;
    fn process(
        &mut self,
        _key: &u64,
        _ctx: &eichhorn::operator::window::WindowContext,
        elements: Vec<u64>,
        out: &mut Collector<'_, u64>,
    ) {
        self.fired.push(1);
        out.collect(elements.len() as u64);
    }
}

fn windowed(narrow: bool) -> eichhorn::graph::JobFingerprint {
    use eichhorn::operator::window::{TimeDomain, WindowAssigner};
    let env = StreamEnv::new();
    let windows = env
        .from_collection((0..10u64).collect::<Vec<_>>())
        .key_by(|x| x % 2)
        .window(WindowAssigner::tumbling(TimeDomain::ProcessingTime, 1_000, 0).expect("valid"));
    if narrow {
        windows.process(NarrowCounter::new()).collect_sink();
    } else {
        windows.process(WideCounter::new()).collect_sink();
    }
    env.job_descriptor("windows")
        .unwrap()
        .fingerprint()
        .unwrap()
}

#[test]
fn a_window_function_state_schema_changes_the_fingerprint() {
    assert_eq!(windowed(false), windowed(false));
    assert_ne!(windowed(false), windowed(true));
}
