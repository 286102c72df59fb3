//! Knowledge search (RAG): project docs, code and learnings, chunked, embedded and searched.

pub mod chunk;
pub mod embed;
pub mod lexical;
#[cfg(feature = "local-embeddings")]
pub mod local;
