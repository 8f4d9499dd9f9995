//! Sources: where a job's streams begin (Flink's `addSource`, `fromCollection`,
//! `readTextFile`, `socketTextStream`).
//!
//! These are methods of [`StreamEnv`], kept apart from the environment itself because they
//! are the one place where the environment hands out [`DataStream`]s: the environment
//! (`env.rs`) holds the graph and runs the job and knows no stream type, the streams
//! (`datastream.rs`) add their nodes through it, and this file stands above both.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::datastream::DataStream;
use super::env::StreamEnv;
use super::functions::SourceFunction;
use super::key::Data;
use crate::connectors::{CollectionSource, FileSource, GeneratorSource, SocketSource};
use crate::graph::{OperatorKind, OutputSelector, StreamNode};
use crate::operator::{SourceNode, SourceTask};
use crate::runtime::registry::{OperatorEntry, OperatorFactory, TypedPort, typed_chain};

impl StreamEnv {
    /// Adds a user source, named `Source: {name}` (Flink's `addSource`).
    ///
    /// A source is non-parallel unless [`SourceFunction::is_parallel`] says otherwise: it then
    /// runs at parallelism 1 whatever [`StreamEnv::set_parallelism`] says, and an explicit
    /// `.set_parallelism(n)` above 1 on its stream makes the job fail to build with
    /// [`GraphError::NonParallelOperator`](crate::error::GraphError::NonParallelOperator) naming the source. A parallel source runs at the
    /// default parallelism or the one set on its stream.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::connectors::NumberedFileSource;
    /// use eichhorn::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), eichhorn::Error> {
    /// # let dir = tempfile::tempdir()?;
    /// # let input = dir.path().join("input.txt");
    /// std::fs::write(&input, "a\nb\nc\n")?;
    /// let env = StreamEnv::new();
    /// env.set_parallelism(2);
    /// let lines = env
    ///     .add_source(NumberedFileSource::new(input), "input") // runs at parallelism 1
    ///     .map(|(number, line): (u64, String)| format!("{number}: {line}")) // at 2
    ///     .collect_sink();
    /// env.execute("numbered lines").await?;
    /// let mut lines = lines.take();
    /// lines.sort();
    /// assert_eq!(lines, ["1: a", "2: b", "3: c"]); // each line once
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_source<T: Data, S: SourceFunction<T>>(
        &self,
        source: S,
        name: &str,
    ) -> DataStream<T> {
        let non_parallel = !source.is_parallel();
        self.add_source_node(source, format!("Source: {name}"), non_parallel)
            .with_default_uid::<S>()
    }

    pub(crate) fn add_source_node<T: Data, S: SourceFunction<T>>(
        &self,
        source: S,
        name: String,
        non_parallel: bool,
    ) -> DataStream<T> {
        let state_schema = crate::api::Operator::state_schema(&source);
        let template = Mutex::new(source);
        let factory = OperatorFactory::Source(Arc::new(move |info, main| {
            let source = template
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            Box::new(SourceNode::new(info, source, typed_chain::<T>(main))) as Box<dyn SourceTask>
        }));
        let id = self.add_node(
            StreamNode {
                non_parallel,
                state_schema,
                ..StreamNode::new(OperatorKind::Source, name)
            },
            OperatorEntry::new(factory, None, Some(TypedPort::<T>::arc())),
        );
        DataStream::from_node(self.clone(), id, OutputSelector::Main)
    }

    /// A non-parallel source of the given elements, in order (Flink's `fromCollection`).
    pub fn from_collection<T: Data>(&self, elements: Vec<T>) -> DataStream<T> {
        self.add_source_node(
            CollectionSource::new(elements),
            "Source: Collection".to_string(),
            true,
        )
    }

    /// A parallel source of `generator(0)`, `generator(1)`, ... `generator(count - 1)`. Subtask
    /// `j` of `p` emits the indices `j, j + p, j + 2p, ...`.
    pub fn from_generator<T: Data, F>(&self, count: u64, generator: F) -> DataStream<T>
    where
        F: Fn(u64) -> T + Clone + Send + 'static,
    {
        self.add_source_node(
            GeneratorSource::new(Some(count), generator),
            "Source: Generator".to_string(),
            false,
        )
    }

    /// Like [`StreamEnv::from_generator`], without end.
    pub fn from_generator_unbounded<T: Data, F>(&self, generator: F) -> DataStream<T>
    where
        F: Fn(u64) -> T + Clone + Send + 'static,
    {
        self.add_source_node(
            GeneratorSource::new(None, generator),
            "Source: Generator".to_string(),
            false,
        )
    }

    /// The lines of a text file, without their line terminators (Flink's `readTextFile`). A
    /// missing or unreadable file fails the job with an error naming the path.
    pub fn read_text_file(&self, path: impl Into<PathBuf>) -> DataStream<String> {
        let path = path.into();
        let name = format!("Source: File {}", path.display());
        self.add_source_node(FileSource::new(path), name, true)
    }

    /// The lines received on a TCP connection to `host:port` (Flink's `socketTextStream`); the
    /// stream ends when the peer closes the connection.
    pub fn socket_text_stream(&self, host: &str, port: u16) -> DataStream<String> {
        let name = format!("Source: Socket {host}:{port}");
        self.add_source_node(SocketSource::new(host.to_string(), port), name, true)
    }
}
