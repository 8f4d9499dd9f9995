//! The socket text source (Flink's `socketTextStream`).

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
/// The connection is read by a tokio task (the only I/O-performing part); the source itself
/// only takes lines from a bounded channel, so it never blocks its subtask.
#[derive(Debug)]
pub struct SocketSource {
    host: String,
    port: u16,
    lines: Option<mpsc::Receiver<Result<String, String>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Clone for SocketSource {
    fn clone(&self) -> Self {
        Self::new(self.host.clone(), self.port)
    }
}

impl SocketSource {
    /// A source reading from `host:port`.
    pub fn new(host: String, port: u16) -> Self {
        Self {
            host,
            port,
            lines: None,
            reader: None,
        }
    }
}

async fn read_lines(address: String, lines: mpsc::Sender<Result<String, String>>) {
    let stream = match tokio::net::TcpStream::connect(&address).await {
        Ok(stream) => stream,
        Err(e) => {
            let _ = lines
                .send(Err(format!("cannot connect to {address}: {e}")))
                .await;
            return;
        }
    };
    let mut reader = tokio::io::BufReader::new(stream).lines();
    loop {
        match reader.next_line().await {
            Ok(Some(line)) => {
                let line = line.strip_suffix('\r').map(str::to_string).unwrap_or(line);
                if lines.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let _ = lines
                    .send(Err(format!("reading from {address}: {e}")))
                    .await;
                return;
            }
        }
    }
}

impl SourceFunction<String> for SocketSource {
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        let (sender, receiver) = mpsc::channel(SOCKET_LINES_BUFFERED_MAX);
        let address = format!("{}:{}", self.host, self.port);
        self.reader = Some(tokio::spawn(read_lines(address, sender)));
        self.lines = Some(receiver);
        Ok(())
    }

    fn poll_next(
        &mut self,
        ctx: &mut SourceContext<'_, String>,
    ) -> Result<SourcePoll, FunctionError> {
        let lines = self
            .lines
            .as_mut()
            .ok_or("socket source polled before open")?;
        let mut emitted = false;
        while ctx.remaining() > 0 {
            match lines.try_recv() {
                Ok(Ok(line)) => {
                    ctx.collect(line);
                    emitted = true;
                }
                Ok(Err(message)) => return Err(message.into()),
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
