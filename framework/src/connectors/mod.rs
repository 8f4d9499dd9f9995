//! Built-in sources and sinks.
//!
//! Sources: [`CollectionSource`], [`GeneratorSource`], [`FileSource`], [`SocketSource`]; all but
//! the socket source report their position for checkpoints. Sinks: [`PrintSink`],
//! [`CollectSinkFunction`], [`TextFileSink`].

mod collection;
mod file;
mod print;
mod socket;

pub use collection::{CollectionSource, GeneratorSource};
pub use file::{FileSource, TextFileSink};
pub use print::{CollectSinkFunction, PrintSink};
pub use socket::SocketSource;
