//! Word statistics of a knowledge base's passages, for BM25: the keyword half of HYBRID
//! search. Kept in memory beside the vectors and rebuilt from the passages' text when an
//! index opens (nothing of it is stored).

use std::collections::HashMap;

/// BM25's term-frequency saturation and length normalisation (the usual values).
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// A passage's words: how often each occurs, and how many there are.
#[derive(Debug, Default, Clone)]
pub(crate) struct Terms {
    counts: HashMap<String, u32>,
    len: u32,
}

/// Lower-cased runs of letters and digits.
pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

impl Terms {
    pub(crate) fn of(text: &str) -> Self {
        let mut terms = Terms::default();
        for w in words(text) {
            *terms.counts.entry(w).or_default() += 1;
            terms.len += 1;
        }
        terms
    }
}

/// Document frequencies and lengths over every passage of an index.
#[derive(Debug, Default)]
pub(crate) struct Lexical {
    /// Passages each word occurs in.
    df: HashMap<String, u32>,
    passages: u32,
    total_len: u64,
}

impl Lexical {
    pub(crate) fn add(&mut self, terms: &[Terms]) {
        for t in terms {
            self.passages += 1;
            self.total_len += u64::from(t.len);
            for w in t.counts.keys() {
                *self.df.entry(w.clone()).or_default() += 1;
            }
        }
    }

    pub(crate) fn remove(&mut self, terms: &[Terms]) {
        for t in terms {
            self.passages = self.passages.saturating_sub(1);
            self.total_len = self.total_len.saturating_sub(u64::from(t.len));
            for w in t.counts.keys() {
                if let Some(n) = self.df.get_mut(w) {
                    *n -= 1;
                    if *n == 0 {
                        self.df.remove(w);
                    }
                }
            }
        }
    }

    /// The query's words with their inverse document frequencies (words no passage has
    /// are dropped: they score nothing).
    pub(crate) fn query(&self, text: &str) -> Vec<(String, f32)> {
        let n = self.passages as f32;
        let mut seen: Vec<(String, f32)> = Vec::new();
        for w in words(text) {
            if seen.iter().any(|(s, _)| *s == w) {
                continue;
            }
            if let Some(&df) = self.df.get(&w) {
                let df = df as f32;
                seen.push((w, (1.0 + (n - df + 0.5) / (df + 0.5)).ln()));
            }
        }
        seen
    }

    /// A passage's BM25 score for a query from [`Lexical::query`].
    pub(crate) fn score(&self, query: &[(String, f32)], terms: &Terms) -> f32 {
        if self.passages == 0 {
            return 0.0;
        }
        let avg = self.total_len as f32 / self.passages as f32;
        let norm = K1 * (1.0 - B + B * terms.len as f32 / avg.max(1.0));
        query
            .iter()
            .map(|(w, idf)| {
                let tf = terms.counts.get(w).copied().unwrap_or(0) as f32;
                idf * tf * (K1 + 1.0) / (tf + norm)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_words_weigh_more_and_removal_undoes_addition() {
        let passages: Vec<Terms> = ["the tea is green", "the sea is blue", "the tea and the sea"]
            .iter()
            .map(|t| Terms::of(t))
            .collect();
        let mut lexical = Lexical::default();
        lexical.add(&passages);
        let q = lexical.query("Green TEA, the!");
        let scores: Vec<f32> = passages.iter().map(|p| lexical.score(&q, p)).collect();
        assert!(scores[0] > scores[2] && scores[2] > scores[1], "{scores:?}");
        // `the` is in every passage: it weighs least.
        let idf = |w: &str| q.iter().find(|(s, _)| s == w).map(|(_, i)| *i).unwrap();
        assert!(idf("the") < idf("tea") && idf("tea") < idf("green"));
        lexical.remove(&passages);
        assert!(lexical.df.is_empty() && lexical.passages == 0 && lexical.total_len == 0);
    }
}
