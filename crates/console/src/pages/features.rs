//! Guardrails, knowledge bases and batch jobs: each page lists the viewer's own, and
//! creates, tests, queries or follows them through the public Bedrock and OpenAI APIs from
//! the browser (`features.js`), so the console can do exactly what a client can.

use axum::extract::State;
use axum::response::Html;
use minijinja::context;

use crate::page::{self, ConsoleError};
use crate::pages::{of_kind, usable_models};
use crate::session::Viewer;
use crate::Shared;

pub(crate) async fn guardrails(
    State(console): Shared,
    viewer: Viewer,
) -> Result<Html<String>, ConsoleError> {
    page::render(
        &console,
        "guardrails.html",
        &viewer,
        context! { nav => "guardrails" },
    )
}

pub(crate) async fn knowledge_bases(
    State(console): Shared,
    viewer: Viewer,
) -> Result<Html<String>, ConsoleError> {
    let models = usable_models(&console, &viewer).await;
    page::render(
        &console,
        "knowledge_bases.html",
        &viewer,
        context! {
            nav => "knowledge-bases",
            embedders => of_kind(&models, "embedding"),
            chat_models => of_kind(&models, "chat"),
            region => console.app.region,
        },
    )
}

pub(crate) async fn jobs(
    State(console): Shared,
    viewer: Viewer,
) -> Result<Html<String>, ConsoleError> {
    page::render(&console, "jobs.html", &viewer, context! { nav => "jobs" })
}
