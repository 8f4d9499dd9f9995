//! The `eichhorn-sim` command line, run as a user runs it: its RESULT and SWEEP lines, its
//! exit codes, and the same trace hash for a seed in two processes.

use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eichhorn-sim"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(' ')
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
}

#[test]
fn run_prints_the_plan_and_a_result_line_and_replays_in_another_process() {
    let args = ["run", "--job", "keyed_sum", "--seed", "5"];
    let first = sim(&args);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("fault plan: "), "{stdout}");
    let result = last_line(&first);
    assert!(
        result.starts_with("RESULT job=keyed_sum seed=5 verdict=pass trace_hash="),
        "{result}"
    );
    assert!(field(&result, "virtual_s").parse::<f64>().unwrap() > 0.0);
    assert!(field(&result, "wall_s").parse::<f64>().is_ok());
    let second = last_line(&sim(&args));
    assert_eq!(
        field(&result, "trace_hash"),
        field(&second, "trace_hash"),
        "another process, same trace"
    );
    // The printed spec replays the same plan.
    let spec = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fault plan spec: "))
        .unwrap();
    let replay = last_line(&sim(&[
        "run",
        "--job",
        "keyed_sum",
        "--seed",
        "5",
        "--plan",
        spec,
    ]));
    assert_eq!(field(&replay, "trace_hash"), field(&result, "trace_hash"));
}

#[test]
fn usage_errors_exit_with_2_and_say_what_is_wrong() {
    for (args, says) in [
        (
            vec!["run", "--job", "keyed_sum", "--seed", "1", "--nodes", "0"],
            "at least 1 node",
        ),
        (
            vec![
                "run",
                "--job",
                "keyed_sum",
                "--seed",
                "1",
                "--plan",
                "partition:node=0:at=10:heal=10",
            ],
            "needs several nodes",
        ),
        (
            vec!["run", "--job", "nope", "--seed", "1"],
            "unknown job 'nope'",
        ),
        (
            vec![
                "run",
                "--job",
                "join",
                "--seed",
                "1",
                "--faults",
                "panic,flood",
            ],
            "'flood'",
        ),
        (
            vec!["sweep", "--job", "join", "--seeds", "5..2"],
            "B is below A",
        ),
        (
            vec![
                "run",
                "--job",
                "join",
                "--seed",
                "1",
                "--plan",
                "crash:at=x",
            ],
            "--plan",
        ),
        (vec!["run", "--job", "join"], "--seed"),
    ] {
        let output = sim(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    #[cfg(not(feature = "sabotage"))]
    {
        let output = sim(&[
            "run",
            "--job",
            "join",
            "--seed",
            "1",
            "--sabotage",
            "drop_credit",
        ]);
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains("--features sabotage"));
    }
}

#[test]
fn sweep_prints_a_table_and_a_sweep_line() {
    let output = sim(&[
        "sweep",
        "--job",
        "windows",
        "--seeds",
        "0..1",
        "--faults",
        "panic,crash",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    for row in [
        "| seeds run",
        "| faults injected",
        "| checkpoints",
        "| recoveries",
        "| wall time",
    ] {
        assert!(stdout.contains(row), "{row}: {stdout}");
    }
    assert_eq!(
        last_line(&output),
        "SWEEP job=windows seeds=2 passed=2 failed=0 first_failed_seed=none"
    );
}

#[test]
fn three_nodes_sweep_and_replay_in_another_process() {
    let sweep = sim(&[
        "sweep",
        "--job",
        "wordcount",
        "--nodes",
        "3",
        "--seeds",
        "0..1",
    ]);
    let stdout = String::from_utf8_lossy(&sweep.stdout);
    assert_eq!(
        sweep.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&sweep.stderr)
    );
    assert_eq!(
        last_line(&sweep),
        "SWEEP job=wordcount seeds=2 passed=2 failed=0 first_failed_seed=none"
    );
    assert!(stdout.contains("| nodes                  | 3"), "{stdout}");
    // A seed's cluster run, datagrams included, is the same in two processes.
    let args = ["run", "--job", "keyed_sum", "--seed", "2", "--nodes", "3"];
    let first = sim(&args);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("task manager node"), "{stdout}");
    let second = sim(&args);
    assert_eq!(
        field(&last_line(&first), "trace_hash"),
        field(&last_line(&second), "trace_hash")
    );
}
