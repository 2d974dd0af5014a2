//! BERT's tokenisation as Hugging Face's `tokenizers` does it for `BertNormalizer` +
//! `BertPreTokenizer` + `WordPiece`: clean the text, space out CJK ideographs, strip
//! accents and lower-case (for uncased models), split on whitespace and punctuation, then
//! greedy longest-match word pieces with the `##` continuation prefix.

use std::collections::HashMap;

use unicode_general_category::{get_general_category, GeneralCategory as Gc};
use unicode_normalization::UnicodeNormalization;

use crate::EmbedError;

pub struct WordPiece {
    vocab: HashMap<String, u32>,
    unk: u32,
    pub cls: u32,
    pub sep: u32,
    lowercase: bool,
    strip_accents: bool,
    handle_chinese_chars: bool,
    clean_text: bool,
    max_chars_per_word: usize,
    prefix: String,
}

/// The `max_len` leading pieces of a text and whether any were cut.
pub struct Encoded {
    pub ids: Vec<u32>,
    pub truncated: bool,
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r') || get_general_category(c) == Gc::SpaceSeparator
}

fn is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    matches!(
        get_general_category(c),
        Gc::Control | Gc::Format | Gc::Unassigned | Gc::PrivateUse | Gc::Surrogate
    )
}

fn is_punctuation(c: char) -> bool {
    let u = c as u32;
    (33..=47).contains(&u)
        || (58..=64).contains(&u)
        || (91..=96).contains(&u)
        || (123..=126).contains(&u)
        || matches!(
            get_general_category(c),
            Gc::ConnectorPunctuation
                | Gc::DashPunctuation
                | Gc::OpenPunctuation
                | Gc::ClosePunctuation
                | Gc::InitialPunctuation
                | Gc::FinalPunctuation
                | Gc::OtherPunctuation
        )
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

impl WordPiece {
    /// From a `tokenizer.json` whose model is WordPiece.
    pub fn from_tokenizer_json(json: &serde_json::Value) -> Result<Self, EmbedError> {
        let bad = |why: &str| EmbedError::Model(format!("tokenizer.json: {why}"));
        let model = json.get("model").ok_or_else(|| bad("no model"))?;
        if model.get("type").and_then(|t| t.as_str()) != Some("WordPiece") {
            return Err(bad("only WordPiece tokenizers are supported"));
        }
        let vocab: HashMap<String, u32> = model
            .get("vocab")
            .and_then(|v| v.as_object())
            .ok_or_else(|| bad("no vocab"))?
            .iter()
            .filter_map(|(k, v)| v.as_u64().map(|id| (k.clone(), id as u32)))
            .collect();
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| bad(&format!("no `{t}` token")))
        };
        let unk_token = model
            .get("unk_token")
            .and_then(|t| t.as_str())
            .unwrap_or("[UNK]");
        let norm = json.get("normalizer").cloned().unwrap_or_default();
        let flag =
            |k: &str, default: bool| norm.get(k).and_then(|v| v.as_bool()).unwrap_or(default);
        let lowercase = flag("lowercase", true);
        Ok(Self {
            unk: id(unk_token)?,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            lowercase,
            // `null` means "as lowercase does", as in Hugging Face's tokenizers.
            strip_accents: flag("strip_accents", lowercase),
            handle_chinese_chars: flag("handle_chinese_chars", true),
            clean_text: flag("clean_text", true),
            max_chars_per_word: model
                .get("max_input_chars_per_word")
                .and_then(|v| v.as_u64())
                .unwrap_or(100) as usize,
            prefix: model
                .get("continuing_subword_prefix")
                .and_then(|v| v.as_str())
                .unwrap_or("##")
                .to_string(),
            vocab,
        })
    }

    fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if self.clean_text {
                if c == '\0' || c == '\u{FFFD}' || is_control(c) {
                    continue;
                }
                if is_whitespace(c) {
                    out.push(' ');
                    continue;
                }
            }
            if self.handle_chinese_chars && is_cjk(c) {
                out.push(' ');
                out.push(c);
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        if self.strip_accents {
            out = out
                .nfd()
                .filter(|c| get_general_category(*c) != Gc::NonspacingMark)
                .collect();
        }
        if self.lowercase {
            out = out.to_lowercase();
        }
        out
    }

    fn words(text: &str) -> Vec<&str> {
        let mut words = Vec::new();
        for chunk in text.split(is_whitespace).filter(|w| !w.is_empty()) {
            let mut start = 0;
            for (i, c) in chunk.char_indices() {
                if is_punctuation(c) {
                    if start < i {
                        words.push(&chunk[start..i]);
                    }
                    words.push(&chunk[i..i + c.len_utf8()]);
                    start = i + c.len_utf8();
                }
            }
            if start < chunk.len() {
                words.push(&chunk[start..]);
            }
        }
        words
    }

    fn pieces(&self, word: &str, out: &mut Vec<u32>) {
        let chars: Vec<(usize, char)> = word.char_indices().collect();
        if chars.len() > self.max_chars_per_word {
            out.push(self.unk);
            return;
        }
        let mut found = Vec::new();
        let mut start = 0;
        let mut candidate = String::with_capacity(word.len() + 2);
        while start < chars.len() {
            let mut end = chars.len();
            let mut hit = None;
            while start < end {
                let from = chars[start].0;
                let to = chars.get(end).map_or(word.len(), |c| c.0);
                candidate.clear();
                if start > 0 {
                    candidate.push_str(&self.prefix);
                }
                candidate.push_str(&word[from..to]);
                if let Some(&id) = self.vocab.get(&candidate) {
                    hit = Some(id);
                    break;
                }
                end -= 1;
            }
            match hit {
                Some(id) => {
                    found.push(id);
                    start = end;
                }
                None => {
                    out.push(self.unk);
                    return;
                }
            }
        }
        out.extend(found);
    }

    /// `[CLS] pieces... [SEP]`, at most `max_len` ids in all.
    pub fn encode(&self, text: &str, max_len: usize) -> Encoded {
        let normalized = self.normalize(text);
        let mut ids = vec![self.cls];
        for word in Self::words(&normalized) {
            self.pieces(word, &mut ids);
        }
        let limit = max_len.max(2) - 1;
        let truncated = ids.len() > limit;
        ids.truncate(limit);
        ids.push(self.sep);
        Encoded { ids, truncated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> WordPiece {
        let vocab: serde_json::Map<String, serde_json::Value> = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", ",", "world", "!", "un", "##aff",
            "##able", "cafe", "中", "the",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), serde_json::json!(i)))
        .collect();
        let json = serde_json::json!({
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                           "strip_accents": null, "lowercase": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab},
        });
        WordPiece::from_tokenizer_json(&json).unwrap()
    }

    #[test]
    fn normalises_splits_and_pieces() {
        let t = tokenizer();
        assert_eq!(t.encode("Hello, World!", 64).ids, [2, 4, 5, 6, 7, 3]);
        assert_eq!(t.encode("unaffable", 64).ids, [2, 8, 9, 10, 3]);
        // Accents stripped, control characters dropped, CJK spaced out, unknown words [UNK].
        assert_eq!(
            t.encode("Café\u{0007}中the zzz", 64).ids,
            [2, 11, 12, 13, 1, 3]
        );
    }

    #[test]
    fn truncates_and_says_so() {
        let t = tokenizer();
        let e = t.encode("hello hello hello hello", 4);
        assert_eq!(e.ids, [2, 4, 4, 3]);
        assert!(e.truncated);
        assert!(!t.encode("hello", 4).truncated);
    }
}
