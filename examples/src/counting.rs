//! The pieces of `checkpointed_count`: the `key,value` input format, the running sum per key in
//! keyed state, and the one-time injected failure.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use eichhorn::checkpoint::JobId;
use eichhorn::checkpoint::damage::{CheckpointDamage, newest_complete_checkpoint};
use eichhorn::prelude::*;
use eichhorn::state::ValueState;

/// A line of the input that is not `key,value`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BadLine {
    /// The line number, counting from 1.
    pub line_number: u64,
    /// Why it was rejected.
    pub reason: String,
    /// The line as read.
    pub line: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: {}: {}",
            self.line_number, self.reason, self.line
        )
    }
}

/// Parses `key,value` (`value` a 64-bit integer; the key is everything before the last comma
/// and must not be empty).
///
/// # Examples
///
/// ```
/// use eichhorn_examples::counting::parse_key_value;
///
/// assert_eq!(parse_key_value("apple,3"), Ok(("apple".to_string(), 3)));
/// assert!(parse_key_value("apple").is_err());
/// assert!(parse_key_value("apple,x").is_err());
/// assert!(parse_key_value(",3").is_err());
/// ```
pub fn parse_key_value(line: &str) -> Result<(String, i64), String> {
    let Some((key, value)) = line.rsplit_once(',') else {
        return Err("expected 'key,value'".to_string());
    };
    if key.is_empty() {
        return Err("empty key".to_string());
    }
    let value = value
        .trim()
        .parse::<i64>()
        .map_err(|e| format!("value '{value}' is not a 64-bit integer ({e})"))?;
    Ok((key.to_string(), value))
}

/// The output line of one update: `key,running_sum`.
pub fn output_line(key: &str, sum: i64) -> String {
    format!("{key},{sum}")
}

/// The expected committed output for `lines` (as a sorted multiset of lines): the running sum
/// per key after each valid record, in input order. The oracle of the tests.
pub fn expected_output<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut sums = std::collections::BTreeMap::<String, i64>::new();
    let mut out = Vec::new();
    for line in lines {
        if let Ok((key, value)) = parse_key_value(line) {
            let sum = sums.entry(key.clone()).or_insert(0);
            *sum = sum.wrapping_add(value);
            out.push(output_line(&key, *sum));
        }
    }
    out.sort();
    out
}

/// Parses numbered lines at parallelism 1; bad lines go to a side output.
#[operator]
#[derive(Debug, Clone)]
pub struct ParseKeyValues {
    /// Where bad lines go.
    bad: OutputTag<BadLine>,
}

impl ProcessFunction<(u64, String)> for ParseKeyValues {
    type Out = (String, i64);

    fn process_element(
        &mut self,
        (line_number, line): (u64, String),
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, (String, i64)>,
    ) {
        match parse_key_value(&line) {
            Ok(record) => out.collect(record),
            Err(reason) => ctx.output(
                &self.bad,
                BadLine {
                    line_number,
                    reason,
                    line,
                },
            ),
        }
    }
}

/// A failure to inject once per process: subtask 0 panics on its `after`-th record, after
/// damaging the newest checkpoint of the run if asked to.
#[derive(Debug, Clone)]
pub struct InjectedFailure {
    after: u64,
    seen: Arc<AtomicU64>,
    fired: Arc<AtomicBool>,
    /// The checkpoint directory (runs below it) and the damage to do before failing.
    damage: Option<(PathBuf, CheckpointDamage)>,
}

impl InjectedFailure {
    /// Fails on the `after`-th record of subtask 0 (counting from 1).
    pub fn new(after: u64) -> Self {
        Self {
            after,
            seen: Arc::new(AtomicU64::new(0)),
            fired: Arc::new(AtomicBool::new(false)),
            damage: None,
        }
    }

    /// Before failing, damages the newest checkpoint of the run in `checkpoint_dir`.
    #[must_use]
    pub fn damaging(mut self, checkpoint_dir: PathBuf, damage: CheckpointDamage) -> Self {
        self.damage = Some((checkpoint_dir, damage));
        self
    }

    /// Counts a record of subtask `subtask` of run `job_id`; panics (once) when the failure
    /// is due.
    fn on_record(&self, subtask: u32, job_id: JobId) {
        if subtask != 0 || self.fired.load(Ordering::SeqCst) {
            return;
        }
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.after
            && !self.fired.swap(true, Ordering::SeqCst)
        {
            if let Some((dir, damage)) = &self.damage {
                let run = dir.join(job_id.to_string());
                match newest_complete_checkpoint(&run) {
                    Some(folder) => match damage.apply(&folder) {
                        Ok(()) => eprintln!("injected damage: {damage} in {}", folder.display()),
                        Err(error) => eprintln!("injected damage: none done: {error}"),
                    },
                    None => eprintln!(
                        "injected damage: none done: no complete checkpoint in {}",
                        run.display()
                    ),
                }
            }
            eprintln!(
                "injected failure: subtask 0 of the sum operator fails on its record {}",
                self.after
            );
            panic!("injected failure on record {}", self.after);
        }
    }
}

/// The running sum per key, in keyed `ValueState<i64>`; emits `key,running_sum` per record.
/// `RunningSum::new(failure)` optionally fails once.
#[operator(uid = "running-sum")]
#[derive(Debug, Clone)]
pub struct RunningSum {
    #[state(name = "running-sum")]
    sum: ValueState<i64>,
    /// The failure to inject, if any.
    failure: Option<InjectedFailure>,
    #[transient]
    subtask: u32,
    #[transient]
    job_id: JobId,
}

impl KeyedProcessFunction for RunningSum {
    type Key = String;
    type In = (String, i64);
    type Out = String;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.subtask = ctx.subtask_index;
        self.job_id = ctx.job_id;
        Ok(())
    }

    fn process_element(
        &mut self,
        (key, value): (String, i64),
        ctx: &mut KeyedContext<'_, '_, String>,
        out: &mut Collector<'_, String>,
    ) {
        if let Some(failure) = &self.failure {
            failure.on_record(self.subtask, self.job_id);
        }
        let sum = self.sum.value(ctx).unwrap_or(0).wrapping_add(value);
        self.sum.update(ctx, sum);
        out.collect(output_line(&key, sum));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_output_is_the_running_sums() {
        let lines = ["a,1", "b,2", "bad", "a,3", "b,-2"];
        assert_eq!(expected_output(lines), vec!["a,1", "a,4", "b,0", "b,2"]);
    }

    #[test]
    fn keys_may_contain_commas() {
        assert_eq!(parse_key_value("x,y,5"), Ok(("x,y".to_string(), 5)));
    }
}
