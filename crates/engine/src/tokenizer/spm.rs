//! SentencePiece-style tokenisation as llama.cpp does it for `llama` vocabularies: start
//! from characters, repeatedly merge the adjacent pair whose concatenation is the
//! highest-scoring token (leftmost among equals), then fall back to `<0xXX>` byte tokens for
//! any character the vocabulary lacks.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::TokenKind;

#[derive(Debug)]
pub struct Spm {
    scores: Vec<f32>,
    byte_tokens: [Option<u32>; 256],
    unknown: Option<u32>,
    add_space_prefix: bool,
}

const SPACE: &str = "\u{2581}";

/// The text a token stands for: `▁` is a space; `<0xXX>` byte tokens are that byte.
pub fn decode_token(text: &str, kind: TokenKind) -> Vec<u8> {
    match kind {
        TokenKind::Byte => parse_byte_token(text).map(|b| vec![b]).unwrap_or_default(),
        TokenKind::Unknown => " \u{2047} ".as_bytes().to_vec(),
        _ => text.replace(SPACE, " ").into_bytes(),
    }
}

fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// A candidate merge of symbols `left` and its right neighbour into one token.
struct Bigram {
    score: f32,
    left: usize,
    /// Byte length of the merged text, to detect stale entries.
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Highest score first; among equal scores, the leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl Spm {
    pub fn new(
        tokens: &[String],
        kinds: &[TokenKind],
        scores: Vec<f32>,
        add_space_prefix: bool,
    ) -> Self {
        let mut byte_tokens = [None; 256];
        let mut unknown = None;
        for (i, (t, k)) in tokens.iter().zip(kinds).enumerate() {
            match k {
                TokenKind::Byte => {
                    if let Some(b) = parse_byte_token(t) {
                        byte_tokens[b as usize].get_or_insert(i as u32);
                    }
                }
                TokenKind::Unknown => {
                    unknown.get_or_insert(i as u32);
                }
                _ => {}
            }
        }
        Self {
            scores,
            byte_tokens,
            unknown,
            add_space_prefix,
        }
    }

    pub fn encode(&self, text: &str, to_id: &HashMap<String, u32>, out: &mut Vec<u32>) {
        let mut norm = String::with_capacity(text.len() + 3);
        if self.add_space_prefix {
            norm.push_str(SPACE);
        }
        norm.push_str(&text.replace(' ', SPACE));

        struct Sym {
            start: usize,
            len: usize,
            prev: Option<usize>,
            next: Option<usize>,
        }
        let mut syms: Vec<Sym> = Vec::with_capacity(norm.len());
        for (i, (start, c)) in norm.char_indices().enumerate() {
            syms.push(Sym {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                syms[i - 1].next = Some(i);
            }
        }
        let mut heap = BinaryHeap::new();
        let try_add = |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], left: usize| {
            let Some(right) = syms[left].next else { return };
            let (s, len) = (syms[left].start, syms[left].len + syms[right].len);
            if let Some(&id) = to_id.get(&norm[s..s + len]) {
                let score = self
                    .scores
                    .get(id as usize)
                    .copied()
                    .unwrap_or(f32::NEG_INFINITY);
                heap.push(Bigram { score, left, len });
            }
        };
        for i in 0..syms.len() {
            try_add(&mut heap, &syms, i);
        }
        while let Some(b) = heap.pop() {
            let l = b.left;
            let Some(r) = syms[l].next else { continue };
            // Stale: one side has since been merged with something else.
            if syms[l].len == 0 || syms[l].len + syms[r].len != b.len {
                continue;
            }
            syms[l].len = b.len;
            syms[l].next = syms[r].next;
            syms[r].len = 0;
            if let Some(nn) = syms[r].next {
                syms[nn].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                try_add(&mut heap, &syms, p);
            }
            try_add(&mut heap, &syms, l);
        }
        let mut i = if syms.is_empty() { None } else { Some(0) };
        while let Some(idx) = i {
            let s = &syms[idx];
            let piece = &norm[s.start..s.start + s.len];
            match to_id.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        if let Some(id) = self.byte_tokens[b as usize].or(self.unknown) {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let tokens: Vec<String> = ["<unk>", "▁", "a", "b", "ab", "▁ab", "<0xC3>", "<0xA9>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut kinds = vec![TokenKind::Normal; tokens.len()];
        kinds[0] = TokenKind::Unknown;
        kinds[6] = TokenKind::Byte;
        kinds[7] = TokenKind::Byte;
        let scores = vec![0.0, -1.0, -2.0, -2.0, -0.5, -0.1, 0.0, 0.0];
        let to_id: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        let spm = Spm::new(&tokens, &kinds, scores, false);
        let mut out = Vec::new();
        spm.encode(" ab é", &to_id, &mut out);
        assert_eq!(out, vec![5, 1, 6, 7]);
        assert_eq!(decode_token("<0xC3>", TokenKind::Byte), vec![0xC3]);
        assert_eq!(decode_token("▁ab", TokenKind::Normal), b" ab".to_vec());
    }
}
