//! End-to-end test of the `stream_wordcount` binary: the test is the socket server, sends a few
//! lines, closes the connection, and checks that the binary exits 0 having printed every rolling
//! count exactly once.
//!
//! The printed lines are compared as a multiset: at parallelism above 1 the subtasks' lines
//! interleave arbitrarily. Timeouts only stop a hung child; they never decide the verdict of a
//! run that completes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_stream_wordcount");

/// How long the child may take to connect, and then to finish, before it is killed.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

const LINES: &[&str] = &[
    "To be, or not to be,--that is the question:--",
    "",
    "Straße STRASSE straße ÉCOLE école",
    "room 101 and 101 dalmatians\r",
    "to BE continued",
];

/// Every rolling update `word count` the job must print, with multiplicity.
fn expected_updates() -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut updates = BTreeMap::new();
    for line in LINES {
        for word in line
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let word = word.to_lowercase();
            let count = counts.entry(word.clone()).or_insert(0);
            *count += 1;
            *updates.entry(format!("{word} {count}")).or_insert(0) += 1;
        }
    }
    updates
}

/// Kills the child when dropped, so no failing assertion leaves it running.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text)
            .expect("child output is UTF-8");
        text
    })
}

/// Accepts the child's connection, giving up if the child exits or the timeout passes.
fn accept(listener: &TcpListener, child: &mut Child) -> TcpStream {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking stream");
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept failed: {e}"),
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("stream_wordcount exited with {status} before connecting");
        }
        assert!(
            Instant::now() < deadline,
            "stream_wordcount did not connect"
        );
        thread::sleep(POLL_INTERVAL);
    }
}

fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "stream_wordcount did not exit after the connection closed"
        );
        thread::sleep(POLL_INTERVAL);
    }
}

/// Strips the `N> ` subtask prefix that `print()` adds at parallelism above 1.
fn strip_subtask_prefix(line: &str) -> &str {
    match line.split_once("> ") {
        Some((subtask, rest)) if subtask.parse::<u32>().is_ok() => rest,
        _ => line,
    }
}

fn check(parallelism: u32) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let child = Command::new(BIN)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--parallelism", &parallelism.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stream_wordcount");
    let mut child = ChildGuard(child);
    let stdout = read_all(child.0.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.0.stderr.take().expect("piped stderr"));

    let mut connection = accept(&listener, &mut child.0);
    for line in LINES {
        writeln!(connection, "{line}").expect("send line");
    }
    connection.shutdown(Shutdown::Write).expect("shutdown");
    drop(connection);

    let status = wait(&mut child.0);
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    assert!(status.success(), "exit {status}, stderr: {stderr}");

    let mut printed = BTreeMap::new();
    for line in stdout.lines() {
        let line = if parallelism > 1 {
            strip_subtask_prefix(line)
        } else {
            line
        };
        *printed.entry(line.to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        printed,
        expected_updates(),
        "parallelism {parallelism}, stdout:\n{stdout}"
    );
}

#[test]
fn prints_every_rolling_count_and_exits_when_the_socket_closes() {
    check(1);
}

#[test]
fn prints_every_rolling_count_in_parallel() {
    check(2);
}

/// Lines with one that is not UTF-8, sent in one write: the bad line arrives in the same read
/// as the good ones around it.
const MIXED: &[u8] = b"good one\n\xff\xfe bad\ngood two\n";

/// Runs the binary with `args` against a server on 127.0.0.1 that sends `bytes` in one write
/// and closes; returns the port, the exit status, stdout and stderr.
fn run_against(bytes: &[u8], args: &[&str]) -> (u16, ExitStatus, String, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let child = Command::new(BIN)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stream_wordcount");
    let mut child = ChildGuard(child);
    let stdout = read_all(child.0.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.0.stderr.take().expect("piped stderr"));

    let mut connection = accept(&listener, &mut child.0);
    connection.write_all(bytes).expect("send lines");
    connection.shutdown(Shutdown::Write).expect("shutdown");
    drop(connection);

    let status = wait(&mut child.0);
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    (port, status, stdout, stderr)
}

#[test]
fn a_line_that_is_not_utf8_is_reported_and_skipped_and_the_good_lines_count() {
    let (port, status, stdout, stderr) = run_against(MIXED, &[]);
    assert!(status.success(), "exit {status}, stderr: {stderr}");
    let mut printed: Vec<&str> = stdout.lines().collect();
    printed.sort_unstable();
    assert_eq!(
        printed,
        ["good 1", "good 2", "one 1", "two 1"],
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains(&format!("line 2 from 127.0.0.1:{port} is not valid UTF-8")),
        "the bad line is reported with its number and the address: {stderr}"
    );
}

#[test]
fn on_request_a_line_that_is_not_utf8_fails_the_job_naming_line_and_address() {
    let (port, status, _, stderr) = run_against(MIXED, &["--fail-on-invalid-utf8"]);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("line 2 from 127.0.0.1:{port} is not valid UTF-8")),
        "{stderr}"
    );
}
