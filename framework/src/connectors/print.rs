//! Print and collect sinks.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::api::{SinkContext, SinkFunction};
use crate::operator::{FunctionError, RuntimeContext};

/// Prints each element on its own line, as Flink's `PrintSinkFunction`: the line prefix is
/// `identifier:N> ` (identifier and subtask number), `N> ` (parallel, no identifier),
/// `identifier> ` (parallelism 1) or nothing.
#[derive(Debug, Clone)]
pub struct PrintSink {
    identifier: String,
    to_stderr: bool,
    prefix: String,
}

impl PrintSink {
    /// A print sink with `identifier` (may be empty), to stdout or stderr.
    pub fn new(identifier: String, to_stderr: bool) -> Self {
        Self {
            identifier,
            to_stderr,
            prefix: String::new(),
        }
    }

    /// Flink's prefix rule.
    pub(crate) fn line_prefix(identifier: &str, subtask_index: u32, parallelism: u32) -> String {
        let mut prefix = identifier.to_string();
        if parallelism > 1 {
            if !prefix.is_empty() {
                prefix.push(':');
            }
            prefix.push_str(&(subtask_index + 1).to_string());
        }
        if !prefix.is_empty() {
            prefix.push_str("> ");
        }
        prefix
    }
}

impl<T: std::fmt::Display> SinkFunction<T> for PrintSink {
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.prefix = Self::line_prefix(&self.identifier, ctx.subtask_index, ctx.parallelism);
        Ok(())
    }

    fn invoke(&mut self, value: T, _ctx: &SinkContext) -> Result<(), FunctionError> {
        let result = if self.to_stderr {
            writeln!(std::io::stderr().lock(), "{}{value}", self.prefix)
        } else {
            writeln!(std::io::stdout().lock(), "{}{value}", self.prefix)
        };
        result.map_err(|e| format!("cannot print: {e}").into())
    }

    fn finish(&mut self) -> Result<(), FunctionError> {
        std::io::stdout()
            .flush()
            .map_err(|e| format!("cannot flush stdout: {e}").into())
    }
}

/// Appends each element to a shared vector (what `collect_sink` reads).
#[derive(Debug)]
pub struct CollectSinkFunction<T> {
    items: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for CollectSinkFunction<T> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
        }
    }
}

impl<T> CollectSinkFunction<T> {
    /// A sink appending to `items`.
    pub fn new(items: Arc<Mutex<Vec<T>>>) -> Self {
        Self { items }
    }
}

impl<T: Send + 'static> SinkFunction<T> for CollectSinkFunction<T> {
    fn invoke(&mut self, value: T, _ctx: &SinkContext) -> Result<(), FunctionError> {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(value);
        Ok(())
    }
}

crate::api::operator::impl_plain_operator!(PrintSink);
crate::api::operator::impl_plain_operator!(CollectSinkFunction<T>; T);

#[cfg(test)]
mod tests {
    use super::PrintSink;

    #[test]
    fn prefixes_follow_flink() {
        assert_eq!(PrintSink::line_prefix("", 0, 1), "");
        assert_eq!(PrintSink::line_prefix("", 1, 4), "2> ");
        assert_eq!(PrintSink::line_prefix("out", 0, 1), "out> ");
        assert_eq!(PrintSink::line_prefix("out", 3, 4), "out:4> ");
    }
}
