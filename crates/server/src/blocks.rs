//! The one content-block framer, for the dialects that frame a streamed answer in blocks
//! (Anthropic's `content_block_*` events, Bedrock's `contentBlock*` frames): which block an
//! engine event belongs to, when one closes and the next opens, and their indices, as
//! [`BlockEvent`]s that each dialect's encoder puts in its own words.
//!
//! This module knows no dialect's shapes.

use basalt_types::GenerateEvent;

/// What a block of a streamed answer holds: reasoning, text, or tool call `n` of the
/// generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Reasoning,
    Text,
    Tool(u32),
}

/// One step of a streamed answer's block structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BlockEvent<'a> {
    /// A reasoning block opens (Anthropic's `thinking`, Bedrock's `reasoningContent`).
    ReasoningStart {
        index: usize,
    },
    ReasoningDelta {
        index: usize,
        text: &'a str,
    },
    /// A text block opens (Bedrock opens text blocks implicitly, with their first delta).
    TextStart {
        index: usize,
    },
    TextDelta {
        index: usize,
        text: &'a str,
    },
    ToolStart {
        index: usize,
        id: &'a str,
        name: &'a str,
    },
    ToolDelta {
        index: usize,
        json: &'a str,
    },
    Stop {
        index: usize,
    },
}

/// Numbers the content blocks of a streamed answer: a block opens with its first event and
/// closes when another one starts or the answer ends.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    open: Option<(Block, usize)>,
    count: usize,
}

impl Blocks {
    /// The block steps of one engine event, in order: the block it leaves closed, the block
    /// it enters opened, then its delta. Events that are not content (the end, a failure,
    /// empty text) make none.
    pub fn frame<'a>(&mut self, event: &'a GenerateEvent) -> Vec<BlockEvent<'a>> {
        let mut out = Vec::new();
        match event {
            GenerateEvent::Reasoning { text } if !text.is_empty() => {
                let (index, opened) = self.enter(Block::Reasoning, &mut out);
                if opened {
                    out.push(BlockEvent::ReasoningStart { index });
                }
                out.push(BlockEvent::ReasoningDelta { index, text });
            }
            GenerateEvent::Text { text, .. } if !text.is_empty() => {
                let (index, opened) = self.enter(Block::Text, &mut out);
                if opened {
                    out.push(BlockEvent::TextStart { index });
                }
                out.push(BlockEvent::TextDelta { index, text });
            }
            GenerateEvent::ToolCallStart {
                index: call,
                id,
                name,
            } => {
                let (index, _) = self.enter(Block::Tool(*call), &mut out);
                out.push(BlockEvent::ToolStart { index, id, name });
            }
            GenerateEvent::ToolArguments { index: call, json } => {
                let (index, _) = self.enter(Block::Tool(*call), &mut out);
                out.push(BlockEvent::ToolDelta { index, json });
            }
            _ => {}
        }
        out
    }

    /// The answer ended: the open block closes.
    pub fn finish(&mut self) -> Option<BlockEvent<'static>> {
        self.open
            .take()
            .map(|(_, index)| BlockEvent::Stop { index })
    }

    /// Whether any block was ever opened.
    pub fn any(&self) -> bool {
        self.count > 0
    }

    /// Enters `block`: closes the open one if it is another (pushing its stop); returns the
    /// entered block's index and whether it is new.
    fn enter(&mut self, block: Block, out: &mut Vec<BlockEvent<'_>>) -> (usize, bool) {
        match self.open {
            Some((b, index)) if b == block => (index, false),
            _ => {
                if let Some(stop) = self.finish() {
                    out.push(stop);
                }
                let index = self.count;
                self.count += 1;
                self.open = Some((block, index));
                (index, true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_then_text_make_two_blocks() {
        let events = [
            GenerateEvent::Reasoning {
                text: "2+2 is 4".into(),
            },
            GenerateEvent::Reasoning { text: ".".into() },
            GenerateEvent::Text {
                text: "4".into(),
                logprobs: vec![],
            },
        ];
        let mut blocks = Blocks::default();
        let steps: Vec<BlockEvent<'_>> = events.iter().flat_map(|e| blocks.frame(e)).collect();
        assert_eq!(
            steps,
            [
                BlockEvent::ReasoningStart { index: 0 },
                BlockEvent::ReasoningDelta {
                    index: 0,
                    text: "2+2 is 4"
                },
                BlockEvent::ReasoningDelta {
                    index: 0,
                    text: "."
                },
                BlockEvent::Stop { index: 0 },
                BlockEvent::TextStart { index: 1 },
                BlockEvent::TextDelta {
                    index: 1,
                    text: "4"
                },
            ]
        );
    }

    #[test]
    fn text_then_two_tool_calls_make_three_blocks_in_order() {
        let events = [
            GenerateEvent::Text {
                text: "Let me check.".into(),
                logprobs: vec![],
            },
            GenerateEvent::Text {
                text: String::new(),
                logprobs: vec![],
            },
            GenerateEvent::ToolCallStart {
                index: 0,
                id: "a".into(),
                name: "f".into(),
            },
            GenerateEvent::ToolArguments {
                index: 0,
                json: "{}".into(),
            },
            GenerateEvent::ToolCallStart {
                index: 1,
                id: "b".into(),
                name: "g".into(),
            },
        ];
        let mut blocks = Blocks::default();
        let steps: Vec<BlockEvent<'_>> = events.iter().flat_map(|e| blocks.frame(e)).collect();
        assert_eq!(
            steps,
            [
                BlockEvent::TextStart { index: 0 },
                BlockEvent::TextDelta {
                    index: 0,
                    text: "Let me check."
                },
                BlockEvent::Stop { index: 0 },
                BlockEvent::ToolStart {
                    index: 1,
                    id: "a",
                    name: "f"
                },
                BlockEvent::ToolDelta {
                    index: 1,
                    json: "{}"
                },
                BlockEvent::Stop { index: 1 },
                BlockEvent::ToolStart {
                    index: 2,
                    id: "b",
                    name: "g"
                },
            ]
        );
        assert_eq!(blocks.finish(), Some(BlockEvent::Stop { index: 2 }));
        assert_eq!(blocks.finish(), None);
        assert!(blocks.any());
    }
}
