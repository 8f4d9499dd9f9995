//! Oracle tests of the `freezing_monitor` binary: its alarms (stdout, in input order) must be
//! `Freezing Alarm for <sensor_id>` for exactly the readings below the threshold, every
//! malformed line must be reported with its number, and the counts on stderr must add up.
//!
//! The oracle parses the generated lines itself; the generator knows which lines are malformed.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

const BIN: &str = env!("CARGO_BIN_EXE_freezing_monitor");

/// A generated input: its text, the valid readings `(sensor, temperature)` in order, and the
/// numbers of the malformed lines.
struct Input {
    text: String,
    readings: Vec<(String, f64)>,
    malformed_line_numbers: BTreeSet<u64>,
}

/// Readings around the freezing point (exactly 32 included), with malformed lines of every kind.
fn generate() -> Input {
    const MALFORMED: &[&str] = &[
        "",
        "  ",
        "s1,100",
        "s1,100,20,extra",
        ",100,20",
        "s1,ten,20",
        "s1,100,cold",
        "s1,100,NaN",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut below = move |bound: u64| {
        // xorshift64: fixed seed, so the input is the same in every run.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let mut input = Input {
        text: String::new(),
        readings: Vec::new(),
        malformed_line_numbers: BTreeSet::new(),
    };
    let mut line_number = 0;
    for i in 0..2_000u64 {
        line_number += 1;
        if i % 97 == 5 {
            input
                .text
                .push_str(MALFORMED[(i / 97) as usize % MALFORMED.len()]);
            input.text.push('\n');
            input.malformed_line_numbers.insert(line_number);
            continue;
        }
        let sensor = format!("sensor_{}", below(7));
        // Half degrees from 20 to 44: exact in binary; 32.0 itself raises no alarm.
        let temperature = 20.0 + below(49) as f64 / 2.0;
        input
            .text
            .push_str(&format!("{sensor},{},{temperature}\n", i * 1_000));
        input.readings.push((sensor, temperature));
    }
    input
}

fn oracle(input: &Input, threshold: f64) -> String {
    input
        .readings
        .iter()
        .filter(|(_, temperature)| *temperature < threshold)
        .map(|(sensor, _)| format!("Freezing Alarm for {sensor}\n"))
        .collect()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn run_ok(args: &[&str]) -> (String, String) {
    let output: Output = common::run(BIN, args);
    assert!(
        output.status.success(),
        "freezing_monitor {args:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    )
}

fn reported_line_numbers(stderr: &str) -> BTreeSet<u64> {
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix("line "))
        .map(|rest| {
            let (number, _) = rest
                .split_once(": ")
                .expect("a report `line N: reason: line`");
            number.parse().expect("a line number")
        })
        .collect()
}

#[test]
fn alarms_match_the_oracle_for_the_default_and_other_thresholds() {
    let input = generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readings.csv");
    std::fs::write(&path, &input.text).expect("write input");
    for threshold in [None, Some("32.0"), Some("25.5"), Some("-100"), Some("1e3")] {
        let mut args = vec!["--input", path_str(&path)];
        if let Some(threshold) = threshold {
            args.extend(["--threshold", threshold]);
        }
        let value = threshold.map_or(32.0, |t| t.parse().expect("a number"));
        let expected = oracle(&input, value);
        let (stdout, stderr) = run_ok(&args);
        assert_eq!(stdout, expected, "threshold {threshold:?}");
        assert_eq!(
            reported_line_numbers(&stderr),
            input.malformed_line_numbers,
            "threshold {threshold:?}"
        );
        let summary = format!(
            "readings: {}, freezing alarms: {}, malformed lines: {}",
            input.readings.len(),
            expected.lines().count(),
            input.malformed_line_numbers.len()
        );
        assert!(stderr.contains(&summary), "{stderr}");
    }
    // The default threshold raises some alarms and not all.
    let alarms = oracle(&input, 32.0).lines().count();
    assert!(alarms > 0 && alarms < input.readings.len());
}

#[test]
fn malformed_lines_are_reported_with_number_reason_and_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readings.csv");
    std::fs::write(&path, "s1,1,31.9\n\ns2,2\ns3,3,32\ns4,x,1\n").expect("write input");
    let (stdout, stderr) = run_ok(&["--input", path_str(&path)]);
    assert_eq!(stdout, "Freezing Alarm for s1\n");
    assert!(stderr.contains("line 2: empty line: \n"), "{stderr}");
    assert!(
        stderr.contains(
            "line 3: expected 3 fields (sensor_id,timestamp_ms,temperature), found 2: s2,2\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5: timestamp_ms 'x' is not an integer"),
        "{stderr}"
    );
    assert!(
        stderr.contains("readings: 2, freezing alarms: 1, malformed lines: 3"),
        "{stderr}"
    );
}

#[test]
fn a_missing_input_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-readings.csv");
    let output = common::run(BIN, &["--input", path_str(&missing)]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(path_str(&missing)), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn a_threshold_that_is_not_a_finite_number_is_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readings.csv");
    std::fs::write(&path, "s1,1,31.9\n").expect("write input");
    for threshold in ["warm", "NaN", "inf"] {
        let output = common::run(BIN, &["--input", path_str(&path), "--threshold", threshold]);
        assert!(!output.status.success(), "{threshold} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--threshold"), "{stderr}");
    }
}
