//! The SQL client: runs Flink-style SQL on Eichhorn, from a file, the command line or a prompt.
//!
//! ```text
//! cargo run --release -p eichhorn-examples --bin sql -- [--file F] [-e STMT] [--mode table|changelog] [--parallelism N]
//! ```
//!
//! Statements are separated by semicolons. `CREATE TABLE`, `CREATE VIEW` print nothing; a query
//! runs as a job and prints, in `--mode table`, a header line with the column names and one line
//! per row of the final result (comma-separated), or in `--mode changelog` one line per change
//! (`+I,...`, `-U,...`, `+U,...`, `-D,...`). `EXPLAIN`, `SHOW TABLES` and `DESCRIBE` print text.
//! Without `--file` or `-e`, an interactive prompt with line editing and history
//! (`~/.eichhorn_sql_history`) reads statements until `QUIT;` or end of input.
//!
//! Late rows that an event-time operator dropped are reported on stderr, one line per
//! operator: `warning: WindowAggregate(TUMBLE) dropped 3 late rows (...)`.
//!
//! Errors go to stderr as `error: <message>` (SQL errors with their line and column), and the
//! exit code is 1.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use eichhorn::StreamEnv;
use eichhorn_examples::{init_tracing, run_example};
use eichhorn_sql::{Row, RowKind, TableEnv, TableResult, types::materialize};

/// Runs SQL statements (Flink's dialect) as Eichhorn jobs and prints their results.
///
/// Give a script with --file, statements with -e, or neither for an interactive prompt.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    /// A file of statements separated by semicolons.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Statements to run (after --file's).
    #[arg(short = 'e', long = "execute")]
    execute: Option<String>,
    /// How query results print: the final rows (table) or every change (changelog).
    #[arg(long, value_enum, default_value_t = Mode::Table)]
    mode: Mode,
    /// The parallelism of the query operators, 1 to 128 (file sources always run at 1).
    #[arg(long, default_value_t = 1, value_parser = eichhorn_examples::parallelism_parser())]
    parallelism: u32,
}

/// How a query's result prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// A header line, then the rows of the final result.
    Table,
    /// One line per change: `+I,...`, `-U,...`, `+U,...`, `-D,...`.
    Changelog,
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
    let mut tenv = TableEnv::new(&env);
    let mode = args.mode;
    if args.file.is_none() && args.execute.is_none() {
        return interactive(&mut tenv, mode).await;
    }
    if let Some(file) = &args.file {
        let script = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read SQL file '{}'", file.display()))?;
        run_script(&mut tenv, &script, mode)
            .await
            .with_context(|| format!("{}", file.display()))?;
    }
    if let Some(statements) = &args.execute {
        run_script(&mut tenv, statements, mode)
            .await
            .context("-e")?;
    }
    Ok(())
}

async fn run_script(tenv: &mut TableEnv, script: &str, mode: Mode) -> anyhow::Result<()> {
    let mut failure = None;
    tenv.execute_script(script, |result| {
        if failure.is_none()
            && let Err(e) = print_result(result, mode)
        {
            failure = Some(e);
        }
    })
    .await?;
    failure.map_or(Ok(()), Err)
}

/// Prints one statement's result on stdout, and on stderr one line per operator that dropped
/// late rows.
fn print_result(result: &TableResult, mode: Mode) -> anyhow::Result<()> {
    for (operator, rows) in result.late_rows() {
        eprintln!(
            "warning: {operator} dropped {rows} late row{} (event time behind the watermark)",
            if rows == 1 { "" } else { "s" }
        );
    }
    match result {
        TableResult::Done | TableResult::Inserted { .. } => {}
        TableResult::Text(text) => print!("{text}"),
        TableResult::Rows {
            schema, changes, ..
        } => match mode {
            Mode::Changelog => {
                for change in changes {
                    println!("{change}");
                }
            }
            Mode::Table => {
                println!("{}", schema.names().join(","));
                // An insert-only result prints in arrival order (the order of an ORDER BY);
                // an updating one as its final table.
                let table: Vec<(Row, u64)> = if changes.iter().all(|c| c.kind == RowKind::Insert) {
                    changes.iter().map(|c| (c.row.clone(), 1)).collect()
                } else {
                    materialize(changes.iter().cloned())
                        .map_err(|e| anyhow::anyhow!("inconsistent query result: {e}"))?
                        .into_iter()
                        .collect()
                };
                for (row, count) in table {
                    let line = row
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    for _ in 0..count {
                        println!("{line}");
                    }
                }
            }
        },
    }
    Ok(())
}

/// The prompt: reads lines until a statement ends with `;`, runs it, prints the result or the
/// error, and goes on.
async fn interactive(tenv: &mut TableEnv, mode: Mode) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new().context("cannot start the line editor")?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".eichhorn_sql_history"));
    if let Some(path) = &history {
        // A missing history file is normal on the first run.
        let _ = editor.load_history(path);
    }
    println!("Eichhorn SQL client. End statements with ';'. QUIT; or Ctrl-D leaves.");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "Eichhorn SQL> "
        } else {
            "> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("cannot read the prompt"),
        };
        buffer.push_str(&line);
        buffer.push('\n');
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let statement = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(statement.trim());
        let trimmed = statement.trim().trim_end_matches(';').trim();
        if trimmed.eq_ignore_ascii_case("quit") || trimmed.eq_ignore_ascii_case("exit") {
            break;
        }
        match run_script(tenv, &statement, mode).await {
            Ok(()) => println!("[INFO] OK"),
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
    if let Some(path) = &history
        && let Err(e) = editor.save_history(path)
    {
        eprintln!(
            "warning: cannot save the history to '{}': {e}",
            path.display()
        );
    }
    Ok(())
}
