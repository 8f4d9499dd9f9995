//! `checkpointed_count` against its contract: the committed output (visible files) as a
//! multiset equals the sequential running sums, with and without an injected failure, with both
//! state backends and at several parallelisms.

mod common;

use std::path::Path;

use eichhorn_examples::counting::expected_output;

const BIN: &str = env!("CARGO_BIN_EXE_checkpointed_count");

/// `key,value` lines over 37 keys, with a few malformed lines.
fn input() -> String {
    let mut state = 11u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut text = String::new();
    for i in 0..6_000u64 {
        if i % 1_013 == 5 {
            text.push_str("no-comma-here\n");
        }
        if i % 2_003 == 9 {
            text.push_str("k1,not-a-number\n");
        }
        let key = format!("k{}", next() % 37);
        let value = (next() % 2_001) as i64 - 1_000;
        text.push_str(&format!("{key},{value}\n"));
    }
    text
}

/// The committed lines (visible files only), sorted; fails on a non-UTF-8 file.
fn committed(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type().expect("type").is_file() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("utf-8 part file");
        lines.extend(text.lines().map(str::to_string));
    }
    lines.sort();
    lines
}

fn run_case(args: &[&str]) -> (Vec<String>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input_path = dir.path().join("in.csv");
    std::fs::write(&input_path, input()).expect("write input");
    let output = dir.path().join("out");
    let mut all = vec![
        "--input",
        input_path.to_str().expect("utf-8 path"),
        "--output",
        output.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    let run = common::run(BIN, &all);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{args:?} failed: {stderr}");
    (committed(&output), stderr)
}

#[test]
fn output_is_exactly_the_running_sums() {
    let text = input();
    let expected = expected_output(text.lines());
    for parallelism in ["1", "2", "4"] {
        let (lines, stderr) = run_case(&["--parallelism", parallelism]);
        assert_eq!(lines, expected, "P={parallelism}");
        assert!(
            stderr.contains("line 6: expected 'key,value': no-comma-here"),
            "{stderr}"
        );
    }
}

#[test]
fn a_failure_is_recovered_exactly_once_with_both_backends() {
    let expected = expected_output(input().lines());
    for backend in ["memory", "lmdb"] {
        for parallelism in ["1", "3"] {
            let (lines, stderr) = run_case(&[
                "--parallelism",
                parallelism,
                "--state-backend",
                backend,
                "--checkpoint-interval-ms",
                "20",
                "--source-rate",
                "20000",
                "--fail-after-records",
                "700",
            ]);
            assert!(stderr.contains("injected failure"), "{stderr}");
            assert!(
                stderr.contains("restoring attempt 1 from checkpoint")
                    || stderr.contains("restarts from the beginning"),
                "{stderr}"
            );
            assert_eq!(lines, expected, "{backend} P={parallelism}");
        }
    }
}

#[test]
fn a_failure_without_checkpoints_restarts_from_the_beginning() {
    let expected = expected_output(input().lines());
    let (lines, stderr) = run_case(&["--parallelism", "2", "--fail-after-records", "100"]);
    assert!(stderr.contains("injected failure"), "{stderr}");
    assert!(stderr.contains("restarts from the beginning"), "{stderr}");
    assert_eq!(lines, expected);
}

#[test]
fn a_missing_input_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("out");
    let run = common::run(
        BIN,
        &[
            "--input",
            "/nonexistent/input.csv",
            "--output",
            output.to_str().expect("utf-8"),
        ],
    );
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("/nonexistent/input.csv"), "{stderr}");
}
