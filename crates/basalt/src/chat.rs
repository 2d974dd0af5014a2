//! `basalt chat`: an interactive, streaming chat in the terminal, either in-process (loads
//! the model itself) or against a running server's OpenAI-compatible API.

use std::io::{BufRead, BufReader, Write};

use basalt_catalog::Catalog;
use basalt_engine::LoadedModel;
use basalt_types::{ChatMessage, GenerateEvent, GenerateRequest, Prompt, Role, SamplingParams};

use crate::{CatalogArgs, CliResult, EngineArgs};

#[derive(clap::Args)]
pub struct ChatArgs {
    /// Model id [default: the first chat model in the store]
    model: Option<String>,
    /// Talk to a running server (e.g. http://127.0.0.1:8080) instead of loading the model
    #[arg(long)]
    url: Option<String>,
    /// API key for --url
    #[arg(long, env = "BASALT_API_KEY")]
    api_key: Option<String>,
    /// System prompt
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 512)]
    max_tokens: u32,
    #[command(flatten)]
    catalog: CatalogArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

enum Backend {
    Local(Box<LoadedModel>),
    Remote {
        url: String,
        api_key: Option<String>,
    },
}

pub fn run(args: ChatArgs) -> CliResult {
    let (model_id, backend) = match &args.url {
        Some(url) => {
            let id = match &args.model {
                Some(m) => m.clone(),
                None => first_remote_model(url, args.api_key.as_deref())?,
            };
            (
                id,
                Backend::Remote {
                    url: url.trim_end_matches('/').to_string(),
                    api_key: args.api_key.clone(),
                },
            )
        }
        None => {
            let catalog = Catalog::open(&args.catalog.dir())?;
            let config = args.engine.config();
            let mut chosen = None;
            for e in catalog.entries() {
                if args.model.as_ref().is_some_and(|m| *m != e.manifest.id)
                    || e.manifest.format != basalt_catalog::Format::Gguf
                {
                    continue;
                }
                eprint!("loading {} ... ", e.manifest.id);
                let model = LoadedModel::load(&e.weights_path(), config.clone())?;
                if model.supports_chat() {
                    eprintln!("ready");
                    chosen = Some((e.manifest.id.clone(), model));
                    break;
                }
                eprintln!("no chat template, skipping");
            }
            let (id, model) =
                chosen.ok_or("no chat model found in the store (run scripts/fetch-models)")?;
            (id, Backend::Local(Box::new(model)))
        }
    };
    eprintln!("chatting with {model_id}; an empty line or Ctrl-D ends the chat");
    let mut history: Vec<ChatMessage> = Vec::new();
    if let Some(s) = &args.system {
        history.push(ChatMessage::text(Role::System, s.clone()));
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        print!("> ");
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        history.push(ChatMessage::text(Role::User, line.trim_end().to_string()));
        let reply = match &backend {
            Backend::Local(model) => local_turn(model, &history, &args)?,
            Backend::Remote { url, api_key } => {
                remote_turn(url, api_key.as_deref(), &model_id, &history, &args)?
            }
        };
        println!();
        history.push(ChatMessage::text(Role::Assistant, reply));
    }
    Ok(())
}

fn local_turn(
    model: &LoadedModel,
    history: &[ChatMessage],
    args: &ChatArgs,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut rx = model.submit(GenerateRequest {
        prompt: Prompt::Chat(history.to_vec()),
        sampling: SamplingParams {
            temperature: args.temperature,
            ..Default::default()
        },
        max_tokens: Some(args.max_tokens),
        stop: Vec::new(),
        logprobs: None,
        constraints: Default::default(),
        cache_points: Vec::new(),
        thinking: None,
    })?;
    let mut reply = String::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            // A thinking model's reasoning, shown dimmed and kept out of the history (as
            // chat templates leave past reasoning out).
            GenerateEvent::Reasoning { text } => {
                print!("\x1b[2m{text}\x1b[0m");
                std::io::stdout().flush()?;
            }
            GenerateEvent::Text { text, .. } => {
                print!("{text}");
                std::io::stdout().flush()?;
                reply.push_str(&text);
            }
            GenerateEvent::Finished { .. } => break,
            GenerateEvent::Failed { error, .. } => return Err(error.into()),
            // No tools are offered, so no tool calls come back.
            GenerateEvent::ToolCallStart { .. } | GenerateEvent::ToolArguments { .. } => {}
        }
    }
    Ok(reply)
}

fn request(agent: &ureq::Agent, method: &str, url: &str, api_key: Option<&str>) -> ureq::Request {
    let req = agent.request(method, url);
    match api_key {
        Some(k) => req.set("Authorization", &format!("Bearer {k}")),
        None => req,
    }
}

fn first_remote_model(
    url: &str,
    api_key: Option<&str>,
) -> Result<String, Box<dyn std::error::Error>> {
    let agent = ureq::Agent::new();
    let body: serde_json::Value = serde_json::from_reader(
        request(
            &agent,
            "GET",
            &format!("{}/v1/models", url.trim_end_matches('/')),
            api_key,
        )
        .call()?
        .into_reader(),
    )?;
    body["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the server lists no models".into())
}

fn remote_turn(
    url: &str,
    api_key: Option<&str>,
    model: &str,
    history: &[ChatMessage],
    args: &ChatArgs,
) -> Result<String, Box<dyn std::error::Error>> {
    let agent = ureq::Agent::new();
    let body = serde_json::json!({
        "model": model,
        "messages": history,
        "stream": true,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
    });
    let resp = request(
        &agent,
        "POST",
        &format!("{url}/v1/chat/completions"),
        api_key,
    )
    .set("Content-Type", "application/json")
    .send_string(&body.to_string())
    .map_err(|e| match e {
        ureq::Error::Status(code, r) => format!(
            "server answered {code}: {}",
            r.into_string().unwrap_or_default()
        ),
        other => other.to_string(),
    })?;
    let mut reply = String::new();
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: serde_json::Value = serde_json::from_str(data)?;
        if let Some(err) = chunk.get("error") {
            return Err(format!("server error: {}", err["message"]).into());
        }
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            print!("{text}");
            std::io::stdout().flush()?;
            reply.push_str(text);
        }
    }
    Ok(reply)
}
