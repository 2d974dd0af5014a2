//! The console's stylesheet and scripts, embedded in the binary and served from its own
//! origin (the Content-Security-Policy allows no other). Plain JavaScript, no build step.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/console.js"),
    ),
    (
        "markdown.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/markdown.js"),
    ),
    (
        "chat.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/chat.js"),
    ),
    (
        "text.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/text.js"),
    ),
    (
        "embeddings.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/embeddings.js"),
    ),
    (
        "images.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/images.js"),
    ),
    (
        "features.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/features.js"),
    ),
    (
        "overview.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/overview.js"),
    ),
];

/// `GET /console/assets/{file}`: one of the embedded files, or 404.
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Revalidated each time: a new binary's assets are picked up at once.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
