//! `threshold_alert` against a sequential oracle of the contract, at parallelism 1, 2 and 4,
//! with malformed lines.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_threshold_alert");

/// Readings that move by small and large steps, plus malformed lines.
fn input() -> (String, Vec<(String, f64)>) {
    let mut state = 11u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut text = String::new();
    let mut readings = Vec::new();
    for i in 0..500i64 {
        if i % 89 == 5 {
            text.push_str("sensor_x,12,warm\n");
        }
        let sensor = format!("sensor_{}", next() % 5);
        let temperature = (next() % 40) as f64 * 0.25 + 15.0;
        text.push_str(&format!("{sensor},{},{temperature}\n", i * 10));
        readings.push((sensor, temperature));
    }
    (text, readings)
}

/// The contract: per sensor, an alert when a reading moved by more than `threshold` from the
/// sensor's previous one. Sorted, since sensors interleave at parallelism above 1.
fn oracle(readings: &[(String, f64)], threshold: f64) -> Vec<String> {
    let mut last: BTreeMap<&str, f64> = BTreeMap::new();
    let mut alerts = Vec::new();
    for (sensor, temperature) in readings {
        if let Some(previous) = last.insert(sensor, *temperature) {
            let change = temperature - previous;
            if change.abs() > threshold {
                alerts.push(format!("{sensor},{temperature},{change}"));
            }
        }
    }
    alerts.sort();
    alerts
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[test]
fn alerts_match_the_oracle_at_every_parallelism() {
    let (text, readings) = input();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readings.csv");
    std::fs::write(&path, text).expect("write input");
    for (threshold, parallelism) in [("1.7", "1"), ("1.7", "2"), ("3", "4"), ("0", "2")] {
        let output = common::run(
            BIN,
            &[
                "--input",
                path_str(&path),
                "--threshold",
                threshold,
                "--parallelism",
                parallelism,
            ],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let mut alerts: Vec<String> = String::from_utf8(output.stdout)
            .expect("UTF-8")
            .lines()
            .map(str::to_string)
            .collect();
        alerts.sort();
        let expected = oracle(&readings, threshold.parse().expect("number"));
        assert!(!expected.is_empty());
        assert_eq!(alerts, expected, "threshold {threshold}, P={parallelism}");
        assert!(
            stderr.contains(&format!(
                "readings: {}, alerts: {}, malformed lines: 6",
                readings.len(),
                expected.len()
            )),
            "{stderr}"
        );
    }
}

#[test]
fn at_parallelism_one_alerts_come_in_input_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readings.csv");
    std::fs::write(&path, "a,1,20\nb,2,10\na,3,25\nb,4,5\na,5,25.5\nb,6,5\n").expect("write");
    let output = common::run(BIN, &["--input", path_str(&path)]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).expect("UTF-8"),
        "a,25,5\nb,5,-5\n"
    );
}

#[test]
fn a_bad_threshold_is_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readings.csv");
    std::fs::write(&path, "s1,1,31.9\n").expect("write input");
    for threshold in ["warm", "NaN", "-1"] {
        let output = common::run(BIN, &["--input", path_str(&path), "--threshold", threshold]);
        assert!(!output.status.success(), "{threshold} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("threshold"), "{stderr}");
    }
}
