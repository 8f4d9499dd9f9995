//! `stop_with_savepoint` on a job whose input already ended, or is ending: the savepoint
//! is taken from the final state, or the call reports that the job already finished; either
//! way the job finishes with all its output committed and no partial savepoint folder remains.
//!
//! The calls are swept over the moments around the end of the input; no verdict depends on
//! which moment a call lands in.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{read_output, within};
use eichhorn::connectors::NumberedFileSource;
use eichhorn::prelude::*;

const LINES: u64 = 200;

fn write_input(dir: &Path) -> std::path::PathBuf {
    let input = dir.join("in.csv");
    let lines: String = (0..LINES).map(|i| format!("key-{}\n", i % 7)).collect();
    std::fs::write(&input, lines).expect("write input");
    input
}

fn job(dir: &Path, interval_ms: Option<u64>) -> StreamEnv {
    let env = StreamEnv::new();
    if let Some(interval) = interval_ms {
        env.enable_checkpointing(interval);
    }
    env.set_checkpoint_storage(dir.join("checkpoints"));
    env.add_source(NumberedFileSource::new(write_input(dir)), "input")
        .uid("input")
        .key_by(|(_, line): &(u64, String)| line.clone())
        .map(|(n, line): (u64, String)| format!("{n},{line}"))
        .uid("format")
        .write_exactly_once(dir.join("out"), |line: &String| line.clone())
        .uid("sink");
    env
}

/// Runs the job, asks for a stop-with-savepoint after `wait_ms`, and checks the outcome.
/// Returns whether a savepoint was taken.
async fn stop_after(wait_ms: u64, interval_ms: Option<u64>) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let savepoints = dir.path().join("savepoints");
    let env = job(dir.path(), interval_ms);
    let handle = env.execute_async("job").await.expect("starts");
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    let savepoint = handle.stop_with_savepoint(&savepoints).await;
    let case = format!("wait {wait_ms} ms, interval {interval_ms:?}: {savepoint:?}");
    let result = within(handle.join()).await.expect("the job finishes");
    assert_eq!(result.status, JobStatus::Finished, "{case}");
    let (lines, hidden) = read_output(&dir.path().join("out"));
    assert_eq!(
        lines.len() as u64,
        LINES,
        "{case}: all output committed once"
    );
    assert!(hidden.is_empty(), "{case}: uncommitted files {hidden:?}");
    let folders: Vec<_> = std::fs::read_dir(&savepoints)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    for folder in &folders {
        assert!(
            folder.join("_metadata").is_file(),
            "{case}: partial {folder:?}"
        );
    }
    match savepoint {
        Ok(path) => {
            assert_eq!(folders, vec![path.clone()], "{case}");
            // The savepoint holds the final state: restored, the job has nothing left to
            // write (its source is at the end of its input).
            let env = job(dir.path(), interval_ms);
            env.restore_from(&path, false);
            within(env.execute("restored")).await.expect("restores");
            let (again, hidden) = read_output(&dir.path().join("out"));
            assert_eq!(again, lines, "{case}: nothing written twice");
            assert!(hidden.is_empty(), "{case}");
            true
        }
        Err(error) => {
            assert!(folders.is_empty(), "{case}");
            assert!(error.to_string().contains("already"), "{case}");
            false
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_savepoint_at_the_end_of_the_input_is_the_final_state_or_says_it_finished() {
    let mut taken = 0;
    for interval_ms in [None, Some(1_000), Some(3)] {
        for wait_ms in [0, 1, 2, 3, 5, 10, 1_000] {
            taken += u32::from(stop_after(wait_ms, interval_ms).await);
        }
    }
    // Right at the start the input ends while the savepoint waits for its turn: it becomes
    // the final checkpoint.
    assert!(taken >= 1, "no savepoint was taken from the final state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_a_multi_thread_runtime() {
    for interval_ms in [None, Some(5)] {
        for wait_ms in [0, 1, 3, 10] {
            stop_after(wait_ms, interval_ms).await;
        }
    }
}
