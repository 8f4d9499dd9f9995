//! Every example binary's `--help`: it describes that example (not the package), its
//! `--parallelism` range is the one the framework accepts (1 to the default max parallelism,
//! 128) and clap rejects values outside it with a clear message before any job runs; and every
//! binary installs the log subscriber that shows the framework's warnings.

mod common;

/// The package description, which clap showed for every binary when `about` was left bare.
const PACKAGE_DESCRIPTION: &str = env!("CARGO_PKG_DESCRIPTION");

/// The largest parallelism the examples' jobs accept (Eichhorn's default max parallelism).
const PARALLELISM_MAX: u32 = 128;

/// Each binary, a phrase its one-line `about` must contain, one its `--help` must contain, and
/// whether it has `--parallelism`.
const BINARIES: &[(&str, &str, &str, bool)] = &[
    (
        env!("CARGO_BIN_EXE_wordcount"),
        "Counts the words of a text file",
        "Hamlet",
        true,
    ),
    (
        env!("CARGO_BIN_EXE_stream_wordcount"),
        "Counts the words received on a TCP connection",
        "nc -lk 7777",
        true,
    ),
    (
        env!("CARGO_BIN_EXE_sensor_windows"),
        "minimum temperature per sensor and event-time window",
        "sensor_id,window_start_ms,window_end_ms,min_temperature",
        true,
    ),
    (
        env!("CARGO_BIN_EXE_freezing_monitor"),
        "freezing alarm",
        "Freezing Alarm for <sensor_id>",
        false,
    ),
    (
        env!("CARGO_BIN_EXE_temp_alert"),
        "temperature keeps rising",
        "sensor_id,timer_timestamp_ms",
        true,
    ),
    (
        env!("CARGO_BIN_EXE_threshold_alert"),
        "jumps by more than a threshold",
        "sensor_id,temperature,change",
        true,
    ),
    (
        env!("CARGO_BIN_EXE_checkpointed_count"),
        "Running sums per key",
        "exactly-once",
        true,
    ),
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("help is UTF-8")
}

#[test]
fn help_describes_each_example_not_the_package() {
    for &(bin, about, detail, _) in BINARIES {
        let short = common::run(bin, &["-h"]);
        assert!(short.status.success(), "{bin} -h: {}", text(&short.stderr));
        let short = text(&short.stdout);
        let first_line = short.lines().next().unwrap_or_default();
        assert!(first_line.contains(about), "{bin} -h:\n{short}");
        assert!(!short.contains(PACKAGE_DESCRIPTION), "{bin} -h:\n{short}");

        let long = common::run(bin, &["--help"]);
        assert!(
            long.status.success(),
            "{bin} --help: {}",
            text(&long.stderr)
        );
        let long = text(&long.stdout);
        assert!(long.contains(about), "{bin} --help:\n{long}");
        assert!(long.contains(detail), "{bin} --help:\n{long}");
        assert!(!long.contains(PACKAGE_DESCRIPTION), "{bin} --help:\n{long}");
    }
}

#[test]
fn parallelism_help_and_checks_agree_with_the_framework() {
    let too_large = (PARALLELISM_MAX + 1).to_string();
    for &(bin, _, _, has_parallelism) in BINARIES.iter().filter(|b| b.3) {
        assert!(has_parallelism);
        let help = text(&common::run(bin, &["--help"]).stdout);
        let option = help
            .split("--parallelism")
            .nth(1)
            .unwrap_or_else(|| panic!("{bin} --help has no --parallelism:\n{help}"));
        let option = option.split("\n  -").next().unwrap_or_default();
        assert!(
            option.contains(&format!("1 to {PARALLELISM_MAX}")),
            "{bin}: the --parallelism help does not give the range:\n{option}"
        );
        for bad in ["0", too_large.as_str()] {
            let output = common::run(bin, &["--parallelism", bad]);
            // clap's usage errors exit with 2, before any job or file is touched.
            assert_eq!(output.status.code(), Some(2), "{bin} --parallelism {bad}");
            let stderr = text(&output.stderr);
            assert!(
                stderr.contains(&format!("invalid value '{bad}' for '--parallelism"))
                    && stderr.contains(&format!("1..={PARALLELISM_MAX}")),
                "{bin} --parallelism {bad}: {stderr}"
            );
        }
    }
}

#[test]
fn every_binary_installs_the_log_subscriber() {
    for &(bin, ..) in BINARIES {
        let output = common::run_with_env(bin, &["--help"], &[("RUST_LOG", "debug")]);
        assert!(output.status.success(), "{bin}: {}", text(&output.stderr));
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("logging to stderr with filter 'debug'"),
            "{bin} installed no tracing subscriber: {stderr}"
        );
    }
}
