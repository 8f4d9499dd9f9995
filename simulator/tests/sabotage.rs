//! The oracles can fail: each deliberate bug of the `sabotage` feature is caught by a short
//! sweep, and the failure names its seed, its shrunk plan and a replay. Compiled only with
//! `cargo test -p eichhorn-sim --features sabotage`.
#![cfg(feature = "sabotage")]

use eichhorn_sim::jobs::BuiltinJob;
use eichhorn_sim::{FaultConfig, FaultPlan, Sabotage, Simulation, SimulationError};

#[test]
fn every_sabotage_is_caught_shrunk_and_replayed() {
    let job = BuiltinJob::KeyedSum;
    for sabotage in Sabotage::ALL {
        let failure = (0..20)
            .find_map(|seed| {
                let outcome = Simulation::new(seed)
                    .with_faults(job.fit(FaultConfig::default()))
                    .with_sabotage(sabotage)
                    .quiet()
                    .check_with(|env| job.build(env), &job.oracles());
                match outcome {
                    Ok(_) => None,
                    Err(SimulationError::Oracle(failure)) => Some(failure),
                    Err(other) => panic!("{sabotage}: seed {seed}: {other}"),
                }
            })
            .unwrap_or_else(|| panic!("{sabotage} was not caught in 20 seeds"));
        assert!(failure.shrunk.faults.len() <= failure.plan.faults.len());
        assert!(
            failure
                .to_string()
                .contains(&format!("seed {}", failure.seed))
        );
        // The shrunk plan alone, replayed, still fails.
        let replay = Simulation::new(failure.seed)
            .with_plan(FaultPlan::parse_spec(&failure.shrunk.spec()).unwrap())
            .with_sabotage(sabotage)
            .quiet()
            .without_shrinking()
            .check_with(|env| job.build(env), &job.oracles());
        assert!(
            matches!(replay, Err(SimulationError::Oracle(_))),
            "{sabotage}: the shrunk plan of seed {} passed: {failure}",
            failure.seed
        );
        // Without the sabotage the same seed passes.
        Simulation::new(failure.seed)
            .with_faults(job.fit(FaultConfig::default()))
            .quiet()
            .check_with(|env| job.build(env), &job.oracles())
            .unwrap_or_else(|e| panic!("seed {} fails without {sabotage}: {e}", failure.seed));
    }
}

#[test]
fn every_sabotage_is_caught_on_three_nodes() {
    let job = BuiltinJob::KeyedSum;
    for (sabotage, plan) in [
        (Sabotage::SkipSourceRestore, "corrupt:chk=2"),
        (Sabotage::CommitBeforeCheckpoint, "corrupt:chk=2"),
        (Sabotage::BarrierBeforeAlignment, "corrupt:chk=2"),
        (Sabotage::DropCredit, "none"),
    ] {
        let outcome = Simulation::new(0)
            .nodes(3)
            .with_plan(FaultPlan::parse_spec(plan).unwrap())
            .with_sabotage(sabotage)
            .quiet()
            .without_shrinking()
            .check_with(|env| job.build(env), &job.oracles());
        assert!(
            matches!(outcome, Err(SimulationError::Oracle(_))),
            "{sabotage} on 3 nodes with {plan}: {outcome:?}"
        );
    }
}
