//! The page: HTML, CSS and a small script, embedded in the binary (no build step), and uPlot,
//! vendored from npm with its licence (`assets/vendor/`). Nothing is loaded from elsewhere: the
//! Content-Security-Policy (`api::secure_headers`) allows this server alone.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const UPLOT_JS: &str = include_str!("assets/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/vendor/uPlot.min.css");

fn text(mime: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, mime)], body).into_response()
}

pub(crate) async fn index() -> Html<&'static str> {
    Html(INDEX)
}
pub(crate) async fn app_js() -> Response {
    text("text/javascript; charset=utf-8", APP_JS)
}
pub(crate) async fn style_css() -> Response {
    text("text/css; charset=utf-8", STYLE)
}
pub(crate) async fn uplot_js() -> Response {
    text("text/javascript; charset=utf-8", UPLOT_JS)
}
pub(crate) async fn uplot_css() -> Response {
    text("text/css; charset=utf-8", UPLOT_CSS)
}

/// The login page, with a message after a wrong token.
pub(crate) fn login(message: Option<&str>) -> String {
    let note = message.map_or(String::new(), |m| {
        format!("<p class=\"error\" id=\"login-error\">{m}</p>")
    });
    LOGIN.replace("<!--message-->", &note)
}
