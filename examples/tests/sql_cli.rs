//! The `sql` client's contract: `--file F --mode table` prints a header and the final rows,
//! `--mode changelog` one line per change, `-e` runs statements, errors go to stderr with their
//! line and column and a non-zero exit code, and a malformed CSV row fails the job naming file
//! and line or, with `'csv.ignore-parse-errors' = 'true'`, is reported on stderr and skipped.

use std::path::Path;
use std::process::{Command, Output};

fn sql(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sql"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the sql client")
}

fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn ddl(csv: &Path, extra: &str) -> String {
    format!(
        "CREATE TABLE bids (
           item STRING,
           price DOUBLE,
           qty BIGINT,
           ms BIGINT,
           ts AS TO_TIMESTAMP_LTZ(ms, 3),
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
         ) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}'{extra});\n",
        csv.display()
    )
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("bids.csv");
    std::fs::write(
        &csv,
        "apple,1.5,3,1000\npear,2,1,2500\napple,0.25,4,9000\nplum,3,2,12000\n",
    )
    .expect("write csv");
    (dir, csv)
}

#[test]
fn table_mode_prints_a_header_and_the_final_rows() {
    let (dir, csv) = setup();
    let file = dir.path().join("q.sql");
    std::fs::write(
        &file,
        ddl(&csv, "")
            + "SELECT window_start, window_end, item, SUM(price) AS total, SUM(qty) AS n\n\
               FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))\n\
               GROUP BY window_start, window_end, item;\n",
    )
    .expect("write sql");
    let output = sql(&["--file", file.to_str().expect("utf-8"), "--mode", "table"]);
    assert!(output.status.success(), "{output:?}");
    let mut lines = stdout_lines(&output);
    assert_eq!(lines[0], "window_start,window_end,item,total,n");
    lines[1..].sort();
    assert_eq!(
        lines[1..],
        [
            "1970-01-01 00:00:00.000,1970-01-01 00:00:10.000,apple,1.75,7",
            "1970-01-01 00:00:00.000,1970-01-01 00:00:10.000,pear,2.0,1",
            "1970-01-01 00:00:10.000,1970-01-01 00:00:20.000,plum,3.0,2",
        ]
    );
}

#[test]
fn changelog_mode_prints_every_change_and_e_runs_statements() {
    let (_dir, csv) = setup();
    let statements =
        ddl(&csv, "") + "SELECT item, COUNT(*) AS c FROM bids GROUP BY item HAVING COUNT(*) < 3";
    let output = sql(&[
        "-e",
        &statements,
        "--mode",
        "changelog",
        "--parallelism",
        "2",
    ]);
    assert!(output.status.success(), "{output:?}");
    let lines = stdout_lines(&output);
    let apple: Vec<&String> = lines.iter().filter(|l| l.contains("apple")).collect();
    assert_eq!(apple, ["+I,apple,1", "-U,apple,1", "+U,apple,2"]);
    let mut others: Vec<&String> = lines.iter().filter(|l| !l.contains("apple")).collect();
    others.sort();
    assert_eq!(others, ["+I,pear,1", "+I,plum,1"]);
}

#[test]
fn sql_errors_name_line_and_column_on_stderr() {
    let (_dir, csv) = setup();
    let statements = ddl(&csv, "") + "SELECT item,\n  pricee\nFROM bids";
    let output = sql(&["-e", &statements]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 10, column 3: column 'pricee' not found"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn a_malformed_csv_row_fails_the_job_or_is_skipped_on_request() {
    let (dir, csv) = setup();
    let mut text = std::fs::read_to_string(&csv).expect("read");
    text.push_str("kiwi,not-a-number,1,13000\nfig,1,1\n");
    std::fs::write(&csv, text).expect("write");
    let query = "SELECT item, qty FROM bids";
    let output = sql(&["-e", &(ddl(&csv, "") + query)]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "'{}' line 5: column 'price' (DOUBLE)",
            csv.display()
        )),
        "{stderr}"
    );

    let lenient = ddl(&csv, ", 'csv.ignore-parse-errors' = 'true'");
    let output = sql(&["-e", &(lenient + query)]);
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 5: column 'price'"), "{stderr}");
    assert!(stderr.contains("line 6: expected 4 fields"), "{stderr}");
    let mut lines = stdout_lines(&output);
    lines[1..].sort();
    assert_eq!(
        lines,
        ["item,qty", "apple,3", "apple,4", "pear,1", "plum,2"]
    );
    drop(dir);
}

#[test]
fn explain_show_and_describe_print_text() {
    let (_dir, csv) = setup();
    let statements = ddl(&csv, "")
        + "SHOW TABLES; DESCRIBE bids;\
           EXPLAIN SELECT item, SUM(qty) FROM bids WHERE price > 1 GROUP BY item;";
    let output = sql(&["-e", &statements]);
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("bids\n"), "{text}");
    assert!(text.contains("ts,TIMESTAMP_LTZ(3) *ROWTIME*"), "{text}");
    assert!(text.contains("GroupAggregate("), "{text}");
    assert!(text.contains("TableSourceScan(table=[bids]"), "{text}");
    assert!(text.contains("updating (+I, -U, +U, -D)"), "{text}");
}

#[test]
fn table_mode_prints_an_order_by_result_in_its_order() {
    let (_dir, csv) = setup();
    let statements =
        ddl(&csv, "") + "SELECT item, qty FROM bids ORDER BY qty DESC LIMIT 3 OFFSET 1";
    let output = sql(&["-e", &statements, "--mode", "table", "--parallelism", "2"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout_lines(&output),
        ["item,qty", "apple,3", "plum,2", "pear,1"]
    );
}
