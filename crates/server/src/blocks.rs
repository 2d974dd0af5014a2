//! Content-block framing for the dialects that frame a streamed answer in blocks
//! (Anthropic's `content_block_start`/`stop`, Bedrock's `contentBlockStart`/`Stop`): which
//! block an event belongs to, when one closes and the next opens, and their indices.

/// What a streamed answer's content blocks are, for dialects that frame them (Anthropic,
/// Bedrock): text, or tool call `n` of the generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Block {
    Text,
    Tool(u32),
}

/// Numbers the content blocks of a streamed answer: a block opens with its first event and
/// closes when another one starts or the answer ends.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    open: Option<(Block, usize)>,
    count: usize,
}

/// What entering a block did: the block closed on the way (if any), whether the entered
/// block is new, and its index.
pub(crate) struct Entered {
    pub closed: Option<usize>,
    pub opened: bool,
    pub index: usize,
}

impl Blocks {
    pub fn enter(&mut self, block: Block) -> Entered {
        match self.open {
            Some((b, index)) if b == block => Entered {
                closed: None,
                opened: false,
                index,
            },
            _ => {
                let closed = self.close();
                let index = self.count;
                self.count += 1;
                self.open = Some((block, index));
                Entered {
                    closed,
                    opened: true,
                    index,
                }
            }
        }
    }

    pub fn close(&mut self) -> Option<usize> {
        self.open.take().map(|(_, index)| index)
    }

    /// Whether any block was ever opened.
    pub fn any(&self) -> bool {
        self.count > 0
    }
}
