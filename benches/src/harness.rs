//! What the benchmark binaries share: argument parsers, the job's environment (scratch
//! directory for LMDB and checkpoints), a timed run on a multi-thread runtime, and the fields
//! of the RESULT line that every binary prints alike.

use std::num::{NonZeroU32, NonZeroU64};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eichhorn::prelude::*;

/// Parses a count that must be at least 1 (a clap `value_parser`).
///
/// # Errors
///
/// Not a number, or 0.
pub fn positive_u64(text: &str) -> Result<NonZeroU64, String> {
    let value: u64 = text
        .parse()
        .map_err(|error| format!("'{text}' is not a non-negative integer: {error}"))?;
    NonZeroU64::new(value).ok_or_else(|| "must be at least 1".to_string())
}

/// Parses a parallelism, which must be at least 1 (a clap `value_parser`).
///
/// # Errors
///
/// Not a number, 0, or more than 32 bits.
pub fn positive_u32(text: &str) -> Result<NonZeroU32, String> {
    let value = positive_u64(text)?;
    u32::try_from(value.get())
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| format!("{value} does not fit in 32 bits"))
}

/// Sets the state backend and, with an interval, periodic checkpoints; LMDB's working files
/// and the checkpoints go to the returned temporary directory, removed when it is dropped.
///
/// # Errors
///
/// The temporary directory cannot be created.
pub fn prepare_env(
    env: &StreamEnv,
    state_backend: StateBackendKind,
    checkpoint_interval_ms: Option<u64>,
) -> anyhow::Result<tempfile::TempDir> {
    env.set_state_backend(state_backend);
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    env.configure(|config| config.local_state_dir = Some(scratch.path().join("local")));
    if let Some(interval) = checkpoint_interval_ms {
        env.enable_checkpointing(interval);
        env.set_checkpoint_storage(scratch.path().join("checkpoints"));
    }
    Ok(scratch)
}

/// Runs the job on a new multi-thread runtime and times it, from submission to its end.
///
/// # Errors
///
/// The runtime cannot start, the job fails, or it ends other than finished.
pub fn execute_timed(env: &StreamEnv, job_name: &str) -> anyhow::Result<(JobResult, Duration)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let (result, wall) = runtime.block_on(async {
        let start = Instant::now();
        let result = env.execute(job_name).await;
        (result, start.elapsed())
    });
    let result = result.with_context(|| format!("job '{job_name}' failed"))?;
    if result.status != JobStatus::Finished {
        bail!(
            "job '{job_name}' ended as {:?}, not Finished",
            result.status
        );
    }
    Ok((result, wall))
}

/// The CPU time (user and system, every thread) this process has used so far, in seconds, from
/// `/proc/self/stat` (Linux; its `utime` and `stime` count ticks of 1/100 s, `USER_HZ`).
/// `None` where the file cannot be read or parsed.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat_cpu_ticks(&stat).map(|ticks| ticks as f64 / 100.0)
}

/// `utime + stime` of a `/proc/<pid>/stat` line: fields 14 and 15, counted after the command
/// name, which is in parentheses and may contain spaces.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The `cpu_s=` field of a RESULT line: the CPU seconds between two readings of
/// [`process_cpu_seconds`], or `unknown`.
pub fn cpu_field(before: Option<f64>, after: Option<f64>) -> String {
    match (before, after) {
        (Some(before), Some(after)) => format!("cpu_s={:.3}", after - before),
        _ => "cpu_s=unknown".to_string(),
    }
}

/// The `state_backend=` value of a RESULT line.
pub fn backend_name(kind: StateBackendKind) -> &'static str {
    match kind {
        StateBackendKind::Memory => "memory",
        StateBackendKind::Lmdb => "lmdb",
    }
}

/// The `checkpoint_interval=` value of a RESULT line: `off` or `<ms>ms`.
pub fn checkpoint_interval_field(interval_ms: Option<u64>) -> String {
    interval_ms.map_or_else(|| "off".to_string(), |ms| format!("{ms}ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_name_the_problem() {
        assert_eq!(positive_u64("7").map(NonZeroU64::get), Ok(7));
        assert_eq!(positive_u64("0"), Err("must be at least 1".to_string()));
        assert!(positive_u64("x").unwrap_err().contains("'x'"));
        assert!(positive_u32("5000000000").unwrap_err().contains("32 bits"));
        assert_eq!(checkpoint_interval_field(Some(20)), "20ms");
        assert_eq!(checkpoint_interval_field(None), "off");
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        let stat = "42 (a b) c) R 1 2 3 4 5 6 7 8 9 10 250 17 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(267));
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) R 1"), None);
        assert_eq!(cpu_field(Some(1.0), Some(3.5)), "cpu_s=2.500");
        assert_eq!(cpu_field(None, Some(3.5)), "cpu_s=unknown");
        assert!(process_cpu_seconds().is_some_and(|s| s >= 0.0));
    }
}
