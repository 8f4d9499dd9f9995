//! Built-in sources and sinks.
//!
//! Sources: [`CollectionSource`], [`GeneratorSource`], [`FileSource`], [`SocketSource`]; all but
//! the socket source report their position for checkpoints. The generator's positions also
//! restore at another parallelism; the collection, file and socket sources are non-parallel
//! (parallelism 1) and stay so. Sinks: [`PrintSink`],
//! [`CollectSinkFunction`], [`TextFileSink`].
//!
//! Connectors to external systems, each behind a cargo feature so jobs that do not use it do
//! not compile its client: `KafkaSource` and `KafkaSink` (feature `kafka`), `PostgresSink`
//! (`postgres`), `RedisSink` (`redis`). Their sinks are two-phase-commit sinks, at least once
//! or exactly once (`DeliveryGuarantee`), and do their network I/O on a connection thread with
//! a bounded number of requests in flight. `test_servers` starts real PostgreSQL, Redis and
//! Kafka-compatible (tansu) servers on free loopback ports for tests and examples.

mod collection;
mod exactly_once_file;
mod file;
#[cfg(any(feature = "postgres", feature = "redis", feature = "kafka"))]
mod io;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "kafka")]
mod kafka_txn;
#[cfg(feature = "kafka")]
mod kafka_wire;
#[cfg(feature = "postgres")]
mod postgres;
mod print;
mod rate_limit;
#[cfg(feature = "redis")]
mod redis;
mod socket;
#[cfg(any(feature = "postgres", feature = "redis", feature = "kafka"))]
pub mod test_servers;

pub use collection::{CollectionSource, GeneratorSource};
pub use exactly_once_file::{ExactlyOnceFileSink, PartFile};
pub use file::{
    FILE_BYTES_METRIC, FILE_BYTES_READ_METRIC, FileSource, NumberedFileSource, TextFileSink,
};
#[cfg(any(feature = "postgres", feature = "redis", feature = "kafka"))]
pub use io::{ConnectorError, DeliveryGuarantee, RetryPolicy};
#[cfg(feature = "kafka")]
pub use kafka::{
    KafkaDeserializationError, KafkaProducerRecord, KafkaRecord, KafkaSink, KafkaSource,
    KafkaStreams, KafkaTransaction, StartingOffsets, split_owner,
};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresSink, PostgresTransaction, SqlValue};
pub use print::{CollectSinkFunction, PrintSink};
pub use rate_limit::RateLimitedSource;
#[cfg(feature = "redis")]
pub use redis::{RedisSink, RedisTransaction, RedisWrite};
pub use socket::SocketSource;
