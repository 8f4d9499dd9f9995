//! The built-in jobs under every fault kind, against every oracle: a few seeds each here (the
//! longer sweep is `eichhorn-sim sweep`, run by `.ci/run`), and the user-facing API around
//! them: a failing seed's report. Several nodes: `tests/cluster.rs`.

use eichhorn::prelude::*;
use eichhorn_sim::jobs::BuiltinJob;
use eichhorn_sim::{
    CommittedOutput, FaultConfig, FaultKind, FaultPlan, Finding, Oracles, Simulation,
    SimulationError,
};

/// Seeds per job in `cargo test` (debug builds are slow; the CI sweep runs 50 in release).
const SEEDS: u64 = 4;

#[test]
fn built_in_jobs_pass_every_oracle_under_every_fault_kind() {
    let mut fired = std::collections::BTreeSet::new();
    for job in BuiltinJob::ALL {
        for seed in 0..SEEDS {
            let report = Simulation::new(seed)
                .with_faults(job.fit(FaultConfig::default()))
                .quiet()
                .check_with(|env| job.build(env), &job.oracles())
                .unwrap_or_else(|e| panic!("{job}: {e}"));
            assert!(report.rows > 0, "{job} seed {seed}");
            fired.extend(report.fired.iter().map(|f| f.kind()));
        }
    }
    // On one node there is no network: every other kind fires.
    let one_node: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| {
            !matches!(
                k,
                FaultKind::Partition | FaultKind::Network | FaultKind::Restart
            )
        })
        .collect();
    assert_eq!(
        fired.into_iter().collect::<Vec<_>>(),
        one_node,
        "every kind fired"
    );
}

/// A job whose sink is not exactly once (it commits every record at once): the oracles catch
/// it, and the failure carries the seed, a shrunk plan and a replay that fails again.
#[test]
fn a_user_job_that_is_not_exactly_once_is_reported_with_a_replay() {
    #[derive(Clone)]
    struct AtOnce(eichhorn_sim::CommittedSink<(u64, u64)>);
    impl Operator for AtOnce {}
    impl Unkeyed for AtOnce {}
    impl TwoPhaseCommitSink<(u64, u64)> for AtOnce {
        type Txn = ();
        fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
            self.0.open(ctx)
        }
        fn begin_transaction(&mut self) -> Result<(), FunctionError> {
            Ok(())
        }
        fn invoke(
            &mut self,
            _txn: &mut (),
            value: (u64, u64),
            ctx: &eichhorn::api::SinkContext,
        ) -> Result<(), FunctionError> {
            let mut txn = self.0.begin_transaction()?;
            self.0.invoke(&mut txn, value, ctx)?;
            self.0.commit(txn)
        }
        fn pre_commit(&mut self, _txn: &mut ()) -> Result<(), FunctionError> {
            Ok(())
        }
        fn commit(&mut self, _txn: ()) -> Result<(), FunctionError> {
            Ok(())
        }
        fn abort(&mut self, _txn: ()) -> Result<(), FunctionError> {
            Ok(())
        }
    }
    fn job(env: &StreamEnv) -> CommittedOutput<(u64, u64)> {
        env.enable_checkpointing(50);
        let output = CommittedOutput::new();
        env.add_source(
            eichhorn::connectors::RateLimitedSource::new(
                eichhorn::connectors::GeneratorSource::new(Some(2_000), |g| g),
                10_000,
            ),
            "numbers",
        )
        .map(|g: u64| (g % 3, g / 3 + 1))
        .add_two_phase_sink(AtOnce(output.sink()));
        output
    }
    let oracles = Oracles::new().sequenced(|row: &(u64, u64)| *row);
    let error = Simulation::new(1)
        .with_faults(FaultConfig::only(&[FaultKind::Panic, FaultKind::Stall]).within(150, 3))
        .quiet()
        .check_with(job, &oracles)
        .expect_err("duplicates are caught");
    let SimulationError::Oracle(failure) = error else {
        panic!("{error}")
    };
    assert!(matches!(failure.finding, Finding::ExactlyOnce { duplicated, .. } if duplicated > 0));
    assert_eq!(
        failure.shrunk.faults.len(),
        1,
        "one failure is enough: {failure}"
    );
    let text = failure.to_string();
    assert!(
        text.contains("seed 1 failed the exactly-once oracle"),
        "{text}"
    );
    assert!(
        text.contains("replay: Simulation::new(1).nodes(1).with_plan"),
        "{text}"
    );
    let replay = Simulation::new(1)
        .with_plan(FaultPlan::parse_spec(&failure.shrunk.spec()).unwrap())
        .quiet()
        .check_with(job, &oracles);
    assert!(matches!(replay, Err(SimulationError::Oracle(_))));
}
