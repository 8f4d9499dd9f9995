//! Runtime behaviour: flow control bounds, failures, cancellation, configuration errors.
//!
//! Timeouts here only guard against hangs; no verdict depends on timing.

use std::time::Duration;

use eichhorn::prelude::*;

/// Fails the test instead of hanging forever.
async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the job hung")
}

#[operator(new = false)]
#[derive(Clone)]
struct SlowSink {
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SinkFunction<u64> for SlowSink {
    fn invoke(&mut self, _value: u64, _ctx: &SinkContext) -> Result<(), FunctionError> {
        // Much slower than the source: the queue in front of the sink fills up.
        std::thread::sleep(Duration::from_micros(20));
        self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sink_back_pressures_the_source_within_the_bound() {
    let env = StreamEnv::new();
    let (batch, credits) = (16usize, 2u32);
    env.configure(|c| {
        c.batch_records_max = batch;
        c.credits_per_channel = credits;
    });
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    env.from_generator(20_000, |g| g)
        .map(|g| g + 1)
        .rebalance()
        .add_sink(SlowSink { seen: seen.clone() })
        .set_parallelism(1);
    let result = within(env.execute("back-pressure")).await.unwrap();
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::Relaxed),
        20_000,
        "nothing lost"
    );
    let bound = batch as u64 * u64::from(credits);
    assert!(
        result.max_queued_records <= bound,
        "{} records were queued on one channel, the bound is {bound}",
        result.max_queued_records
    );
    assert!(result.max_queued_records > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_map_fails_the_job_naming_operator_and_subtask() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let out = env
        .from_generator(10_000, |g| g)
        .map(|g| {
            if g == 7_777 {
                panic!("boom at {g}");
            }
            g
        })
        .name("Fragile Map")
        .key_by(|g| *g % 10)
        .reduce(|a, b| a + b)
        .collect_sink();
    let error = within(env.execute("failing")).await.unwrap_err();
    match &error {
        JobError::TaskFailed {
            task,
            operator,
            message,
        } => {
            assert_eq!(operator, "Fragile Map");
            // 7777 is odd: subtask 1 of the generator, chained with the map.
            assert_eq!(task, "Source: Generator -> Fragile Map (2/2)");
            assert!(message.contains("boom at 7777"), "{message}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(error.to_string().contains("Fragile Map"), "{error}");
    assert!(out.len() < 10_000);
}

#[operator(new = false)]
#[derive(Clone)]
struct FailingSink;

impl SinkFunction<i64> for FailingSink {
    fn invoke(&mut self, value: i64, _ctx: &SinkContext) -> Result<(), FunctionError> {
        if value == 42 {
            return Err(format!("cannot store {value}").into());
        }
        Ok(())
    }
}

#[tokio::test]
async fn sink_error_fails_the_job() {
    let env = StreamEnv::new();
    env.from_collection((0..100i64).collect())
        .add_sink(FailingSink)
        .name("Store");
    let error = within(env.execute("sink error")).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("'Store'") && text.contains("cannot store 42"),
        "{text}"
    );
}

#[operator(new = false)]
#[derive(Clone)]
struct FailingOpen;

impl MapFunction<i64> for FailingOpen {
    type Out = i64;
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Err(format!("no connection for subtask {}", ctx.subtask_index).into())
    }
    fn map(&mut self, value: i64) -> i64 {
        value
    }
}

#[tokio::test]
async fn open_error_fails_the_job() {
    let env = StreamEnv::new();
    let _out = env
        .from_collection(vec![1i64])
        .map_function(FailingOpen)
        .name("Enricher")
        .collect_sink();
    let error = within(env.execute("open error")).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("'Enricher'") && text.contains("open failed: no connection"),
        "{text}"
    );
}

#[tokio::test]
async fn missing_input_file_names_the_path() {
    let env = StreamEnv::new();
    let _out = env
        .read_text_file("/definitely/not/here.txt")
        .collect_sink();
    let error = within(env.execute("missing file")).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("cannot open input file '/definitely/not/here.txt'"),
        "{error}"
    );
}

#[tokio::test]
async fn text_file_round_trip_and_invalid_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "alpha\r\nbeta\n\ngamma").unwrap();
    let output = dir.path().join("out.txt");
    let env = StreamEnv::new();
    env.read_text_file(&input)
        .map(|l| l.to_uppercase())
        .write_as_text(&output);
    within(env.execute("files")).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "ALPHA\nBETA\n\nGAMMA\n"
    );

    let parallel = dir.path().join("parallel");
    let env = StreamEnv::new();
    env.read_text_file(&input)
        .rebalance()
        .write_as_text(&parallel)
        .set_parallelism(2);
    within(env.execute("files")).await.unwrap();
    let mut lines: Vec<String> = ["1", "2"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(parallel.join(f))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    assert_eq!(lines, vec!["", "alpha", "beta", "gamma"]);

    std::fs::write(&input, b"ok\n\xff\xfe\n").unwrap();
    let env = StreamEnv::new();
    let _out = env.read_text_file(&input).collect_sink();
    let error = within(env.execute("bad utf8"))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("line 2: not valid UTF-8"), "{error}");
}

#[tokio::test]
async fn custom_partitioner_out_of_range_is_an_error() {
    let env = StreamEnv::new();
    let _out = env
        .from_collection((0..10u32).collect())
        .partition_custom(|_: &u32, n| n, |v| *v)
        .map(|v| v)
        .name("Target")
        .set_parallelism(2)
        .collect_sink();
    let error = within(env.execute("bad partitioner"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("custom partitioner returned channel 2"),
        "{error}"
    );
}

#[tokio::test]
async fn invalid_graphs_and_configuration_are_rejected_before_running() {
    let env = StreamEnv::new();
    let _ = env
        .from_collection(vec![1u8])
        .set_parallelism(2)
        .collect_sink();
    let error = env.execute("x").await.unwrap_err().to_string();
    assert!(error.contains("not parallel"), "{error}");

    let env = StreamEnv::new();
    let _ = env
        .from_generator(10, |g| g)
        .set_parallelism(2)
        .forward()
        .map(|g| g)
        .set_parallelism(3)
        .collect_sink();
    let error = env.execute("x").await.unwrap_err().to_string();
    assert!(
        error.contains("forward partitioning needs equal parallelism"),
        "{error}"
    );

    let env = StreamEnv::new();
    env.configure(|c| c.batch_records_max = 0);
    let _ = env.from_collection(vec![1u8]).collect_sink();
    let error = env.execute("x").await.unwrap_err().to_string();
    assert!(error.contains("batch_records_max 0"), "{error}");

    let env = StreamEnv::new();
    let a = env.from_collection(vec![1u8]);
    let b = env.from_collection(vec![2u8]);
    let _ = a.union([b]).name("nope").collect_sink();
    let error = env.execute("x").await.unwrap_err().to_string();
    assert!(
        error.contains("name() applies to the stream of one operator"),
        "{error}"
    );

    let env = StreamEnv::new();
    let error = env.execute("empty").await.unwrap_err().to_string();
    assert!(error.contains("no operators"), "{error}");

    let env = StreamEnv::new();
    env.set_parallelism(200);
    let _ = env.from_generator(1, |g| g).collect_sink();
    let error = env.execute("x").await.unwrap_err().to_string();
    assert!(error.contains("parallelism 200"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_job_can_be_cancelled() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let out = env
        .from_generator_unbounded(|g| g)
        .key_by(|g| g % 3)
        .reduce(|a, b| a.max(b))
        .collect_sink();
    let handle = env.execute_async("forever").await.unwrap();
    within(async {
        while out.len() < 10_000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    handle.cancel();
    let result = within(handle.join()).await.unwrap();
    assert_eq!(result.status, JobStatus::Canceled);
}

#[tokio::test]
async fn explain_shows_chains_and_partitioning() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let _ = env
        .from_collection(vec![1i64])
        .map(|x| x)
        .key_by(|x| *x)
        .sum(|x| x)
        .print();
    let text = env.explain().unwrap();
    assert_eq!(
        text,
        "Job graph: 3 task(s)\n  [0] Source: Collection (parallelism 1)\n      --REBALANCE--> [1]\n  \
         [1] Map (parallelism 2)\n      --HASH--> [2]\n  [2] Keyed Sum -> Sink: Print (parallelism 2)\n"
    );
}

/// Emits a few records, then nothing: without the linger timer they would sit in a partially
/// filled batch forever.
#[operator(new = false)]
#[derive(Clone)]
struct Trickle {
    sent: u64,
}

impl SourceFunction<u64> for Trickle {
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, u64>) -> Result<SourcePoll, FunctionError> {
        if self.sent < 3 {
            ctx.collect(self.sent);
            self.sent += 1;
            return Ok(SourcePoll::MoreAvailable);
        }
        Ok(SourcePoll::Idle)
    }
}

#[tokio::test(start_paused = true)]
async fn linger_timer_delivers_partial_batches() {
    let env = StreamEnv::new();
    env.set_buffer_timeout_ms(50);
    let out = env
        .add_source(Trickle { sent: 0 }, "trickle")
        .rebalance()
        .map(|x| x * 10)
        .set_parallelism(2)
        .collect_sink();
    let handle = env.execute_async("trickle").await.unwrap();
    // Virtual time: the linger timer fires after 50 ms whatever the machine's speed.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(out.len(), 0, "a partial batch waits for the linger timer");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut values = out.take();
    values.sort();
    assert_eq!(values, vec![0, 10, 20]);
    handle.cancel();
    assert_eq!(handle.join().await.unwrap().status, JobStatus::Canceled);
}

/// Runs a keyed job with checkpoints to disk in `runtime_env` (or the default) and returns its
/// final sums and the names of the threads its map subtasks ran on.
async fn keyed_sums_and_threads(
    runtime_env: Option<eichhorn::runtime::RuntimeEnv>,
    checkpoints: &std::path::Path,
) -> (
    std::collections::BTreeMap<u64, u64>,
    std::collections::BTreeSet<String>,
) {
    let env = StreamEnv::new();
    if let Some(runtime_env) = runtime_env {
        env.set_runtime_env(runtime_env);
    }
    env.set_parallelism(2);
    env.enable_checkpointing(5);
    env.set_checkpoint_storage(checkpoints);
    let threads = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let seen = threads.clone();
    let sums = env
        .from_generator(20_000, |g| g)
        .map(move |g| {
            let name = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_string();
            seen.lock().expect("not poisoned").insert(name);
            (g % 10, g)
        })
        .key_by(|t: &(u64, u64)| t.0)
        .reduce(|a, b| (a.0, a.1 + b.1))
        .collect_sink();
    let result = within(env.execute("keyed sums")).await.expect("job runs");
    // The run's checkpoints are in `<checkpoint dir>/<job id>/chk-<n>`, the final one included.
    let run_dir = checkpoints.join(result.job_id.to_string());
    assert_eq!(result.checkpoint_dir.as_deref(), Some(run_dir.as_path()));
    assert!(
        std::fs::read_dir(&run_dir)
            .expect("the run's folder")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("chk-")),
        "no checkpoint in {}",
        run_dir.display()
    );
    let mut finals = std::collections::BTreeMap::new();
    for (key, sum) in sums.take() {
        let entry = finals.entry(key).or_insert(0);
        *entry = sum.max(*entry);
    }
    let threads = threads.lock().expect("not poisoned").clone();
    (finals, threads)
}

/// The runtime environment, not the tokio flavour, decides where subtasks run: in a
/// multi-thread runtime the default (production) gives each subtask a thread of its own, while
/// `RuntimeEnv::deterministic` keeps every subtask on the runtime's own workers and runs the
/// checkpoint writer's blocking work in place; both give the same result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deterministic_env_in_a_multi_thread_runtime_runs_subtasks_on_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (default_sums, default_threads) = keyed_sums_and_threads(None, dir.path()).await;
    assert!(
        default_threads
            .iter()
            .all(|name| name.starts_with("eichhorn-subtask-")),
        "{default_threads:?}"
    );
    let env = eichhorn::runtime::RuntimeEnv::deterministic(7);
    let (sums, threads) = keyed_sums_and_threads(Some(env), dir.path()).await;
    // What a task spawned on this runtime runs on: its workers.
    let worker = tokio::spawn(async {
        std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string()
    })
    .await
    .expect("runs");
    assert!(!worker.starts_with("eichhorn-subtask-"), "{worker}");
    assert!(
        threads.iter().all(|name| *name == worker),
        "subtasks left the runtime's workers ({worker}): {threads:?}"
    );
    assert_eq!(sums, default_sums);
    let expected: std::collections::BTreeMap<u64, u64> = (0..10)
        .map(|key| (key, (0..20_000u64).filter(|g| g % 10 == key).sum()))
        .collect();
    assert_eq!(sums, expected);
}

/// An env that needs `block_in_place` cannot run on a current-thread runtime: the job is
/// refused with an error saying why, before anything runs (not a panic at the first
/// checkpoint).
#[tokio::test(flavor = "current_thread")]
async fn a_production_env_on_a_current_thread_runtime_is_refused() {
    let env = StreamEnv::new();
    env.set_runtime_env(eichhorn::runtime::RuntimeEnv::production());
    env.from_collection(vec![1u8]).collect_sink();
    let error = env.execute("refused").await.expect_err("refused");
    assert!(
        error.to_string().contains("BlockInPlace"),
        "unexpected error: {error}"
    );
}
