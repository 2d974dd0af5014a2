//! Tokenizers built from GGUF metadata: byte-level BPE (GPT-2 family, e.g. SmolLM2) and
//! SentencePiece with scores and byte fallback (LLaMA/Gemma family).
//!
//! The goal is llama.cpp's exact token ids, since the fidelity of everything downstream
//! depends on it: special tokens are split out first (user-defined ones always, control
//! ones only when the caller trusts the text, i.e. text rendered by a chat template), then
//! each fragment is pre-tokenised and merged. Every merge loop is O(n log n) so hostile
//! input (one 100 kB "word") cannot stall the engine.

mod bpe;
mod pretokenize;
mod spm;

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, MatchKind};
use basalt_gguf::{Array, Header};

use crate::EngineError;

/// llama.cpp's token types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_code(code: i64) -> Self {
        match code {
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Normal,
        }
    }
}

#[derive(Debug)]
enum Model {
    Bpe(bpe::Bpe),
    Spm(spm::Spm),
}

pub struct Tokenizer {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    to_id: HashMap<String, u32>,
    model: Model,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    /// Tokens that end a generation (eos, plus end-of-turn markers).
    end_of_generation: Vec<u32>,
    /// Special-token matchers: user-defined only, and user-defined plus control.
    specials_user: Option<(AhoCorasick, Vec<u32>)>,
    specials_all: Option<(AhoCorasick, Vec<u32>)>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.tokens.len())
            .field("model", &self.model)
            .finish()
    }
}

fn meta_err(msg: impl Into<String>) -> EngineError {
    EngineError::Model(format!("tokenizer metadata: {}", msg.into()))
}

fn special_matcher(
    tokens: &[String],
    ids: Vec<u32>,
) -> Result<Option<(AhoCorasick, Vec<u32>)>, EngineError> {
    if ids.is_empty() {
        return Ok(None);
    }
    let patterns: Vec<&str> = ids.iter().map(|&i| tokens[i as usize].as_str()).collect();
    let ac = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&patterns)
        .map_err(|e| meta_err(format!("special tokens: {e}")))?;
    Ok(Some((ac, ids)))
}

impl Tokenizer {
    pub fn from_gguf(h: &Header) -> Result<Self, EngineError> {
        let tokens = match h.array("tokenizer.ggml.tokens") {
            Ok(Array::Strings(t)) if !t.is_empty() => t.clone(),
            _ => return Err(meta_err("tokenizer.ggml.tokens is missing or empty")),
        };
        let n = tokens.len();
        let kinds = match h.array("tokenizer.ggml.token_type") {
            Ok(Array::Ints(v)) if v.len() == n => {
                v.iter().map(|&c| TokenKind::from_code(c)).collect()
            }
            _ => vec![TokenKind::Normal; n],
        };
        let id_of = |key: &str| -> Option<u32> {
            h.u64(key)
                .ok()
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| (v as usize) < n)
        };
        let bos = id_of("tokenizer.ggml.bos_token_id");
        let eos = id_of("tokenizer.ggml.eos_token_id");
        let kind = h
            .string("tokenizer.ggml.model")
            .map_err(|e| meta_err(e.to_string()))?;
        let flag = |key: &str, default: bool| match h.get(key) {
            Some(basalt_gguf::Value::Bool(b)) => *b,
            _ => default,
        };
        let mut to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // First occurrence wins, as in llama.cpp.
            to_id.entry(t.clone()).or_insert(i as u32);
        }
        let (model, add_bos) = match kind {
            "gpt2" => {
                let merges = match h.array("tokenizer.ggml.merges") {
                    Ok(Array::Strings(m)) => m.as_slice(),
                    _ => return Err(meta_err("tokenizer.ggml.merges is missing")),
                };
                let pre = h.string("tokenizer.ggml.pre").unwrap_or("default");
                let pre = pretokenize::Pre::for_name(pre)
                    .ok_or_else(|| meta_err(format!("pre-tokenizer `{pre}` is not supported")))?;
                (
                    Model::Bpe(bpe::Bpe::new(&to_id, merges, pre)),
                    flag("tokenizer.ggml.add_bos_token", false),
                )
            }
            "llama" => {
                let scores = match h.array("tokenizer.ggml.scores") {
                    Ok(Array::Floats(s)) if s.len() == n => s.clone(),
                    _ => {
                        return Err(meta_err(
                            "tokenizer.ggml.scores is missing or has the wrong length",
                        ))
                    }
                };
                let spm = spm::Spm::new(
                    &tokens,
                    &kinds,
                    scores,
                    flag("tokenizer.ggml.add_space_prefix", true),
                );
                (Model::Spm(spm), flag("tokenizer.ggml.add_bos_token", true))
            }
            other => {
                return Err(meta_err(format!(
                    "tokenizer model `{other}` is not supported"
                )))
            }
        };

        let mut end_of_generation: Vec<u32> = eos.into_iter().collect();
        for marker in [
            "<|im_end|>",
            "<end_of_turn>",
            "<|eot_id|>",
            "<|endoftext|>",
            "<|end|>",
            "<eos>",
        ] {
            if let Some(&id) = to_id.get(marker) {
                if matches!(
                    kinds[id as usize],
                    TokenKind::Control | TokenKind::UserDefined
                ) && !end_of_generation.contains(&id)
                {
                    end_of_generation.push(id);
                }
            }
        }

        let special_ids = |include_control: bool| -> Vec<u32> {
            (0..n as u32)
                .filter(|&i| {
                    let k = kinds[i as usize];
                    !tokens[i as usize].is_empty()
                        && (k == TokenKind::UserDefined
                            || (include_control && k == TokenKind::Control))
                })
                .collect()
        };
        let specials_user = special_matcher(&tokens, special_ids(false))?;
        let specials_all = special_matcher(&tokens, special_ids(true))?;
        Ok(Self {
            tokens,
            kinds,
            to_id,
            model,
            bos,
            eos,
            add_bos,
            end_of_generation,
            specials_user,
            specials_all,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.to_id.get(text).copied()
    }

    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// The token that ends the model's turn: EOS, or the first end-of-generation marker.
    pub fn end_of_turn(&self) -> Option<u32> {
        self.eos.or_else(|| self.end_of_generation.first().copied())
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }

    /// Tokenises `text`. `add_bos` prepends the BOS token when the model wants one;
    /// `parse_special` lets control tokens written in the text (`<|im_start|>`) become
    /// their ids: pass it only for text Basalt rendered itself, never for raw user input.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos && self.add_bos {
            if let Some(b) = self.bos {
                out.push(b);
            }
        }
        let matcher = if parse_special {
            &self.specials_all
        } else {
            &self.specials_user
        };
        let mut last = 0;
        if let Some((ac, ids)) = matcher {
            for m in ac.find_iter(text) {
                self.encode_fragment(&text[last..m.start()], &mut out);
                out.push(ids[m.pattern().as_usize()]);
                last = m.end();
            }
        }
        self.encode_fragment(&text[last..], &mut out);
        out
    }

    fn encode_fragment(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        match &self.model {
            Model::Bpe(b) => b.encode(text, out),
            Model::Spm(s) => s.encode(text, &self.to_id, out),
        }
    }

    /// The bytes a token stands for in generated text. Control tokens stand for nothing.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(text) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        match self.kinds[id as usize] {
            TokenKind::Control | TokenKind::Unused => Vec::new(),
            TokenKind::UserDefined => text.as_bytes().to_vec(),
            kind => match &self.model {
                Model::Bpe(_) => bpe::decode_token(text),
                Model::Spm(_) => spm::decode_token(text, kind),
            },
        }
    }

    /// Decodes a whole sequence (lossily, for display and tests).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| self.token_bytes(i)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::pretokenize::Pre;

    #[test]
    fn smollm_pretokenizer_splits_digits_and_keeps_spaces_with_words() {
        let pieces = Pre::Smollm.split("Hello world 123  x\n\n  y's");
        assert_eq!(
            pieces,
            vec!["Hello", " world", " ", "1", "2", "3", " ", " x", "\n\n ", " y", "'s"]
        );
    }

    #[test]
    fn llama3_pretokenizer_follows_its_pattern() {
        let split = |s| Pre::Llama3.split(s);
        // Case-insensitive contractions; a letter run takes one leading non-letter.
        assert_eq!(
            split("I'LL go,(x)"),
            vec!["I", "'LL", " go", ",(", "x", ")"]
        );
        // Numbers in threes with no leading space; punctuation keeps its newlines.
        assert_eq!(
            split("a 1234567 b"),
            vec!["a", " ", "123", "456", "7", " b"]
        );
        assert_eq!(split("end.\n\n  Next"), vec!["end", ".\n\n", " ", " Next"]);
        // Whitespace through its last newline; a tab can lead a word.
        assert_eq!(split("x \n \n\ty"), vec!["x", " \n \n", "\ty"]);
        assert_eq!(split("  "), vec!["  "]);
        assert_eq!(split("héllo 世界 🎉!"), vec!["héllo", " 世界", " 🎉!"]);
        assert_eq!(split(""), Vec::<&str>::new());
        assert_eq!(
            Pre::Qwen2.split("x 2024"),
            vec!["x", " ", "2", "0", "2", "4"]
        );
    }

    #[test]
    fn gpt2_pretokenizer_handles_contractions_punctuation_and_unicode() {
        assert_eq!(
            Pre::Gpt2.split("I'll go!!  ok"),
            vec!["I", "'ll", " go", "!!", " ", " ok"]
        );
        assert_eq!(
            Pre::Gpt2.split("héllo 世界 🎉"),
            vec!["héllo", " 世界", " 🎉"]
        );
        assert_eq!(Pre::Gpt2.split("a\n"), vec!["a", "\n"]);
        assert_eq!(Pre::Gpt2.split(""), Vec::<&str>::new());
    }
}
