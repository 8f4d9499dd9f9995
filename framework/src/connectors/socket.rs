//! The socket text source (Flink's `socketTextStream`).
//!
//! Lines are split on `\n` (a `\r` before it is dropped) and decoded as UTF-8 one at a time, so
//! a line that is not valid UTF-8 affects that line only: every complete good line around it is
//! emitted. By default such a line is skipped with a warning (`tracing`) naming the address and
//! the line number; [`SocketSource::fail_on_invalid_utf8`] makes it fail the job instead, with
//! an error naming both.

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::api::{SourceContext, SourceFunction, SourcePoll};
use crate::operator::{FunctionError, RuntimeContext};

/// Lines buffered between the reading task and the source (the bound on read-ahead: beyond it
/// the reader stops reading and TCP flow control pushes back on the sender).
const SOCKET_LINES_BUFFERED_MAX: usize = 1024;

/// Reads lines from a TCP connection. A connection that cannot be opened fails the job with the
/// address; the stream ends when the peer closes the connection.
///
/// A line that is not valid UTF-8 is skipped and logged as a warning with its line number
/// (counting from 1) and the address, unless [`fail_on_invalid_utf8`](Self::fail_on_invalid_utf8)
/// asked for the job to fail on it.
///
/// The connection is read by a tokio task (the only I/O-performing part); the source itself
/// only takes lines from a bounded channel, so it never blocks its subtask.
///
/// # Examples
///
/// ```no_run
/// use eichhorn::connectors::SocketSource;
/// use eichhorn::prelude::*;
///
/// let env = StreamEnv::new();
/// // Fail the job on a line that is not UTF-8 rather than skip it.
/// let source = SocketSource::new("localhost".into(), 7777).fail_on_invalid_utf8(true);
/// env.add_source(source, "Socket localhost:7777").set_parallelism(1).print();
/// ```
#[derive(Debug)]
pub struct SocketSource {
    host: String,
    port: u16,
    fail_on_invalid_utf8: bool,
    lines: Option<mpsc::Receiver<Received>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    /// A failure received after lines of the same poll: returned by the next poll, so the lines
    /// before it are emitted first.
    failure: Option<String>,
}

/// What the reading task hands to the source.
#[derive(Debug)]
enum Received {
    /// A line, without its terminator.
    Line(String),
    /// The source must fail the job with this message.
    Failed(String),
}

impl Clone for SocketSource {
    fn clone(&self) -> Self {
        Self::new(self.host.clone(), self.port).fail_on_invalid_utf8(self.fail_on_invalid_utf8)
    }
}

impl SocketSource {
    /// A source reading from `host:port`; it skips (and logs) lines that are not valid UTF-8.
    pub fn new(host: String, port: u16) -> Self {
        Self {
            host,
            port,
            fail_on_invalid_utf8: false,
            lines: None,
            reader: None,
            failure: None,
        }
    }

    /// With `true`, a line that is not valid UTF-8 fails the job with an error naming its line
    /// number and `host:port` (the lines before it are emitted first); with `false` (the
    /// default) it is skipped with a warning saying the same.
    pub fn fail_on_invalid_utf8(mut self, fail: bool) -> Self {
        self.fail_on_invalid_utf8 = fail;
        self
    }
}

/// Connects to `address` and sends its lines to `lines` until the peer closes the connection,
/// the source goes away, or an error ends the stream (sent as [`Received::Failed`]).
async fn read_lines(address: String, fail_on_invalid_utf8: bool, lines: mpsc::Sender<Received>) {
    let stream = match tokio::net::TcpStream::connect(&address).await {
        Ok(stream) => stream,
        Err(e) => {
            let _ = lines
                .send(Received::Failed(format!(
                    "cannot connect to {address}: {e}"
                )))
                .await;
            return;
        }
    };
    let mut reader = tokio::io::BufReader::new(stream);
    let mut bytes = Vec::new();
    let mut line_number: u64 = 0;
    loop {
        bytes.clear();
        match reader.read_until(b'\n', &mut bytes).await {
            // The peer closed the connection.
            Ok(0) => return,
            Ok(_) => {
                line_number += 1;
                let Some(received) =
                    decode_line(&bytes, line_number, &address, fail_on_invalid_utf8)
                else {
                    continue;
                };
                let failed = matches!(received, Received::Failed(_));
                if lines.send(received).await.is_err() || failed {
                    return;
                }
            }
            Err(e) => {
                let _ = lines
                    .send(Received::Failed(format!(
                        "reading line {} from {address}: {e}",
                        line_number + 1
                    )))
                    .await;
                return;
            }
        }
    }
}

/// Line `line_number` of `address` (`bytes`, with its terminator if it has one) as the source
/// hands it on: the line, a failure (not UTF-8 and `fail_on_invalid_utf8`), or nothing (not
/// UTF-8, skipped with a warning).
fn decode_line(
    bytes: &[u8],
    line_number: u64,
    address: &str,
    fail_on_invalid_utf8: bool,
) -> Option<Received> {
    let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match std::str::from_utf8(line) {
        Ok(text) => Some(Received::Line(text.to_string())),
        Err(error) if fail_on_invalid_utf8 => Some(Received::Failed(format!(
            "line {line_number} from {address} is not valid UTF-8 ({error})"
        ))),
        Err(error) => {
            tracing::warn!(
                "line {line_number} from {address} is not valid UTF-8 ({error}); skipped: {:?}",
                String::from_utf8_lossy(line)
            );
            None
        }
    }
}

impl SourceFunction<String> for SocketSource {
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        let (sender, receiver) = mpsc::channel(SOCKET_LINES_BUFFERED_MAX);
        let address = format!("{}:{}", self.host, self.port);
        self.reader = Some(tokio::spawn(read_lines(
            address,
            self.fail_on_invalid_utf8,
            sender,
        )));
        self.lines = Some(receiver);
        self.failure = None;
        Ok(())
    }

    fn poll_next(
        &mut self,
        ctx: &mut SourceContext<'_, String>,
    ) -> Result<SourcePoll, FunctionError> {
        if let Some(message) = self.failure.take() {
            return Err(message.into());
        }
        let lines = self
            .lines
            .as_mut()
            .ok_or("socket source polled before open")?;
        let mut emitted = false;
        while ctx.remaining() > 0 {
            match lines.try_recv() {
                Ok(Received::Line(line)) => {
                    ctx.collect(line);
                    emitted = true;
                }
                // Emit the lines of this poll first; the next poll fails.
                Ok(Received::Failed(message)) if emitted => {
                    self.failure = Some(message);
                    return Ok(SourcePoll::MoreAvailable);
                }
                Ok(Received::Failed(message)) => return Err(message.into()),
                Err(mpsc::error::TryRecvError::Empty) => {
                    return Ok(if emitted {
                        SourcePoll::MoreAvailable
                    } else {
                        SourcePoll::Idle
                    });
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(SourcePoll::Finished),
            }
        }
        Ok(SourcePoll::MoreAvailable)
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        Ok(())
    }
}

impl Drop for SocketSource {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

crate::api::operator::impl_plain_operator!(SocketSource);

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::exchange::CreditOutbox;
    use crate::operator::testing::Capture;
    use crate::operator::{NodeId, TaskCx};

    /// Polls at most this often before a test gives up (a hang guard, not a timing assertion).
    const POLLS_MAX: usize = 10_000;

    fn context() -> RuntimeContext {
        RuntimeContext {
            job_name: "test".into(),
            job_id: crate::checkpoint::JobId(7),
            operator_name: "socket".into(),
            uid: None,
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt_number: 0,
            metrics: crate::metrics::MetricGroup::detached(),
        }
    }

    /// Serves `bytes` in one write on a fresh listener on 127.0.0.1, then closes; returns the
    /// port.
    async fn serve(bytes: &'static [u8]) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("local address").port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            stream.write_all(bytes).await.expect("write");
            stream.shutdown().await.expect("shutdown");
        });
        port
    }

    /// Polls `source` until it finishes or fails; returns every line it emitted and its error.
    async fn drain(source: &mut SocketSource) -> (Vec<String>, Option<String>) {
        let mut emitted = Vec::new();
        for _ in 0..POLLS_MAX {
            let captured = Arc::new(Mutex::new(Vec::new()));
            let mut capture = Capture(captured.clone());
            let mut cx = TaskCx::new(CreditOutbox::new(0), NodeId(0));
            let mut ctx = SourceContext::new(&mut capture, &mut cx, NodeId(0), 100, 0, 1);
            let poll = source.poll_next(&mut ctx);
            ctx.finish();
            emitted.extend(std::mem::take(&mut *captured.lock().expect("capture lock")));
            match poll {
                Ok(SourcePoll::Finished) => return (emitted, None),
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
                Err(error) => return (emitted, Some(error.to_string())),
            }
        }
        panic!("the socket source neither finished nor failed; it emitted {emitted:?}");
    }

    const MIXED: &[u8] = b"good one\n\xff\xfe bad\r\ngood two\r\nlast without newline";

    #[tokio::test]
    async fn a_line_that_is_not_utf8_is_skipped_and_every_good_line_emitted() {
        let port = serve(MIXED).await;
        let mut source = SocketSource::new("127.0.0.1".into(), port);
        source.open(&context()).expect("open");
        let (lines, error) = drain(&mut source).await;
        assert_eq!(error, None);
        assert_eq!(lines, ["good one", "good two", "last without newline"]);
    }

    #[tokio::test]
    async fn on_request_a_line_that_is_not_utf8_fails_naming_the_line_and_address() {
        let port = serve(MIXED).await;
        let source = SocketSource::new("127.0.0.1".into(), port).fail_on_invalid_utf8(true);
        // Clones (one per attempt) keep the setting.
        let mut source = source.clone();
        source.open(&context()).expect("open");
        let (lines, error) = drain(&mut source).await;
        assert_eq!(
            lines,
            ["good one"],
            "the line before the bad one is emitted"
        );
        let error = error.expect("the bad line fails the source");
        assert!(
            error.contains("line 2") && error.contains(&format!("127.0.0.1:{port}")),
            "{error}"
        );
        assert!(error.contains("UTF-8"), "{error}");
    }

    #[test]
    fn lines_lose_their_terminators_only() {
        let decoded = |bytes: &[u8]| match decode_line(bytes, 1, "here:1", true) {
            Some(Received::Line(line)) => line,
            other => panic!("{other:?}"),
        };
        assert_eq!(decoded(b"a b\r\n"), "a b");
        assert_eq!(decoded(b"a\rb\n"), "a\rb");
        assert_eq!(decoded(b"\n"), "");
        assert_eq!(decoded(b"tail"), "tail");
        assert!(decode_line(b"\xff\n", 3, "here:1", false).is_none());
    }
}
