//! `eichhorn-sim`: runs the simulator's built-in jobs under seeded faults and checks the
//! oracles.
//!
//! ```text
//! eichhorn-sim run   --job NAME --seed S      [--nodes N] [--faults LIST] [--sabotage NAME] [--plan SPEC]
//! eichhorn-sim sweep --job NAME --seeds A..B  [--nodes N] [--faults LIST] [--sabotage NAME]
//! ```
//!
//! `run` prints the fault plan, a summary (or the failing oracle's finding, the shrunk plan and
//! the command that replays it) and, as its last line on stdout,
//! `RESULT job=NAME seed=S verdict=pass|fail trace_hash=HEX virtual_s=.. wall_s=..`.
//! `sweep` runs seeds A to B (both included) with a progress bar, prints a summary table, the
//! replay command of every failing seed, the shrunk plan of the first one, and as its last line
//! `SWEEP job=NAME seeds=N passed=P failed=F first_failed_seed=S|none`.
//!
//! Exit codes: 0 when everything passed, 1 when an oracle failed, 2 on a usage or internal
//! error.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use eichhorn_sim::jobs::BuiltinJob;
use eichhorn_sim::{
    CheckReport, Failure, FaultConfig, FaultKind, FaultPlan, Simulation, SimulationError,
};

#[derive(Debug, Parser)]
#[command(
    name = "eichhorn-sim",
    about = "Deterministic simulation of Eichhorn jobs under seeded faults, checked by oracles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one seed: the fault plan, a summary, and a RESULT line.
    Run {
        #[command(flatten)]
        common: Common,
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// A fixed fault plan instead of the seed's (a shrunk plan a failure printed).
        #[arg(long)]
        plan: Option<String>,
    },
    /// Runs seeds A..B (both included), with a progress bar, a summary table and a SWEEP line.
    Sweep {
        #[command(flatten)]
        common: Common,
        /// The seeds, `A..B` with both ends included.
        #[arg(long)]
        seeds: String,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// The built-in job: wordcount, keyed_sum, windows or join.
    #[arg(long)]
    job: String,
    /// Simulated nodes: 1 runs the job in one process; N >= 2 runs a JobManager and N
    /// TaskManagers talking QUIC over the simulated network.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// The fault kinds, comma-separated: panic, storage, stall, crash, slow-disk, clock-skew,
    /// and with several nodes partition, network, restart (default: all; on several nodes a
    /// crash is a TaskManager node's, and a restart brings a killed node back under its old
    /// name and address).
    #[arg(long)]
    faults: Option<String>,
    /// A deliberate framework bug (needs `--features sabotage`): barrier_before_alignment,
    /// skip_source_restore, commit_before_checkpoint, drop_credit.
    #[arg(long)]
    sabotage: Option<String>,
}

/// A usage or internal error: exit code 2.
#[derive(Debug)]
struct Usage(String);

impl Common {
    fn job(&self) -> Result<BuiltinJob, Usage> {
        BuiltinJob::from_name(&self.job).map_err(Usage)
    }

    fn fault_config(&self, job: BuiltinJob) -> Result<FaultConfig, Usage> {
        let kinds = match &self.faults {
            Some(list) => FaultKind::parse_list(list).map_err(Usage)?,
            None => FaultKind::ALL.to_vec(),
        };
        Ok(job.fit(FaultConfig::only(&kinds)))
    }

    fn simulation(&self, seed: u64, job: BuiltinJob) -> Result<Simulation, Usage> {
        if self.nodes == 0 {
            return Err(Usage(
                "--nodes 0: a simulation needs at least 1 node".to_string(),
            ));
        }
        let simulation = Simulation::new(seed)
            .nodes(self.nodes)
            .with_faults(self.fault_config(job)?)
            .quiet();
        self.sabotaged(simulation)
    }

    #[cfg(feature = "sabotage")]
    fn sabotaged(&self, simulation: Simulation) -> Result<Simulation, Usage> {
        match &self.sabotage {
            None => Ok(simulation),
            Some(name) => eichhorn_sim::Sabotage::from_name(name)
                .map(|s| simulation.with_sabotage(s))
                .ok_or_else(|| {
                    Usage(format!(
                        "unknown sabotage '{name}' (known: {})",
                        eichhorn_sim::Sabotage::ALL.map(|s| s.name()).join(", ")
                    ))
                }),
        }
    }

    #[cfg(not(feature = "sabotage"))]
    fn sabotaged(&self, simulation: Simulation) -> Result<Simulation, Usage> {
        match &self.sabotage {
            None => Ok(simulation),
            Some(name) => Err(Usage(format!(
                "--sabotage {name}: sabotages are compiled only with the simulator's `sabotage` \
                 feature: cargo run --release -p eichhorn-sim --features sabotage -- ..."
            ))),
        }
    }

    /// The command that replays `seed` (with `plan`, a fixed plan), every flag included.
    fn replay(&self, seed: u64, plan: Option<&FaultPlan>) -> String {
        let mut command = String::from("cargo run --release -p eichhorn-sim");
        if self.sabotage.is_some() {
            command.push_str(" --features sabotage");
        }
        command.push_str(&format!(
            " -- run --job {} --seed {seed} --nodes {}",
            self.job, self.nodes
        ));
        match plan {
            Some(plan) => command.push_str(&format!(" --plan '{}'", plan.spec())),
            None => {
                if let Some(faults) = &self.faults {
                    command.push_str(&format!(" --faults {faults}"));
                }
            }
        }
        if let Some(sabotage) = &self.sabotage {
            command.push_str(&format!(" --sabotage {sabotage}"));
        }
        command
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run { common, seed, plan } => run(&common, seed, plan.as_deref()),
        Command::Sweep { common, seeds } => sweep(&common, &seeds),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Usage(message)) => {
            eprintln!("eichhorn-sim: error: {message}");
            ExitCode::from(2)
        }
    }
}

fn kinds(counts: &BTreeMap<FaultKind, usize>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `run`: true when every oracle passed.
fn run(common: &Common, seed: u64, plan: Option<&str>) -> Result<bool, Usage> {
    let job = common.job()?;
    let mut simulation = common.simulation(seed, job)?;
    if let Some(spec) = plan {
        let plan = FaultPlan::parse_spec(spec).map_err(|e| Usage(format!("--plan: {e}")))?;
        simulation = simulation.with_plan(plan);
    }
    let plan = simulation.fault_plan();
    println!(
        "eichhorn-sim: job {job}, seed {seed}, {} node(s), faults: {}{}",
        common.nodes,
        common.faults.as_deref().unwrap_or("all"),
        common
            .sabotage
            .as_ref()
            .map(|s| format!(", sabotage: {s}"))
            .unwrap_or_default()
    );
    println!("fault plan: {plan}");
    println!("fault plan spec: {}", plan.spec());
    let started = Instant::now();
    let outcome = simulation.check_with(|env| job.build(env), &job.oracles());
    let wall = started.elapsed();
    let (verdict, trace_hash, virtual_elapsed) = match outcome {
        Ok(report) => {
            print_report(&report);
            ("pass", report.trace_hash, report.virtual_elapsed)
        }
        Err(SimulationError::Oracle(failure)) => {
            print_failure(common, &failure);
            let (hash, elapsed) = failure
                .run
                .as_ref()
                .map_or((0, Duration::ZERO), |r| (r.trace_hash, r.virtual_elapsed));
            ("fail", hash, elapsed)
        }
        Err(error) => return Err(Usage(error.to_string())),
    };
    println!(
        "RESULT job={job} seed={seed} verdict={verdict} trace_hash={trace_hash:016x} \
         virtual_s={:.3} wall_s={:.3}",
        virtual_elapsed.as_secs_f64(),
        wall.as_secs_f64()
    );
    Ok(verdict == "pass")
}

fn print_report(report: &CheckReport) {
    println!(
        "summary: {} rows committed exactly once; faults fired: {}; {} checkpoints; {} \
         recoveries; {:.3} s virtual (fault-free {:.3} s)",
        report.rows,
        kinds(&eichhorn_sim::check::fired_by_kind(&report.fired)),
        report.checkpoints,
        report.recoveries,
        report.virtual_elapsed.as_secs_f64(),
        report.fault_free_elapsed.as_secs_f64()
    );
    println!(
        "oracles: exactly-once, no-loss-no-duplicates, checkpoint-consistency, liveness, determinism: pass"
    );
}

fn print_failure(common: &Common, failure: &Failure) {
    println!("FAILED: {}", failure.finding);
    println!("  fault plan: {}", failure.plan);
    println!("  shrunk plan: {}", failure.shrunk);
    println!("  replay: {}", common.replay(failure.seed, None));
    println!(
        "  replay the shrunk plan: {}",
        common.replay(failure.seed, Some(&failure.shrunk))
    );
}

fn parse_seeds(seeds: &str) -> Result<(u64, u64), Usage> {
    let bad = |why: &str| {
        Usage(format!(
            "--seeds {seeds}: {why} (expected A..B, e.g. 0..99)"
        ))
    };
    let (a, b) = seeds.split_once("..").ok_or_else(|| bad("no '..'"))?;
    let a: u64 = a.trim().parse().map_err(|_| bad("A is not a number"))?;
    let b: u64 = b
        .trim()
        .trim_start_matches('=')
        .parse()
        .map_err(|_| bad("B is not a number"))?;
    if b < a {
        return Err(bad("B is below A"));
    }
    Ok((a, b))
}

/// What a sweep adds up.
#[derive(Default)]
struct Totals {
    passed: u64,
    failures: Vec<Failure>,
    fired: BTreeMap<FaultKind, usize>,
    checkpoints: u64,
    recoveries: u64,
    virtual_elapsed: Duration,
}

/// `sweep`: true when every seed passed.
fn sweep(common: &Common, seeds: &str) -> Result<bool, Usage> {
    let job = common.job()?;
    let (first, last) = parse_seeds(seeds)?;
    common.simulation(first, job)?;
    let count = last - first + 1;
    let oracles = job.oracles();
    let bar = indicatif::ProgressBar::new(count);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} seeds, {msg}",
        )
        .map_err(|e| Usage(format!("progress bar: {e}")))?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut totals = Totals::default();
    for seed in first..=last {
        let simulation = common.simulation(seed, job)?.without_shrinking();
        match simulation.check_with(|env| job.build(env), &oracles) {
            Ok(report) => {
                totals.passed += 1;
                for (kind, n) in eichhorn_sim::check::fired_by_kind(&report.fired) {
                    *totals.fired.entry(kind).or_default() += n;
                }
                totals.checkpoints += report.checkpoints;
                totals.recoveries += u64::from(report.recoveries);
                totals.virtual_elapsed += report.virtual_elapsed;
            }
            Err(SimulationError::Oracle(failure)) => {
                if let Some(run) = &failure.run {
                    for (kind, n) in eichhorn_sim::check::fired_by_kind(&run.fired) {
                        *totals.fired.entry(kind).or_default() += n;
                    }
                    totals.checkpoints += run.checkpoints;
                    totals.recoveries += u64::from(run.recoveries);
                    totals.virtual_elapsed += run.virtual_elapsed;
                }
                bar.println(format!("seed {seed}: {}", failure.finding));
                totals.failures.push(*failure);
            }
            Err(error) => {
                bar.abandon();
                return Err(Usage(format!("seed {seed}: {error}")));
            }
        }
        bar.set_message(format!("{} failed", totals.failures.len()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let wall = started.elapsed();
    let failed = totals.failures.len() as u64;
    let rows = [
        ("job", job.to_string()),
        ("nodes", common.nodes.to_string()),
        (
            "faults",
            common.faults.clone().unwrap_or_else(|| "all".into()),
        ),
        (
            "sabotage",
            common.sabotage.clone().unwrap_or_else(|| "none".into()),
        ),
        ("seeds run", count.to_string()),
        ("passed / failed", format!("{} / {failed}", totals.passed)),
        ("faults injected", kinds(&totals.fired)),
        ("checkpoints", totals.checkpoints.to_string()),
        ("recoveries", totals.recoveries.to_string()),
        (
            "virtual time",
            format!(
                "{:.1} s (faulted runs)",
                totals.virtual_elapsed.as_secs_f64()
            ),
        ),
        ("wall time", format!("{:.1} s", wall.as_secs_f64())),
        (
            "simulated s per wall s",
            format!(
                "{:.1}",
                totals.virtual_elapsed.as_secs_f64() / wall.as_secs_f64().max(1e-9)
            ),
        ),
        (
            "seeds per minute",
            format!("{:.0}", count as f64 * 60.0 / wall.as_secs_f64().max(1e-9)),
        ),
        ("failures", failed.to_string()),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("| {key:<width$} | {value}");
    }
    for failure in &totals.failures {
        println!(
            "failed seed {}: {}\n  replay: {}",
            failure.seed,
            failure.finding,
            common.replay(failure.seed, None)
        );
    }
    if let Some(first_failure) = totals.failures.first() {
        // Shrink the first failure only: every shrinking step reruns the job.
        let shrunk = common
            .simulation(first_failure.seed, job)?
            .check_with(|env| job.build(env), &oracles);
        match shrunk {
            Err(SimulationError::Oracle(failure)) => {
                println!(
                    "first failed seed {} shrunk: {}\n  shrunk plan: {}\n  replay the shrunk \
                     plan: {}",
                    failure.seed,
                    failure.finding,
                    failure.shrunk,
                    common.replay(failure.seed, Some(&failure.shrunk))
                );
            }
            Ok(_) => println!(
                "first failed seed {} passed when run again: not deterministic",
                first_failure.seed
            ),
            Err(error) => return Err(Usage(error.to_string())),
        }
    }
    let first_failed = totals
        .failures
        .first()
        .map_or_else(|| "none".to_string(), |f| f.seed.to_string());
    println!(
        "SWEEP job={job} seeds={count} passed={} failed={failed} first_failed_seed={first_failed}",
        totals.passed
    );
    Ok(failed == 0)
}
