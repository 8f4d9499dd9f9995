//! `MATCH_RECOGNIZE` (row pattern recognition, Flink's dialect) planned onto the CEP library.
//!
//! ```sql
//! SELECT * FROM ticker MATCH_RECOGNIZE (
//!   PARTITION BY symbol ORDER BY ts
//!   MEASURES FIRST(A.ts) AS start_ts, LAST(B.ts) AS bottom_ts, AVG(B.price) AS avg_down
//!   ONE ROW PER MATCH
//!   AFTER MATCH SKIP PAST LAST ROW
//!   PATTERN (A B+ C) WITHIN INTERVAL '1' HOUR
//!   DEFINE B AS B.price < LAST(B.price, 1) OR (LAST(B.price, 1) IS NULL AND B.price < A.price),
//!          C AS C.price > LAST(B.price)
//! ) AS t
//! ```
//!
//! ## Design
//!
//! The clause becomes one [`eichhorn::cep::Pattern`] over the input's changes, applied with
//! [`CEP::pattern`] to the input keyed by the `PARTITION BY` columns (one key for all rows
//! without it), so matching is in event time, its state lives in keyed state, and it
//! checkpoints and restores as the DataStream CEP does. Each pattern variable is a stage (named
//! as the variable), concatenation is `next` (SQL patterns match consecutive rows of a
//! partition), a quantifier is `times`/`times_range`/`one_or_more`/`times_or_more`/`optional`
//! with `consecutive()`, greedy unless it is reluctant (`B+?`), `WITHIN` is `within`, and the
//! four `AFTER MATCH SKIP` options are the four CEP skip strategies (without the clause: `SKIP
//! TO NEXT ROW`, Calcite's default).
//!
//! Expressions in `DEFINE` and `MEASURES` compile with the ordinary expression compiler over a
//! *match row*: the current row's columns, then one *slot* per navigation (`A.price`,
//! `LAST(B.price, 1)`, `FIRST(A.ts)`, `AVG(A.price)`, `MATCH_ROWTIME()`). A slot ([`Nav`]) is
//! computed from the rows mapped to each variable so far, then the compiled expression runs on
//! the match row, so every function, operator and type check of the SQL layer applies
//! unchanged.
//!
//! - In `DEFINE v AS ..`, the current row is the row being tested; it counts as mapped to
//!   `v`: `v.price` and an unqualified `price` are its value, `LAST(v.price, 1)` the row
//!   before it in `v`, `w.price` (another variable) the last row mapped to `w` (`NULL` if
//!   none), aggregates over `v` include the current row.
//! - In `MEASURES`, the rows are the match's; `v.price` is `LAST(v.price)`; an unqualified
//!   column is the match's last row; `FIRST`, `LAST` and aggregates without a variable run
//!   over all rows of the match; `MATCH_ROWTIME()` is the last row's time, a time attribute.
//!
//! ## Invariants
//!
//! - The input is append-only and ordered by an event-time attribute; the output appends one
//!   row per match: the partition columns, then the measures.
//! - A `DEFINE` whose evaluation fails (a division by zero) does not hold for that row, and
//!   the first such failure fails the job: a CEP condition has no output, so it is kept in a
//!   slot shared with the measures function (`DefineFailure`), which sends it to the SQL
//!   error side output at its next match, or fails with it when its input ends. A failing
//!   measure fails the job through the same side output. Both name the row.

use std::sync::{Arc, Mutex, PoisonError};

use eichhorn::cep::{
    AfterMatchSkipStrategy, CEP, Context, Match, Pattern, PatternContext, PatternProcessFunction,
};
use eichhorn::prelude::{Collector, FunctionError, UnrecoverableError};
use eichhorn::{DataStream, OutputTag};
use serde::{Deserialize, Serialize};
use sqlparser::ast::{self, Spanned};
use sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

use crate::agg::{AggCall, AggFunc};
use crate::error::{Position, SqlError};
use crate::expr::{
    Expr, Resolver, Scope, Typed, compile, function_args, position_of, resolve_in_schema,
};
use crate::plan::Plan;
use crate::types::{Change, Column, DataType, Row, Schema, Value};

/// The first `DEFINE` evaluation that failed in a job's pattern (its conditions are shared by
/// the operator's subtasks), until the measures function reports it.
#[derive(Debug, Clone, Default)]
pub(crate) struct DefineFailure(Arc<Mutex<Option<String>>>);

impl DefineFailure {
    fn record(&self, message: impl FnOnce() -> String) {
        // A poisoned lock only means another thread panicked while holding it; the slot is
        // still a plain `Option`.
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(message());
        }
    }

    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The `DEFINE` entry the parser pass puts the `WITHIN` interval in (sqlparser does not know
/// `WITHIN`); its name cannot be a user's variable (it is quoted with a `$`).
const WITHIN_SYMBOL: &str = "$within";

/// The most rows a quantifier may ask for (`{n}`): keeps the automaton's stages bounded.
const QUANTIFIER_MAX: u32 = 10_000;

/// A planned `MATCH_RECOGNIZE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRecognize {
    /// The input (append-only, with an event-time attribute).
    pub input: Box<Plan>,
    /// The `PARTITION BY` columns of the input.
    pub partition: Vec<usize>,
    /// The input's event-time column (the `ORDER BY`).
    pub time_column: usize,
    /// The pattern variables in pattern order.
    pub variables: Vec<Variable>,
    /// `WITHIN`: a match spans less than this much event time.
    pub within_ms: Option<i64>,
    /// `AFTER MATCH SKIP`.
    pub skip: Skip,
    /// The slots the measures read, after the input's columns.
    pub measure_slots: Vec<Nav>,
    /// The measures, over the match row (the last row ++ the measure slots).
    pub measures: Vec<Expr>,
    /// The output: the partition columns, then the measures.
    pub schema: Schema,
}

/// One pattern variable: a CEP stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variable {
    /// Its name as written in `PATTERN` (compared case-insensitively).
    pub name: String,
    /// The fewest rows it takes (0: optional).
    pub min: u32,
    /// The most rows it takes (`None`: unbounded).
    pub max: Option<u32>,
    /// Reluctant (`B+?`): it may stop taking rows while it still could.
    pub reluctant: bool,
    /// Its `DEFINE` over its match row (the row tested ++ `slots`); `None` holds for every row.
    pub condition: Option<Expr>,
    /// The slots its condition reads.
    pub slots: Vec<Nav>,
}

/// `AFTER MATCH SKIP`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Skip {
    /// `PAST LAST ROW`.
    PastLastRow,
    /// `TO NEXT ROW`.
    ToNextRow,
    /// `TO FIRST v`.
    ToFirst(String),
    /// `TO LAST v`.
    ToLast(String),
}

/// A navigation: a value computed from the rows mapped to a variable (or, with `var: None`,
/// to any variable: the whole match so far).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Nav {
    /// `LAST(v.column, offset)`: the `offset`-th row from the last (`v.column`: offset 0).
    Last {
        /// The variable's index.
        var: Option<usize>,
        /// The input column.
        column: usize,
        /// How many rows back.
        offset: usize,
    },
    /// `FIRST(v.column, offset)`: the `offset`-th row from the first.
    First {
        /// The variable's index.
        var: Option<usize>,
        /// The input column.
        column: usize,
        /// How many rows forward.
        offset: usize,
    },
    /// An aggregate over the rows (its argument indexes the input row).
    Agg {
        /// The variable's index.
        var: Option<usize>,
        /// The aggregate.
        call: AggCall,
    },
    /// `MATCH_ROWTIME()`: the time of the match's last row.
    MatchRowtime,
}

impl Nav {
    /// The slot's value, given the rows mapped to each variable (in pattern order).
    pub fn eval(&self, bindings: &[Vec<Row>], time_column: usize) -> Value {
        let rows = |var: &Option<usize>| -> Vec<&Row> {
            match var {
                Some(v) => bindings
                    .get(*v)
                    .map(|r| r.iter().collect())
                    .unwrap_or_default(),
                None => bindings.iter().flatten().collect(),
            }
        };
        let pick = |row: Option<&&Row>, column: usize| {
            row.and_then(|r| r.get(column).cloned())
                .unwrap_or(Value::Null)
        };
        match self {
            Self::Last {
                var,
                column,
                offset,
            } => {
                let rows = rows(var);
                let row = rows.len().checked_sub(offset + 1).and_then(|i| rows.get(i));
                pick(row, *column)
            }
            Self::First {
                var,
                column,
                offset,
            } => pick(rows(var).get(*offset), *column),
            Self::Agg { var, call } => {
                let mut acc = call.create();
                for row in rows(var) {
                    call.accumulate(&mut acc, row, false);
                }
                call.result(&acc)
            }
            Self::MatchRowtime => pick(rows(&None).last(), time_column),
        }
    }
}

/// The match row: `current` followed by the slots' values.
fn match_row(current: &Row, slots: &[Nav], bindings: &[Vec<Row>], time_column: usize) -> Row {
    let mut row = current.clone();
    row.extend(slots.iter().map(|s| s.eval(bindings, time_column)));
    row
}

// ---------------------------------------------------------------------------------------------
// Parsing: WITHIN
// ---------------------------------------------------------------------------------------------

fn is_word(token: &Token, value: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(value))
}

fn significant(token: &TokenWithSpan) -> bool {
    !matches!(token.token, Token::Whitespace(_))
}

/// Moves Flink's `PATTERN (..) WITHIN INTERVAL '..' unit`, which sqlparser does not parse, to
/// a last `DEFINE` entry `"$within" AS INTERVAL '..' unit` (keeping the tokens' positions),
/// where the planner takes it back out. Anything else is left alone.
pub(crate) fn move_within_clauses(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut tokens = tokens;
    let mut search_from = 0;
    while let Some(start) =
        (search_from..tokens.len()).find(|&i| is_word(&tokens[i].token, "MATCH_RECOGNIZE"))
    {
        search_from = start + 1;
        let next = |from: usize, tokens: &[TokenWithSpan]| {
            (from..tokens.len()).find(|&i| significant(&tokens[i]))
        };
        let Some(open) = next(start + 1, &tokens).filter(|&i| tokens[i].token == Token::LParen)
        else {
            continue;
        };
        // The clause's closing parenthesis, and `PATTERN (..)` directly inside it.
        let mut depth = 0usize;
        let mut close = None;
        let mut pattern_end = None;
        for i in open..tokens.len() {
            match tokens[i].token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ => {}
            }
            if depth == 1 && is_word(&tokens[i].token, "PATTERN") && pattern_end.is_none() {
                let mut d = 0usize;
                for (j, t) in tokens.iter().enumerate().skip(i + 1) {
                    match t.token {
                        Token::LParen => d += 1,
                        Token::RParen => {
                            d = d.saturating_sub(1);
                            if d == 0 {
                                pattern_end = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let (Some(close), Some(pattern_end)) = (close, pattern_end) else {
            continue;
        };
        let Some(within) = next(pattern_end + 1, &tokens) else {
            continue;
        };
        if !is_word(&tokens[within].token, "WITHIN") {
            continue;
        }
        // WITHIN INTERVAL 'n' unit: up to the DEFINE keyword (or the clause's end).
        let end = (within + 1..close)
            .find(|&i| is_word(&tokens[i].token, "DEFINE"))
            .unwrap_or(close);
        let moved: Vec<TokenWithSpan> = tokens[within + 1..end].to_vec();
        let within_token = tokens[within].clone();
        let mut insert = vec![
            TokenWithSpan::new(Token::Comma, within_token.span),
            TokenWithSpan::new(
                Token::Word(sqlparser::tokenizer::Word {
                    value: WITHIN_SYMBOL.to_string(),
                    quote_style: Some('"'),
                    keyword: sqlparser::keywords::Keyword::NoKeyword,
                }),
                within_token.span,
            ),
            TokenWithSpan::new(Token::Whitespace(Whitespace::Space), within_token.span),
            TokenWithSpan::new(
                Token::Word(sqlparser::tokenizer::Word {
                    value: "AS".to_string(),
                    quote_style: None,
                    keyword: sqlparser::keywords::Keyword::AS,
                }),
                within_token.span,
            ),
        ];
        insert.extend(moved);
        // Put the entry before the closing parenthesis, then drop the original tokens.
        let tail: Vec<TokenWithSpan> = tokens.split_off(close);
        tokens.extend(insert);
        tokens.extend(tail);
        tokens.drain(within..end);
    }
    tokens
}

// ---------------------------------------------------------------------------------------------
// Planning
// ---------------------------------------------------------------------------------------------

/// The parts of `TableFactor::MatchRecognize` the planner reads.
#[derive(Debug)]
pub(crate) struct Clause<'a> {
    pub(crate) partition_by: &'a [ast::Expr],
    pub(crate) order_by: &'a [ast::OrderByExpr],
    pub(crate) measures: &'a [ast::Measure],
    pub(crate) rows_per_match: Option<&'a ast::RowsPerMatch>,
    pub(crate) after_match_skip: Option<&'a ast::AfterMatchSkip>,
    pub(crate) pattern: &'a ast::MatchRecognizePattern,
    pub(crate) symbols: &'a [ast::SymbolDefinition],
    pub(crate) position: Option<Position>,
}

impl<'a> Clause<'a> {
    /// The clause of `factor`, if it is a `MATCH_RECOGNIZE`, with its input table factor.
    pub(crate) fn of(factor: &'a ast::TableFactor) -> Option<(Self, &'a ast::TableFactor)> {
        let ast::TableFactor::MatchRecognize {
            table,
            partition_by,
            order_by,
            measures,
            rows_per_match,
            after_match_skip,
            pattern,
            symbols,
            ..
        } = factor
        else {
            return None;
        };
        Some((
            Self {
                partition_by,
                order_by,
                measures,
                rows_per_match: rows_per_match.as_ref(),
                after_match_skip: after_match_skip.as_ref(),
                pattern,
                symbols,
                position: Position::of(factor.span()),
            },
            table,
        ))
    }
}

/// Plans a `MATCH_RECOGNIZE` over `input`, whose columns may be qualified by `qualifiers` in
/// `PARTITION BY` and `ORDER BY`.
///
/// # Errors
///
/// What CEP cannot express (alternation, groups, `PERMUTE`, a variable used twice, a greedy
/// quantifier at the end, `ALL ROWS PER MATCH`), a non-time `ORDER BY`, an updating input,
/// unknown variables or columns, type errors: each with its line and column.
pub(crate) fn plan_match_recognize(
    clause: &Clause<'_>,
    input: Plan,
    qualifiers: &[Scope],
) -> Result<MatchRecognize, SqlError> {
    let position = clause.position;
    let schema = input.schema().clone();
    if !input.is_append_only() {
        return Err(SqlError::unsupported(
            position,
            "MATCH_RECOGNIZE over an updating input (a GROUP BY, a regular join): its input must be append-only",
        ));
    }
    if let Some(ast::RowsPerMatch::AllRows(_)) = clause.rows_per_match {
        return Err(SqlError::unsupported(
            position,
            "ALL ROWS PER MATCH; only ONE ROW PER MATCH is supported (as in Flink)",
        ));
    }
    // PARTITION BY and ORDER BY.
    let mut partition = Vec::new();
    for expr in clause.partition_by {
        partition.push(plain_column(expr, &schema, qualifiers, "PARTITION BY")?);
    }
    let time_column = match clause.order_by {
        [one] => {
            let column = plain_column(&one.expr, &schema, qualifiers, "ORDER BY")?;
            if !schema.columns[column].rowtime {
                return Err(SqlError::validation(
                    position_of(&one.expr),
                    format!(
                        "MATCH_RECOGNIZE must be ordered by an event-time attribute; '{}' is none",
                        schema.columns[column].name
                    ),
                ));
            }
            if one.options.asc == Some(false) {
                return Err(SqlError::unsupported(
                    position_of(&one.expr),
                    "ORDER BY .. DESC in MATCH_RECOGNIZE: rows are matched in ascending event time",
                ));
            }
            column
        }
        [] => {
            return Err(SqlError::validation(
                position,
                "MATCH_RECOGNIZE needs ORDER BY an event-time attribute",
            ));
        }
        [_, second, ..] => {
            return Err(SqlError::unsupported(
                position_of(&second.expr).or(position),
                "a second ORDER BY column in MATCH_RECOGNIZE: order by the event-time attribute only",
            ));
        }
    };
    // PATTERN.
    let mut variables = Vec::new();
    flatten_pattern(clause.pattern, position, &mut variables)?;
    for (i, (ident, ..)) in variables.iter().enumerate() {
        if variables[..i]
            .iter()
            .any(|(other, ..)| same_name(&other.value, &ident.value))
        {
            return Err(SqlError::unsupported(
                Position::of(ident.span),
                format!(
                    "pattern variable {} appears twice in PATTERN: CEP stages have unique names; use a second variable with the same DEFINE",
                    ident.value
                ),
            ));
        }
    }
    if let Some((ident, min, max, reluctant)) = variables.last()
        && !reluctant
        && *max != Some(*min)
    {
        return Err(SqlError::unsupported(
            Position::of(ident.span),
            format!(
                "a greedy quantifier on {}, the last pattern variable: a match is reported when its last row arrives, so it cannot wait for the longest one; end the pattern with a variable without quantifier (`A B* C`) or make it reluctant (`{}*?`)",
                ident.value, ident.value
            ),
        ));
    }
    let names: Vec<String> = variables.iter().map(|(i, ..)| i.value.clone()).collect();
    let var_index = |ident: &ast::Ident| names.iter().position(|n| same_name(n, &ident.value));
    // DEFINE (and the WITHIN the parser pass put there).
    let mut within_ms = None;
    let mut conditions: Vec<Option<(Expr, Vec<Nav>)>> = vec![None; names.len()];
    for definition in clause.symbols {
        if definition.symbol.value == WITHIN_SYMBOL && definition.symbol.quote_style == Some('"') {
            within_ms = Some(within_interval(&definition.definition)?);
            continue;
        }
        let Some(v) = var_index(&definition.symbol) else {
            return Err(SqlError::validation(
                Position::of(definition.symbol.span),
                format!(
                    "DEFINE {}: no such variable in PATTERN ({})",
                    definition.symbol.value,
                    names.join(", ")
                ),
            ));
        };
        if conditions[v].is_some() {
            return Err(SqlError::validation(
                Position::of(definition.symbol.span),
                format!("variable {} is defined twice", definition.symbol.value),
            ));
        }
        let mut resolver = MatchResolver {
            schema: &schema,
            names: &names,
            define_of: Some(v),
            slots: Vec::new(),
            slot_types: Vec::new(),
            time_type: schema.columns[time_column].data_type,
        };
        let typed = compile(&definition.definition, &mut resolver)?;
        if !matches!(typed.data_type, DataType::Boolean | DataType::Null) {
            return Err(SqlError::validation(
                position_of(&definition.definition),
                format!(
                    "DEFINE {} must be a BOOLEAN condition, not {}",
                    definition.symbol.value, typed.data_type
                ),
            ));
        }
        conditions[v] = Some((typed.expr, resolver.slots));
    }
    let variables: Vec<Variable> = variables
        .into_iter()
        .zip(conditions)
        .map(|((ident, min, max, reluctant), condition)| {
            let (condition, slots) = match condition {
                Some((e, s)) => (Some(e), s),
                None => (None, Vec::new()),
            };
            Variable {
                name: ident.value,
                min,
                max,
                reluctant,
                condition,
                slots,
            }
        })
        .collect();
    // AFTER MATCH SKIP.
    let skip = match clause.after_match_skip {
        None | Some(ast::AfterMatchSkip::ToNextRow) => Skip::ToNextRow,
        Some(ast::AfterMatchSkip::PastLastRow) => Skip::PastLastRow,
        Some(ast::AfterMatchSkip::ToFirst(ident) | ast::AfterMatchSkip::ToLast(ident)) => {
            let Some(v) = var_index(ident) else {
                return Err(SqlError::validation(
                    Position::of(ident.span),
                    format!(
                        "AFTER MATCH SKIP names {}, which is no variable of PATTERN ({})",
                        ident.value,
                        names.join(", ")
                    ),
                ));
            };
            let first = matches!(
                clause.after_match_skip,
                Some(ast::AfterMatchSkip::ToFirst(_))
            );
            if first && v == 0 {
                return Err(SqlError::validation(
                    Position::of(ident.span),
                    format!(
                        "AFTER MATCH SKIP TO FIRST {}: the first variable starts the match, so matching would restart at the same row forever",
                        ident.value
                    ),
                ));
            }
            let name = variables[v].name.clone();
            if first {
                Skip::ToFirst(name)
            } else {
                Skip::ToLast(name)
            }
        }
    };
    // MEASURES.
    let mut resolver = MatchResolver {
        schema: &schema,
        names: &names,
        define_of: None,
        slots: Vec::new(),
        slot_types: Vec::new(),
        time_type: schema.columns[time_column].data_type,
    };
    let mut columns: Vec<Column> = partition
        .iter()
        .map(|&i| Column::new(schema.columns[i].name.clone(), schema.columns[i].data_type))
        .collect();
    let mut measures = Vec::new();
    let width = schema.columns.len();
    for measure in clause.measures {
        let Typed { expr, data_type } = compile(&measure.expr, &mut resolver)?;
        let rowtime = matches!(&expr, Expr::Column(i)
            if *i >= width && resolver.slots.get(i - width) == Some(&Nav::MatchRowtime));
        if columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(&measure.alias.value))
        {
            return Err(SqlError::validation(
                Position::of(measure.alias.span),
                format!(
                    "measure {} has the name of another output column (the partition columns come first)",
                    measure.alias.value
                ),
            ));
        }
        columns.push(Column {
            name: measure.alias.value.clone(),
            data_type,
            rowtime,
        });
        measures.push(expr);
    }
    let mr = MatchRecognize {
        input: Box::new(input),
        partition,
        time_column,
        variables,
        within_ms,
        skip,
        measure_slots: resolver.slots,
        measures,
        schema: Schema::new(columns),
    };
    // What CEP refuses is refused here, before the job starts.
    if let Err(e) = build_pattern(&mr, &DefineFailure::default()).compile() {
        return Err(SqlError::unsupported(
            position,
            format!("this MATCH_RECOGNIZE pattern: {e}"),
        ));
    }
    Ok(mr)
}

fn same_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// A `PARTITION BY` or `ORDER BY` item: a column of the input.
fn plain_column(
    expr: &ast::Expr,
    schema: &Schema,
    qualifiers: &[Scope],
    clause: &str,
) -> Result<usize, SqlError> {
    let name = match expr {
        ast::Expr::Identifier(ident) => vec![ident.clone()],
        ast::Expr::CompoundIdentifier(idents) => idents.clone(),
        other => {
            return Err(SqlError::unsupported(
                position_of(other),
                format!("{clause} `{other}` in MATCH_RECOGNIZE: name a column"),
            ));
        }
    };
    match resolve_in_schema(schema, qualifiers, &name)?.expr {
        Expr::Column(i) => Ok(i),
        _ => unreachable!("resolve_in_schema resolves to a column"),
    }
}

/// `WITHIN INTERVAL 'n' unit` as milliseconds.
fn within_interval(expr: &ast::Expr) -> Result<i64, SqlError> {
    let ast::Expr::Interval(interval) = expr else {
        return Err(SqlError::validation(
            position_of(expr),
            format!("WITHIN takes an interval (WITHIN INTERVAL '10' SECOND), not `{expr}`"),
        ));
    };
    let ms = crate::expr::interval_ms(interval, position_of(expr))?;
    if ms <= 0 {
        return Err(SqlError::validation(
            position_of(expr),
            "WITHIN must be a positive interval",
        ));
    }
    Ok(ms)
}

/// A pattern variable with its quantifier: `(name, min, max, reluctant)`.
type Quantified = (ast::Ident, u32, Option<u32>, bool);

fn flatten_pattern(
    pattern: &ast::MatchRecognizePattern,
    position: Option<Position>,
    out: &mut Vec<Quantified>,
) -> Result<(), SqlError> {
    use ast::MatchRecognizePattern as P;
    let refuse = |what: &str, at: &P| {
        SqlError::unsupported(
            first_symbol(at).or(position),
            format!(
                "{what} in PATTERN: CEP matches a sequence of quantified variables (`A B+ C? D{{2,3}}`)"
            ),
        )
    };
    match pattern {
        P::Concat(items) => {
            for item in items {
                flatten_pattern(item, position, out)?;
            }
            Ok(())
        }
        P::Symbol(ast::MatchRecognizeSymbol::Named(ident)) => {
            out.push((ident.clone(), 1, Some(1), false));
            Ok(())
        }
        P::Repetition(inner, quantifier) => {
            let (symbol, quantifier, reluctant) = match inner.as_ref() {
                P::Repetition(symbol, first)
                    if *quantifier == ast::RepetitionQuantifier::AtMostOne =>
                {
                    (symbol.as_ref(), first, true)
                }
                other => (other, quantifier, false),
            };
            let P::Symbol(ast::MatchRecognizeSymbol::Named(ident)) = symbol else {
                return Err(refuse(
                    "a quantifier on a group or a quantified variable",
                    pattern,
                ));
            };
            let at = Position::of(ident.span);
            let bad = |message: String| SqlError::validation(at, message);
            let (min, max) = match *quantifier {
                ast::RepetitionQuantifier::ZeroOrMore => (0, None),
                ast::RepetitionQuantifier::OneOrMore => (1, None),
                ast::RepetitionQuantifier::AtMostOne => (0, Some(1)),
                ast::RepetitionQuantifier::Exactly(n) => (n, Some(n)),
                ast::RepetitionQuantifier::AtLeast(n) => (n, None),
                ast::RepetitionQuantifier::AtMost(n) => (0, Some(n)),
                ast::RepetitionQuantifier::Range(n, m) => (n, Some(m)),
            };
            if max == Some(0) || max.is_some_and(|m| m < min) {
                return Err(bad(format!(
                    "quantifier {quantifier} on {} matches no row",
                    ident.value
                )));
            }
            if min.max(max.unwrap_or(0)) > QUANTIFIER_MAX {
                return Err(bad(format!(
                    "quantifier {quantifier} on {}: at most {QUANTIFIER_MAX} rows",
                    ident.value
                )));
            }
            out.push((ident.clone(), min, max, reluctant));
            Ok(())
        }
        P::Symbol(_) => Err(refuse("the anchors ^ and $", pattern)),
        P::Exclude(_) => Err(refuse("an exclusion {- .. -}", pattern)),
        P::Permute(_) => Err(refuse("PERMUTE", pattern)),
        P::Group(inner) if matches!(inner.as_ref(), P::Alternation(_)) => {
            Err(refuse("an alternation |", pattern))
        }
        P::Group(_) => Err(refuse("a group ( .. )", pattern)),
        P::Alternation(_) => Err(refuse("an alternation |", pattern)),
    }
}

fn first_symbol(pattern: &ast::MatchRecognizePattern) -> Option<Position> {
    use ast::MatchRecognizePattern as P;
    match pattern {
        P::Symbol(ast::MatchRecognizeSymbol::Named(i))
        | P::Exclude(ast::MatchRecognizeSymbol::Named(i)) => Position::of(i.span),
        P::Symbol(_) | P::Exclude(_) => None,
        P::Permute(symbols) => symbols.iter().find_map(|s| match s {
            ast::MatchRecognizeSymbol::Named(i) => Position::of(i.span),
            _ => None,
        }),
        P::Concat(items) | P::Alternation(items) => items.iter().find_map(first_symbol),
        P::Group(inner) | P::Repetition(inner, _) => first_symbol(inner),
    }
}

/// Resolves pattern-variable references to slots of the match row.
struct MatchResolver<'a> {
    schema: &'a Schema,
    names: &'a [String],
    /// The variable whose `DEFINE` this is (`None`: `MEASURES`).
    define_of: Option<usize>,
    slots: Vec<Nav>,
    slot_types: Vec<DataType>,
    time_type: DataType,
}

impl MatchResolver<'_> {
    fn slot(&mut self, nav: Nav, data_type: DataType) -> Typed {
        let index = match self.slots.iter().position(|s| *s == nav) {
            Some(i) => i,
            None => {
                self.slots.push(nav);
                self.slot_types.push(data_type);
                self.slots.len() - 1
            }
        };
        Typed {
            expr: Expr::Column(self.schema.columns.len() + index),
            data_type: self.slot_types[index],
        }
    }

    fn variable(&self, ident: &ast::Ident) -> Option<usize> {
        self.names.iter().position(|n| same_name(n, &ident.value))
    }

    /// `v.column` or `column` (the universal variable) inside a navigation or an aggregate.
    fn var_column(&self, expr: &ast::Expr, what: &str) -> Result<(Option<usize>, usize), SqlError> {
        let (var, column) = match expr {
            ast::Expr::CompoundIdentifier(idents) if idents.len() == 2 => {
                let Some(v) = self.variable(&idents[0]) else {
                    return Err(SqlError::validation(
                        Position::of(idents[0].span),
                        format!(
                            "{what}: {} is no pattern variable ({})",
                            idents[0].value,
                            self.names.join(", ")
                        ),
                    ));
                };
                (Some(v), &idents[1])
            }
            ast::Expr::Identifier(ident) => (None, ident),
            other => {
                return Err(SqlError::unsupported(
                    position_of(other),
                    format!("{what} of `{other}`: name a column of a pattern variable (A.price)"),
                ));
            }
        };
        match resolve_in_schema(self.schema, &[], std::slice::from_ref(column))?.expr {
            Expr::Column(i) => Ok((var, i)),
            _ => unreachable!("resolve_in_schema resolves to a column"),
        }
    }
}

impl Resolver for MatchResolver<'_> {
    fn resolve(&mut self, expr: &ast::Expr) -> Result<Option<Typed>, SqlError> {
        match expr {
            ast::Expr::CompoundIdentifier(idents)
                if idents.len() == 2 && self.variable(&idents[0]).is_some() =>
            {
                let (var, column) = self.var_column(expr, "a column reference")?;
                let data_type = self.schema.columns[column].data_type;
                Ok(Some(self.slot(
                    Nav::Last {
                        var,
                        column,
                        offset: 0,
                    },
                    data_type,
                )))
            }
            ast::Expr::Function(function) => {
                let name = function.name.to_string().to_uppercase();
                let position = Position::of(function.name.span());
                match name.as_str() {
                    "FIRST" | "LAST" => {
                        let args = function_args(function)?;
                        let (target, offset) = match args.as_slice() {
                            [target] => (*target, 0),
                            [target, offset] => (*target, navigation_offset(offset, &name)?),
                            _ => {
                                return Err(SqlError::validation(
                                    position,
                                    format!(
                                        "{name} takes a column and an optional offset: {name}(A.price, 1)"
                                    ),
                                ));
                            }
                        };
                        let (var, column) = self.var_column(target, &name)?;
                        let data_type = self.schema.columns[column].data_type;
                        let nav = if name == "FIRST" {
                            Nav::First {
                                var,
                                column,
                                offset,
                            }
                        } else {
                            Nav::Last {
                                var,
                                column,
                                offset,
                            }
                        };
                        Ok(Some(self.slot(nav, data_type)))
                    }
                    "PREV" | "NEXT" => Err(SqlError::unsupported(
                        position,
                        format!(
                            "{name} in MATCH_RECOGNIZE (as in Flink): use LAST(A.price, 1) for the row before"
                        ),
                    )),
                    "MATCH_ROWTIME" => {
                        if self.define_of.is_some() {
                            return Err(SqlError::validation(
                                position,
                                "MATCH_ROWTIME() is a measure: it is not defined inside DEFINE",
                            ));
                        }
                        if !function_args(function)?.is_empty() {
                            return Err(SqlError::validation(
                                position,
                                "MATCH_ROWTIME() takes no argument",
                            ));
                        }
                        let time_type = self.time_type;
                        Ok(Some(self.slot(Nav::MatchRowtime, time_type)))
                    }
                    _ => match AggFunc::from_name(&name) {
                        Some(func) => self.aggregate(function, func, &name).map(Some),
                        None => Ok(None),
                    },
                }
            }
            _ => Ok(None),
        }
    }

    fn column(&mut self, name: &[ast::Ident]) -> Result<Typed, SqlError> {
        match name {
            [_] => resolve_in_schema(self.schema, &[], name),
            [qualifier, ..] => Err(SqlError::validation(
                Position::of(qualifier.span),
                format!(
                    "'{}' is no pattern variable ({}): inside MATCH_RECOGNIZE, qualify columns with a pattern variable",
                    qualifier.value,
                    self.names.join(", ")
                ),
            )),
            [] => Err(SqlError::validation(None, "an empty column name")),
        }
    }
}

impl MatchResolver<'_> {
    fn aggregate(
        &mut self,
        function: &ast::Function,
        func: AggFunc,
        name: &str,
    ) -> Result<Typed, SqlError> {
        let position = Position::of(function.name.span());
        if let ast::FunctionArguments::List(list) = &function.args {
            if list.duplicate_treatment.is_some() {
                return Err(SqlError::unsupported(
                    position,
                    format!("{name}(DISTINCT ..) in MATCH_RECOGNIZE"),
                ));
            }
            if let [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)] =
                list.args.as_slice()
                && func == AggFunc::Count
            {
                let call = AggCall {
                    func,
                    distinct: false,
                    arg: None,
                    result_type: DataType::BigInt,
                };
                return Ok(self.slot(Nav::Agg { var: None, call }, DataType::BigInt));
            }
        }
        let args = function_args(function)?;
        let [arg] = args.as_slice() else {
            return Err(SqlError::validation(
                position,
                format!("{name} takes one argument"),
            ));
        };
        let (var, column) = self.var_column(arg, name)?;
        let arg_type = self.schema.columns[column].data_type;
        let result_type = func
            .result_type(Some(arg_type))
            .map_err(|e| SqlError::validation(position_of(arg), e))?;
        let call = AggCall {
            func,
            distinct: false,
            arg: Some(column),
            result_type,
        };
        Ok(self.slot(Nav::Agg { var, call }, result_type))
    }
}

fn navigation_offset(expr: &ast::Expr, name: &str) -> Result<usize, SqlError> {
    if let ast::Expr::Value(v) = expr
        && let ast::Value::Number(n, _) = &v.value
        && let Ok(n) = n.parse::<usize>()
    {
        return Ok(n);
    }
    Err(SqlError::validation(
        position_of(expr),
        format!("the offset of {name} must be a non-negative integer literal, not `{expr}`"),
    ))
}

// ---------------------------------------------------------------------------------------------
// Execution
// ---------------------------------------------------------------------------------------------

/// The rows of each variable in a partial match, plus the row being tested for `current`.
fn bindings_of(
    names: &[String],
    ctx: &Context<'_, Change>,
    current: usize,
    row: &Row,
) -> Vec<Vec<Row>> {
    names
        .iter()
        .enumerate()
        .map(|(v, name)| {
            let mut rows = ctx.fold(name, Vec::new(), |mut rows, c: &Change| {
                rows.push(c.row.clone());
                rows
            });
            if v == current {
                rows.push(row.clone());
            }
            rows
        })
        .collect()
}

/// The CEP pattern of a planned `MATCH_RECOGNIZE`; a failing `DEFINE` goes to `failure`.
pub(crate) fn build_pattern(mr: &MatchRecognize, failure: &DefineFailure) -> Pattern<Change> {
    let skip = match &mr.skip {
        Skip::PastLastRow => AfterMatchSkipStrategy::SkipPastLastEvent,
        Skip::ToNextRow => AfterMatchSkipStrategy::SkipToNext,
        Skip::ToFirst(v) => AfterMatchSkipStrategy::SkipToFirst(v.clone()),
        Skip::ToLast(v) => AfterMatchSkipStrategy::SkipToLast(v.clone()),
    };
    let names: Arc<Vec<String>> = Arc::new(mr.variables.iter().map(|v| v.name.clone()).collect());
    let time_column = mr.time_column;
    let mut pattern: Option<Pattern<Change>> = None;
    for (index, variable) in mr.variables.iter().enumerate() {
        let mut p = match pattern {
            None => Pattern::begin_with_skip(&variable.name, skip.clone()),
            Some(p) => p.next(&variable.name),
        };
        if let Some(condition) = variable.condition.clone() {
            let slots = variable.slots.clone();
            let names = Arc::clone(&names);
            let variable_name = variable.name.clone();
            let failure = failure.clone();
            p = p.where_iterative(move |change: &Change, ctx: &Context<'_, Change>| {
                let bindings = bindings_of(&names, ctx, index, &change.row);
                let row = match_row(&change.row, &slots, &bindings, time_column);
                match condition.holds(&row) {
                    Ok(holds) => holds,
                    Err(e) => {
                        failure.record(|| {
                            format!("MATCH_RECOGNIZE: DEFINE {variable_name}: {e}, in row {change}")
                        });
                        false
                    }
                }
            });
        }
        let (min, max) = (variable.min, variable.max);
        p = match (min, max) {
            (1, Some(1)) => p,
            (0, Some(1)) => p.optional(),
            (n, Some(m)) if n == m => p.times(n),
            (n, Some(m)) => p.times_range(n, m),
            (1, None) => p.one_or_more(),
            (n, None) => p.times_or_more(n),
        };
        // Rows of one variable are consecutive whenever it takes several; only a variable
        // whose count may vary can be greedy.
        if max != Some(1) {
            p = p.consecutive();
        }
        if max != Some(min.max(1)) && !variable.reluctant {
            p = p.greedy();
        }
        pattern = Some(p);
    }
    let Some(mut pattern) = pattern else {
        // The parser needs at least one symbol in PATTERN: an empty pattern cannot be planned.
        unreachable!("PATTERN has at least one variable");
    };
    if let Some(ms) = mr.within_ms {
        pattern = pattern.within(ms);
    }
    pattern.named("MATCH_RECOGNIZE")
}

/// Turns each match into its output row.
#[derive(Clone)]
struct MeasuresFn {
    names: Vec<String>,
    partition: Vec<usize>,
    time_column: usize,
    slots: Vec<Nav>,
    measures: Vec<Expr>,
    errors: OutputTag<String>,
    define_failure: DefineFailure,
}

impl std::fmt::Debug for MeasuresFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeasuresFn")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl MeasuresFn {
    fn row(&self, m: &Match<Change>) -> Result<Row, String> {
        let bindings: Vec<Vec<Row>> = self
            .names
            .iter()
            .map(|name| m.get(name).into_iter().map(|c| c.row.clone()).collect())
            .collect();
        let Some(last) = m.events().last() else {
            return Err("an empty match".to_string());
        };
        let row = match_row(&last.event.row, &self.slots, &bindings, self.time_column);
        let mut out: Row = self
            .partition
            .iter()
            .map(|&i| last.event.row.get(i).cloned().unwrap_or(Value::Null))
            .collect();
        for measure in &self.measures {
            out.push(measure.eval(&row)?);
        }
        Ok(out)
    }
}

impl PatternProcessFunction<Vec<Value>, Change, Change> for MeasuresFn {
    fn process_match(
        &mut self,
        m: Match<Change>,
        ctx: &mut PatternContext<'_, '_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        if let Some(failure) = self.define_failure.take() {
            ctx.output(&self.errors, failure);
        }
        match self.row(&m) {
            Ok(row) => out.collect(Change::insert(row)),
            Err(e) => {
                let rows: Vec<String> = m.events().iter().map(|e| e.event.to_string()).collect();
                ctx.output(
                    &self.errors,
                    format!(
                        "MATCH_RECOGNIZE measures: {e}, in the match [{}]",
                        rows.join("; ")
                    ),
                );
            }
        }
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        match self.define_failure.take() {
            Some(failure) => Err(UnrecoverableError::new(failure).into()),
            None => Ok(()),
        }
    }
}

/// The operators of a planned `MATCH_RECOGNIZE` over its input stream.
pub(crate) fn translate(
    input: DataStream<Change>,
    mr: &MatchRecognize,
    errors: OutputTag<String>,
    uid: &str,
) -> DataStream<Change> {
    let failure = DefineFailure::default();
    let partition = mr.partition.clone();
    let keyed = input.key_by(move |c: &Change| {
        partition
            .iter()
            .map(|&i| c.row.get(i).cloned().unwrap_or(Value::Null))
            .collect::<Vec<Value>>()
    });
    let function = MeasuresFn {
        names: mr.variables.iter().map(|v| v.name.clone()).collect(),
        partition: mr.partition.clone(),
        time_column: mr.time_column,
        slots: mr.measure_slots.clone(),
        measures: mr.measures.clone(),
        errors,
        define_failure: failure.clone(),
    };
    let stream = CEP::pattern(keyed, build_pattern(mr, &failure)).process(function);
    let name = format!(
        "Match(partitionBy=[{}], pattern=[{}])",
        mr.partition
            .iter()
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", "),
        describe_pattern(mr)
    );
    stream.name(&name).uid(uid)
}

/// The pattern as text (`A B{1,} C?`), for `EXPLAIN` and operator names.
pub(crate) fn describe_pattern(mr: &MatchRecognize) -> String {
    mr.variables
        .iter()
        .map(|v| {
            let q = match (v.min, v.max) {
                (1, Some(1)) => String::new(),
                (0, Some(1)) => "?".to_string(),
                (0, None) => "*".to_string(),
                (1, None) => "+".to_string(),
                (n, None) => format!("{{{n},}}"),
                (n, Some(m)) if n == m => format!("{{{n}}}"),
                (n, Some(m)) => format!("{{{n},{m}}}"),
            };
            let reluctant = if v.reluctant { "?" } else { "" };
            format!("{}{q}{reluctant}", v.name)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(func: AggFunc, arg: usize, result_type: DataType) -> AggCall {
        AggCall {
            func,
            distinct: false,
            arg: Some(arg),
            result_type,
        }
    }

    #[test]
    fn navigations_read_the_rows_of_their_variable() {
        let row = |p: i64, t: i64| vec![Value::BigInt(p), Value::TimestampLtz(t)];
        let bindings = vec![
            vec![row(10, 1)],
            vec![row(8, 2), row(6, 3), row(4, 4)],
            vec![],
        ];
        let last = |var, offset| Nav::Last {
            var,
            column: 0,
            offset,
        };
        assert_eq!(last(Some(1), 0).eval(&bindings, 1), Value::BigInt(4));
        assert_eq!(last(Some(1), 2).eval(&bindings, 1), Value::BigInt(8));
        assert_eq!(last(Some(1), 3).eval(&bindings, 1), Value::Null);
        assert_eq!(last(Some(2), 0).eval(&bindings, 1), Value::Null);
        assert_eq!(last(None, 3).eval(&bindings, 1), Value::BigInt(10));
        assert_eq!(last(None, 4).eval(&bindings, 1), Value::Null);
        let first = Nav::First {
            var: Some(1),
            column: 0,
            offset: 1,
        };
        assert_eq!(first.eval(&bindings, 1), Value::BigInt(6));
        let avg = Nav::Agg {
            var: Some(1),
            call: call(AggFunc::Avg, 0, DataType::BigInt),
        };
        assert_eq!(avg.eval(&bindings, 1), Value::BigInt(6));
        let sum_all = Nav::Agg {
            var: None,
            call: call(AggFunc::Sum, 0, DataType::BigInt),
        };
        assert_eq!(sum_all.eval(&bindings, 1), Value::BigInt(28));
        let min_empty = Nav::Agg {
            var: Some(2),
            call: call(AggFunc::Min, 0, DataType::BigInt),
        };
        assert_eq!(min_empty.eval(&bindings, 1), Value::Null);
        assert_eq!(Nav::MatchRowtime.eval(&bindings, 1), Value::TimestampLtz(4));
    }

    fn plan(sql: &str) -> Result<MatchRecognize, SqlError> {
        let mut catalog = crate::catalog::Catalog::default();
        let schema = Schema::new(vec![
            Column::new("symbol", DataType::String),
            Column::new("price", DataType::BigInt),
            Column {
                name: "ts".into(),
                data_type: DataType::TimestampLtz,
                rowtime: true,
            },
        ]);
        catalog
            .register(
                "ticker",
                crate::catalog::CatalogTable::Stream {
                    schema,
                    updating: false,
                },
                None,
            )
            .expect("register");
        let mut statements = crate::parse::parse_script(sql)?;
        let Some(crate::parse::Statement::Query(query)) = statements.pop() else {
            panic!("a query");
        };
        // `SELECT *` projects the match's columns.
        match crate::plan::plan_query(&query, &catalog)? {
            Plan::Calc { input, .. } => match *input {
                Plan::MatchRecognize(mr) => Ok(*mr),
                other => panic!("not a MATCH_RECOGNIZE plan: {other:?}"),
            },
            other => panic!("not a projection: {other:?}"),
        }
    }

    #[test]
    fn quantifiers_skip_and_within_become_the_plan() {
        let mr = plan(
            "SELECT * FROM ticker MATCH_RECOGNIZE (PARTITION BY symbol ORDER BY ts \
             MEASURES FIRST(A.price) AS a, MATCH_ROWTIME() AS rt, SUM(B.price) AS s \
             AFTER MATCH SKIP TO LAST D \
             PATTERN (A B{2,} C*? D{1,3} E{,4}? F{3} G? H) WITHIN INTERVAL '2' MINUTE \
             DEFINE B AS B.price > A.price AND LAST(B.price, 1) < B.price, H AS price > 1) AS t",
        )
        .expect("plans");
        assert_eq!(
            describe_pattern(&mr),
            "A B{2,} C*? D{1,3} E{0,4}? F{3} G? H"
        );
        assert_eq!(mr.within_ms, Some(120_000));
        assert_eq!(mr.skip, Skip::ToLast("D".into()));
        assert_eq!(mr.partition, vec![0]);
        assert_eq!(mr.schema.names(), vec!["symbol", "a", "rt", "s"]);
        assert!(
            mr.schema.columns[2].rowtime,
            "MATCH_ROWTIME() is a time attribute"
        );
        assert!(!mr.schema.columns[1].rowtime);
        // B's condition reads A's last price, B's own (current) price and the one before.
        assert_eq!(
            mr.variables[1].slots,
            vec![
                Nav::Last {
                    var: Some(1),
                    column: 1,
                    offset: 0
                },
                Nav::Last {
                    var: Some(0),
                    column: 1,
                    offset: 0
                },
                Nav::Last {
                    var: Some(1),
                    column: 1,
                    offset: 1
                },
            ]
        );
        assert!(
            mr.variables[0].condition.is_none(),
            "A is not defined: any row"
        );
        // The pattern CEP gets compiles.
        assert!(
            build_pattern(&mr, &DefineFailure::default())
                .compile()
                .is_ok()
        );
    }

    fn tokens(sql: &str) -> Vec<TokenWithSpan> {
        let dialect = sqlparser::dialect::GenericDialect {};
        sqlparser::tokenizer::Tokenizer::new(&dialect, sql)
            .tokenize_with_location()
            .expect("tokenize")
    }

    fn text(tokens: &[TokenWithSpan]) -> String {
        tokens.iter().map(|t| t.token.to_string()).collect()
    }

    #[test]
    fn within_moves_to_a_last_define_entry() {
        let sql = "SELECT * FROM t MATCH_RECOGNIZE (ORDER BY ts MEASURES A.x AS x \
                   PATTERN (A B+? (C)) WITHIN INTERVAL '5' SECOND DEFINE A AS f(x) > 1) AS m";
        let moved = text(&move_within_clauses(tokens(sql)));
        assert_eq!(
            moved,
            "SELECT * FROM t MATCH_RECOGNIZE (ORDER BY ts MEASURES A.x AS x \
             PATTERN (A B+? (C)) DEFINE A AS f(x) > 1,\"$within\" AS INTERVAL '5' SECOND ) AS m"
        );
        // Without WITHIN nothing changes.
        let plain = "SELECT * FROM t MATCH_RECOGNIZE (ORDER BY ts PATTERN (A) DEFINE A AS x > 1)";
        assert_eq!(text(&move_within_clauses(tokens(plain))), plain);
    }
}
