//! Flink's SQL dialect for `sqlparser`: the generic dialect plus `FOR SYSTEM_TIME AS OF`.
//!
//! sqlparser reads a table's version clause (`rates FOR SYSTEM_TIME AS OF o.ts AS r`, the
//! temporal join of a versioned table) only for dialects that say they support timestamp
//! versioning, and the generic dialect does not. [`FlinkDialect`] is the generic dialect with
//! that one switch turned on: it reports the generic dialect's type id (so sqlparser's
//! `dialect_of!(.. is GenericDialect)` checks behave as before) and forwards every method the
//! generic dialect overrides, so nothing else about parsing changes.

use std::any::TypeId;

use sqlparser::dialect::{Dialect, GenericDialect};

/// The generic dialect with `FOR SYSTEM_TIME AS OF` after a table name.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlinkDialect;

/// Forwards `fn name(&self) -> bool` to the generic dialect.
macro_rules! forward {
    ($($name:ident)*) => {
        $(
            fn $name(&self) -> bool {
                GenericDialect.$name()
            }
        )*
    };
}

impl Dialect for FlinkDialect {
    fn dialect(&self) -> TypeId {
        TypeId::of::<GenericDialect>()
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        GenericDialect.is_identifier_part(ch)
    }

    fn supports_timestamp_versioning(&self) -> bool {
        true
    }

    forward! {
        supports_unicode_string_literal supports_group_by_expr
        supports_group_by_with_modifier supports_left_associative_joins_without_parens
        supports_connect_by supports_match_recognize supports_pipe_operator
        supports_start_transaction_modifier supports_window_function_null_treatment_arg
        supports_dictionary_syntax supports_window_clause_named_window_reference
        supports_parenthesized_set_variables supports_select_wildcard_except
        support_map_literal_syntax allow_extract_custom allow_extract_single_quotes
        supports_create_index_with_clause supports_explain_with_utility_options
        supports_limit_comma supports_from_first_select supports_projection_trailing_commas
        supports_asc_desc_in_column_definition supports_try_convert supports_comment_on
        supports_load_extension supports_named_fn_args_with_assignment_operator
        supports_struct_literal supports_empty_projections supports_nested_comments
        supports_user_host_grantee supports_string_escape_constant
        supports_array_typedef_with_brackets supports_match_against supports_set_names
        supports_comma_separated_set_assignments supports_filter_during_aggregation
        supports_select_wildcard_exclude supports_data_type_signed_suffix
        supports_interval_options
    }
}
