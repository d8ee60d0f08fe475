//! The playground (`GET /`) and the interactive API docs (`GET /docs`): static pages from `ui/`,
//! built into the binary (build.rs lists the files), so they render with nothing fetched from any
//! host but this server. Every URL in the pages is relative, so they work behind a path prefix.
//! `--ui-dir` reads the files from disk on every request instead (for working on the pages).

use super::error::{ApiError, ErrorType};
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// What the pages may load: this server only (scripts, styles, images, fetches), so a page can
/// never reach another host even if an asset tried to.
const CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'self'; \
                   base-uri 'self'; form-action 'self'";

/// The page routes (no OpenAPI entries: they are not part of the API).
pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/", get(|State(app): State<AppState>| async move { file(&app, "index.html").await }))
        .route("/docs", get(|State(app): State<AppState>| async move { file(&app, "docs.html").await }))
        .route(
            "/ui/{*path}",
            get(|State(app): State<AppState>, Path(path): Path<String>| async move { file(&app, &path).await }),
        )
}

/// Whether a requested path names a file under `ui/` (no `..`, no absolute or empty parts).
fn plain(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|p| !p.is_empty() && p != "." && p != ".." && !p.starts_with('.') && !p.contains('\\'))
}

async fn file(app: &AppState, path: &str) -> Result<Response, ApiError> {
    let missing = || ApiError::new(ErrorType::NotFound, format!("no page or asset '{}'", shown(path)));
    if !plain(path) {
        return Err(missing());
    }
    let bytes: Vec<u8> = match &app.ui_dir {
        Some(dir) => tokio::fs::read(dir.join(path)).await.map_err(|_| missing())?,
        None => UI_ASSETS.iter().find(|(p, _)| *p == path).map(|(_, b)| b.to_vec()).ok_or_else(missing)?,
    };
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A path for messages: at most 64 characters.
fn shown(path: &str) -> String {
    path.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_paths_under_ui_are_served() {
        for ok in ["index.html", "vendor/swagger-ui/swagger-ui.css", "samples/a.png"] {
            assert!(super::plain(ok), "{ok}");
        }
        for bad in ["", "../Cargo.toml", "a/../../etc/passwd", "/etc/passwd", "a//b", ".git/config", "a\\..\\b", "./x"]
        {
            assert!(!super::plain(bad), "{bad}");
        }
    }
}
