//! Greedy generation from the command line, for poking at a model without the server:
//! `cargo run -p basalt-engine --example generate -- MODEL.gguf "prompt" [max_tokens] [chat]`

use std::path::PathBuf;
use std::time::Instant;

use basalt_engine::{EngineConfig, LoadedModel};
use basalt_types::{ChatMessage, GenerateEvent, GenerateRequest, Prompt, Role, SamplingParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = PathBuf::from(
        args.get(1)
            .ok_or("usage: generate MODEL PROMPT [MAX] [chat]")?,
    );
    let text = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "The capital of France is".into());
    let max: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
    let prompt = if args.get(4).is_some_and(|s| s == "chat") {
        Prompt::Chat(vec![ChatMessage::text(Role::User, text)])
    } else {
        Prompt::Text(text)
    };
    let t0 = Instant::now();
    let model = LoadedModel::load(&path, EngineConfig::default())?;
    eprintln!(
        "loaded in {:?}; prompt tokens: {:?}",
        t0.elapsed(),
        model.tokenize_prompt(&prompt, &Default::default())?
    );
    let request = GenerateRequest {
        prompt,
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        max_tokens: Some(max),
        stop: vec![],
        logprobs: None,
        constraints: Default::default(),
        cache_points: Vec::new(),
        thinking: None,
    };
    let t1 = Instant::now();
    let mut rx = model.submit(request)?;
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            GenerateEvent::Text { text, .. } => print!("{text}"),
            GenerateEvent::Reasoning { text } => print!("[thinking] {text}"),
            GenerateEvent::Finished { reason, usage, .. } => {
                println!("\n[{reason:?} {usage:?} in {:?}]", t1.elapsed());
                break;
            }
            GenerateEvent::Failed { error, .. } => return Err(error.into()),
            // No tools are offered, so no tool calls come back.
            GenerateEvent::ToolCallStart { .. } | GenerateEvent::ToolArguments { .. } => {}
        }
    }
    Ok(())
}
