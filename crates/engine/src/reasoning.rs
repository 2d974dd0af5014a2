//! Reasoning output: models that think before they answer (Qwen 3, DeepSeek-R1's
//! distillations, SmolLM3) write their reasoning between `<think>` and `</think>`, then the
//! answer. This module splits a streamed answer into the two, so each API can return the
//! reasoning in its own field (OpenAI's `reasoning_content`, Anthropic's `thinking` blocks,
//! Bedrock's `reasoningContent`) and the answer as the text it is.
//!
//! A model thinks when its chat template knows the tags and the conversation is rendered
//! with thinking on; some templates open the block themselves at the end of the prompt
//! (the split then starts inside it). Nothing here knows an API dialect.

/// Opens a reasoning block.
pub const OPEN: &str = "<think>";
/// Closes it; the answer follows.
pub const CLOSE: &str = "</think>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not yet known whether the answer starts with a reasoning block.
    Undecided,
    Reasoning,
    /// After the block (or with none); leading whitespace is still being dropped while
    /// `answer_started` is false.
    Answer,
}

/// Splits streamed text into reasoning and answer.
#[derive(Debug)]
pub struct ReasoningSplitter {
    phase: Phase,
    /// Text held back: a possible start of `OPEN` (undecided) or a possible start of
    /// `CLOSE` (reasoning).
    held: String,
    /// Whether any reasoning text has come out (leading whitespace inside the block is
    /// dropped until then).
    reasoning_started: bool,
    answer_started: bool,
}

/// One push's worth of output: reasoning always precedes the answer within it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub reasoning: String,
    pub answer: String,
}

impl ReasoningSplitter {
    /// `inside`: the prompt ended by opening the block, so the first text is reasoning.
    pub fn new(inside: bool) -> Self {
        Self {
            phase: if inside {
                Phase::Reasoning
            } else {
                Phase::Undecided
            },
            held: String::new(),
            reasoning_started: false,
            answer_started: false,
        }
    }

    /// Whether the text that comes next is (so far as is known) reasoning.
    pub fn in_reasoning(&self) -> bool {
        self.phase == Phase::Reasoning
    }

    pub fn push(&mut self, text: &str) -> Split {
        let mut out = Split::default();
        self.held.push_str(text);
        loop {
            match self.phase {
                Phase::Undecided => {
                    let start = self.held.trim_start();
                    if start.is_empty() || (OPEN.starts_with(start) && start.len() < OPEN.len()) {
                        return out; // could still open a block
                    }
                    if let Some(rest) = start.strip_prefix(OPEN) {
                        self.held = rest.to_string();
                        self.phase = Phase::Reasoning;
                    } else {
                        self.phase = Phase::Answer;
                    }
                }
                Phase::Reasoning => {
                    if let Some(end) = self.held.find(CLOSE) {
                        let rest = self.held.split_off(end + CLOSE.len());
                        self.held.truncate(end);
                        let reasoning = std::mem::replace(&mut self.held, rest);
                        self.reasoning(&mut out, &reasoning);
                        self.phase = Phase::Answer;
                        continue;
                    }
                    // Everything but a tail that may be the start of CLOSE.
                    let keep = (1..CLOSE.len())
                        .rev()
                        .find(|&n| self.held.ends_with(&CLOSE[..n]))
                        .unwrap_or(0);
                    let rest = self.held.split_off(self.held.len() - keep);
                    let reasoning = std::mem::replace(&mut self.held, rest);
                    self.reasoning(&mut out, &reasoning);
                    return out;
                }
                Phase::Answer => {
                    let answer = std::mem::take(&mut self.held);
                    self.answer(&mut out, &answer);
                    return out;
                }
            }
        }
    }

    /// The end of the output: what is held back comes out as what it was part of (an
    /// unclosed block, cut off by `max_tokens`, is reasoning).
    pub fn finish(&mut self) -> Split {
        let mut out = Split::default();
        let held = std::mem::take(&mut self.held);
        match self.phase {
            Phase::Reasoning => self.reasoning(&mut out, &held),
            Phase::Undecided | Phase::Answer => self.answer(&mut out, &held),
        }
        out
    }

    fn reasoning(&mut self, out: &mut Split, text: &str) {
        let text = if self.reasoning_started {
            text
        } else {
            text.trim_start()
        };
        self.reasoning_started |= !text.is_empty();
        out.reasoning.push_str(text);
    }

    fn answer(&mut self, out: &mut Split, text: &str) {
        let text = if self.answer_started {
            text
        } else {
            text.trim_start()
        };
        self.answer_started |= !text.is_empty();
        out.answer.push_str(text);
    }
}

/// Whether a chat template writes reasoning blocks (and so a model trained on it thinks).
pub fn template_thinks(template: &str) -> bool {
    template.contains(OPEN) && template.contains(CLOSE)
}

/// Whether a rendered prompt ends inside an open reasoning block (templates that make the
/// model think by opening the block for it).
pub fn prompt_opens_block(prompt: &str) -> bool {
    let tail = prompt.trim_end();
    tail.ends_with(OPEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in pieces of `n` bytes (at char boundaries) and joins what comes out.
    fn split_in_pieces(inside: bool, text: &str, n: usize) -> Split {
        let mut s = ReasoningSplitter::new(inside);
        let mut all = Split::default();
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = n.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            let out = s.push(&rest[..cut]);
            all.reasoning.push_str(&out.reasoning);
            all.answer.push_str(&out.answer);
            rest = &rest[cut..];
        }
        let out = s.finish();
        all.reasoning.push_str(&out.reasoning);
        all.answer.push_str(&out.answer);
        all
    }

    #[test]
    fn a_block_at_the_start_is_reasoning_whatever_the_pieces() {
        let text = "<think>\nThe user wants 2+2. That is 4.\n</think>\n\nIt is **4**.";
        for n in 1..text.len() {
            let s = split_in_pieces(false, text, n);
            assert_eq!(
                s.reasoning, "The user wants 2+2. That is 4.\n",
                "pieces of {n}"
            );
            assert_eq!(s.answer, "It is **4**.", "pieces of {n}");
        }
    }

    #[test]
    fn a_prompt_that_opened_the_block_starts_inside_it() {
        let s = split_in_pieces(true, "hmm, think é</think>answer", 3);
        assert_eq!(s.reasoning, "hmm, think é");
        assert_eq!(s.answer, "answer");
    }

    #[test]
    fn text_without_a_block_is_all_answer() {
        for text in ["Hello there", "  <thin", "<b>bold</b>", "a <think> later"] {
            let s = split_in_pieces(false, text, 2);
            assert_eq!(s.reasoning, "");
            assert_eq!(s.answer, text.trim_start(), "{text:?}");
        }
    }

    #[test]
    fn an_unclosed_block_is_reasoning_to_the_end() {
        let s = split_in_pieces(false, "<think>step one</thi", 4);
        assert_eq!(s.reasoning, "step one</thi");
        assert_eq!(s.answer, "");
    }

    #[test]
    fn an_empty_block_gives_an_answer_only() {
        let s = split_in_pieces(false, "<think>\n\n</think>\n\nHi", 5);
        assert_eq!(s.reasoning, "");
        assert_eq!(s.answer, "Hi");
    }

    #[test]
    fn templates_and_prompts_are_recognised() {
        assert!(template_thinks(
            "{%- if enable_thinking is false %}<think>\n\n</think>{% endif %}"
        ));
        assert!(!template_thinks("<|im_start|>assistant\n"));
        assert!(prompt_opens_block("<|Assistant|><think>\n"));
        assert!(!prompt_opens_block("<|im_start|>assistant\n"));
    }
}
