//! `temp_alert` against a sequential oracle of the contract, at parallelism 1, 2 and 4, on
//! out-of-order readings with malformed lines.

mod common;

use std::collections::BTreeMap;

/// Readings with ups, downs and repeats, out of order by up to 300 ms, plus malformed lines.
fn input() -> (String, Vec<(String, i64, f64)>) {
    let mut state = 7u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut text = String::new();
    let mut readings = Vec::new();
    for i in 0..600i64 {
        if i % 97 == 13 {
            text.push_str("sensor_x,not-a-time,3.5\n");
        }
        if i % 131 == 7 {
            text.push('\n');
        }
        let sensor = format!("sensor_{}", next() % 4);
        let ts = i * 100 - (next() % 300) as i64;
        let temperature = (next() % 6) as f64 * 0.5 + 20.0;
        text.push_str(&format!("{sensor},{ts},{temperature}\n"));
        readings.push((sensor, ts, temperature));
    }
    (text, readings)
}

/// The contract, replayed in file order: a watermark `max_ts - out_of_orderness - 1` after every
/// reading; timers fire when the watermark reaches them, in (time, sensor) order; the final
/// watermark fires the rest.
fn oracle(readings: &[(String, i64, f64)], interval: i64, out_of_orderness: i64) -> Vec<String> {
    let mut last: BTreeMap<&str, f64> = BTreeMap::new();
    let mut timer: BTreeMap<&str, i64> = BTreeMap::new();
    let mut fired = Vec::new();
    let mut max_ts = i64::MIN;
    let fire = |timer: &mut BTreeMap<&str, i64>, fired: &mut Vec<String>, watermark: i64| {
        let due: Vec<(&str, i64)> = timer
            .iter()
            .filter(|(_, at)| **at <= watermark)
            .map(|(s, at)| (*s, *at))
            .collect();
        for (sensor, at) in due {
            fired.push(format!("{sensor},{at}"));
            timer.remove(sensor);
        }
    };
    for (sensor, ts, temperature) in readings {
        match last.insert(sensor, *temperature) {
            Some(previous) if *temperature > previous => {
                timer.entry(sensor).or_insert(ts + interval);
            }
            Some(previous) if *temperature == previous => {}
            _ => {
                timer.remove(sensor.as_str());
            }
        }
        max_ts = max_ts.max(*ts);
        fire(&mut timer, &mut fired, max_ts - out_of_orderness - 1);
    }
    fire(&mut timer, &mut fired, i64::MAX);
    fired.sort();
    fired
}

#[test]
fn alerts_match_the_oracle() {
    let (text, readings) = input();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readings.csv");
    std::fs::write(&path, &text).expect("write input");
    for (interval, out_of_orderness) in [(1_000, 0), (250, 300)] {
        let expected = oracle(&readings, interval, out_of_orderness);
        assert!(!expected.is_empty());
        for parallelism in [1, 2, 4] {
            let output = common::run(
                env!("CARGO_BIN_EXE_temp_alert"),
                &[
                    "--input",
                    path.to_str().expect("utf-8 path"),
                    "--interval-ms",
                    &interval.to_string(),
                    "--out-of-orderness-ms",
                    &out_of_orderness.to_string(),
                    "--parallelism",
                    &parallelism.to_string(),
                ],
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{stderr}");
            let mut alerts: Vec<String> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            alerts.sort();
            assert_eq!(
                alerts, expected,
                "interval {interval}, out of orderness {out_of_orderness}, parallelism {parallelism}"
            );
            let malformed = text
                .lines()
                .filter(|l| l.is_empty() || l.contains("not-a-time"))
                .count();
            assert!(
                stderr.contains(&format!("malformed lines: {malformed}")),
                "{stderr}"
            );
        }
    }
}

#[test]
fn a_timer_fires_on_a_later_watermark_not_at_registration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readings.csv");
    // The rise at 1 000 registers a timer at 2 000. The reading at 2 000 (equal) brings the
    // watermark to 1 999 only, so the timer waits; the rise at 5 000 starts no timer (one is
    // pending), and the watermark 4 999 after it fires the timer at 2 000. The drop at 5 500
    // leaves nothing pending.
    std::fs::write(
        &path,
        "a,0,1.0\na,1000,2.0\na,2000,2.0\na,5000,3.0\na,5500,1.0\n",
    )
    .unwrap();
    let output = common::run(
        env!("CARGO_BIN_EXE_temp_alert"),
        &["--input", path.to_str().unwrap()],
    );
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "a,2000\n");
}

#[test]
fn a_missing_input_file_is_named() {
    let output = common::run(
        env!("CARGO_BIN_EXE_temp_alert"),
        &["--input", "/no/such/readings.csv"],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/readings.csv"));
}
