//! Pre-tokenisers for byte-level BPE, hand-written from the regular expressions llama.cpp
//! uses (the `regex` crate cannot express the `\s+(?!\S)` look-ahead, and a hand-written
//! scanner is linear-time on any input).

use unicode_general_category::{get_general_category, GeneralCategory as C};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pre {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// SmolLM: every digit on its own first (`\p{N}`), then GPT-2 on what lies between.
    Smollm,
    /// Llama 3 (and the families that reuse its pattern):
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`. A word the vocabulary holds
    /// whole is one token, whatever the merges say (llama.cpp's `ignore_merges`).
    Llama3,
    /// Qwen 2 and 3: Llama 3's pattern with one digit at a time (`\p{N}`), merges as usual.
    Qwen2,
}

impl Pre {
    pub fn for_name(name: &str) -> Option<Self> {
        match name {
            "gpt2" | "default" => Some(Self::Gpt2),
            "smollm" => Some(Self::Smollm),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => Some(Self::Llama3),
            "qwen2" | "deepseek-r1-qwen" => Some(Self::Qwen2),
            _ => None,
        }
    }

    /// Whether a word the vocabulary holds whole skips the merges.
    pub fn ignores_merges(&self) -> bool {
        matches!(self, Pre::Llama3)
    }

    pub fn split<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut out = Vec::new();
        match self {
            Pre::Gpt2 => gpt2(text, &mut out),
            Pre::Llama3 => llama3(text, 3, &mut out),
            Pre::Qwen2 => llama3(text, 1, &mut out),
            Pre::Smollm => {
                let mut start = 0;
                for (i, c) in text.char_indices() {
                    if is_number(c) {
                        gpt2(&text[start..i], &mut out);
                        out.push(&text[i..i + c.len_utf8()]);
                        start = i + c.len_utf8();
                    }
                }
                gpt2(&text[start..], &mut out);
            }
        }
        out
    }
}

fn is_letter(c: char) -> bool {
    matches!(
        get_general_category(c),
        C::UppercaseLetter
            | C::LowercaseLetter
            | C::TitlecaseLetter
            | C::ModifierLetter
            | C::OtherLetter
    )
}

fn is_number(c: char) -> bool {
    matches!(
        get_general_category(c),
        C::DecimalNumber | C::LetterNumber | C::OtherNumber
    )
}

/// llama.cpp's notion of whitespace (`\s`): ASCII whitespace, NEL, NBSP, and the Unicode
/// space separators and line/paragraph separators.
fn is_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | ' ' | '\u{85}' | '\u{a0}')
        || matches!(
            get_general_category(c),
            C::SpaceSeparator | C::LineSeparator | C::ParagraphSeparator
        )
}

fn gpt2<'a>(text: &'a str, out: &mut Vec<&'a str>) {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let offset = |i: usize| chars.get(i).map_or(text.len(), |&(o, _)| o);
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        let start = i;
        // Contractions ('s 't 're 've 'm 'll 'd), case-sensitive as in GPT-2.
        if c == '\'' {
            match (at(i + 1), at(i + 2)) {
                (Some('s' | 't' | 'm' | 'd'), _) => i += 2,
                (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => i += 3,
                _ => {}
            }
            if i > start {
                out.push(&text[offset(start)..offset(i)]);
                continue;
            }
        }
        let next = at(i + 1);
        let lead_space = c == ' ';
        let body = if lead_space { next } else { Some(c) };
        let body_start = if lead_space { i + 1 } else { i };
        if let Some(b) = body {
            let class: Option<fn(char) -> bool> = if is_letter(b) {
                Some(is_letter)
            } else if is_number(b) {
                Some(is_number)
            } else if !is_space(b) {
                Some(|c| !is_space(c) && !is_letter(c) && !is_number(c))
            } else {
                None
            };
            if let Some(class) = class {
                let mut j = body_start;
                while j < n && class(chars[j].1) {
                    j += 1;
                }
                out.push(&text[offset(start)..offset(j)]);
                i = j;
                continue;
            }
        }
        // Whitespace run: `\s+(?!\S)` leaves the last space to prefix the next word.
        let mut j = i;
        while j < n && is_space(chars[j].1) {
            j += 1;
        }
        if j < n && j - i > 1 {
            j -= 1;
        }
        out.push(&text[offset(start)..offset(j)]);
        i = j;
    }
}

fn is_newline(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// The Llama 3 pattern (see [`Pre::Llama3`]), `digits` being the longest run of numbers
/// one piece takes. Alternatives are tried in the pattern's order at each position, as a
/// backtracking regex engine does; each is decided by looking at most two characters
/// ahead, so the scan is linear.
fn llama3<'a>(text: &'a str, digits: usize, out: &mut Vec<&'a str>) {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let offset = |i: usize| chars.get(i).map_or(text.len(), |&(o, _)| o);
    let other = |c: char| !is_space(c) && !is_letter(c) && !is_number(c);
    let run = |mut j: usize, class: &dyn Fn(char) -> bool| {
        while j < n && class(chars[j].1) {
            j += 1;
        }
        j
    };
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        let end = 'matched: {
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if c == '\'' {
                let lower = |k: usize| at(i + k).map(|c| c.to_ascii_lowercase());
                match (lower(1), lower(2)) {
                    (Some('s' | 't' | 'm' | 'd'), _) => break 'matched i + 2,
                    (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => {
                        break 'matched i + 3
                    }
                    _ => {}
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if is_letter(c) {
                break 'matched run(i, &is_letter);
            }
            if !is_newline(c) && !is_number(c) && at(i + 1).is_some_and(is_letter) {
                break 'matched run(i + 1, &is_letter);
            }
            // \p{N}{1,digits}
            if is_number(c) {
                let mut j = i;
                while j < n && j - i < digits && is_number(chars[j].1) {
                    j += 1;
                }
                break 'matched j;
            }
            // ' '?[^\s\p{L}\p{N}]+[\r\n]*
            let body = if c == ' ' && at(i + 1).is_some_and(other) {
                i + 1
            } else {
                i
            };
            if at(body).is_some_and(other) {
                break 'matched run(run(body, &other), &is_newline);
            }
            // What is left starts with whitespace.
            let spaces = run(i, &is_space);
            // \s*[\r\n]+: through the run's last newline.
            if let Some(last) = (i..spaces).rev().find(|&k| is_newline(chars[k].1)) {
                break 'matched last + 1;
            }
            // \s+(?!\S): the run, less its last space when a word follows it.
            if spaces < n && spaces - i > 1 {
                break 'matched spaces - 1;
            }
            // \s+
            spaces.max(i + 1)
        };
        out.push(&text[offset(i)..offset(end)]);
        i = end;
    }
}
