//! Spans of generated code.

use proc_macro2::{Ident, Span};

/// The type's name re-spanned to resolve at the call site, so `impl ... for #ty` on a deprecated
/// type does not trigger a deprecation warning in the user's crate.
pub(crate) fn call_site_ident(ident: &Ident) -> Ident {
    let mut ident = ident.clone();
    ident.set_span(ident.span().resolved_at(Span::call_site()));
    ident
}
