//! The validate step of `#[operator]`: every rule checked in one pass, each problem spanned on
//! the offending token, all combined into one error; on success, the checked [`Model`] the
//! expansion works from.

use std::collections::BTreeMap;

use proc_macro2::Span;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Type};

use super::ast::{Arg, Args, Field, Input, OPERATOR_STATE, Role, STATE, TRANSIENT};

/// The kinds of keyed state a `#[state]` field may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyedKind {
    Value,
    List,
    Map,
    Reducing,
    Aggregating,
}

/// The kinds of operator state an `#[operator_state]` field may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OperatorKind {
    /// `OperatorList<T>` (split) or `UnionList<T>`: restored and snapshotted by the operator.
    List,
    /// `MapStateDescriptor<K, V>`: broadcast state, kept by the broadcast operator.
    Broadcast,
}

/// What a checked field is.
pub(crate) enum Member {
    /// A plain field: a parameter of `new`.
    Config,
    /// `#[transient]`: `Default::default()` in `new`, not stored.
    Transient,
    /// `#[state]`.
    Keyed {
        name: String,
        kind: KeyedKind,
        ttl: Option<Box<Expr>>,
        /// The reduce function (reducing) or aggregate function (aggregating).
        function: Option<Box<Expr>>,
    },
    /// `#[operator_state]`.
    Operator { name: String, kind: OperatorKind },
}

/// A checked field.
pub(crate) struct CheckedField<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    pub(crate) member: Member,
}

/// The checked input.
pub(crate) struct Model<'a> {
    /// `uid = "..."`.
    pub(crate) uid: Option<LitStr>,
    /// Whether to generate `new` (`new = false` turns it off).
    pub(crate) constructor: bool,
    /// The fields in declaration order.
    pub(crate) fields: Vec<CheckedField<'a>>,
}

impl Model<'_> {
    /// Whether any field is keyed state.
    pub(crate) fn has_keyed_state(&self) -> bool {
        self.fields
            .iter()
            .any(|f| matches!(f.member, Member::Keyed { .. }))
    }
}

#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }
    fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }
    fn spanned(&mut self, tokens: impl quote::ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }
    /// An error on an argument's value (or its key when it has none).
    fn value(&mut self, arg: &Arg, message: impl std::fmt::Display) {
        match &arg.value {
            Some(value) => self.spanned(value, message),
            None => self.at(arg.key.span(), message),
        }
    }
    fn extend(&mut self, errors: Vec<syn::Error>) {
        for error in errors {
            self.push(error);
        }
    }
}

/// Checks `input`, returning the model or every problem combined.
pub(crate) fn validate<'a>(input: &Input<'a>) -> syn::Result<Model<'a>> {
    let mut errors = Errors::default();
    let (uid, constructor) = operator_args(&input.args, &mut errors);
    let mut fields = Vec::new();
    match &input.fields {
        Err(span) => errors.at(
            *span,
            "state fields need names: use a struct with named fields \
             (`struct Alert { #[state] last: ValueState<f64>, threshold: f64 }`)",
        ),
        Ok(parsed) => {
            // Names already used, for duplicates: state name -> the field that took it.
            let mut names: BTreeMap<String, &Ident> = BTreeMap::new();
            for field in parsed {
                if let Some(checked) = check_field(field, &mut names, &mut errors) {
                    fields.push(checked);
                }
            }
        }
    }
    match errors.0 {
        Some(error) => Err(error),
        None => Ok(Model {
            uid,
            constructor: constructor && !input.tuple,
            fields,
        }),
    }
}

/// Reads `#[operator(uid = "...", new = false)]`.
fn operator_args(args: &Args, errors: &mut Errors) -> (Option<LitStr>, bool) {
    let mut uid = None;
    let mut constructor = true;
    for (key, arg) in unique_args(args, errors) {
        match key.as_str() {
            "uid" => match string_value(arg) {
                Some(lit) if lit.value().trim().is_empty() => {
                    errors.at(lit.span(), "the uid must not be empty");
                }
                Some(lit) => uid = Some(lit),
                None => errors.value(
                    arg,
                    "`uid` takes a string: #[operator(uid = \"temperature-alert\")]",
                ),
            },
            "new" => match bool_value(arg) {
                Some(value) => constructor = value,
                None => errors.value(
                    arg,
                    "`new` takes `true` or `false` (false: write your own constructor)",
                ),
            },
            _ => errors.at(
                arg.key.span(),
                format!("unknown #[operator] argument `{key}`: expected `uid` or `new`"),
            ),
        }
    }
    (uid, constructor)
}

/// Checks one field; `None` when it has errors (already pushed).
fn check_field<'a>(
    field: &Field<'a>,
    names: &mut BTreeMap<String, &'a Ident>,
    errors: &mut Errors,
) -> Option<CheckedField<'a>> {
    let role = match field.roles.as_slice() {
        [] => {
            return Some(CheckedField {
                ident: field.ident,
                ty: field.ty,
                member: Member::Config,
            });
        }
        [role] => role,
        [_, second, ..] => {
            let span = match second {
                Role::State(span, _) | Role::OperatorState(span, _) | Role::Transient(span, _) => {
                    *span
                }
            };
            errors.at(
                span,
                format!(
                    "field `{}` has more than one of #[{STATE}], #[{OPERATOR_STATE}] and \
                     #[{TRANSIENT}]; a field is one of them",
                    field.ident
                ),
            );
            return None;
        }
    };
    let before = errors.0.is_some();
    let member = match role {
        Role::Transient(_, args) => {
            errors.extend(args.malformed.clone());
            if let Some(arg) = args.args.first() {
                errors.at(arg.key.span(), "#[transient] takes no arguments");
            }
            Member::Transient
        }
        Role::State(_, args) => keyed_member(field, args, names, errors)?,
        Role::OperatorState(_, args) => operator_member(field, args, names, errors)?,
    };
    if errors.0.is_some() && !before {
        return None;
    }
    Some(CheckedField {
        ident: field.ident,
        ty: field.ty,
        member,
    })
}

/// The last path segment of a type, e.g. `ValueState` in `eichhorn::state::ValueState<f64>`.
fn type_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|s| s.ident.to_string())
        }
        _ => None,
    }
}

fn keyed_member<'a>(
    field: &Field<'a>,
    args: &Args,
    names: &mut BTreeMap<String, &'a Ident>,
    errors: &mut Errors,
) -> Option<Member> {
    let kind = match type_name(field.ty).as_deref() {
        Some("ValueState") => KeyedKind::Value,
        Some("ListState") => KeyedKind::List,
        Some("MapState") => KeyedKind::Map,
        Some("ReducingState") => KeyedKind::Reducing,
        Some("AggregatingState") => KeyedKind::Aggregating,
        Some("OperatorList" | "UnionList" | "MapStateDescriptor") => {
            errors.spanned(
                field.ty,
                "this is operator state, not keyed state: mark the field #[operator_state]",
            );
            return None;
        }
        _ => {
            errors.spanned(
                field.ty,
                "unsupported type for a #[state] field: expected keyed state, one of \
                 ValueState<T>, ListState<T>, MapState<K, V>, ReducingState<T> or \
                 AggregatingState<IN, ACC, OUT>",
            );
            return None;
        }
    };
    let mut name = None;
    let mut ttl = None;
    let mut function = None;
    for (key, arg) in unique_args(args, errors) {
        match key.as_str() {
            "name" => name = state_name(arg, errors),
            "ttl" => match &arg.value {
                Some(value) => ttl = Some(Box::new(value.clone())),
                None => errors.at(
                    arg.key.span(),
                    "`ttl` takes milliseconds or a StateTtlConfig: #[state(ttl = 60_000)]",
                ),
            },
            "reduce" if kind == KeyedKind::Reducing => match &arg.value {
                Some(value) => function = Some(Box::new(value.clone())),
                None => errors.at(
                    arg.key.span(),
                    "`reduce` takes the reduce function: #[state(reduce = |a, b| a + b)]",
                ),
            },
            "aggregate" if kind == KeyedKind::Aggregating => match &arg.value {
                Some(value) => function = Some(Box::new(value.clone())),
                None => errors.at(
                    arg.key.span(),
                    "`aggregate` takes an AggregateFunction: #[state(aggregate = Average)]",
                ),
            },
            "reduce" | "aggregate" => errors.at(
                arg.key.span(),
                format!(
                    "`{key}` is only for {} fields",
                    if key == "reduce" {
                        "ReducingState"
                    } else {
                        "AggregatingState"
                    }
                ),
            ),
            _ => errors.at(
                arg.key.span(),
                format!(
                    "unknown #[state] argument `{key}`: expected `name`, `ttl`{}",
                    match kind {
                        KeyedKind::Reducing => " or `reduce`",
                        KeyedKind::Aggregating => " or `aggregate`",
                        _ => "",
                    }
                ),
            ),
        }
    }
    if function.is_none() {
        match kind {
            KeyedKind::Reducing => errors.spanned(
                field.ty,
                "a ReducingState field needs its reduce function: \
                 #[state(reduce = |a, b| a + b)]",
            ),
            KeyedKind::Aggregating => errors.spanned(
                field.ty,
                "an AggregatingState field needs its aggregate function: \
                 #[state(aggregate = MyAggregate)]",
            ),
            _ => {}
        }
    }
    let name = claim_name(field, name, names, errors)?;
    Some(Member::Keyed {
        name,
        kind,
        ttl,
        function,
    })
}

fn operator_member<'a>(
    field: &Field<'a>,
    args: &Args,
    names: &mut BTreeMap<String, &'a Ident>,
    errors: &mut Errors,
) -> Option<Member> {
    let kind = match type_name(field.ty).as_deref() {
        Some("OperatorList" | "UnionList") => OperatorKind::List,
        Some("MapStateDescriptor") => OperatorKind::Broadcast,
        Some("ValueState" | "ListState" | "MapState" | "ReducingState" | "AggregatingState") => {
            errors.spanned(
                field.ty,
                "this is keyed state, not operator state: mark the field #[state]",
            );
            return None;
        }
        _ => {
            errors.spanned(
                field.ty,
                "unsupported type for an #[operator_state] field: expected OperatorList<T> \
                 (split on rescaling), UnionList<T> (every subtask gets all) or \
                 MapStateDescriptor<K, V> (broadcast state)",
            );
            return None;
        }
    };
    let mut name = None;
    for (key, arg) in unique_args(args, errors) {
        match key.as_str() {
            "name" => name = state_name(arg, errors),
            _ => errors.at(
                arg.key.span(),
                format!("unknown #[operator_state] argument `{key}`: expected `name`"),
            ),
        }
    }
    let name = claim_name(field, name, names, errors)?;
    Some(Member::Operator { name, kind })
}

/// The arguments with their keys, each key once: malformed arguments and repeated keys are
/// reported (on the repeat) and left out.
fn unique_args<'a>(args: &'a Args, errors: &mut Errors) -> Vec<(String, &'a Arg)> {
    errors.extend(args.malformed.clone());
    let mut unique: Vec<(String, &Arg)> = Vec::new();
    for arg in &args.args {
        let key = arg.key.to_string();
        if unique.iter().any(|(seen, _)| *seen == key) {
            errors.at(arg.key.span(), format!("`{key}` is given twice"));
        } else {
            unique.push((key, arg));
        }
    }
    unique
}

/// The state name: the explicit one or the field's name; a name another field has is an error
/// on the second.
fn claim_name<'a>(
    field: &Field<'a>,
    explicit: Option<LitStr>,
    names: &mut BTreeMap<String, &'a Ident>,
    errors: &mut Errors,
) -> Option<String> {
    let (name, span) = match &explicit {
        Some(lit) => (lit.value(), lit.span()),
        None => (field.ident.to_string(), field.ident.span()),
    };
    if let Some(first) = names.get(&name) {
        errors.at(
            span,
            format!(
                "duplicate state name \"{name}\": field `{first}` already uses it; give one \
                 of them another with #[state(name = \"...\")]"
            ),
        );
        return None;
    }
    names.insert(name.clone(), field.ident);
    Some(name)
}

/// A `name = "..."` value, checked.
fn state_name(arg: &Arg, errors: &mut Errors) -> Option<LitStr> {
    let Some(lit) = string_value(arg) else {
        errors.value(
            arg,
            "`name` takes a string: #[state(name = \"last-temperature\")]",
        );
        return None;
    };
    let value = lit.value();
    if value.is_empty() {
        errors.at(lit.span(), "a state name must not be empty");
        None
    } else if value.starts_with('_') {
        errors.at(
            lit.span(),
            "state names starting with `_` are reserved for the framework (`_timers`, \
             `_schema`)",
        );
        None
    } else {
        Some(lit)
    }
}

fn string_value(arg: &Arg) -> Option<LitStr> {
    match &arg.value {
        Some(Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        })) => Some(lit.clone()),
        _ => None,
    }
}

fn bool_value(arg: &Arg) -> Option<bool> {
    match &arg.value {
        Some(Expr::Lit(ExprLit {
            lit: Lit::Bool(lit),
            ..
        })) => Some(lit.value),
        _ => None,
    }
}
