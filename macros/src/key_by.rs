//! `#[derive(KeyBy)]`: an element type's key from the fields marked `#[key]`.
//!
//! Parse and validate in one pass (the input is small: which fields carry `#[key]`, and whether
//! any carries arguments), then expand to `impl eichhorn::api::KeyBy`; on error, the errors and
//! an impl with the key type `()` so that uses of `.keyed()` do not add a cascade.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Data, DeriveInput, Fields, Index, Member, Meta};

/// The helper attribute marking key fields.
const KEY: &str = "key";

/// Expands the derive.
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    match keys(input) {
        Ok(keys) => expand(input, &keys),
        Err(error) => fallback(input, &error),
    }
}

/// The key fields, in declaration order, or every problem combined.
fn keys(input: &DeriveInput) -> syn::Result<Vec<(Member, &syn::Type)>> {
    let mut errors: Option<syn::Error> = None;
    let mut push = |error: syn::Error| match &mut errors {
        Some(all) => all.combine(error),
        None => errors = Some(error),
    };
    let fields = match &input.data {
        Data::Struct(data) => &data.fields,
        Data::Enum(data) => {
            push(syn::Error::new_spanned(
                data.enum_token,
                "KeyBy is derived for structs: an enum's variants do not share a key field; \
                 implement `KeyBy` by hand",
            ));
            return Err(errors.expect("pushed"));
        }
        Data::Union(data) => {
            push(syn::Error::new_spanned(
                data.union_token,
                "KeyBy is derived for structs, not unions",
            ));
            return Err(errors.expect("pushed"));
        }
    };
    for attr in &input.attrs {
        if attr.path().is_ident(KEY) {
            push(syn::Error::new_spanned(
                attr,
                "#[key] goes on the key field, not on the type",
            ));
        }
    }
    let mut keys = Vec::new();
    let mut marked = false;
    for (index, field) in fields.iter().enumerate() {
        for attr in field.attrs.iter().filter(|a| a.path().is_ident(KEY)) {
            marked = true;
            if !matches!(attr.meta, Meta::Path(_)) {
                push(syn::Error::new_spanned(
                    &attr.meta,
                    "#[key] takes no arguments: mark each key field with a plain #[key]",
                ));
            } else if keys.iter().any(|(_, _, i)| *i == index) {
                push(syn::Error::new_spanned(attr, "#[key] is given twice"));
            } else {
                let member = match &field.ident {
                    Some(ident) => Member::Named(ident.clone()),
                    None => Member::Unnamed(Index::from(index)),
                };
                keys.push((member, &field.ty, index));
            }
        }
    }
    if !marked {
        let message = if matches!(fields, Fields::Unit) {
            "a unit struct has no field to key by: KeyBy needs a field marked #[key]"
        } else {
            "mark the key field with #[key] (several #[key] fields make a tuple key)"
        };
        push(syn::Error::new_spanned(&input.ident, message));
    }
    match errors {
        Some(error) => Err(error),
        None => Ok(keys.into_iter().map(|(m, t, _)| (m, t)).collect()),
    }
}

fn expand(input: &DeriveInput, keys: &[(Member, &syn::Type)]) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let (key_type, key_value) = match keys {
        [(member, ty)] => (
            quote!(#ty),
            quote!(::core::clone::Clone::clone(&self.#member)),
        ),
        _ => {
            let types = keys.iter().map(|(_, ty)| ty);
            let values = keys
                .iter()
                .map(|(member, _)| quote!(::core::clone::Clone::clone(&self.#member)));
            (quote!((#(#types),*)), quote!((#(#values),*)))
        }
    };
    let this = format_ident!("self");
    quote! {
        #[automatically_derived]
        impl #impl_generics ::eichhorn::api::KeyBy for #ident #ty_generics #where_clause {
            type Key = #key_type;
            fn key(&#this) -> Self::Key {
                #key_value
            }
        }
    }
}

fn fallback(input: &DeriveInput, error: &syn::Error) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let error = error.to_compile_error();
    quote! {
        #error

        impl #impl_generics ::eichhorn::api::KeyBy for #ident #ty_generics #where_clause {
            type Key = ();
            fn key(&self) {}
        }
    }
}
