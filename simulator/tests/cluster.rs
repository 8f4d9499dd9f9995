//! Multi-node simulation: a JobManager and TaskManagers on the simulated network, through the
//! framework's cluster code, deterministic per seed, and correct under node faults.

use eichhorn::prelude::*;
use eichhorn_sim::jobs::BuiltinJob;
use eichhorn_sim::{FaultPlan, Simulation};

/// A job whose records cross nodes: a shuffle, a keyed reduce at parallelism 4.
fn job(env: &StreamEnv) -> CollectSink<(u64, u64)> {
    env.set_parallelism(4);
    env.configure(|c| c.batch_records_max = 64);
    env.from_generator(2_000, |g| g)
        .shuffle()
        .map(|g| (g % 7, g))
        .key_by(|t: &(u64, u64)| t.0)
        .reduce(|a, b| (a.0, a.1 + b.1))
        .collect_sink()
}

#[test]
fn three_nodes_fault_free_is_complete_and_deterministic() {
    let simulation = Simulation::new(5).nodes(3);
    let first = simulation.run(job).unwrap();
    assert_eq!(first.output.len(), 2_000);
    let mut finals = std::collections::BTreeMap::new();
    for (key, sum) in &first.output {
        let entry = finals.entry(*key).or_insert(0);
        *entry = (*sum).max(*entry);
    }
    for key in 0..7u64 {
        let expected: u64 = (0..2_000u64).filter(|g| g % 7 == key).sum();
        assert_eq!(finals[&key], expected, "key {key}");
    }
    let second = simulation.run(job).unwrap();
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.output, second.output);
}

#[test]
fn keyed_sum_on_three_nodes_passes_every_oracle_without_faults() {
    let job = BuiltinJob::KeyedSum;
    let report = Simulation::new(1)
        .nodes(3)
        .with_plan(FaultPlan::none())
        .quiet()
        .check_with(|env| job.build(env), &job.oracles())
        .unwrap();
    assert!(report.rows > 0);
    eprintln!("{report:?}");
}

#[test]
fn keyed_sum_survives_a_node_crash() {
    let job = BuiltinJob::KeyedSum;
    let report = Simulation::new(1)
        .nodes(3)
        .with_plan(FaultPlan::parse_spec("node-crash:node=0:at=200").unwrap())
        .quiet()
        .check_with(|env| job.build(env), &job.oracles())
        .unwrap();
    eprintln!("{report:?}");
    assert_eq!(report.fired.len(), 1);
    assert!(report.recoveries >= 1);
}
