//! Multi-node simulation: a JobManager and TaskManagers on the simulated network, through the
//! framework's cluster code (join, deploy, QUIC data channels, checkpoints across nodes),
//! deterministic per seed, and exactly-once under node crashes, partitions and packet faults.

use std::collections::BTreeMap;

use eichhorn::prelude::*;
use eichhorn_sim::jobs::{BuiltinJob, Row};
use eichhorn_sim::{Fault, FaultConfig, FaultKind, FaultPlan, Simulation, SimulationError};

/// A job whose records cross nodes: a shuffle and a keyed reduce.
fn job(env: &StreamEnv, parallelism: u32) -> CollectSink<(u64, u64)> {
    env.set_parallelism(parallelism);
    env.configure(|c| c.batch_records_max = 64);
    env.from_generator(2_000, |g| g)
        .shuffle()
        .map(|g| (g % 7, g))
        .key_by(|t: &(u64, u64)| t.0)
        .reduce(|a, b| (a.0, a.1 + b.1))
        .collect_sink()
}

/// The last running sum of every key, which a sequential computation knows.
fn finals(output: &[(u64, u64)]) -> BTreeMap<u64, u64> {
    let mut finals = BTreeMap::new();
    for (key, sum) in output {
        let entry = finals.entry(*key).or_insert(0);
        *entry = (*sum).max(*entry);
    }
    finals
}

#[test]
fn three_nodes_compute_what_a_sequential_loop_computes_at_parallelism_1_2_and_4() {
    let mut expected = BTreeMap::new();
    for g in 0..2_000u64 {
        *expected.entry(g % 7).or_insert(0) += g;
    }
    for parallelism in [1, 2, 4] {
        let run = Simulation::new(5)
            .nodes(3)
            .run(|env| job(env, parallelism))
            .unwrap();
        assert_eq!(run.output.len(), 2_000, "parallelism {parallelism}");
        assert_eq!(finals(&run.output), expected, "parallelism {parallelism}");
        let network = run.network.expect("a cluster run has a network");
        assert!(
            network.delivered > 100,
            "parallelism {parallelism}: {network:?}"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_cluster_run_and_other_seeds_other_datagrams() {
    let first = Simulation::new(9).nodes(3).run(|env| job(env, 4)).unwrap();
    let second = Simulation::new(9).nodes(3).run(|env| job(env, 4)).unwrap();
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.output, second.output);
    assert_eq!(first.network, second.network);
    assert_eq!(first.virtual_elapsed, second.virtual_elapsed);
    let other = Simulation::new(10).nodes(3).run(|env| job(env, 4)).unwrap();
    assert_ne!(first.trace_hash, other.trace_hash);
}

fn committed(simulation: Simulation, plan: &str) -> Vec<Row> {
    let job = BuiltinJob::KeyedSum;
    let mut rows = simulation
        .quiet()
        .run_committed(|env| job.build(env), &FaultPlan::parse_spec(plan).unwrap())
        .unwrap()
        .output;
    rows.sort();
    rows
}

#[test]
fn keyed_sum_commits_the_same_rows_on_one_node_and_on_three() {
    let one = committed(Simulation::new(2), "none");
    let three = committed(Simulation::new(2).nodes(3), "none");
    assert!(!one.is_empty());
    assert_eq!(one, three);
}

/// Checks keyed_sum on 3 nodes with `plan`, every oracle on; returns the report.
fn check(seed: u64, plan: &str) -> eichhorn_sim::CheckReport {
    let job = BuiltinJob::KeyedSum;
    Simulation::new(seed)
        .nodes(3)
        .with_plan(FaultPlan::parse_spec(plan).unwrap())
        .quiet()
        .check_with(|env| job.build(env), &job.oracles())
        .unwrap_or_else(|e| panic!("seed {seed}, plan {plan}: {e}"))
}

#[test]
fn keyed_sum_survives_a_task_manager_crash_with_a_replacement() {
    let report = check(1, "node-crash:node=0:at=200");
    assert_eq!(
        report.fired,
        vec![Fault::NodeCrash {
            node: 0,
            at_ms: 200
        }]
    );
    assert!(report.recoveries >= 1, "{report:?}");
}

#[test]
fn keyed_sum_survives_short_and_long_partitions() {
    // Shorter than the heartbeat timeout: QUIC retransmits, nothing restarts.
    let short = check(3, "partition:node=1:at=150:heal=300");
    assert_eq!(short.fired.len(), 1);
    // Longer: the node is lost, the job restarts, the node rejoins after the heal.
    let long = check(3, "partition:node=0:at=150:heal=2500");
    assert_eq!(long.fired.len(), 1);
    assert!(long.recoveries >= 1, "{long:?}");
}

#[test]
fn keyed_sum_survives_a_lossy_duplicating_corrupting_network() {
    let report = check(4, "packets:seed=7:loss=100:dup=50:corrupt=20:spike=10");
    assert_eq!(report.fired.len(), 1, "{report:?}");
    let run = Simulation::new(4)
        .nodes(3)
        .quiet()
        .run_committed(
            |env| BuiltinJob::KeyedSum.build(env),
            &FaultPlan::parse_spec("packets:seed=7:loss=100:dup=50:corrupt=20:spike=10").unwrap(),
        )
        .unwrap();
    let network = run.network.unwrap();
    assert!(
        network.lost > 0 && network.duplicated > 0 && network.corrupted > 0,
        "{network:?}"
    );
}

#[test]
fn keyed_sum_is_exactly_once_when_a_node_restarts_under_its_old_name_and_address() {
    // Back before and after the JobManager's heartbeat timeout would drop the old incarnation.
    for plan in [
        "node-restart:node=0:at=150:down=100",
        "node-restart:node=2:at=100:down=1500",
    ] {
        let report = check(6, plan);
        assert_eq!(report.fired.len(), 1, "{plan}: {report:?}");
        assert!(
            matches!(report.fired[0], Fault::NodeRestart { .. }),
            "{report:?}"
        );
        assert!(report.recoveries >= 1, "{plan}: {report:?}");
    }
}

#[test]
fn keyed_sum_recovers_once_packet_faults_stop() {
    // A network so bad that little gets through until 1.5 s, perfect after: the job must
    // finish after the faults stop (liveness counts from their end).
    let plan = "packets:seed=3:loss=600:dup=100:corrupt=100:spike=50:until=1500";
    let report = check(7, plan);
    assert_eq!(report.fired.len(), 1, "{report:?}");
    assert!(
        report.virtual_elapsed > std::time::Duration::from_millis(400),
        "{report:?}"
    );
}

#[test]
fn a_short_sweep_with_every_fault_kind_passes_on_three_nodes() {
    // One seed per job here; `.ci/run` sweeps more in release.
    for (job, seeds) in [(BuiltinJob::KeyedSum, 0..2), (BuiltinJob::Wordcount, 0..1)] {
        for seed in seeds {
            let simulation = Simulation::new(seed)
                .nodes(3)
                .with_faults(job.fit(FaultConfig::only(&FaultKind::ALL)))
                .quiet();
            let plan = simulation.fault_plan();
            assert!(
                plan.faults
                    .iter()
                    .any(|f| matches!(f, Fault::NodeCrash { .. })),
                "{plan}"
            );
            assert!(plan.packets().is_some(), "{plan}");
            assert!(
                plan.faults
                    .iter()
                    .any(|f| matches!(f, Fault::NodeRestart { .. })),
                "{plan}"
            );
            assert!(plan.crashes().is_empty(), "{plan}");
            simulation
                .check_with(|env| job.build(env), &job.oracles())
                .unwrap_or_else(|e| panic!("{job} seed {seed}: {e}"));
        }
    }
}

#[test]
fn a_whole_process_crash_is_refused_on_a_cluster_and_network_faults_on_one_node() {
    let error = Simulation::new(0)
        .nodes(3)
        .with_plan(FaultPlan::parse_spec("crash:at=100").unwrap())
        .quiet()
        .check(|env| BuiltinJob::KeyedSum.build(env))
        .expect_err("a whole-process crash on 3 nodes");
    assert!(matches!(error, SimulationError::Usage(_)));
    assert!(error.to_string().contains("use node-crash"), "{error}");
    let error = Simulation::new(0)
        .with_plan(FaultPlan::parse_spec("node-crash:node=0:at=10").unwrap())
        .quiet()
        .check(|env| BuiltinJob::KeyedSum.build(env))
        .expect_err("a node crash on 1 node");
    assert!(error.to_string().contains("needs several nodes"), "{error}");
    // One node draws no network faults.
    let plan = Simulation::new(0)
        .with_faults(FaultConfig::only(&FaultKind::ALL))
        .fault_plan();
    assert!(
        plan.node_faults().is_empty() && plan.packets().is_none(),
        "{plan}"
    );
}
