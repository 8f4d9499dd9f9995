//! Examples run as a cluster of real processes on loopback: a JobManager and TaskManagers
//! started from the same binary (the contract of `eichhorn::cluster`).
//!
//! - `wordcount` on a JobManager and two TaskManagers writes exactly what the single-process run
//!   writes;
//! - `checkpointed_count` survives `kill -9` of a TaskManager that runs subtasks, with a
//!   replacement joining: the JobManager exits 0 and the committed output equals a failure-free
//!   run;
//! - random UDP datagrams and a QUIC client with a certificate from another cluster, sent to the
//!   JobManager's port during a run, are refused and logged, and the output is unaffected;
//! - TaskManagers shut down cleanly on SIGTERM.
//!
//! Timeouts only guard against hangs: every verdict is on outputs and exit codes.

mod common;

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use eichhorn_examples::counting::expected_output;

const WORDCOUNT: &str = env!("CARGO_BIN_EXE_wordcount");
const CHECKPOINTED_COUNT: &str = env!("CARGO_BIN_EXE_checkpointed_count");

/// Far above any normal run, even of a debug build on a loaded machine.
const HANG_TIMEOUT: Duration = Duration::from_secs(180);

/// Short heartbeats, so a killed TaskManager is noticed within two seconds.
const HEARTBEATS: [&str; 4] = [
    "--heartbeat-interval-ms",
    "300",
    "--heartbeat-timeout-ms",
    "2000",
];

/// A free UDP port on loopback (bound and released; the JobManager binds it right after).
fn free_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("a free port")
}

/// One process of the cluster, its stderr in a file.
struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    fn start(bin: &str, args: &[&str], dir: &Path, name: &str) -> Self {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(bin)
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(File::create(dir.join(format!("{name}.out"))).expect("stdout file"))
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {bin}: {error}"));
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + HANG_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("a node did not exit in time; its log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `needle` (or the process exits, which fails).
    fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + HANG_TIMEOUT;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("exited ({status}) before logging '{needle}'; its log:\n{log}");
            }
            if Instant::now() >= deadline {
                panic!("never logged '{needle}'; its log:\n{log}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait.
    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.wait()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn job_manager(bin: &str, addr: SocketAddr, job: &[&str], dir: &Path) -> Node {
    let addr = addr.to_string();
    let mut args = vec!["--jobmanager", "--bind", &addr];
    args.extend(HEARTBEATS);
    args.extend(job);
    Node::start(bin, &args, dir, "jobmanager")
}

fn task_manager(bin: &str, join: SocketAddr, slots: u32, dir: &Path, name: &str) -> Node {
    let join = join.to_string();
    let slots = slots.to_string();
    let mut args = vec![
        "--taskmanager",
        "--join",
        &join,
        "--slots",
        &slots,
        "--node-id",
        name,
    ];
    args.extend(HEARTBEATS);
    Node::start(bin, &args, dir, name)
}

#[test]
fn wordcount_on_two_task_managers_writes_what_one_process_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text: String = (0..3_000)
        .map(|i| format!("word{} Other{} the end\n", i % 97, i % 13))
        .collect();
    std::fs::write(dir.path().join("in.txt"), text).expect("input");
    let local = common::run(
        WORDCOUNT,
        &[
            "--input",
            &dir.path().join("in.txt").display().to_string(),
            "--output",
            &dir.path().join("local.txt").display().to_string(),
            "--parallelism",
            "4",
        ],
    );
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );

    let addr = free_port();
    let job = [
        "--input",
        "in.txt",
        "--output",
        "cluster.txt",
        "--parallelism",
        "4",
    ];
    // The TaskManagers start first: they keep trying to join until the JobManager listens.
    // The cluster directory must exist for them; the JobManager would create it.
    eichhorn::net::ClusterCa::load_or_create(&dir.path().join(".eichhorn-cluster"))
        .expect("the cluster directory");
    let mut tm1 = task_manager(WORDCOUNT, addr, 2, dir.path(), "tm1");
    let mut tm2 = task_manager(WORDCOUNT, addr, 2, dir.path(), "tm2");
    tm1.wait_for_log("cannot join");
    let mut jm = job_manager(WORDCOUNT, addr, &job, dir.path());
    let status = jm.wait();
    assert!(status.success(), "job manager failed:\n{}", jm.log());
    let log = jm.log();
    assert!(log.contains("task manager joined"), "{log}");
    assert!(log.contains("deploying"), "{log}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cluster.txt")).expect("cluster output"),
        std::fs::read_to_string(dir.path().join("local.txt")).expect("local output"),
    );
    // TaskManagers outlive the job and stop cleanly on SIGTERM.
    assert!(tm1.terminate().success(), "{}", tm1.log());
    assert!(tm2.terminate().success(), "{}", tm2.log());
    assert!(tm1.log().contains("the job ended"), "{}", tm1.log());
}

/// `key,value` lines over 29 keys.
fn key_values(count: u64) -> String {
    (0..count)
        .map(|i| format!("k{},{}\n", (i * 7) % 29, (i % 101) as i64 - 50))
        .collect()
}

/// The committed lines (visible files only), sorted.
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

/// Whether a checkpoint of the run below `checkpoints` completed.
fn checkpoint_completed(checkpoints: &Path) -> bool {
    let Ok(runs) = std::fs::read_dir(checkpoints) else {
        return false;
    };
    runs.flatten().any(|run| {
        std::fs::read_dir(run.path()).is_ok_and(|folders| {
            folders
                .flatten()
                .any(|folder| folder.path().join("_metadata").is_file())
        })
    })
}

/// The TaskManagers the JobManager deployed attempt 0 on, from its log line
/// `deploying 5 subtasks on tm1 (2 subtasks), tm2 (3 subtasks)`.
fn deployed_on(log: &str) -> Vec<String> {
    let line = log
        .lines()
        .find(|line| line.contains("deploying") && line.contains("attempt=0"))
        .expect("a deployment line");
    let list = line.split(" on ").nth(1).expect("node list");
    list.split(", ")
        .map(|part| part.split(' ').next().expect("node").to_string())
        .collect()
}

#[test]
fn checkpointed_count_survives_kill_9_of_a_task_manager() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = key_values(12_000);
    std::fs::write(dir.path().join("in.csv"), &input).expect("input");
    let expected = {
        let mut lines = expected_output(input.lines());
        lines.sort();
        lines
    };
    let addr = free_port();
    let job = [
        "--input",
        "in.csv",
        "--output",
        "out",
        "--parallelism",
        "4",
        "--checkpoint-interval-ms",
        "200",
        "--source-rate",
        "1500",
    ];
    let mut jm = job_manager(CHECKPOINTED_COUNT, addr, &job, dir.path());
    let mut nodes: Vec<(String, Node)> = ["tm1", "tm2", "tm3"]
        .into_iter()
        .map(|name| {
            (
                name.to_string(),
                task_manager(CHECKPOINTED_COUNT, addr, 2, dir.path(), name),
            )
        })
        .collect();
    let log = jm.wait_for_log("attempt=0");
    let victim = deployed_on(&log)[0].clone();
    // Kill in the middle: after a checkpoint completed, long before the input ends.
    let deadline = Instant::now() + HANG_TIMEOUT;
    while !checkpoint_completed(&dir.path().join("out/.checkpoints")) {
        assert!(
            Instant::now() < deadline,
            "no checkpoint completed:\n{}",
            jm.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let index = nodes
        .iter()
        .position(|(name, _)| *name == victim)
        .expect("the victim runs");
    let (_, mut killed) = nodes.remove(index);
    killed.child.kill().expect("kill -9");
    let _ = killed.child.wait();
    nodes.push((
        "tm4".to_string(),
        task_manager(CHECKPOINTED_COUNT, addr, 2, dir.path(), "tm4"),
    ));

    let status = jm.wait();
    let log = jm.log();
    assert!(status.success(), "job manager failed:\n{log}");
    // The loss is seen by the JobManager or first by a peer whose channel to the victim broke.
    assert!(
        log.contains(&format!("task manager '{victim}' was lost"))
            || log.contains(&format!("connection to {victim} lost")),
        "{log}"
    );
    assert!(log.contains("restoring attempt 1"), "{log}");
    assert_eq!(committed(&dir.path().join("out")), expected, "{log}");
    // The TaskManagers read the restored state themselves, by state handle, from the shared
    // checkpoint directory: at least two of them ran restored subtasks.
    let restored_by_handle = nodes
        .iter()
        .filter(|(_, node)| node.log().contains("by state handle"))
        .count();
    assert!(
        restored_by_handle >= 2,
        "{restored_by_handle} task manager(s) restored by handle:\n{log}"
    );
    for (_, node) in &mut nodes {
        assert!(node.terminate().success(), "{}", node.log());
    }
}

#[test]
fn garbage_and_foreign_certificates_are_refused_without_disturbing_the_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = key_values(4_000);
    std::fs::write(dir.path().join("in.csv"), &input).expect("input");
    let expected = {
        let mut lines = expected_output(input.lines());
        lines.sort();
        lines
    };
    let addr = free_port();
    let rest = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .to_string();
    let job = [
        "--rest",
        &rest,
        "--input",
        "in.csv",
        "--output",
        "out",
        "--parallelism",
        "2",
        "--checkpoint-interval-ms",
        "200",
        "--source-rate",
        "2000",
    ];
    let mut jm = job_manager(CHECKPOINTED_COUNT, addr, &job, dir.path());
    let mut tm = task_manager(CHECKPOINTED_COUNT, addr, 2, dir.path(), "tm1");
    jm.wait_for_log("attempt=0");

    // The JobManager's status names the job and the TaskManager that joined.
    let jobs = http_get(&rest, "/jobs");
    assert!(jobs.contains("Checkpointed Count"), "{jobs}");
    let id = jobs
        .split("\"id\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a job id")
        .to_string();
    let job_view = http_get(&rest, &format!("/jobs/{id}"));
    assert!(job_view.contains("\"task_managers\""), "{job_view}");
    assert!(job_view.contains("\"tm1\""), "{job_view}");
    // State sizes: the TaskManagers' metric reports do not carry them; the JobManager learns
    // them as state files are stored. Once a checkpoint completed and the TaskManager reported
    // its subtasks' metrics (records counted), the counter shows its state.
    let deadline = Instant::now() + HANG_TIMEOUT;
    loop {
        let view: eichhorn::rest::JobView =
            serde_json::from_str(&http_get(&rest, &format!("/jobs/{id}"))).expect("a job view");
        let reported = view.vertices.iter().any(|v| v.metrics.records_in > 0);
        if view.checkpoints.completed >= 1 && reported {
            let state_bytes: u64 = view.vertices.iter().map(|v| v.metrics.state_bytes).sum();
            let operator_bytes: u64 = view
                .vertices
                .iter()
                .flat_map(|v| &v.subtasks)
                .flat_map(|s| &s.metrics.operators)
                .map(|o| o.state_bytes)
                .sum();
            assert!(
                state_bytes > 0 && operator_bytes > 0 && operator_bytes < state_bytes,
                "state sizes after a completed checkpoint: {view:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint completed: {view:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }

    // Random datagrams, some shaped like QUIC long headers.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..300u32 {
        let mut datagram = vec![0u8; 20 + (i as usize * 7) % 1200];
        for byte in &mut datagram {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        if i % 3 == 0 {
            datagram[0] = 0xc0 | (datagram[0] & 0x0f);
            datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        socket.send_to(&datagram, addr).expect("send");
    }
    // A QUIC client whose certificate comes from another cluster's authority.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let refused = runtime.block_on(async {
        let foreign = eichhorn::net::ClusterCa::generate().expect("a foreign CA");
        let identity = foreign.issue("intruder").expect("identity");
        let node = eichhorn::net::NetNode::bind(
            "127.0.0.1:0".parse().expect("addr"),
            &identity,
            eichhorn::net::Hello::new("intruder", eichhorn::net::Role::TaskManager { slots: 8 }),
            eichhorn::net::TransportSettings::default(),
        )
        .expect("bind");
        node.connect(addr).await
    });
    assert!(refused.is_err(), "a foreign node was let in");

    let status = jm.wait();
    let log = jm.log();
    assert!(status.success(), "job manager failed:\n{log}");
    assert!(log.contains("refused a connection"), "{log}");
    assert!(!log.contains("joined task_manager=intruder"), "{log}");
    assert!(log.contains("(0 restart(s)"), "{log}");
    assert_eq!(committed(&dir.path().join("out")), expected, "{log}");
    assert!(tm.terminate().success(), "{}", tm.log());
}

/// The body of `GET path` from the HTTP server at `addr` (a minimal HTTP/1.1 client).
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the REST server");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// A TaskManager killed with `kill -9` and started again at once with its old node id and
/// address (`--bind`), as a supervisor restarts a process: the JobManager takes it for the
/// same node restarted and drops the old incarnation at once (rather than refusing the new
/// one as a duplicate until the old one's heartbeats time out), and the output is exact.
#[test]
fn a_task_manager_restarted_under_its_old_id_and_address_is_taken_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = key_values(12_000);
    std::fs::write(dir.path().join("in.csv"), &input).expect("input");
    let expected = {
        let mut lines = expected_output(input.lines());
        lines.sort();
        lines
    };
    let addr = free_port();
    let job = [
        "--input",
        "in.csv",
        "--output",
        "out",
        "--parallelism",
        "4",
        "--checkpoint-interval-ms",
        "200",
        "--source-rate",
        "1500",
    ];
    let start = |name: &str, bind: SocketAddr| {
        let join = addr.to_string();
        let bind = bind.to_string();
        let mut args = vec![
            "--taskmanager",
            "--join",
            &join,
            "--slots",
            "2",
            "--node-id",
            name,
            "--bind",
            &bind,
        ];
        args.extend(HEARTBEATS);
        Node::start(CHECKPOINTED_COUNT, &args, dir.path(), name)
    };
    let mut jm = job_manager(CHECKPOINTED_COUNT, addr, &job, dir.path());
    let mut nodes: Vec<(String, SocketAddr, Node)> = ["tm1", "tm2"]
        .into_iter()
        .map(|name| {
            let bind = free_port();
            (name.to_string(), bind, start(name, bind))
        })
        .collect();
    let log = jm.wait_for_log("attempt=0");
    let victim = deployed_on(&log)[0].clone();
    let deadline = Instant::now() + HANG_TIMEOUT;
    while !checkpoint_completed(&dir.path().join("out/.checkpoints")) {
        assert!(
            Instant::now() < deadline,
            "no checkpoint completed:\n{}",
            jm.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let index = nodes
        .iter()
        .position(|(name, _, _)| *name == victim)
        .expect("the victim runs");
    let (name, bind, mut killed) = nodes.remove(index);
    killed.child.kill().expect("kill -9");
    let _ = killed.child.wait();
    // Back at once, well within the heartbeat timeout (2 s), same id, same address.
    nodes.push((name.clone(), bind, start(&name, bind)));

    let status = jm.wait();
    let log = jm.log();
    assert!(status.success(), "job manager failed:\n{log}");
    assert!(
        log.contains("it restarted: a new incarnation joined"),
        "the old incarnation was not replaced:\n{log}"
    );
    assert!(
        !log.contains(&format!("node id '{victim}' is already in use")),
        "the restarted node was refused:\n{log}"
    );
    assert_eq!(committed(&dir.path().join("out")), expected, "{log}");
    for (_, _, node) in &mut nodes {
        assert!(node.terminate().success(), "{}", node.log());
    }
}
