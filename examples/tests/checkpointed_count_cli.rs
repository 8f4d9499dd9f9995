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

/// Whether `lines` is a sub-multiset of `expected` (both sorted): nothing in it twice more
/// often than the job writes it.
fn within_multiset(lines: &[String], expected: &[String]) -> bool {
    let mut counts = std::collections::BTreeMap::<&String, i64>::new();
    for line in expected {
        *counts.entry(line).or_insert(0) += 1;
    }
    for line in lines {
        *counts.entry(line).or_insert(0) -= 1;
    }
    counts.values().all(|n| *n >= 0)
}

/// The run's job id from the example's closing line `done: job <id> (...)`.
fn job_id(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("done: job "))
        .unwrap_or_else(|| panic!("no closing line: {stderr}"));
    line["done: job ".len()..]
        .split_whitespace()
        .next()
        .expect("an id")
        .to_string()
}

/// Runs the example with `args`; returns success, the committed output of `output` and stderr.
fn run_in(args: &[&str], output: &Path) -> (bool, Vec<String>, String) {
    let run = common::run(BIN, args);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    (run.status.success(), committed(output), stderr)
}

/// A second run with other input, the same output and checkpoint directories and an early
/// failure restarts from the beginning of its own input: it never restores the first run's
/// checkpoint. The first run's checkpoints are used when named with `--restore-from`.
#[test]
fn a_new_run_never_resumes_another_runs_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    let text_a = input();
    let text_b = text_a.replace('k', "other-");
    std::fs::write(&a, &text_a).expect("write a");
    std::fs::write(&b, &text_b).expect("write b");
    let out = dir.path().join("out");
    let path = |p: &Path| p.to_str().expect("utf-8").to_string();
    let (a, b, out_s) = (path(&a), path(&b), path(&out));
    for backend in ["memory", "lmdb"] {
        let _ = std::fs::remove_dir_all(&out);
        let common_args = ["--output", &out_s, "--checkpoint-interval-ms", "100000"];
        let mut args = vec!["--input", a.as_str(), "--state-backend", backend];
        args.extend(common_args);
        let (ok, first, stderr) = run_in(&args, &out);
        assert!(ok, "{stderr}");
        assert_eq!(first, expected_output(text_a.lines()), "{backend}");
        let first_id = job_id(&stderr);

        let mut args = vec!["--input", b.as_str(), "--state-backend", backend];
        args.extend(common_args);
        args.extend(["--fail-after-records", "100"]);
        let (ok, both, stderr) = run_in(&args, &out);
        assert!(ok, "{stderr}");
        assert!(stderr.contains("restarts from the beginning"), "{stderr}");
        assert!(!stderr.contains("restoring attempt"), "{stderr}");
        let mut second: Vec<String> = both.clone();
        for line in &first {
            let at = second
                .iter()
                .position(|l| l == line)
                .expect("first run's output kept");
            second.remove(at);
        }
        assert_eq!(
            second,
            expected_output(text_b.lines()),
            "{backend}: only b's sums"
        );
        assert_ne!(job_id(&stderr), first_id);

        // Resuming the first (finished) run from its checkpoints: its source is at the end of
        // its input, so nothing more is committed.
        let retained = out.join(".checkpoints").join(&first_id);
        let mut args = vec!["--input", a.as_str(), "--state-backend", backend];
        args.extend(["--output", &out_s]);
        let retained_s = path(&retained);
        args.extend(["--restore-from", &retained_s]);
        let (ok, after, stderr) = run_in(&args, &out);
        assert!(ok, "{stderr}");
        assert!(
            stderr.contains(&format!("restored from {}", retained.display())),
            "{stderr}"
        );
        assert_eq!(after, both, "{backend}: nothing written twice");
    }
}

/// The newest checkpoint is damaged, every way, just before the injected failure. Recovery
/// either falls back without duplicating anything (the damaged checkpoint's output was not
/// committed yet) or fails the job naming the damaged checkpoint: never duplicated output.
/// With `--allow-fallback-past-commits` the job finishes, nothing lost.
#[test]
fn a_damaged_checkpoint_never_duplicates_committed_output_silently() {
    let expected = expected_output(input().lines());
    let mut refused = 0;
    for damage in [
        "flip-byte",
        "truncate-state",
        "delete-state",
        "truncate-metadata",
        "delete-checkpoint",
    ] {
        let backend = if damage.starts_with("truncate") {
            "lmdb"
        } else {
            "memory"
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let input_path = dir.path().join("in.csv");
        std::fs::write(&input_path, input()).expect("write input");
        let out = dir.path().join("out");
        let args = [
            "--input",
            input_path.to_str().expect("utf-8"),
            "--output",
            out.to_str().expect("utf-8"),
            "--state-backend",
            backend,
            "--checkpoint-interval-ms",
            "40",
            "--source-rate",
            "5000",
            "--fail-after-records",
            "2500",
            "--damage-checkpoint",
            damage,
        ];
        let (ok, lines, stderr) = run_in(&args, &out);
        assert!(stderr.contains("injected damage: "), "{damage}: {stderr}");
        assert!(
            within_multiset(&lines, &expected),
            "{damage}: duplicated output: {stderr}"
        );
        if ok {
            assert_eq!(lines, expected, "{damage}: {stderr}");
        } else {
            refused += 1;
            assert!(
                stderr.contains("without duplicating committed output")
                    && stderr.contains("allow_fallback_past_commits"),
                "{damage}: {stderr}"
            );
        }

        let _ = std::fs::remove_dir_all(&out);
        let mut allowed = args.to_vec();
        allowed.push("--allow-fallback-past-commits");
        let (ok, mut lines, stderr) = run_in(&allowed, &out);
        assert!(ok, "{damage}: {stderr}");
        lines.dedup();
        let mut exact = expected.clone();
        exact.dedup();
        assert_eq!(lines, exact, "{damage}: nothing lost");
    }
    eprintln!("{refused} of 5 runs refused the fallback");
}
