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
    /// Groups of whole sentences, broken where the meaning shifts: the distance between
    /// neighbouring sentences' embeddings (each with `buffer` sentences either side) above
    /// the `percentile`-th of the document's, and at `max_tokens`. Needs the embedding
    /// model, so the caller groups ([`semantic_groups`]); alone, this splits by size.
    Semantic {
        max_tokens: usize,
        buffer: usize,
        percentile: usize,
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
        Chunking::Semantic { max_tokens, .. } => split(text, max_tokens, 0, &count_tokens),
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

/// The sentences of `text` as character spans (`end` exclusive), surrounding blank space
/// left out. A sentence ends at `.`, `!`, `?` before blank space (not inside `3.5`) or at
/// a line break.
pub fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut spans = Vec::new();
    let mut start = 0;
    for i in 0..chars.len() {
        let ends = matches!(chars[i], '.' | '!' | '?' | '\n')
            && chars.get(i + 1).is_none_or(|c| c.is_whitespace());
        if ends || i + 1 == chars.len() {
            let mut s = start;
            while s <= i && chars[s].is_whitespace() {
                s += 1;
            }
            let mut e = i + 1;
            while e > s && chars[e - 1].is_whitespace() {
                e -= 1;
            }
            if e > s {
                spans.push((s, e));
            }
            start = i + 1;
        }
    }
    spans
}

/// The sentences of `text`.
pub fn sentences(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    sentence_spans(text)
        .into_iter()
        .map(|(s, e)| chars[s..e].iter().collect())
        .collect()
}

/// For SEMANTIC chunking: the text each sentence is embedded as, itself with `buffer`
/// sentences either side, so one short sentence does not decide a break alone.
pub fn semantic_windows(sentences: &[String], buffer: usize) -> Vec<String> {
    (0..sentences.len())
        .map(|i| {
            let from = i.saturating_sub(buffer);
            let to = (i + buffer + 1).min(sentences.len());
            sentences[from..to].join(" ")
        })
        .collect()
}

/// For SEMANTIC chunking: groups of consecutive sentences, split where the distance
/// between neighbouring windows' embeddings (unit vectors) is above the given percentile
/// of all such distances, and wherever a group would pass `max_tokens` (`tokens` per
/// sentence).
pub fn semantic_groups(
    sentences: &[String],
    vectors: &[Vec<f32>],
    tokens: &[usize],
    percentile: usize,
    max_tokens: usize,
) -> Vec<String> {
    let distances: Vec<f32> = vectors
        .windows(2)
        .map(|w| 1.0 - w[0].iter().zip(&w[1]).map(|(a, b)| a * b).sum::<f32>())
        .collect();
    let threshold = {
        let mut sorted = distances.clone();
        sorted.sort_by(f32::total_cmp);
        let at = (sorted.len().saturating_sub(1) * percentile.min(100)) / 100;
        sorted.get(at).copied().unwrap_or(f32::INFINITY)
    };
    let mut groups = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut used = 0;
    for (i, sentence) in sentences.iter().enumerate() {
        let cost = tokens.get(i).copied().unwrap_or(1);
        let topic_changes = i > 0 && distances.get(i - 1).is_some_and(|d| *d > threshold);
        if !current.is_empty() && (topic_changes || used + cost > max_tokens) {
            groups.push(current.join(" "));
            current.clear();
            used = 0;
        }
        current.push(sentence);
        used += cost;
    }
    if !current.is_empty() {
        groups.push(current.join(" "));
    }
    groups
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
    fn sentences_are_character_spans_without_surrounding_space() {
        let text = "Brew at 80 \u{b0}C. Steep 3 minutes!\n\n Serve.";
        assert_eq!(
            sentences(text),
            ["Brew at 80 \u{b0}C.", "Steep 3 minutes!", "Serve."]
        );
        // 3.5 is not a sentence end; a last sentence without a stop still counts.
        assert_eq!(sentences("It costs 3.5 euros").len(), 1);
        assert!(sentences("  \n ").is_empty());
    }

    #[test]
    fn semantic_groups_break_where_the_topic_changes_or_the_size_runs_out() {
        let s: Vec<String> = ["tea one", "tea two", "tea three", "sea one", "sea two"]
            .iter()
            .map(|x| x.to_string())
            .collect();
        let tea = vec![1.0, 0.0];
        let sea = vec![0.0, 1.0];
        let vectors = [tea.clone(), tea.clone(), tea, sea.clone(), sea];
        let ones = [1; 5];
        assert_eq!(
            semantic_groups(&s, &vectors, &ones, 90, 100),
            ["tea one tea two tea three", "sea one sea two"]
        );
        assert_eq!(
            semantic_groups(&s, &vectors, &ones, 90, 2),
            ["tea one tea two", "tea three", "sea one sea two"]
        );
        assert_eq!(
            semantic_windows(&s[..3], 1),
            [
                "tea one tea two",
                "tea one tea two tea three",
                "tea two tea three"
            ]
        );
    }

    #[test]
    fn none_keeps_the_document_whole_and_blank_text_has_no_passages() {
        assert_eq!(chunk(" x  y \n", Chunking::None, words), ["x  y"]);
        assert!(chunk(" \n ", Chunking::default(), words).is_empty());
    }
}
