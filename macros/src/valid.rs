//! The validate step: every rule the derive enforces, checked in one pass.
//!
//! Each problem becomes a [`syn::Error`] spanned on the offending token, and all of them are
//! combined into one error so the user sees every mistake in a single build.

use crate::ast::{ATTR, Attrs, Body, Field, Input, SKIP, is_skip};
use syn::Meta;

/// Where an attribute sits, which decides what it may say.
#[derive(Clone, Copy)]
enum Position {
    /// On the type itself: no arguments are accepted there.
    Type,
    /// On a field or an enum variant: `skip` is accepted.
    Member,
}

/// Checks a parsed input, returning every problem found combined into one error.
pub(crate) fn validate(input: &Input<'_>) -> syn::Result<()> {
    let mut errors = Errors::default();
    check_attrs(&input.attrs, Position::Type, &mut errors);
    match &input.body {
        Body::Struct(fields) => check_fields(fields, &mut errors),
        Body::Enum(variants) => {
            for variant in variants {
                check_attrs(&variant.attrs, Position::Member, &mut errors);
                check_fields(&variant.fields, &mut errors);
            }
        }
        Body::Union(token) => errors.push(syn::Error::new_spanned(
            token,
            "StableHash cannot be derived for unions: the derive cannot know which field is \
             active, so there is no stable byte feed; use a struct or an enum, or implement \
             `StableHash` by hand",
        )),
    }
    errors.finish()
}

/// Checks the attributes on each field.
fn check_fields(fields: &[Field<'_>], errors: &mut Errors) {
    for field in fields {
        check_attrs(&field.attrs, Position::Member, errors);
    }
}

/// Checks one item's `#[stable_hash(...)]` arguments against what its position allows.
fn check_attrs(attrs: &Attrs, position: Position, errors: &mut Errors) {
    for error in &attrs.malformed {
        errors.push(error.clone());
    }
    let mut seen_skip = false;
    for arg in &attrs.args {
        match position {
            Position::Type if is_skip(arg) => errors.push(syn::Error::new_spanned(
                arg,
                format!(
                    "`#[{ATTR}({SKIP})]` goes on fields and enum variants, not on the type itself"
                ),
            )),
            Position::Type => errors.push(unknown(arg, "the type itself takes no arguments")),
            Position::Member if is_skip(arg) && seen_skip => errors.push(syn::Error::new_spanned(
                arg,
                format!("duplicate `{ATTR}({SKIP})`"),
            )),
            Position::Member if is_skip(arg) => seen_skip = true,
            Position::Member => errors.push(unknown(arg, "expected `skip`")),
        }
    }
}

/// The error for an argument the derive does not know, spanned on the whole argument.
fn unknown(arg: &Meta, hint: &str) -> syn::Error {
    let name = arg
        .path()
        .get_ident()
        .map_or_else(String::new, |ident| format!(" `{ident}`"));
    syn::Error::new_spanned(arg, format!("unknown `{ATTR}` argument{name}: {hint}"))
}

/// An accumulator for errors, combined in the order they were found (source order).
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    /// Records one more error.
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// `Ok` if nothing was recorded, otherwise every recorded error.
    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
