//! Oracle tests of the `sensor_windows` binary: for tumbling, sliding and session windows, with
//! and without out-of-orderness and allowed lateness, at parallelism 1, 2 and 4, its firings
//! (stdout, as a multiset of lines) and its late output must equal a sequential replay of
//! Flink's window semantics, and every malformed line must be reported with its number.
//!
//! The oracle is written here, independently of the binary and of `eichhorn_examples`: it
//! replays the readings one at a time with a watermark after each (as the job's single
//! timestamp assigner does) and follows Flink's `WindowOperator` and `EventTimeTrigger`:
//!
//! - a window is late once `window_end - 1 + allowed_lateness <= watermark`; a reading is added
//!   to every assigned window that is not late;
//! - a window fires when the watermark reaches `window_end - 1`, and at once for every reading
//!   added after that (within the allowed lateness);
//! - session windows that intersect or touch merge (transitively), and the merged window fires
//!   at its own end;
//! - a reading no window accepted goes to the late output if it is late itself
//!   (`timestamp + allowed_lateness <= watermark`), which every such reading is whenever each
//!   timestamp lies in at least one window (all specs but sliding with slide > size);
//! - the end of the input is a final watermark at `i64::MAX`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

const BIN: &str = env!("CARGO_BIN_EXE_sensor_windows");

/// Sensor ids, with a non-ASCII one and one with an inner space.
const SENSORS: &[&str] = &["alpha", "beta", "gamma", "δ-4", "sensor 5"];

/// One line of every kind of malformed input.
const MALFORMED: &[&str] = &[
    "",
    "   ",
    "alpha,100",
    "alpha,100,1,2",
    ",100,1",
    "alpha,12x,3",
    "alpha,1.5,3",
    "alpha,,3",
    "alpha,99999999999999999999,3",
    "alpha,100,warm",
    "alpha,100,",
    "alpha,100,NaN",
    "beta,100,inf",
    "alpha;100;3",
];

/// A valid reading as the oracle sees it.
#[derive(Debug, Clone)]
struct Reading {
    sensor: String,
    timestamp_ms: i64,
    temperature: f64,
    /// The input line, exactly as written.
    line: String,
}

/// A generated input file and what it contains.
#[derive(Debug, Default)]
struct Input {
    text: String,
    readings: Vec<Reading>,
    malformed_line_numbers: BTreeSet<u64>,
}

impl Input {
    fn push_malformed(&mut self, line: &str) {
        let number = self.readings.len() as u64 + self.malformed_line_numbers.len() as u64 + 1;
        self.text.push_str(line);
        self.text.push('\n');
        self.malformed_line_numbers.insert(number);
    }

    fn push_reading(&mut self, reading: Reading) {
        self.text.push_str(&reading.line);
        self.text.push('\n');
        self.readings.push(reading);
    }
}

/// A fixed-seed linear congruential generator: the same input in every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// Readings of several sensors, out of order by up to 900 ms, one in 25 about 4 s late, some
/// timestamps negative, temperatures written in several notations (`-0.0` included), and
/// malformed lines of every kind in between.
fn generate(seed: u64, count: i64) -> Input {
    let mut rng = Rng(seed);
    let mut input = Input::default();
    for i in 0..count {
        // Every kind of malformed line at least once, then more at random.
        if i % 40 == 7 && ((i / 40) as usize) < MALFORMED.len() {
            input.push_malformed(MALFORMED[(i / 40) as usize]);
        }
        if rng.below(40) == 0 {
            input.push_malformed(MALFORMED[rng.below(MALFORMED.len() as u64) as usize]);
        }
        let sensor = SENSORS[rng.below(SENSORS.len() as u64) as usize];
        let jitter = rng.below(900) as i64;
        let very_late = if rng.below(25) == 0 { 4_000 } else { 0 };
        let timestamp_ms = i * 97 - 2_000 - jitter - very_late;
        let temperature = if rng.below(40) == 0 {
            -0.0
        } else {
            // Quarter degrees: exact in binary, so every notation parses to the same number.
            (rng.below(400) as f64 - 100.0) / 4.0
        };
        let temperature_text = match rng.below(4) {
            0 => format!("{temperature:?}"),
            1 => format!("{temperature:.3}"),
            2 => format!("{temperature:e}"),
            _ => format!(" {temperature} "),
        };
        let line = if rng.below(10) == 0 {
            format!("{sensor} , {timestamp_ms},{temperature_text}")
        } else {
            format!("{sensor},{timestamp_ms},{temperature_text}")
        };
        input.push_reading(Reading {
            sensor: sensor.to_string(),
            timestamp_ms,
            temperature,
            line,
        });
    }
    input
}

#[derive(Debug, Clone, Copy)]
enum Spec {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
}

impl Spec {
    fn arg(self) -> String {
        match self {
            Self::Tumbling(size) => format!("tumbling:{size}"),
            Self::Sliding(size, slide) => format!("sliding:{size}:{slide}"),
            Self::Session(gap) => format!("session:{gap}"),
        }
    }

    /// The windows `[start, end)` of a timestamp, as Flink's assigners (offset 0).
    fn windows(self, timestamp: i64) -> Vec<(i64, i64)> {
        match self {
            Self::Tumbling(size) => {
                let start = timestamp - timestamp.rem_euclid(size);
                vec![(start, start + size)]
            }
            Self::Sliding(size, slide) => {
                let mut windows = Vec::new();
                let mut start = timestamp - timestamp.rem_euclid(slide);
                while start > timestamp - size {
                    windows.push((start, start + size));
                    start -= slide;
                }
                windows
            }
            Self::Session(gap) => vec![(timestamp, timestamp + gap)],
        }
    }
}

/// A window in flight: not yet cleaned up.
struct InFlight {
    start: i64,
    end: i64,
    min: f64,
    /// Its end-of-window timer has not fired yet.
    timer_pending: bool,
}

/// The lower temperature by the total order (`-0.0 < 0.0`), the first on ties.
fn colder(a: f64, b: f64) -> f64 {
    if b.total_cmp(&a).is_lt() { b } else { a }
}

fn firing(sensor: &str, start: i64, end: i64, min: f64) -> String {
    format!("{sensor},{start},{end},{min}")
}

/// The sequential replay of Flink's window semantics: the firings (output lines) and the late
/// readings (input lines, in input order).
fn oracle(
    spec: Spec,
    out_of_orderness_ms: i64,
    lateness_ms: i64,
    readings: &[Reading],
) -> (Vec<String>, Vec<String>) {
    let mut windows: BTreeMap<&str, Vec<InFlight>> = BTreeMap::new();
    let mut firings = Vec::new();
    let mut late = Vec::new();
    let mut watermark = i64::MIN;
    let mut max_timestamp = i64::MIN;
    let is_late = |end: i64, watermark: i64| end - 1 + lateness_ms <= watermark;
    let advance =
        |windows: &mut BTreeMap<&str, Vec<InFlight>>, firings: &mut Vec<String>, watermark: i64| {
            for (sensor, list) in windows.iter_mut() {
                for w in list.iter_mut() {
                    if w.timer_pending && w.end - 1 <= watermark {
                        w.timer_pending = false;
                        firings.push(firing(sensor, w.start, w.end, w.min));
                    }
                }
                list.retain(|w| !is_late(w.end, watermark));
            }
        };
    for reading in readings {
        let sensor = reading.sensor.as_str();
        let list = windows.entry(sensor).or_default();
        let mut accepted = false;
        for (start, end) in spec.windows(reading.timestamp_ms) {
            let index = if let Spec::Session(_) = spec {
                // Merge with every in-flight window the growing cover intersects or touches.
                let (mut start, mut end, mut min) = (start, end, reading.temperature);
                while let Some(i) = list.iter().position(|w| w.start <= end && w.end >= start) {
                    let merged = list.remove(i);
                    start = start.min(merged.start);
                    end = end.max(merged.end);
                    min = colder(merged.min, min);
                }
                // Only a window that merged with nothing can be late: in-flight windows are not.
                if is_late(end, watermark) {
                    continue;
                }
                list.push(InFlight {
                    start,
                    end,
                    min,
                    timer_pending: false,
                });
                list.len() - 1
            } else {
                if is_late(end, watermark) {
                    continue;
                }
                match list.iter().position(|w| (w.start, w.end) == (start, end)) {
                    Some(i) => {
                        list[i].min = colder(list[i].min, reading.temperature);
                        i
                    }
                    None => {
                        list.push(InFlight {
                            start,
                            end,
                            min: reading.temperature,
                            timer_pending: false,
                        });
                        list.len() - 1
                    }
                }
            };
            accepted = true;
            let w = &mut list[index];
            if w.end - 1 <= watermark {
                firings.push(firing(sensor, w.start, w.end, w.min));
            } else {
                w.timer_pending = true;
            }
        }
        if !accepted && reading.timestamp_ms + lateness_ms <= watermark {
            late.push(reading.line.clone());
        }
        max_timestamp = max_timestamp.max(reading.timestamp_ms);
        let next = max_timestamp - out_of_orderness_ms - 1;
        if next > watermark {
            watermark = next;
            advance(&mut windows, &mut firings, watermark);
        }
    }
    advance(&mut windows, &mut firings, i64::MAX);
    (firings, late)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The line numbers of the `line N: ...` reports on stderr.
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

/// Runs the binary on `input` for every out-of-orderness and lateness setting at parallelism
/// 1, 2 and 4, against the oracle.
fn check_against_oracle(spec: Spec, input: &Input) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input_path = dir.path().join("readings.csv");
    std::fs::write(&input_path, &input.text).expect("write input");
    let late_path = dir.path().join("late.csv");
    for (out_of_orderness, lateness) in [(0, 0), (500, 0), (0, 1_500), (300, 800)] {
        let (firings, late) = oracle(spec, out_of_orderness, lateness, &input.readings);
        assert!(
            !firings.is_empty() && !late.is_empty(),
            "the data exercises both"
        );
        let mut expected_firings = firings.clone();
        expected_firings.sort();
        let expected_late: String = late.iter().map(|line| format!("{line}\n")).collect();
        let summary = format!(
            "malformed lines: {}, late records: {}",
            input.malformed_line_numbers.len(),
            late.len()
        );
        for parallelism in [1, 2, 4] {
            let context = format!(
                "{spec:?}, out of orderness {out_of_orderness}, lateness {lateness}, parallelism {parallelism}"
            );
            let output = common::run(
                BIN,
                &[
                    "--input",
                    path_str(&input_path),
                    "--window",
                    &spec.arg(),
                    "--out-of-orderness-ms",
                    &out_of_orderness.to_string(),
                    "--allowed-lateness-ms",
                    &lateness.to_string(),
                    "--parallelism",
                    &parallelism.to_string(),
                    "--late-output",
                    path_str(&late_path),
                ],
            );
            assert_success(&output, &context);
            let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
            let stderr = String::from_utf8(output.stderr).expect("stderr is UTF-8");
            assert_eq!(sorted_lines(&stdout), expected_firings, "{context}");
            let late_output = std::fs::read_to_string(&late_path).expect("late output written");
            assert_eq!(late_output, expected_late, "{context}");
            assert_eq!(
                reported_line_numbers(&stderr),
                input.malformed_line_numbers,
                "{context}"
            );
            assert!(stderr.contains(&summary), "{context}: {stderr}");
        }
    }
}

#[test]
fn tumbling_windows_match_the_oracle() {
    check_against_oracle(Spec::Tumbling(2_000), &generate(12_345, 700));
}

#[test]
fn sliding_windows_match_the_oracle() {
    check_against_oracle(Spec::Sliding(3_000, 1_000), &generate(23_456, 700));
}

#[test]
fn sliding_windows_with_a_size_not_a_multiple_of_the_slide_match_the_oracle() {
    check_against_oracle(Spec::Sliding(2_500, 1_000), &generate(34_567, 500));
}

#[test]
fn session_windows_match_the_oracle() {
    check_against_oracle(Spec::Session(250), &generate(45_678, 700));
}

#[test]
fn long_session_windows_match_the_oracle() {
    // Sessions of one sensor often chain across many readings and merge late.
    check_against_oracle(Spec::Session(1_200), &generate(56_789, 500));
}

#[test]
fn the_generated_input_covers_what_it_should() {
    let input = generate(12_345, 700);
    let numbers = &input.malformed_line_numbers;
    assert!(numbers.len() > MALFORMED.len(), "{numbers:?}");
    let lines: Vec<&str> = input.text.lines().collect();
    for kind in MALFORMED {
        assert!(
            numbers.iter().any(|&n| lines[(n - 1) as usize] == *kind),
            "{kind:?} missing"
        );
    }
    assert_eq!(
        lines.len(),
        input.readings.len() + numbers.len(),
        "every line is a reading or malformed"
    );
    assert!(input.readings.iter().any(|r| r.timestamp_ms < 0));
    assert!(
        input
            .readings
            .iter()
            .any(|r| r.temperature.is_sign_negative() && r.temperature == 0.0)
    );
    // Lateness re-fires windows: some window fires more than once.
    let (firings, _) = oracle(Spec::Tumbling(2_000), 0, 1_500, &input.readings);
    let distinct: BTreeSet<(&str, &str)> = firings
        .iter()
        .map(|line| line.rsplit_once(',').expect("four fields"))
        .collect();
    assert!(distinct.len() < firings.len());
}

/// A small input worked out by hand, to check the oracle and the binary against each other.
const HAND_INPUT: &str = "s1,1000,21.5\n\
    s2,1200,18\n\
    s1,1500,19.25\n\
    \n\
    s1,abc,3\n\
    s2,4000,17\n\
    s1,4100,25\n\
    s1,200,5\n\
    s1,4999,-3\n\
    s3,1,2,3\n\
    s2,9000,1e1\n";

fn run_hand_input(extra: &[&str]) -> (Vec<String>, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("hand.csv");
    std::fs::write(&input, HAND_INPUT).expect("write input");
    let late = dir.path().join("late.csv");
    let mut args = vec![
        "--input",
        path_str(&input),
        "--late-output",
        path_str(&late),
    ];
    args.extend_from_slice(extra);
    let output = common::run(BIN, &args);
    assert_success(&output, "hand input");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8(output.stderr).expect("stderr is UTF-8");
    let late = std::fs::read_to_string(&late).expect("late output written");
    (sorted_lines(&stdout), late, stderr)
}

#[test]
fn hand_worked_tumbling_windows() {
    // s1@200 arrives when the watermark is 4099: its window [0, 2000) has fired and is gone.
    let (firings, late, stderr) = run_hand_input(&["--window", "tumbling:2000"]);
    assert_eq!(
        firings,
        [
            "s1,0,2000,19.25",
            "s1,4000,6000,-3",
            "s2,0,2000,18",
            "s2,4000,6000,17",
            "s2,8000,10000,10",
        ]
    );
    assert_eq!(late, "s1,200,5\n");
    assert!(stderr.contains("line 4: empty line: \n"), "{stderr}");
    assert!(
        stderr.contains("line 5: timestamp_ms 'abc' is not an integer"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "line 10: expected 3 fields (sensor_id,timestamp_ms,temperature), found 4: s3,1,2,3"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("malformed lines: 3, late records: 1"),
        "{stderr}"
    );
}

#[test]
fn hand_worked_session_windows_with_lateness() {
    // s1@200 is 3.9 s behind the watermark but within the lateness: its session [200, 1200)
    // merges with the fired [1000, 2500), which fires again at once as [200, 2500).
    let (firings, late, stderr) = run_hand_input(&[
        "--window",
        "session:1000",
        "--allowed-lateness-ms",
        "5000",
        "--parallelism",
        "4",
    ]);
    assert_eq!(
        firings,
        [
            "s1,1000,2500,19.25",
            "s1,200,2500,5",
            "s1,4100,5999,-3",
            "s2,1200,2200,18",
            "s2,4000,5000,17",
            "s2,9000,10000,10",
        ]
    );
    assert_eq!(late, "");
    assert!(
        stderr.contains("malformed lines: 3, late records: 0"),
        "{stderr}"
    );
}

#[test]
fn the_oracle_agrees_with_the_hand_worked_examples() {
    let readings: Vec<Reading> = HAND_INPUT
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let [sensor, timestamp, temperature] = fields[..] else {
                return None;
            };
            Some(Reading {
                sensor: sensor.to_string(),
                timestamp_ms: timestamp.parse().ok()?,
                temperature: temperature.parse().ok()?,
                line: line.to_string(),
            })
        })
        .collect();
    assert_eq!(readings.len(), 8);
    let (mut firings, late) = oracle(Spec::Tumbling(2_000), 0, 0, &readings);
    firings.sort();
    assert_eq!(firings, run_hand_input(&["--window", "tumbling:2000"]).0);
    assert_eq!(late, ["s1,200,5"]);
    let (mut firings, late) = oracle(Spec::Session(1_000), 0, 5_000, &readings);
    firings.sort();
    assert_eq!(firings.len(), 6);
    assert!(firings.contains(&"s1,200,2500,5".to_string()));
    assert!(late.is_empty());
}

#[test]
fn defaults_are_no_out_of_orderness_no_lateness_parallelism_one() {
    let input = generate(67_890, 300);
    let dir = tempfile::tempdir().expect("temp dir");
    let input_path = dir.path().join("readings.csv");
    std::fs::write(&input_path, &input.text).expect("write input");
    let spec = Spec::Sliding(1_000, 500);
    let (mut expected, late) = oracle(spec, 0, 0, &input.readings);
    expected.sort();
    let output = common::run(
        BIN,
        &["--input", path_str(&input_path), "--window", &spec.arg()],
    );
    assert_success(&output, "defaults");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    assert_eq!(sorted_lines(&stdout), expected);
    let stderr = String::from_utf8(output.stderr).expect("stderr is UTF-8");
    let summary = format!(
        "malformed lines: {}, late records: {}",
        input.malformed_line_numbers.len(),
        late.len()
    );
    assert!(stderr.contains(&summary), "{stderr}");
}

#[test]
fn bad_window_specs_are_rejected_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("readings.csv");
    std::fs::write(&input, "s,1,2\n").expect("write input");
    for (spec, message) in [
        ("hopping:10", "unknown window kind 'hopping'"),
        ("tumbling", "wrong number of parameters for 'tumbling'"),
        ("tumbling:", "SIZE_MS '' is not an integer"),
        ("tumbling:5s", "SIZE_MS '5s' is not an integer"),
        ("tumbling:0", "size > 0"),
        ("tumbling:10:5", "wrong number of parameters"),
        ("sliding:100", "wrong number of parameters for 'sliding'"),
        ("sliding:100:0", "slide > 0"),
        ("sliding:100:x", "SLIDE_MS 'x' is not an integer"),
        ("session:-5", "gap > 0"),
        ("session:1:2", "wrong number of parameters for 'session'"),
    ] {
        let output = common::run(BIN, &["--input", path_str(&input), "--window", spec]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{spec} was accepted");
        assert!(
            stderr.contains("--window") && stderr.contains(message),
            "{spec}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{spec}");
    }
}

#[test]
fn a_missing_input_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-readings.csv");
    let output = common::run(
        BIN,
        &["--input", path_str(&missing), "--window", "tumbling:1000"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(path_str(&missing)), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn an_unwritable_late_output_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("readings.csv");
    std::fs::write(&input, "s,1,2\n").expect("write input");
    let late = dir.path().join("no-such-dir").join("late.csv");
    let output = common::run(
        BIN,
        &[
            "--input",
            path_str(&input),
            "--window",
            "tumbling:1000",
            "--late-output",
            path_str(&late),
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(path_str(&late)), "{stderr}");
}

#[test]
fn a_line_that_is_not_utf8_fails_the_job_naming_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("readings.csv");
    std::fs::write(&input, b"s,1,2\ns\xff,2,3\ns,3,4\n").expect("write input");
    let output = common::run(
        BIN,
        &["--input", path_str(&input), "--window", "tumbling:1000"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("UTF-8"),
        "{stderr}"
    );
}

#[test]
fn readings_between_sliding_windows_are_dropped_not_late() {
    // With slide 3000 > size 1000 the timestamps 1000..3000 lie in no window. Flink's
    // WindowOperator side-outputs a skipped reading only if it is late itself
    // (`isSkippedElement && isElementLate(element)`); `s,1500,1` is not, so it is dropped.
    let input = "s,100,5\ns,1500,1\ns,3100,7\n";
    let readings: Vec<Reading> = input
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            Reading {
                sensor: fields[0].to_string(),
                timestamp_ms: fields[1].parse().expect("timestamp"),
                temperature: fields[2].parse().expect("temperature"),
                line: line.to_string(),
            }
        })
        .collect();
    let spec = Spec::Sliding(1_000, 3_000);
    let (mut expected, late) = oracle(spec, 0, 0, &readings);
    expected.sort();
    assert_eq!(expected, ["s,0,1000,5", "s,3000,4000,7"]);
    assert!(late.is_empty());

    let dir = tempfile::tempdir().expect("temp dir");
    let input_path = dir.path().join("readings.csv");
    std::fs::write(&input_path, input).expect("write input");
    let late_path = dir.path().join("late.csv");
    let output = common::run(
        BIN,
        &[
            "--input",
            path_str(&input_path),
            "--window",
            &spec.arg(),
            "--late-output",
            path_str(&late_path),
        ],
    );
    assert_success(&output, "slide > size");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    assert_eq!(sorted_lines(&stdout), expected);
    assert_eq!(
        std::fs::read_to_string(&late_path).expect("late output written"),
        ""
    );
}

#[test]
fn readings_at_the_limits_of_time_are_reported_and_skipped_not_fatal() {
    // No window of any spec fits around i64::MAX, and none of tumbling or sliding windows around
    // i64::MIN; the job reports such readings as malformed lines and goes on.
    let input = "s,1000,20\n\
        s,9223372036854775807,5\n\
        s,1500,18\n\
        s,-9223372036854775808,4\n\
        t,2100,7\n";
    let dir = tempfile::tempdir().expect("temp dir");
    let input_path = dir.path().join("readings.csv");
    std::fs::write(&input_path, input).expect("write input");
    for (spec, expected) in [
        ("tumbling:1000", &["s,1000,2000,18", "t,2000,3000,7"][..]),
        (
            "sliding:2000:1000",
            &[
                "s,0,2000,18",
                "s,1000,3000,18",
                "t,1000,3000,7",
                "t,2000,4000,7",
            ][..],
        ),
        ("session:1000", &["s,1000,2500,18", "t,2100,3100,7"][..]),
    ] {
        let late_path = dir.path().join("late.csv");
        let output = common::run(
            BIN,
            &[
                "--input",
                path_str(&input_path),
                "--window",
                spec,
                "--late-output",
                path_str(&late_path),
            ],
        );
        assert_success(&output, spec);
        let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
        let stderr = String::from_utf8(output.stderr).expect("stderr is UTF-8");
        assert_eq!(sorted_lines(&stdout), expected, "{spec}: {stderr}");
        assert!(
            stderr.contains(
                "line 2: timestamp_ms 9223372036854775807 cannot be placed in a window: "
            ),
            "{spec}: {stderr}"
        );
        // A session window at i64::MIN fits (and is late: the watermark is at 1499 then);
        // tumbling and sliding windows there do not.
        let (expected_lines, malformed, late) = if spec.starts_with("session") {
            ([2].as_slice(), 1, "s,-9223372036854775808,4\n")
        } else {
            ([2, 4].as_slice(), 2, "")
        };
        assert_eq!(
            reported_line_numbers(&stderr),
            expected_lines.iter().copied().collect(),
            "{spec}: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "malformed lines: {malformed}, late records: {}",
                late.lines().count()
            )),
            "{spec}: {stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(&late_path).expect("late output written"),
            late,
            "{spec}"
        );
    }
}
