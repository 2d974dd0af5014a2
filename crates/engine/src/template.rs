//! Chat templates: the Jinja template a model ships in its GGUF metadata
//! (`tokenizer.chat_template`), rendered with minijinja and the Python-compatible methods
//! Hugging Face templates rely on (`.strip()`, `.startswith()`, `raise_exception`).

use basalt_types::ChatMessage;
use minijinja::{Environment, Error as JinjaError, ErrorKind as JinjaErrorKind};
use serde::Serialize;

use crate::EngineError;

/// Enough for conversations of thousands of messages with real templates.
const TEMPLATE_FUEL: u64 = 50_000_000;

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// The template writes reasoning blocks: its model thinks before it answers.
    thinks: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

fn raise_exception(msg: String) -> Result<String, JinjaError> {
    Err(JinjaError::new(JinjaErrorKind::InvalidOperation, msg))
}

#[derive(Serialize)]
struct Context<'a> {
    messages: &'a [ChatMessage],
    add_generation_prompt: bool,
    bos_token: &'a str,
    eos_token: &'a str,
    /// Qwen 3's switch (and others' since): absent unless the caller chose, so a template
    /// that tests `enable_thinking is defined` keeps its own default.
    #[serde(skip_serializing_if = "Option::is_none")]
    enable_thinking: Option<bool>,
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, EngineError> {
        let mut env = Environment::new();
        // Templates come from model files, i.e. from users: bound the work one render may do
        // so a hostile template (an enormous loop) is an error, not a stalled thread.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| EngineError::Model(format!("chat template does not parse: {e}")))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            thinks: crate::reasoning::template_thinks(source),
        })
    }

    /// Whether the model thinks before it answers (its template writes reasoning blocks).
    pub fn thinks(&self) -> bool {
        self.thinks
    }

    /// Renders a conversation, ending with the assistant's turn opened; `thinking` switches
    /// reasoning on or off where the template offers the switch (`None`: its default).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        thinking: Option<bool>,
    ) -> Result<String, JinjaError> {
        self.render_with(messages, true, thinking)
    }

    /// Renders the start of a conversation, with no turn opened after it: the text a
    /// longer conversation's rendering begins with (for templates that render messages in
    /// order, which the caller checks).
    pub fn render_prefix(
        &self,
        messages: &[ChatMessage],
        thinking: Option<bool>,
    ) -> Result<String, JinjaError> {
        self.render_with(messages, false, thinking)
    }

    fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        enable_thinking: Option<bool>,
    ) -> Result<String, JinjaError> {
        let tmpl = self.env.get_template("chat")?;
        tmpl.render(Context {
            messages,
            add_generation_prompt,
            bos_token: &self.bos_token,
            eos_token: &self.eos_token,
            enable_thinking,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_types::Role;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_default_system_prompt() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let out = t
            .render(&[ChatMessage::text(Role::User, "Hi")], None)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_and_python_methods_work() {
        let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0]['content'].strip() }}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let err = t
            .render(&[ChatMessage::text(Role::System, "x")], None)
            .unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
        let ok = t
            .render(&[ChatMessage::text(Role::User, "  hi  ")], None)
            .unwrap();
        assert_eq!(ok, "hi");
    }

    #[test]
    fn the_thinking_switch_reaches_the_template_only_when_chosen() {
        // Qwen 3's switch, as its template tests it.
        let src = "{{ messages[0]['content'] }}{% if add_generation_prompt %}|{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert!(t.thinks());
        let hi = [ChatMessage::text(Role::User, "hi")];
        assert_eq!(t.render(&hi, None).unwrap(), "hi|");
        assert_eq!(t.render(&hi, Some(true)).unwrap(), "hi|");
        assert_eq!(
            t.render(&hi, Some(false)).unwrap(),
            "hi|<think>\n\n</think>\n\n"
        );
        assert!(!ChatTemplate::new(CHATML, "", "").unwrap().thinks());
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert!(t.render(&[], None).is_err());
    }
}
