//! The fallback impl emitted next to the errors when the input is invalid.
//!
//! Without it, every use of the type as a key would add a "`StableHash` is not implemented"
//! error on top of the real one. The fallback impl has an empty body and no extra bounds, so it
//! always compiles; it is never run, because the build fails on the real errors anyway.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

/// The real errors followed by an impl of `StableHash` that compiles for any input.
pub(crate) fn expand(input: &DeriveInput, error: &syn::Error) -> TokenStream {
    let ty = crate::span::call_site_ident(&input.ident);
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let error = error.to_compile_error();
    quote! {
        #error

        #[allow(unused_qualifications)]
        #[automatically_derived]
        impl #impl_generics ::eichhorn::StableHash for #ty #ty_generics #where_clause {
            fn stable_hash(&self, _: &mut ::eichhorn::StableHasher) {}
        }
    }
}
