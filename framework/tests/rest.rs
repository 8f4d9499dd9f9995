//! The REST server and `GET /metrics` against running jobs: the answers while the job runs,
//! and after its end values that must agree with its `JobResult`; the `POST` commands.
//!
//! The server binds 127.0.0.1:0 and the tests read the bound address back. No verdict depends
//! on timing: a test waits (with a generous bound) for states the job must reach.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use eichhorn::connectors::{FileSource, RateLimitedSource};
use eichhorn::prelude::*;
use eichhorn::rest::{CheckpointStatus, JobState, JobView, RestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LINES: u64 = 3_000;
const WAIT: Duration = Duration::from_secs(60);

/// One HTTP/1.1 request; returns the status and the body.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8(answer).expect("utf-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_string())
}

async fn get_json<T: serde::de::DeserializeOwned>(addr: std::net::SocketAddr, path: &str) -> T {
    let (status, body) = http(addr, "GET", path, "").await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Polls `GET /jobs/<id>` until `done` holds.
async fn wait_for(
    addr: std::net::SocketAddr,
    id: &str,
    done: impl Fn(&JobView) -> bool,
) -> JobView {
    tokio::time::timeout(WAIT, async {
        loop {
            let view: JobView = get_json(addr, &format!("/jobs/{id}")).await;
            if done(&view) {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the job reached the state in time")
}

fn write_input(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("words.txt");
    let text: String = (0..LINES)
        .map(|i| format!("word{} filler\n", i % 13))
        .collect();
    std::fs::write(&path, text).expect("input");
    path
}

/// Lines at `rate` per second -> split -> count per word.
fn word_count(env: &StreamEnv, input: &Path, rate: u64) -> CollectSink<(String, u64)> {
    env.set_parallelism(2);
    env.add_source(
        RateLimitedSource::new(FileSource::new(input.to_path_buf()), rate),
        "lines",
    )
    .flat_map(|line: String| {
        line.split_whitespace()
            .map(|w| (w.to_string(), 1u64))
            .collect::<Vec<_>>()
    })
    .key_by(|(word, _): &(String, u64)| word.clone())
    .reduce(|(word, a), (_, b)| (word, a + b))
    .collect_sink()
}

/// Per operator node: records in and out summed over the view's subtasks.
fn operator_totals(view: &JobView) -> BTreeMap<u32, (u64, u64)> {
    let mut totals = BTreeMap::new();
    for vertex in &view.vertices {
        for subtask in &vertex.subtasks {
            for op in &subtask.metrics.operators {
                let total = totals.entry(op.node).or_insert((0, 0));
                total.0 += op.records_in;
                total.1 += op.records_out;
            }
        }
    }
    totals
}

/// Sums the samples of `metric` whose labels contain `filter`.
fn prometheus_sum(text: &str, metric: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(filter))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("a value in {l}"))
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_prometheus_agree_with_the_job_result() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = write_input(dir.path());
    let server = RestServer::bind("127.0.0.1:0").await.expect("bind");
    let addr = server.local_addr();
    let env = StreamEnv::new();
    env.set_rest_server(&server);
    env.enable_checkpointing(20);
    env.set_checkpoint_storage(dir.path().join("checkpoints"));
    let counts = word_count(&env, &input, 3_000);
    let job = env.execute_async("rest word count").await.expect("start");
    let id = job.job_id().to_string();

    let overview: serde_json::Value = get_json(addr, "/jobs").await;
    assert_eq!(overview["jobs"][0]["id"], id.as_str());
    assert_eq!(overview["jobs"][0]["name"], "rest word count");

    // While it runs: the graph, and live counts that only grow.
    let running = wait_for(addr, &id, |v| {
        v.state == JobState::Running && v.vertices.iter().any(|x| x.metrics.records_in > 0)
    })
    .await;
    // The source is not parallel, so it cannot chain with the flat map (parallelism 2).
    assert_eq!(running.vertices.len(), 3, "source, flat map, keyed reduce");
    assert_eq!(
        running.vertices[0].parallelism, 1,
        "a file source is not parallel"
    );
    assert_eq!(running.vertices[1].parallelism, 2);
    let partitioning: Vec<&str> = running
        .edges
        .iter()
        .map(|e| e.partitioning.as_str())
        .collect();
    assert_eq!(partitioning, ["REBALANCE", "HASH"]);
    assert_eq!(running.vertices[2].subtasks.len(), 2);
    assert!(
        running.vertices[2]
            .subtasks
            .iter()
            .all(|s| s.task_manager == "local")
    );
    assert_eq!(running.task_managers[0].slots, 5);
    let later = wait_for(addr, &id, |v| {
        v.checkpoints.completed >= 1 || v.state.is_terminal()
    })
    .await;
    for (node, (records_in, _)) in operator_totals(&running) {
        assert!(
            operator_totals(&later)[&node].0 >= records_in,
            "counts only grow"
        );
    }

    let result = job.join().await.expect("the job finishes");
    let words: u64 = counts.take().iter().map(|(_, n)| *n).max().unwrap_or(0);
    assert!(words > 0);

    // After the end: the final view agrees with the result, operator by operator.
    let done: JobView = get_json(addr, &format!("/jobs/{id}")).await;
    assert_eq!(done.state, JobState::Finished);
    let totals = operator_totals(&done);
    for op in &result.operators {
        assert_eq!(
            totals[&op.node.0],
            (op.records_in, op.records_out),
            "operator {} ({:?})",
            op.name,
            op.node
        );
    }
    let flat_map = result.operator("Flat Map").expect("a flat map");
    assert_eq!(flat_map.records_in, LINES);
    assert_eq!(flat_map.records_out, 2 * LINES);
    // Each vertex received over the channels what the one before sent.
    assert_eq!(
        done.vertices[0].metrics.records_in, LINES,
        "a source: what it read"
    );
    assert_eq!(done.vertices[0].metrics.records_out, LINES);
    assert_eq!(done.vertices[1].metrics.records_in, LINES);
    assert_eq!(done.vertices[1].metrics.records_out, 2 * LINES);
    assert_eq!(done.vertices[2].metrics.records_in, 2 * LINES);
    assert!(done.vertices[2].metrics.bytes_in > 0);
    assert_eq!(
        done.vertices[2].metrics.input_watermark,
        i64::MAX,
        "ended: max watermark"
    );
    // Checkpoints: the count the result reports, each completed one with a duration.
    assert_eq!(done.checkpoints.completed, result.completed_checkpoints);
    let latest = done
        .checkpoints
        .latest_completed
        .as_ref()
        .expect("a completed checkpoint");
    assert_eq!(latest.status, CheckpointStatus::Completed);
    assert!(latest.state_bytes > 0, "the keyed reduce has state");
    // State sizes: every subtask's last stored file is the final checkpoint's, and each
    // operator's share of it is its own; the keyed reduce holds the state.
    let subtask_bytes: u64 = done
        .vertices
        .iter()
        .flat_map(|v| &v.subtasks)
        .map(|s| s.metrics.state_bytes)
        .sum();
    assert_eq!(subtask_bytes, latest.state_bytes);
    for subtask in done.vertices.iter().flat_map(|v| &v.subtasks) {
        let operators: u64 = subtask
            .metrics
            .operators
            .iter()
            .map(|o| o.state_bytes)
            .sum();
        assert!(operators > 0 && operators < subtask.metrics.state_bytes);
    }
    let operator_bytes = |vertex: usize| -> u64 {
        done.vertices[vertex]
            .subtasks
            .iter()
            .map(|s| s.metrics.operators[0].state_bytes)
            .sum()
    };
    // The flat map stores an empty snapshot under its state id (a few dozen bytes per subtask).
    assert!(
        operator_bytes(1) <= 2 * 32 && operator_bytes(2) > 4 * operator_bytes(1),
        "the reduce's counts outweigh the flat map's empty snapshot: {} vs {}",
        operator_bytes(2),
        operator_bytes(1)
    );
    assert!(latest.duration_ms().is_some_and(|d| d >= 0));
    assert!(done.checkpoints.history.len() <= eichhorn::rest::CHECKPOINT_HISTORY_MAX);
    assert!(done.exceptions.is_empty());

    // Prometheus: the same numbers.
    let (status, text) = http(addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    let job_filter = format!("job_id=\"{id}\"");
    for op in &result.operators {
        let filter = format!("operator=\"{}\"", op.name);
        let records_in = prometheus_sum(
            &text,
            "eichhorn_taskmanager_job_task_operator_numRecordsIn_total",
            &filter,
        );
        assert_eq!(records_in, op.records_in as f64, "{}:\n{text}", op.name);
    }
    assert_eq!(
        prometheus_sum(
            &text,
            "eichhorn_taskmanager_job_task_numRecordsIn_total",
            &job_filter
        ),
        (3 * LINES) as f64,
        "the flat map's and the reduce's inputs"
    );
    assert_eq!(
        prometheus_sum(
            &text,
            "eichhorn_jobmanager_job_numberOfCompletedCheckpoints",
            &job_filter
        ),
        result.completed_checkpoints as f64
    );
    assert_eq!(
        prometheus_sum(
            &text,
            "eichhorn_jobmanager_job_status",
            "state=\"FINISHED\""
        ),
        1.0
    );
    let file_bytes = std::fs::metadata(&input).expect("input").len() as f64;
    assert_eq!(
        prometheus_sum(
            &text,
            "eichhorn_taskmanager_job_task_operator_user_gauge",
            "name=\"fileBytesRead\""
        ),
        file_bytes,
        "the file source reports its progress as a user gauge"
    );
    assert_eq!(
        prometheus_sum(
            &text,
            "eichhorn_taskmanager_job_task_operator_checkpointStateSize",
            &job_filter
        ),
        done.vertices
            .iter()
            .flat_map(|v| &v.subtasks)
            .flat_map(|s| &s.metrics.operators)
            .map(|o| o.state_bytes as f64)
            .sum::<f64>()
    );
    // Rates depend on timing; their arithmetic is unit-tested (`metrics::subtask`).
    assert!(text.contains("eichhorn_taskmanager_job_task_numRecordsInPerSecond{"));
    assert!(text.contains("subtask=\"1\""), "{text}");
    assert!(text.contains("node=\"local\""));
    let (_, again) = http(addr, "GET", "/metrics", "").await;
    assert_eq!(again, text, "a scrape of the same state is byte-identical");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_commands_take_savepoints_stop_and_cancel() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = write_input(dir.path());
    let env = StreamEnv::new();
    env.set_rest_addr("127.0.0.1:0");
    env.set_checkpoint_storage(dir.path().join("checkpoints"));
    let _counts = word_count(&env, &input, 20);
    let job = env.execute_async("slow count").await.expect("start");
    let addr = job.rest_addr().expect("the run's own server");
    let id = job.job_id().to_string();
    wait_for(addr, &id, |v| v.state == JobState::Running).await;

    // Bad requests are answered with what was wrong.
    let (status, body) = http(addr, "POST", &format!("/jobs/{id}/savepoints"), "{}").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("target-directory"), "{body}");
    let (status, _) = http(addr, "GET", "/jobs/no-such-job", "").await;
    assert_eq!(status, 404);
    let (status, _) = http(addr, "DELETE", "/jobs", "").await;
    assert_eq!(status, 405);

    // A savepoint: the folder exists and the history shows it.
    let target = dir.path().join("savepoints");
    let request = serde_json::json!({ "target-directory": target }).to_string();
    let (status, body) = http(addr, "POST", &format!("/jobs/{id}/savepoints"), &request).await;
    assert_eq!(status, 200, "{body}");
    let location: serde_json::Value = serde_json::from_str(&body).expect("json");
    let location = location["location"]
        .as_str()
        .expect("a location")
        .to_string();
    assert!(
        Path::new(&location).join("_metadata").exists(),
        "{location}"
    );
    let view: JobView = get_json(addr, &format!("/jobs/{id}")).await;
    let savepoint = view.checkpoints.latest_completed.expect("the savepoint");
    assert_eq!(savepoint.kind, eichhorn::rest::CheckpointType::Savepoint);

    // Stop with a savepoint: the job ends cancelled.
    let (status, body) = http(addr, "POST", &format!("/jobs/{id}/stop"), &request).await;
    assert_eq!(status, 200, "{body}");
    let result = job.join().await.expect("stopped");
    assert_eq!(result.status, JobStatus::Canceled);
    // The run's own server is gone with the job.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    // Cancel, on a server the test owns.
    let server = RestServer::bind("127.0.0.1:0").await.expect("bind");
    let env = StreamEnv::new();
    env.set_rest_server(&server);
    let _counts = word_count(&env, &input, 20);
    let job = env.execute_async("cancelled count").await.expect("start");
    let id = job.job_id().to_string();
    wait_for(server.local_addr(), &id, |v| v.state == JobState::Running).await;
    let (status, _) = http(
        server.local_addr(),
        "POST",
        &format!("/jobs/{id}/cancel"),
        "",
    )
    .await;
    assert_eq!(status, 202);
    let result = job.join().await.expect("cancelled");
    assert_eq!(result.status, JobStatus::Canceled);
    let view: JobView = get_json(server.local_addr(), &format!("/jobs/{id}")).await;
    assert_eq!(view.state, JobState::Canceled);
    assert!(view.end_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_shows_its_exceptions_and_restarts() {
    let server = RestServer::bind("127.0.0.1:0").await.expect("bind");
    let env = StreamEnv::new();
    env.set_rest_server(&server);
    env.set_restart_strategy(eichhorn::checkpoint::RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 1,
    });
    env.from_collection((0..100u32).collect())
        .map(|x: u32| {
            assert!(x != 42, "the answer is not allowed");
            x
        })
        .collect_sink();
    let error = env.execute("failing").await.expect_err("it fails");
    assert!(error.to_string().contains("the answer is not allowed"));
    let view = server.jobs()[0].view();
    assert_eq!(view.state, JobState::Failed);
    assert_eq!(view.restarts, 2);
    assert_eq!(
        view.exceptions.len(),
        3,
        "the first failure and one per restart"
    );
    let first = &view.exceptions[0];
    assert_eq!(first.operator, "Map");
    assert!(
        first.task.starts_with("Source: Collection -> Map") || first.task.contains("Map"),
        "{first:?}"
    );
    assert!(
        first.message.contains("the answer is not allowed"),
        "{first:?}"
    );
    assert!(view.failure.is_some_and(|f| f.contains("the answer")));
}
