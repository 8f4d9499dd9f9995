//! A non-parallel source runs at parallelism 1 whatever the environment's default (Flink's
//! `SourceFunction` against `ParallelSourceFunction`): at a default parallelism of N it emits
//! every record once, not N times, and an explicit parallelism above 1 is an error naming it.

use std::path::Path;

use eichhorn::connectors::{GeneratorSource, NumberedFileSource, RateLimitedSource};
use eichhorn::prelude::*;

/// Writes `lines` numbered lines to `path`.
fn write_lines(path: &Path, lines: u64) {
    let text: String = (0..lines).map(|i| format!("line {i}\n")).collect();
    std::fs::write(path, text).expect("write the input file");
}

/// A source that emits `count` numbers once per subtask and says nothing about parallelism: a
/// user's source is non-parallel unless it says otherwise.
#[operator(new = false)]
#[derive(Clone)]
struct Numbers {
    next: u64,
    count: u64,
}

impl SourceFunction<u64> for Numbers {
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, u64>) -> Result<SourcePoll, FunctionError> {
        while ctx.remaining() > 0 && self.next < self.count {
            ctx.collect(self.next);
            self.next += 1;
        }
        Ok(if self.next < self.count {
            SourcePoll::MoreAvailable
        } else {
            SourcePoll::Finished
        })
    }
}

/// The same source, declared parallel: each subtask emits its own share.
#[operator(new = false)]
#[derive(Clone)]
struct ParallelNumbers {
    next: u64,
    stride: u64,
    count: u64,
}

impl SourceFunction<u64> for ParallelNumbers {
    fn is_parallel(&self) -> bool {
        true
    }
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.next = u64::from(ctx.subtask_index);
        self.stride = u64::from(ctx.parallelism);
        Ok(())
    }
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, u64>) -> Result<SourcePoll, FunctionError> {
        while ctx.remaining() > 0 && self.next < self.count {
            ctx.collect(self.next);
            self.next += self.stride;
        }
        Ok(if self.next < self.count {
            SourcePoll::MoreAvailable
        } else {
            SourcePoll::Finished
        })
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_non_parallel_file_source_emits_every_line_once_at_any_default_parallelism() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    write_lines(&input, 500);
    for parallelism in [2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let out = env
            .add_source(NumberedFileSource::new(input.clone()), "input")
            .map(|(number, line): (u64, String)| format!("{number}:{line}"))
            .collect_sink();
        let result = env.execute("numbered file").await.expect("the job runs");
        let mut lines = out.take();
        assert_eq!(lines.len(), 500, "P={parallelism}: one output per line");
        lines.sort();
        let mut expected: Vec<String> = (0..500).map(|i| format!("{}:line {i}", i + 1)).collect();
        expected.sort();
        assert_eq!(lines, expected, "P={parallelism}: every line exactly once");
        let source = result
            .operators
            .iter()
            .find(|o| o.name == "Source: input")
            .expect("the source's metrics");
        assert_eq!(source.parallelism, 1, "P={parallelism}: one source subtask");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_built_in_non_parallel_sources_run_once_at_a_higher_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    write_lines(&input, 50);
    let env = StreamEnv::new();
    env.set_parallelism(3);
    let file = env.read_text_file(&input).collect_sink();
    let collection = env.from_collection((0..50u64).collect()).collect_sink();
    let user = env
        .add_source(
            RateLimitedSource::new(Numbers { next: 0, count: 50 }, 1_000),
            "numbers",
        )
        .collect_sink();
    env.execute("non-parallel sources")
        .await
        .expect("the job runs");
    assert_eq!(file.take().len(), 50, "the file's lines once");
    let mut collected = collection.take();
    collected.sort();
    assert_eq!(collected, (0..50).collect::<Vec<_>>());
    let mut numbers = user.take();
    numbers.sort();
    assert_eq!(numbers, (0..50).collect::<Vec<_>>());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn parallel_sources_run_at_the_default_parallelism() {
    let env = StreamEnv::new();
    env.set_parallelism(3);
    let generated = env.from_generator(90, |g| g).collect_sink();
    let paced = env
        .add_source(
            RateLimitedSource::new(GeneratorSource::new(Some(90), |g| g), 10_000),
            "paced",
        )
        .collect_sink();
    let user = env
        .add_source(
            ParallelNumbers {
                next: 0,
                stride: 1,
                count: 90,
            },
            "parallel numbers",
        )
        .collect_sink();
    let result = env.execute("parallel sources").await.expect("the job runs");
    for (name, out) in [("generator", generated), ("paced", paced), ("user", user)] {
        let mut values = out.take();
        values.sort();
        assert_eq!(values, (0..90).collect::<Vec<_>>(), "{name}");
    }
    for name in [
        "Source: Generator",
        "Source: paced",
        "Source: parallel numbers",
    ] {
        let source = result
            .operators
            .iter()
            .find(|o| o.name == name)
            .unwrap_or_else(|| panic!("metrics of {name}"));
        assert_eq!(
            source.parallelism, 3,
            "{name} runs at the default parallelism"
        );
    }
}

#[test]
fn an_explicit_parallelism_above_one_on_a_non_parallel_source_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = StreamEnv::new();
    env.add_source(
        NumberedFileSource::new(dir.path().join("input.txt")),
        "input",
    )
    .set_parallelism(2)
    .collect_sink();
    let error = env.explain().unwrap_err();
    assert!(
        matches!(
            &error,
            GraphError::NonParallelOperator { operator, parallelism: 2 } if operator == "Source: input"
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("'Source: input'"), "{message}");
    assert!(message.contains("not parallel"), "{message}");

    let env = StreamEnv::new();
    env.add_source(Numbers { next: 0, count: 1 }, "numbers")
        .set_parallelism(4)
        .collect_sink();
    let error = env.explain().unwrap_err();
    assert!(error.to_string().contains("'Source: numbers'"), "{error}");
}

#[test]
fn an_explicit_parallelism_of_one_on_a_non_parallel_source_is_fine() {
    let env = StreamEnv::new();
    env.set_parallelism(4);
    env.add_source(Numbers { next: 0, count: 1 }, "numbers")
        .set_parallelism(1)
        .collect_sink();
    env.explain()
        .expect("parallelism 1 is a non-parallel source's own");
}
