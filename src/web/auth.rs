//! The token: read from `web_token_file`, given once on the login page, then kept in a
//! `HttpOnly`, `SameSite=Strict` cookie. A request without it gets 401 (the login page, for a
//! browser). Scripts may send it as `Authorization: Bearer TOKEN`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;

/// The cookie that holds the token.
pub const COOKIE: &str = "jp_token";

pub(crate) struct Token(String);

impl Token {
    /// Reads the token file: at least 16 characters, and not readable by every user.
    pub(crate) fn read(path: &Path) -> Result<Token> {
        let meta = std::fs::metadata(path).with_context(|| {
            format!(
                "failed to read the web console's token {} (the packages make it at install; \
                 make one with: head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n', mode \
                 0640, group journal-parquet)",
                path.display()
            )
        })?;
        if meta.permissions().mode() & 0o004 != 0 {
            bail!(
                "{} is readable by every user (mode {:o}): run chmod 0640 on it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("failed to read the web console's token {}", path.display())
        })?;
        let token = text.trim().to_owned();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            bail!(
                "{} does not hold a token: 16 or more printable characters on one line",
                path.display()
            );
        }
        Ok(Token(token))
    }

    /// Compared in constant time: how long a wrong guess takes tells nothing.
    pub(crate) fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        let mut diff = (a.len() != b.len()) as u8;
        for (i, x) in a.iter().enumerate() {
            diff |= x ^ b.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }

    pub(crate) fn cookie(&self) -> String {
        format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", self.0)
    }
}

/// The token a request carries: its cookie, or `Authorization: Bearer`.
fn carried(headers: &HeaderMap) -> Option<&str> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Lets a request through only with the token; 401 otherwise (the login page for a page, JSON
/// for the API). Every request counts for the idle exit.
pub(crate) async fn require(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    shared.touch();
    if carried(request.headers()).is_some_and(|t| shared.token.matches(t)) {
        return next.run(request).await;
    }
    if request.uri().path().starts_with("/api/") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                serde_json::json!({"error": "the token is missing or wrong: log in at /login"}),
            ),
        )
            .into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        super::page::login(None),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct Login {
    token: String,
}

/// POST /login: the token, from the login form. Right: the cookie, and back to the console.
pub(crate) async fn login(
    State(shared): State<Arc<Shared>>,
    axum::Form(form): axum::Form<Login>,
) -> Response {
    shared.touch();
    if shared.token.matches(form.token.trim()) {
        return (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, shared.token.cookie()),
                (header::LOCATION, "/".to_owned()),
            ],
        )
            .into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        super::page::login(Some("That is not the token in the token file.")),
    )
        .into_response()
}

/// GET /login.
pub(crate) async fn login_page(State(shared): State<Arc<Shared>>) -> Response {
    shared.touch();
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        super::page::login(None),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let t = Token("0123456789abcdef0123".into());
        assert!(t.matches("0123456789abcdef0123"));
        for wrong in [
            "",
            "0123456789abcdef012",
            "0123456789abcdef01234",
            "x123456789abcdef0123",
        ] {
            assert!(!t.matches(wrong), "{wrong}");
        }
    }

    #[test]
    fn the_token_comes_from_the_cookie_or_the_bearer_header() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=b; jp_token=secret; c=d".parse().unwrap());
        assert_eq!(carried(&h), Some("secret"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer secret2".parse().unwrap());
        assert_eq!(carried(&h), Some("secret2"));
        assert_eq!(carried(&HeaderMap::new()), None);
    }
}
