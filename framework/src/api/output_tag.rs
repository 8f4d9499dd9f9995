//! Side output tags.

use std::marker::PhantomData;

/// Names a side output of type `T` (Flink's `OutputTag`). Emit into it from a process function
/// with `ctx.output(&tag, value)`; read it with `stream.side_output(&tag)`.
///
/// Tags are identified by their id: two tags with the same id are the same side output.
#[derive(Debug)]
pub struct OutputTag<T> {
    id: String,
    _type: PhantomData<fn() -> T>,
}

impl<T> OutputTag<T> {
    /// A tag with the given id.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            _type: PhantomData,
        }
    }

    /// The tag's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        Self::new(self.id.clone())
    }
}
