//! Built-in sources and sinks.
//!
//! Sources: [`CollectionSource`], [`GeneratorSource`], [`FileSource`], [`SocketSource`]; all but
//! the socket source report their position for checkpoints. The generator's positions also
//! restore at another parallelism; the collection, file and socket sources are non-parallel
//! (parallelism 1) and stay so. Sinks: [`PrintSink`],
//! [`CollectSinkFunction`], [`TextFileSink`].

mod collection;
mod exactly_once_file;
mod file;
mod print;
mod rate_limit;
mod socket;

pub use collection::{CollectionSource, GeneratorSource};
pub use exactly_once_file::{ExactlyOnceFileSink, PartFile};
pub use file::{FileSource, NumberedFileSource, TextFileSink};
pub use print::{CollectSinkFunction, PrintSink};
pub use rate_limit::RateLimitedSource;
pub use socket::SocketSource;
