//! `login_fail` against a sequential oracle of its contract, at parallelism 1, 2 and 4, on
//! out-of-order logins with late records and malformed lines.

mod common;

use std::collections::BTreeMap;

/// Logins of 12 users over ~2,000 s, out of order by up to 4 s, with malformed lines.
fn input() -> (String, Vec<(String, bool, i64)>) {
    let mut state = 5u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut text = String::new();
    let mut logins = Vec::new();
    for i in 0..800i64 {
        if i % 101 == 17 {
            text.push_str("user_x,1.2.3.4,fail,soon\n");
        }
        if i % 157 == 3 {
            text.push('\n');
        }
        if i % 211 == 5 {
            text.push_str("user_y,1.2.3.4,logout,12\n");
        }
        let user = format!("user_{}", next() % 12);
        let failed = !next().is_multiple_of(4);
        let ts = (i * 2 - (next() % 5) as i64).max(0);
        let kind = if failed { "fail" } else { "success" };
        text.push_str(&format!("{user},10.0.0.{},{kind},{ts}\n", next() % 250));
        logins.push((user, failed, ts));
    }
    (text, logins)
}

/// The contract replayed in file order: watermark `max - ooo - 1` after every record (in ms),
/// late records dropped, then per user in (time, arrival) order, consecutive failures less
/// than `within` apart.
fn oracle(logins: &[(String, bool, i64)], within_ms: i64, ooo_ms: i64) -> (Vec<String>, usize) {
    let mut watermark = i64::MIN;
    let mut max_ts = i64::MIN;
    let mut late = 0;
    let mut per_user: BTreeMap<&str, Vec<(i64, usize, bool)>> = BTreeMap::new();
    for (arrival, (user, failed, ts_s)) in logins.iter().enumerate() {
        let ts = ts_s * 1000;
        if ts <= watermark {
            late += 1;
        } else {
            per_user
                .entry(user)
                .or_default()
                .push((ts, arrival, *failed));
        }
        max_ts = max_ts.max(ts);
        watermark = watermark.max(max_ts - ooo_ms - 1);
    }
    let mut alerts = Vec::new();
    for (user, mut events) in per_user {
        events.sort_unstable();
        for pair in events.windows(2) {
            let ((a, _, a_failed), (b, _, b_failed)) = (pair[0], pair[1]);
            if a_failed && b_failed && b - a < within_ms {
                alerts.push(format!("{user},{},{}", a / 1000, b / 1000));
            }
        }
    }
    alerts.sort();
    (alerts, late)
}

#[test]
fn alerts_match_the_oracle() {
    let (text, logins) = input();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("logins.csv");
    std::fs::write(&path, &text).expect("write input");
    let malformed = text
        .lines()
        .filter(|l| l.is_empty() || l.contains("soon") || l.contains("logout"))
        .count();
    for (within, ooo) in [(None, None), (Some(4_000), Some(3_000))] {
        let (expected, late) = oracle(&logins, within.unwrap_or(10_000), ooo.unwrap_or(0));
        assert!(
            expected.len() > 20,
            "a meaningful input: {} alerts",
            expected.len()
        );
        assert!(
            ooo.is_some() || late > 5,
            "late records without out-of-orderness: {late}"
        );
        for parallelism in [1, 2, 4] {
            let mut args = vec![
                "--input".to_string(),
                path.to_str().expect("utf-8 path").to_string(),
                "--parallelism".to_string(),
                parallelism.to_string(),
            ];
            if let Some(within) = within {
                args.extend(["--within-ms".to_string(), within.to_string()]);
            }
            if let Some(ooo) = ooo {
                args.extend(["--out-of-orderness-ms".to_string(), ooo.to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = common::run(env!("CARGO_BIN_EXE_login_fail"), &args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{stderr}");
            let mut alerts: Vec<String> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            alerts.sort();
            assert_eq!(
                alerts, expected,
                "within {within:?}, ooo {ooo:?}, P={parallelism}"
            );
            assert_eq!(
                stderr.lines().filter(|l| l.starts_with("line ")).count(),
                malformed,
                "{stderr}"
            );
            assert!(
                stderr.contains(&format!("late records: {late}")),
                "{stderr}"
            );
        }
    }
}

#[test]
fn three_consecutive_failures_give_two_matches_and_within_is_exclusive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("logins.csv");
    std::fs::write(
        &path,
        "u1,1.1.1.1,fail,1\nu1,1.1.1.1,fail,2\nu2,2.2.2.2,fail,2\nu1,1.1.1.1,fail,3\n\
         u2,2.2.2.2,fail,12\nu3,3.3.3.3,fail,20\nu3,3.3.3.3,success,21\nu3,3.3.3.3,fail,22\n\
         bad line\nu4,4.4.4.4,fail,30\nu4,4.4.4.4,fail,30\n",
    )
    .expect("write input");
    let output = common::run(
        env!("CARGO_BIN_EXE_login_fail"),
        &["--input", path.to_str().expect("utf-8 path")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let mut alerts: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    alerts.sort();
    // u2: 12 - 2 = 10 s is not below 10 s; u3: a success breaks the strict contiguity; u4:
    // equal timestamps in arrival order.
    assert_eq!(alerts, ["u1,1,2", "u1,2,3", "u4,30,30"]);
    assert!(
        stderr.contains("line 9: expected 4 fields, found 1: bad line"),
        "{stderr}"
    );
}

#[test]
fn a_missing_input_file_is_named() {
    let output = common::run(
        env!("CARGO_BIN_EXE_login_fail"),
        &["--input", "/no/such/logins.csv"],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/logins.csv"));
}
