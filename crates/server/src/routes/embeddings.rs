//! Embeddings for every surface: OpenAI's `POST /v1/embeddings` here, Bedrock's
//! `InvokeModel` (Titan and Cohere bodies) through [`invoke`]. One path does access,
//! quotas (the input tokens), the batched model call, and metering per input token.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::Json;
use basalt_auth::Principal;
use basalt_embed::Embedding;
use basalt_types::{BasaltError, Usage};
use basalt_wire::embeddings::{self as wire, EmbedRequest, EmbeddingOut, NativeEmbedBody};
use bytes::Bytes;
use serde_json::Value;

use crate::error::{body_error, OpenAiError};
use crate::generation::{record_now, Call};
use crate::offload::off_runtime;
use crate::{AppState, ServedEmbedder};

/// Runs one embedding request for `call` on `served`: the whole platform path.
pub(crate) async fn embed(
    state: &Arc<AppState>,
    call: &Call,
    served: Arc<ServedEmbedder>,
    request: EmbedRequest,
) -> Result<Vec<Embedding>, BasaltError> {
    let model_id = served.entry.manifest.id.clone();
    let dims = served.embedder.model.dimensions();
    if let Some(d) = request.dimensions {
        if d as usize != dims {
            return Err(BasaltError::invalid(
                "dimensions",
                format!("this model's embeddings have {dims} dimensions; got a request for {d}"),
            ));
        }
    }
    if let Some(p) = &state.platform {
        p.check_access(&call.principal, &model_id).await?;
    }
    // Counting tokens runs the tokenizer: the blocking pool's work.
    let model = Arc::clone(&served.embedder.model);
    let texts = request.texts.clone();
    let tokens = off_runtime(move || {
        texts
            .iter()
            .map(|t| model.count_tokens(t).0 as u64)
            .sum::<u64>()
    })
    .await?;
    let reservation = match &state.platform {
        Some(p) => p.admit(&call.principal, &model_id, tokens).await?,
        None => None,
    };
    let result = match served
        .embedder
        .submit(request.texts, request.allow_truncation)
    {
        Ok(rx) => rx
            .await
            .map_err(|_| BasaltError::internal("the embedding worker stopped"))
            .and_then(|r| r.map_err(BasaltError::from)),
        Err(e) => Err(e.into()),
    };
    let (used, status) = match &result {
        Ok(out) => (out.iter().map(|e| e.tokens as u64).sum(), "ok".to_string()),
        Err(e) => (0, format!("error:{:?}", e.kind).to_ascii_lowercase()),
    };
    let usage = Usage {
        input_tokens: used as u32,
        output_tokens: 0,
        ..Usage::default()
    };
    record_now(state, call, &model_id, usage, &status, reservation).await;
    result
}

pub(crate) async fn openai_embeddings(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, OpenAiError> {
    let call = Call::new(principal, "openai", "embeddings", "emb-");
    openai_embeddings_for(&state, call, body.map_err(body_error)?).await
}

/// `/v1/embeddings` for `call`: an HTTP request's, or a batch job's record.
pub(crate) async fn openai_embeddings_for(
    state: &Arc<AppState>,
    call: Call,
    body: Bytes,
) -> Result<Json<Value>, OpenAiError> {
    let state = Arc::clone(state);
    let (model_id, request, base64) =
        basalt_wire::parse_json::<wire::OpenAiEmbeddingsRequest>(&body)?.into_request()?;
    let served = state
        .embedder(&model_id)
        .ok_or_else(|| match state.model(&model_id) {
            Ok(_) => BasaltError::invalid(
                "model",
                format!("`{model_id}` generates text; use an embedding model"),
            ),
            Err(e) => e,
        })?;
    let out = embed(&state, &call, served, request).await?;
    let items: Vec<EmbeddingOut<'_>> = out
        .iter()
        .map(|e| EmbeddingOut {
            vector: &e.vector,
            truncated: e.truncated,
        })
        .collect();
    let tokens = out.iter().map(|e| e.tokens).sum();
    Ok(Json(wire::openai_response(
        &model_id, &items, base64, tokens,
    )))
}

/// `InvokeModel` on an embedding model: the Titan or the Cohere body.
pub(crate) async fn invoke(
    state: &Arc<AppState>,
    call: &Call,
    served: Arc<ServedEmbedder>,
    body: &[u8],
) -> Result<(Value, u32), BasaltError> {
    match wire::parse_native(body)? {
        NativeEmbedBody::Titan(t) => {
            let (request, normalize, by_type) = t.into_request()?;
            let out = embed(state, call, served, request).await?;
            let e = out
                .first()
                .ok_or_else(|| BasaltError::internal("no embedding came back"))?;
            let vector: Vec<f32> = if normalize {
                e.vector.clone()
            } else {
                e.vector.iter().map(|v| v * e.norm).collect()
            };
            Ok((wire::titan_response(&vector, e.tokens, by_type), e.tokens))
        }
        NativeEmbedBody::Cohere(c) => {
            let (request, by_type) = c.into_request()?;
            let texts = request.texts.clone();
            let out = embed(state, call, served, request).await?;
            let vectors: Vec<&[f32]> = out.iter().map(|e| e.vector.as_slice()).collect();
            let tokens = out.iter().map(|e| e.tokens).sum();
            Ok((
                wire::cohere_response(&call.request_id, &texts, &vectors, by_type),
                tokens,
            ))
        }
    }
}
