//! Login-failure detection with CEP (the seed's `LoginFailWithCep`): two consecutive failed
//! logins of one user within a time bound.
//!
//! ```text
//! cargo run --release -p eichhorn-examples --bin login_fail -- --input FILE [--within-ms N]
//!     [--out-of-orderness-ms N] [--parallelism N]
//! ```
//!
//! The input holds one login `user_id,ip,event_type,timestamp_s` per line (`event_type` is
//! `fail` or `success`, `timestamp_s` an integer number of seconds); malformed lines (empty
//! ones included) are reported on stderr as `line N: <reason>: <line>` (lines counting from 1)
//! and skipped. Event time is `timestamp_s * 1000`. The source, the parser and the timestamp
//! assigner run at parallelism 1 and emit a watermark after every record: the largest
//! timestamp so far minus `--out-of-orderness-ms` (default 0) minus 1. A record at or below
//! the watermark when it arrives is late: dropped from matching, counted, and reported on
//! stderr through the late side output.
//!
//! The pattern `begin("begin").where(fail).next("next").where(fail).within(--within-ms)`
//! (default 10000, exclusive) runs keyed by user at `--parallelism` (default 1), with no skip
//! after a match (three consecutive failures give two matches). Each match prints
//! `user_id,first_timestamp_s,second_timestamp_s` on stdout; the end of input flushes every
//! pending match.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use eichhorn::cep::{CEP, Pattern};
use eichhorn::connectors::NumberedFileSource;
use eichhorn::prelude::*;
use eichhorn_examples::{init_tracing, print_lines, run_example};
use serde::{Deserialize, Serialize};

/// Detects two consecutive failed logins of one user within a time bound.
///
/// Reads one login `user_id,ip,event_type,timestamp_s` per line (`event_type`: fail or
/// success) and prints `user_id,first_timestamp_s,second_timestamp_s` for every two
/// consecutive failures (in event time) less than --within-ms apart. Malformed lines are
/// reported on stderr as `line N: reason: line` and skipped; late records are counted and
/// reported on stderr.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    /// The CSV file of logins `user_id,ip,event_type,timestamp_s`.
    #[arg(long)]
    input: PathBuf,
    /// The time bound of a match in milliseconds (exclusive): second - first < within.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..))]
    within_ms: i64,
    /// How far behind the largest timestamp seen the watermark stays, in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    out_of_orderness_ms: i64,
    /// The parallelism of the pattern matching, 1 to 128 (source, parser and assigner run at 1).
    #[arg(long, default_value_t = 1, value_parser = eichhorn_examples::parallelism_parser())]
    parallelism: u32,
}

/// One login attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Login {
    user_id: String,
    ip: String,
    failed: bool,
    timestamp_s: i64,
    line_number: u64,
}

impl Login {
    /// Parses `user_id,ip,event_type,timestamp_s`; the error says what is wrong.
    fn parse(line: &str, line_number: u64) -> Result<Self, String> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            return Err("empty line".into());
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [user_id, ip, event_type, timestamp_s] = fields[..] else {
            return Err(format!("expected 4 fields, found {}", fields.len()));
        };
        if user_id.is_empty() {
            return Err("empty user_id".into());
        }
        let failed = match event_type {
            "fail" => true,
            "success" => false,
            other => return Err(format!("event_type '{other}' is neither fail nor success")),
        };
        let timestamp_s: i64 = timestamp_s
            .parse()
            .map_err(|_| format!("timestamp_s '{timestamp_s}' is not an integer"))?;
        if timestamp_s.checked_mul(1000).is_none() {
            return Err(format!(
                "timestamp_s {timestamp_s} is out of range in milliseconds"
            ));
        }
        Ok(Self {
            user_id: user_id.to_string(),
            ip: ip.to_string(),
            failed,
            timestamp_s,
            line_number,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    run_example(run).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    File::open(&args.input)
        .with_context(|| format!("cannot open input file '{}'", args.input.display()))?;
    let env = StreamEnv::new();
    args.ops.apply(&env);
    env.set_parallelism(args.parallelism);
    let logins = env
        .add_source(NumberedFileSource::new(args.input.clone()), "logins")
        .flat_map(
            |(line_number, line): (u64, String)| match Login::parse(&line, line_number) {
                Ok(login) => Some(login),
                Err(reason) => {
                    eprintln!("line {line_number}: {reason}: {line}");
                    None
                }
            },
        )
        .name("Parse Logins")
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(args.out_of_orderness_ms)
                .with_timestamp_assigner(|login: &Login, _| login.timestamp_s * 1000),
        )
        .set_parallelism(1)
        .key_by(|login: &Login| login.user_id.clone());
    let pattern = Pattern::begin("begin")
        .where_(|login: &Login| login.failed)
        .next("next")
        .where_(|login: &Login| login.failed)
        .within(args.within_ms);
    let late = OutputTag::<Login>::new("late-logins");
    let alerts = CEP::pattern(logins, pattern)
        .side_output_late_data(&late)
        .select(|m| {
            let first = m.first("begin").map_or(0, |l| l.timestamp_s);
            let second = m.first("next").map_or(0, |l| l.timestamp_s);
            let user = m
                .first("begin")
                .map(|l| l.user_id.clone())
                .unwrap_or_default();
            format!("{user},{first},{second}")
        });
    let late_records = alerts.side_output(&late).collect_sink();
    let alerts = alerts.collect_sink();
    env.execute("Login Fail").await?;
    print_lines(alerts.take())?;
    let late_records = late_records.take();
    for login in &late_records {
        eprintln!(
            "late: line {}: {},{},{},{}",
            login.line_number,
            login.user_id,
            login.ip,
            if login.failed { "fail" } else { "success" },
            login.timestamp_s
        );
    }
    eprintln!("late records: {}", late_records.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Login;

    #[test]
    fn parses_logins_and_names_what_is_malformed() {
        let login = Login::parse("u1,10.0.0.1,fail,42\r", 3).expect("valid");
        assert_eq!(
            (login.user_id.as_str(), login.failed, login.timestamp_s),
            ("u1", true, 42)
        );
        for (line, reason) in [
            ("", "empty line"),
            ("u1,ip,fail", "expected 4 fields, found 3"),
            ("u1,ip,maybe,1", "neither fail nor success"),
            ("u1,ip,fail,1.5", "not an integer"),
            (",ip,fail,1", "empty user_id"),
            ("u1,ip,fail,9223372036854775807", "out of range"),
        ] {
            let error = Login::parse(line, 1).expect_err(line);
            assert!(error.contains(reason), "{line}: {error}");
        }
    }
}
