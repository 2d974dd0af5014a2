//! The API surfaces, one file each, and the authentication layer in front of them. A route
//! parses its dialect (`basalt-wire`), runs the request through `generation` (or the
//! embedding and image paths), and encodes the result; it holds no policy of its own.

pub(crate) mod admin;
pub(crate) mod anthropic;
pub(crate) mod auth;
pub(crate) mod bedrock;
pub(crate) mod embeddings;
pub(crate) mod files;
pub(crate) mod guardrails;
pub(crate) mod images;
pub(crate) mod invocation_jobs;
pub(crate) mod knowledge_bases;
pub(crate) mod knowledge_documents;
pub(crate) mod openai;
pub(crate) mod responses;
