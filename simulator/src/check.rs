//! [`Simulation::check`]: a job against every oracle under the seed's faults, with shrinking
//! and a replay for a failing seed. This is the API an application uses in its own tests.

use std::fmt;
use std::time::Duration;

use eichhorn::api::{Data, StreamEnv};

use crate::faults::{Fault, FaultKind};
use crate::oracles::{self, Finding, Oracles, liveness_bound_after};
use crate::{CommittedOutput, FaultPlan, SimulatedRun, Simulation, SimulationError};

/// What a passing check saw.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The seed.
    pub seed: u64,
    /// The simulated nodes.
    pub nodes: u32,
    /// The faults planned.
    pub plan: FaultPlan,
    /// The planned faults that happened.
    pub fired: Vec<Fault>,
    /// Rows the job committed (the same with and without faults).
    pub rows: usize,
    /// Recoveries of the faulted run: restarts after a failure plus restarts after a crash.
    pub recoveries: u32,
    /// Checkpoints the faulted run completed.
    pub checkpoints: u64,
    /// Virtual time of the faulted run.
    pub virtual_elapsed: Duration,
    /// Virtual time of the fault-free run.
    pub fault_free_elapsed: Duration,
    /// The faulted run's trace hash.
    pub trace_hash: u64,
}

/// A failing check: the seed, what the oracle found, the plan, the smallest plan that still
/// fails, and how to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The simulated nodes.
    pub nodes: u32,
    /// What the first failing oracle found.
    pub finding: Finding,
    /// The planned faults.
    pub plan: FaultPlan,
    /// The smallest plan found that still fails (faults removed one at a time).
    pub shrunk: FaultPlan,
    /// The sabotage switched on, if any.
    pub sabotage: Option<String>,
    /// The failing run, if it finished (a liveness failure has none).
    pub run: Option<RunSummary>,
}

/// The figures of a finished faulted run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The planned faults that happened.
    pub fired: Vec<Fault>,
    /// Recoveries: restarts after a failure plus restarts after a crash.
    pub recoveries: u32,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// Virtual time.
    pub virtual_elapsed: Duration,
    /// The trace hash.
    pub trace_hash: u64,
}

impl RunSummary {
    fn of<T>(run: &SimulatedRun<T>) -> Self {
        Self {
            fired: run.faults_fired.clone(),
            recoveries: run.restarts + run.crashes,
            checkpoints: run.checkpoints,
            virtual_elapsed: run.virtual_elapsed,
            trace_hash: run.trace_hash,
        }
    }
}

impl Failure {
    /// The Rust that replays the shrunk plan in a test.
    pub fn replay(&self) -> String {
        format!(
            "Simulation::new({}).nodes({}).with_plan(FaultPlan::parse_spec(\"{}\").unwrap())",
            self.seed,
            self.nodes,
            self.shrunk.spec()
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} failed the {}", self.seed, self.finding)?;
        if let Some(sabotage) = &self.sabotage {
            writeln!(f, "  sabotage: {sabotage}")?;
        }
        writeln!(f, "  fault plan: {}", self.plan)?;
        writeln!(f, "  shrunk plan: {} [{}]", self.shrunk, self.shrunk.spec())?;
        write!(f, "  replay: {}", self.replay())
    }
}

/// A judged run: the run, or the finding with the run's figures if it finished.
type Verdict<T> = Result<SimulatedRun<T>, (Finding, Option<RunSummary>)>;

impl Simulation {
    /// Checks the job declared by `build` under this simulation's faults against
    /// exactly-once, liveness and determinism ([`Oracles::new`]); see
    /// [`Simulation::check_with`].
    ///
    /// # Errors
    ///
    /// As [`Simulation::check_with`].
    pub fn check<T, F>(&self, build: F) -> Result<CheckReport, SimulationError>
    where
        T: Data,
        F: Fn(&StreamEnv) -> CommittedOutput<T>,
    {
        self.check_with(build, &Oracles::new())
    }

    /// Runs the job declared by `build` (it declares the job on the environment and returns
    /// the [`CommittedOutput`] its exactly-once sink writes to; it is called again for every
    /// run and after every crash) without faults, then with the seed's fault plan (printed to
    /// stderr first), and applies `oracles`. On a failure the plan is shrunk and the error
    /// carries the seed, the finding, the smallest failing plan and its replay.
    ///
    /// The fault-free run never has a sabotage switched on: it is the truth.
    ///
    /// # Errors
    ///
    /// [`SimulationError::Oracle`] when an oracle fails; [`SimulationError::Usage`] for more
    /// than one node; the fault-free run failing (a job or simulator bug, not a finding).
    pub fn check_with<T, F>(
        &self,
        build: F,
        oracles: &Oracles<T>,
    ) -> Result<CheckReport, SimulationError>
    where
        T: Data,
        F: Fn(&StreamEnv) -> CommittedOutput<T>,
    {
        let truth = self.without_sabotage();
        let expected = truth.run_plan(&build, &FaultPlan::none(), self.deadline)?;
        let plan = self.fault_plan();
        if !self.quiet {
            eprintln!("eichhorn-sim: seed {}: fault plan: {plan}", self.seed);
        }
        let bound = liveness_bound_after(
            expected.virtual_elapsed,
            plan.crashes().len(),
            plan.faults_end(),
        );
        let verdict = self.judge(
            &build,
            &plan,
            &expected,
            oracles,
            bound,
            oracles.determinism,
        )?;
        let run = match verdict {
            Ok(run) => run,
            Err((finding, run)) => {
                let shrunk = if !self.shrink {
                    plan.clone()
                } else {
                    plan.shrink(|candidate| {
                        let bound = liveness_bound_after(
                            expected.virtual_elapsed,
                            candidate.crashes().len(),
                            candidate.faults_end(),
                        );
                        let determinism = matches!(finding, Finding::Nondeterministic { .. });
                        matches!(
                            self.judge(&build, candidate, &expected, oracles, bound, determinism),
                            Ok(Err(_))
                        )
                    })
                };
                return Err(SimulationError::Oracle(Box::new(Failure {
                    seed: self.seed,
                    nodes: self.nodes,
                    finding,
                    plan,
                    shrunk,
                    sabotage: self.sabotage_name(),
                    run,
                })));
            }
        };
        Ok(CheckReport {
            seed: self.seed,
            nodes: self.nodes,
            plan,
            fired: run.faults_fired,
            rows: expected.output.len(),
            recoveries: run.restarts + run.crashes,
            checkpoints: run.checkpoints,
            virtual_elapsed: run.virtual_elapsed,
            fault_free_elapsed: expected.virtual_elapsed,
            trace_hash: run.trace_hash,
        })
    }

    /// Runs `plan` and applies the oracles: the run, or the first finding.
    fn judge<T, F>(
        &self,
        build: &F,
        plan: &FaultPlan,
        expected: &SimulatedRun<T>,
        oracles: &Oracles<T>,
        bound: Duration,
        determinism: bool,
    ) -> Result<Verdict<T>, SimulationError>
    where
        T: Data,
        F: Fn(&StreamEnv) -> CommittedOutput<T>,
    {
        let run = match self.run_plan(build, plan, bound) {
            Ok(run) => run,
            Err(SimulationError::Stuck { .. }) => {
                let problem = format!(
                    "the job did not finish within {bound:?} of virtual time (the fault-free run \
                     took {:?})",
                    expected.virtual_elapsed
                );
                return Ok(Err((Finding::Liveness { problem }, None)));
            }
            Err(SimulationError::Job { source, .. }) => {
                let problem = format!("the job failed instead of recovering: {source}");
                return Ok(Err((Finding::Liveness { problem }, None)));
            }
            Err(other) => return Err(other),
        };
        let failed = |finding| Ok(Err((finding, Some(RunSummary::of(&run)))));
        if let Some(finding) = oracles::check_exactly_once(&expected.output, &run.output)? {
            return failed(finding);
        }
        if let Some(key_seq) = &oracles.sequenced {
            if let Some(finding) =
                oracles::check_sequences(&expected.output, &run.output, key_seq.as_ref())
            {
                return failed(finding);
            }
            if let Some(finding) = oracles::check_consistency(
                &expected.output,
                &run.commit_log,
                key_seq.as_ref(),
                oracles.ordered_per_key,
            )? {
                return failed(finding);
            }
        }
        if determinism {
            let again = self.run_plan(build, plan, bound);
            let second = match again {
                Ok(again) => again.trace_hash,
                // A second run that fails where the first passed differs from it.
                Err(SimulationError::Stuck { .. } | SimulationError::Job { .. }) => 0,
                Err(other) => return Err(other),
            };
            if second != run.trace_hash {
                return failed(Finding::Nondeterministic {
                    first: run.trace_hash,
                    second,
                });
            }
        }
        Ok(Ok(run))
    }
}

/// Faults fired per kind, for summaries.
pub fn fired_by_kind(fired: &[Fault]) -> std::collections::BTreeMap<FaultKind, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for fault in fired {
        *counts.entry(fault.kind()).or_default() += 1;
    }
    counts
}
