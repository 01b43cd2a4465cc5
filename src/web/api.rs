//! The routes: the page and its assets, the login, and the JSON API. Every route but the login
//! and the login page's stylesheet needs the token (`auth::require`). Nothing writes.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde_json::json;

use super::search::{self, Failure, Search};
use super::{auth, health, page, Shared};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let guarded = Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::app_js))
        .route("/uPlot.min.js", get(page::uplot_js))
        .route("/uPlot.min.css", get(page::uplot_css))
        .route("/api/health", get(health_json))
        .route("/api/activity", get(activity_json))
        .route("/api/search", get(search_json))
        .route("/api/entry", get(entry_json))
        .route("/api/download", get(download))
        .route("/api/sql", post(sql_json))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            auth::require,
        ));
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/style.css", get(page::style_css))
        .merge(guarded)
        .layer(middleware::map_response(secure_headers))
        .with_state(shared)
}

/// No framing, no foreign scripts, nothing cached: the pages show the journal.
async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    response
}

/// A failure as the API answers it: 400 with what is wrong, or 500.
fn failure(f: Failure) -> Response {
    match f {
        Failure::Bad(text) => {
            (StatusCode::BAD_REQUEST, Json(json!({"error": text}))).into_response()
        }
        Failure::Failed(e) => {
            let text = crate::sys::duckdb::chain_text(&e);
            log::warn!("web console: {text}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": text})),
            )
                .into_response()
        }
    }
}

/// Runs `work` on a blocking thread (DuckDB, the file system), at most `SESSIONS_AT_ONCE` at a
/// time: each holds a DuckDB of up to `query_memory_limit`.
async fn blocking<T: Send + 'static>(
    shared: &Shared,
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    let _permit = shared.sessions.acquire().await;
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(Failure::Failed(anyhow::anyhow!(
            "the request's thread failed: {e}"
        )))
    })
}

async fn health_json(State(shared): State<Arc<Shared>>) -> Response {
    let s = shared.clone();
    match blocking(&shared, move || Ok(health::health(&s.settings, &s.archive))).await {
        Ok(v) => Json(v).into_response(),
        Err(f) => failure(f),
    }
}

#[derive(serde::Deserialize)]
struct Activity {
    range: Option<String>,
    by: Option<String>,
}

async fn activity_json(State(shared): State<Arc<Shared>>, Query(q): Query<Activity>) -> Response {
    let s = shared.clone();
    let r = blocking(&shared, move || {
        crate::archive::summary::activity(
            &s.settings,
            q.range.as_deref().unwrap_or("24h"),
            q.by.as_deref().unwrap_or("priority"),
        )
        .map_err(|e| match e {
            crate::archive::summary::Asked::Bad(t) => Failure::Bad(t),
            crate::archive::summary::Asked::Failed(e) => Failure::Failed(e),
        })
    })
    .await;
    match r {
        Ok(v) => Json(v).into_response(),
        Err(f) => failure(f),
    }
}

async fn search_json(State(shared): State<Arc<Shared>>, Query(q): Query<Search>) -> Response {
    let s = shared.clone();
    match blocking(&shared, move || search::search(&s.settings, &q)).await {
        Ok(v) => Json(v).into_response(),
        Err(f) => failure(f),
    }
}

#[derive(serde::Deserialize)]
struct EntryAsked {
    cursor: String,
    ts: i64,
}

async fn entry_json(State(shared): State<Arc<Shared>>, Query(q): Query<EntryAsked>) -> Response {
    let s = shared.clone();
    match blocking(&shared, move || search::entry(&s.settings, &q.cursor, q.ts)).await {
        Ok(v) => Json(v).into_response(),
        Err(f) => failure(f),
    }
}

#[derive(serde::Deserialize)]
struct Download {
    format: String,
    #[serde(flatten)]
    search: Search,
}

async fn download(State(shared): State<Arc<Shared>>, Query(q): Query<Download>) -> Response {
    let s = shared.clone();
    match blocking(&shared, move || {
        search::download(&s.settings, &q.search, &q.format).map(|r| (r, q.format))
    })
    .await
    {
        Ok(((bytes, mime), format)) => (
            [
                (header::CONTENT_TYPE, mime.to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"journal.{format}\""),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(f) => failure(f),
    }
}

async fn sql_json(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let s = shared.clone();
    match blocking(&shared, move || search::sql(&s.settings, &body)).await {
        Ok(v) => Json(v).into_response(),
        Err(f) => failure(f),
    }
}
