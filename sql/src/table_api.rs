//! The Table API: queries composed with Rust methods instead of SQL text.
//!
//! As in Flink, the Table API and SQL share one planner: every method here composes a SQL
//! query around the table's own (`SELECT .. FROM (<inner>) WHERE ..`) and plans it at once,
//! so a Table API call fails where it is made, with the same errors SQL gets, and runs on the
//! same operators.
//!
//! # Examples
//!
//! ```
//! use eichhorn::StreamEnv;
//! use eichhorn_sql::table_api::{Tumble, col, lit};
//! use eichhorn_sql::{Column, DataType, Schema, TableEnv, Value};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let env = StreamEnv::new();
//! let mut tenv = TableEnv::new(&env);
//! let rows = (0..8).map(|i| vec![Value::String(format!("s{}", i % 2)), Value::BigInt(20 + i * 3)]);
//! tenv.from_data_stream(
//!     "readings",
//!     env.from_collection(rows.collect()),
//!     Schema::new(vec![Column::new("sensor", DataType::String), Column::new("t", DataType::BigInt)]),
//! )?;
//! let hot = tenv
//!     .from("readings")?
//!     .filter(col("t").gt(lit(30)))?
//!     .group_by(&[col("sensor")])
//!     .select(&[col("sensor"), col("t").max().alias("hottest")])?;
//! let changes = tenv.to_changelog_stream(&hot)?.collect_sink();
//! env.execute("table api").await?;
//! let last: Vec<String> = changes.take().iter().map(ToString::to_string).collect();
//! assert!(last.contains(&"+U,s1,41".to_string()), "{last:?}");
//! # let _ = Tumble::over(lit(10).seconds());
//! # Ok(()) }
//! ```

use crate::catalog::CatalogTable;
use crate::env::Table;
use crate::error::SqlError;
pub use crate::parse::quote_ident;
use crate::parse::{Statement, parse_script};
use crate::plan::plan_query;

/// A Table API expression (rendered as SQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiExpr(String);

/// The column `name`.
pub fn col(name: &str) -> ApiExpr {
    ApiExpr(quote_ident(name))
}

/// A literal value.
pub fn lit(value: impl Into<Literal>) -> ApiExpr {
    ApiExpr(value.into().0)
}

/// A literal's SQL text; built from integers, doubles, strings and booleans.
#[derive(Debug, Clone)]
pub struct Literal(String);

impl From<i64> for Literal {
    fn from(v: i64) -> Self {
        Self(v.to_string())
    }
}

impl From<i32> for Literal {
    fn from(v: i32) -> Self {
        Self(v.to_string())
    }
}

impl From<f64> for Literal {
    fn from(v: f64) -> Self {
        Self(crate::types::format_double(v))
    }
}

impl From<bool> for Literal {
    fn from(v: bool) -> Self {
        Self(if v { "TRUE" } else { "FALSE" }.to_string())
    }
}

impl From<&str> for Literal {
    fn from(v: &str) -> Self {
        Self(format!("'{}'", v.replace('\'', "''")))
    }
}

impl ApiExpr {
    fn binary(self, op: &str, other: Self) -> Self {
        Self(format!("({} {op} {})", self.0, other.0))
    }

    fn call(self, function: &str) -> Self {
        Self(format!("{function}({})", self.0))
    }

    /// `self > other`.
    pub fn gt(self, other: Self) -> Self {
        self.binary(">", other)
    }
    /// `self >= other`.
    pub fn ge(self, other: Self) -> Self {
        self.binary(">=", other)
    }
    /// `self < other`.
    pub fn lt(self, other: Self) -> Self {
        self.binary("<", other)
    }
    /// `self <= other`.
    pub fn le(self, other: Self) -> Self {
        self.binary("<=", other)
    }
    /// `self = other`.
    pub fn is_equal(self, other: Self) -> Self {
        self.binary("=", other)
    }
    /// `self <> other`.
    pub fn is_not_equal(self, other: Self) -> Self {
        self.binary("<>", other)
    }
    /// `self AND other`.
    pub fn and(self, other: Self) -> Self {
        self.binary("AND", other)
    }
    /// `self OR other`.
    pub fn or(self, other: Self) -> Self {
        self.binary("OR", other)
    }
    /// `self + other`.
    pub fn plus(self, other: Self) -> Self {
        self.binary("+", other)
    }
    /// `self - other`.
    pub fn minus(self, other: Self) -> Self {
        self.binary("-", other)
    }
    /// `self * other`.
    pub fn times(self, other: Self) -> Self {
        self.binary("*", other)
    }
    /// `self / other`.
    pub fn divided_by(self, other: Self) -> Self {
        self.binary("/", other)
    }
    /// `self IS NULL`.
    pub fn is_null(self) -> Self {
        Self(format!("({} IS NULL)", self.0))
    }
    /// `self AS name`: names a selected column.
    pub fn alias(self, name: &str) -> Self {
        Self(format!("{} AS {}", self.0, quote_ident(name)))
    }
    /// `COUNT(self)`.
    pub fn count(self) -> Self {
        self.call("COUNT")
    }
    /// `COUNT(DISTINCT self)`.
    pub fn count_distinct(self) -> Self {
        Self(format!("COUNT(DISTINCT {})", self.0))
    }
    /// `SUM(self)`.
    pub fn sum(self) -> Self {
        self.call("SUM")
    }
    /// `MIN(self)`.
    pub fn min(self) -> Self {
        self.call("MIN")
    }
    /// `MAX(self)`.
    pub fn max(self) -> Self {
        self.call("MAX")
    }
    /// `AVG(self)`.
    pub fn avg(self) -> Self {
        self.call("AVG")
    }
    /// `self` (a number literal) seconds, as an interval.
    pub fn seconds(self) -> Self {
        Self(format!("INTERVAL '{}' SECOND", self.0))
    }
    /// `self` (a number literal) milliseconds, as an interval.
    pub fn millis(self) -> Self {
        Self(format!("INTERVAL '{}' MILLISECOND", self.0))
    }
    /// The start of the window this alias names (`window_start`).
    pub fn start(self) -> Self {
        Self("window_start".into())
    }
    /// The end of the window this alias names (`window_end`).
    pub fn end(self) -> Self {
        Self("window_end".into())
    }
}

impl std::ops::Not for ApiExpr {
    type Output = Self;
    fn not(self) -> Self {
        Self(format!("(NOT {})", self.0))
    }
}

impl std::fmt::Display for ApiExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn join(exprs: &[ApiExpr]) -> String {
    exprs
        .iter()
        .map(|e| e.0.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Table {
    /// The SQL text of this table's query.
    pub fn to_sql(&self) -> &str {
        &self.sql
    }

    /// Plans `sql` against this table's catalog.
    fn derive(&self, sql: String) -> Result<Self, SqlError> {
        let mut statements = parse_script(&sql)?;
        let Some(Statement::Query(query)) = statements.pop() else {
            return Err(SqlError::validation(None, format!("not a query: {sql}")));
        };
        Ok(Self {
            plan: plan_query(&query, &self.catalog)?,
            sql,
            catalog: self.catalog.clone(),
        })
    }

    /// The rows for which `condition` holds (`WHERE`).
    ///
    /// # Errors
    ///
    /// An unknown column, a condition that is not boolean.
    pub fn filter(&self, condition: ApiExpr) -> Result<Self, SqlError> {
        self.derive(format!("SELECT * FROM ({}) WHERE {condition}", self.sql))
    }

    /// A projection (`SELECT`).
    ///
    /// # Errors
    ///
    /// An unknown column, a type mismatch.
    pub fn select(&self, exprs: &[ApiExpr]) -> Result<Self, SqlError> {
        self.derive(format!("SELECT {} FROM ({})", join(exprs), self.sql))
    }

    /// An inner join with `right` on `condition` (Flink's `join(right).where(condition)`):
    /// every column of both sides, a changelog unless both sides only insert. Columns are
    /// named unqualified, so a name on both sides is ambiguous: rename one side first with
    /// `select(&[col("id").alias("right_id"), ..])`.
    ///
    /// # Errors
    ///
    /// An unknown or ambiguous column, a condition that is not boolean.
    pub fn join(&self, right: &Self, condition: ApiExpr) -> Result<Self, SqlError> {
        self.join_as(right, "JOIN", condition)
    }

    /// A left outer join with `right` on `condition`: every row of this table, padded with
    /// `NULL`s where no right row matches.
    ///
    /// # Errors
    ///
    /// As [`Table::join`].
    pub fn left_outer_join(&self, right: &Self, condition: ApiExpr) -> Result<Self, SqlError> {
        self.join_as(right, "LEFT JOIN", condition)
    }

    /// A right outer join with `right` on `condition`.
    ///
    /// # Errors
    ///
    /// As [`Table::join`].
    pub fn right_outer_join(&self, right: &Self, condition: ApiExpr) -> Result<Self, SqlError> {
        self.join_as(right, "RIGHT JOIN", condition)
    }

    /// A full outer join with `right` on `condition`.
    ///
    /// # Errors
    ///
    /// As [`Table::join`].
    pub fn full_outer_join(&self, right: &Self, condition: ApiExpr) -> Result<Self, SqlError> {
        self.join_as(right, "FULL JOIN", condition)
    }

    fn join_as(&self, right: &Self, kind: &str, condition: ApiExpr) -> Result<Self, SqlError> {
        // The right table's Table API views join this table's catalog.
        let mut table = self.clone();
        for name in right.catalog.names() {
            if table.catalog.get(&name).is_none()
                && let Some(view) = right.catalog.get(&name)
            {
                table.catalog.register(&name, view.clone(), None)?;
            }
        }
        table.derive(format!(
            "SELECT * FROM ({}) {kind} ({}) ON {condition}",
            self.sql, right.sql
        ))
    }

    /// Groups by `keys`; `select` on the result aggregates.
    pub fn group_by(&self, keys: &[ApiExpr]) -> GroupedTable {
        GroupedTable {
            table: self.clone(),
            keys: keys.to_vec(),
        }
    }

    /// Windows the rows; `group_by` on the result (with the window's alias) aggregates per
    /// window.
    ///
    /// # Errors
    ///
    /// The window has no time column (`on`).
    pub fn window(&self, window: Tumble) -> Result<WindowedTable, SqlError> {
        let Some(on) = window.on.clone() else {
            return Err(SqlError::validation(
                None,
                "Tumble::over(..) needs .on(col(\"time column\"))",
            ));
        };
        // A window TVF takes a table name: the query becomes a view of this table's catalog.
        let mut table = self.clone();
        let name = format!("__table_api_{}", table.catalog.names().len());
        let mut statements = parse_script(&self.sql)?;
        let Some(Statement::Query(query)) = statements.pop() else {
            return Err(SqlError::validation(None, "a table without a query"));
        };
        table.catalog.register(
            &name,
            CatalogTable::View {
                schema: self.plan.schema().clone(),
                query,
            },
            None,
        )?;
        Ok(WindowedTable {
            table,
            source: format!(
                "TABLE(TUMBLE(TABLE {name}, DESCRIPTOR({on}), {}))",
                window.size
            ),
            alias: window.alias,
        })
    }
}

/// A table grouped by keys (`Table::group_by`).
#[derive(Debug, Clone)]
pub struct GroupedTable {
    table: Table,
    keys: Vec<ApiExpr>,
}

impl GroupedTable {
    /// The aggregation: keys and aggregates (`col("t").max()`) per group, an updating table.
    ///
    /// # Errors
    ///
    /// A column neither grouped nor aggregated, a type mismatch.
    pub fn select(&self, exprs: &[ApiExpr]) -> Result<Table, SqlError> {
        self.table.derive(format!(
            "SELECT {} FROM ({}) GROUP BY {}",
            join(exprs),
            self.table.sql,
            join(&self.keys)
        ))
    }
}

/// A tumbling window (Flink's `Tumble.over(lit(10).seconds()).on($("ts")).as("w")`).
#[derive(Debug, Clone)]
pub struct Tumble {
    size: ApiExpr,
    on: Option<ApiExpr>,
    alias: Option<String>,
}

impl Tumble {
    /// Windows of `size` (an interval: `lit(10).seconds()`).
    pub fn over(size: ApiExpr) -> Self {
        Self {
            size,
            on: None,
            alias: None,
        }
    }

    /// On the event-time attribute `time`.
    pub fn on(mut self, time: ApiExpr) -> Self {
        self.on = Some(time);
        self
    }

    /// Named `alias`, for `group_by(&[col(alias), ..])` and `col(alias).start()`.
    pub fn alias(mut self, alias: &str) -> Self {
        self.alias = Some(alias.to_string());
        self
    }
}

/// A windowed table (`Table::window`).
#[derive(Debug, Clone)]
pub struct WindowedTable {
    table: Table,
    source: String,
    alias: Option<String>,
}

impl WindowedTable {
    /// Groups by the window (its alias) and `keys`.
    pub fn group_by(&self, keys: &[ApiExpr]) -> WindowGroupedTable {
        let alias = self.alias.as_deref().map(quote_ident);
        let keys = keys
            .iter()
            .filter(|k| Some(&k.0) != alias.as_ref())
            .cloned()
            .collect();
        WindowGroupedTable {
            windowed: self.clone(),
            keys,
        }
    }
}

/// A windowed, grouped table (`WindowedTable::group_by`).
#[derive(Debug, Clone)]
pub struct WindowGroupedTable {
    windowed: WindowedTable,
    keys: Vec<ApiExpr>,
}

impl WindowGroupedTable {
    /// The window aggregation: an append-only table, a row per window and key.
    ///
    /// # Errors
    ///
    /// A column neither grouped nor aggregated, a non-time attribute, a type mismatch.
    pub fn select(&self, exprs: &[ApiExpr]) -> Result<Table, SqlError> {
        let mut group = vec!["window_start".to_string(), "window_end".to_string()];
        group.extend(self.keys.iter().map(|k| k.0.clone()));
        self.windowed.table.derive(format!(
            "SELECT {} FROM {} GROUP BY {}",
            join(exprs),
            self.windowed.source,
            group.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_render_as_sql() {
        let e = col("t")
            .gt(lit(30))
            .and(!col("name").is_equal(lit("o'neil")));
        assert_eq!(
            e.to_string(),
            "((\"t\" > 30) AND (NOT (\"name\" = 'o''neil')))"
        );
        assert_eq!(
            col("p").sum().alias("total").to_string(),
            "SUM(\"p\") AS \"total\""
        );
        assert_eq!(lit(10).seconds().to_string(), "INTERVAL '10' SECOND");
    }
}
