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
}

impl Pre {
    pub fn for_name(name: &str) -> Option<Self> {
        match name {
            "gpt2" | "default" => Some(Self::Gpt2),
            "smollm" => Some(Self::Smollm),
            _ => None,
        }
    }

    pub fn split<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut out = Vec::new();
        match self {
            Pre::Gpt2 => gpt2(text, &mut out),
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
