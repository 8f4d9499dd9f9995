//! The parse step: a faithful, judgement-free view of the derive input.
//!
//! This module turns a [`syn::DeriveInput`] into [`Input`], keeping every `#[stable_hash(...)]`
//! argument exactly as written, and only records attributes it could not parse at all. Deciding
//! whether an argument is allowed is [`crate::valid`]'s job, so that one pass over the parsed tree
//! can report every mistake at once instead of stopping at the first.

use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::{
    Attribute, Data, DeriveInput, Fields, Generics, Ident, Index, Member, Meta, Token, Type,
};

/// The name of the helper attribute the derive reads: `#[stable_hash(...)]`.
pub(crate) const ATTR: &str = "stable_hash";

/// The only argument `#[stable_hash(...)]` accepts.
pub(crate) const SKIP: &str = "skip";

/// A parsed `#[derive(StableHash)]` input.
pub(crate) struct Input<'a> {
    /// The type's name.
    pub(crate) ident: &'a Ident,
    /// The type's generics, exactly as declared.
    pub(crate) generics: &'a Generics,
    /// `#[stable_hash(...)]` attributes on the type itself (none are allowed).
    pub(crate) attrs: Attrs,
    /// The type's shape.
    pub(crate) body: Body<'a>,
}

/// The shape of a derive input.
pub(crate) enum Body<'a> {
    /// A struct of any kind: named, tuple or unit.
    Struct(Vec<Field<'a>>),
    /// An enum, its variants in declaration order.
    Enum(Vec<Variant<'a>>),
    /// A union, which cannot be hashed; the token is kept to span the error on it.
    Union(&'a Token![union]),
}

/// One enum variant.
pub(crate) struct Variant<'a> {
    /// The variant's name.
    pub(crate) ident: &'a Ident,
    /// `#[stable_hash(...)]` attributes on the variant.
    pub(crate) attrs: Attrs,
    /// The variant's fields in declaration order.
    pub(crate) fields: Vec<Field<'a>>,
}

/// One field of a struct or variant.
pub(crate) struct Field<'a> {
    /// How to name the field, in `self.name`/`self.0` and in `{ name: .. }`/`{ 0: .. }` patterns.
    pub(crate) member: Member,
    /// The field's declared type; trait errors are spanned on it.
    pub(crate) ty: &'a Type,
    /// `#[stable_hash(...)]` attributes on the field.
    pub(crate) attrs: Attrs,
}

/// The `#[stable_hash(...)]` arguments found on one item, unjudged.
#[derive(Default)]
pub(crate) struct Attrs {
    /// Every argument of every `#[stable_hash(...)]` attribute, in source order.
    pub(crate) args: Vec<Meta>,
    /// Attributes whose arguments did not parse (`#[stable_hash]`, `#[stable_hash = ..]`, ...).
    pub(crate) malformed: Vec<syn::Error>,
}

impl Attrs {
    /// Whether the item carries `#[stable_hash(skip)]`.
    pub(crate) fn skip(&self) -> bool {
        self.args.iter().any(is_skip)
    }
}

/// Whether an argument is exactly the bare word `skip`.
pub(crate) fn is_skip(arg: &Meta) -> bool {
    matches!(arg, Meta::Path(path) if path.is_ident(SKIP))
}

impl<'a> Input<'a> {
    /// Parses a derive input. Never fails: problems are kept for [`crate::valid`] to report.
    pub(crate) fn from_syn(input: &'a DeriveInput) -> Self {
        let body = match &input.data {
            Data::Struct(data) => Body::Struct(fields(&data.fields)),
            Data::Enum(data) => Body::Enum(
                data.variants
                    .iter()
                    .map(|variant| Variant {
                        ident: &variant.ident,
                        attrs: Attrs::from_syn(&variant.attrs),
                        fields: fields(&variant.fields),
                    })
                    .collect(),
            ),
            Data::Union(data) => Body::Union(&data.union_token),
        };
        Self {
            ident: &input.ident,
            generics: &input.generics,
            attrs: Attrs::from_syn(&input.attrs),
            body,
        }
    }
}

/// Parses the fields of a struct or variant, numbering tuple fields from 0.
fn fields(fields: &Fields) -> Vec<Field<'_>> {
    fields
        .iter()
        .enumerate()
        .map(|(i, field)| Field {
            member: match &field.ident {
                Some(ident) => Member::Named(ident.clone()),
                None => Member::Unnamed(Index {
                    index: i as u32,
                    span: Span::call_site(),
                }),
            },
            ty: &field.ty,
            attrs: Attrs::from_syn(&field.attrs),
        })
        .collect()
}

impl Attrs {
    /// Collects the arguments of every `#[stable_hash(...)]` among `attrs`, ignoring other
    /// attributes (doc comments, `#[serde(...)]` and the like belong to someone else).
    fn from_syn(attrs: &[Attribute]) -> Self {
        let mut parsed = Self::default();
        for attr in attrs.iter().filter(|attr| attr.path().is_ident(ATTR)) {
            let args = match &attr.meta {
                Meta::List(_) => {
                    attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
                }
                Meta::Path(_) | Meta::NameValue(_) => Err(syn::Error::new_spanned(
                    attr,
                    "expected `#[stable_hash(skip)]`",
                )),
            };
            match args {
                Ok(args) => parsed.args.extend(args),
                Err(error) => parsed.malformed.push(error),
            }
        }
        parsed
    }
}
