//! Scalar expressions: compiled from sqlparser's AST against a schema into typed, index-based
//! expressions, and evaluated on rows.
//!
//! Compiling resolves every column to its index and checks every type once, so a wrong query
//! fails before the job starts, with the line and column of the offending expression. Evaluating
//! is a pure function of the row; the errors it can still raise (a division by zero, a `CAST` of
//! a string that is no number) are returned, and the operator running the expression fails the
//! job with them.
//!
//! SQL's three-valued logic holds throughout: an operator on `NULL` gives `NULL`, `AND`/`OR` use
//! Kleene logic, and `WHERE` keeps only rows whose condition is `TRUE`.

use serde::{Deserialize, Serialize};
use sqlparser::ast::{self, Spanned};

use crate::error::{Position, SqlError};
use crate::parse::map_data_type;
use crate::types::{DataType, Schema, Value};

/// A compiled expression with its result type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Typed {
    /// The expression.
    pub expr: Expr,
    /// Its result type.
    pub data_type: DataType,
}

/// A compiled scalar expression: columns are indexes into the input row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// The input column at this index.
    Column(usize),
    /// A constant.
    Literal(Value),
    /// `NOT e`.
    Not(Box<Self>),
    /// `-e`.
    Negate(Box<Self>),
    /// `a AND b`.
    And(Box<Self>, Box<Self>),
    /// `a OR b`.
    Or(Box<Self>, Box<Self>),
    /// `a + b`, `a - b`, `a * b`, `a / b`, `a % b`, computed in the result type.
    Arith(ArithOp, Box<Self>, Box<Self>, DataType),
    /// A comparison.
    Compare(CompareOp, Box<Self>, Box<Self>),
    /// `a || b`.
    Concat(Vec<Self>),
    /// `e IS NULL` (or, negated, `IS NOT NULL`).
    IsNull(Box<Self>, bool),
    /// `CASE [operand] WHEN .. THEN .. ELSE .. END`.
    Case {
        /// The operand of a simple `CASE`.
        operand: Option<Box<Self>>,
        /// `(WHEN, THEN)` pairs.
        branches: Vec<(Self, Self)>,
        /// `ELSE`, `NULL` if absent.
        otherwise: Box<Self>,
    },
    /// `CAST(e AS t)`; `TRY_CAST` gives `NULL` where `CAST` fails.
    Cast {
        /// The operand.
        expr: Box<Self>,
        /// The target type.
        to: DataType,
        /// `TRY_CAST`.
        safe: bool,
    },
    /// `e [NOT] IN (list)`.
    InList {
        /// The operand.
        expr: Box<Self>,
        /// The candidates.
        list: Vec<Self>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `e [NOT] LIKE pattern`.
    Like {
        /// The operand.
        expr: Box<Self>,
        /// The pattern (`%` any run, `_` one character).
        pattern: Box<Self>,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// A built-in function.
    Call(Func, Vec<Self>),
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArithOp {
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/` (integer division for two `BIGINT`s, as in Flink).
    Div,
    /// `%`, `MOD`.
    Mod,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    /// `=`.
    Eq,
    /// `<>`, `!=`.
    NotEq,
    /// `<`.
    Lt,
    /// `<=`.
    LtEq,
    /// `>`.
    Gt,
    /// `>=`.
    GtEq,
}

/// Built-in scalar functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Func {
    /// `UPPER(s)`.
    Upper,
    /// `LOWER(s)`.
    Lower,
    /// `CHAR_LENGTH(s)`.
    CharLength,
    /// `SUBSTRING(s FROM i [FOR n])`, 1-based.
    Substring,
    /// `TRIM(s)`.
    Trim,
    /// `LTRIM(s)`.
    Ltrim,
    /// `RTRIM(s)`.
    Rtrim,
    /// `REPLACE(s, from, to)`.
    Replace,
    /// `POSITION(needle IN s)`, 1-based, 0 if absent.
    Position,
    /// `ABS(x)`.
    Abs,
    /// `ROUND(x [, digits])`.
    Round,
    /// `FLOOR(x)`.
    Floor,
    /// `CEIL(x)`.
    Ceil,
    /// `POWER(x, y)`.
    Power,
    /// `SQRT(x)`.
    Sqrt,
    /// `LN(x)`.
    Ln,
    /// `LOG10(x)`.
    Log10,
    /// `EXP(x)`.
    Exp,
    /// `COALESCE(a, b, ...)`.
    Coalesce,
    /// `NULLIF(a, b)`.
    NullIf,
    /// `IF(condition, then, else)`.
    If,
    /// `TO_TIMESTAMP_LTZ(epoch, precision)`: precision 3 reads milliseconds, 0 seconds.
    ToTimestampLtz,
    /// `TO_TIMESTAMP(s)`: `yyyy-MM-dd HH:mm:ss[.SSS]`.
    ToTimestamp,
    /// `EXTRACT(YEAR FROM ts)`, `YEAR(ts)`.
    Year,
    /// `MONTH(ts)`.
    Month,
    /// `DAYOFMONTH(ts)`.
    Day,
    /// `HOUR(ts)`.
    Hour,
    /// `MINUTE(ts)`.
    Minute,
    /// `SECOND(ts)`.
    Second,
    /// `DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm:ss')`: Java-style pattern letters.
    DateFormat,
    /// `UNIX_TIMESTAMP_MS(ts)`: milliseconds since the epoch (Eichhorn's).
    EpochMillis,
}

/// Resolves what the plain compiler cannot: names to columns, and (in an aggregate query)
/// group keys and aggregate calls to the columns of the aggregation's output.
pub trait Resolver {
    /// Gives a compiled expression for `expr` if this resolver handles it (a group key, an
    /// aggregate call); `None` lets the compiler go on.
    ///
    /// # Errors
    ///
    /// The expression is wrong in this context.
    fn resolve(&mut self, expr: &ast::Expr) -> Result<Option<Typed>, SqlError>;

    /// The column that `name` (one part, or `table.column`) names.
    ///
    /// # Errors
    ///
    /// No such column, or not usable here (outside `GROUP BY` in an aggregate query).
    fn column(&mut self, name: &[ast::Ident]) -> Result<Typed, SqlError>;
}

/// A name that columns may be qualified with (a table name or alias) and the columns of the
/// schema it covers: one scope covering every column for a single table, one per side for a
/// join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The qualifier, lower case.
    pub name: String,
    /// The columns it covers.
    pub columns: std::ops::Range<usize>,
}

impl Scope {
    /// A scope named `name` over the first `width` columns.
    pub fn new(name: impl Into<String>, columns: std::ops::Range<usize>) -> Self {
        Self {
            name: name.into().to_lowercase(),
            columns,
        }
    }
}

/// Resolves names against one schema.
#[derive(Debug)]
pub struct SchemaResolver<'a> {
    /// The input schema.
    pub schema: &'a Schema,
    /// The table names or aliases the columns may be qualified with.
    pub qualifiers: Vec<Scope>,
}

impl Resolver for SchemaResolver<'_> {
    fn resolve(&mut self, _expr: &ast::Expr) -> Result<Option<Typed>, SqlError> {
        Ok(None)
    }

    fn column(&mut self, name: &[ast::Ident]) -> Result<Typed, SqlError> {
        resolve_in_schema(self.schema, &self.qualifiers, name)
    }
}

/// Finds the column `name` names in `schema`. A qualified name looks among its scope's
/// columns; an unqualified one must name a column of one scope only (else it is ambiguous).
///
/// # Errors
///
/// An unknown column (listing the available ones), an unknown qualifier, or an ambiguous
/// name.
pub fn resolve_in_schema(
    schema: &Schema,
    qualifiers: &[Scope],
    name: &[ast::Ident],
) -> Result<Typed, SqlError> {
    let (column, qualifier) = match name {
        [column] => (column, None),
        [qualifier, column] => (column, Some(qualifier)),
        _ => {
            let position = name.first().and_then(|i| Position::of(i.span));
            return Err(SqlError::unsupported(
                position,
                format!("column reference `{}`", join_idents(name)),
            ));
        }
    };
    let position = Position::of(column.span);
    let matches_name = |i: &usize| {
        schema
            .columns
            .get(*i)
            .is_some_and(|c| c.name.eq_ignore_ascii_case(&column.value))
    };
    let found = match qualifier {
        Some(qualifier) => {
            let scopes: Vec<&Scope> = qualifiers
                .iter()
                .filter(|q| q.name.eq_ignore_ascii_case(&qualifier.value))
                .collect();
            if scopes.is_empty() {
                return Err(SqlError::validation(
                    Position::of(qualifier.span),
                    format!(
                        "table or alias '{}' not found in this query",
                        qualifier.value
                    ),
                ));
            }
            scopes
                .iter()
                .find_map(|scope| scope.columns.clone().find(|i| matches_name(i)))
        }
        None => {
            let all: Vec<usize> = (0..schema.columns.len()).filter(matches_name).collect();
            let owners: Vec<&str> = qualifiers
                .iter()
                .filter(|q| all.iter().any(|i| q.columns.contains(i)))
                .map(|q| q.name.as_str())
                .collect();
            if owners.len() > 1 {
                return Err(SqlError::validation(
                    position,
                    format!(
                        "column '{}' is ambiguous: qualify it as {}",
                        column.value,
                        owners
                            .iter()
                            .map(|o| format!("{o}.{}", column.value))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ));
            }
            all.first().copied()
        }
    };
    match found {
        Some(index) => Ok(Typed {
            expr: Expr::Column(index),
            data_type: schema.columns[index].data_type,
        }),
        None => Err(SqlError::validation(
            position,
            format!(
                "column '{}' not found; available columns: {}",
                column.value,
                schema.names().join(", ")
            ),
        )),
    }
}

fn join_idents(name: &[ast::Ident]) -> String {
    name.iter()
        .map(|i| i.value.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

/// Where `expr` starts in the SQL text.
pub fn position_of(expr: &ast::Expr) -> Option<Position> {
    Position::of(expr.span())
}

/// Compiles `expr`, resolving names with `resolver`.
///
/// # Errors
///
/// An unknown column or function, a type mismatch, an unsupported construct: each with the
/// position of the offending expression.
pub fn compile(expr: &ast::Expr, resolver: &mut dyn Resolver) -> Result<Typed, SqlError> {
    if let Some(typed) = resolver.resolve(expr)? {
        return Ok(typed);
    }
    let position = position_of(expr);
    let mismatch = |message: String| Err(SqlError::validation(position, message));
    use ast::Expr as A;
    match expr {
        A::Identifier(ident) => resolver.column(std::slice::from_ref(ident)),
        A::CompoundIdentifier(parts) => resolver.column(parts),
        A::Nested(inner) => compile(inner, resolver),
        A::Value(value) => literal(&value.value, position),
        A::Interval(interval) => Ok(Typed {
            expr: Expr::Literal(Value::BigInt(interval_ms(interval, position)?)),
            data_type: DataType::Interval,
        }),
        A::TypedString(typed) => {
            let target = map_data_type(&typed.data_type, position)?;
            let text = match &typed.value.value {
                ast::Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            };
            let value = cast(Value::String(text.clone()), target).map_err(|e| {
                SqlError::validation(position, format!("literal {target} '{text}': {e}"))
            })?;
            Ok(Typed {
                expr: Expr::Literal(value),
                data_type: target,
            })
        }
        A::UnaryOp { op, expr: inner } => {
            let operand = compile(inner, resolver)?;
            match op {
                ast::UnaryOperator::Not => {
                    expect_boolean(&operand, inner)?;
                    Ok(Typed {
                        expr: Expr::Not(Box::new(operand.expr)),
                        data_type: DataType::Boolean,
                    })
                }
                ast::UnaryOperator::Minus if operand.data_type.is_numeric() => Ok(Typed {
                    data_type: operand.data_type,
                    expr: Expr::Negate(Box::new(operand.expr)),
                }),
                ast::UnaryOperator::Plus if operand.data_type.is_numeric() => Ok(operand),
                _ => mismatch(format!(
                    "operator {op} cannot be applied to {}",
                    operand.data_type
                )),
            }
        }
        A::BinaryOp { left, op, right } => compile_binary(left, op, right, resolver, position),
        A::IsNull(inner) | A::IsNotNull(inner) => {
            let operand = compile(inner, resolver)?;
            Ok(Typed {
                expr: Expr::IsNull(Box::new(operand.expr), matches!(expr, A::IsNotNull(_))),
                data_type: DataType::Boolean,
            })
        }
        A::IsTrue(inner) | A::IsFalse(inner) => {
            let operand = compile(inner, resolver)?;
            expect_boolean(&operand, inner)?;
            let wanted = Value::Boolean(matches!(expr, A::IsTrue(_)));
            // `x IS TRUE` is never NULL: COALESCE(x = TRUE, FALSE).
            Ok(Typed {
                expr: Expr::Call(
                    Func::Coalesce,
                    vec![
                        Expr::Compare(
                            CompareOp::Eq,
                            Box::new(operand.expr),
                            Box::new(Expr::Literal(wanted)),
                        ),
                        Expr::Literal(Value::Boolean(false)),
                    ],
                ),
                data_type: DataType::Boolean,
            })
        }
        A::Between {
            expr: inner,
            negated,
            low,
            high,
        } => {
            let operand = compile(inner, resolver)?;
            let low_typed = compile(low, resolver)?;
            let high_typed = compile(high, resolver)?;
            comparable(&operand, &low_typed, position)?;
            comparable(&operand, &high_typed, position)?;
            let both = Expr::And(
                Box::new(Expr::Compare(
                    CompareOp::GtEq,
                    Box::new(operand.expr.clone()),
                    Box::new(low_typed.expr),
                )),
                Box::new(Expr::Compare(
                    CompareOp::LtEq,
                    Box::new(operand.expr),
                    Box::new(high_typed.expr),
                )),
            );
            Ok(Typed {
                expr: if *negated {
                    Expr::Not(Box::new(both))
                } else {
                    both
                },
                data_type: DataType::Boolean,
            })
        }
        A::InList {
            expr: inner,
            list,
            negated,
        } => {
            let operand = compile(inner, resolver)?;
            let mut items = Vec::with_capacity(list.len());
            for item in list {
                let typed = compile(item, resolver)?;
                comparable(&operand, &typed, position_of(item))?;
                items.push(typed.expr);
            }
            Ok(Typed {
                expr: Expr::InList {
                    expr: Box::new(operand.expr),
                    list: items,
                    negated: *negated,
                },
                data_type: DataType::Boolean,
            })
        }
        A::Like {
            negated,
            any: false,
            expr: inner,
            pattern,
            escape_char: None,
        } => {
            let operand = compile(inner, resolver)?;
            let pattern_typed = compile(pattern, resolver)?;
            expect_type(&operand, DataType::String, inner)?;
            expect_type(&pattern_typed, DataType::String, pattern)?;
            Ok(Typed {
                expr: Expr::Like {
                    expr: Box::new(operand.expr),
                    pattern: Box::new(pattern_typed.expr),
                    negated: *negated,
                },
                data_type: DataType::Boolean,
            })
        }
        A::Case {
            operand,
            conditions,
            else_result,
            ..
        } => compile_case(
            operand.as_deref(),
            conditions,
            else_result.as_deref(),
            resolver,
            position,
        ),
        A::Cast {
            kind,
            expr: inner,
            data_type,
            ..
        } => {
            let operand = compile(inner, resolver)?;
            let to = map_data_type(data_type, position)?;
            if !castable(operand.data_type, to) {
                return mismatch(format!("cannot cast {} to {to}", operand.data_type));
            }
            Ok(Typed {
                expr: Expr::Cast {
                    expr: Box::new(operand.expr),
                    to,
                    safe: !matches!(kind, ast::CastKind::Cast | ast::CastKind::DoubleColon),
                },
                data_type: to,
            })
        }
        A::Extract {
            field, expr: inner, ..
        } => {
            let func = match field {
                ast::DateTimeField::Year => Func::Year,
                ast::DateTimeField::Month => Func::Month,
                ast::DateTimeField::Day => Func::Day,
                ast::DateTimeField::Hour => Func::Hour,
                ast::DateTimeField::Minute => Func::Minute,
                ast::DateTimeField::Second => Func::Second,
                other => {
                    return Err(SqlError::unsupported(
                        position,
                        format!("EXTRACT({other} FROM ..)"),
                    ));
                }
            };
            let operand = compile(inner, resolver)?;
            expect_timestamp(&operand, inner)?;
            Ok(Typed {
                expr: Expr::Call(func, vec![operand.expr]),
                data_type: DataType::BigInt,
            })
        }
        A::Floor { expr: inner, field } | A::Ceil { expr: inner, field } => {
            if !matches!(
                field,
                ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime)
            ) {
                return Err(SqlError::unsupported(
                    position,
                    "FLOOR/CEIL with a unit or scale",
                ));
            }
            let operand = compile(inner, resolver)?;
            expect_numeric(&operand, inner)?;
            let func = if matches!(expr, A::Floor { .. }) {
                Func::Floor
            } else {
                Func::Ceil
            };
            Ok(Typed {
                data_type: operand.data_type,
                expr: Expr::Call(func, vec![operand.expr]),
            })
        }
        A::Substring {
            expr: inner,
            substring_from,
            substring_for,
            ..
        } => {
            let operand = compile(inner, resolver)?;
            expect_type(&operand, DataType::String, inner)?;
            let mut args = vec![operand.expr];
            for part in [substring_from, substring_for].into_iter().flatten() {
                let typed = compile(part, resolver)?;
                expect_type(&typed, DataType::BigInt, part)?;
                args.push(typed.expr);
            }
            Ok(Typed {
                expr: Expr::Call(Func::Substring, args),
                data_type: DataType::String,
            })
        }
        A::Trim {
            expr: inner,
            trim_where,
            trim_what: None,
            trim_characters: None,
        } => {
            let operand = compile(inner, resolver)?;
            expect_type(&operand, DataType::String, inner)?;
            let func = match trim_where {
                None | Some(ast::TrimWhereField::Both) => Func::Trim,
                Some(ast::TrimWhereField::Leading) => Func::Ltrim,
                Some(ast::TrimWhereField::Trailing) => Func::Rtrim,
            };
            Ok(Typed {
                expr: Expr::Call(func, vec![operand.expr]),
                data_type: DataType::String,
            })
        }
        A::Position { expr: needle, r#in } => {
            let needle_typed = compile(needle, resolver)?;
            let haystack = compile(r#in, resolver)?;
            expect_type(&needle_typed, DataType::String, needle)?;
            expect_type(&haystack, DataType::String, r#in)?;
            Ok(Typed {
                expr: Expr::Call(Func::Position, vec![needle_typed.expr, haystack.expr]),
                data_type: DataType::BigInt,
            })
        }
        A::Function(function) => compile_function(function, resolver, position),
        other => Err(SqlError::unsupported(
            position,
            format!("expression `{other}`"),
        )),
    }
}

fn literal(value: &ast::Value, position: Option<Position>) -> Result<Typed, SqlError> {
    let (value, data_type) = match value {
        ast::Value::Number(text, _) => {
            if let Ok(v) = text.parse::<i64>() {
                (Value::BigInt(v), DataType::BigInt)
            } else if let Ok(v) = text.parse::<f64>() {
                (Value::Double(v), DataType::Double)
            } else {
                return Err(SqlError::validation(
                    position,
                    format!("number {text} is out of range"),
                ));
            }
        }
        ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
            (Value::String(s.clone()), DataType::String)
        }
        ast::Value::Boolean(b) => (Value::Boolean(*b), DataType::Boolean),
        ast::Value::Null => (Value::Null, DataType::Null),
        other => {
            return Err(SqlError::unsupported(position, format!("literal {other}")));
        }
    };
    Ok(Typed {
        expr: Expr::Literal(value),
        data_type,
    })
}

/// The length of `INTERVAL 'n' UNIT` in milliseconds.
///
/// # Errors
///
/// A non-numeric amount, a missing or unsupported unit (months and years have no fixed
/// length).
pub fn interval_ms(interval: &ast::Interval, position: Option<Position>) -> Result<i64, SqlError> {
    let text = match interval.value.as_ref() {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => s.clone(),
            ast::Value::Number(n, _) => n.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    };
    let amount: f64 = text.trim().parse().map_err(|_| {
        SqlError::validation(
            position,
            format!("interval amount '{text}' is not a number"),
        )
    })?;
    let unit_ms = match &interval.leading_field {
        Some(ast::DateTimeField::Millisecond | ast::DateTimeField::Milliseconds) => 1.0,
        Some(ast::DateTimeField::Second | ast::DateTimeField::Seconds) => 1_000.0,
        Some(ast::DateTimeField::Minute | ast::DateTimeField::Minutes) => 60_000.0,
        Some(ast::DateTimeField::Hour | ast::DateTimeField::Hours) => 3_600_000.0,
        Some(ast::DateTimeField::Day | ast::DateTimeField::Days) => 86_400_000.0,
        Some(other) => {
            return Err(SqlError::unsupported(
                position,
                format!("interval unit {other}: use MILLISECOND, SECOND, MINUTE, HOUR or DAY"),
            ));
        }
        None => {
            return Err(SqlError::validation(
                position,
                format!("interval '{text}' needs a unit, e.g. INTERVAL '{text}' SECOND"),
            ));
        }
    };
    let ms = amount * unit_ms;
    if !ms.is_finite() || ms.abs() > 1e17 {
        return Err(SqlError::validation(
            position,
            format!("interval '{text}' is out of range"),
        ));
    }
    Ok(ms.round() as i64)
}

fn expect_type(typed: &Typed, wanted: DataType, expr: &ast::Expr) -> Result<(), SqlError> {
    if typed.data_type == wanted || typed.data_type == DataType::Null {
        Ok(())
    } else {
        Err(SqlError::validation(
            position_of(expr),
            format!(
                "type mismatch: `{expr}` is {}, expected {wanted}",
                typed.data_type
            ),
        ))
    }
}

fn expect_boolean(typed: &Typed, expr: &ast::Expr) -> Result<(), SqlError> {
    expect_type(typed, DataType::Boolean, expr)
}

fn expect_numeric(typed: &Typed, expr: &ast::Expr) -> Result<(), SqlError> {
    if typed.data_type.is_numeric() {
        Ok(())
    } else {
        Err(SqlError::validation(
            position_of(expr),
            format!(
                "type mismatch: `{expr}` is {}, expected a number",
                typed.data_type
            ),
        ))
    }
}

fn expect_timestamp(typed: &Typed, expr: &ast::Expr) -> Result<(), SqlError> {
    if typed.data_type.is_timestamp() || typed.data_type == DataType::Null {
        Ok(())
    } else {
        Err(SqlError::validation(
            position_of(expr),
            format!(
                "type mismatch: `{expr}` is {}, expected a timestamp",
                typed.data_type
            ),
        ))
    }
}

fn comparable(a: &Typed, b: &Typed, position: Option<Position>) -> Result<(), SqlError> {
    if a.data_type.common(b.data_type).is_some() {
        Ok(())
    } else {
        Err(SqlError::validation(
            position,
            format!(
                "type mismatch: cannot compare {} with {}",
                a.data_type, b.data_type
            ),
        ))
    }
}

fn compile_binary(
    left: &ast::Expr,
    op: &ast::BinaryOperator,
    right: &ast::Expr,
    resolver: &mut dyn Resolver,
    position: Option<Position>,
) -> Result<Typed, SqlError> {
    use ast::BinaryOperator as B;
    let l = compile(left, resolver)?;
    let r = compile(right, resolver)?;
    let mismatch = || {
        Err(SqlError::validation(
            position,
            format!(
                "type mismatch: operator {op} cannot be applied to {} and {}",
                l.data_type, r.data_type
            ),
        ))
    };
    let boolean = |expr| {
        Ok(Typed {
            expr,
            data_type: DataType::Boolean,
        })
    };
    match op {
        B::And | B::Or => {
            expect_boolean(&l, left)?;
            expect_boolean(&r, right)?;
            let (a, b) = (Box::new(l.expr), Box::new(r.expr));
            boolean(if matches!(op, B::And) {
                Expr::And(a, b)
            } else {
                Expr::Or(a, b)
            })
        }
        B::Eq | B::NotEq | B::Lt | B::LtEq | B::Gt | B::GtEq => {
            if l.data_type.common(r.data_type).is_none() {
                return mismatch();
            }
            let cmp = match op {
                B::Eq => CompareOp::Eq,
                B::NotEq => CompareOp::NotEq,
                B::Lt => CompareOp::Lt,
                B::LtEq => CompareOp::LtEq,
                B::Gt => CompareOp::Gt,
                _ => CompareOp::GtEq,
            };
            boolean(Expr::Compare(cmp, Box::new(l.expr), Box::new(r.expr)))
        }
        B::StringConcat => {
            if !matches!(l.data_type, DataType::String | DataType::Null)
                || !matches!(r.data_type, DataType::String | DataType::Null)
            {
                return mismatch();
            }
            Ok(Typed {
                expr: Expr::Concat(vec![l.expr, r.expr]),
                data_type: DataType::String,
            })
        }
        B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo => {
            let arith = match op {
                B::Plus => ArithOp::Add,
                B::Minus => ArithOp::Sub,
                B::Multiply => ArithOp::Mul,
                B::Divide => ArithOp::Div,
                _ => ArithOp::Mod,
            };
            let result = match (l.data_type, r.data_type) {
                (a, b) if a.is_numeric() && b.is_numeric() => match a.common(b) {
                    Some(DataType::Null) | None => DataType::BigInt,
                    Some(t) => t,
                },
                (t, DataType::Interval) if t.is_timestamp() && arith != ArithOp::Mul => {
                    if !matches!(arith, ArithOp::Add | ArithOp::Sub) {
                        return mismatch();
                    }
                    t
                }
                (DataType::Interval, t) if t.is_timestamp() && arith == ArithOp::Add => t,
                (DataType::Interval, DataType::Interval)
                    if matches!(arith, ArithOp::Add | ArithOp::Sub) =>
                {
                    DataType::Interval
                }
                _ => return mismatch(),
            };
            Ok(Typed {
                expr: Expr::Arith(arith, Box::new(l.expr), Box::new(r.expr), result),
                data_type: result,
            })
        }
        other => Err(SqlError::unsupported(position, format!("operator {other}"))),
    }
}

fn compile_case(
    operand: Option<&ast::Expr>,
    conditions: &[ast::CaseWhen],
    else_result: Option<&ast::Expr>,
    resolver: &mut dyn Resolver,
    position: Option<Position>,
) -> Result<Typed, SqlError> {
    let operand = operand.map(|o| compile(o, resolver)).transpose()?;
    let mut branches = Vec::with_capacity(conditions.len());
    let mut result_type = DataType::Null;
    for when in conditions {
        let condition = compile(&when.condition, resolver)?;
        match &operand {
            Some(o) => comparable(o, &condition, position_of(&when.condition))?,
            None => expect_boolean(&condition, &when.condition)?,
        }
        let result = compile(&when.result, resolver)?;
        result_type = result_type.common(result.data_type).ok_or_else(|| {
            SqlError::validation(
                position_of(&when.result),
                format!(
                    "type mismatch: CASE branches of types {result_type} and {}",
                    result.data_type
                ),
            )
        })?;
        branches.push((condition.expr, result.expr));
    }
    let otherwise = match else_result {
        Some(e) => {
            let typed = compile(e, resolver)?;
            result_type = result_type.common(typed.data_type).ok_or_else(|| {
                SqlError::validation(
                    position_of(e),
                    format!(
                        "type mismatch: CASE branches of types {result_type} and {}",
                        typed.data_type
                    ),
                )
            })?;
            typed.expr
        }
        None => Expr::Literal(Value::Null),
    };
    if branches.is_empty() {
        return Err(SqlError::validation(position, "CASE without WHEN"));
    }
    Ok(Typed {
        expr: Expr::Case {
            operand: operand.map(|o| Box::new(o.expr)),
            branches,
            otherwise: Box::new(otherwise),
        },
        data_type: result_type,
    })
}

/// The plain arguments of a call (no `DISTINCT`, no `*`, no named arguments).
///
/// # Errors
///
/// Named arguments, `*`, clauses such as `ORDER BY` inside the call.
pub fn function_args(function: &ast::Function) -> Result<Vec<&ast::Expr>, SqlError> {
    let position = Position::of(function.name.span());
    match &function.args {
        ast::FunctionArguments::None => Ok(Vec::new()),
        ast::FunctionArguments::Subquery(_) => Err(SqlError::unsupported(
            position,
            "a subquery as a function argument",
        )),
        ast::FunctionArguments::List(list) => {
            if !list.clauses.is_empty() {
                return Err(SqlError::unsupported(
                    position,
                    format!("clauses inside {}(..)", function.name),
                ));
            }
            list.args
                .iter()
                .map(|arg| match arg {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
                    other => Err(SqlError::unsupported(
                        position,
                        format!("argument `{other}` of {}", function.name),
                    )),
                })
                .collect()
        }
    }
}

fn compile_function(
    function: &ast::Function,
    resolver: &mut dyn Resolver,
    position: Option<Position>,
) -> Result<Typed, SqlError> {
    let name = function.name.to_string().to_ascii_uppercase();
    if function.over.is_some() {
        return Err(SqlError::unsupported(
            position,
            format!("{name}(..) OVER (..): OVER aggregations are not supported yet"),
        ));
    }
    if crate::agg::AggFunc::from_name(&name).is_some() {
        return Err(SqlError::validation(
            position,
            format!("aggregate function {name} is not allowed here"),
        ));
    }
    let raw = function_args(function)?;
    let mut args = Vec::with_capacity(raw.len());
    for arg in &raw {
        args.push(compile(arg, resolver)?);
    }
    let arity = |min: usize, max: usize| {
        if args.len() < min || args.len() > max {
            Err(SqlError::validation(
                position,
                format!(
                    "{name} takes {} argument{}, got {}",
                    if min == max {
                        min.to_string()
                    } else {
                        format!("{min} to {max}")
                    },
                    if max == 1 { "" } else { "s" },
                    args.len()
                ),
            ))
        } else {
            Ok(())
        }
    };
    let check = |i: usize, ok: bool, wanted: &str| -> Result<(), SqlError> {
        if ok || args[i].data_type == DataType::Null {
            Ok(())
        } else {
            Err(SqlError::validation(
                position_of(raw[i]),
                format!(
                    "type mismatch: argument {} of {name} is {}, expected {wanted}",
                    i + 1,
                    args[i].data_type
                ),
            ))
        }
    };
    let (func, data_type) = match name.as_str() {
        "UPPER" | "LOWER" | "CHAR_LENGTH" | "CHARACTER_LENGTH" | "TRIM" | "LTRIM" | "RTRIM" => {
            arity(1, 1)?;
            check(0, args[0].data_type == DataType::String, "STRING")?;
            match name.as_str() {
                "UPPER" => (Func::Upper, DataType::String),
                "LOWER" => (Func::Lower, DataType::String),
                "TRIM" => (Func::Trim, DataType::String),
                "LTRIM" => (Func::Ltrim, DataType::String),
                "RTRIM" => (Func::Rtrim, DataType::String),
                _ => (Func::CharLength, DataType::BigInt),
            }
        }
        "CONCAT" => {
            for (i, arg) in args.iter().enumerate() {
                check(i, arg.data_type == DataType::String, "STRING")?;
            }
            return Ok(Typed {
                expr: Expr::Concat(args.into_iter().map(|a| a.expr).collect()),
                data_type: DataType::String,
            });
        }
        "SUBSTRING" | "SUBSTR" => {
            arity(2, 3)?;
            check(0, args[0].data_type == DataType::String, "STRING")?;
            for (i, arg) in args.iter().enumerate().skip(1) {
                check(i, arg.data_type == DataType::BigInt, "BIGINT")?;
            }
            (Func::Substring, DataType::String)
        }
        "REPLACE" => {
            arity(3, 3)?;
            for (i, arg) in args.iter().enumerate() {
                check(i, arg.data_type == DataType::String, "STRING")?;
            }
            (Func::Replace, DataType::String)
        }
        "ABS" => {
            arity(1, 1)?;
            check(0, args[0].data_type.is_numeric(), "a number")?;
            (Func::Abs, args[0].data_type)
        }
        "MOD" => {
            arity(2, 2)?;
            check(0, args[0].data_type == DataType::BigInt, "BIGINT")?;
            check(1, args[1].data_type == DataType::BigInt, "BIGINT")?;
            let mut args = args.into_iter();
            let (a, b) = (args.next(), args.next());
            let (Some(a), Some(b)) = (a, b) else {
                return Err(SqlError::validation(position, "MOD takes 2 arguments"));
            };
            return Ok(Typed {
                expr: Expr::Arith(
                    ArithOp::Mod,
                    Box::new(a.expr),
                    Box::new(b.expr),
                    DataType::BigInt,
                ),
                data_type: DataType::BigInt,
            });
        }
        "ROUND" => {
            arity(1, 2)?;
            check(0, args[0].data_type.is_numeric(), "a number")?;
            if args.len() == 2 {
                check(1, args[1].data_type == DataType::BigInt, "BIGINT")?;
            }
            (Func::Round, args[0].data_type)
        }
        "FLOOR" | "CEIL" | "CEILING" => {
            arity(1, 1)?;
            check(0, args[0].data_type.is_numeric(), "a number")?;
            let func = if name == "FLOOR" {
                Func::Floor
            } else {
                Func::Ceil
            };
            (func, args[0].data_type)
        }
        "POWER" | "POW" => {
            arity(2, 2)?;
            check(0, args[0].data_type.is_numeric(), "a number")?;
            check(1, args[1].data_type.is_numeric(), "a number")?;
            (Func::Power, DataType::Double)
        }
        "SQRT" | "LN" | "LOG10" | "EXP" => {
            arity(1, 1)?;
            check(0, args[0].data_type.is_numeric(), "a number")?;
            let func = match name.as_str() {
                "SQRT" => Func::Sqrt,
                "LN" => Func::Ln,
                "LOG10" => Func::Log10,
                _ => Func::Exp,
            };
            (func, DataType::Double)
        }
        "COALESCE" => {
            if args.is_empty() {
                arity(1, usize::MAX)?;
            }
            let mut data_type = DataType::Null;
            for (i, arg) in args.iter().enumerate() {
                data_type = data_type.common(arg.data_type).ok_or_else(|| {
                    SqlError::validation(
                        position_of(raw[i]),
                        format!(
                            "type mismatch: COALESCE of {data_type} and {}",
                            arg.data_type
                        ),
                    )
                })?;
            }
            (Func::Coalesce, data_type)
        }
        "NULLIF" => {
            arity(2, 2)?;
            comparable(&args[0], &args[1], position)?;
            (Func::NullIf, args[0].data_type)
        }
        "IF" => {
            arity(3, 3)?;
            check(0, args[0].data_type == DataType::Boolean, "BOOLEAN")?;
            let data_type = args[1].data_type.common(args[2].data_type).ok_or_else(|| {
                SqlError::validation(
                    position,
                    format!(
                        "type mismatch: IF branches of types {} and {}",
                        args[1].data_type, args[2].data_type
                    ),
                )
            })?;
            (Func::If, data_type)
        }
        "TO_TIMESTAMP_LTZ" => {
            arity(1, 2)?;
            check(0, args[0].data_type == DataType::BigInt, "BIGINT")?;
            let precision = match args.get(1).map(|a| &a.expr) {
                None => 3,
                Some(Expr::Literal(Value::BigInt(p @ (0 | 3)))) => *p,
                Some(_) => {
                    return Err(SqlError::validation(
                        position_of(raw[1]),
                        "the precision of TO_TIMESTAMP_LTZ must be the literal 0 (seconds) \
                         or 3 (milliseconds)",
                    ));
                }
            };
            let epoch = args.swap_remove(0).expr;
            return Ok(Typed {
                expr: Expr::Call(
                    Func::ToTimestampLtz,
                    vec![epoch, Expr::Literal(Value::BigInt(precision))],
                ),
                data_type: DataType::TimestampLtz,
            });
        }
        "TO_TIMESTAMP" => {
            arity(1, 1)?;
            check(0, args[0].data_type == DataType::String, "STRING")?;
            (Func::ToTimestamp, DataType::Timestamp)
        }
        "YEAR" | "MONTH" | "DAYOFMONTH" | "HOUR" | "MINUTE" | "SECOND" => {
            arity(1, 1)?;
            check(0, args[0].data_type.is_timestamp(), "a timestamp")?;
            let func = match name.as_str() {
                "YEAR" => Func::Year,
                "MONTH" => Func::Month,
                "DAYOFMONTH" => Func::Day,
                "HOUR" => Func::Hour,
                "MINUTE" => Func::Minute,
                _ => Func::Second,
            };
            (func, DataType::BigInt)
        }
        "DATE_FORMAT" => {
            arity(2, 2)?;
            check(0, args[0].data_type.is_timestamp(), "a timestamp")?;
            let Expr::Literal(Value::String(pattern)) = &args[1].expr else {
                return Err(SqlError::validation(
                    position_of(raw[1]),
                    "the pattern of DATE_FORMAT must be a string literal",
                ));
            };
            let chrono_pattern = java_to_chrono(pattern).map_err(|e| {
                SqlError::validation(position_of(raw[1]), format!("DATE_FORMAT pattern: {e}"))
            })?;
            let ts = args.swap_remove(0).expr;
            return Ok(Typed {
                expr: Expr::Call(
                    Func::DateFormat,
                    vec![ts, Expr::Literal(Value::String(chrono_pattern))],
                ),
                data_type: DataType::String,
            });
        }
        "UNIX_TIMESTAMP_MS" => {
            arity(1, 1)?;
            check(0, args[0].data_type.is_timestamp(), "a timestamp")?;
            (Func::EpochMillis, DataType::BigInt)
        }
        _ => {
            return Err(SqlError::validation(
                position,
                format!("unknown function {name}"),
            ));
        }
    };
    Ok(Typed {
        expr: Expr::Call(func, args.into_iter().map(|a| a.expr).collect()),
        data_type,
    })
}

/// Translates a Java `SimpleDateFormat` pattern (as Flink's `DATE_FORMAT` takes) to chrono's.
fn java_to_chrono(pattern: &str) -> Result<String, String> {
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        if c.is_ascii_alphabetic() {
            let spec = match (c, run) {
                ('y', 4) => "%Y",
                ('y', 2) => "%y",
                ('M', 2) => "%m",
                ('d', 2) => "%d",
                ('H', 2) => "%H",
                ('m', 2) => "%M",
                ('s', 2) => "%S",
                ('S', 3) => "%3f",
                _ => {
                    return Err(format!(
                        "'{}' is not supported (use yyyy, yy, MM, dd, HH, mm, ss, SSS)",
                        c.to_string().repeat(run)
                    ));
                }
            };
            out.push_str(spec);
        } else if c == '%' {
            out.push_str(&"%%".repeat(run));
        } else {
            out.extend(std::iter::repeat_n(c, run));
        }
        i += run;
    }
    Ok(out)
}

/// Whether `CAST(from AS to)` is allowed.
pub fn castable(from: DataType, to: DataType) -> bool {
    use DataType as T;
    from == to
        || from == T::Null
        || to == T::String
        || matches!(
            (from, to),
            (T::BigInt | T::Double, T::BigInt | T::Double)
                | (T::String, _)
                | (T::Boolean, T::BigInt)
                | (T::BigInt, T::Boolean)
                | (
                    T::Timestamp | T::TimestampLtz,
                    T::Timestamp | T::TimestampLtz
                )
        )
}

/// Converts `value` to `to` (`CAST` semantics).
///
/// # Errors
///
/// A string that is no value of `to`, a double out of `BIGINT`'s range.
pub fn cast(value: Value, to: DataType) -> Result<Value, String> {
    use DataType as T;
    Ok(match (value, to) {
        (Value::Null, _) => Value::Null,
        (v, T::String) => Value::String(v.to_string()),
        (Value::BigInt(v), T::BigInt) => Value::BigInt(v),
        (Value::BigInt(v), T::Double) => Value::Double(v as f64),
        (Value::Double(v), T::Double) => Value::Double(v),
        (Value::Double(v), T::BigInt) => {
            if v.is_nan() || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&v) {
                return Err(format!(
                    "{} is out of the range of BIGINT",
                    Value::Double(v)
                ));
            }
            Value::BigInt(v.trunc() as i64)
        }
        (Value::Boolean(b), T::BigInt) => Value::BigInt(i64::from(b)),
        (Value::BigInt(v), T::Boolean) => Value::Boolean(v != 0),
        (Value::Boolean(b), T::Boolean) => Value::Boolean(b),
        (Value::String(s), T::BigInt) => Value::BigInt(
            s.trim()
                .parse()
                .map_err(|_| format!("'{s}' is not a BIGINT"))?,
        ),
        (Value::String(s), T::Double) => Value::Double(
            s.trim()
                .parse()
                .map_err(|_| format!("'{s}' is not a DOUBLE"))?,
        ),
        (Value::String(s), T::Boolean) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            _ => return Err(format!("'{s}' is not a BOOLEAN")),
        },
        (Value::String(s), T::Timestamp) => Value::Timestamp(parse_timestamp(&s)?),
        (Value::String(s), T::TimestampLtz) => Value::TimestampLtz(parse_timestamp(&s)?),
        (Value::Timestamp(v) | Value::TimestampLtz(v), T::Timestamp) => Value::Timestamp(v),
        (Value::Timestamp(v) | Value::TimestampLtz(v), T::TimestampLtz) => Value::TimestampLtz(v),
        (v, to) => return Err(format!("cannot cast {v} to {to}")),
    })
}

/// Parses `yyyy-MM-dd HH:mm:ss[.SSS]` (or with a `T`) as UTC milliseconds.
///
/// # Errors
///
/// Any other text.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(trimmed, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(trimmed, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc().timestamp_millis());
    }
    Err(format!(
        "'{text}' is not a timestamp (yyyy-MM-dd HH:mm:ss[.SSS])"
    ))
}

impl Expr {
    /// Evaluates the expression on `row`.
    ///
    /// # Errors
    ///
    /// A division by zero of `BIGINT`s, a failing `CAST`, a timestamp out of range.
    pub fn eval(&self, row: &[Value]) -> Result<Value, String> {
        Ok(match self {
            Self::Column(i) => row
                .get(*i)
                .cloned()
                .ok_or_else(|| format!("row of {} columns has no column {i}", row.len()))?,
            Self::Literal(v) => v.clone(),
            Self::Not(e) => match e.eval(row)? {
                Value::Boolean(b) => Value::Boolean(!b),
                _ => Value::Null,
            },
            Self::Negate(e) => match e.eval(row)? {
                Value::BigInt(v) => Value::BigInt(v.wrapping_neg()),
                Value::Double(v) => Value::Double(-v),
                _ => Value::Null,
            },
            Self::And(a, b) => {
                let left = a.eval(row)?.as_bool();
                if left == Some(false) {
                    return Ok(Value::Boolean(false));
                }
                match (left, b.eval(row)?.as_bool()) {
                    (_, Some(false)) => Value::Boolean(false),
                    (Some(true), Some(true)) => Value::Boolean(true),
                    _ => Value::Null,
                }
            }
            Self::Or(a, b) => {
                let left = a.eval(row)?.as_bool();
                if left == Some(true) {
                    return Ok(Value::Boolean(true));
                }
                match (left, b.eval(row)?.as_bool()) {
                    (_, Some(true)) => Value::Boolean(true),
                    (Some(false), Some(false)) => Value::Boolean(false),
                    _ => Value::Null,
                }
            }
            Self::Arith(op, a, b, result) => arith(*op, a.eval(row)?, b.eval(row)?, *result)?,
            Self::Compare(op, a, b) => match compare_values(&a.eval(row)?, &b.eval(row)?) {
                None => Value::Null,
                Some(ordering) => Value::Boolean(match op {
                    CompareOp::Eq => ordering.is_eq(),
                    CompareOp::NotEq => ordering.is_ne(),
                    CompareOp::Lt => ordering.is_lt(),
                    CompareOp::LtEq => ordering.is_le(),
                    CompareOp::Gt => ordering.is_gt(),
                    CompareOp::GtEq => ordering.is_ge(),
                }),
            },
            Self::Concat(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part.eval(row)? {
                        Value::Null => return Ok(Value::Null),
                        v => out.push_str(&v.to_string()),
                    }
                }
                Value::String(out)
            }
            Self::IsNull(e, negated) => Value::Boolean(e.eval(row)?.is_null() != *negated),
            Self::Case {
                operand,
                branches,
                otherwise,
            } => {
                let subject = operand.as_ref().map(|o| o.eval(row)).transpose()?;
                for (when, then) in branches {
                    let hit = match &subject {
                        Some(s) => compare_values(s, &when.eval(row)?).is_some_and(|o| o.is_eq()),
                        None => when.eval(row)?.as_bool() == Some(true),
                    };
                    if hit {
                        return then.eval(row);
                    }
                }
                otherwise.eval(row)?
            }
            Self::Cast { expr, to, safe } => match cast(expr.eval(row)?, *to) {
                Ok(v) => v,
                Err(_) if *safe => Value::Null,
                Err(e) => return Err(format!("CAST failed: {e}")),
            },
            Self::InList {
                expr,
                list,
                negated,
            } => {
                let subject = expr.eval(row)?;
                if subject.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                for item in list {
                    match compare_values(&subject, &item.eval(row)?) {
                        Some(o) if o.is_eq() => return Ok(Value::Boolean(!negated)),
                        None => saw_null = true,
                        Some(_) => {}
                    }
                }
                if saw_null {
                    Value::Null
                } else {
                    Value::Boolean(*negated)
                }
            }
            Self::Like {
                expr,
                pattern,
                negated,
            } => match (expr.eval(row)?, pattern.eval(row)?) {
                (Value::String(s), Value::String(p)) => Value::Boolean(like(&s, &p) != *negated),
                _ => Value::Null,
            },
            Self::Call(func, args) => call(*func, args, row)?,
        })
    }

    /// Whether the condition holds on `row` (`NULL` does not hold, as in `WHERE`).
    ///
    /// # Errors
    ///
    /// As [`Expr::eval`].
    pub fn holds(&self, row: &[Value]) -> Result<bool, String> {
        Ok(self.eval(row)?.as_bool() == Some(true))
    }
}

/// Compares two values of comparable types; `None` if either is `NULL`.
pub fn compare_values(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::BigInt(x), Value::Double(y)) => Some((*x as f64).total_cmp(y)),
        (Value::Double(x), Value::BigInt(y)) => Some(x.total_cmp(&(*y as f64))),
        (
            Value::Timestamp(x) | Value::TimestampLtz(x),
            Value::Timestamp(y) | Value::TimestampLtz(y),
        ) => Some(x.cmp(y)),
        _ => Some(a.cmp(b)),
    }
}

fn arith(op: ArithOp, a: Value, b: Value, result: DataType) -> Result<Value, String> {
    if a.is_null() || b.is_null() {
        return Ok(Value::Null);
    }
    Ok(match result {
        DataType::BigInt | DataType::Interval => {
            let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) else {
                return Err(format!("arithmetic on {a} and {b}"));
            };
            // Java's long arithmetic, as Flink's: wrapping on overflow.
            let v = match op {
                ArithOp::Add => x.wrapping_add(y),
                ArithOp::Sub => x.wrapping_sub(y),
                ArithOp::Mul => x.wrapping_mul(y),
                ArithOp::Div | ArithOp::Mod if y == 0 => {
                    return Err(format!("division by zero ({x} {} 0)", op_symbol(op)));
                }
                ArithOp::Div => x.wrapping_div(y),
                ArithOp::Mod => x.wrapping_rem(y),
            };
            Value::BigInt(v)
        }
        DataType::Double => {
            let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
                return Err(format!("arithmetic on {a} and {b}"));
            };
            Value::Double(match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div => x / y,
                ArithOp::Mod => x % y,
            })
        }
        DataType::Timestamp | DataType::TimestampLtz => {
            let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) else {
                return Err(format!("arithmetic on {a} and {b}"));
            };
            let v = match op {
                ArithOp::Add => x.checked_add(y),
                _ => x.checked_sub(y),
            }
            .ok_or_else(|| format!("timestamp arithmetic out of range ({a}, {b})"))?;
            if result == DataType::Timestamp {
                Value::Timestamp(v)
            } else {
                Value::TimestampLtz(v)
            }
        }
        other => return Err(format!("arithmetic in type {other}")),
    })
}

fn op_symbol(op: ArithOp) -> &'static str {
    match op {
        ArithOp::Add => "+",
        ArithOp::Sub => "-",
        ArithOp::Mul => "*",
        ArithOp::Div => "/",
        ArithOp::Mod => "%",
    }
}

/// SQL `LIKE`: `%` matches any run of characters, `_` exactly one.
pub fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative matching with backtracking to the last `%` (linear space, no recursion).
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '%')
}

fn call(func: Func, args: &[Expr], row: &[Value]) -> Result<Value, String> {
    let mut values = Vec::with_capacity(args.len());
    // COALESCE and IF evaluate lazily.
    match func {
        Func::Coalesce => {
            for arg in args {
                let v = arg.eval(row)?;
                if !v.is_null() {
                    return Ok(v);
                }
            }
            return Ok(Value::Null);
        }
        Func::If => {
            let [condition, then, otherwise] = args else {
                return Err("IF takes 3 arguments".to_string());
            };
            return if condition.holds(row)? {
                then.eval(row)
            } else {
                otherwise.eval(row)
            };
        }
        _ => {}
    }
    for arg in args {
        values.push(arg.eval(row)?);
    }
    if func != Func::NullIf && values.iter().any(Value::is_null) {
        return Ok(Value::Null);
    }
    let string = |i: usize| match &values[i] {
        Value::String(s) => Ok(s.as_str()),
        other => Err(format!("{other} is not a string")),
    };
    let int = |i: usize| {
        values[i]
            .as_i64()
            .ok_or_else(|| "not an integer".to_string())
    };
    let float = |i: usize| values[i].as_f64().ok_or_else(|| "not a number".to_string());
    let datetime = |i: usize| {
        let ms = int(i)?;
        chrono::DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| format!("timestamp {ms} ms is out of range"))
    };
    use chrono::{Datelike, Timelike};
    Ok(match func {
        Func::Upper => Value::String(string(0)?.to_uppercase()),
        Func::Lower => Value::String(string(0)?.to_lowercase()),
        Func::CharLength => Value::BigInt(string(0)?.chars().count() as i64),
        Func::Trim => Value::String(string(0)?.trim().to_string()),
        Func::Ltrim => Value::String(string(0)?.trim_start().to_string()),
        Func::Rtrim => Value::String(string(0)?.trim_end().to_string()),
        Func::Replace => Value::String(string(0)?.replace(string(1)?, string(2)?)),
        Func::Position => {
            let (needle, haystack) = (string(0)?, string(1)?);
            Value::BigInt(match haystack.find(needle) {
                Some(byte) => haystack[..byte].chars().count() as i64 + 1,
                None => 0,
            })
        }
        Func::Substring => {
            let s = string(0)?;
            let start = int(1)?;
            let length = if values.len() > 2 {
                Some(int(2)?)
            } else {
                None
            };
            Value::String(substring(s, start, length)?)
        }
        Func::Abs => match &values[0] {
            Value::BigInt(v) => Value::BigInt(v.wrapping_abs()),
            Value::Double(v) => Value::Double(v.abs()),
            other => return Err(format!("ABS of {other}")),
        },
        Func::Round => {
            let digits = if values.len() > 1 { int(1)? } else { 0 };
            match &values[0] {
                Value::BigInt(v) if digits >= 0 => Value::BigInt(*v),
                Value::BigInt(v) => {
                    let factor = 10i64.checked_pow(u32::try_from(-digits).unwrap_or(u32::MAX));
                    match factor {
                        Some(f) => Value::BigInt(((*v as f64 / f as f64).round() as i64) * f),
                        None => Value::BigInt(0),
                    }
                }
                Value::Double(v) => {
                    let factor = 10f64.powi(i32::try_from(digits).unwrap_or(0));
                    Value::Double((v * factor).round() / factor)
                }
                other => return Err(format!("ROUND of {other}")),
            }
        }
        Func::Floor | Func::Ceil => match &values[0] {
            Value::BigInt(v) => Value::BigInt(*v),
            Value::Double(v) => Value::Double(if func == Func::Floor {
                v.floor()
            } else {
                v.ceil()
            }),
            other => return Err(format!("FLOOR/CEIL of {other}")),
        },
        Func::Power => Value::Double(float(0)?.powf(float(1)?)),
        Func::Sqrt => Value::Double(float(0)?.sqrt()),
        Func::Ln => Value::Double(float(0)?.ln()),
        Func::Log10 => Value::Double(float(0)?.log10()),
        Func::Exp => Value::Double(float(0)?.exp()),
        Func::NullIf => {
            if compare_values(&values[0], &values[1]).is_some_and(|o| o.is_eq()) {
                Value::Null
            } else {
                values.swap_remove(0)
            }
        }
        Func::ToTimestampLtz => {
            let epoch = int(0)?;
            let ms = if int(1)? == 0 {
                epoch
                    .checked_mul(1_000)
                    .ok_or_else(|| format!("TO_TIMESTAMP_LTZ({epoch}, 0) is out of range"))?
            } else {
                epoch
            };
            Value::TimestampLtz(ms)
        }
        Func::ToTimestamp => Value::Timestamp(parse_timestamp(string(0)?)?),
        Func::Year => Value::BigInt(i64::from(datetime(0)?.year())),
        Func::Month => Value::BigInt(i64::from(datetime(0)?.month())),
        Func::Day => Value::BigInt(i64::from(datetime(0)?.day())),
        Func::Hour => Value::BigInt(i64::from(datetime(0)?.hour())),
        Func::Minute => Value::BigInt(i64::from(datetime(0)?.minute())),
        Func::Second => Value::BigInt(i64::from(datetime(0)?.second())),
        Func::DateFormat => Value::String(datetime(0)?.format(string(1)?).to_string()),
        Func::EpochMillis => Value::BigInt(int(0)?),
        Func::Coalesce | Func::If => unreachable_lazy(func)?,
    })
}

/// Lazily evaluated functions return before the eager path; reaching it is a planner bug.
fn unreachable_lazy(func: Func) -> Result<Value, String> {
    Err(format!("internal error: {func:?} evaluated eagerly"))
}

/// SQL `SUBSTRING(s FROM start FOR length)`: 1-based; a start before 1 eats into the length.
fn substring(s: &str, start: i64, length: Option<i64>) -> Result<String, String> {
    if let Some(l) = length
        && l < 0
    {
        return Err(format!("SUBSTRING with a negative length {l}"));
    }
    let end = length.map(|l| start.saturating_add(l));
    let from = start.max(1);
    let chars = s.chars().enumerate().filter(|(i, _)| {
        let position = *i as i64 + 1;
        position >= from && end.is_none_or(|e| position < e)
    });
    Ok(chars.map(|(_, c)| c).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Column;
    use sqlparser::dialect::GenericDialect;
    use sqlparser::parser::Parser;

    fn schema() -> Schema {
        Schema::new(vec![
            Column::new("name", DataType::String),
            Column::new("n", DataType::BigInt),
            Column::new("x", DataType::Double),
            Column::new("ts", DataType::TimestampLtz),
        ])
    }

    fn eval(sql: &str, row: &[Value]) -> Result<Value, String> {
        let expr = Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| e.to_string())?;
        let schema = schema();
        let mut resolver = SchemaResolver {
            schema: &schema,
            qualifiers: Vec::new(),
        };
        let typed = compile(&expr, &mut resolver).map_err(|e| e.to_string())?;
        typed.expr.eval(row)
    }

    fn row() -> Vec<Value> {
        vec![
            Value::String("Alice".into()),
            Value::BigInt(7),
            Value::Double(2.5),
            Value::TimestampLtz(1_700_000_000_123),
        ]
    }

    #[test]
    fn arithmetic_follows_flink_types() {
        assert_eq!(eval("n / 2", &row()), Ok(Value::BigInt(3)));
        assert_eq!(eval("n / 2.0", &row()), Ok(Value::Double(3.5)));
        assert_eq!(eval("n * x + 1", &row()), Ok(Value::Double(18.5)));
        assert_eq!(eval("-n % 4", &row()), Ok(Value::BigInt(-3)));
        assert!(
            eval("n / 0", &row())
                .unwrap_err()
                .contains("division by zero")
        );
        assert_eq!(
            eval("ts - INTERVAL '1' SECOND", &row()),
            Ok(Value::TimestampLtz(1_699_999_999_123))
        );
    }

    #[test]
    fn comparisons_and_logic_are_three_valued() {
        assert_eq!(eval("n > 6 AND x < 3", &row()), Ok(Value::Boolean(true)));
        assert_eq!(eval("NULL > 1 OR n = 7", &row()), Ok(Value::Boolean(true)));
        assert_eq!(eval("NULL > 1 AND n = 7", &row()), Ok(Value::Null));
        assert_eq!(
            eval("NULL > 1 AND n = 8", &row()),
            Ok(Value::Boolean(false))
        );
        assert_eq!(eval("n BETWEEN 1 AND 7", &row()), Ok(Value::Boolean(true)));
        assert_eq!(eval("n IN (1, 2, NULL)", &row()), Ok(Value::Null));
        assert_eq!(eval("name LIKE 'A%e'", &row()), Ok(Value::Boolean(true)));
        assert_eq!(
            eval("name NOT LIKE '_lic_'", &row()),
            Ok(Value::Boolean(false))
        );
    }

    #[test]
    fn case_cast_and_functions() {
        assert_eq!(
            eval("CASE WHEN n > 5 THEN 'big' ELSE 'small' END", &row()),
            Ok(Value::String("big".into()))
        );
        assert_eq!(
            eval("CASE n WHEN 7 THEN 1 END", &row()),
            Ok(Value::BigInt(1))
        );
        assert_eq!(eval("CAST('42' AS BIGINT)", &row()), Ok(Value::BigInt(42)));
        assert_eq!(eval("CAST(x AS BIGINT)", &row()), Ok(Value::BigInt(2)));
        assert_eq!(
            eval("CAST(n AS STRING)", &row()),
            Ok(Value::String("7".into()))
        );
        assert!(
            eval("CAST(name AS BIGINT)", &row())
                .unwrap_err()
                .contains("is not a BIGINT")
        );
        assert_eq!(eval("TRY_CAST(name AS BIGINT)", &row()), Ok(Value::Null));
        assert_eq!(
            eval(
                "UPPER(name) || '!' || CAST(CHAR_LENGTH(name) AS STRING)",
                &row()
            ),
            Ok(Value::String("ALICE!5".into()))
        );
        assert_eq!(
            eval("SUBSTRING(name FROM 2 FOR 3)", &row()),
            Ok(Value::String("lic".into()))
        );
        assert_eq!(eval("ROUND(x * 3.333, 2)", &row()), Ok(Value::Double(8.33)));
        assert_eq!(eval("COALESCE(NULL, n)", &row()), Ok(Value::BigInt(7)));
        assert_eq!(
            eval("TO_TIMESTAMP_LTZ(n, 0)", &row()),
            Ok(Value::TimestampLtz(7_000))
        );
        assert_eq!(eval("HOUR(ts)", &row()), Ok(Value::BigInt(22)));
        assert_eq!(
            eval("EXTRACT(YEAR FROM ts)", &row()),
            Ok(Value::BigInt(2023))
        );
        assert_eq!(
            eval("DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm')", &row()),
            Ok(Value::String("2023-11-14 22:13".into()))
        );
    }

    #[test]
    fn compile_errors_name_what_and_where() {
        let error = eval("n + nme", &row()).unwrap_err();
        assert!(
            error.contains("line 1, column 5") && error.contains("column 'nme' not found"),
            "{error}"
        );
        let error = eval("name + 1", &row()).unwrap_err();
        assert!(error.contains("type mismatch"), "{error}");
        let error = eval("FOO(n)", &row()).unwrap_err();
        assert!(error.contains("unknown function FOO"), "{error}");
    }

    proptest::proptest! {
        #[test]
        fn like_agrees_with_a_regex_free_reference(text in "[ab]{0,6}", pattern in "[ab%_]{0,5}") {
            // Reference: recursive matching on chars.
            fn reference(t: &[char], p: &[char]) -> bool {
                match p.split_first() {
                    None => t.is_empty(),
                    Some(('%', rest)) => (0..=t.len()).any(|i| reference(&t[i..], rest)),
                    Some((c, rest)) => t.split_first().is_some_and(|(h, tail)| {
                        (*c == '_' || c == h) && reference(tail, rest)
                    }),
                }
            }
            let t: Vec<char> = text.chars().collect();
            let p: Vec<char> = pattern.chars().collect();
            proptest::prop_assert_eq!(like(&text, &pattern), reference(&t, &p));
        }
    }
}
