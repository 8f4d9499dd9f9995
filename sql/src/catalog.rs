//! The catalog: tables (with their connectors), views and registered streams, by name.
//!
//! Names are case-insensitive (stored lower case) and kept in a `BTreeMap`, so `SHOW TABLES`
//! lists them in the same order in every run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sqlparser::ast;

use crate::error::{Position, SqlError};
use crate::expr::{self, Expr, SchemaResolver};
use crate::parse::{ColumnKind, TableDef};
use crate::types::{Column, DataType, Schema};

/// The tables, views and streams a session knows.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    tables: BTreeMap<String, CatalogTable>,
}

/// One entry of the catalog.
#[derive(Debug, Clone)]
pub enum CatalogTable {
    /// A table backed by a connector (`CREATE TABLE ... WITH (...)`).
    Connector(ConnectorTable),
    /// A view: a named query, planned where it is used.
    View {
        /// The view's schema (the query's).
        schema: Schema,
        /// The query.
        query: Box<ast::Query>,
    },
    /// A `DataStream` registered through the Table API.
    Stream {
        /// Its schema.
        schema: Schema,
        /// Whether it carries updates (a changelog stream) rather than only inserts.
        updating: bool,
    },
}

impl CatalogTable {
    /// The table's schema.
    pub fn schema(&self) -> &Schema {
        match self {
            Self::Connector(t) => &t.schema,
            Self::View { schema, .. } | Self::Stream { schema, .. } => schema,
        }
    }

    /// What kind of table it is, for `SHOW TABLES` and `DESCRIBE`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connector(_) => "TABLE",
            Self::View { .. } => "VIEW",
            Self::Stream { .. } => "STREAM",
        }
    }
}

impl Catalog {
    /// The entry named `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&CatalogTable> {
        self.tables.get(&name.to_lowercase())
    }

    /// Registers `table` as `name`.
    ///
    /// # Errors
    ///
    /// A table of that name exists.
    pub fn register(
        &mut self,
        name: &str,
        table: CatalogTable,
        position: Option<Position>,
    ) -> Result<(), SqlError> {
        let key = name.to_lowercase();
        if self.tables.contains_key(&key) {
            return Err(SqlError::validation(
                position,
                format!("table '{name}' already exists"),
            ));
        }
        self.tables.insert(key, table);
        Ok(())
    }

    /// The registered names, in order.
    pub fn names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// A table with a connector.
#[derive(Debug, Clone)]
pub struct ConnectorTable {
    /// The table's name, as declared.
    pub name: String,
    /// All columns, physical and computed, in declared order; the watermark column is a time
    /// attribute.
    pub schema: Schema,
    /// The physical columns (read from the connector), in declared order.
    pub physical: Vec<Column>,
    /// For each column of `schema`: where its value comes from.
    pub sources: Vec<ColumnSource>,
    /// The watermark declaration.
    pub watermark: Option<WatermarkSpec>,
    /// The `PRIMARY KEY` columns (indexes into the schema); empty without one.
    pub primary_key: Vec<usize>,
    /// The connector.
    pub connector: Connector,
    /// The `WITH` options as declared.
    pub options: BTreeMap<String, String>,
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnSource {
    /// The physical column at this index.
    Physical(usize),
    /// Computed over the physical row.
    Computed(Expr),
}

/// `WATERMARK FOR column AS column - INTERVAL ...`: bounded out-of-orderness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// The time attribute column (index into the schema).
    pub column: usize,
    /// How far the watermark trails the largest time seen.
    pub delay_ms: i64,
}

/// A table's connector, from its `WITH` options.
#[derive(Debug, Clone, PartialEq)]
pub enum Connector {
    /// `'connector' = 'filesystem'`, `'format' = 'csv'`, `'path' = ...`.
    FileSystem {
        /// The file.
        path: PathBuf,
        /// `'csv.ignore-parse-errors' = 'true'`: malformed rows are reported on stderr and
        /// skipped instead of failing the job.
        ignore_parse_errors: bool,
        /// `'csv.field-delimiter'`, `,` by default.
        field_delimiter: u8,
    },
    /// `'connector' = 'print'`: a sink printing every change.
    Print,
    /// `'connector' = 'blackhole'`: a sink dropping everything.
    Blackhole,
    /// `'connector' = 'datagen'`: generated rows.
    Datagen {
        /// `'number-of-rows'`: how many.
        rows: u64,
    },
}

impl ConnectorTable {
    /// Builds a table from its `CREATE TABLE`: types the computed columns, checks the
    /// watermark and the connector options.
    ///
    /// # Errors
    ///
    /// Duplicate columns, computed columns over unknown columns, a watermark on a column that
    /// is no timestamp or with an unsupported expression, missing or unknown options.
    pub fn from_def(def: &TableDef) -> Result<Self, SqlError> {
        let mut physical = Vec::new();
        for column in &def.columns {
            if let ColumnKind::Physical(data_type) = column.kind {
                physical.push(Column::new(column.name.value.clone(), data_type));
            }
        }
        let physical_schema = Schema::new(physical.clone());
        let mut columns: Vec<Column> = Vec::new();
        let mut sources = Vec::new();
        let mut physical_index = 0;
        for column in &def.columns {
            let name = &column.name.value;
            if columns.iter().any(|c| c.name.eq_ignore_ascii_case(name)) {
                return Err(SqlError::validation(
                    Position::of(column.name.span),
                    format!("duplicate column '{name}' in table '{}'", def.name.value),
                ));
            }
            match &column.kind {
                ColumnKind::Physical(data_type) => {
                    columns.push(Column::new(name.clone(), *data_type));
                    sources.push(ColumnSource::Physical(physical_index));
                    physical_index += 1;
                }
                ColumnKind::Computed(e) => {
                    let mut resolver = SchemaResolver {
                        schema: &physical_schema,
                        qualifiers: Vec::new(),
                    };
                    let typed = expr::compile(e, &mut resolver)?;
                    let data_type = if typed.data_type == DataType::Null {
                        DataType::String
                    } else {
                        typed.data_type
                    };
                    columns.push(Column::new(name.clone(), data_type));
                    sources.push(ColumnSource::Computed(typed.expr));
                }
            }
        }
        let mut schema = Schema::new(columns);
        let watermark = match &def.watermark {
            None => None,
            Some((column, e)) => {
                let Some(index) = schema.index_of(&column.value) else {
                    return Err(SqlError::validation(
                        Position::of(column.span),
                        format!(
                            "the watermark column '{}' is not a column of table '{}'",
                            column.value, def.name.value
                        ),
                    ));
                };
                if !schema.columns[index].data_type.is_timestamp() {
                    return Err(SqlError::validation(
                        Position::of(column.span),
                        format!(
                            "the watermark column '{}' must be TIMESTAMP(3) or TIMESTAMP_LTZ(3), \
                             not {}",
                            column.value, schema.columns[index].data_type
                        ),
                    ));
                }
                let delay_ms = watermark_delay(e, &schema, index)?;
                schema.columns[index].rowtime = true;
                Some(WatermarkSpec {
                    column: index,
                    delay_ms,
                })
            }
        };
        let mut primary_key = Vec::new();
        for column in &def.primary_key {
            let Some(index) = schema.index_of(&column.value) else {
                return Err(SqlError::validation(
                    Position::of(column.span),
                    format!(
                        "the primary key column '{}' is not a column of table '{}'",
                        column.value, def.name.value
                    ),
                ));
            };
            primary_key.push(index);
        }
        let connector = connector_from_options(&def.options, def.position)?;
        if matches!(connector, Connector::Datagen { .. }) {
            for column in &physical {
                if column.data_type == DataType::Boolean {
                    return Err(SqlError::unsupported(
                        def.position,
                        format!("datagen of a BOOLEAN column ('{}')", column.name),
                    ));
                }
            }
        }
        Ok(Self {
            name: def.name.value.clone(),
            schema,
            physical,
            sources,
            watermark,
            primary_key,
            connector,
            options: def.options.clone(),
        })
    }
}

/// The delay of `WATERMARK FOR ts AS <e>`: `ts` (0) or `ts - INTERVAL ...`.
fn watermark_delay(e: &ast::Expr, schema: &Schema, column: usize) -> Result<i64, SqlError> {
    let position = expr::position_of(e);
    let mut resolver = SchemaResolver {
        schema,
        qualifiers: Vec::new(),
    };
    let typed = expr::compile(e, &mut resolver)?;
    let unsupported = || {
        SqlError::unsupported(
            position,
            format!(
                "watermark expression `{e}`: write `{0}` or `{0} - INTERVAL 'n' SECOND`",
                schema.columns[column].name
            ),
        )
    };
    match typed.expr {
        Expr::Column(i) if i == column => Ok(0),
        Expr::Arith(expr::ArithOp::Sub, left, right, _) => match (*left, *right) {
            (Expr::Column(i), Expr::Literal(crate::types::Value::BigInt(ms)))
                if i == column && typed.data_type.is_timestamp() =>
            {
                if ms < 0 {
                    return Err(SqlError::validation(
                        position,
                        "the watermark delay must not be negative",
                    ));
                }
                Ok(ms)
            }
            _ => Err(unsupported()),
        },
        _ => Err(unsupported()),
    }
}

fn connector_from_options(
    options: &BTreeMap<String, String>,
    position: Option<Position>,
) -> Result<Connector, SqlError> {
    let get = |key: &str| options.get(key).map(String::as_str);
    let allowed = |keys: &[&str]| -> Result<(), SqlError> {
        for key in options.keys() {
            if !keys.contains(&key.as_str()) {
                return Err(SqlError::validation(
                    position,
                    format!(
                        "unsupported option '{key}' for connector '{}'; supported: {}",
                        get("connector").unwrap_or(""),
                        keys.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    };
    let Some(connector) = get("connector") else {
        return Err(SqlError::validation(
            position,
            "table needs a 'connector' option: WITH ('connector' = 'filesystem', ...)",
        ));
    };
    match connector {
        "filesystem" => {
            allowed(&[
                "connector",
                "path",
                "format",
                "csv.ignore-parse-errors",
                "csv.field-delimiter",
            ])?;
            let Some(path) = get("path") else {
                return Err(SqlError::validation(
                    position,
                    "the filesystem connector needs a 'path' option",
                ));
            };
            match get("format") {
                Some("csv") => {}
                Some(other) => {
                    return Err(SqlError::unsupported(
                        position,
                        format!("format '{other}' of the filesystem connector: supported is 'csv'"),
                    ));
                }
                None => {
                    return Err(SqlError::validation(
                        position,
                        "the filesystem connector needs a 'format' option ('csv')",
                    ));
                }
            }
            let ignore_parse_errors = match get("csv.ignore-parse-errors") {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(SqlError::validation(
                        position,
                        format!(
                            "'csv.ignore-parse-errors' must be 'true' or 'false', not '{other}'"
                        ),
                    ));
                }
            };
            let field_delimiter = match get("csv.field-delimiter").map(str::as_bytes) {
                None => b',',
                Some([d]) => *d,
                Some(_) => {
                    return Err(SqlError::validation(
                        position,
                        "'csv.field-delimiter' must be one ASCII character",
                    ));
                }
            };
            Ok(Connector::FileSystem {
                path: PathBuf::from(path),
                ignore_parse_errors,
                field_delimiter,
            })
        }
        "print" => {
            allowed(&["connector"])?;
            Ok(Connector::Print)
        }
        "blackhole" => {
            allowed(&["connector"])?;
            Ok(Connector::Blackhole)
        }
        "datagen" => {
            allowed(&["connector", "number-of-rows"])?;
            let rows = match get("number-of-rows") {
                Some(n) => n.parse().map_err(|_| {
                    SqlError::validation(
                        position,
                        format!("'number-of-rows' must be a whole number, not '{n}'"),
                    )
                })?,
                None => {
                    return Err(SqlError::unsupported(
                        position,
                        "an unbounded datagen table: set 'number-of-rows'",
                    ));
                }
            };
            Ok(Connector::Datagen { rows })
        }
        other => Err(SqlError::unsupported(
            position,
            format!(
                "connector '{other}': supported are 'filesystem', 'datagen', 'print' and 'blackhole'"
            ),
        )),
    }
}
