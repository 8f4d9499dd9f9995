//! Parsing a SQL script in Flink's dialect into statements.
//!
//! `sqlparser` (generic dialect) parses queries, views, `INSERT`, `EXPLAIN`, `SHOW TABLES` and
//! `DESCRIBE`. Flink's `CREATE TABLE` has two clauses no sqlparser dialect knows, computed
//! columns (`ts AS TO_TIMESTAMP_LTZ(ms, 3)`) and `WATERMARK FOR ts AS <expr>`, so this module
//! drives sqlparser's `Parser` through a `CREATE TABLE` itself, with the parser's own
//! `parse_identifier`, `parse_data_type` and `parse_expr` for the pieces. Flink's
//! `TUMBLE(TABLE t, ...)` is read by dropping the `TABLE` keyword before a table name inside a
//! call's arguments, so `TUMBLE(TABLE t, ...)` and `TUMBLE(t, ...)` mean the same.
//!
//! The dialect is [`FlinkDialect`]: the generic one with `FOR SYSTEM_TIME AS OF` (temporal joins).
//!
//! Positions stay those of the script: every error names the line and column in the whole text.

use std::collections::BTreeMap;

use sqlparser::ast::{self, Ident, ObjectName};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};

use crate::dialect::FlinkDialect;
use crate::error::{Position, SqlError};
use crate::types::DataType;

/// One statement of a script.
#[derive(Debug, Clone)]
pub enum Statement {
    /// `CREATE [TEMPORARY] TABLE`.
    CreateTable(Box<TableDef>),
    /// `CREATE [TEMPORARY] VIEW name AS query`.
    CreateView {
        /// The view's name.
        name: Ident,
        /// Its query.
        query: Box<ast::Query>,
    },
    /// A query (`SELECT ...`).
    Query(Box<ast::Query>),
    /// `INSERT INTO table query`.
    Insert {
        /// The sink table.
        table: Ident,
        /// The query whose result goes into it.
        query: Box<ast::Query>,
    },
    /// `EXPLAIN query` or `EXPLAIN INSERT ...`.
    Explain(Box<Self>),
    /// `SHOW TABLES`.
    ShowTables,
    /// `DESCRIBE table` (`DESC`).
    Describe(Ident),
    /// `SET 'key' = 'value'`: a session setting (`table.exec.state.ttl`).
    Set {
        /// The setting's key.
        key: String,
        /// Its value.
        value: String,
        /// Where the statement starts.
        position: Option<Position>,
    },
}

/// A `CREATE TABLE` statement.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// The table's name.
    pub name: Ident,
    /// Whether it was `CREATE TEMPORARY TABLE`.
    pub temporary: bool,
    /// Its columns, physical and computed, in declared order.
    pub columns: Vec<ColumnDef>,
    /// `WATERMARK FOR column AS expr`.
    pub watermark: Option<(Ident, ast::Expr)>,
    /// `PRIMARY KEY (columns) NOT ENFORCED` (a versioned table's key in temporal joins).
    pub primary_key: Vec<Ident>,
    /// The `WITH (...)` options, keys as written.
    pub options: BTreeMap<String, String>,
    /// Where the statement starts.
    pub position: Option<Position>,
}

/// A column of a `CREATE TABLE`.
#[derive(Debug, Clone)]
pub struct ColumnDef {
    /// Its name.
    pub name: Ident,
    /// Physical (read from the connector) or computed.
    pub kind: ColumnKind,
}

/// Where a column's values come from.
#[derive(Debug, Clone)]
pub enum ColumnKind {
    /// Read from the connector, of this type.
    Physical(DataType),
    /// Computed from the physical columns: `name AS expr`.
    Computed(Box<ast::Expr>),
}

/// Parses a script: statements separated by semicolons.
///
/// # Errors
///
/// A syntax error, with its line and column in `sql`; a data type the SQL layer does not know.
pub fn parse_script(sql: &str) -> Result<Vec<Statement>, SqlError> {
    let dialect = FlinkDialect;
    let tokens = Tokenizer::new(&dialect, sql).tokenize_with_location()?;
    let tokens = drop_table_keyword_in_arguments(tokens);
    let tokens = crate::match_recognize::move_within_clauses(tokens);
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut statements = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token().token == Token::EOF {
            break;
        }
        statements.push(parse_statement(&mut parser).map_err(|e| at_end_if_unplaced(e, sql))?);
        let next = parser.peek_token();
        if next.token != Token::EOF && next.token != Token::SemiColon {
            return parser.expected("';' or the end of the script", next)?;
        }
    }
    Ok(statements)
}

/// An error at the end of the input (sqlparser gives `EOF` no position) points after the
/// last character.
fn at_end_if_unplaced(error: SqlError, sql: &str) -> SqlError {
    match error {
        SqlError::Parse {
            position: None,
            message,
        } if message.contains("EOF") => {
            let trimmed = sql.trim_end();
            let line = trimmed.matches('\n').count() as u64 + 1;
            let last_line = trimmed.rsplit('\n').next().unwrap_or("");
            SqlError::Parse {
                position: Some(Position {
                    line,
                    column: last_line.chars().count() as u64 + 1,
                }),
                message: message.replace("EOF", "the end of the input"),
            }
        }
        other => other,
    }
}

/// Drops `TABLE` where it stands before a name as a call's argument (`TUMBLE(TABLE t, ..)`).
fn drop_table_keyword_in_arguments(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let significant = |t: &TokenWithSpan| !matches!(t.token, Token::Whitespace(_));
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        let is_table = matches!(&token.token, Token::Word(w) if w.keyword == Keyword::TABLE);
        if is_table {
            let previous = out.iter().rev().find(|t| significant(t));
            let next = tokens[i + 1..].iter().find(|t| significant(t));
            let after_open =
                previous.is_some_and(|p| matches!(p.token, Token::LParen | Token::Comma));
            let before_name = next.is_some_and(|n| matches!(n.token, Token::Word(_)));
            if after_open && before_name {
                // Keep the token count's spacing: a space stands where the keyword was.
                out.push(TokenWithSpan::new(
                    Token::Whitespace(Whitespace::Space),
                    token.span,
                ));
                continue;
            }
        }
        out.push(token.clone());
    }
    out
}

fn parse_statement(parser: &mut Parser<'_>) -> Result<Statement, SqlError> {
    let start = parser.peek_token();
    if is_create_table(parser) {
        return parse_create_table(parser);
    }
    if matches!(&start.token, Token::Word(w) if w.keyword == Keyword::SET) {
        // Flink's `SET 'key' = 'value'` (sqlparser's SET wants an identifier).
        parser.next_token();
        let key = parser.parse_literal_string()?;
        parser.expect_token(&Token::Eq)?;
        let value = parser.parse_literal_string()?;
        return Ok(Statement::Set {
            key,
            value,
            position: Position::of(start.span),
        });
    }
    let statement = parser.parse_statement()?;
    let position = Position::of(start.span);
    match statement {
        ast::Statement::Query(query) => Ok(Statement::Query(query)),
        ast::Statement::CreateView { name, query, .. } => Ok(Statement::CreateView {
            name: single_name(&name, position)?,
            query,
        }),
        ast::Statement::Insert(insert) => {
            let table = match &insert.table {
                ast::TableObject::TableName(name) => single_name(name, position)?,
                ast::TableObject::TableFunction(_) => {
                    return Err(SqlError::unsupported(
                        position,
                        "INSERT INTO a table function",
                    ));
                }
            };
            let Some(query) = insert.source else {
                return Err(SqlError::unsupported(
                    position,
                    "INSERT without a query (INSERT INTO t SELECT ...)",
                ));
            };
            Ok(Statement::Insert { table, query })
        }
        ast::Statement::Explain { statement, .. } => {
            let inner = match *statement {
                ast::Statement::Query(query) => Statement::Query(query),
                ast::Statement::Insert(_) => {
                    // Re-parse through the mapping above.
                    let text = statement.to_string();
                    let mut statements = parse_script(&text)?;
                    statements.pop().ok_or_else(|| {
                        SqlError::unsupported(position, "EXPLAIN of an empty statement")
                    })?
                }
                other => {
                    return Err(SqlError::unsupported(
                        position,
                        format!("EXPLAIN of `{other}`: only queries and INSERT INTO"),
                    ));
                }
            };
            Ok(Statement::Explain(Box::new(inner)))
        }
        ast::Statement::ExplainTable { table_name, .. } => {
            Ok(Statement::Describe(single_name(&table_name, position)?))
        }
        ast::Statement::ShowTables { .. } => Ok(Statement::ShowTables),
        other => Err(SqlError::unsupported(
            position,
            format!(
                "statement `{}`: supported are CREATE TABLE, CREATE VIEW, SELECT, INSERT INTO, \
                 EXPLAIN, SHOW TABLES, DESCRIBE and SET",
                first_words(&other.to_string())
            ),
        )),
    }
}

fn first_words(text: &str) -> String {
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The one part of `name` (catalogs and databases are not supported).
fn single_name(name: &ObjectName, position: Option<Position>) -> Result<Ident, SqlError> {
    match name.0.as_slice() {
        [part] => part
            .as_ident()
            .cloned()
            .ok_or_else(|| SqlError::unsupported(position, format!("table name `{name}`"))),
        _ => Err(SqlError::unsupported(
            position,
            format!("qualified table name `{name}`: catalogs and databases are not supported"),
        )),
    }
}

fn is_create_table(parser: &Parser<'_>) -> bool {
    let word = |n: usize| match parser.peek_nth_token(n).token {
        Token::Word(w) => Some(w.keyword),
        _ => None,
    };
    word(0) == Some(Keyword::CREATE)
        && (word(1) == Some(Keyword::TABLE)
            || (word(1) == Some(Keyword::TEMPORARY) && word(2) == Some(Keyword::TABLE)))
}

/// Whether the next tokens are `WATERMARK FOR` (`watermark` is no keyword of sqlparser, and a
/// column may be called so).
fn is_watermark_clause(parser: &Parser<'_>) -> bool {
    let watermark = matches!(&parser.peek_token().token,
        Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("WATERMARK"));
    let for_follows = matches!(&parser.peek_nth_token(1).token,
        Token::Word(w) if w.keyword == Keyword::FOR);
    watermark && for_follows
}

/// `CREATE [TEMPORARY] TABLE name ( column, ... [, WATERMARK FOR c AS e] ) [WITH (...)]`.
fn parse_create_table(parser: &mut Parser<'_>) -> Result<Statement, SqlError> {
    let start = parser.expect_keyword(Keyword::CREATE)?;
    let temporary = parser.parse_keyword(Keyword::TEMPORARY);
    parser.expect_keyword(Keyword::TABLE)?;
    let name_token = parser.peek_token();
    let name = parser.parse_object_name(false)?;
    let name = single_name(&name, Position::of(name_token.span))?;
    parser.expect_token(&Token::LParen)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    let mut primary_key = Vec::new();
    loop {
        if is_watermark_clause(parser) {
            parser.next_token();
            parser.expect_keyword(Keyword::FOR)?;
            let column = parser.parse_identifier()?;
            parser.expect_keyword(Keyword::AS)?;
            let expr = parser.parse_expr()?;
            watermark = Some((column, expr));
        } else if parser.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
            // Flink's `PRIMARY KEY (..) NOT ENFORCED`: accepted and not enforced, as in Flink.
            parser.expect_token(&Token::LParen)?;
            primary_key = parser.parse_comma_separated(|p| p.parse_identifier())?;
            parser.expect_token(&Token::RParen)?;
            parser.expect_keywords(&[Keyword::NOT, Keyword::ENFORCED])?;
        } else {
            let column = parser.parse_identifier()?;
            let kind = if parser.parse_keyword(Keyword::AS) {
                ColumnKind::Computed(Box::new(parser.parse_expr()?))
            } else {
                let type_token = parser.peek_token();
                let data_type = parser.parse_data_type()?;
                let data_type = map_data_type(&data_type, Position::of(type_token.span))?;
                // NOT NULL / NULL are accepted; nullability is not tracked.
                if !parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
                    let _ = parser.parse_keyword(Keyword::NULL);
                }
                ColumnKind::Physical(data_type)
            };
            columns.push(ColumnDef { name: column, kind });
        }
        if parser.consume_token(&Token::Comma) {
            continue;
        }
        parser.expect_token(&Token::RParen)?;
        break;
    }
    let mut options = BTreeMap::new();
    if parser.parse_keyword(Keyword::WITH) {
        parser.expect_token(&Token::LParen)?;
        loop {
            let key = parser.parse_literal_string()?;
            parser.expect_token(&Token::Eq)?;
            let value = parser.parse_literal_string()?;
            options.insert(key, value);
            if parser.consume_token(&Token::Comma) {
                continue;
            }
            parser.expect_token(&Token::RParen)?;
            break;
        }
    }
    Ok(Statement::CreateTable(Box::new(TableDef {
        name,
        temporary,
        columns,
        watermark,
        primary_key,
        options,
        position: Position::of(start.span),
    })))
}

/// Maps a parsed SQL type onto the types of the SQL layer.
///
/// # Errors
///
/// A type this layer does not support (`ARRAY`, `MAP`, `BYTES`, ...), naming it.
pub fn map_data_type(
    data_type: &ast::DataType,
    position: Option<Position>,
) -> Result<DataType, SqlError> {
    use ast::DataType as T;
    Ok(match data_type {
        T::String(_)
        | T::Varchar(_)
        | T::Char(_)
        | T::Character(_)
        | T::CharacterVarying(_)
        | T::CharVarying(_)
        | T::Text => DataType::String,
        T::BigInt(_) | T::Int(_) | T::Integer(_) | T::SmallInt(_) | T::TinyInt(_) => {
            DataType::BigInt
        }
        T::Double(_)
        | T::DoublePrecision
        | T::Float(_)
        | T::Real
        | T::Decimal(_)
        | T::Numeric(_)
        | T::Dec(_) => DataType::Double,
        T::Boolean | T::Bool => DataType::Boolean,
        T::Timestamp(_, ast::TimezoneInfo::None | ast::TimezoneInfo::WithoutTimeZone) => {
            DataType::Timestamp
        }
        T::Timestamp(_, _) => DataType::TimestampLtz,
        T::Custom(name, _) if name.to_string().eq_ignore_ascii_case("TIMESTAMP_LTZ") => {
            DataType::TimestampLtz
        }
        other => {
            return Err(SqlError::unsupported(
                position,
                format!(
                    "data type {other}: supported are STRING, BIGINT, DOUBLE, BOOLEAN, \
                     TIMESTAMP(3) and TIMESTAMP_LTZ(3)"
                ),
            ));
        }
    })
}

/// `name` as a SQL identifier, quoted so any name works.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flink_create_table_parses_with_computed_columns_and_a_watermark() {
        let script = "CREATE TABLE bids (\n  item STRING,\n  price DOUBLE,\n  ms BIGINT,\n  \
                      ts AS TO_TIMESTAMP_LTZ(ms, 3),\n  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND\n\
                      ) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = 'b.csv');\n\
                      SELECT item FROM bids;";
        let statements = parse_script(script).expect("parses");
        assert_eq!(statements.len(), 2);
        let Statement::CreateTable(table) = &statements[0] else {
            panic!("a CREATE TABLE: {statements:?}");
        };
        assert_eq!(table.name.value, "bids");
        assert_eq!(table.columns.len(), 4);
        assert!(matches!(
            table.columns[2].kind,
            ColumnKind::Physical(DataType::BigInt)
        ));
        assert!(matches!(table.columns[3].kind, ColumnKind::Computed(_)));
        assert_eq!(
            table.watermark.as_ref().map(|w| w.0.value.as_str()),
            Some("ts")
        );
        assert_eq!(table.options.get("path").map(String::as_str), Some("b.csv"));
        assert!(matches!(statements[1], Statement::Query(_)));
    }

    #[test]
    fn window_tvfs_take_the_table_keyword() {
        let statements = parse_script(
            "SELECT * FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))",
        )
        .expect("parses");
        assert!(matches!(statements[0], Statement::Query(_)));
    }

    #[test]
    fn a_versioned_table_and_for_system_time_as_of_parse() {
        let statements = parse_script(
            "CREATE TABLE rates (c STRING, ts TIMESTAMP(3), PRIMARY KEY (c) NOT ENFORCED);\n\
             SELECT * FROM o JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.c = r.c",
        )
        .expect("parses");
        let Statement::CreateTable(table) = &statements[0] else {
            panic!("a CREATE TABLE: {statements:?}");
        };
        assert_eq!(table.primary_key.len(), 1);
        assert_eq!(table.primary_key[0].value, "c");
        let Statement::Query(query) = &statements[1] else {
            panic!("a query: {statements:?}");
        };
        let ast::SetExpr::Select(select) = query.body.as_ref() else {
            panic!("a select");
        };
        let ast::TableFactor::Table { version, alias, .. } = &select.from[0].joins[0].relation
        else {
            panic!("a table");
        };
        assert_eq!(
            version.as_ref().map(ToString::to_string).as_deref(),
            Some("FOR SYSTEM_TIME AS OF o.ts")
        );
        assert_eq!(alias.as_ref().map(|a| a.name.value.as_str()), Some("r"));
    }

    #[test]
    fn errors_name_line_and_column() {
        let error = parse_script("SELECT a\nFROM t WHERE\n  a >").expect_err("incomplete");
        assert_eq!(
            error.position(),
            Some(Position { line: 3, column: 6 }),
            "{error}"
        );
        let error = parse_script("CREATE TABLE t (a ARRAY<INT>)").expect_err("unsupported");
        assert!(error.to_string().contains("line 1, column 19"), "{error}");
    }
}
