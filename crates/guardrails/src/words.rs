//! Denied words and phrases: every entry found at once (one Aho-Corasick automaton over up
//! to 10,000 entries), case-insensitively, and only as whole words: `ass` is not found in
//! `class`.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// The managed PROFANITY list: better-profanity 0.7.0's word list (MIT; the list, its
/// licence and where it came from are in `data/profanity/`), compiled into the binary.
pub fn profanity() -> impl Iterator<Item = &'static str> {
    include_str!("../data/profanity/words.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
}

pub struct WordList {
    entries: Vec<String>,
    automaton: AhoCorasick,
}

/// A word list entry found in a text: its index in the list, and its byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WordMatch {
    pub entry: usize,
    pub start: usize,
    pub end: usize,
}

impl WordList {
    /// `None` if the automaton cannot be built (it can for any list within the limits the
    /// policy enforces).
    pub fn new(entries: Vec<String>) -> Option<Self> {
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&entries)
            .ok()?;
        Some(Self { entries, automaton })
    }

    pub fn entry(&self, i: usize) -> &str {
        self.entries.get(i).map_or("", String::as_str)
    }

    /// Every whole-word occurrence, in order.
    pub fn find(&self, text: &str) -> Vec<WordMatch> {
        // Every overlapping occurrence, so that a match refused for landing inside a word
        // does not hide a shorter one that stands alone; then the leftmost, longest of
        // those that do, without overlaps.
        let mut candidates: Vec<WordMatch> = self
            .automaton
            .find_overlapping_iter(text)
            .filter(|m| whole_word(text, m.start(), m.end()))
            .map(|m| WordMatch {
                entry: m.pattern().as_usize(),
                start: m.start(),
                end: m.end(),
            })
            .collect();
        candidates.sort_by_key(|m| (m.start, std::cmp::Reverse(m.end)));
        let mut found: Vec<WordMatch> = Vec::with_capacity(candidates.len());
        for m in candidates {
            if found.last().is_none_or(|last| m.start >= last.end) {
                found.push(m);
            }
        }
        found
    }
}

/// Whether `text[start..end]` is not part of a longer word.
fn whole_word(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_and_phrases_in_any_case() {
        let list = WordList::new(vec!["ass".into(), "project phoenix".into()]).unwrap();
        let text = "Class is out. ASS! Ask about Project  phoenix or PROJECT PHOENIX.";
        let found: Vec<&str> = list
            .find(text)
            .iter()
            .map(|m| &text[m.start..m.end])
            .collect();
        assert_eq!(found, ["ASS", "PROJECT PHOENIX"]);
        assert_eq!(list.entry(1), "project phoenix");
    }
}
