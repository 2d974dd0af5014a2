//! Knowledge bases' own logic, between the embedding model and the chat models: text out
//! of documents ([`extract`]), passages sized in the embedding model's tokens ([`chunk`]),
//! Bedrock's metadata filters ([`filter`]) and the index that searches passages by vector
//! (and, for HYBRID search, by BM25 over their words) and keeps them durable ([`index`]).
//!
//! No HTTP and no embedding here: the server embeds (its worker threads, its metering)
//! and hands vectors in. The index's file functions block and must run off the async
//! runtime.

pub mod chunk;
pub mod extract;
pub mod filter;
mod hnsw;
pub mod index;
mod lexical;

pub use chunk::{
    chunk, chunk_document, semantic_groups, semantic_windows, sentence_spans, sentences, Chunking,
    Chunks,
};
pub use extract::{extract, DocumentType};
pub use filter::Filter;
pub use index::{content_hash, BuiltGraph, Document, GraphBuild, Hit, Index, Passage};

/// What can go wrong in a knowledge base's own logic.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    /// A document this crate cannot read (binary, not UTF-8).
    #[error("{0}")]
    Unreadable(String),
    /// A metadata filter that does not parse; `param` is where it sits in the request.
    #[error("{param}: {why}")]
    InvalidFilter { param: String, why: String },
    /// A stored document file that does not parse.
    #[error("{0}")]
    Corrupt(String),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

impl KnowledgeError {
    pub(crate) fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        KnowledgeError::Io {
            path: path.display().to_string(),
            error,
        }
    }
}
