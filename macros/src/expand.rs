//! The expand step: the `StableHash` impl for a valid input.
//!
//! Every path is fully qualified (`::eichhorn::...`, `::core::...`) so the expansion means the same
//! thing whatever the user has imported or shadowed. The byte feed produced here is the one
//! documented on the derive in `lib.rs`; it is part of the savepoint format and must not change.

use crate::ast::{Body, Field, Input, Variant};
use crate::span::call_site_ident;
use crate::{fallback, valid};
use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{DeriveInput, GenericParam, Generics, parse_quote};

/// Expands `#[derive(StableHash)]`: the impl, or the errors plus a fallback impl.
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let parsed = Input::from_syn(input);
    match valid::validate(&parsed) {
        Ok(()) => impl_stable_hash(&parsed),
        Err(error) => fallback::expand(input, &error),
    }
}

/// The impl for an input that passed validation.
fn impl_stable_hash(input: &Input<'_>) -> TokenStream {
    let ty = call_site_ident(input.ident);
    let generics = with_bounds(input.generics);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let (body, feeds) = match &input.body {
        Body::Struct(fields) => struct_body(fields),
        Body::Enum(variants) => enum_body(variants),
        // `valid::validate` rejects unions, and only valid inputs reach this function; a panic
        // here still surfaces as a compile error, never as a silently wrong hash.
        Body::Union(_) => unreachable!("unions are rejected by validation"),
    };
    // Name the hasher `_state` when nothing is fed so the user's crate gets no unused warning.
    let state = if feeds { quote!(state) } else { quote!(_state) };
    quote! {
        #[allow(unused_qualifications)]
        #[automatically_derived]
        impl #impl_generics ::eichhorn::StableHash for #ty #ty_generics #where_clause {
            fn stable_hash(&self, #state: &mut ::eichhorn::StableHasher) {
                #body
            }
        }
    }
}

/// A struct's body: its unskipped fields fed in declaration order. Returns whether anything is
/// fed.
fn struct_body(fields: &[Field<'_>]) -> (TokenStream, bool) {
    let feeds: Vec<TokenStream> = fields
        .iter()
        .filter(|field| !field.attrs.skip())
        .map(|field| {
            let member = &field.member;
            quote_spanned! {type_span(field)=>
                ::eichhorn::StableHash::stable_hash(&self.#member, state);
            }
        })
        .collect();
    let any = !feeds.is_empty();
    (quote!(#(#feeds)*), any)
}

/// An enum's body: a match feeding the variant's index and then its unskipped fields. Returns
/// whether any arm feeds anything.
fn enum_body(variants: &[Variant<'_>]) -> (TokenStream, bool) {
    if variants.is_empty() {
        // No value of this type exists; `*self` makes the empty match type-check.
        return (quote!(match *self {}), false);
    }
    let mut any = false;
    let arms = variants.iter().enumerate().map(|(index, variant)| {
        let ident = &variant.ident;
        if variant.attrs.skip() {
            return quote!(Self::#ident { .. } => {});
        }
        any = true;
        // The index counts every variant, skipped ones included, so skipping a variant never
        // renumbers the others.
        let index = Literal::u64_suffixed(index as u64);
        let (pattern, feeds): (Vec<TokenStream>, Vec<TokenStream>) = variant
            .fields
            .iter()
            .enumerate()
            .filter(|(_, field)| !field.attrs.skip())
            .map(|(i, field)| {
                let member = &field.member;
                let span = type_span(field);
                let binding = format_ident!("__field{}", i, span = span);
                let feed = quote_spanned! {span=>
                    ::eichhorn::StableHash::stable_hash(#binding, state);
                };
                (quote!(#member: #binding), feed)
            })
            .unzip();
        quote! {
            Self::#ident { #(#pattern,)* .. } => {
                ::eichhorn::StableHasher::write_u64(state, #index);
                #(#feeds)*
            }
        }
    });
    let arms: Vec<TokenStream> = arms.collect();
    (quote!(match self { #(#arms)* }), any)
}

/// The span for feeding one field: located at the field's type, so rustc reports a type without
/// `StableHash` there, but resolved at the call site, so `self`, `state` and the bindings keep
/// the derive's hygiene even when the type's tokens come from another macro.
fn type_span(field: &Field<'_>) -> Span {
    Span::call_site().located_at(field.ty.span())
}

/// The input's generics with `T: ::eichhorn::StableHash` added to the where clause for every type
/// parameter `T`, keeping the bounds and where clause the user wrote.
fn with_bounds(generics: &Generics) -> Generics {
    let mut generics = generics.clone();
    let params: Vec<Ident> = generics
        .params
        .iter()
        .filter_map(|param| match param {
            GenericParam::Type(param) => Some(param.ident.clone()),
            GenericParam::Lifetime(_) | GenericParam::Const(_) => None,
        })
        .collect();
    let where_clause = generics.make_where_clause();
    for param in params {
        where_clause
            .predicates
            .push(parse_quote!(#param: ::eichhorn::StableHash));
    }
    generics
}
