//! The dashboard's static files, compiled into the binary.

/// The page.
pub(super) const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// Its script: polls the REST answers and renders them into the page.
pub(super) const APP_JS: &str = include_str!("dashboard/app.js");
/// Its style.
pub(super) const STYLE_CSS: &str = include_str!("dashboard/style.css");
