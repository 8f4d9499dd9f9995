//! SQL data types, values, rows and changes: what flows through a SQL job.
//!
//! A row is a `Vec<Value>` in the column order of its schema. Every stream of a SQL job carries
//! [`Change`]s: a row with its [`RowKind`], as Flink's `RowData` does, so one operator can pass on
//! inserts of an append-only input and the updates of an updating one alike.
//!
//! ## Invariants
//!
//! - `Value` has a total order (doubles by `f64::total_cmp`, `NULL` first) and a stable hash, so
//!   rows can be keys of keyed state and of `BTreeMap`s, identically in every run.
//! - Timestamps are milliseconds since the epoch, in UTC (the session time zone is UTC).

use std::cmp::Ordering;
use std::fmt;

use eichhorn::{StableHash, StableHasher};
use serde::{Deserialize, Serialize};

/// A SQL data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DataType {
    /// `BOOLEAN`.
    Boolean,
    /// `BIGINT` (also `INT`, `INTEGER`, `SMALLINT`, `TINYINT`: all 64-bit here).
    BigInt,
    /// `DOUBLE` (also `FLOAT`, `REAL`, `DECIMAL`: binary floating point here).
    Double,
    /// `STRING` (`VARCHAR`, `CHAR`).
    String,
    /// `TIMESTAMP(3)`: a date and time without time zone, milliseconds.
    Timestamp,
    /// `TIMESTAMP_LTZ(3)`: an instant, milliseconds since the epoch, shown in the session time
    /// zone (UTC).
    TimestampLtz,
    /// A day-time interval (`INTERVAL '5' SECOND`), in milliseconds.
    Interval,
    /// The type of a bare `NULL` literal, before it meets a typed context.
    Null,
}

impl DataType {
    /// Whether values of this type are numbers (`BIGINT`, `DOUBLE`).
    pub fn is_numeric(self) -> bool {
        matches!(self, Self::BigInt | Self::Double | Self::Null)
    }

    /// Whether values of this type are timestamps.
    pub fn is_timestamp(self) -> bool {
        matches!(self, Self::Timestamp | Self::TimestampLtz)
    }

    /// The common type of two operands (`BIGINT` and `DOUBLE` give `DOUBLE`), if there is one.
    pub fn common(self, other: Self) -> Option<Self> {
        match (self, other) {
            (a, b) if a == b => Some(a),
            (Self::Null, b) => Some(b),
            (a, Self::Null) => Some(a),
            (Self::BigInt, Self::Double) | (Self::Double, Self::BigInt) => Some(Self::Double),
            (Self::Timestamp, Self::TimestampLtz) | (Self::TimestampLtz, Self::Timestamp) => {
                Some(Self::TimestampLtz)
            }
            _ => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Boolean => "BOOLEAN",
            Self::BigInt => "BIGINT",
            Self::Double => "DOUBLE",
            Self::String => "STRING",
            Self::Timestamp => "TIMESTAMP(3)",
            Self::TimestampLtz => "TIMESTAMP_LTZ(3)",
            Self::Interval => "INTERVAL",
            Self::Null => "NULL",
        })
    }
}

/// One SQL value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A `BOOLEAN`.
    Boolean(bool),
    /// A `BIGINT`.
    BigInt(i64),
    /// A `DOUBLE`.
    Double(f64),
    /// A `STRING`.
    String(String),
    /// A `TIMESTAMP(3)`, milliseconds since the epoch read as UTC wall-clock time.
    Timestamp(i64),
    /// A `TIMESTAMP_LTZ(3)`, milliseconds since the epoch.
    TimestampLtz(i64),
}

impl Value {
    /// Whether this is `NULL`.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The value as a number of milliseconds, for `BIGINT` and timestamps.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::BigInt(v) | Self::Timestamp(v) | Self::TimestampLtz(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as a double, for `BIGINT` and `DOUBLE`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::BigInt(v) => Some(*v as f64),
            Self::Double(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as a boolean (`NULL` is `None`).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The rank of the variant, ordering values of different types.
    fn rank(&self) -> u8 {
        match self {
            Self::Null => 0,
            Self::Boolean(_) => 1,
            Self::BigInt(_) => 2,
            Self::Double(_) => 3,
            Self::String(_) => 4,
            Self::Timestamp(_) => 5,
            Self::TimestampLtz(_) => 6,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Boolean(a), Self::Boolean(b)) => a.cmp(b),
            (Self::BigInt(a), Self::BigInt(b))
            | (Self::Timestamp(a), Self::Timestamp(b))
            | (Self::TimestampLtz(a), Self::TimestampLtz(b)) => a.cmp(b),
            (Self::Double(a), Self::Double(b)) => a.total_cmp(b),
            (Self::String(a), Self::String(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Self::Null => {}
            Self::Boolean(b) => b.hash(state),
            Self::BigInt(v) | Self::Timestamp(v) | Self::TimestampLtz(v) => v.hash(state),
            Self::Double(v) => v.to_bits().hash(state),
            Self::String(s) => s.hash(state),
        }
    }
}

impl StableHash for Value {
    fn stable_hash(&self, state: &mut StableHasher) {
        state.write_u64(u64::from(self.rank()));
        match self {
            Self::Null => {}
            Self::Boolean(b) => state.write_u64(u64::from(*b)),
            Self::BigInt(v) | Self::Timestamp(v) | Self::TimestampLtz(v) => {
                state.write_u64(*v as u64);
            }
            Self::Double(v) => state.write_u64(v.to_bits()),
            Self::String(s) => state.write_bytes(s.as_bytes()),
        }
    }
}

impl fmt::Display for Value {
    /// The SQL client's text form: integers as integers, doubles always with a decimal point,
    /// strings as they are, timestamps as `YYYY-MM-DD HH:MM:SS.mmm` (UTC), `NULL` as `<NULL>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("<NULL>"),
            Self::Boolean(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            Self::BigInt(v) => write!(f, "{v}"),
            Self::Double(v) => f.write_str(&format_double(*v)),
            Self::String(s) => f.write_str(s),
            Self::Timestamp(ms) | Self::TimestampLtz(ms) => f.write_str(&format_timestamp(*ms)),
        }
    }
}

/// A double as a decimal number: `3.0`, `0.25`, `-1.5`, `NaN`, `Infinity` (never an exponent).
pub fn format_double(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    let text = format!("{v}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` in UTC. Instants outside chrono's
/// range (about +-262,000 years) print as their milliseconds.
pub fn format_timestamp(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        None => format!("{ms}ms"),
    }
}

/// A row: values in schema order.
pub type Row = Vec<Value>;

/// What a change does to a dynamic table (Flink's `RowKind`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, StableHash,
)]
pub enum RowKind {
    /// `+I`: a new row.
    Insert,
    /// `-U`: the old content of an updated row (retracted).
    UpdateBefore,
    /// `+U`: the new content of an updated row.
    UpdateAfter,
    /// `-D`: a deleted row.
    Delete,
}

impl RowKind {
    /// Whether the change adds its row (`+I`, `+U`) rather than retracting it (`-U`, `-D`).
    pub fn is_accumulate(self) -> bool {
        matches!(self, Self::Insert | Self::UpdateAfter)
    }

    /// Flink's short form: `+I`, `-U`, `+U`, `-D`.
    pub fn short(self) -> &'static str {
        match self {
            Self::Insert => "+I",
            Self::UpdateBefore => "-U",
            Self::UpdateAfter => "+U",
            Self::Delete => "-D",
        }
    }
}

/// A row with its kind: the element of every SQL stream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Change {
    /// What the change does.
    pub kind: RowKind,
    /// The row.
    pub row: Row,
}

impl Change {
    /// An insertion of `row`.
    pub fn insert(row: Row) -> Self {
        Self {
            kind: RowKind::Insert,
            row,
        }
    }
}

impl fmt::Display for Change {
    /// The changelog line: `+I,a,1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.short())?;
        for value in &self.row {
            write!(f, ",{value}")?;
        }
        Ok(())
    }
}

/// A column of a schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column's name, as declared (matched case-insensitively).
    pub name: String,
    /// Its type.
    pub data_type: DataType,
    /// Whether it is an event-time attribute (a `WATERMARK FOR` column, or a window's
    /// `window_time`), usable as the time column of a window TVF.
    pub rowtime: bool,
}

impl Column {
    /// A column that is not a time attribute.
    pub fn new(name: impl Into<String>, data_type: DataType) -> Self {
        Self {
            name: name.into(),
            data_type,
            rowtime: false,
        }
    }
}

/// The columns of a table or of a query's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// The columns, in order.
    pub columns: Vec<Column>,
}

impl Schema {
    /// A schema of `columns`.
    pub fn new(columns: Vec<Column>) -> Self {
        Self { columns }
    }

    /// The index of the column named `name` (case-insensitive), if any.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The column names, in order.
    pub fn names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }
}

/// Applies a changelog to a multiset of rows (the final result of a query, as the SQL client's
/// table mode shows it).
///
/// # Errors
///
/// A retraction (`-U`, `-D`) of a row that is not in the table: the changelog is inconsistent.
pub fn materialize(
    changes: impl IntoIterator<Item = Change>,
) -> Result<std::collections::BTreeMap<Row, u64>, String> {
    let mut table = std::collections::BTreeMap::<Row, u64>::new();
    for change in changes {
        if change.kind.is_accumulate() {
            *table.entry(change.row).or_insert(0) += 1;
        } else {
            match table.get_mut(&change.row) {
                Some(count) if *count > 1 => *count -= 1,
                Some(_) => {
                    table.remove(&change.row);
                }
                None => return Err(format!("retraction of a row not in the result: {change}")),
            }
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_print_as_the_sql_client_does() {
        assert_eq!(Value::BigInt(-3).to_string(), "-3");
        assert_eq!(Value::Double(3.0).to_string(), "3.0");
        assert_eq!(Value::Double(0.25).to_string(), "0.25");
        assert_eq!(Value::Double(1e20).to_string(), "100000000000000000000.0");
        assert_eq!(Value::String("a b".into()).to_string(), "a b");
        assert_eq!(
            Value::TimestampLtz(1_700_000_000_123).to_string(),
            "2023-11-14 22:13:20.123"
        );
        assert_eq!(Value::Timestamp(0).to_string(), "1970-01-01 00:00:00.000");
        assert_eq!(Value::Timestamp(-1).to_string(), "1969-12-31 23:59:59.999");
        assert_eq!(Value::Null.to_string(), "<NULL>");
    }

    #[test]
    fn a_changelog_materializes_and_an_unknown_retraction_is_an_error() {
        let row = |v: i64| vec![Value::BigInt(v)];
        let table = materialize(vec![
            Change::insert(row(1)),
            Change::insert(row(2)),
            Change {
                kind: RowKind::UpdateBefore,
                row: row(1),
            },
            Change {
                kind: RowKind::UpdateAfter,
                row: row(3),
            },
        ])
        .expect("consistent");
        assert_eq!(
            table.into_iter().collect::<Vec<_>>(),
            vec![(row(2), 1), (row(3), 1)]
        );
        assert!(
            materialize(vec![Change {
                kind: RowKind::Delete,
                row: row(1)
            }])
            .is_err()
        );
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Boolean),
            any::<i64>().prop_map(Value::BigInt),
            any::<f64>().prop_map(Value::Double),
            ".{0,8}".prop_map(Value::String),
            any::<i64>().prop_map(Value::Timestamp),
        ]
    }

    proptest! {
        #[test]
        fn order_is_total_and_agrees_with_equality_and_hashes(a in value(), b in value()) {
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
            if a == b {
                prop_assert_eq!(a.stable_hash_value(), b.stable_hash_value());
            }
        }

        #[test]
        fn rows_round_trip_through_postcard(row in proptest::collection::vec(value(), 0..6)) {
            let bytes = postcard::to_stdvec(&row).expect("encode");
            let back: Row = postcard::from_bytes(&bytes).expect("decode");
            prop_assert_eq!(back, row);
        }
    }
}
