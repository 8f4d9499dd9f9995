//! Batch word count over a text file, as Flink's `WordCount` example.
//!
//! ```text
//! cargo run --release -p eichhorn-examples --bin wordcount -- --input FILE [--output FILE] [--parallelism N]
//! ```
//!
//! The job is `read_text_file` (or the built-in Hamlet text without `--input`) -> `flat_map`
//! into `(word, 1)` -> `key_by(word)` -> rolling `sum` -> `collect_sink`. The rolling sum emits an
//! updated count for every occurrence; the program keeps the largest count per word (see
//! [`eichhorn_examples::final_counts`]) and prints one line `word count` per distinct word,
//! sorted by word, to stdout or to `--output`.
//!
//! ## Why the largest count is the final count at any parallelism
//!
//! `key_by` sends every occurrence of a word to the same `sum` subtask, which emits `1, 2, ..., n`
//! for that word. Updates of different words (and subtasks) interleave arbitrarily in the
//! collect sink, but a word's counts only grow, so the maximum is `n` in every interleaving.
//!
//! Errors (a missing input file, an unwritable output) are printed as `error: <message>` on
//! stderr, and the exit code is 1.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use eichhorn::prelude::*;
use eichhorn_examples::{
    HAMLET_LINES, final_counts, init_tracing, rolling_word_counts, run_example, write_counts,
};

/// Counts the words of a text file (or of a built-in excerpt of Hamlet) with an Eichhorn job.
///
/// Splits every line into words (maximal runs of letters and digits, lowercased), counts them
/// with a keyed rolling sum, and prints one `word count` line per distinct word, sorted by word,
/// to stdout or to --output. Without --input it counts the opening of Hamlet's soliloquy, as
/// Flink's WordCount example does.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    /// The text file to count; without it, a built-in excerpt of Hamlet is counted.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Where to write the counts (one `word count` line per word); stdout without it.
    #[arg(long)]
    output: Option<PathBuf>,
    /// The parallelism of the job's operators, 1 to 128 (the file source always runs at 1).
    #[arg(long, default_value_t = 1, value_parser = eichhorn_examples::parallelism_parser())]
    parallelism: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    run_example(run).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let env = StreamEnv::new();
    args.ops.apply(&env);
    env.set_parallelism(args.parallelism);
    let lines = match &args.input {
        Some(path) => env.read_text_file(path.clone()),
        None => env.from_collection(HAMLET_LINES.iter().map(|line| line.to_string()).collect()),
    };
    let updates = rolling_word_counts(lines).collect_sink();
    // The job's error already names the failing operator and, for a missing file, the path.
    env.execute("WordCount").await?;

    let counts = final_counts(updates.take());
    match &args.output {
        Some(path) => {
            let file = File::create(path)
                .with_context(|| format!("cannot create output file '{}'", path.display()))?;
            write_counts(&counts, BufWriter::new(file))
                .with_context(|| format!("cannot write output file '{}'", path.display()))?;
        }
        None => match write_counts(&counts, BufWriter::new(io::stdout().lock())) {
            // A closed pipe (`wordcount | head`) means the reader has seen enough.
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {}
            result => result.context("cannot write to stdout")?,
        },
    }
    Ok(())
}
