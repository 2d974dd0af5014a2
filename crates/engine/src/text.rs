//! Turning a stream of token bytes into a stream of text chunks: whole UTF-8 characters
//! only (a token can end half-way through an emoji), and stop sequences found even when
//! they straddle token boundaries, without ever emitting text that a stop sequence later
//! turns out to cover.

/// Buffers bytes until they form complete UTF-8 characters.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes and returns the text that is now complete. Bytes that can never become
    /// valid UTF-8 are replaced by U+FFFD rather than held forever.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: `valid_up_to` bytes are valid UTF-8 by definition.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of generation, made valid.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Holds back text that might be the start of a stop sequence.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text that can safely be sent.
    Continue(String),
    /// A stop sequence was found: send `text` (everything before it) and end.
    Stopped { text: String, sequence: String },
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Continue(text.to_owned());
        }
        self.held.push_str(text);
        // The earliest stop sequence wins.
        let earliest = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, sequence)) = earliest {
            let outcome = StopOutcome::Stopped {
                text: self.held[..at].to_owned(),
                sequence: sequence.clone(),
            };
            self.held.clear();
            return outcome;
        }
        // Keep the longest suffix of `held` that is a proper prefix of some stop sequence.
        let mut keep_from = self.held.len();
        for (i, _) in self.held.char_indices() {
            let tail = &self.held[i..];
            if self.stops.iter().any(|s| s.starts_with(tail)) {
                keep_from = i;
                break;
            }
        }
        let out = self.held[..keep_from].to_owned();
        self.held.drain(..keep_from);
        StopOutcome::Continue(out)
    }

    /// Releases held text at the end of generation (no stop sequence completed).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_splits_a_character() {
        let mut s = Utf8Stream::default();
        let emoji = "🎉".as_bytes();
        assert_eq!(s.push(&emoji[..1]), "");
        assert_eq!(s.push(&emoji[1..3]), "");
        assert_eq!(s.push(&[emoji[3], b'a']), "🎉a");
        assert_eq!(s.push(&[0xFF, b'b']), "\u{FFFD}b");
        assert_eq!(s.push(&[0xE4]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn finds_stops_across_chunks_and_holds_possible_prefixes() {
        let mut m = StopMatcher::new(vec!["END".into(), "\n\n".into()]);
        assert_eq!(m.push("hello E"), StopOutcome::Continue("hello ".into()));
        assert_eq!(m.push("N"), StopOutcome::Continue("".into()));
        assert_eq!(
            m.push("Dx"),
            StopOutcome::Stopped {
                text: "".into(),
                sequence: "END".into()
            }
        );

        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("EN"), StopOutcome::Continue("".into()));
        assert_eq!(m.push("x"), StopOutcome::Continue("ENx".into()));
        assert_eq!(m.push("a\n"), StopOutcome::Continue("a\n".into()));
        assert_eq!(m.push("E"), StopOutcome::Continue("".into()));
        assert_eq!(m.finish(), "E");

        let mut m = StopMatcher::new(vec!["\n\n".into()]);
        assert_eq!(m.push("one\n"), StopOutcome::Continue("one".into()));
        assert_eq!(
            m.push("\ntwo"),
            StopOutcome::Stopped {
                text: "".into(),
                sequence: "\n\n".into()
            }
        );
    }

    #[test]
    fn multibyte_stop_sequences() {
        let mut m = StopMatcher::new(vec!["é!".into()]);
        assert_eq!(m.push("café"), StopOutcome::Continue("caf".into()));
        assert_eq!(
            m.push("!"),
            StopOutcome::Stopped {
                text: "".into(),
                sequence: "é!".into()
            }
        );
    }
}
