//! The parse step of `#[operator]`: a faithful view of the struct and of every
//! `#[operator(...)]`, `#[state(...)]`, `#[operator_state(...)]` and `#[transient]` attribute,
//! without judging any of it ([`super::valid`] does that, in one pass).

use proc_macro2::Span;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Fields, Ident, ItemStruct, Meta, Token, Type};

/// The field attribute for keyed state.
pub(crate) const STATE: &str = "state";
/// The field attribute for operator state.
pub(crate) const OPERATOR_STATE: &str = "operator_state";
/// The field attribute for runtime-only fields (`Default::default()` in `new`).
pub(crate) const TRANSIENT: &str = "transient";

/// One `key = value` (or bare `key`) argument of an attribute.
pub(crate) struct Arg {
    /// The key, for spans and messages.
    pub(crate) key: Ident,
    /// The value, if given.
    pub(crate) value: Option<Expr>,
}

/// The arguments of an attribute, or why they could not be read.
pub(crate) struct Args {
    /// The arguments in source order.
    pub(crate) args: Vec<Arg>,
    /// Arguments that are not `key` or `key = expr`.
    pub(crate) malformed: Vec<syn::Error>,
}

/// What a field is, by its attributes (several are an error, kept to report it).
pub(crate) enum Role {
    /// `#[state(...)]`, spanned on the attribute.
    State(Span, Args),
    /// `#[operator_state(...)]`.
    OperatorState(Span, Args),
    /// `#[transient]`.
    Transient(Span, Args),
}

/// One named field.
pub(crate) struct Field<'a> {
    /// The field's name.
    pub(crate) ident: &'a Ident,
    /// The field's type.
    pub(crate) ty: &'a Type,
    /// The roles its attributes give it (none: a configuration field).
    pub(crate) roles: Vec<Role>,
}

/// The parsed `#[operator]` input.
pub(crate) struct Input<'a> {
    /// The struct.
    pub(crate) item: &'a ItemStruct,
    /// The arguments of `#[operator(...)]` itself.
    pub(crate) args: Args,
    /// The named fields (none for a unit or tuple struct), or the attribute to report state
    /// on a tuple struct's field on.
    pub(crate) fields: Result<Vec<Field<'a>>, Span>,
    /// Whether the struct is a tuple struct (it gets no generated `new`).
    pub(crate) tuple: bool,
}

impl<'a> Input<'a> {
    /// Reads `item` with the arguments `attr` of `#[operator(attr)]`.
    pub(crate) fn parse(attr: proc_macro2::TokenStream, item: &'a ItemStruct) -> Self {
        let args = parse_args_tokens(attr);
        let fields = match &item.fields {
            Fields::Named(named) => Ok(named
                .named
                .iter()
                .map(|f| Field {
                    ident: f.ident.as_ref().expect("named fields have names"),
                    ty: &f.ty,
                    roles: roles(&f.attrs),
                })
                .collect()),
            Fields::Unnamed(unnamed) => {
                let marked = unnamed
                    .unnamed
                    .iter()
                    .flat_map(|f| &f.attrs)
                    .find(|attr| is_field_attr(attr));
                match marked {
                    Some(attr) => Err(syn::spanned::Spanned::span(attr.path())),
                    None => Ok(Vec::new()),
                }
            }
            Fields::Unit => Ok(Vec::new()),
        };
        let tuple = matches!(item.fields, Fields::Unnamed(_));
        Self {
            item,
            args,
            fields,
            tuple,
        }
    }
}

/// The roles in a field's attributes.
fn roles(attrs: &[Attribute]) -> Vec<Role> {
    let mut roles = Vec::new();
    for attr in attrs {
        let path = attr.path();
        let span = path
            .segments
            .first()
            .map_or_else(Span::call_site, |s| s.ident.span());
        if path.is_ident(STATE) {
            roles.push(Role::State(span, parse_attr_args(attr)));
        } else if path.is_ident(OPERATOR_STATE) {
            roles.push(Role::OperatorState(span, parse_attr_args(attr)));
        } else if path.is_ident(TRANSIENT) {
            roles.push(Role::Transient(span, parse_attr_args(attr)));
        }
    }
    roles
}

/// Whether `attr` is one of the field attributes this macro consumes.
pub(crate) fn is_field_attr(attr: &Attribute) -> bool {
    let path = attr.path();
    path.is_ident(STATE) || path.is_ident(OPERATOR_STATE) || path.is_ident(TRANSIENT)
}

fn parse_attr_args(attr: &Attribute) -> Args {
    match &attr.meta {
        Meta::Path(_) => Args {
            args: Vec::new(),
            malformed: Vec::new(),
        },
        Meta::List(list) => parse_args_tokens(list.tokens.clone()),
        Meta::NameValue(nv) => Args {
            args: Vec::new(),
            malformed: vec![syn::Error::new_spanned(
                nv.eq_token,
                "write the arguments in parentheses, e.g. `#[state(name = \"...\")]`",
            )],
        },
    }
}

/// Parses `a = expr, b, c = expr`.
fn parse_args_tokens(tokens: proc_macro2::TokenStream) -> Args {
    let parser = Punctuated::<Meta, Token![,]>::parse_terminated;
    match parser.parse2(tokens) {
        Err(error) => Args {
            args: Vec::new(),
            malformed: vec![error],
        },
        Ok(metas) => {
            let mut args = Vec::new();
            let mut malformed = Vec::new();
            for meta in metas {
                match meta {
                    Meta::Path(path) => match path.get_ident() {
                        Some(ident) => args.push(Arg {
                            key: ident.clone(),
                            value: None,
                        }),
                        None => malformed.push(syn::Error::new_spanned(
                            path,
                            "expected a plain argument name",
                        )),
                    },
                    Meta::NameValue(nv) => match nv.path.get_ident() {
                        Some(ident) => args.push(Arg {
                            key: ident.clone(),
                            value: Some(nv.value),
                        }),
                        None => malformed.push(syn::Error::new_spanned(
                            nv.path,
                            "expected a plain argument name",
                        )),
                    },
                    Meta::List(list) => malformed.push(syn::Error::new_spanned(
                        list.path,
                        "expected `name = value`, not a nested list",
                    )),
                }
            }
            Args { args, malformed }
        }
    }
}
