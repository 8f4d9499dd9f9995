//! Flink-style SQL on Eichhorn streams.
//!
//! `eichhorn-sql` parses SQL in Flink's dialect (with `sqlparser`), plans it onto Eichhorn's own
//! operators, keyed state, timers and checkpoints, and runs it as an ordinary Eichhorn job: a
//! SQL job is exactly-once and restorable like any other. It is a crate of its own so that the
//! core framework does not compile a SQL parser for users who never write SQL.
//!
//! - [`TableEnv`]: the session: `execute_sql` (DDL, queries, `INSERT INTO`, `EXPLAIN`,
//!   `SHOW TABLES`, `DESCRIBE`), `sql_query`, `from_data_stream`, `to_changelog_stream`.
//! - Dynamic tables are changelogs: every stream carries [`Change`]s, a row with its
//!   [`RowKind`] (`+I`, `-U`, `+U`, `-D`). A group aggregation updates its result; a window
//!   aggregation appends when the watermark passes a window's end.
//! - Joins ([`join`]): regular joins as a changelog (state bounded by
//!   `SET 'table.exec.state.ttl'`) and interval joins; Top-N and deduplication ([`rank`]);
//!   `OVER` aggregations ([`over`]); temporal joins against versioned tables, window joins
//!   and outer interval joins ([`time_joins`]); cascaded window aggregations and interval
//!   joins with window rows ([`window_plans`]).
//! - Errors name the line and column of the SQL text ([`SqlError`]).
//!
//! ## Layers
//!
//! [`parse`] (statements) -> [`catalog`] (tables) -> [`plan`] (logical operators over compiled
//! [`expr`]essions) -> `exec` (Eichhorn operators). The pure cores ([`expr`], [`agg`],
//! [`window`], [`join`], [`rank`], [`over`], [`types`]) are tested on their own.

pub mod agg;
pub mod catalog;
pub mod dialect;
mod env;
pub mod error;
mod exec;
pub mod expr;
pub mod join;
pub mod match_recognize;
mod optimize;
pub mod over;
pub mod parse;
pub mod plan;
pub mod rank;
pub mod sort;
pub mod table_api;
pub mod time_joins;
pub mod types;
pub mod window;
pub mod window_plans;

pub use env::{Table, TableEnv, TableResult};
pub use error::{Position, SqlError};
pub use types::{Change, Column, DataType, Row, RowKind, Schema, Value};
