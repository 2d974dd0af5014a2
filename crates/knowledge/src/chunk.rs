//! Splitting a document's text into the passages that are embedded and retrieved, sized in
//! the embedding model's own tokens (the caller's counter), as Bedrock's chunking
//! strategies describe them.

/// How a data source's documents are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// Passages of at most `max_tokens`, each starting `overlap_percent` of that before the
    /// previous one ended. Bedrock's default is 300 tokens with 20% overlap.
    FixedSize {
        max_tokens: usize,
        overlap_percent: usize,
    },
    /// The whole document is one passage.
    None,
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking::FixedSize {
            max_tokens: 300,
            overlap_percent: 20,
        }
    }
}

/// The passages of `text`. Words are never split: a passage ends at the last whole word
/// that fits (a single word longer than the limit is a passage of its own).
pub fn chunk(text: &str, chunking: Chunking, count_tokens: impl Fn(&str) -> usize) -> Vec<String> {
    let text = text.trim();
    if text.is_empty() {
        return Vec::new();
    }
    let (max_tokens, overlap_percent) = match chunking {
        Chunking::None => return vec![text.to_string()],
        Chunking::FixedSize {
            max_tokens,
            overlap_percent,
        } => (max_tokens.max(1), overlap_percent.min(99)),
    };
    let words: Vec<(usize, usize)> = word_spans(text);
    let costs: Vec<usize> = words
        .iter()
        .map(|&(s, e)| count_tokens(&text[s..e]).max(1))
        .collect();
    let overlap = max_tokens * overlap_percent / 100;
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < words.len() {
        let mut end = start;
        let mut used = 0;
        while end < words.len() && (end == start || used + costs[end] <= max_tokens) {
            used += costs[end];
            end += 1;
        }
        chunks.push(text[words[start].0..words[end - 1].1].to_string());
        if end == words.len() {
            break;
        }
        // Step back over whole words worth at most `overlap` tokens, always moving on.
        let mut next = end;
        let mut back = 0;
        while next > start + 1 && back + costs[next - 1] <= overlap {
            back += costs[next - 1];
            next -= 1;
        }
        start = next;
    }
    chunks
}

/// Byte spans of the whitespace-separated words of `text`.
fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn fixed_size_passages_overlap_by_whole_words() {
        let text = "a b c d e f g h i j";
        let chunks = chunk(
            text,
            Chunking::FixedSize {
                max_tokens: 4,
                overlap_percent: 50,
            },
            words,
        );
        assert_eq!(chunks, ["a b c d", "c d e f", "e f g h", "g h i j"]);
        assert!(chunks.iter().all(|c| words(c) <= 4));
    }

    #[test]
    fn token_costs_come_from_the_counter() {
        // Each word costs its length in tokens: "ccccc" alone exceeds the limit.
        let chunks = chunk(
            "aa bb ccccc d",
            Chunking::FixedSize {
                max_tokens: 4,
                overlap_percent: 1,
            },
            str::len,
        );
        assert_eq!(chunks, ["aa bb", "ccccc", "d"]);
    }

    #[test]
    fn none_keeps_the_document_whole_and_blank_text_has_no_passages() {
        assert_eq!(chunk(" x  y \n", Chunking::None, words), ["x  y"]);
        assert!(chunk(" \n ", Chunking::default(), words).is_empty());
    }
}
