//! A PostgreSQL sink: batched inserts or upserts, at least once (idempotent upserts) or exactly
//! once through PostgreSQL's two-phase commit (`PREPARE TRANSACTION` / `COMMIT PREPARED`),
//! driven by the two-phase-commit sink protocol (Flink's JDBC sink with its XA mode).
//!
//! ## Design
//!
//! Rows are collected into batches of `batch_rows_max` and written with one multi-row
//! `INSERT ... VALUES (..), (..)` statement (with `ON CONFLICT (key) DO UPDATE` for upserts, the
//! batch first reduced to the last row of every key, as PostgreSQL refuses to update one row
//! twice in one statement). The statements run on an I/O thread that owns the tokio-postgres
//! client ([`super::io`]): the subtask submits a batch and goes on; it waits only when
//! `inflight_batches_max` batches are unanswered (back-pressure) and at a checkpoint barrier.
//!
//! **At least once**: every batch is its own implicit transaction; a barrier waits until every
//! batch is written (`pre_commit`), so a completed checkpoint covers its records. After a
//! failure the records since the checkpoint are written again: with upserts the table ends up
//! the same (idempotent), with plain inserts they are duplicated.
//!
//! **Exactly once**: each transaction of the protocol is a database transaction on the *data*
//! connection, named by a global transaction id (gid)
//! `<prefix>-<subtask>-<job id>-<attempt>-<sequence>`. At the barrier it is prepared
//! (`PREPARE TRANSACTION 'gid'`: durable, invisible, committable by any session), and when the
//! checkpoint completes it is committed on a second, *control* connection (`COMMIT PREPARED`
//! cannot run inside the data connection's next transaction). A restore commits the prepared
//! transactions the checkpoint holds (a missing one was committed before the failure) and rolls
//! back the one that was open; at open, every prepared transaction of this sink's subtask
//! indices that nothing will commit (prepared at a barrier whose checkpoint never completed) is
//! rolled back, so no crash leaves locks behind.
//!
//! While a prepared transaction waits for its checkpoint, it holds the row locks of what it
//! wrote; a write of the next transaction to the same row would wait for that commit, which the
//! subtask could not deliver if it were itself waiting for the write. So in exactly-once mode
//! batches are held back in memory (up to `buffer_rows_max` rows) while a prepared transaction
//! of this subtask awaits its commit. The JobManager notifies a checkpoint's completion before
//! it triggers the next one, so the commit always comes before the next barrier.
//!
//! ## Invariants
//!
//! - Batches reach the server in the order of their records; a later row of a key wins.
//! - A transaction with no record is never begun or prepared on the server.
//! - Bad input (a row with the wrong number of values, a value of the wrong type) fails the
//!   task with the table and column named; it never writes part of a row.
//! - Errors name the server (`postgres://host:port/db`, never credentials) and the statement.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

use super::io::{Connection, ConnectorError, DeliveryGuarantee, IoThread, RetryPolicy};
use crate::api::{SinkContext, TwoPhaseCommitSink};
use crate::operator::{FunctionError, RuntimeContext, UnrecoverableError};

/// PostgreSQL limits a statement to 65 535 parameters.
const PARAMETERS_MAX: usize = 65_535;

/// One value of a row, as the sink sends it (Rust types map to PostgreSQL types as in
/// tokio-postgres: `I64` to `BIGINT`, `F64` to `DOUBLE PRECISION`, `Text` to `TEXT`/`VARCHAR`,
/// ...). A value of the wrong type for its column fails the write with both types named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SqlValue {
    /// `NULL`.
    Null,
    /// `BOOLEAN`.
    Bool(bool),
    /// `SMALLINT`.
    I16(i16),
    /// `INTEGER`.
    I32(i32),
    /// `BIGINT`.
    I64(i64),
    /// `REAL`.
    F32(f32),
    /// `DOUBLE PRECISION`.
    F64(f64),
    /// `TEXT`, `VARCHAR`, `CHAR`, `NAME`.
    Text(String),
    /// `BYTEA`.
    Bytes(Vec<u8>),
}

impl SqlValue {
    /// Appends a canonical encoding (the same bytes exactly for equal values) for the
    /// per-batch key index of upserts.
    fn encode_key(&self, out: &mut Vec<u8>) {
        match self {
            Self::Null => out.push(0),
            Self::Bool(v) => out.extend([1, u8::from(*v)]),
            Self::I16(v) => {
                out.push(2);
                out.extend(v.to_be_bytes());
            }
            Self::I32(v) => {
                out.push(3);
                out.extend(v.to_be_bytes());
            }
            Self::I64(v) => {
                out.push(4);
                out.extend(v.to_be_bytes());
            }
            Self::F32(v) => {
                out.push(5);
                out.extend(v.to_bits().to_be_bytes());
            }
            Self::F64(v) => {
                out.push(6);
                out.extend(v.to_bits().to_be_bytes());
            }
            Self::Text(v) => {
                out.push(7);
                out.extend((v.len() as u64).to_be_bytes());
                out.extend(v.as_bytes());
            }
            Self::Bytes(v) => {
                out.push(8);
                out.extend((v.len() as u64).to_be_bytes());
                out.extend(v);
            }
        }
    }
}

macro_rules! sql_value_from {
    ($($rust:ty => $variant:ident),* $(,)?) => {$(
        impl From<$rust> for SqlValue {
            fn from(value: $rust) -> Self {
                Self::$variant(value.into())
            }
        }
    )*};
}

sql_value_from!(bool => Bool, i16 => I16, i32 => I32, i64 => I64, f32 => F32, f64 => F64,
    String => Text, &str => Text, Vec<u8> => Bytes);

impl<T: Into<Self>> From<Option<T>> for SqlValue {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

impl ToSql for SqlValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.to_sql_checked(ty, out)
    }

    fn accepts(_ty: &Type) -> bool {
        // Checked per value in `to_sql_checked`, against the variant's own Rust type.
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Self::Null => Ok(IsNull::Yes),
            Self::Bool(v) => v.to_sql_checked(ty, out),
            Self::I16(v) => v.to_sql_checked(ty, out),
            Self::I32(v) => v.to_sql_checked(ty, out),
            Self::I64(v) => v.to_sql_checked(ty, out),
            Self::F32(v) => v.to_sql_checked(ty, out),
            Self::F64(v) => v.to_sql_checked(ty, out),
            Self::Text(v) => v.to_sql_checked(ty, out),
            Self::Bytes(v) => v.to_sql_checked(ty, out),
        }
    }
}

/// How rows are written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WriteMode {
    /// `INSERT`: every row is a new row.
    Insert,
    /// `INSERT ... ON CONFLICT (key) DO UPDATE`: the last row of a key wins.
    Upsert { key_columns: Vec<String> },
}

/// Makes the row of an element.
type RowFn<T> = Arc<dyn Fn(&T) -> Vec<SqlValue> + Send + Sync>;

/// What every instance of a sink shares.
#[derive(Debug)]
struct Settings {
    connection_string: String,
    table: String,
    columns: Vec<String>,
    mode: WriteMode,
    guarantee: DeliveryGuarantee,
    batch_rows_max: usize,
    inflight_batches_max: usize,
    buffer_rows_max: usize,
    retry: RetryPolicy,
    request_timeout_ms: u64,
    transaction_id_prefix: String,
}

/// Writes every element as a row of a PostgreSQL table, in batches: plain inserts or upserts,
/// at least once or exactly once ([`PostgresSink::exactly_once`]). Add it with
/// `DataStream::add_two_phase_sink` (both guarantees use the protocol: at least once only
/// flushes at the barrier).
///
/// The table must exist; for upserts its key columns need a unique index or primary key. In
/// exactly-once mode the server needs `max_prepared_transactions` > 0, and at parallelism above
/// one the input should be partitioned by the table's key (`key_by`), so that two subtasks never
/// write the same row: a prepared transaction holds its row locks until its checkpoint
/// completes, which would make the other subtask wait for a checkpoint that waits for it.
///
/// # Examples
///
/// ```
/// use eichhorn::connectors::test_servers::PostgresServer;
/// use eichhorn::connectors::{PostgresSink, SqlValue};
/// use eichhorn::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = PostgresServer::start()?; // a throwaway PostgreSQL on a free loopback port
/// server.psql("CREATE TABLE counts (word TEXT PRIMARY KEY, count BIGINT NOT NULL)")?;
/// let env = StreamEnv::new();
/// env.from_collection(vec!["a".to_string(), "b".into(), "a".into()])
///     .map(|word: String| (word, 1i64))
///     .key_by(|(word, _): &(String, i64)| word.clone())
///     .sum(|(_, count)| count)
///     .add_two_phase_sink(
///         PostgresSink::upsert(
///             &server.connection_string(),
///             "counts",
///             &["word", "count"],
///             &["word"],
///             |(word, count): &(String, i64)| vec![SqlValue::from(word.as_str()), SqlValue::from(*count)],
///         )
///         .exactly_once("word-counts"),
///     );
/// env.execute("counts to postgres").await?;
/// assert_eq!(server.psql("SELECT word, count FROM counts ORDER BY word")?, "a|2\nb|1\n");
/// # Ok(()) }
/// ```
pub struct PostgresSink<T> {
    settings: Arc<Settings>,
    to_row: RowFn<T>,
    /// The connection and what is buffered, once connected (at open, or at a recovery before).
    io: Option<IoThread<PgConnection>>,
    /// Set by `open`: how new transactions are named.
    naming: Option<Naming>,
    /// Rows of the open transaction not yet submitted, flattened (`columns.len()` values each).
    buffer: Vec<SqlValue>,
    /// Upserts: the buffer's row of each key (by the key's canonical bytes).
    key_index: FxHashMap<Vec<u8>, usize>,
    /// Whether the data connection has a transaction open (exactly once).
    server_transaction_open: bool,
    /// Prepared transactions of this instance whose commit has not run yet.
    prepared_uncommitted: usize,
}

/// How one opened instance names its transactions.
#[derive(Debug, Clone)]
struct Naming {
    /// `<prefix>-<subtask>-<job id>-<attempt>`.
    stem: String,
    next_seq: u64,
}

/// One transaction of a [`PostgresSink`]: what checkpoints store about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresTransaction {
    /// The global transaction id (exactly once), empty at least once.
    gid: String,
    /// Rows written into it.
    records: u64,
    /// Whether it was prepared on the server.
    prepared: bool,
}

impl PostgresTransaction {
    /// The global transaction id of `PREPARE TRANSACTION` (empty in at-least-once mode).
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// The number of rows written into it.
    pub fn records(&self) -> u64 {
        self.records
    }
}

impl<T> PostgresSink<T> {
    /// A sink inserting one row per element into `table` (`columns` in order; `to_row` gives
    /// one value per column). At least once by default: a failure duplicates the rows written
    /// since the last checkpoint; use [`PostgresSink::exactly_once`] or an upsert to avoid that.
    pub fn insert(
        connection_string: &str,
        table: &str,
        columns: &[&str],
        to_row: impl Fn(&T) -> Vec<SqlValue> + Send + Sync + 'static,
    ) -> Self {
        Self::with_mode(connection_string, table, columns, WriteMode::Insert, to_row)
    }

    /// A sink upserting one row per element into `table`: a row whose `key_columns` match an
    /// existing row replaces its other columns (`INSERT ... ON CONFLICT (key) DO UPDATE`). The
    /// key columns need a unique index. Idempotent, so at least once already gives the
    /// exactly-once table contents (the default).
    pub fn upsert(
        connection_string: &str,
        table: &str,
        columns: &[&str],
        key_columns: &[&str],
        to_row: impl Fn(&T) -> Vec<SqlValue> + Send + Sync + 'static,
    ) -> Self {
        let mode = WriteMode::Upsert {
            key_columns: key_columns.iter().map(|c| (*c).to_string()).collect(),
        };
        Self::with_mode(connection_string, table, columns, mode, to_row)
    }

    fn with_mode(
        connection_string: &str,
        table: &str,
        columns: &[&str],
        mode: WriteMode,
        to_row: impl Fn(&T) -> Vec<SqlValue> + Send + Sync + 'static,
    ) -> Self {
        Self {
            settings: Arc::new(Settings {
                connection_string: connection_string.to_string(),
                table: table.to_string(),
                columns: columns.iter().map(|c| (*c).to_string()).collect(),
                mode,
                guarantee: DeliveryGuarantee::AtLeastOnce,
                batch_rows_max: 500,
                inflight_batches_max: 4,
                buffer_rows_max: 100_000,
                retry: RetryPolicy::default(),
                request_timeout_ms: 120_000,
                transaction_id_prefix: String::new(),
            }),
            to_row: Arc::new(to_row),
            io: None,
            naming: None,
            buffer: Vec::new(),
            key_index: FxHashMap::default(),
            server_transaction_open: false,
            prepared_uncommitted: 0,
        }
    }

    fn settings_mut(&mut self) -> &mut Settings {
        Arc::get_mut(&mut self.settings).expect("configured before the sink is cloned into the job")
    }

    /// Exactly once through prepared transactions, named with `transaction_id_prefix` (unique
    /// per sink among everything that prepares transactions in the database: this sink rolls
    /// back prepared transactions under its prefix that no checkpoint will commit).
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

    /// At most `rows` rows per statement (default 500; also bounded by PostgreSQL's 65 535
    /// parameters per statement).
    ///
    /// # Panics
    ///
    /// When called on a clone of a sink already added to a job.
    pub fn batch_rows_max(mut self, rows: usize) -> Self {
        self.settings_mut().batch_rows_max = rows;
        self
    }

    /// At most `batches` statements submitted and not yet answered (default 4): the sink then
    /// waits, back-pressuring its input.
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

    /// The longest a statement may take before the sink fails (default 120 s).
    ///
    /// # Panics
    ///
    /// When called on a clone of a sink already added to a job.
    pub fn request_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.settings_mut().request_timeout_ms = timeout_ms;
        self
    }

    fn is_exactly_once(&self) -> bool {
        self.settings.guarantee == DeliveryGuarantee::ExactlyOnce
    }

    /// Connects unless connected (recoveries run before `open`).
    fn connect(&mut self) -> Result<&mut IoThread<PgConnection>, FunctionError> {
        if self.io.is_none() {
            let settings = &self.settings;
            settings.validate()?;
            let config =
                tokio_postgres::Config::from_str(&settings.connection_string).map_err(|e| {
                    UnrecoverableError::new(format!("invalid PostgreSQL connection string: {e}"))
                })?;
            let server = server_name(&config);
            let timeout = Duration::from_millis(settings.request_timeout_ms);
            let io = IoThread::start(
                &format!("eichhorn-postgres {}", settings.table),
                &server,
                PgConfig {
                    config,
                    server: server.clone(),
                    retry: settings.retry,
                    timeout,
                },
                settings.inflight_batches_max.max(1),
                // Every request has its own timeout in the thread; this one only catches a hung
                // thread, after a full round of retries.
                timeout.saturating_mul(settings.retry.retries_max.saturating_add(2)),
            )?;
            self.io = Some(io);
        }
        Ok(self.io.as_mut().expect("connected just above"))
    }

    /// Submits the buffered rows as statements of at most `batch_rows_max` rows.
    fn flush(&mut self) -> Result<(), FunctionError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let width = self.settings.columns.len();
        let rows_max = self.settings.rows_per_statement();
        let values = std::mem::take(&mut self.buffer);
        self.key_index.clear();
        let transactional = self.is_exactly_once();
        let begin = transactional && !self.server_transaction_open;
        let settings = Arc::clone(&self.settings);
        let io = self.connect()?;
        let mut first = true;
        for chunk in values.chunks(rows_max * width) {
            let rows = chunk.len() / width;
            io.submit(PgRequest::Write {
                statement: settings.statement(rows),
                params: chunk.to_vec(),
                begin: begin && first,
            })?;
            first = false;
        }
        if transactional {
            self.server_transaction_open = true;
        }
        Ok(())
    }

    /// Whether the buffer should go to the server now.
    fn should_flush(&self) -> bool {
        let rows = self.buffer.len() / self.settings.columns.len().max(1);
        if rows >= self.settings.buffer_rows_max {
            return true;
        }
        // Exactly once: hold batches back while a prepared transaction may hold their rows'
        // locks (module docs).
        rows >= self.settings.batch_rows_max && self.prepared_uncommitted == 0
    }

    /// Adds one row to the buffer (replacing the buffered row of its key, for upserts).
    fn buffer_row(&mut self, row: Vec<SqlValue>) -> Result<(), FunctionError> {
        let width = self.settings.columns.len();
        if row.len() != width {
            return Err(format!(
                "PostgreSQL sink into {}: a row has {} values, the table's columns are {} ({})",
                self.settings.table,
                row.len(),
                width,
                self.settings.columns.join(", ")
            )
            .into());
        }
        if let WriteMode::Upsert { key_columns } = &self.settings.mode {
            let mut key = Vec::new();
            for column in key_columns {
                let index = self
                    .settings
                    .columns
                    .iter()
                    .position(|c| c == column)
                    .expect("validated: key columns are columns");
                row[index].encode_key(&mut key);
            }
            let next = self.buffer.len() / width;
            match self.key_index.get(&key) {
                Some(&at) => {
                    self.buffer[at * width..(at + 1) * width].clone_from_slice(&row);
                    return Ok(());
                }
                None => {
                    self.key_index.insert(key, next);
                }
            }
        }
        self.buffer.extend(row);
        Ok(())
    }

    /// Rolls back every prepared transaction of the subtask indices this instance owns that
    /// nothing will commit (module docs).
    fn roll_back_strays(
        &mut self,
        subtask_index: u32,
        parallelism: u32,
    ) -> Result<(), FunctionError> {
        let prefix = format!("{}-", self.settings.transaction_id_prefix);
        let io = self.connect()?;
        let PgReply::Gids(gids) = io.call(PgRequest::ListPrepared)? else {
            unreachable!("ListPrepared answers with gids");
        };
        for gid in gids {
            let Some(owner) = gid_subtask(&gid, &prefix) else {
                continue;
            };
            if owner % parallelism.max(1) == subtask_index {
                tracing::info!(gid = %gid, "rolling back a prepared transaction no checkpoint will commit");
                io.call(PgRequest::RollbackPrepared { gid })?;
            }
        }
        Ok(())
    }
}

/// The subtask index in `gid` when it has this sink's shape
/// `<prefix><subtask>-<job id>-<attempt>-<sequence>`.
fn gid_subtask(gid: &str, prefix: &str) -> Option<u32> {
    let rest = gid.strip_prefix(prefix)?;
    let parts: Vec<&str> = rest.split('-').collect();
    let [subtask, job, attempt, seq] = parts.as_slice() else {
        return None;
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if job.len() != 32 || !job.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if !numeric(attempt) || !numeric(seq) {
        return None;
    }
    subtask.parse().ok()
}

impl Settings {
    /// Checks the configuration; a bad one can never work.
    fn validate(&self) -> Result<(), UnrecoverableError> {
        let bad = |why: String| {
            UnrecoverableError::new(format!("PostgreSQL sink into {}: {why}", self.table))
        };
        if self.table.is_empty() {
            return Err(bad("the table name is empty".into()));
        }
        if self.columns.is_empty() {
            return Err(bad("no columns".into()));
        }
        if self.columns.len() > PARAMETERS_MAX {
            return Err(bad(format!(
                "{} columns, at most {PARAMETERS_MAX}",
                self.columns.len()
            )));
        }
        if self.batch_rows_max == 0 || self.buffer_rows_max == 0 {
            return Err(bad("batch_rows_max must be at least 1".into()));
        }
        if let WriteMode::Upsert { key_columns } = &self.mode {
            if key_columns.is_empty() {
                return Err(bad("an upsert needs at least one key column".into()));
            }
            if let Some(missing) = key_columns.iter().find(|k| !self.columns.contains(k)) {
                return Err(bad(format!(
                    "key column {missing} is not among the columns"
                )));
            }
        }
        if self.guarantee == DeliveryGuarantee::ExactlyOnce {
            let prefix = &self.transaction_id_prefix;
            if prefix.is_empty() || prefix.len() > 100 {
                return Err(bad(
                    "exactly once needs a transaction id prefix of 1 to 100 characters".into(),
                ));
            }
        }
        Ok(())
    }

    /// Rows per statement: `batch_rows_max`, within the parameter limit.
    fn rows_per_statement(&self) -> usize {
        self.batch_rows_max
            .min(PARAMETERS_MAX / self.columns.len().max(1))
            .max(1)
    }

    /// The statement writing `rows` rows.
    fn statement(&self, rows: usize) -> Arc<str> {
        let key_columns = match &self.mode {
            WriteMode::Insert => None,
            WriteMode::Upsert { key_columns } => Some(key_columns.as_slice()),
        };
        insert_statement(&self.table, &self.columns, key_columns, rows).into()
    }
}

/// `name` as a quoted SQL identifier; a dotted name is quoted part by part
/// (`schema.table` -> `"schema"."table"`).
fn quote_identifier(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// `text` as a SQL string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The multi-row `INSERT` of `rows` rows, an upsert on `key_columns` when given.
fn insert_statement(
    table: &str,
    columns: &[String],
    key_columns: Option<&[String]>,
    rows: usize,
) -> String {
    use std::fmt::Write as _;
    let width = columns.len();
    let column_list: Vec<String> = columns.iter().map(|c| quote_identifier(c)).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        quote_identifier(table),
        column_list.join(", ")
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..width {
            if column > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", row * width + column + 1);
        }
        sql.push(')');
    }
    if let Some(keys) = key_columns {
        let keys_quoted: Vec<String> = keys.iter().map(|c| quote_identifier(c)).collect();
        let updates: Vec<String> = columns
            .iter()
            .filter(|c| !keys.contains(c))
            .map(|c| {
                let q = quote_identifier(c);
                format!("{q} = EXCLUDED.{q}")
            })
            .collect();
        let _ = write!(sql, " ON CONFLICT ({})", keys_quoted.join(", "));
        if updates.is_empty() {
            sql.push_str(" DO NOTHING");
        } else {
            let _ = write!(sql, " DO UPDATE SET {}", updates.join(", "));
        }
    }
    sql
}

/// `postgres://host:port/db` of a configuration (no user, no password).
fn server_name(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("postgres://{host}:{port}/{db}")
}

impl<T> Clone for PostgresSink<T> {
    fn clone(&self) -> Self {
        Self {
            settings: Arc::clone(&self.settings),
            to_row: Arc::clone(&self.to_row),
            io: None,
            naming: None,
            buffer: Vec::new(),
            key_index: FxHashMap::default(),
            server_transaction_open: false,
            prepared_uncommitted: 0,
        }
    }
}

impl<T> fmt::Debug for PostgresSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSink")
            .field("table", &self.settings.table)
            .field("columns", &self.settings.columns)
            .field("mode", &self.settings.mode)
            .field("guarantee", &self.settings.guarantee)
            .finish()
    }
}

crate::api::operator::impl_plain_operator!(PostgresSink<T>; T);

impl<T: Send + 'static> TwoPhaseCommitSink<T> for PostgresSink<T> {
    type Txn = PostgresTransaction;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.connect()?;
        if self.is_exactly_once() {
            self.roll_back_strays(ctx.subtask_index, ctx.parallelism)?;
            self.naming = Some(Naming {
                stem: format!(
                    "{}-{}-{}-{}",
                    self.settings.transaction_id_prefix,
                    ctx.subtask_index,
                    ctx.job_id,
                    ctx.attempt_number
                ),
                next_seq: 0,
            });
        }
        Ok(())
    }

    fn begin_transaction(&mut self) -> Result<PostgresTransaction, FunctionError> {
        let gid = match &mut self.naming {
            Some(naming) => {
                naming.next_seq += 1;
                format!("{}-{}", naming.stem, naming.next_seq)
            }
            None => String::new(),
        };
        Ok(PostgresTransaction {
            gid,
            records: 0,
            prepared: false,
        })
    }

    fn invoke(
        &mut self,
        txn: &mut PostgresTransaction,
        value: T,
        _ctx: &SinkContext,
    ) -> Result<(), FunctionError> {
        let row = (self.to_row)(&value);
        self.buffer_row(row)?;
        txn.records += 1;
        if self.should_flush() {
            self.flush()?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, txn: &mut PostgresTransaction) -> Result<(), FunctionError> {
        self.flush()?;
        if self.is_exactly_once() && self.server_transaction_open {
            let gid = txn.gid.clone();
            self.connect()?.call(PgRequest::Prepare { gid })?;
            self.server_transaction_open = false;
            txn.prepared = true;
            self.prepared_uncommitted += 1;
        } else if let Some(io) = &mut self.io {
            io.drain()?;
        }
        Ok(())
    }

    fn commit(&mut self, txn: PostgresTransaction) -> Result<(), FunctionError> {
        if txn.prepared {
            self.connect()?
                .call(PgRequest::CommitPrepared { gid: txn.gid })?;
            self.prepared_uncommitted = self.prepared_uncommitted.saturating_sub(1);
            if self.should_flush() {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn abort(&mut self, txn: PostgresTransaction) -> Result<(), FunctionError> {
        if txn.prepared {
            self.connect()?
                .call(PgRequest::RollbackPrepared { gid: txn.gid })?;
            self.prepared_uncommitted = self.prepared_uncommitted.saturating_sub(1);
        } else {
            // The open transaction: its rows are dropped (replayed, or not part of the result).
            self.buffer.clear();
            self.key_index.clear();
            if self.server_transaction_open {
                self.connect()?.call(PgRequest::Rollback)?;
                self.server_transaction_open = false;
            }
        }
        Ok(())
    }

    fn recover_and_commit(&mut self, txn: PostgresTransaction) -> Result<(), FunctionError> {
        if self.is_exactly_once() && txn.records > 0 {
            self.connect()?
                .call(PgRequest::CommitPrepared { gid: txn.gid })?;
        }
        Ok(())
    }

    fn recover_and_abort(&mut self, txn: PostgresTransaction) -> Result<(), FunctionError> {
        // It may have been prepared after the checkpoint stored it as open.
        if self.is_exactly_once() && !txn.gid.is_empty() {
            self.connect()?
                .call(PgRequest::RollbackPrepared { gid: txn.gid })?;
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

/// What the I/O thread needs to connect.
#[derive(Debug)]
struct PgConfig {
    config: tokio_postgres::Config,
    server: String,
    retry: RetryPolicy,
    timeout: Duration,
}

/// The work of the I/O thread.
#[derive(Debug)]
enum PgRequest {
    /// A batch, in the open transaction in exactly-once mode (`begin`: open it first), else
    /// on its own.
    Write {
        statement: Arc<str>,
        params: Vec<SqlValue>,
        begin: bool,
    },
    /// `PREPARE TRANSACTION` of the data connection's open transaction.
    Prepare { gid: String },
    /// `ROLLBACK` of the data connection's open transaction.
    Rollback,
    /// `COMMIT PREPARED`; a transaction that is not prepared (any more) counts as committed.
    CommitPrepared { gid: String },
    /// `ROLLBACK PREPARED`; a transaction that is not prepared (any more) is ignored.
    RollbackPrepared { gid: String },
    /// The gids of the transactions prepared in this database.
    ListPrepared,
}

/// The I/O thread's answers.
enum PgReply {
    Done,
    Gids(Vec<String>),
}

/// The two connections of a sink: data (batches, its transaction) and control (commits).
struct PgConnection {
    config: PgConfig,
    data: Client,
    control: Option<Client>,
    /// Prepared statements of the data connection, by text (a handful: full and partial
    /// batches); cleared when it grows past `STATEMENTS_MAX` or the connection is replaced.
    statements: FxHashMap<Arc<str>, Statement>,
    /// Whether the data connection is inside a transaction.
    in_transaction: bool,
}

/// Prepared statements kept per connection.
const STATEMENTS_MAX: usize = 16;

impl PgConnection {
    /// Connects once, with the request timeout; the connection's driver runs on this thread's
    /// runtime. The error says whether a retry may help.
    async fn connect_once(config: &PgConfig) -> Result<Client, (bool, String)> {
        let connect = config.config.connect(NoTls);
        let (client, connection) = match tokio::time::timeout(config.timeout, connect).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => return Err((is_connection_error(&error), describe(&error))),
            Err(_) => {
                let waited = config.timeout.as_millis();
                return Err((true, format!("no connection within {waited} ms")));
            }
        };
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// Connects, retrying with backoff.
    async fn connect_retrying(config: &PgConfig) -> Result<Client, ConnectorError> {
        let mut retry = 0;
        loop {
            match Self::connect_once(config).await {
                Ok(client) => return Ok(client),
                Err((true, error)) if retry < config.retry.retries_max => {
                    tracing::warn!(server = %config.server, %error, retry, "connecting to PostgreSQL failed, retrying");
                    tokio::time::sleep(Duration::from_millis(config.retry.backoff_ms(retry))).await;
                    retry += 1;
                }
                Err((_, error)) => {
                    return Err(ConnectorError::new(
                        &config.server,
                        "connect",
                        format!("{error} (after {retry} retries)"),
                    ));
                }
            }
        }
    }

    fn fail(&self, operation: &str, error: &tokio_postgres::Error) -> ConnectorError {
        ConnectorError::new(&self.config.server, operation, describe(error))
    }

    /// Runs a batch on the data connection.
    async fn write(
        &mut self,
        statement: &Arc<str>,
        params: &[SqlValue],
    ) -> Result<u64, tokio_postgres::Error> {
        let prepared = match self.statements.get(statement) {
            Some(prepared) => prepared.clone(),
            None => {
                let prepared = self.data.prepare(statement).await?;
                if self.statements.len() >= STATEMENTS_MAX {
                    self.statements.clear();
                }
                self.statements
                    .insert(Arc::clone(statement), prepared.clone());
                prepared
            }
        };
        let params = params.iter().map(|v| v as &(dyn ToSql + Sync));
        self.data.execute_raw(&prepared, params).await
    }

    /// Replaces a lost data connection.
    async fn reconnect_data(&mut self) -> Result<(), ConnectorError> {
        self.data = Self::connect_retrying(&self.config).await?;
        self.statements.clear();
        self.in_transaction = false;
        Ok(())
    }

    /// Runs `statement` on the control connection, reconnecting and retrying on connection
    /// loss; `tolerate` lists SQL states that count as success.
    async fn control(
        &mut self,
        statement: &str,
        tolerate: &[SqlState],
    ) -> Result<Vec<String>, ConnectorError> {
        let mut retry = 0;
        loop {
            if self.control.as_ref().is_none_or(Client::is_closed) {
                self.control = Some(Self::connect_retrying(&self.config).await?);
            }
            let client = self.control.as_ref().expect("connected just above");
            let run =
                tokio::time::timeout(self.config.timeout, client.simple_query(statement)).await;
            let error = match run {
                Ok(Ok(messages)) => {
                    return Ok(messages
                        .into_iter()
                        .filter_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(row) => {
                                row.get(0).map(str::to_string)
                            }
                            _ => None,
                        })
                        .collect());
                }
                Ok(Err(error)) => error,
                Err(_) => {
                    self.control = None;
                    return Err(ConnectorError::new(
                        &self.config.server,
                        statement,
                        format!("no answer within {} ms", self.config.timeout.as_millis()),
                    ));
                }
            };
            if error.code().is_some_and(|code| tolerate.contains(code)) {
                return Ok(Vec::new());
            }
            if retry < self.config.retry.retries_max && is_connection_error(&error) {
                tracing::warn!(server = %self.config.server, %error, retry, statement, "PostgreSQL connection lost, retrying");
                self.control = None;
                tokio::time::sleep(Duration::from_millis(self.config.retry.backoff_ms(retry)))
                    .await;
                retry += 1;
                continue;
            }
            return Err(ConnectorError::new(
                &self.config.server,
                statement,
                format!("{} (after {retry} retries)", describe(&error)),
            ));
        }
    }
}

impl Connection for PgConnection {
    type Config = PgConfig;
    type Request = PgRequest;
    type Reply = PgReply;

    async fn connect(config: PgConfig) -> Result<Self, ConnectorError> {
        let data = Self::connect_retrying(&config).await?;
        Ok(Self {
            config,
            data,
            control: None,
            statements: FxHashMap::default(),
            in_transaction: false,
        })
    }

    async fn handle(&mut self, request: PgRequest) -> Result<PgReply, ConnectorError> {
        let timeout = self.config.timeout;
        match request {
            PgRequest::Write {
                statement,
                params,
                begin,
            } => {
                if begin {
                    if self.data.is_closed() {
                        self.reconnect_data().await?;
                    }
                    let run = tokio::time::timeout(timeout, self.data.batch_execute("BEGIN")).await;
                    match run {
                        Ok(Ok(())) => self.in_transaction = true,
                        Ok(Err(error)) => return Err(self.fail("BEGIN", &error)),
                        Err(_) => {
                            return Err(ConnectorError::new(
                                &self.config.server,
                                "BEGIN",
                                "timed out",
                            ));
                        }
                    }
                }
                let mut retry = 0;
                loop {
                    let run = tokio::time::timeout(timeout, self.write(&statement, &params)).await;
                    let error = match run {
                        Ok(Ok(_)) => return Ok(PgReply::Done),
                        Ok(Err(error)) => error,
                        Err(_) => {
                            return Err(ConnectorError::new(
                                &self.config.server,
                                &*statement,
                                format!("no answer within {} ms", timeout.as_millis()),
                            ));
                        }
                    };
                    // A batch of its own is idempotent to repeat only if it is an upsert or
                    // never reached the table; a lost connection means it did not commit.
                    let retriable = !self.in_transaction
                        && is_connection_error(&error)
                        && retry < self.config.retry.retries_max;
                    if !retriable {
                        let context = if self.in_transaction && is_connection_error(&error) {
                            " (the connection was lost inside a transaction: the job restarts \
                             from its last checkpoint)"
                        } else {
                            ""
                        };
                        return Err(ConnectorError::new(
                            &self.config.server,
                            &*statement,
                            format!("{}{context} (after {retry} retries)", describe(&error)),
                        ));
                    }
                    tracing::warn!(server = %self.config.server, %error, retry, "PostgreSQL write failed, reconnecting");
                    tokio::time::sleep(Duration::from_millis(self.config.retry.backoff_ms(retry)))
                        .await;
                    retry += 1;
                    self.reconnect_data().await?;
                }
            }
            PgRequest::Prepare { gid } => {
                let statement = format!("PREPARE TRANSACTION {}", quote_literal(&gid));
                let run = tokio::time::timeout(timeout, self.data.batch_execute(&statement)).await;
                self.in_transaction = false;
                match run {
                    Ok(Ok(())) => Ok(PgReply::Done),
                    Ok(Err(error)) => Err(self.fail(&statement, &error)),
                    Err(_) => Err(ConnectorError::new(
                        &self.config.server,
                        statement,
                        "timed out",
                    )),
                }
            }
            PgRequest::Rollback => {
                self.in_transaction = false;
                if self.data.is_closed() {
                    // The server rolled it back when the connection ended.
                    return Ok(PgReply::Done);
                }
                match tokio::time::timeout(timeout, self.data.batch_execute("ROLLBACK")).await {
                    Ok(Ok(())) => Ok(PgReply::Done),
                    Ok(Err(error)) => Err(self.fail("ROLLBACK", &error)),
                    Err(_) => Err(ConnectorError::new(
                        &self.config.server,
                        "ROLLBACK",
                        "timed out",
                    )),
                }
            }
            PgRequest::CommitPrepared { gid } => {
                let statement = format!("COMMIT PREPARED {}", quote_literal(&gid));
                self.control(&statement, &[SqlState::UNDEFINED_OBJECT])
                    .await?;
                Ok(PgReply::Done)
            }
            PgRequest::RollbackPrepared { gid } => {
                let statement = format!("ROLLBACK PREPARED {}", quote_literal(&gid));
                self.control(&statement, &[SqlState::UNDEFINED_OBJECT])
                    .await?;
                Ok(PgReply::Done)
            }
            PgRequest::ListPrepared => {
                let gids = self
                    .control(
                        "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() \
                         ORDER BY gid",
                        &[],
                    )
                    .await?;
                Ok(PgReply::Gids(gids))
            }
        }
    }
}

/// Whether `error` is a lost or refused connection (worth a retry), not a statement the server
/// rejected.
fn is_connection_error(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception; 57P01-03: admin shutdown, crash shutdown, cannot
            // connect now.
            class == "08" || matches!(code.code(), "57P01" | "57P02" | "57P03")
        }
    }
}

/// The error with its server-side detail, if any.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            if let Some(column) = db.column() {
                text.push_str(&format!("; column {column}"));
            }
            text
        }
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn inserts_number_their_parameters_row_by_row() {
        let sql = insert_statement("t", &strings(&["a", "b"]), None, 2);
        assert_eq!(
            sql,
            r#"INSERT INTO "t" ("a", "b") VALUES ($1, $2), ($3, $4)"#
        );
    }

    #[test]
    fn upserts_update_the_other_columns_or_do_nothing() {
        let sql = insert_statement("s.t", &strings(&["k", "v", "w"]), Some(&strings(&["k"])), 1);
        assert_eq!(
            sql,
            r#"INSERT INTO "s"."t" ("k", "v", "w") VALUES ($1, $2, $3) ON CONFLICT ("k") DO UPDATE SET "v" = EXCLUDED."v", "w" = EXCLUDED."w""#
        );
        let sql = insert_statement("t", &strings(&["k"]), Some(&strings(&["k"])), 1);
        assert!(sql.ends_with(r#"ON CONFLICT ("k") DO NOTHING"#), "{sql}");
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_identifier(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn gids_are_recognised_only_in_the_sinks_own_shape() {
        let job = "0123456789abcdef0123456789abcdef";
        assert_eq!(gid_subtask(&format!("p-3-{job}-0-7"), "p-"), Some(3));
        assert_eq!(
            gid_subtask(&format!("p-1-3-{job}-0-7"), "p-"),
            None,
            "prefix p-1"
        );
        assert_eq!(gid_subtask(&format!("q-3-{job}-0-7"), "p-"), None);
        assert_eq!(gid_subtask("p-3-xyz-0-7", "p-"), None);
        assert_eq!(gid_subtask(&format!("p-3-{job}-0-"), "p-"), None);
    }

    fn sink(mode_upsert: bool) -> PostgresSink<(i64, i64)> {
        let to_row = |(k, v): &(i64, i64)| vec![SqlValue::from(*k), SqlValue::from(*v)];
        if mode_upsert {
            PostgresSink::upsert("host=127.0.0.1", "t", &["k", "v"], &["k"], to_row)
        } else {
            PostgresSink::insert("host=127.0.0.1", "t", &["k", "v"], to_row)
        }
    }

    #[test]
    fn an_upsert_batch_keeps_the_last_row_of_each_key_in_first_seen_order() {
        let mut sink = sink(true);
        for (k, v) in [(1i64, 10i64), (2, 20), (1, 11), (3, 30), (2, 21)] {
            sink.buffer_row(vec![k.into(), v.into()]).unwrap();
        }
        let expected: Vec<SqlValue> = [1i64, 11, 2, 21, 3, 30]
            .into_iter()
            .map(SqlValue::from)
            .collect();
        assert_eq!(sink.buffer, expected);
        let mut inserts = self::sink(false);
        inserts.buffer_row(vec![1i64.into(), 1i64.into()]).unwrap();
        inserts.buffer_row(vec![1i64.into(), 2i64.into()]).unwrap();
        assert_eq!(inserts.buffer.len(), 4, "inserts keep every row");
    }

    #[test]
    fn a_row_of_the_wrong_width_is_an_error_naming_the_table_and_columns() {
        let mut sink = sink(false);
        let error = sink.buffer_row(vec![1i64.into()]).unwrap_err().to_string();
        assert!(
            error.contains("into t") && error.contains("1 values") && error.contains("k, v"),
            "{error}"
        );
        assert!(sink.buffer.is_empty(), "nothing of the row is written");
    }

    #[test]
    fn bad_configurations_are_unrecoverable_and_say_why() {
        let to_row = |_: &i64| Vec::new();
        let bad = PostgresSink::upsert("host=x", "t", &["a"], &["b"], to_row);
        assert!(
            bad.settings
                .validate()
                .unwrap_err()
                .to_string()
                .contains("key column b")
        );
        let bad = PostgresSink::insert("host=x", "t", &["a"], to_row).exactly_once("");
        assert!(
            bad.settings
                .validate()
                .unwrap_err()
                .to_string()
                .contains("prefix")
        );
        let ok = PostgresSink::insert("host=x", "t", &["a"], to_row).batch_rows_max(100_000);
        assert_eq!(ok.settings.rows_per_statement(), 65_535);
    }

    #[test]
    fn exactly_once_holds_batches_back_while_a_prepared_transaction_awaits_its_commit() {
        let mut sink = sink(false).exactly_once("p").batch_rows_max(2);
        sink.buffer_row(vec![1i64.into(), 1i64.into()]).unwrap();
        assert!(!sink.should_flush());
        sink.buffer_row(vec![2i64.into(), 2i64.into()]).unwrap();
        assert!(sink.should_flush());
        sink.prepared_uncommitted = 1;
        assert!(!sink.should_flush(), "held back");
        Arc::get_mut(&mut sink.settings).unwrap().buffer_rows_max = 2;
        assert!(sink.should_flush(), "but never beyond the buffer's bound");
    }

    #[test]
    fn server_names_carry_no_credentials() {
        let config = tokio_postgres::Config::from_str(
            "host=db.example port=6543 user=alice password=secret dbname=shop",
        )
        .unwrap();
        assert_eq!(server_name(&config), "postgres://db.example:6543/shop");
    }
}
