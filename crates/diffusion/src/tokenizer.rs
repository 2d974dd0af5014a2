//! CLIP's byte-level BPE tokenizer, read from a diffusers `tokenizer/` folder
//! (`vocab.json`, `merges.txt`, the pad token from `special_tokens_map.json` or
//! `tokenizer_config.json`).
//!
//! It follows Hugging Face's `CLIPTokenizer`: text is whitespace-normalised and lower-cased,
//! split into words (letters, single digits, English contractions, runs of other symbols),
//! each word's bytes mapped to printable characters, its last symbol marked with `</w>`, and
//! merges applied by rank. Output is always `max_len` ids: `<|startoftext|>`, the words
//! (truncated), `<|endoftext|>`, then padding. `ftfy`'s mojibake repair and HTML unescaping,
//! which the Python tokenizer applies when those packages are installed, are not done.

use std::collections::HashMap;
use std::path::Path;

use unicode_general_category::{get_general_category, GeneralCategory as Cat};

use crate::DiffusionError;

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
const END_OF_WORD: &str = "</w>";

pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), u32>,
    byte_chars: [char; 256],
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
}

/// An encoded prompt: exactly `max_len` ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Whether words were cut to fit.
    pub truncated: bool,
}

/// GPT-2's reversible map from bytes to printable characters: printable Latin-1 bytes
/// stand for themselves, the rest are shifted above U+0100.
fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + shifted).unwrap_or('\u{FFFD}');
            shifted += 1;
            c
        };
    }
    map
}

fn is_letter(c: char) -> bool {
    matches!(
        get_general_category(c),
        Cat::UppercaseLetter
            | Cat::LowercaseLetter
            | Cat::TitlecaseLetter
            | Cat::ModifierLetter
            | Cat::OtherLetter
    )
}

fn is_number(c: char) -> bool {
    matches!(
        get_general_category(c),
        Cat::DecimalNumber | Cat::LetterNumber | Cat::OtherNumber
    )
}

/// Splits cleaned, lower-cased text into the words BPE runs on, as CLIP's regular
/// expression does: special tokens, `'s 't 're 've 'm 'll 'd`, letter runs, single digits,
/// and runs of anything else that is not white space.
fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let special = [BOS, EOS].into_iter().find(|s| rest.starts_with(s));
        let contraction = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
            .into_iter()
            .find(|s| rest.starts_with(s));
        let len = if let Some(s) = special.or(contraction) {
            s.len()
        } else if is_letter(c) {
            rest.find(|c: char| !is_letter(c)).unwrap_or(rest.len())
        } else if is_number(c) {
            c.len_utf8()
        } else {
            rest.find(|c: char| c.is_whitespace() || is_letter(c) || is_number(c))
                .unwrap_or(rest.len())
        };
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

impl ClipTokenizer {
    /// Reads `vocab.json`, `merges.txt` and the pad token (`special_tokens_map.json`, else
    /// `<|endoftext|>`) from `dir`.
    pub fn load(dir: &Path, max_len: usize) -> Result<Self, DiffusionError> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| DiffusionError::Model(format!("tokenizer/{name}: {e}")))
        };
        // The pad token is in `special_tokens_map.json` (older transformers) or
        // `tokenizer_config.json` (newer); SD 2.x pads with `!`, SD 1.x with the end token.
        let pad = ["special_tokens_map.json", "tokenizer_config.json"]
            .iter()
            .find_map(|name| {
                let text = std::fs::read_to_string(dir.join(name)).ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                let pad = v.get("pad_token")?;
                // Either a plain string or an `AddedToken` object with `content`.
                pad.as_str()
                    .or_else(|| pad.get("content")?.as_str())
                    .map(str::to_string)
            });
        Self::from_parts(
            &read("vocab.json")?,
            &read("merges.txt")?,
            pad.as_deref(),
            max_len,
        )
    }

    pub fn from_parts(
        vocab_json: &str,
        merges: &str,
        pad_token: Option<&str>,
        max_len: usize,
    ) -> Result<Self, DiffusionError> {
        let bad = |m: String| DiffusionError::Model(format!("tokenizer: {m}"));
        let vocab: HashMap<String, u32> =
            serde_json::from_str(vocab_json).map_err(|e| bad(format!("vocab.json: {e}")))?;
        let mut ranks = HashMap::new();
        for (rank, line) in merges
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .enumerate()
        {
            let (a, b) = line
                .split_once(' ')
                .ok_or_else(|| bad(format!("merges.txt line {}: `{line}`", rank + 1)))?;
            ranks.insert((a.to_string(), b.to_string()), rank as u32);
        }
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| bad(format!("`{t}` is not in vocab.json")))
        };
        let (bos, eos) = (id(BOS)?, id(EOS)?);
        let pad = pad_token.map_or(Ok(eos), id)?;
        if max_len < 2 {
            return Err(bad(format!("max length {max_len} leaves no room")));
        }
        Ok(Self {
            vocab,
            ranks,
            byte_chars: byte_chars(),
            bos,
            eos,
            pad,
            max_len,
        })
    }

    /// Byte-pair merges of one word, last symbol marked as the end of the word.
    fn bpe(&self, word: &str) -> Vec<String> {
        let mut symbols: Vec<String> = word
            .bytes()
            .map(|b| self.byte_chars[b as usize].to_string())
            .collect();
        if let Some(last) = symbols.last_mut() {
            last.push_str(END_OF_WORD);
        }
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| {
                    self.ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|&r| (r, i))
                })
                .min();
            let Some((rank, _)) = best else { break };
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len()
                    && self
                        .ranks
                        .get(&(symbols[i].clone(), symbols[i + 1].clone()))
                        == Some(&rank)
                {
                    merged.push(format!("{}{}", symbols[i], symbols[i + 1]));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut symbols[i]));
                    i += 1;
                }
            }
            symbols = merged;
        }
        symbols
    }

    pub fn encode(&self, text: &str) -> Encoded {
        let cleaned = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let lower = cleaned.to_lowercase();
        let mut ids = vec![self.bos];
        let room = self.max_len - 2;
        let mut truncated = false;
        'words: for word in words(&lower) {
            let pieces = match word {
                BOS => vec![self.bos],
                EOS => vec![self.eos],
                _ => self
                    .bpe(word)
                    .iter()
                    .map(|s| self.vocab.get(s).copied().unwrap_or(self.eos))
                    .collect(),
            };
            for id in pieces {
                if ids.len() - 1 == room {
                    truncated = true;
                    break 'words;
                }
                ids.push(id);
            }
        }
        ids.push(self.eos);
        ids.resize(self.max_len, self.pad);
        Encoded { ids, truncated }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A small vocabulary in CLIP's shape: every byte character alone and as a word end,
    /// a few merges, and the special tokens.
    pub(crate) fn tiny() -> ClipTokenizer {
        let chars = byte_chars();
        let mut vocab: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        vocab.extend(chars.iter().map(|c| format!("{c}</w>")));
        let merges = ["h e", "l l", "he ll", "a t</w>", "c at</w>"];
        vocab.extend(["he", "ll", "hell", "at</w>", "cat</w>"].map(String::from));
        vocab.extend([BOS, EOS].map(String::from));
        let json: serde_json::Map<String, serde_json::Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
            .collect();
        let merges = format!("#version: 0.2\n{}", merges.join("\n"));
        ClipTokenizer::from_parts(&serde_json::to_string(&json).unwrap(), &merges, None, 12)
            .unwrap()
    }

    #[test]
    fn words_split_like_clips_pattern() {
        assert_eq!(
            words("a cat's 2024 toys!!'s <|endoftext|>élan"),
            [
                "a",
                "cat",
                "'s",
                "2",
                "0",
                "2",
                "4",
                "toys",
                "!!'",
                "s",
                "<|endoftext|>",
                "élan"
            ]
        );
    }

    #[test]
    fn merges_apply_by_rank_and_output_is_padded() {
        let t = tiny();
        let id = |s: &str| t.vocab[s];
        let e = t.encode("  Hello   CAT ");
        // "hello" -> he + ll + o</w> -> hell + o</w>; "cat" -> c + at</w> -> cat</w>.
        assert_eq!(
            e.ids[..5],
            [t.bos, id("hell"), id("o</w>"), id("cat</w>"), t.eos]
        );
        assert_eq!(e.ids.len(), 12);
        assert!(e.ids[5..].iter().all(|&i| i == t.pad));
        assert!(!e.truncated);
    }

    #[test]
    fn long_prompts_are_truncated_and_flagged() {
        let t = tiny();
        let e = t.encode("cat cat cat cat cat cat cat cat cat cat cat cat");
        assert_eq!(e.ids.len(), 12);
        assert_eq!(e.ids[0], t.bos);
        assert_eq!(e.ids[11], t.eos);
        assert!(e.truncated);
        // Bytes with no vocabulary entry of their own still map somewhere.
        assert_eq!(t.encode("\u{1F600}").ids.len(), 12);
    }
}
