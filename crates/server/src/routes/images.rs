//! Image generation for every surface: OpenAI's `POST /v1/images/generations` here,
//! Bedrock's `InvokeModel` (Titan and Stability bodies) through [`invoke`]. One path does
//! access, quotas and metering (one output unit per image and denoising step; one-shot
//! generators count one step) and runs the model on the blocking pool; a client that goes
//! away stops the model at its next step and pays for the steps computed.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::Json;
use basalt_auth::Principal;
use basalt_image::{ImageError, ImageJob, Step};
use basalt_types::{BasaltError, Usage};
use basalt_wire::images::{self as wire, ImageRequest, NativeImageBody};
use bytes::Bytes;
use serde_json::Value;

use crate::error::{body_error, OpenAiError};
use crate::generation::{record_now, unix_now, Call};
use crate::{AppState, ServedImageModel};

/// Generates the request's images: `(seed, PNG)` each.
pub(crate) async fn generate(
    state: &Arc<AppState>,
    call: &Call,
    served: Arc<ServedImageModel>,
    request: ImageRequest,
) -> Result<Vec<(u64, Vec<u8>)>, BasaltError> {
    let model_id = served.entry.manifest.id.clone();
    // Without a seed the prompt picks one, so a prompt alone is reproducible.
    let base = request
        .seed
        .unwrap_or_else(|| basalt_image::seed_for(&request.prompt));
    let job = |i: u64| ImageJob {
        prompt: request.prompt.clone(),
        negative_prompt: request.negative_prompt.clone(),
        seed: base.wrapping_add(i),
        width: request.width,
        height: request.height,
        steps: request.steps,
        guidance: request.cfg_scale,
    };
    let jobs: Vec<ImageJob> = (0..request.n as u64).map(job).collect();
    // The jobs differ only in their seeds: checking the first checks them all.
    let steps_per_image = match jobs.first() {
        Some(j) => served.model.check(j).map_err(image_error)?,
        None => 1,
    };
    let units = u64::from(request.n) * u64::from(steps_per_image);
    let reservation = match &state.platform {
        Some(p) => {
            p.check_access(&call.principal, &model_id).await?;
            p.admit(&call.principal, &model_id, units).await?
        }
        None => None,
    };
    // The work runs in its own task, so that when the client goes away (and this future is
    // dropped) the steps already computed are still metered; the flag stops the model at
    // its next step.
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let stop = Arc::clone(&cancel.0);
    let model = Arc::clone(&served.model);
    let state = Arc::clone(state);
    let call = call.clone();
    let task = tokio::spawn(async move {
        let steps_done = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&steps_done);
        let result = tokio::task::spawn_blocking(move || {
            jobs.iter()
                .map(|job| {
                    let mut progress = |_done: u32, _total: u32| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        if stop.load(Ordering::Relaxed) {
                            Step::Stop
                        } else {
                            Step::Continue
                        }
                    };
                    model
                        .generate(job, &mut progress)
                        .map(|png| (job.seed, png))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| BasaltError::internal(format!("image task failed: {e}")))?;
        let cancelled = matches!(result, Err(ImageError::Cancelled));
        let result = result.map_err(image_error);
        let status = match &result {
            Ok(_) => "ok".to_string(),
            Err(_) if cancelled => "cancelled".to_string(),
            Err(e) => format!("error:{:?}", e.kind).to_ascii_lowercase(),
        };
        // Metered as output units: one per image and step computed (a cancelled or failed
        // request pays for the steps it ran).
        let usage = Usage {
            input_tokens: 0,
            output_tokens: steps_done.load(Ordering::Relaxed),
            ..Usage::default()
        };
        record_now(&state, &call, &model_id, usage, &status, reservation).await;
        result
    });
    let result = task
        .await
        .map_err(|e| BasaltError::internal(format!("image task failed: {e}")))?;
    drop(cancel);
    result
}

/// A model's refusal as the API error every surface renders: bad input is the caller's
/// (naming the field), anything else is ours.
fn image_error(e: ImageError) -> BasaltError {
    match e {
        ImageError::Input { param, message } => BasaltError::invalid(param, message),
        other => BasaltError::internal(other.to_string()),
    }
}

/// Sets its flag when dropped: a request future dropped by a departed client stops the
/// generation it started.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub(crate) async fn openai_images(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, OpenAiError> {
    let call = Call::new(principal, "openai", "images.generations", "img-");
    let body = body.map_err(body_error)?;
    let default_model = state
        .image_models()
        .next()
        .map(|m| m.entry.manifest.id.clone())
        .unwrap_or_default();
    let (model_id, request) = basalt_wire::parse_json::<wire::OpenAiImagesRequest>(&body)?
        .into_request(&default_model)?;
    let served = state
        .image_model(&model_id)
        .ok_or_else(|| BasaltError::model_not_found(&model_id))?;
    let images = generate(&state, &call, served, request).await?;
    let pngs: Vec<Vec<u8>> = images.into_iter().map(|(_, p)| p).collect();
    Ok(Json(wire::openai_response(unix_now(), &pngs)))
}

/// `InvokeModel` on an image model: the Titan or the Stability body.
pub(crate) async fn invoke(
    state: &Arc<AppState>,
    call: &Call,
    served: Arc<ServedImageModel>,
    body: &[u8],
) -> Result<Value, BasaltError> {
    match wire::parse_native(body)? {
        NativeImageBody::Titan(t) => {
            let images = generate(state, call, served, t.into_request()?).await?;
            let pngs: Vec<Vec<u8>> = images.into_iter().map(|(_, p)| p).collect();
            Ok(wire::titan_response(&pngs))
        }
        NativeImageBody::Stability(s) => {
            let images = generate(state, call, served, s.into_request()?).await?;
            Ok(wire::stability_response(&images))
        }
    }
}
