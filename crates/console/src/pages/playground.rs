//! The playgrounds: chat, text completion, embeddings and images. The pages only offer
//! the models; the browser calls the public APIs (`/v1/...`) with the session, as any
//! client would (the scripts in `assets/`).

use axum::extract::State;
use axum::response::Html;
use minijinja::context;

use crate::page::{self, ConsoleError};
use crate::pages::{of_kind, usable_models};
use crate::session::Viewer;
use crate::Shared;

async fn playground(
    console: &crate::Console,
    viewer: &Viewer,
    template: &str,
    nav: &str,
    kind: &str,
) -> Result<Html<String>, ConsoleError> {
    let models = usable_models(console, viewer).await;
    // The text playground also takes chat models: they complete raw text too.
    let offered = match kind {
        "text" => models
            .iter()
            .filter(|m| m.kind == "text" || m.kind == "chat")
            .cloned()
            .collect(),
        kind => of_kind(&models, kind),
    };
    page::render(
        console,
        template,
        viewer,
        context! { nav => nav, models => offered },
    )
}

pub(crate) async fn chat(
    State(console): Shared,
    viewer: Viewer,
) -> Result<Html<String>, ConsoleError> {
    playground(&console, &viewer, "chat.html", "chat", "chat").await
}

pub(crate) async fn text(
    State(console): Shared,
    viewer: Viewer,
) -> Result<Html<String>, ConsoleError> {
    playground(&console, &viewer, "text.html", "text", "text").await
}

pub(crate) async fn embeddings(
    State(console): Shared,
    viewer: Viewer,
) -> Result<Html<String>, ConsoleError> {
    playground(
        &console,
        &viewer,
        "embeddings.html",
        "embeddings",
        "embedding",
    )
    .await
}

pub(crate) async fn images(
    State(console): Shared,
    viewer: Viewer,
) -> Result<Html<String>, ConsoleError> {
    playground(&console, &viewer, "images.html", "images", "image").await
}
