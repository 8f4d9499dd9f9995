//! The errors of the SQL layer: what is wrong, and where in the SQL text.

use std::fmt;

/// A place in the SQL text: line and column, both counting from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The line, from 1.
    pub line: u64,
    /// The column, from 1.
    pub column: u64,
}

impl Position {
    /// The start of `span`, if the parser knew it (spans of synthesized nodes are empty).
    pub fn of(span: sqlparser::tokenizer::Span) -> Option<Self> {
        Self::at(span.start)
    }

    /// `location`, if it is a real one (the parser uses line 0 for unknown).
    pub fn at(location: sqlparser::tokenizer::Location) -> Option<Self> {
        (location.line > 0).then_some(Self {
            line: location.line,
            column: location.column,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// The errors of the SQL layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The SQL text does not parse.
    #[error("SQL parse error at {}: {message}", fmt_position(.position))]
    Parse {
        /// Where, if known.
        position: Option<Position>,
        /// What is wrong.
        message: String,
    },
    /// The SQL parses but is wrong: an unknown table or column, a type mismatch, a non-time
    /// attribute in a window TVF, an invalid connector option.
    #[error("SQL validation error at {}: {message}", fmt_position(.position))]
    Validation {
        /// Where, if known.
        position: Option<Position>,
        /// What is wrong.
        message: String,
    },
    /// The SQL is valid but uses a construct this planner does not support (yet).
    #[error("unsupported SQL at {}: {message}", fmt_position(.position))]
    Unsupported {
        /// Where, if known.
        position: Option<Position>,
        /// What is not supported.
        message: String,
    },
    /// Building the job graph failed.
    #[error(transparent)]
    Graph(#[from] eichhorn::GraphError),
    /// The job failed (a malformed input row, an error evaluating an expression, ...).
    #[error(transparent)]
    Job(#[from] eichhorn::JobError),
}

fn fmt_position(position: &Option<Position>) -> String {
    match position {
        Some(p) => p.to_string(),
        None => "an unknown position".to_string(),
    }
}

impl SqlError {
    /// A validation error at `position`.
    pub fn validation(position: Option<Position>, message: impl Into<String>) -> Self {
        Self::Validation {
            position,
            message: message.into(),
        }
    }

    /// An unsupported-construct error at `position`.
    pub fn unsupported(position: Option<Position>, message: impl Into<String>) -> Self {
        Self::Unsupported {
            position,
            message: message.into(),
        }
    }

    /// Where in the SQL text the error is, if it is about the text.
    pub fn position(&self) -> Option<Position> {
        match self {
            Self::Parse { position, .. }
            | Self::Validation { position, .. }
            | Self::Unsupported { position, .. } => *position,
            Self::Graph(_) | Self::Job(_) => None,
        }
    }
}

impl From<sqlparser::parser::ParserError> for SqlError {
    /// sqlparser puts the position at the end of its message (`... at Line: 2, Column: 9`);
    /// it is moved to the front, in the same form as every other error of this crate.
    fn from(error: sqlparser::parser::ParserError) -> Self {
        use sqlparser::parser::ParserError;
        let text = match error {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
            ParserError::RecursionLimitExceeded => "the statement nests too deeply".to_string(),
        };
        let (message, position) = split_position(&text);
        Self::Parse { position, message }
    }
}

impl From<sqlparser::tokenizer::TokenizerError> for SqlError {
    fn from(error: sqlparser::tokenizer::TokenizerError) -> Self {
        Self::Parse {
            position: Position::at(error.location),
            message: error.message,
        }
    }
}

/// Splits `"<message> at Line: L, Column: C"` into the message and the position.
fn split_position(text: &str) -> (String, Option<Position>) {
    let Some(at) = text.rfind(" at Line: ") else {
        return (text.to_string(), None);
    };
    let tail = &text[at + " at Line: ".len()..];
    let mut parts = tail.split(", Column: ");
    let line = parts.next().and_then(|l| l.trim().parse().ok());
    let column = parts.next().and_then(|c| c.trim().parse().ok());
    match (line, column) {
        (Some(line), Some(column)) => (text[..at].to_string(), Some(Position { line, column })),
        _ => (text.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_positions_move_to_the_front() {
        let (message, position) = split_position("Expected: ), found: t at Line: 2, Column: 58");
        assert_eq!(message, "Expected: ), found: t");
        assert_eq!(
            position,
            Some(Position {
                line: 2,
                column: 58
            })
        );
        let (message, position) = split_position("no position here");
        assert_eq!((message.as_str(), position), ("no position here", None));
    }
}
