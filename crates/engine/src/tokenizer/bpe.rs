//! Byte-level BPE (GPT-2 style): bytes are mapped to printable characters, then merged by
//! merge rank, lowest first and leftmost among equals.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::pretokenize::Pre;

#[derive(Debug)]
pub struct Bpe {
    /// (left id, right id) -> (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Token id of each byte's printable character, if the vocabulary has one.
    byte_ids: [Option<u32>; 256],
    pre: Pre,
    /// Whole words the vocabulary holds, by their bytes (only where the pre-tokenizer
    /// [ignores merges](Pre::ignores_merges)).
    whole_words: HashMap<Vec<u8>, u32>,
}

/// GPT-2's reversible byte -> character map: printable bytes map to themselves, the rest
/// to code points from U+0100 up.
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let cp = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(cp).unwrap_or('\0');
    }
    table
}

fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    if cp < 256 && printable(cp) {
        return Some(cp as u8);
    }
    // Inverse of the `extra` numbering in `byte_to_char`.
    let idx = cp.checked_sub(256)?;
    (0..256u32)
        .filter(|&b| !printable(b))
        .nth(idx as usize)
        .map(|b| b as u8)
}

/// The raw bytes of a normal BPE token.
pub fn decode_token(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| char_to_byte(c).unwrap_or(b'?'))
        .collect()
}

impl Bpe {
    pub fn new(to_id: &HashMap<String, u32>, merges: &[String], pre: Pre) -> Self {
        let table = byte_to_char();
        let mut byte_ids = [None; 256];
        for (b, c) in table.iter().enumerate() {
            byte_ids[b] = to_id.get(c.to_string().as_str()).copied();
        }
        let mut map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let Some((l, r)) = m.split_once(' ') else {
                continue;
            };
            let (Some(&li), Some(&ri), Some(&mi)) = (
                to_id.get(l),
                to_id.get(r),
                to_id.get(format!("{l}{r}").as_str()),
            ) else {
                continue;
            };
            map.entry((li, ri)).or_insert((rank as u32, mi));
        }
        let mut whole_words = HashMap::new();
        if pre.ignores_merges() {
            for (token, &id) in to_id {
                // Only tokens made wholly of the byte alphabet spell bytes (llama.cpp looks
                // the byte-mapped word up among all tokens; no other kind can equal one).
                let bytes: Option<Vec<u8>> = token.chars().map(char_to_byte).collect();
                if let Some(bytes) = bytes {
                    let slot = whole_words.entry(bytes).or_insert(id);
                    *slot = (*slot).min(id);
                }
            }
        }
        Self {
            merges: map,
            byte_ids,
            pre,
            whole_words,
        }
    }

    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        for word in self.pre.split(text) {
            match self.whole_words.get(word.as_bytes()) {
                Some(&id) => out.push(id),
                None => self.encode_word(word.as_bytes(), out),
            }
        }
    }

    fn encode_word(&self, bytes: &[u8], out: &mut Vec<u32>) {
        // Symbols start as one per UTF-8 character of the byte-mapped word; a character of the
        // mapped alphabet is one byte of input, so start from bytes directly.
        #[derive(Clone, Copy)]
        struct Sym {
            id: Option<u32>,
            byte: u8,
            prev: Option<usize>,
            next: Option<usize>,
            alive: bool,
        }
        let n = bytes.len();
        let mut syms: Vec<Sym> = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| Sym {
                id: self.byte_ids[b as usize],
                byte: b,
                prev: i.checked_sub(1),
                next: (i + 1 < n).then_some(i + 1),
                alive: true,
            })
            .collect();
        // Min-heap on (rank, left position); entries are validated when popped.
        let mut heap = BinaryHeap::new();
        let push =
            |heap: &mut BinaryHeap<Reverse<(u32, usize, u32, u32)>>, syms: &[Sym], l: usize| {
                if let Some(r) = syms[l].next {
                    if let (Some(a), Some(b)) = (syms[l].id, syms[r].id) {
                        if let Some(&(rank, _)) = self.merges.get(&(a, b)) {
                            heap.push(Reverse((rank, l, a, b)));
                        }
                    }
                }
            };
        for i in 0..n {
            push(&mut heap, &syms, i);
        }
        while let Some(Reverse((_, l, a, b))) = heap.pop() {
            let Some(r) = syms[l].next else { continue };
            if !syms[l].alive || syms[l].id != Some(a) || syms[r].id != Some(b) {
                continue;
            }
            let Some(&(_, merged)) = self.merges.get(&(a, b)) else {
                continue;
            };
            syms[l].id = Some(merged);
            syms[l].next = syms[r].next;
            syms[r].alive = false;
            if let Some(nn) = syms[r].next {
                syms[nn].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                push(&mut heap, &syms, p);
            }
            push(&mut heap, &syms, l);
        }
        let mut i = if n > 0 { Some(0) } else { None };
        while let Some(idx) = i {
            let s = syms[idx];
            match s.id {
                Some(id) => out.push(id),
                // A byte the vocabulary lacks entirely: nothing sensible to emit. Byte-level
                // vocabularies always contain all 256, so this is only reachable with a broken
                // model file.
                None => tracing::debug!(byte = s.byte, "byte missing from BPE vocabulary"),
            }
            i = s.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_round_trips() {
        let table = byte_to_char();
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(table[b as usize]), Some(b));
        }
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
    }

    #[test]
    fn llama3_takes_a_whole_word_the_vocabulary_holds_before_merging() {
        // "abc" is a token, but no merge sequence reaches it: "b c" then "a bc" is missing.
        let vocab = ["a", "b", "c", "bc", "abc"];
        let to_id: HashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), i as u32))
            .collect();
        let merges = vec!["b c".to_string()];
        let (mut gpt2, mut llama3) = (Vec::new(), Vec::new());
        Bpe::new(&to_id, &merges, Pre::Gpt2).encode("abc", &mut gpt2);
        Bpe::new(&to_id, &merges, Pre::Llama3).encode("abc", &mut llama3);
        assert_eq!(gpt2, vec![0, 3]);
        assert_eq!(llama3, vec![4]);
    }

    #[test]
    fn merges_lowest_rank_first() {
        let vocab = ["a", "b", "c", "ab", "bc", "abc"];
        let to_id: HashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), i as u32))
            .collect();
        let merges: Vec<String> = ["b c", "a bc", "a b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let bpe = Bpe::new(&to_id, &merges, Pre::Gpt2);
        let mut out = Vec::new();
        bpe.encode("abc", &mut out);
        assert_eq!(out, vec![5]);
        out.clear();
        bpe.encode("ab", &mut out);
        assert_eq!(out, vec![3]);
        out.clear();
        // A long run of one symbol must stay fast (no quadratic rescans).
        bpe.encode(&"ab".repeat(50_000), &mut out);
        assert_eq!(out.len(), 50_000);
    }
}
