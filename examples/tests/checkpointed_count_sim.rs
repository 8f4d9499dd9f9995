//! `checkpointed_count`'s logic (parse `key,value` lines, keep a running sum per key in keyed
//! state) under the deterministic simulator's seeded faults: subtask failures, storage faults,
//! stalls, a whole-process crash and restart, a slow disk, clock skew. The oracles: the
//! committed output equals a fault-free run's, it is the plain sequential computation
//! (`expected_output`), the job finishes, and each seed replays identically; on one node and
//! on a simulated cluster of three.

use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::prelude::*;
use eichhorn_examples::counting::{BadLine, ParseKeyValues, RunningSum, expected_output};
use eichhorn_sim::{CommittedOutput, FaultConfig, FaultPlan, Simulation};

const LINES: u64 = 1_200;

/// Line `g` of the input: keys `k0`..`k4`, every 97th line malformed.
fn line(g: u64) -> String {
    if g % 97 == 96 {
        format!("bad line {g}")
    } else {
        format!("k{},{}", g % 5, g as i64 - 600)
    }
}

/// The example's pipeline, with a paced generator of numbered lines for its file source and
/// the simulator's exactly-once sink for its files.
fn checkpointed_count(env: &StreamEnv) -> CommittedOutput<String> {
    env.enable_checkpointing(40);
    env.configure(|c| c.batch_records_max = 16);
    let output = CommittedOutput::new();
    let bad = OutputTag::<BadLine>::new("bad-lines");
    let records = env
        .add_source(
            RateLimitedSource::new(
                GeneratorSource::new(Some(LINES), |g| (g + 1, line(g))),
                6_000,
            ),
            "Checkpointed File",
        )
        .set_parallelism(1)
        .uid("file-source")
        .process(ParseKeyValues::new(bad))
        .uid("parse")
        .set_parallelism(1);
    records
        .key_by(|(key, _): &(String, i64)| key.clone())
        .process(RunningSum::new(None))
        .uid("running-sum")
        .set_parallelism(2)
        .add_two_phase_sink(output.sink())
        .uid("exactly-once-files");
    output
}

#[test]
fn checkpointed_count_is_exactly_once_under_seeded_faults() {
    let lines: Vec<String> = (0..LINES).map(line).collect();
    let expected = expected_output(lines.iter().map(String::as_str));
    let fault_free = Simulation::new(0)
        .run_committed(checkpointed_count, &FaultPlan::none())
        .unwrap();
    let mut committed = fault_free.output;
    committed.sort();
    assert_eq!(
        committed, expected,
        "the fault-free run is the sequential computation"
    );
    for seed in 0..4 {
        let report = Simulation::new(seed)
            .with_faults(FaultConfig::default().within(150, 4))
            .check(checkpointed_count)
            .unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(report.rows, expected.len(), "seed {seed}");
    }
}

/// The same on a simulated cluster: a JobManager and three TaskManagers over QUIC, with node
/// crashes, partitions and a lossy network added to the faults.
#[test]
fn checkpointed_count_is_exactly_once_on_three_simulated_nodes() {
    let lines: Vec<String> = (0..LINES).map(line).collect();
    let expected = expected_output(lines.iter().map(String::as_str));
    for seed in 0..2 {
        let report = Simulation::new(seed)
            .nodes(3)
            .with_faults(FaultConfig::default().within(150, 4))
            .quiet()
            .check(checkpointed_count)
            .unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(report.rows, expected.len(), "seed {seed}");
        assert_eq!(report.nodes, 3);
    }
}
