//! A connection to an external system, driven on its own I/O thread with a bounded queue of
//! requests in flight: how the PostgreSQL and Redis sinks do network I/O without stalling the
//! subtask on every round trip.
//!
//! ## Design
//!
//! Sink functions are synchronous (`invoke`, `pre_commit`, ... return when done) and run on the
//! subtask's thread, which must keep handling credits, barriers and other messages. An
//! [`IoThread`] owns one async client (tokio-postgres, redis) on a current-thread tokio runtime
//! of its own, on a dedicated OS thread, and executes the requests it receives strictly in
//! order. The subtask *submits* writes without waiting for their replies; only when
//! `inflight_max` requests are unanswered does a submit wait for the oldest one. That wait is
//! the back-pressure: while the sink waits, the subtask takes no more input, returns no credits,
//! and the upstream stops (Flink's back-pressure through credits). Barriers (`pre_commit`) and
//! the end of input wait until everything submitted is answered ([`IoThread::drain`]).
//!
//! External systems are outside the deterministic simulation (the simulator never runs a real
//! connector), so the dedicated OS thread does not break the determinism contract; it is named
//! after the sink so it shows up in a thread dump.
//!
//! ## Invariants
//!
//! - Requests are executed in submission order; replies come back in the same order.
//! - At most `inflight_max` requests are submitted and not yet answered.
//! - The first error ends the thread: later requests are never executed, because they may
//!   depend on the failed one (a statement inside a transaction the error aborted). The sink
//!   reports the error and the task fails.

// The I/O thread serves the PostgreSQL and Redis sinks; built with the Kafka connector alone
// (as `eichhorn-benches` builds it), only the error and retry types are used.
#![cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]

use std::fmt;
use std::future::Future;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::Duration;

/// An error talking to an external system, naming the server and the operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{server}: {operation}: {message}")]
pub struct ConnectorError {
    /// The server, as `system://host:port` (never with credentials).
    pub server: String,
    /// What was being done: the statement or command, shortened.
    pub operation: String,
    /// What went wrong.
    pub message: String,
}

impl ConnectorError {
    /// An error of `operation` against `server`.
    pub fn new(
        server: impl Into<String>,
        operation: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            server: server.into(),
            operation: shorten(&operation.into(), 200),
            message: message.into(),
        }
    }
}

/// `text` cut to at most `max_chars` characters, with an ellipsis when cut (statements with
/// hundreds of placeholders stay readable in an error).
pub(crate) fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut short: String = text.chars().take(max_chars).collect();
    short.push_str("...");
    short
}

/// What a sink promises about its output after failures (Flink's `DeliveryGuarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryGuarantee {
    /// Every record is written at least once: after a failure the records since the last
    /// completed checkpoint are written again (harmless for idempotent writes such as upserts).
    #[default]
    AtLeastOnce,
    /// Every record's effect is visible exactly once: output is held in a transaction of the
    /// external system until the checkpoint covering it completed.
    ExactlyOnce,
}

/// How connection losses are retried: up to `retries_max` more attempts, waiting
/// `backoff_initial_ms` before the first and doubling up to `backoff_max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times a failed attempt is repeated before the error is reported.
    pub retries_max: u32,
    /// The wait before the first retry.
    pub backoff_initial_ms: u64,
    /// The longest wait between two retries.
    pub backoff_max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries_max: 5,
            backoff_initial_ms: 100,
            backoff_max_ms: 5_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based).
    pub fn backoff_ms(&self, retry: u32) -> u64 {
        let factor = 1u64.checked_shl(retry.min(32)).unwrap_or(u64::MAX);
        self.backoff_initial_ms
            .saturating_mul(factor)
            .min(self.backoff_max_ms)
    }
}

/// One async client of an external system, owned by an [`IoThread`].
pub(crate) trait Connection: Sized + 'static {
    /// What the thread needs to connect.
    type Config: Send + 'static;
    /// One unit of work, executed in order.
    type Request: Send + fmt::Debug + 'static;
    /// Its answer.
    type Reply: Send + 'static;

    /// Connects (with retries, as the connection sees fit).
    fn connect(config: Self::Config) -> impl Future<Output = Result<Self, ConnectorError>>;

    /// Executes one request.
    fn handle(
        &mut self,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Reply, ConnectorError>>;
}

/// A [`Connection`] on its own thread, with a bounded number of requests in flight.
pub(crate) struct IoThread<C: Connection> {
    name: String,
    requests: Option<SyncSender<C::Request>>,
    replies: Receiver<Result<C::Reply, ConnectorError>>,
    inflight: usize,
    inflight_max: usize,
    /// How long a wait for a reply may take before the connection counts as hung.
    reply_timeout: Duration,
    /// The first error the thread reported, kept so later calls report it too.
    failed: Option<ConnectorError>,
}

impl<C: Connection> fmt::Debug for IoThread<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoThread")
            .field("name", &self.name)
            .field("inflight", &self.inflight)
            .field("inflight_max", &self.inflight_max)
            .finish()
    }
}

impl<C: Connection> IoThread<C> {
    /// Starts the thread `name` and connects; returns when connected.
    ///
    /// # Errors
    ///
    /// The connection failed (after the connection's own retries), or the thread could not be
    /// started.
    pub(crate) fn start(
        name: &str,
        server: &str,
        config: C::Config,
        inflight_max: usize,
        reply_timeout: Duration,
    ) -> Result<Self, ConnectorError> {
        assert!(inflight_max > 0, "at least one request in flight");
        let (request_tx, request_rx) = mpsc::sync_channel::<C::Request>(inflight_max);
        let (reply_tx, reply_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), ConnectorError>>(1);
        let server_name = server.to_string();
        // An OS thread, not a task on the job's runtime: the sink waits for replies by blocking
        // its own thread, which may be the only thread of a current-thread runtime (see the
        // module docs; connectors are never part of a simulation).
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run::<C>(config, &server_name, request_rx, reply_tx, ready_tx))
            .map_err(|e| ConnectorError::new(server, "start the I/O thread", e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                name: name.to_string(),
                requests: Some(request_tx),
                replies: reply_rx,
                inflight: 0,
                inflight_max,
                reply_timeout,
                failed: None,
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ConnectorError::new(
                server,
                "connect",
                "the I/O thread ended before connecting",
            )),
        }
    }

    /// Queues `request` without waiting for its reply, unless `inflight_max` requests are
    /// unanswered: then it first waits for the oldest (back-pressure). Replies of earlier
    /// requests that arrived are taken on the way; an error among them is returned.
    ///
    /// # Errors
    ///
    /// An earlier request failed, or the thread is gone.
    pub(crate) fn submit(&mut self, request: C::Request) -> Result<(), ConnectorError> {
        self.take_ready()?;
        while self.inflight >= self.inflight_max {
            self.wait_one()?;
        }
        let Some(requests) = &self.requests else {
            return Err(self.gone());
        };
        requests.send(request).map_err(|_| self.gone())?;
        self.inflight += 1;
        Ok(())
    }

    /// Sends `request` and waits for every reply up to and including its own, which it returns.
    ///
    /// # Errors
    ///
    /// This or an earlier request failed, or the thread is gone or hung.
    pub(crate) fn call(&mut self, request: C::Request) -> Result<C::Reply, ConnectorError> {
        self.submit(request)?;
        let mut last = None;
        while self.inflight > 0 {
            last = Some(self.wait_one()?);
        }
        last.ok_or_else(|| self.gone())
    }

    /// Waits until every submitted request is answered.
    ///
    /// # Errors
    ///
    /// A request failed, or the thread is gone or hung.
    pub(crate) fn drain(&mut self) -> Result<(), ConnectorError> {
        while self.inflight > 0 {
            self.wait_one()?;
        }
        self.failed.clone().map_or(Ok(()), Err)
    }

    /// Takes the replies that already arrived, without waiting.
    fn take_ready(&mut self) -> Result<(), ConnectorError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        while self.inflight > 0 {
            match self.replies.try_recv() {
                Ok(reply) => {
                    self.inflight -= 1;
                    reply.map_err(|e| self.fail(e))?;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(self.gone()),
            }
        }
        Ok(())
    }

    /// Waits for the oldest reply.
    fn wait_one(&mut self) -> Result<C::Reply, ConnectorError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.replies.recv_timeout(self.reply_timeout) {
            Ok(reply) => {
                self.inflight -= 1;
                reply.map_err(|e| self.fail(e))
            }
            Err(RecvTimeoutError::Timeout) => Err(self.fail(ConnectorError::new(
                self.name.clone(),
                "wait for a reply",
                format!(
                    "no reply within {} ms ({} requests in flight)",
                    self.reply_timeout.as_millis(),
                    self.inflight
                ),
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(self.gone()),
        }
    }

    fn fail(&mut self, error: ConnectorError) -> ConnectorError {
        self.requests = None;
        self.failed = Some(error.clone());
        error
    }

    /// The thread ended: the error it reported last (it sends it before it ends), or a plain
    /// "ended".
    fn gone(&mut self) -> ConnectorError {
        if let Some(error) = &self.failed {
            return error.clone();
        }
        while let Ok(reply) = self.replies.try_recv() {
            self.inflight = self.inflight.saturating_sub(1);
            if let Err(error) = reply {
                return self.fail(error);
            }
        }
        self.fail(ConnectorError::new(
            self.name.clone(),
            "send a request",
            "the I/O thread ended",
        ))
    }
}

/// The I/O thread's body: connect, then execute requests in order until the sender is dropped
/// or a request fails.
fn run<C: Connection>(
    config: C::Config,
    server: &str,
    requests: Receiver<C::Request>,
    replies: mpsc::Sender<Result<C::Reply, ConnectorError>>,
    ready: SyncSender<Result<(), ConnectorError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(ConnectorError::new(
                server,
                "start the I/O runtime",
                e.to_string(),
            )));
            return;
        }
    };
    let mut connection = match runtime.block_on(C::connect(config)) {
        Ok(connection) => {
            let _ = ready.send(Ok(()));
            connection
        }
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    while let Ok(request) = requests.recv() {
        let reply = runtime.block_on(connection.handle(request));
        let failed = reply.is_err();
        if replies.send(reply).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that echoes numbers, fails on a negative one, and records what it ran.
    struct Echo {
        seen: std::sync::Arc<std::sync::Mutex<Vec<i64>>>,
    }

    impl Connection for Echo {
        type Config = std::sync::Arc<std::sync::Mutex<Vec<i64>>>;
        type Request = i64;
        type Reply = i64;

        async fn connect(seen: Self::Config) -> Result<Self, ConnectorError> {
            Ok(Self { seen })
        }

        async fn handle(&mut self, request: i64) -> Result<i64, ConnectorError> {
            self.seen.lock().unwrap().push(request);
            if request < 0 {
                return Err(ConnectorError::new("echo://", "echo", "negative"));
            }
            Ok(request * 2)
        }
    }

    fn start(inflight_max: usize) -> (IoThread<Echo>, std::sync::Arc<std::sync::Mutex<Vec<i64>>>) {
        let seen = std::sync::Arc::default();
        let io = IoThread::<Echo>::start(
            "echo",
            "echo://",
            std::sync::Arc::clone(&seen),
            inflight_max,
            Duration::from_secs(30),
        )
        .expect("starts");
        (io, seen)
    }

    #[test]
    fn requests_run_in_order_and_calls_return_their_own_reply() {
        let (mut io, seen) = start(2);
        for n in 0..10 {
            io.submit(n).expect("submit");
            assert!(io.inflight <= 2, "bounded in flight");
        }
        assert_eq!(io.call(21).expect("call"), 42);
        assert_eq!(io.inflight, 0);
        assert_eq!(
            *seen.lock().unwrap(),
            (0..10).chain([21]).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_first_error_stops_later_requests_and_is_reported_again() {
        let (mut io, seen) = start(4);
        io.submit(1).expect("submit");
        io.submit(-1).expect("submit");
        // Queued, or refused because the error is already known: either way it never runs.
        let queued = io.submit(3);
        let error = io.drain().expect_err("the negative request failed");
        if let Err(refused) = queued {
            assert_eq!(refused, error);
        }
        assert_eq!(error.message, "negative");
        assert_eq!(io.submit(5).expect_err("still failed"), error);
        assert_eq!(*seen.lock().unwrap(), vec![1, -1], "3 and 5 never ran");
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let policy = RetryPolicy {
            retries_max: 10,
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
        };
        let waits: Vec<u64> = (0..6).map(|r| policy.backoff_ms(r)).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(policy.backoff_ms(u32::MAX), 1_000);
    }

    #[test]
    fn long_operations_are_shortened_in_errors() {
        let error = ConnectorError::new("s", "x".repeat(500), "m");
        assert_eq!(error.operation.chars().count(), 203);
        assert!(error.to_string().starts_with("s: xxx"));
    }
}
