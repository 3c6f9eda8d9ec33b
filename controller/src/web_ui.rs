//! The controller's web UI: three static files (compiled in) under `/ui/`,
//! served without the token (the sign-in page must load; they hold no
//! secret) but behind the node API's Host and client checks. Every API
//! request the page makes carries the token in a header, never in a URL
//! or a cookie, so another site cannot make a browser use it (no CSRF).
//! A strict Content-Security-Policy allows only this origin's own script
//! and style (no inline code, no framing, no form posts elsewhere).

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The page's Content-Security-Policy.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
            (REFERRER_POLICY, "no-referrer"),
            (CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The UI's routes (`/ui`, `/ui/`, `/ui/app.js`, `/ui/app.css`).
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_script_and_style() {
        // No inline script or style that the policy would block, and the
        // script is the one file the policy allows.
        assert!(INDEX_HTML.contains(r#"<script src="/ui/app.js" defer></script>"#));
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
        assert!(!INDEX_HTML.contains("style=") && !INDEX_HTML.contains("onclick"));
        // Data is set as text, never parsed as HTML.
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("outerHTML"));
        // The token goes in a header, never in a URL or a cookie.
        assert!(APP_JS.contains(r#""X-VNet-Auth": token()"#));
        assert!(!APP_JS.contains("document.cookie") && !APP_JS.contains("?token"));
    }
}
