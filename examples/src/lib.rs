//! Shared pieces of the Eichhorn examples: the word splitting, the built-in text and the
//! reduction of rolling counts to final counts; the sensor readings of the window and
//! side-output examples live in [`sensors`].
//!
//! The binaries in `src/bin/` are thin: they declare an Eichhorn job and do I/O. Everything that
//! decides *what* the result is lives here as plain functions, so the binaries and the tests in
//! `tests/` agree on one definition and the functions can be unit-tested without running a job.
//!
//! ## Definitions
//!
//! - A *word* is a maximal run of characters for which [`char::is_alphanumeric`] holds, then
//!   lowercased with [`str::to_lowercase`] (split first, lowercase second).
//! - The *final count* of a word is the largest rolling count seen for it. A rolling sum emits
//!   `1, 2, ..., n` for a word that occurs `n` times, so the largest is `n` whatever the order
//!   the updates arrive in.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use eichhorn::DataStream;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

pub mod counting;
pub mod kafka_readings;
pub mod sensors;

/// The operations flags every example takes (`#[command(flatten)]` into its arguments).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OpsArgs {
    /// Serve the REST API, Prometheus metrics (`/metrics`) and the web dashboard (`/`) on ADDR,
    /// e.g. 127.0.0.1:8081, while the job runs.
    #[arg(long, value_name = "ADDR")]
    pub rest: Option<String>,
}

impl OpsArgs {
    /// Applies the flags to `env`.
    ///
    /// # Examples
    ///
    /// ```
    /// use clap::Parser;
    /// use eichhorn_examples::OpsArgs;
    ///
    /// #[derive(Parser)]
    /// struct Args {
    ///     #[command(flatten)]
    ///     ops: OpsArgs,
    /// }
    ///
    /// let args = Args::parse_from(["example", "--rest", "127.0.0.1:0"]);
    /// assert_eq!(args.ops.rest.as_deref(), Some("127.0.0.1:0"));
    /// args.ops.apply(&eichhorn::StreamEnv::new());
    /// ```
    pub fn apply(&self, env: &eichhorn::StreamEnv) {
        if let Some(addr) = &self.rest {
            env.set_rest_addr(addr.clone());
        }
    }
}

/// The built-in input of `wordcount` when no `--input` is given: the opening of Hamlet's
/// soliloquy (Act III, Scene 1; public domain), the text Flink's `WordCount` example counts by
/// default.
pub const HAMLET_LINES: &[&str] = &[
    "To be, or not to be,--that is the question:--",
    "Whether 'tis nobler in the mind to suffer",
    "The slings and arrows of outrageous fortune",
    "Or to take arms against a sea of troubles,",
    "And by opposing end them?--To die,--to sleep,--",
    "No more; and by a sleep to say we end",
    "The heartache, and the thousand natural shocks",
    "That flesh is heir to,--'tis a consummation",
    "Devoutly to be wish'd. To die,--to sleep;--",
    "To sleep! perchance to dream:--ay, there's the rub;",
    "For in that sleep of death what dreams may come,",
    "When we have shuffled off this mortal coil,",
    "Must give us pause: there's the respect",
    "That makes calamity of so long life;",
];

/// The words of `line`, in order: the maximal runs of alphanumeric characters, lowercased.
///
/// # Examples
///
/// ```
/// use eichhorn_examples::words;
///
/// let found: Vec<String> = words("To be, or NOT to be: Straße 42!").collect();
/// assert_eq!(found, ["to", "be", "or", "not", "to", "be", "straße", "42"]);
/// ```
pub fn words(line: &str) -> impl Iterator<Item = String> {
    line.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
}

/// The final count of every word from rolling `(word, count)` updates: the largest count seen
/// per word, sorted by word (byte order).
///
/// Taking the largest count (rather than the last one received) keeps the result independent of
/// how the updates of different subtasks interleave: one word's counts only grow.
///
/// # Examples
///
/// ```
/// use eichhorn_examples::final_counts;
///
/// let updates = [("b", 1), ("a", 1), ("b", 2), ("a", 2), ("b", 3)];
/// let counts = final_counts(updates.map(|(w, c)| (w.to_string(), c)));
/// assert_eq!(counts.into_iter().collect::<Vec<_>>(), [("a".to_string(), 2), ("b".to_string(), 3)]);
/// ```
pub fn final_counts(updates: impl IntoIterator<Item = (String, u64)>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (word, count) in updates {
        let entry = counts.entry(word).or_insert(count);
        *entry = (*entry).max(count);
    }
    counts
}

/// Writes one line `word count` per entry of `counts`, in the map's (sorted) order.
///
/// # Errors
///
/// Any error of `writer`.
///
/// # Examples
///
/// ```
/// use std::collections::BTreeMap;
/// use eichhorn_examples::write_counts;
///
/// let counts = BTreeMap::from([("be".to_string(), 2), ("to".to_string(), 2)]);
/// let mut out = Vec::new();
/// write_counts(&counts, &mut out).unwrap();
/// assert_eq!(String::from_utf8(out).unwrap(), "be 2\nto 2\n");
/// ```
pub fn write_counts(counts: &BTreeMap<String, u64>, mut writer: impl Write) -> io::Result<()> {
    for (word, count) in counts {
        writeln!(writer, "{word} {count}")?;
    }
    writer.flush()
}

/// Writes `items` to stdout, one per line (`Display`), in order.
///
/// A closed pipe (`example | head`) is not an error: the reader has seen enough.
///
/// # Errors
///
/// Any other error writing to stdout.
pub fn print_lines<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> anyhow::Result<()> {
    let mut writer = io::BufWriter::new(io::stdout().lock());
    let written = items
        .into_iter()
        .try_for_each(|item| writeln!(writer, "{item}"))
        .and_then(|()| writer.flush());
    match written {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("cannot write to stdout"),
    }
}

/// The largest `--parallelism` the examples accept: Eichhorn's default max parallelism (the
/// number of key groups), which no operator's parallelism may exceed. The examples do not change
/// the max parallelism.
pub const PARALLELISM_MAX: u32 = eichhorn::state::DEFAULT_MAX_PARALLELISM;

// The `--parallelism` help texts say "1 to 128".
const _: () = assert!(
    PARALLELISM_MAX == 128,
    "update the --parallelism help texts"
);

/// The clap parser of `--parallelism`: an integer from 1 to [`PARALLELISM_MAX`], so a value the
/// job would reject is a usage error naming the range, before anything runs.
pub fn parallelism_parser() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=i64::from(PARALLELISM_MAX))
}

/// The log level [`init_tracing`] uses when `RUST_LOG` is not set: restarts, damaged
/// checkpoints, skipped input and anything more informative show by default.
pub const DEFAULT_LOG_LEVEL: LevelFilter = LevelFilter::INFO;

/// Sends log output to stderr, filtered by `RUST_LOG` (default: [`DEFAULT_LOG_LEVEL`]), so
/// stdout only carries the example's results. Every example binary calls it first thing.
///
/// Eichhorn reports restarts, damaged checkpoints and skipped records through `tracing`, which
/// prints nothing unless the application installs a subscriber. An application of its own
/// needs these lines (with `tracing-subscriber`'s `env-filter` feature):
///
/// ```
/// use tracing_subscriber::{EnvFilter, filter::LevelFilter};
///
/// let filter = EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy();
/// tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
/// ```
pub fn init_tracing() {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let shown = filter.to_string();
    // A subscriber that is already installed (e.g. by a test harness) is kept.
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .try_init();
    if installed.is_ok() {
        tracing::debug!("logging to stderr with filter '{shown}'");
    }
}

/// The filter for `rust_log` (the value of `RUST_LOG`), as `EnvFilter::from_env_lossy` builds
/// it: its valid directives (invalid ones are reported on stderr and ignored), or
/// [`DEFAULT_LOG_LEVEL`] when it has none (unset, blank or all invalid).
fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    EnvFilter::builder()
        .with_default_directive(DEFAULT_LOG_LEVEL.into())
        .parse_lossy(rust_log.unwrap_or_default().trim())
}

/// The word-count pipeline both examples share: every word of every line, keyed by word, with a
/// rolling count (one `(word, count)` update per occurrence).
pub fn rolling_word_counts(lines: DataStream<String>) -> DataStream<(String, u64)> {
    lines
        .flat_map(|line: String| words(&line).map(|word| (word, 1u64)).collect::<Vec<_>>())
        .key_by(|(word, _)| word.clone())
        .sum(|(_, count)| count)
}

/// Turns an example's outcome into its exit code, printing the error (with its causes) on stderr.
pub fn exit_code(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an example: parses its arguments with `A` and runs `run`, in this process or, with the
/// role flags of [`eichhorn::cluster`] (`--jobmanager --bind ADDR`, `--taskmanager --join ADDR
/// --slots N`), as a JobManager or TaskManager of a cluster. Returns the exit code
/// ([`exit_code`]'s, or 2 for a command line with role flags that do not fit together).
pub async fn run_example<A, F, Fut>(run: F) -> ExitCode
where
    A: clap::Parser,
    F: Fn(A) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    eichhorn::cluster::run_application(|args: Vec<String>| {
        let job = run(A::parse_from(args));
        async move { exit_code(job.await) }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(line: &str) -> Vec<String> {
        words(line).collect()
    }

    #[test]
    fn splits_on_every_non_alphanumeric_character() {
        assert_eq!(
            collect("a,b;c--d  e\tf'g"),
            ["a", "b", "c", "d", "e", "f", "g"]
        );
        assert_eq!(collect("wish'd"), ["wish", "d"]);
        assert_eq!(collect("under_score"), ["under", "score"]);
    }

    #[test]
    fn empty_and_separator_only_lines_have_no_words() {
        assert!(collect("").is_empty());
        assert!(collect("  ,;--!? \r").is_empty());
    }

    #[test]
    fn lowercases_unicode_and_keeps_digits() {
        assert_eq!(
            collect("ÉCOLE Straße 2024 x86"),
            ["école", "straße", "2024", "x86"]
        );
        assert_eq!(collect("ΣΟΦΊΑ"), ["σοφία"]);
    }

    #[test]
    fn splits_before_lowercasing() {
        // 'İ' lowercases to "i\u{307}"; the combining dot is not alphanumeric, but the word was
        // already delimited, so it stays one word.
        assert_eq!(collect("İstanbul"), ["i\u{307}stanbul"]);
    }

    #[test]
    fn final_counts_take_the_largest_update_per_word() {
        let updates = [("x", 2), ("y", 1), ("x", 1), ("x", 3), ("y", 2)];
        let counts = final_counts(updates.map(|(w, c)| (w.to_string(), c)));
        assert_eq!(counts.get("x"), Some(&3));
        assert_eq!(counts.get("y"), Some(&2));
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn counts_are_written_in_byte_order() {
        let counts = final_counts(["b", "a", "é", "z"].map(|w| (w.to_string(), 1)));
        let mut out = Vec::new();
        write_counts(&counts, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a 1\nb 1\nz 1\né 1\n");
    }

    #[test]
    fn logs_show_info_by_default_and_follow_rust_log() {
        for unset in [None, Some(""), Some("  "), Some("eichhorn=lolwut")] {
            assert_eq!(
                log_filter(unset).max_level_hint(),
                Some(LevelFilter::INFO),
                "{unset:?}"
            );
        }
        assert_eq!(
            log_filter(Some("error")).max_level_hint(),
            Some(LevelFilter::ERROR)
        );
        assert_eq!(
            log_filter(Some("eichhorn=debug")).max_level_hint(),
            Some(LevelFilter::DEBUG)
        );
    }

    #[test]
    fn builtin_text_has_words() {
        let count = HAMLET_LINES.iter().flat_map(|line| words(line)).count();
        assert!(count > 100, "only {count} words");
    }
}
