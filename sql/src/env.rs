//! `TableEnv`: the SQL session over a `StreamEnv` (Flink's `StreamTableEnvironment`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use eichhorn::{DataStream, JobResult, StreamEnv};

use crate::catalog::{Catalog, CatalogTable, Connector, ConnectorTable};
use crate::error::{Position, SqlError};
use crate::exec::{BlackholeSink, PrintSink, Translator};
use crate::parse::{Statement, parse_script};
use crate::plan::{Plan, options_list, plan_query};
use crate::types::{Change, Column, Row, Schema};

/// A SQL session: a catalog of tables and views, and the `StreamEnv` queries run on.
///
/// `execute_sql` runs one statement: DDL changes the catalog, a query runs as a job (on a
/// fresh environment with this one's configuration) and returns its changelog. `sql_query`
/// plans a query without running it; `to_changelog_stream` and `to_data_stream` add it to this
/// environment's job, to combine with DataStream code.
///
/// # Examples
///
/// ```
/// use eichhorn::StreamEnv;
/// use eichhorn_sql::{TableEnv, TableResult};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), eichhorn_sql::SqlError> {
/// # let dir = tempfile::tempdir().expect("tempdir");
/// let path = dir.path().join("bids.csv");
/// std::fs::write(&path, "a,3\nb,4\na,5\n").expect("write");
/// let mut tenv = TableEnv::new(&StreamEnv::new());
/// tenv.execute_sql(&format!(
///     "CREATE TABLE bids (item STRING, price BIGINT) \
///      WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}')",
///     path.display()
/// ))
/// .await?;
/// let result = tenv.execute_sql("SELECT item, SUM(price) AS total FROM bids GROUP BY item").await?;
/// let TableResult::Rows { schema, changes, .. } = result else { panic!("rows") };
/// assert_eq!(schema.names(), vec!["item", "total"]);
/// let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
/// assert_eq!(lines, vec!["+I,a,3", "+I,b,4", "-U,a,3", "+U,a,8"]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TableEnv {
    env: StreamEnv,
    catalog: Catalog,
    streams: BTreeMap<String, DataStream<Change>>,
    /// `table.exec.state.ttl` in milliseconds, when set.
    state_ttl_ms: Option<u64>,
}

/// What a statement returned.
#[derive(Debug)]
pub enum TableResult {
    /// A DDL statement changed the catalog.
    Done,
    /// Text: `EXPLAIN`, `SHOW TABLES`, `DESCRIBE`.
    Text(String),
    /// A query ran: its schema and its changes, in the order they were emitted (per key).
    Rows {
        /// The result's columns.
        schema: Schema,
        /// The changelog.
        changes: Vec<Change>,
        /// The job's metrics.
        job: JobResult,
    },
    /// `INSERT INTO` ran.
    Inserted {
        /// The job's metrics.
        job: JobResult,
    },
}

impl TableResult {
    /// The operators of the statement's job that dropped late rows, with how many: rows whose
    /// event time was at or behind the watermark for every window they belong to (a window
    /// aggregation), or behind the watermark by more than the join interval (an interval
    /// join). Flink drops such rows too; this makes them visible (the SQL client prints one
    /// stderr line per operator). Empty for statements that ran no job.
    pub fn late_rows(&self) -> Vec<(String, u64)> {
        let job = match self {
            Self::Rows { job, .. } | Self::Inserted { job } => job,
            Self::Done | Self::Text(_) => return Vec::new(),
        };
        job.operators
            .iter()
            .filter(|m| m.late_records > 0)
            .map(|m| (m.name.clone(), m.late_records))
            .collect()
    }
}

/// A planned query: `TableEnv::sql_query`'s result.
#[derive(Debug, Clone)]
pub struct Table {
    pub(crate) plan: Plan,
    /// The query's SQL text (the Table API composes new queries around it).
    pub(crate) sql: String,
    /// The catalog it was planned against (with the Table API's own views).
    pub(crate) catalog: Catalog,
}

impl Table {
    /// The result's columns.
    pub fn schema(&self) -> &Schema {
        self.plan.schema()
    }

    /// Whether the result only ever gets inserts.
    pub fn is_append_only(&self) -> bool {
        self.plan.is_append_only()
    }

    /// The operator tree (`EXPLAIN`).
    pub fn explain(&self) -> String {
        crate::optimize::optimize(&self.plan).explain()
    }
}

impl TableEnv {
    /// A session whose queries run with `env`'s configuration and whose Table API streams are
    /// added to `env`.
    pub fn new(env: &StreamEnv) -> Self {
        Self {
            env: env.clone(),
            catalog: Catalog::default(),
            streams: BTreeMap::new(),
            state_ttl_ms: None,
        }
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Registers a stream of rows as table `name` with `schema` (Flink's
    /// `createTemporaryView(name, dataStream, schema)`), an append-only table. Rows must have
    /// the schema's columns, in order.
    ///
    /// # Errors
    ///
    /// A table of that name exists.
    pub fn from_data_stream(
        &mut self,
        name: &str,
        stream: DataStream<Row>,
        schema: Schema,
    ) -> Result<(), SqlError> {
        let changes = stream
            .map(Change::insert)
            .name(&format!("FromDataStream({name})"));
        self.register_stream(name, changes, schema, false)
    }

    /// Registers a changelog stream as table `name` (Flink's `fromChangelogStream`).
    ///
    /// # Errors
    ///
    /// A table of that name exists.
    pub fn from_changelog_stream(
        &mut self,
        name: &str,
        stream: DataStream<Change>,
        schema: Schema,
    ) -> Result<(), SqlError> {
        self.register_stream(name, stream, schema, true)
    }

    fn register_stream(
        &mut self,
        name: &str,
        stream: DataStream<Change>,
        schema: Schema,
        updating: bool,
    ) -> Result<(), SqlError> {
        self.catalog
            .register(name, CatalogTable::Stream { schema, updating }, None)?;
        self.streams.insert(name.to_lowercase(), stream);
        Ok(())
    }

    /// Plans a query (Flink's `sqlQuery`).
    ///
    /// # Errors
    ///
    /// A syntax or validation error, with its position.
    pub fn sql_query(&self, sql: &str) -> Result<Table, SqlError> {
        let mut statements = parse_script(sql)?;
        match (statements.pop(), statements.is_empty()) {
            (Some(Statement::Query(query)), true) => Ok(Table {
                plan: plan_query(&query, &self.catalog)?,
                sql: sql.to_string(),
                catalog: self.catalog.clone(),
            }),
            _ => Err(SqlError::validation(
                None,
                "sql_query takes exactly one query (SELECT ...)",
            )),
        }
    }

    /// The table `name` of the catalog as a Table API table (Flink's `from(path)`).
    ///
    /// # Errors
    ///
    /// No such table.
    pub fn from(&self, name: &str) -> Result<Table, SqlError> {
        self.sql_query(&format!(
            "SELECT * FROM {}",
            crate::parse::quote_ident(name)
        ))
    }

    /// Adds `table`'s operators to this environment's job: its changelog.
    ///
    /// # Errors
    ///
    /// A table it reads cannot be read.
    pub fn to_changelog_stream(&self, table: &Table) -> Result<DataStream<Change>, SqlError> {
        let mut translator = Translator::new(&self.env, &table.catalog, &self.streams)
            .with_state_ttl(self.state_ttl_ms);
        let stream = translator.translate_query(&table.plan)?;
        translator.finish();
        Ok(stream)
    }

    /// Adds `table`'s operators to this environment's job: its rows.
    ///
    /// # Errors
    ///
    /// The table is updating (use [`TableEnv::to_changelog_stream`]).
    pub fn to_data_stream(&self, table: &Table) -> Result<DataStream<Row>, SqlError> {
        if !table.is_append_only() {
            return Err(SqlError::validation(
                None,
                "to_data_stream needs an append-only table, but this query updates its result \
                 (use to_changelog_stream)",
            ));
        }
        Ok(self.to_changelog_stream(table)?.map(|c: Change| c.row))
    }

    /// Runs every statement of a script in order, handing each result to `on_result`.
    ///
    /// # Errors
    ///
    /// The first statement that fails; the statements before it took effect.
    pub async fn execute_script(
        &mut self,
        sql: &str,
        mut on_result: impl FnMut(&TableResult),
    ) -> Result<(), SqlError> {
        for statement in parse_script(sql)? {
            let result = self.execute_statement(statement).await?;
            on_result(&result);
        }
        Ok(())
    }

    /// Runs one statement (Flink's `executeSql`).
    ///
    /// # Errors
    ///
    /// A syntax or validation error with its position, or the job failed.
    pub async fn execute_sql(&mut self, sql: &str) -> Result<TableResult, SqlError> {
        let mut statements = parse_script(sql)?;
        let statement = match (statements.pop(), statements.is_empty()) {
            (Some(statement), true) => statement,
            (None, _) => return Err(SqlError::validation(None, "no statement")),
            (Some(_), false) => {
                return Err(SqlError::validation(
                    None,
                    "execute_sql runs one statement; use execute_script for several",
                ));
            }
        };
        self.execute_statement(statement).await
    }

    /// Runs one parsed statement.
    ///
    /// # Errors
    ///
    /// As [`TableEnv::execute_sql`].
    pub async fn execute_statement(
        &mut self,
        statement: Statement,
    ) -> Result<TableResult, SqlError> {
        match statement {
            Statement::CreateTable(def) => {
                let table = ConnectorTable::from_def(&def)?;
                self.catalog.register(
                    &def.name.value,
                    CatalogTable::Connector(table),
                    Position::of(def.name.span),
                )?;
                Ok(TableResult::Done)
            }
            Statement::CreateView { name, query } => {
                let plan = plan_query(&query, &self.catalog)?;
                self.catalog.register(
                    &name.value,
                    CatalogTable::View {
                        schema: plan.schema().clone(),
                        query,
                    },
                    Position::of(name.span),
                )?;
                Ok(TableResult::Done)
            }
            Statement::Set {
                key,
                value,
                position,
            } => {
                if key != STATE_TTL {
                    return Err(SqlError::unsupported(
                        position,
                        format!("setting '{key}': the one known setting is '{STATE_TTL}'"),
                    ));
                }
                let ttl = parse_duration_ms(&value).map_err(|e| {
                    SqlError::validation(position, format!("'{STATE_TTL}' = '{value}': {e}"))
                })?;
                // Flink's 0 means "never expire".
                self.state_ttl_ms = (ttl > 0).then_some(ttl);
                Ok(TableResult::Done)
            }
            Statement::ShowTables => Ok(TableResult::Text(
                self.catalog
                    .names()
                    .iter()
                    .map(|n| format!("{n}\n"))
                    .collect(),
            )),
            Statement::Describe(name) => {
                let Some(table) = self.catalog.get(&name.value) else {
                    return Err(SqlError::validation(
                        Position::of(name.span),
                        format!("table '{}' not found", name.value),
                    ));
                };
                Ok(TableResult::Text(describe(table)))
            }
            Statement::Explain(inner) => {
                let text = match *inner {
                    Statement::Query(query) => explain(&plan_query(&query, &self.catalog)?),
                    Statement::Insert { table, query } => {
                        let plan = plan_query(&query, &self.catalog)?;
                        self.sink_of(&table, &plan)?;
                        format!("Sink(table=[{}])\n{}", table.value, indent(&explain(&plan)))
                    }
                    _ => {
                        return Err(SqlError::unsupported(None, "EXPLAIN of this statement"));
                    }
                };
                Ok(TableResult::Text(text))
            }
            Statement::Query(query) => {
                let plan = plan_query(&query, &self.catalog)?;
                let env = self.job_env(&plan);
                let translator_streams = &self.streams;
                let mut translator = Translator::new(&env, &self.catalog, translator_streams)
                    .with_state_ttl(self.state_ttl_ms);
                let stream = translator.translate_query(&plan)?;
                translator.finish();
                let sink = stream.collect_sink();
                let job = env.execute("SQL query").await?;
                Ok(TableResult::Rows {
                    schema: plan.schema().clone(),
                    changes: sink.take(),
                    job,
                })
            }
            Statement::Insert { table, query } => {
                let plan = plan_query(&query, &self.catalog)?;
                let connector = self.sink_of(&table, &plan)?;
                let env = self.job_env(&plan);
                let mut translator = Translator::new(&env, &self.catalog, &self.streams)
                    .with_state_ttl(self.state_ttl_ms);
                let stream = translator.translate_query(&plan)?;
                translator.finish();
                match connector {
                    Connector::Print => stream.add_sink(PrintSink::new()),
                    _ => stream.add_sink(BlackholeSink::new()),
                }
                .name(&format!("Sink({})", table.value));
                let job = env.execute(&format!("INSERT INTO {}", table.value)).await?;
                Ok(TableResult::Inserted { job })
            }
        }
    }

    /// The environment a statement's job runs on: a fresh one with this one's configuration,
    /// unless the plan reads streams registered on this one.
    fn job_env(&self, plan: &Plan) -> StreamEnv {
        if reads_streams(plan, &self.streams) {
            self.env.clone()
        } else {
            StreamEnv::with_config(self.env.config())
        }
    }

    /// The connector of sink table `name`, checked against the query's columns.
    fn sink_of(&self, name: &sqlparser::ast::Ident, plan: &Plan) -> Result<Connector, SqlError> {
        let position = Position::of(name.span);
        let Some(CatalogTable::Connector(table)) = self.catalog.get(&name.value) else {
            return Err(SqlError::validation(
                position,
                format!(
                    "sink table '{}' not found (CREATE TABLE it with a sink connector)",
                    name.value
                ),
            ));
        };
        if !matches!(table.connector, Connector::Print | Connector::Blackhole) {
            return Err(SqlError::unsupported(
                position,
                format!(
                    "INSERT INTO '{}': only 'print' and 'blackhole' tables are sinks",
                    name.value
                ),
            ));
        }
        let wanted: Vec<_> = table.schema.columns.iter().map(|c| c.data_type).collect();
        let got: Vec<_> = plan.schema().columns.iter().map(|c| c.data_type).collect();
        if wanted.len() != got.len()
            || wanted
                .iter()
                .zip(&got)
                .any(|(w, g)| w.common(*g) != Some(*w))
        {
            return Err(SqlError::validation(
                position,
                format!(
                    "the query's columns ({}) do not fit the columns of '{}' ({})",
                    describe_columns(&plan.schema().columns),
                    name.value,
                    describe_columns(&table.schema.columns)
                ),
            ));
        }
        Ok(table.connector.clone())
    }
}

/// The setting bounding the state of regular joins.
const STATE_TTL: &str = "table.exec.state.ttl";

/// A duration as Flink writes it: a number and a unit (`ms`, `s`, `min`, `h`, `d`, spelled
/// out or not); a bare number is milliseconds.
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| "expected a duration such as '1 h', '30 min' or '500 ms'".to_string())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        other => return Err(format!("unknown time unit '{other}' (ms, s, min, h or d)")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| "the duration is too long".to_string())
}

fn reads_streams(plan: &Plan, streams: &BTreeMap<String, DataStream<Change>>) -> bool {
    match plan {
        Plan::Scan { table, .. } => streams.contains_key(table),
        Plan::Calc { input, .. }
        | Plan::GroupAgg { input, .. }
        | Plan::WindowAgg { input, .. }
        | Plan::CascadedWindowAgg { input, .. }
        | Plan::WindowTvf { input, .. }
        | Plan::Rank { input, .. }
        | Plan::OverAgg { input, .. }
        | Plan::Sort { input, .. } => reads_streams(input, streams),
        Plan::MatchRecognize(mr) => reads_streams(&mr.input, streams),
        Plan::Join { left, right, .. }
        | Plan::IntervalJoin { left, right, .. }
        | Plan::TemporalJoin { left, right, .. }
        | Plan::WindowJoin { left, right, .. }
        | Plan::WindowIntervalJoin { left, right, .. } => {
            reads_streams(left, streams) || reads_streams(right, streams)
        }
        Plan::Union { inputs, .. } => inputs.iter().any(|i| reads_streams(i, streams)),
    }
}

fn describe_columns(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.data_type))
        .collect::<Vec<_>>()
        .join(", ")
}

fn explain(plan: &Plan) -> String {
    let mut text = String::from("== Optimized Execution Plan ==\n");
    text.push_str(&crate::optimize::optimize(plan).explain());
    let _ = writeln!(
        text,
        "== Result ==\n{}",
        if plan.is_append_only() {
            "append-only (+I)"
        } else {
            "updating (+I, -U, +U, -D)"
        }
    );
    text
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn describe(table: &CatalogTable) -> String {
    let mut text = String::new();
    for column in &table.schema().columns {
        let _ = writeln!(
            text,
            "{},{}{}",
            column.name,
            column.data_type,
            if column.rowtime { " *ROWTIME*" } else { "" }
        );
    }
    if let CatalogTable::Connector(t) = table {
        if let Some(w) = t.watermark {
            let _ = writeln!(
                text,
                "WATERMARK FOR {} AS {} - {} ms",
                t.schema.columns[w.column].name, t.schema.columns[w.column].name, w.delay_ms
            );
        }
        let _ = writeln!(text, "WITH ({})", options_list(&t.options));
    }
    text
}
