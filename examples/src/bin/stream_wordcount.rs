//! Streaming word count over a TCP socket, as Flink's `SocketWindowWordCount` tutorial, with
//! rolling counts instead of windows.
//!
//! ```text
//! cargo run --release -p eichhorn-examples --bin stream_wordcount -- [--host HOST] [--port PORT] [--parallelism N]
//!     [--fail-on-invalid-utf8]
//! ```
//!
//! The job is `socket_text_stream(host, port)` -> `flat_map` into `(word, 1)` -> `key_by(word)`
//! -> rolling `sum` -> `map` to `"word count"` -> `print`. Every word received prints its updated
//! count at once; at `--parallelism` above 1 each line starts with `N> `, the printing subtask's
//! number (as Flink's `print()`). The job runs until the peer closes the connection.
//!
//! A received line that is not valid UTF-8 is skipped, and reported on stderr as a warning with
//! its line number and the address; the lines around it are counted. With
//! `--fail-on-invalid-utf8` such a line fails the job instead (exit code 1), with an error
//! naming the line number and the address.
//!
//! ## Try it
//!
//! In one terminal, start a server that sends what you type (port 7777 is the default):
//!
//! ```text
//! nc -lk 7777
//! ```
//!
//! In another, start the job, then type lines into the first terminal:
//!
//! ```text
//! cargo run --release -p eichhorn-examples --bin stream_wordcount
//! ```
//!
//! Stop `nc` (Ctrl-C) to close the connection; the job then finishes and the program exits.
//! An unreachable server is printed as `error: <message>` on stderr, and the exit code is 1.

use std::process::ExitCode;

use clap::Parser;
use eichhorn::connectors::SocketSource;
use eichhorn::prelude::*;
use eichhorn_examples::{init_tracing, rolling_word_counts, run_example};

/// Counts the words received on a TCP connection and prints every updated count.
///
/// Connects to --host and --port (start a server first, e.g. `nc -lk 7777`), splits every
/// received line into words and prints `word count` each time a word's count grows, until the
/// server closes the connection. A line that is not valid UTF-8 is skipped with a warning on
/// stderr. Flink's SocketWindowWordCount, with rolling counts instead of windows.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    /// The host to connect to.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// The port to connect to, 1 to 65535.
    #[arg(long, default_value_t = 7777, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// The parallelism of the job's operators, 1 to 128 (the socket source always runs at 1).
    #[arg(long, default_value_t = 1, value_parser = eichhorn_examples::parallelism_parser())]
    parallelism: u32,
    /// Fail the job on a received line that is not valid UTF-8 (by default it is skipped with a
    /// warning naming its line number).
    #[arg(long)]
    fail_on_invalid_utf8: bool,
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
    let lines = if args.fail_on_invalid_utf8 {
        let source = SocketSource::new(args.host.clone(), args.port).fail_on_invalid_utf8(true);
        // One connection, one reader: the source runs at parallelism 1, as socket_text_stream's.
        env.add_source(source, &format!("Socket {}:{}", args.host, args.port))
            .set_parallelism(1)
    } else {
        env.socket_text_stream(&args.host, args.port)
    };
    rolling_word_counts(lines)
        .map(|(word, count)| format!("{word} {count}"))
        .print();
    env.execute("Socket WordCount").await?;
    Ok(())
}
