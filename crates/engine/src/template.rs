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
        })
    }

    /// Renders a conversation, ending with the assistant's turn opened.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, JinjaError> {
        self.render_with(messages, true)
    }

    /// Renders the start of a conversation, with no turn opened after it: the text a
    /// longer conversation's rendering begins with (for templates that render messages in
    /// order, which the caller checks).
    pub fn render_prefix(&self, messages: &[ChatMessage]) -> Result<String, JinjaError> {
        self.render_with(messages, false)
    }

    fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, JinjaError> {
        let tmpl = self.env.get_template("chat")?;
        tmpl.render(Context {
            messages,
            add_generation_prompt,
            bos_token: &self.bos_token,
            eos_token: &self.eos_token,
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
        let out = t.render(&[ChatMessage::text(Role::User, "Hi")]).unwrap();
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
            .render(&[ChatMessage::text(Role::System, "x")])
            .unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
        let ok = t
            .render(&[ChatMessage::text(Role::User, "  hi  ")])
            .unwrap();
        assert_eq!(ok, "hi");
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert!(t.render(&[]).is_err());
    }
}
