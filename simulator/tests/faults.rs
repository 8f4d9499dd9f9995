//! Seeded fault runs on one node: subtask failures at chosen inputs and checkpoint storage
//! faults, checked against the exactly-once oracle.

use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::prelude::*;
use eichhorn_sim::{CommittedOutput, Fault, FaultConfig, Simulation, SimulationError};

const RECORDS: u64 = 3_000;

/// A keyed running sum over a paced source (so checkpoints fall between records), the sums at
/// parallelism 2, checkpointing every 50 ms of virtual time, committing through the simulator's
/// exactly-once sink. The source runs at parallelism 1, so each key's records arrive in one
/// order in every run and its running sums are the same: the output is a function of the input,
/// which the multiset oracle needs.
fn running_sums(env: &StreamEnv) -> CommittedOutput<(u64, u64)> {
    env.set_parallelism(2);
    env.enable_checkpointing(50);
    env.configure(|c| {
        c.batch_records_max = 32;
        c.checkpointing.tolerable_failures = 10;
    });
    let output = CommittedOutput::new();
    env.add_source(
        RateLimitedSource::new(GeneratorSource::new(Some(RECORDS), |g| g), 10_000),
        "paced",
    )
    .set_parallelism(1)
    .map(|g: u64| (g % 7, g))
    .key_by(|pair: &(u64, u64)| pair.0)
    .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
    .add_two_phase_sink(output.sink());
    output
}

#[test]
fn a_keyed_job_is_exactly_once_under_seeded_faults() {
    let config = FaultConfig {
        subtask_panics: 2,
        storage_faults: 2,
        max_time_ms: 200,
        max_checkpoint: 5,
        stall_per_mille: 20,
        stall_max_ms: 30,
        ..FaultConfig::none()
    };
    let mut fired = Vec::new();
    for seed in 0..8 {
        let simulation = Simulation::new(seed).with_faults(config.clone());
        let report = simulation
            .check_exactly_once(running_sums)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.records, RECORDS as usize, "seed {seed}");
        let failures = report
            .fired
            .iter()
            .filter(|f| matches!(f, Fault::SubtaskPanic { .. }))
            .count();
        assert_eq!(
            report.restarts as usize, failures,
            "seed {seed}: {report:?}"
        );
        fired.extend(report.fired);
    }
    // The seeds exercised every kind of fault (the plan draws them; this checks they land).
    for kind in [
        "fails in attempt",
        "cannot be written",
        "written torn",
        "written corrupted",
        "stall",
    ] {
        assert!(
            fired.iter().any(|f| f.to_string().contains(kind)),
            "no '{kind}' fault fired: {fired:?}"
        );
    }
}

/// Event-time windows of 100 ms summing each key over two parallel paced sources: the
/// window sums do not depend on how the sources interleave, so the multiset oracle holds
/// whatever the timing, and the reduce's inputs carry barriers at different moments (barrier
/// alignment matters).
fn window_sums(env: &StreamEnv) -> CommittedOutput<(u64, u64, u64)> {
    use eichhorn::operator::window::{TimeDomain, WindowAssigner};
    env.set_parallelism(2);
    env.enable_checkpointing(50);
    env.configure(|c| {
        c.batch_records_max = 32;
        c.checkpointing.tolerable_failures = 10;
    });
    let output = CommittedOutput::new();
    env.add_source(
        RateLimitedSource::new(GeneratorSource::new(Some(RECORDS), |g| g), 7_000),
        "paced",
    )
    .assign_timestamps_and_watermarks(
        WatermarkStrategy::for_bounded_out_of_orderness(0)
            .with_timestamp_assigner(|g: &u64, _| *g as i64),
    )
    .map(|g: u64| (g % 7, g / 100, g))
    .key_by(|t: &(u64, u64, u64)| t.0)
    .window(WindowAssigner::tumbling(TimeDomain::EventTime, 100, 0).expect("assigner"))
    .reduce(|a: (u64, u64, u64), b: (u64, u64, u64)| (a.0, a.1, a.2 + b.2))
    .add_two_phase_sink(output.sink());
    output
}

#[test]
fn event_time_windows_over_parallel_sources_are_exactly_once_under_seeded_faults() {
    let config = FaultConfig {
        subtask_panics: 2,
        storage_faults: 1,
        max_time_ms: 200,
        max_checkpoint: 5,
        stall_per_mille: 150,
        stall_max_ms: 25,
        ..FaultConfig::none()
    };
    for seed in 0..8 {
        let report = Simulation::new(seed)
            .with_faults(config.clone())
            .check_exactly_once(window_sums)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.records, 7 * (RECORDS as usize / 100), "seed {seed}");
    }
}

#[test]
fn a_faulted_run_replays_from_its_seed() {
    let simulation = Simulation::new(9);
    let plan = simulation.fault_plan();
    let first = simulation.run_committed(running_sums, &plan).unwrap();
    let second = simulation.run_committed(running_sums, &plan).unwrap();
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.result.restarts, second.result.restarts);
    assert_eq!(first.virtual_elapsed, second.virtual_elapsed);
}

/// A sink that is not exactly once (it publishes every record at once, so a restart repeats
/// the records after the last checkpoint): the oracle must catch it, and shrinking must keep
/// only a subtask failure.
#[test]
fn the_oracle_catches_a_sink_that_duplicates_and_shrinks_the_plan() {
    #[derive(Clone)]
    struct Leaky(eichhorn_sim::CommittedSink<(u64, u64)>);
    impl Operator for Leaky {}
    impl Unkeyed for Leaky {}
    impl TwoPhaseCommitSink<(u64, u64)> for Leaky {
        type Txn = u64;
        fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
            self.0.open(ctx)
        }
        fn begin_transaction(&mut self) -> Result<u64, FunctionError> {
            Ok(0)
        }
        fn invoke(
            &mut self,
            _txn: &mut u64,
            value: (u64, u64),
            _ctx: &eichhorn::api::SinkContext,
        ) -> Result<(), FunctionError> {
            // Visible at once, outside any transaction.
            let mut txn = self.0.begin_transaction()?;
            self.0.invoke(&mut txn, value, _ctx)?;
            self.0.commit(txn)
        }
        fn pre_commit(&mut self, _txn: &mut u64) -> Result<(), FunctionError> {
            Ok(())
        }
        fn commit(&mut self, _txn: u64) -> Result<(), FunctionError> {
            Ok(())
        }
        fn abort(&mut self, _txn: u64) -> Result<(), FunctionError> {
            Ok(())
        }
    }
    fn running_sums_into(env: &StreamEnv) -> CommittedOutput<(u64, u64)> {
        env.set_parallelism(2);
        env.enable_checkpointing(50);
        env.configure(|c| c.batch_records_max = 32);
        let output = CommittedOutput::new();
        env.add_source(
            RateLimitedSource::new(GeneratorSource::new(Some(RECORDS), |g| g), 10_000),
            "paced",
        )
        .map(|g: u64| (g % 7, g))
        .add_two_phase_sink(Leaky(output.sink()));
        output
    }
    let simulation = Simulation::new(4).with_faults(FaultConfig {
        subtask_panics: 1,
        storage_faults: 2,
        max_time_ms: 200,
        max_checkpoint: 3,
        ..FaultConfig::none()
    });
    let error = simulation
        .check_exactly_once(running_sums_into)
        .expect_err("duplicates are caught");
    let SimulationError::NotExactlyOnce {
        plan, duplicated, ..
    } = &error
    else {
        panic!("{error}");
    };
    assert!(*duplicated > 0, "{error}");
    // Any one failure that makes the job restart (a subtask failure, or a failed checkpoint
    // with no tolerance) shows the duplicates: the plan shrinks to a single fault.
    assert_eq!(plan.faults.len(), 1, "shrunk to one fault: {error}");
    assert!(error.to_string().contains("seed 4"), "{error}");
}
