//! A Redis sink (the seed's `RedisSink`, Flink's Bahir `RedisSink` with its `RedisMapper`):
//! every element becomes one write (`HSET` of a field in a hash, `SET`, `LPUSH`, `RPUSH`,
//! `SADD`), sent in pipelines, at least once or exactly once.
//!
//! ## Design
//!
//! Writes are collected into pipelines of `batch_writes_max` commands and sent by the I/O
//! thread that owns the async connection ([`super::io`]); the subtask waits only when
//! `inflight_batches_max` pipelines are unanswered (back-pressure) and at a barrier.
//!
//! **At least once**: pipelines go straight to their keys; a barrier waits until all are
//! answered. After a failure the writes since the checkpoint are repeated: `SET`, `HSET` and
//! `SADD` are idempotent (the keys end up the same), `LPUSH`/`RPUSH` add the element again.
//!
//! **Exactly once**: a transaction's writes are *staged* in a hash of their own,
//! `eichhorn:txn:<prefix>:<subtask>:<job id>:<attempt>:<sequence>`, field `<n>:c|k|f|v` for the
//! command, key, field and value of the transaction's `n`-th write (an `HSET` per field, so a
//! repeated staging pipeline writes the same fields again). The barrier waits until everything
//! is staged (`pre_commit`). The commit runs one Lua script that applies the staged writes in
//! order and deletes the staging hash, atomically (Redis runs a script alone): a second commit
//! finds no hash and does nothing, so commits are idempotent and a crash between pre-commit and
//! commit is finished by the restore, exactly once, even for `LPUSH`. At open, staging hashes of
//! this sink's subtask indices that no checkpoint will commit are deleted.
//!
//! Redis runs nothing else while the script applies a transaction, so a transaction's size
//! (the writes of one checkpoint interval of one subtask) is how long Redis pauses at each
//! commit: keep checkpoint intervals short for high write rates in exactly-once mode.
//!
//! ## Invariants
//!
//! - Writes reach Redis in the order of their elements.
//! - Exactly once: a staged write is applied only by the script, which applies a transaction
//!   whole or not at all, and at most once.
//! - Errors name the server (`redis://host:port/db`) and the command.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use super::io::{Connection, ConnectorError, DeliveryGuarantee, IoThread, RetryPolicy};
use crate::api::{SinkContext, TwoPhaseCommitSink};
use crate::operator::{FunctionError, RuntimeContext, UnrecoverableError};

/// One write into Redis (Bahir's `RedisCommand` with the key and value of the element).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedisWrite {
    /// `SET key value`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// `HSET key field value` (Bahir's `HSET` with the hash name as "additional key").
    HSet {
        /// The hash.
        key: String,
        /// The field in the hash.
        field: String,
        /// The value.
        value: Vec<u8>,
    },
    /// `LPUSH key value`: not idempotent, exactly once needs [`RedisSink::exactly_once`].
    LPush {
        /// The list.
        key: String,
        /// The element.
        value: Vec<u8>,
    },
    /// `RPUSH key value`: not idempotent, exactly once needs [`RedisSink::exactly_once`].
    RPush {
        /// The list.
        key: String,
        /// The element.
        value: Vec<u8>,
    },
    /// `SADD key member`.
    SAdd {
        /// The set.
        key: String,
        /// The member.
        member: Vec<u8>,
    },
}

impl RedisWrite {
    /// `SET key value`.
    pub fn set(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    /// `HSET key field value`.
    pub fn hset(
        key: impl Into<String>,
        field: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        Self::HSet {
            key: key.into(),
            field: field.into(),
            value: value.into(),
        }
    }

    /// `LPUSH key value`.
    pub fn lpush(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self::LPush {
            key: key.into(),
            value: value.into(),
        }
    }

    /// `RPUSH key value`.
    pub fn rpush(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self::RPush {
            key: key.into(),
            value: value.into(),
        }
    }

    /// `SADD key member`.
    pub fn sadd(key: impl Into<String>, member: impl Into<Vec<u8>>) -> Self {
        Self::SAdd {
            key: key.into(),
            member: member.into(),
        }
    }

    /// The command name, key, field (empty but for `HSET`) and value.
    fn parts(&self) -> (&'static str, &str, &str, &[u8]) {
        match self {
            Self::Set { key, value } => ("SET", key, "", value),
            Self::HSet { key, field, value } => ("HSET", key, field, value),
            Self::LPush { key, value } => ("LPUSH", key, "", value),
            Self::RPush { key, value } => ("RPUSH", key, "", value),
            Self::SAdd { key, member } => ("SADD", key, "", member),
        }
    }

    /// Adds the command to `pipe`.
    fn add_to(&self, pipe: &mut redis::Pipeline) {
        let (command, key, field, value) = self.parts();
        let cmd = pipe.cmd(command).arg(key);
        if !field.is_empty() || command == "HSET" {
            cmd.arg(field);
        }
        cmd.arg(value).ignore();
    }
}

/// Applies a staging hash's writes in order and deletes it; returns how many it applied (0:
/// already applied or never staged). Only the commands the sink stages are accepted.
const APPLY_SCRIPT: &str = r"
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
for i = 0, n - 1 do
  local c = redis.call('HGET', KEYS[1], i .. ':c')
  local k = redis.call('HGET', KEYS[1], i .. ':k')
  local v = redis.call('HGET', KEYS[1], i .. ':v')
  if c == 'HSET' then
    redis.call('HSET', k, redis.call('HGET', KEYS[1], i .. ':f'), v)
  elseif c == 'SET' or c == 'LPUSH' or c == 'RPUSH' or c == 'SADD' then
    redis.call(c, k, v)
  else
    return redis.error_reply('unknown staged command ' .. tostring(c) .. ' in ' .. KEYS[1])
  end
end
redis.call('DEL', KEYS[1])
return n
";

/// The prefix of every staging hash.
const STAGING_PREFIX: &str = "eichhorn:txn:";

/// Settings every instance shares.
#[derive(Debug)]
struct Settings {
    url: String,
    guarantee: DeliveryGuarantee,
    transaction_id_prefix: String,
    batch_writes_max: usize,
    inflight_batches_max: usize,
    retry: RetryPolicy,
    request_timeout_ms: u64,
}

/// Writes every element into Redis as the [`RedisWrite`] its mapper returns, in pipelines, at
/// least once (the default; idempotent for `SET`, `HSET`, `SADD`) or exactly once
/// ([`RedisSink::exactly_once`]). Add it with `DataStream::add_two_phase_sink`.
///
/// # Examples
///
/// ```
/// use eichhorn::connectors::test_servers::RedisServer;
/// use eichhorn::connectors::{RedisSink, RedisWrite};
/// use eichhorn::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = RedisServer::start()?; // a throwaway Redis on a free loopback port
/// let env = StreamEnv::new();
/// env.from_collection(vec![("sensor-1".to_string(), 21.5f64), ("sensor-2".to_string(), 19.0)])
///     .add_two_phase_sink(
///         RedisSink::new(&server.url(), |(id, t): &(String, f64)| {
///             RedisWrite::hset("temperatures", id.clone(), t.to_string())
///         })
///         .exactly_once("temperatures"),
///     );
/// env.execute("to redis").await?;
/// assert_eq!(server.cli(&["HGET", "temperatures", "sensor-1"])?, "21.5\n");
/// # Ok(()) }
/// ```
pub struct RedisSink<T> {
    settings: Arc<Settings>,
    mapper: Arc<dyn Fn(&T) -> RedisWrite + Send + Sync>,
    io: Option<IoThread<RedisConnection>>,
    naming: Option<String>,
    next_seq: u64,
    /// Writes of the open transaction not yet submitted.
    buffer: Vec<RedisWrite>,
}

/// One transaction of a [`RedisSink`]: what checkpoints store about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisTransaction {
    /// The staging hash (exactly once), empty at least once.
    staging_key: String,
    /// Writes in it (staged or submitted).
    writes: u64,
}

impl RedisTransaction {
    /// The staging hash's key (empty in at-least-once mode).
    pub fn staging_key(&self) -> &str {
        &self.staging_key
    }

    /// The number of writes in it.
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

impl<T> RedisSink<T> {
    /// A sink writing what `mapper` makes of each element into the Redis at `url`
    /// (`redis://host:port/db`), at least once.
    pub fn new(url: &str, mapper: impl Fn(&T) -> RedisWrite + Send + Sync + 'static) -> Self {
        Self {
            settings: Arc::new(Settings {
                url: url.to_string(),
                guarantee: DeliveryGuarantee::AtLeastOnce,
                transaction_id_prefix: String::new(),
                batch_writes_max: 1_000,
                inflight_batches_max: 4,
                retry: RetryPolicy::default(),
                request_timeout_ms: 60_000,
            }),
            mapper: Arc::new(mapper),
            io: None,
            naming: None,
            next_seq: 0,
            buffer: Vec::new(),
        }
    }

    fn settings_mut(&mut self) -> &mut Settings {
        Arc::get_mut(&mut self.settings).expect("configured before the sink is cloned into the job")
    }

    /// Exactly once: writes are staged per transaction and applied atomically by the commit.
    /// `transaction_id_prefix` names the staging hashes (unique per sink and Redis database:
    /// this sink deletes staging hashes under its prefix that no checkpoint will commit).
    ///
    /// # Panics
    ///
    /// When called on a clone of a sink already added to a job.
    pub fn exactly_once(mut self, transaction_id_prefix: &str) -> Self {
        let settings = self.settings_mut();
        settings.guarantee = DeliveryGuarantee::ExactlyOnce;
        settings.transaction_id_prefix = transaction_id_prefix.to_string();
        self
    }

    /// At most `writes` commands per pipeline (default 1 000).
    ///
    /// # Panics
    ///
    /// When called on a clone of a sink already added to a job.
    pub fn batch_writes_max(mut self, writes: usize) -> Self {
        self.settings_mut().batch_writes_max = writes;
        self
    }

    /// At most `batches` pipelines sent and not yet answered (default 4).
    ///
    /// # Panics
    ///
    /// When called on a clone of a sink already added to a job.
    pub fn inflight_batches_max(mut self, batches: usize) -> Self {
        self.settings_mut().inflight_batches_max = batches;
        self
    }

    /// How connection losses are retried (default: 5 retries, 100 ms doubling up to 5 s).
    ///
    /// # Panics
    ///
    /// When called on a clone of a sink already added to a job.
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.settings_mut().retry = retry;
        self
    }

    fn is_exactly_once(&self) -> bool {
        self.settings.guarantee == DeliveryGuarantee::ExactlyOnce
    }

    fn connect(&mut self) -> Result<&mut IoThread<RedisConnection>, FunctionError> {
        if self.io.is_none() {
            let settings = &self.settings;
            if settings.batch_writes_max == 0 {
                return Err(UnrecoverableError::new(
                    "Redis sink: batch_writes_max must be at least 1",
                )
                .into());
            }
            if settings.guarantee == DeliveryGuarantee::ExactlyOnce
                && (settings.transaction_id_prefix.is_empty()
                    || settings
                        .transaction_id_prefix
                        .contains(['*', '?', '[', ']', '\\']))
            {
                return Err(UnrecoverableError::new(
                    "Redis sink: exactly once needs a transaction id prefix without glob characters (* ? [ ] \\)",
                )
                .into());
            }
            let client = redis::Client::open(settings.url.as_str()).map_err(|e| {
                UnrecoverableError::new(format!("invalid Redis URL {}: {e}", settings.url))
            })?;
            let info = client.get_connection_info();
            let server = format!("redis://{}/{}", info.addr, info.redis.db);
            let timeout = Duration::from_millis(settings.request_timeout_ms);
            let io = IoThread::start(
                &format!("eichhorn-redis {server}"),
                &server,
                RedisConfig {
                    client,
                    server: server.clone(),
                    retry: settings.retry,
                    timeout,
                },
                settings.inflight_batches_max.max(1),
                timeout.saturating_mul(settings.retry.retries_max.saturating_add(2)),
            )?;
            self.io = Some(io);
        }
        Ok(self.io.as_mut().expect("connected just above"))
    }

    /// Submits the buffered writes: to their keys, or staged in `txn`.
    fn flush(&mut self, txn: &mut RedisTransaction) -> Result<(), FunctionError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let writes = std::mem::take(&mut self.buffer);
        let count = writes.len() as u64;
        let request = if self.is_exactly_once() {
            RedisRequest::Stage {
                key: txn.staging_key.clone(),
                first: txn.writes,
                writes,
            }
        } else {
            RedisRequest::Write { writes }
        };
        self.connect()?.submit(request)?;
        txn.writes += count;
        Ok(())
    }

    /// Deletes the staging hashes of this instance's subtask indices (module docs).
    fn delete_strays(&mut self, subtask_index: u32, parallelism: u32) -> Result<(), FunctionError> {
        let prefix = format!("{STAGING_PREFIX}{}:", self.settings.transaction_id_prefix);
        let io = self.connect()?;
        let RedisReply::Keys(keys) = io.call(RedisRequest::Scan {
            pattern: format!("{prefix}*"),
        })?
        else {
            unreachable!("Scan answers with keys");
        };
        for key in keys {
            let Some(owner) = staging_subtask(&key, &prefix) else {
                continue;
            };
            if owner % parallelism.max(1) == subtask_index {
                tracing::info!(key = %key, "deleting a staged Redis transaction no checkpoint will commit");
                io.call(RedisRequest::Discard { key })?;
            }
        }
        Ok(())
    }
}

/// The subtask of a staging key `<prefix><subtask>:<job id>:<attempt>:<sequence>`.
fn staging_subtask(key: &str, prefix: &str) -> Option<u32> {
    let rest = key.strip_prefix(prefix)?;
    let parts: Vec<&str> = rest.split(':').collect();
    let [subtask, job, attempt, seq] = parts.as_slice() else {
        return None;
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if job.len() != 32
        || !job.bytes().all(|b| b.is_ascii_hexdigit())
        || !numeric(attempt)
        || !numeric(seq)
    {
        return None;
    }
    subtask.parse().ok()
}

impl<T> Clone for RedisSink<T> {
    fn clone(&self) -> Self {
        Self {
            settings: Arc::clone(&self.settings),
            mapper: Arc::clone(&self.mapper),
            io: None,
            naming: None,
            next_seq: 0,
            buffer: Vec::new(),
        }
    }
}

impl<T> fmt::Debug for RedisSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSink")
            .field("guarantee", &self.settings.guarantee)
            .field("batch_writes_max", &self.settings.batch_writes_max)
            .finish()
    }
}

crate::api::operator::impl_plain_operator!(RedisSink<T>; T);

impl<T: Send + 'static> TwoPhaseCommitSink<T> for RedisSink<T> {
    type Txn = RedisTransaction;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.connect()?;
        if self.is_exactly_once() {
            self.delete_strays(ctx.subtask_index, ctx.parallelism)?;
            self.naming = Some(format!(
                "{STAGING_PREFIX}{}:{}:{}:{}",
                self.settings.transaction_id_prefix,
                ctx.subtask_index,
                ctx.job_id,
                ctx.attempt_number
            ));
        }
        Ok(())
    }

    fn begin_transaction(&mut self) -> Result<RedisTransaction, FunctionError> {
        self.next_seq += 1;
        let staging_key = match &self.naming {
            Some(stem) => format!("{stem}:{}", self.next_seq),
            None => String::new(),
        };
        Ok(RedisTransaction {
            staging_key,
            writes: 0,
        })
    }

    fn invoke(
        &mut self,
        txn: &mut RedisTransaction,
        value: T,
        _ctx: &SinkContext,
    ) -> Result<(), FunctionError> {
        self.buffer.push((self.mapper)(&value));
        if self.buffer.len() >= self.settings.batch_writes_max {
            self.flush(txn)?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, txn: &mut RedisTransaction) -> Result<(), FunctionError> {
        self.flush(txn)?;
        if let Some(io) = &mut self.io {
            io.drain()?;
        }
        Ok(())
    }

    fn commit(&mut self, txn: RedisTransaction) -> Result<(), FunctionError> {
        if self.is_exactly_once() && txn.writes > 0 {
            self.connect()?.call(RedisRequest::Apply {
                key: txn.staging_key,
            })?;
        }
        Ok(())
    }

    fn abort(&mut self, txn: RedisTransaction) -> Result<(), FunctionError> {
        self.buffer.clear();
        if self.is_exactly_once() && txn.writes > 0 {
            self.connect()?.call(RedisRequest::Discard {
                key: txn.staging_key,
            })?;
        }
        Ok(())
    }

    fn recover_and_abort(&mut self, txn: RedisTransaction) -> Result<(), FunctionError> {
        // Stored while open: more may have been staged after the checkpoint.
        if self.is_exactly_once() && !txn.staging_key.is_empty() {
            self.connect()?.call(RedisRequest::Discard {
                key: txn.staging_key,
            })?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        if let Some(io) = &mut self.io {
            io.drain()?;
        }
        self.io = None;
        Ok(())
    }
}

/// What the I/O thread needs.
#[derive(Debug)]
struct RedisConfig {
    client: redis::Client,
    server: String,
    retry: RetryPolicy,
    timeout: Duration,
}

/// The work of the I/O thread.
#[derive(Debug)]
enum RedisRequest {
    /// Writes to their keys, in one pipeline.
    Write { writes: Vec<RedisWrite> },
    /// Stages writes `first..` of a transaction in its hash.
    Stage {
        key: String,
        first: u64,
        writes: Vec<RedisWrite>,
    },
    /// Applies a staged transaction (the script).
    Apply { key: String },
    /// Deletes a staging hash.
    Discard { key: String },
    /// The keys matching a pattern (`SCAN`).
    Scan { pattern: String },
}

/// The I/O thread's answers.
enum RedisReply {
    Done,
    Keys(Vec<String>),
}

/// The connection, replaced when lost.
struct RedisConnection {
    config: RedisConfig,
    connection: Option<MultiplexedConnection>,
    apply: redis::Script,
}

impl RedisConnection {
    async fn connected(&mut self) -> Result<&mut MultiplexedConnection, redis::RedisError> {
        if self.connection.is_none() {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(self.config.timeout)
                .set_response_timeout(self.config.timeout);
            let connection = self
                .config
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("connected just above"))
    }

    /// Runs one request once.
    async fn attempt(&mut self, request: &RedisRequest) -> Result<RedisReply, redis::RedisError> {
        match request {
            RedisRequest::Write { writes } => {
                let mut pipe = redis::pipe();
                for write in writes {
                    write.add_to(&mut pipe);
                }
                pipe.query_async::<()>(self.connected().await?).await?;
                Ok(RedisReply::Done)
            }
            RedisRequest::Stage { key, first, writes } => {
                let mut pipe = redis::pipe();
                // Fields by position, so a repeated pipeline writes the same fields again.
                for (offset, write) in writes.iter().enumerate() {
                    let n = *first + offset as u64;
                    let (command, target, field, value) = write.parts();
                    pipe.cmd("HSET")
                        .arg(key)
                        .arg(format!("{n}:c"))
                        .arg(command)
                        .arg(format!("{n}:k"))
                        .arg(target)
                        .arg(format!("{n}:f"))
                        .arg(field)
                        .arg(format!("{n}:v"))
                        .arg(value)
                        .ignore();
                }
                let count = *first + writes.len() as u64;
                pipe.cmd("HSET").arg(key).arg("n").arg(count).ignore();
                pipe.query_async::<()>(self.connected().await?).await?;
                Ok(RedisReply::Done)
            }
            RedisRequest::Apply { key } => {
                let apply = self.apply.clone();
                let _applied: i64 = apply.key(key).invoke_async(self.connected().await?).await?;
                Ok(RedisReply::Done)
            }
            RedisRequest::Discard { key } => {
                redis::cmd("DEL")
                    .arg(key)
                    .query_async::<()>(self.connected().await?)
                    .await?;
                Ok(RedisReply::Done)
            }
            RedisRequest::Scan { pattern } => {
                let connection = self.connected().await?;
                let mut keys = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1_000)
                        .query_async(connection)
                        .await?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                keys.sort();
                keys.dedup();
                Ok(RedisReply::Keys(keys))
            }
        }
    }
}

/// A short name of a request for errors.
fn describe_request(request: &RedisRequest) -> String {
    match request {
        RedisRequest::Write { writes } => {
            let first = writes.first().map_or("", |w| w.parts().0);
            format!("pipeline of {} writes ({first} ...)", writes.len())
        }
        RedisRequest::Stage { key, writes, .. } => {
            format!("stage {} writes in {key}", writes.len())
        }
        RedisRequest::Apply { key } => format!("EVAL apply-staged {key}"),
        RedisRequest::Discard { key } => format!("DEL {key}"),
        RedisRequest::Scan { pattern } => format!("SCAN MATCH {pattern}"),
    }
}

fn is_connection_error(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
}

impl Connection for RedisConnection {
    type Config = RedisConfig;
    type Request = RedisRequest;
    type Reply = RedisReply;

    async fn connect(config: RedisConfig) -> Result<Self, ConnectorError> {
        let mut connection = Self {
            config,
            connection: None,
            apply: redis::Script::new(APPLY_SCRIPT),
        };
        let mut retry = 0;
        loop {
            let result = connection.connected().await.map(|_| ());
            match result {
                Ok(()) => return Ok(connection),
                Err(error)
                    if retry < connection.config.retry.retries_max
                        && is_connection_error(&error) =>
                {
                    tracing::warn!(server = %connection.config.server, %error, retry, "connecting to Redis failed, retrying");
                    tokio::time::sleep(Duration::from_millis(
                        connection.config.retry.backoff_ms(retry),
                    ))
                    .await;
                    retry += 1;
                }
                Err(error) => {
                    return Err(ConnectorError::new(
                        &connection.config.server,
                        "connect",
                        format!("{error} (after {retry} retries)"),
                    ));
                }
            }
        }
    }

    async fn handle(&mut self, request: RedisRequest) -> Result<RedisReply, ConnectorError> {
        // Every request is safe to repeat: writes at least once by definition, staging by
        // position, the script and DEL idempotently.
        let mut retry = 0;
        loop {
            match self.attempt(&request).await {
                Ok(reply) => return Ok(reply),
                Err(error)
                    if retry < self.config.retry.retries_max && is_connection_error(&error) =>
                {
                    tracing::warn!(server = %self.config.server, %error, retry, "Redis request failed, reconnecting");
                    self.connection = None;
                    tokio::time::sleep(Duration::from_millis(self.config.retry.backoff_ms(retry)))
                        .await;
                    retry += 1;
                }
                Err(error) => {
                    return Err(ConnectorError::new(
                        &self.config.server,
                        describe_request(&request),
                        format!("{error} (after {retry} retries)"),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_keys_are_recognised_only_in_the_sinks_own_shape() {
        let job = "0123456789abcdef0123456789abcdef";
        let prefix = "eichhorn:txn:p:";
        assert_eq!(
            staging_subtask(&format!("{prefix}2:{job}:0:5"), prefix),
            Some(2)
        );
        assert_eq!(
            staging_subtask(&format!("{prefix}x:2:{job}:0:5"), prefix),
            None
        );
        assert_eq!(staging_subtask(&format!("{prefix}2:{job}:0"), prefix), None);
        assert_eq!(staging_subtask("eichhorn:txn:q:2:x:0:5", prefix), None);
    }

    #[test]
    fn writes_name_their_command_key_field_and_value() {
        assert_eq!(
            RedisWrite::hset("h", "f", "v").parts(),
            ("HSET", "h", "f", &b"v"[..])
        );
        assert_eq!(
            RedisWrite::set("k", "v").parts(),
            ("SET", "k", "", &b"v"[..])
        );
        assert_eq!(RedisWrite::lpush("l", "v").parts().0, "LPUSH");
        assert_eq!(RedisWrite::rpush("l", "v").parts().0, "RPUSH");
        assert_eq!(RedisWrite::sadd("s", "m").parts().0, "SADD");
    }

    #[test]
    fn a_bad_prefix_is_unrecoverable() {
        let mut sink = RedisSink::new("redis://127.0.0.1:1/0", |_: &u8| RedisWrite::set("k", "v"))
            .exactly_once("a*");
        let error = sink.connect().unwrap_err();
        assert!(UnrecoverableError::is_in(error.as_ref()), "{error}");
        let mut sink = RedisSink::new("not a url", |_: &u8| RedisWrite::set("k", "v"));
        let error = sink.connect().unwrap_err().to_string();
        assert!(error.contains("invalid Redis URL not a url"), "{error}");
    }
}
