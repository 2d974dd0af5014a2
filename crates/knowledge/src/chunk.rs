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
    /// Passages of at most `child_tokens` inside parents of at most `parent_tokens`, both
    /// overlapping by `overlap_tokens`: the children are embedded and searched, a search
    /// returns their parent, so a precise match brings its context.
    Hierarchical {
        parent_tokens: usize,
        child_tokens: usize,
        overlap_tokens: usize,
    },
    /// The whole document is one passage.
    None,
}

/// A document's passages, each with the parent it belongs to (hierarchical chunking
/// only), and the parents' text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunks {
    pub parents: Vec<String>,
    pub passages: Vec<(String, Option<usize>)>,
}

/// Splits a document as `chunking` says, hierarchically or not.
pub fn chunk_document(
    text: &str,
    chunking: Chunking,
    count_tokens: impl Fn(&str) -> usize,
) -> Chunks {
    let Chunking::Hierarchical {
        parent_tokens,
        child_tokens,
        overlap_tokens,
    } = chunking
    else {
        return Chunks {
            parents: Vec::new(),
            passages: chunk(text, chunking, count_tokens)
                .into_iter()
                .map(|p| (p, None))
                .collect(),
        };
    };
    let parents = split(text, parent_tokens, overlap_tokens, &count_tokens);
    let passages = parents
        .iter()
        .enumerate()
        .flat_map(|(i, parent)| {
            split(parent, child_tokens, overlap_tokens, &count_tokens)
                .into_iter()
                .map(move |child| (child, Some(i)))
        })
        .collect();
    Chunks { parents, passages }
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
    match chunking {
        Chunking::None => vec![text.to_string()],
        Chunking::FixedSize {
            max_tokens,
            overlap_percent,
        } => {
            let max_tokens = max_tokens.max(1);
            let overlap = max_tokens * overlap_percent.min(99) / 100;
            split(text, max_tokens, overlap, &count_tokens)
        }
        Chunking::Hierarchical {
            child_tokens,
            overlap_tokens,
            ..
        } => split(text, child_tokens, overlap_tokens, &count_tokens),
    }
}

/// Passages of at most `max_tokens` whole words, each starting at most `overlap` tokens
/// before the previous one ended.
fn split(
    text: &str,
    max_tokens: usize,
    overlap: usize,
    count_tokens: &impl Fn(&str) -> usize,
) -> Vec<String> {
    let text = text.trim();
    if text.is_empty() {
        return Vec::new();
    }
    let max_tokens = max_tokens.max(1);
    let words: Vec<(usize, usize)> = word_spans(text);
    let costs: Vec<usize> = words
        .iter()
        .map(|&(s, e)| count_tokens(&text[s..e]).max(1))
        .collect();
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
    fn hierarchical_children_live_inside_their_parents() {
        let text = "a b c d e f g h i j k l";
        let chunks = chunk_document(
            text,
            Chunking::Hierarchical {
                parent_tokens: 6,
                child_tokens: 3,
                overlap_tokens: 1,
            },
            words,
        );
        assert_eq!(chunks.parents, ["a b c d e f", "f g h i j k", "k l"]);
        assert_eq!(
            chunks.passages,
            [
                ("a b c".to_string(), Some(0)),
                ("c d e".to_string(), Some(0)),
                ("e f".to_string(), Some(0)),
                ("f g h".to_string(), Some(1)),
                ("h i j".to_string(), Some(1)),
                ("j k".to_string(), Some(1)),
                ("k l".to_string(), Some(2)),
            ]
        );
        for (child, parent) in &chunks.passages {
            assert!(chunks.parents[parent.unwrap()].contains(child.as_str()));
        }
    }

    #[test]
    fn none_keeps_the_document_whole_and_blank_text_has_no_passages() {
        assert_eq!(chunk(" x  y \n", Chunking::None, words), ["x  y"]);
        assert!(chunk(" \n ", Chunking::default(), words).is_empty());
    }
}
