//! Text files: a line source and a line sink.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::api::{SinkContext, SinkFunction, SourceContext, SourceFunction, SourcePoll};
use crate::operator::{FunctionError, RuntimeContext};

/// Reads a text file line by line (non-parallel). Lines lose their `\n` or `\r\n`. Position: the
/// byte offset of the next line, so a restored source re-reads exactly the lines after it.
///
/// A file that cannot be opened fails `open` with the path; a line that is not UTF-8 fails the
/// job naming the file and line number (never replaced or skipped silently).
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    reader: Option<BufReader<File>>,
    offset: u64,
    line_number: u64,
    buffer: Vec<u8>,
    /// Live metrics: bytes read so far and the file's length (the terminal progress line).
    bytes_read: Option<crate::metrics::Gauge>,
}

impl Clone for FileSource {
    fn clone(&self) -> Self {
        Self::new(self.path.clone())
    }
}

impl FileSource {
    /// A source reading `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            reader: None,
            offset: 0,
            line_number: 0,
            buffer: Vec::new(),
            bytes_read: None,
        }
    }
}

impl FileSource {
    /// Reads the next line: `(line number counting from 1, text)`, or `None` at the end.
    fn next_line(&mut self) -> Result<Option<(u64, String)>, FunctionError> {
        let Some(reader) = self.reader.as_mut() else {
            return Err("file source polled before open".into());
        };
        self.buffer.clear();
        let read = reader
            .read_until(b'\n', &mut self.buffer)
            .map_err(|e| format!("cannot read '{}': {e}", self.path.display()))?;
        if read == 0 {
            return Ok(None);
        }
        self.line_number += 1;
        let mut line = &self.buffer[..];
        if let Some(rest) = line.strip_suffix(b"\n") {
            line = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        let text = std::str::from_utf8(line).map_err(|e| {
            format!(
                "'{}' line {}: not valid UTF-8 ({e})",
                self.path.display(),
                self.line_number
            )
        })?;
        let text = text.to_string();
        self.offset += read as u64;
        Ok(Some((self.line_number, text)))
    }

    fn open_file(&mut self) -> Result<(), FunctionError> {
        let file = File::open(&self.path)
            .map_err(|e| format!("cannot open input file '{}': {e}", self.path.display()))?;
        self.reader = Some(BufReader::new(file));
        Ok(())
    }
}

/// The user-metric names under which a file source reports its progress (gauges).
pub const FILE_BYTES_READ_METRIC: &str = "fileBytesRead";
/// The length of the file being read (a gauge).
pub const FILE_BYTES_METRIC: &str = "fileBytes";

impl SourceFunction<String> for FileSource {
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.open_file()?;
        let group = ctx.metric_group();
        if let Some(reader) = &self.reader
            && let Ok(metadata) = reader.get_ref().metadata()
        {
            group.gauge(FILE_BYTES_METRIC).set(metadata.len() as f64);
        }
        self.bytes_read = Some(group.gauge(FILE_BYTES_READ_METRIC));
        Ok(())
    }

    fn poll_next(
        &mut self,
        ctx: &mut SourceContext<'_, String>,
    ) -> Result<SourcePoll, FunctionError> {
        let mut poll = SourcePoll::MoreAvailable;
        while ctx.remaining() > 0 {
            match self.next_line()? {
                Some((_, text)) => ctx.collect(text),
                None => {
                    poll = SourcePoll::Finished;
                    break;
                }
            }
        }
        // Once per poll, not per line.
        if let Some(gauge) = &self.bytes_read {
            gauge.set(self.offset as f64);
        }
        Ok(poll)
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        let mut position = self.offset.to_le_bytes().to_vec();
        position.extend_from_slice(&self.line_number.to_le_bytes());
        Ok(Some(position))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        if position.len() != 16 {
            return Err(format!(
                "file source '{}': position must be 16 bytes, got {}",
                self.path.display(),
                position.len()
            )
            .into());
        }
        let offset = super::collection::decode_position(&position[..8], "file source")?;
        let line_number = super::collection::decode_position(&position[8..], "file source")?;
        let reader = self
            .reader
            .as_mut()
            .ok_or("file source restored before open")?;
        let length = reader.get_ref().metadata()?.len();
        if offset > length {
            return Err(format!(
                "file source '{}': position {offset} is past the end of the file ({length} bytes)",
                self.path.display()
            )
            .into());
        }
        reader.seek(SeekFrom::Start(offset))?;
        self.offset = offset;
        self.line_number = line_number;
        Ok(())
    }
}

/// Reads a text file as `(line number, line)` pairs, line numbers counting from 1 (for
/// reporting bad input by line). Position and errors as [`FileSource`]; a restored source goes
/// on with the right line numbers.
#[derive(Debug, Clone)]
pub struct NumberedFileSource(FileSource);

impl NumberedFileSource {
    /// A source reading `path`.
    pub fn new(path: PathBuf) -> Self {
        Self(FileSource::new(path))
    }
}

impl SourceFunction<(u64, String)> for NumberedFileSource {
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.0.open_file()
    }

    fn poll_next(
        &mut self,
        ctx: &mut SourceContext<'_, (u64, String)>,
    ) -> Result<SourcePoll, FunctionError> {
        while ctx.remaining() > 0 {
            match self.0.next_line()? {
                Some(line) => ctx.collect(line),
                None => return Ok(SourcePoll::Finished),
            }
        }
        Ok(SourcePoll::MoreAvailable)
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        <FileSource as SourceFunction<String>>::snapshot_position(&mut self.0)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        <FileSource as SourceFunction<String>>::restore_position(&mut self.0, position)
    }
}

/// Writes each element as a line (`Display`). At parallelism 1 the path is the file; above 1 it
/// is a directory holding one file per subtask, named by subtask index plus one.
#[derive(Debug)]
pub struct TextFileSink {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    target: PathBuf,
}

impl Clone for TextFileSink {
    fn clone(&self) -> Self {
        Self::new(self.path.clone())
    }
}

impl TextFileSink {
    /// A sink writing to `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            target: path.clone(),
            path,
            writer: None,
        }
    }
}

impl<T: std::fmt::Display> SinkFunction<T> for TextFileSink {
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.target = if ctx.parallelism > 1 {
            std::fs::create_dir_all(&self.path).map_err(|e| {
                format!(
                    "cannot create output directory '{}': {e}",
                    self.path.display()
                )
            })?;
            self.path.join((ctx.subtask_index + 1).to_string())
        } else {
            self.path.clone()
        };
        let file = File::create(&self.target)
            .map_err(|e| format!("cannot create output file '{}': {e}", self.target.display()))?;
        self.writer = Some(BufWriter::new(file));
        Ok(())
    }

    fn invoke(&mut self, value: T, _ctx: &SinkContext) -> Result<(), FunctionError> {
        let writer = self
            .writer
            .as_mut()
            .ok_or("text sink written before open")?;
        writeln!(writer, "{value}")
            .map_err(|e| format!("cannot write '{}': {e}", self.target.display()).into())
    }

    fn finish(&mut self) -> Result<(), FunctionError> {
        if let Some(writer) = self.writer.as_mut() {
            writer
                .flush()
                .map_err(|e| format!("cannot write '{}': {e}", self.target.display()))?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        if let Some(mut writer) = self.writer.take() {
            writer
                .flush()
                .map_err(|e| format!("cannot write '{}': {e}", self.target.display()))?;
        }
        Ok(())
    }
}

crate::api::operator::impl_plain_operator!(FileSource);
crate::api::operator::impl_plain_operator!(NumberedFileSource);
crate::api::operator::impl_plain_operator!(TextFileSink);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::testing::poll_source;

    fn context() -> RuntimeContext {
        RuntimeContext {
            job_name: "test".into(),
            job_id: crate::checkpoint::JobId(7),
            operator_name: "file".into(),
            uid: None,
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt_number: 0,
            metrics: crate::metrics::MetricGroup::detached(),
        }
    }

    #[test]
    fn restores_at_the_byte_offset_of_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.txt");
        std::fs::write(&path, "one\r\ntwo\nthree\nfour").unwrap();
        let mut source = FileSource::new(path.clone());
        source.open(&context()).unwrap();
        assert_eq!(poll_source(&mut source, 2).0, vec!["one", "two"]);
        let position = source.snapshot_position().unwrap().unwrap();
        assert_eq!(
            poll_source(&mut source, 10),
            (vec!["three".into(), "four".into()], SourcePoll::Finished)
        );

        let mut restored = FileSource::new(path);
        restored.open(&context()).unwrap();
        restored.restore_position(&position).unwrap();
        assert_eq!(poll_source(&mut restored, 10).0, vec!["three", "four"]);
        assert!(
            restored.restore_position(&[0; 3]).is_err(),
            "corrupt position"
        );
        let mut past_end = 1_000u64.to_le_bytes().to_vec();
        past_end.extend_from_slice(&0u64.to_le_bytes());
        assert!(
            restored.restore_position(&past_end).is_err(),
            "past the end"
        );
    }
}
