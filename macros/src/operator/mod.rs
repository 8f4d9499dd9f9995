//! `#[operator]`: parse ([`ast`]) -> validate ([`valid`]) -> expand ([`expand`]), with a
//! fallback expansion next to the errors so a mistake is reported once.

mod ast;
mod expand;
mod valid;

use proc_macro2::TokenStream;
use quote::quote;
use syn::Item;

/// Expands `#[operator(attr)] item`.
pub(crate) fn operator(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item: Item = match syn::parse2(item) {
        Ok(item) => item,
        Err(error) => return error.to_compile_error(),
    };
    let strukt = match &item {
        Item::Struct(strukt) => strukt,
        other => {
            let span = match other {
                Item::Enum(e) => e.enum_token.span,
                Item::Union(u) => u.union_token.span,
                Item::Fn(f) => f.sig.fn_token.span,
                Item::Impl(i) => i.impl_token.span,
                Item::Trait(t) => t.trait_token.span,
                _ => proc_macro2::Span::call_site(),
            };
            let error = syn::Error::new(
                span,
                "#[operator] goes on a struct with named fields: its `#[state]` fields are \
                 the operator's state, the other fields its configuration; implement the \
                 function trait (MapFunction, KeyedProcessFunction, ...) for the struct",
            )
            .to_compile_error();
            return quote!(#error #item);
        }
    };
    let input = ast::Input::parse(attr, strukt);
    match valid::validate(&input) {
        Ok(model) => expand::expand(&input, &model),
        Err(error) => expand::fallback(&input, &error),
    }
}
