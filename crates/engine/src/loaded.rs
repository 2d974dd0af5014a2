//! A model loaded for serving: its weights, tokenizer, chat template and scheduler thread,
//! and what callers do with it (prepare a request, queue it, read its state).

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use basalt_gguf::GgufFile;
use basalt_grammar::{GrammarCompiler, Word};
use basalt_types::{BasaltError, ErrorKind, GenerateRequest, OutputConstraints, Prompt};

use crate::kv::KvBudget;
use crate::memory::{available_memory, KvPromise, MemoryPlan};
use crate::template::ChatTemplate;
use crate::tokenizer::{TokenKind, Tokenizer};
use crate::{
    kv, model, reasoning, scheduler, tools, Admission, EngineConfig, EngineError, EventReceiver,
    PreparedRequest, SchedulerStats,
};

/// Opens a GGUF file for serving: read into huge pages ([`GgufFile::load_resident`]), which
/// decodes faster, unless `map` asks for the page-cache mapping or the file is larger than
/// the memory available, where a private copy would only push the weights out to swap.
/// (`LoadedModel::load` decides with its whole [`MemoryPlan`], KV cache included.)
pub fn open_weights(path: &Path, map: bool) -> Result<GgufFile, EngineError> {
    if map {
        return Ok(GgufFile::open(path)?);
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match available_memory() {
        Some(available) if size > available => {
            tracing::warn!(
                path = %path.display(),
                size_mb = size >> 20,
                available_mb = available >> 20,
                "the model is larger than available memory: serving it from a file mapping"
            );
            Ok(GgufFile::open(path)?)
        }
        _ => Ok(GgufFile::load_resident(path)?),
    }
}

pub struct LoadedModel {
    shared: Arc<scheduler::Shared>,
    handle: scheduler::Handle,
    template: Option<ChatTemplate>,
    /// Built on the first constrained request: it indexes the whole vocabulary.
    grammar: OnceLock<Result<GrammarCompiler, String>>,
    /// The KV memory this model may still claim, counted against later models' plans.
    _kv_promise: KvPromise,
}

impl LoadedModel {
    /// Opens a GGUF model, then starts its scheduler thread. First its [`MemoryPlan`]:
    /// weights are copied into memory only where they fit beside the KV cache and buffers
    /// (else mapped from the file), and a model whose KV cache and buffers cannot fit at
    /// all is refused with the numbers before anything is allocated.
    pub fn load(path: &Path, config: EngineConfig) -> Result<Self, EngineError> {
        let mapped = GgufFile::open(path)?;
        let plan = MemoryPlan::for_model(path, mapped.header(), &config);
        plan.check()?;
        tracing::info!(model = %path.display(), "memory: {}", plan.describe());
        let file = if plan.weights_resident {
            drop(mapped);
            GgufFile::load_resident(path)?
        } else {
            mapped
        };
        let kv_promise = KvPromise::new(config.kv_budget_bytes as u64);
        let (tokenizer, transformer, template) = Self::parts(&file)?;
        let budget = KvBudget::new(config.kv_budget_bytes);
        let shared = Arc::new(scheduler::Shared {
            transformer,
            tokenizer,
            budget,
            config,
            cached_bytes: Default::default(),
        });
        let handle = scheduler::start(Arc::clone(&shared))?;
        Ok(Self {
            shared,
            handle,
            template,
            grammar: OnceLock::new(),
            _kv_promise: kv_promise,
        })
    }

    /// Checks that a GGUF file would load, without reading its weights into memory or
    /// starting anything: every hyper-parameter against the tensors present, the tokenizer,
    /// the chat template. `basalt models import` runs this before copying a file.
    pub fn inspect(path: &Path) -> Result<(), EngineError> {
        let file = GgufFile::open(path)?;
        Self::parts(&file).map(|_| ())
    }

    /// The tokenizer, the architecture (views into the file's tensors) and the chat
    /// template, each checked against the others.
    #[allow(clippy::type_complexity)]
    fn parts(
        file: &GgufFile,
    ) -> Result<(Tokenizer, Box<dyn model::Transformer>, Option<ChatTemplate>), EngineError> {
        let tokenizer = Tokenizer::from_gguf(file.header())?;
        let transformer = model::load(file)?;
        if transformer.vocab_size() > tokenizer.vocab_size() {
            return Err(EngineError::Model(format!(
                "the output layer has {} rows but the vocabulary only {} tokens",
                transformer.vocab_size(),
                tokenizer.vocab_size()
            )));
        }
        let template = match file.header().string("tokenizer.chat_template") {
            Ok(src) => {
                let piece = |id: Option<u32>| {
                    id.and_then(|i| tokenizer.token_text(i))
                        .unwrap_or("")
                        .to_owned()
                };
                Some(ChatTemplate::new(
                    src,
                    &piece(tokenizer.bos()),
                    &piece(tokenizer.eos()),
                )?)
            }
            Err(_) => None,
        };
        Ok((tokenizer, transformer, template))
    }

    pub fn context_length(&self) -> usize {
        self.shared.transformer.context_length()
    }

    /// The most positions one sequence can hold in the KV budget (whole blocks).
    pub fn kv_capacity_tokens(&self) -> usize {
        let block = self.shared.transformer.kv_shape().bytes_per_block().max(1);
        self.shared.budget.limit_bytes() / block * kv::BLOCK_TOKENS
    }

    pub fn supports_chat(&self) -> bool {
        self.template.is_some()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.shared.tokenizer
    }

    pub fn stats(&self) -> SchedulerStats {
        self.handle.stats()
    }

    /// KV cache bytes in use right now (returns to 0 when no request is active).
    pub fn kv_bytes_in_use(&self) -> usize {
        self.shared.budget.used_bytes().saturating_sub(
            self.shared
                .cached_bytes
                .load(std::sync::atomic::Ordering::Acquire),
        )
    }

    /// KV cache bytes the prefix cache keeps for reuse (given back whenever needed).
    pub fn kv_bytes_cached(&self) -> usize {
        self.shared
            .cached_bytes
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Renders (for chat, with the tools described) and tokenises a prompt, exactly as
    /// `submit` will with the model's default thinking.
    pub fn tokenize_prompt(
        &self,
        prompt: &Prompt,
        constraints: &OutputConstraints,
    ) -> Result<Vec<u32>, BasaltError> {
        let thinking = self.thinking(constraints, None);
        Ok(self.render_prompt(prompt, constraints, thinking)?.0)
    }

    /// Whether the model thinks before it answers (its chat template writes reasoning
    /// blocks).
    fn thinks(&self) -> bool {
        self.template.as_ref().is_some_and(|t| t.thinks())
    }

    /// Whether the conversation is rendered with thinking switched on or off, for a model
    /// that thinks: the caller's choice, except that a constrained answer (a tool call, a
    /// JSON format) starts at its first token, so it is rendered with thinking off.
    fn thinking(&self, constraints: &OutputConstraints, asked: Option<bool>) -> Option<bool> {
        match (self.thinks(), constraints.is_free_text()) {
            (false, _) => None,
            (true, false) => Some(false),
            (true, true) => asked,
        }
    }

    /// The prompt's tokens, and for a chat with a thinking model, whether the rendered
    /// prompt left a reasoning block open (the answer then starts inside it).
    fn render_prompt(
        &self,
        prompt: &Prompt,
        constraints: &OutputConstraints,
        thinking: Option<bool>,
    ) -> Result<(Vec<u32>, bool), BasaltError> {
        let tok = &self.shared.tokenizer;
        match prompt {
            Prompt::Text(text) => Ok((tok.encode(text, true, false), false)),
            Prompt::Chat(messages) => {
                let template = self.template.as_ref().ok_or_else(|| {
                    BasaltError::new(
                        ErrorKind::UnsupportedForModel,
                        "This model is a base (completion) model with no chat template, so it cannot \
                         chat. Use the completions endpoint with a text prompt instead.",
                    )
                    .with_param("messages")
                })?;
                let messages = tools::render_conversation(messages, constraints);
                let text = template.render(&messages, thinking).map_err(|e| {
                    BasaltError::invalid(
                        "messages",
                        format!("the model's chat template rejected the messages: {e}"),
                    )
                })?;
                let opened = reasoning::prompt_opens_block(&text);
                Ok((self.encode_rendered(&text), opened))
            }
        }
    }

    /// Tokenises a chat template's output. The template is ours (from the model file), so
    /// its control tokens are real; the BOS, if the template wants one, is already in the
    /// text.
    fn encode_rendered(&self, text: &str) -> Vec<u32> {
        let tok = &self.shared.tokenizer;
        let bos_in_text = tok
            .bos()
            .and_then(|b| tok.token_text(b))
            .is_some_and(|b| text.starts_with(b));
        tok.encode(text, !bos_in_text, true)
    }

    /// How many of `prompt_tokens` the request's furthest cache point covers, and for how
    /// long it asks them kept: the tokens its conversation up to the point renders to, as
    /// far as they agree with the whole prompt's (a template that renders a message
    /// differently once more follow it shortens the point, never moves it past a
    /// difference). A point the template cannot render alone is dropped.
    fn cache_point(&self, request: &GenerateRequest, prompt_tokens: &[u32]) -> (usize, Duration) {
        let (Prompt::Chat(messages), Some(template)) = (&request.prompt, &self.template) else {
            return (0, Duration::ZERO);
        };
        let Some(point) = request.cache_points.iter().max_by_key(|p| p.messages) else {
            return (0, Duration::ZERO);
        };
        let upto = &messages[..point.messages.min(messages.len())];
        let rendered = tools::render_conversation(upto, &request.constraints);
        if rendered.is_empty() {
            return (0, Duration::ZERO);
        }
        let thinking = self.thinking(&request.constraints, request.thinking);
        let Ok(text) = template.render_prefix(&rendered, thinking) else {
            return (0, Duration::ZERO);
        };
        let prefix = self.encode_rendered(&text);
        let agree = prefix
            .iter()
            .zip(prompt_tokens)
            .take_while(|(a, b)| a == b)
            .count();
        (agree, point.ttl)
    }

    /// Validates and prepares a request without queueing it.
    pub fn prepare(&self, request: GenerateRequest) -> Result<PreparedRequest, BasaltError> {
        tools::validate(&request.constraints)?;
        // The output grammar's text first: building it checks each schema against its size
        // limits, which is cheap, before the tools are rendered into a prompt of their size.
        let grammar = tools::grammar(&request.constraints)?;
        let thinks = self.thinks();
        if request.thinking == Some(true) && !thinks {
            return Err(BasaltError::new(
                ErrorKind::UnsupportedForModel,
                "This model does not think before it answers (its chat template has no \
                 reasoning block), so reasoning cannot be switched on.",
            )
            .with_param("thinking"));
        }
        let thinking = self.thinking(&request.constraints, request.thinking);
        let (prompt_tokens, opened) =
            self.render_prompt(&request.prompt, &request.constraints, thinking)?;
        // The answer is split into reasoning and text for a free-text chat with a thinking
        // model, unless thinking was switched off and the template obeyed (one that opens
        // the block regardless, as DeepSeek-R1's does, gets reasoning all the same). A
        // constrained answer is the grammar's from its first token, never reasoning.
        let reasoning = (thinks
            && matches!(request.prompt, Prompt::Chat(_))
            && request.constraints.is_free_text()
            && (thinking != Some(false) || opened))
            .then_some(opened);
        let ctx = self.context_length();
        let param = match request.prompt {
            Prompt::Chat(_) => "messages",
            Prompt::Text(_) => "prompt",
        };
        if prompt_tokens.is_empty() {
            return Err(BasaltError::invalid(param, "The prompt is empty."));
        }
        if prompt_tokens.len() >= ctx {
            return Err(BasaltError::new(
                ErrorKind::ContextLengthExceeded,
                format!(
                    "This model's maximum context length is {ctx} tokens, but the prompt has {} tokens.",
                    prompt_tokens.len()
                ),
            )
            .with_param(param));
        }
        // The KV budget can be smaller than the context window (`--kv-cache-mb`): a prompt
        // that cannot fit even alone could never run, however long it waited.
        let capacity = self.kv_capacity_tokens();
        if prompt_tokens.len() >= capacity {
            return Err(BasaltError::new(
                ErrorKind::ContextLengthExceeded,
                format!(
                    "This server's KV cache holds at most {capacity} tokens of one sequence, but \
                     the prompt has {} tokens.",
                    prompt_tokens.len()
                ),
            )
            .with_param(param));
        }
        let room = ctx - prompt_tokens.len();
        let max_tokens = match request.max_tokens {
            Some(m) if m as usize > room => {
                return Err(BasaltError::new(
                    ErrorKind::ContextLengthExceeded,
                    format!(
                        "This model's maximum context length is {ctx} tokens. However, you requested {} tokens \
                         ({} in the prompt, {m} for the completion). Reduce the prompt or the maximum tokens.",
                        prompt_tokens.len() + m as usize,
                        prompt_tokens.len()
                    ),
                )
                .with_param("max_tokens"));
            }
            Some(m) => m as usize,
            // Unlimited: as far as both the context window and the KV budget go.
            None => room.min(capacity - prompt_tokens.len()),
        };
        let vocab = self.shared.transformer.vocab_size();
        if let Some((id, _)) = request
            .sampling
            .logit_bias
            .iter()
            .find(|(id, _)| *id as usize >= vocab)
        {
            return Err(BasaltError::invalid(
                "logit_bias",
                format!("token {id} is not in this model's vocabulary of {vocab} tokens"),
            ));
        }
        let limited_by_context = request.max_tokens.is_none();
        let constraint = match grammar {
            Some(lark) => Some(self.grammar_compiler()?.compile(&lark).map_err(|e| {
                let param = tools::constraint_param(&request.constraints);
                tracing::warn!(param, error = %e, "cannot compile the output grammar");
                BasaltError::invalid(param, format!("cannot constrain the output: {e}"))
            })?),
            None => None,
        };
        let (cache_until, cache_ttl) = self.cache_point(&request, &prompt_tokens);
        Ok(PreparedRequest {
            prompt_tokens,
            reasoning,
            max_tokens,
            limited_by_context,
            request,
            constraint,
            cache_until,
            cache_ttl,
        })
    }

    fn grammar_compiler(&self) -> Result<&GrammarCompiler, BasaltError> {
        self.grammar
            .get_or_init(|| {
                let tok = &self.shared.tokenizer;
                let words = (0..tok.vocab_size() as u32)
                    .map(|id| match tok.token_kind(id) {
                        Some(TokenKind::Control | TokenKind::Unused) | None => {
                            Word::Special(tok.token_text(id).unwrap_or_default().to_string())
                        }
                        Some(_) => Word::Bytes(tok.token_bytes(id)),
                    })
                    .collect();
                let end = tok
                    .end_of_turn()
                    .ok_or("the model has no end-of-turn token")?;
                let shared = Arc::clone(&self.shared);
                GrammarCompiler::new(words, end, move |bytes| {
                    shared
                        .tokenizer
                        .encode(&String::from_utf8_lossy(bytes), false, false)
                })
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| {
                BasaltError::new(
                    ErrorKind::UnsupportedForModel,
                    format!("this model cannot do constrained decoding: {e}"),
                )
            })
    }

    /// Queues a request in the shared lane, unmetered; events arrive on the returned
    /// receiver.
    pub fn submit(&self, request: GenerateRequest) -> Result<EventReceiver, BasaltError> {
        let prepared = self.prepare(request)?;
        self.enqueue(prepared, Admission::default())
    }

    /// Queues a request already prepared with [`LoadedModel::prepare`] (for callers that need
    /// the prompt's token count before generation starts) in the admission's tenant lane.
    pub fn enqueue(
        &self,
        prepared: PreparedRequest,
        admission: Admission,
    ) -> Result<EventReceiver, BasaltError> {
        self.handle.enqueue(prepared, admission)
    }
}
