//! A knowledge base's passages, their vectors and metadata: the index that searches them
//! (exactly, or through the approximate graph of [`crate::hnsw`] once it is large), and the
//! document files that make it durable.
//!
//! Every passage's vector is a row of one matrix. A document's rows are contiguous; deleting
//! it leaves its rows dead until enough are dead to be worth compacting, which renumbers the
//! rows and drops the graph. The graph is derived data, never stored: it is built off the
//! index's lock from a copy of the matrix ([`Index::graph_wanted`], [`GraphBuild::run`],
//! [`Index::install_graph`]) while exact search answers, and then kept current row by row.
//!
//! Each document is one file, `<dir>/<hash of data source and document id>.json`, holding
//! its passages, their vectors and its metadata, written whole (a temporary file renamed
//! over the old one) so a crash leaves either the old document or the new one, never part
//! of either. The index in memory is rebuilt from the files when a knowledge base is
//! opened. Functions here that touch files block: callers run them off the async runtime.

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::filter::Filter;
use crate::hnsw::{Graph, Similarity};
use crate::lexical::{Lexical, Terms};
use crate::KnowledgeError;

/// Reciprocal rank fusion's damping: a result's fused score is the sum over rankings of
/// 1 / (RRF_K + its rank), so agreement between the rankings outweighs one high rank.
const RRF_K: f32 = 60.0;
/// HYBRID search fuses this many times the results asked for from each ranking.
const HYBRID_DEPTH: usize = 4;
/// From this many live passages a search goes through the graph: below it an exact scan
/// takes under about 3 ms (384 dimensions, one core) and is never wrong.
pub const APPROXIMATE_FROM: usize = 20_000;
/// Candidates a graph search keeps (at least; more when more results are asked for).
/// Chosen by `scripts/bench-knowledge` for recall@10 >= 0.98 against exact search.
const EF_SEARCH: usize = 96;
/// Dead rows are dropped once there are more than this many and more than a quarter of
/// the live ones: the copy and the new graph cost about what the dead rows cost searches.
const COMPACT_FROM_DEAD: usize = 1024;
/// A row whose passage was deleted.
const DEAD: u32 = u32::MAX;

/// One passage of a document and its embedding (unit length). Once a document is in an
/// index its vectors live in the index's matrix ([`Hit::vector`] gives a passage's), and
/// the documents it hands out have them empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub text: String,
    pub vector: Vec<f32>,
    /// The parent it was cut from (hierarchical chunking): searches find the passage and
    /// return the parent.
    pub parent: Option<usize>,
}

/// A document as indexed: where it came from, what it held, its passages.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub data_source_id: String,
    /// The identifier it is known by: its `s3://` URI, or a custom document's id.
    pub id: String,
    /// Whether `id` is an `s3://` URI (else a custom document's identifier).
    pub from_bucket: bool,
    /// A hash of the content and metadata it was indexed from: an unchanged document is
    /// not embedded again.
    pub content_hash: String,
    pub metadata: Map<String, Value>,
    pub passages: Vec<Passage>,
    /// Parent passages' text (hierarchical chunking; empty otherwise).
    pub parents: Vec<String>,
    /// When it was indexed (seconds since the epoch).
    pub updated_at: i64,
}

impl Document {
    /// What a search returns for passage `i`: its parent's text, or its own.
    pub fn text_of(&self, i: usize) -> Option<&str> {
        let p = self.passages.get(i)?;
        match p.parent {
            Some(parent) => self.parents.get(parent).map(String::as_str),
            None => Some(&p.text),
        }
    }

    /// Passages that return the same text are one result: the parent, or the passage.
    fn group(&self, i: usize) -> (bool, usize) {
        match self.passages.get(i).and_then(|p| p.parent) {
            Some(parent) => (true, parent),
            None => (false, i),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredDocument {
    data_source_id: String,
    id: String,
    from_bucket: bool,
    content_hash: String,
    metadata: Map<String, Value>,
    updated_at: i64,
    passages: Vec<StoredPassage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parents: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredPassage {
    text: String,
    /// Little-endian f32s, base64.
    vector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<usize>,
}

/// A search result: a passage, its document and its cosine similarity to the query.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'a> {
    pub score: f32,
    pub document: &'a Document,
    pub passage: usize,
    /// The passage's vector.
    pub vector: &'a [f32],
}

/// The hash that names a document's content: its text and metadata.
pub fn content_hash(text: &str, metadata: &Map<String, Value>) -> String {
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.update([0]);
    h.update(Value::Object(metadata.clone()).to_string().as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A knowledge base's documents, in memory, searchable.
#[derive(Debug)]
pub struct Index {
    dir: PathBuf,
    /// In no particular order; an exact search walks them front to back.
    entries: Vec<Entry>,
    /// Where each (data source id, document id) is in `entries`.
    positions: HashMap<(String, String), usize>,
    lexical: Lexical,
    /// Every passage's vector, `dims` floats a row.
    vectors: Vec<f32>,
    /// Set by the first document with vectors; rows of any other size are stored as zeros.
    dims: usize,
    /// The entry each row belongs to, or [`DEAD`].
    owner: Vec<u32>,
    dead_rows: usize,
    graph: Option<Graph>,
    /// Bumped when rows are renumbered, so a graph built over the old numbering is thrown away.
    generation: u64,
    /// A [`GraphBuild`] is out for this generation.
    building: bool,
    approximate_from: usize,
    ef_search: usize,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            dir: PathBuf::new(),
            entries: Vec::new(),
            positions: HashMap::new(),
            lexical: Lexical::default(),
            vectors: Vec::new(),
            dims: 0,
            owner: Vec::new(),
            dead_rows: 0,
            graph: None,
            generation: 0,
            building: false,
            approximate_from: APPROXIMATE_FROM,
            ef_search: EF_SEARCH,
        }
    }
}

impl Entry {
    /// Whether a search with `filter` looks at this document.
    fn passes(&self, filter: Option<&Filter>) -> bool {
        filter.is_none_or(|f| f.matches_in(&self.document.metadata, Some(&self.implicit)))
    }
}

/// A document as the index holds it, with what searching it needs beside it.
#[derive(Debug)]
struct Entry {
    document: Document,
    /// Its passages' rows in the index's matrix, in passage order.
    rows: Range<usize>,
    /// Its passages' words (BM25).
    terms: Vec<Terms>,
    /// The attributes filters may name beside its metadata: its data source and its
    /// source URI or custom id, as Bedrock names them.
    implicit: Map<String, Value>,
}

/// A copy of an index's vectors to build its graph from, away from the index's lock.
pub struct GraphBuild {
    vectors: Vec<f32>,
    dims: usize,
    generation: u64,
}

/// A graph built by [`GraphBuild::run`], for [`Index::install_graph`].
pub struct BuiltGraph {
    graph: Graph,
    generation: u64,
}

impl GraphBuild {
    /// Builds the graph: seconds for a hundred thousand passages. Blocks.
    pub fn run(self) -> BuiltGraph {
        let mut graph = Graph::new(self.dims, similarity_kernel());
        let rows = self.vectors.len() / self.dims.max(1);
        for _ in 0..rows {
            graph.push(&self.vectors);
        }
        BuiltGraph {
            graph,
            generation: self.generation,
        }
    }
}

impl Index {
    /// Opens the documents stored in `dir` (created if missing). A file that does not
    /// parse is skipped and reported, never fatal: the rest of the knowledge base serves.
    pub fn open(dir: &Path) -> Result<(Self, Vec<String>), KnowledgeError> {
        std::fs::create_dir_all(dir).map_err(|e| KnowledgeError::io(dir, e))?;
        let mut documents = HashMap::new();
        let mut skipped = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| KnowledgeError::io(dir, e))? {
            let path = entry.map_err(|e| KnowledgeError::io(dir, e))?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match read_document(&path) {
                Ok(doc) => {
                    documents.insert((doc.data_source_id.clone(), doc.id.clone()), doc);
                }
                Err(e) => skipped.push(format!("{}: {e}", path.display())),
            }
        }
        let mut index = Self {
            dir: dir.to_path_buf(),
            ..Self::default()
        };
        // In key order, so the rows (and the graph built over them) are the same each time.
        let mut documents: Vec<_> = documents.into_iter().collect();
        documents.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, doc) in documents {
            index.insert(key, doc);
        }
        Ok((index, skipped))
    }

    /// Serves a document without writing it anywhere: for benchmarks, which measure
    /// searching, not storing. [`Index::put`] is how documents are kept.
    pub fn serve_unsaved(&mut self, document: Document) {
        self.insert(
            (document.data_source_id.clone(), document.id.clone()),
            document,
        );
    }

    /// Serves a document (its words counted for BM25, its vectors appended to the matrix
    /// and, when there is one, the graph), replacing one with the same key.
    fn insert(&mut self, key: (String, String), mut document: Document) {
        self.forget(&key);
        if self.vectors.is_empty() {
            self.dims = document.passages.first().map_or(0, |p| p.vector.len());
        }
        let at = self.entries.len();
        let first = self.owner.len();
        for p in &mut document.passages {
            // A vector of another size would misalign every row after it.
            if p.vector.len() == self.dims {
                self.vectors.append(&mut p.vector);
            } else {
                self.vectors.extend(std::iter::repeat_n(0.0, self.dims));
                p.vector.clear();
            }
            self.owner.push(at as u32);
        }
        let rows = first..self.owner.len();
        if let Some(graph) = &mut self.graph {
            while graph.len() < self.owner.len() {
                graph.push(&self.vectors);
            }
        }
        let terms: Vec<Terms> = document
            .passages
            .iter()
            .map(|p| Terms::of(&p.text))
            .collect();
        self.lexical.add(&terms);
        let mut implicit = Map::new();
        implicit.insert(
            "x-amz-bedrock-kb-data-source-id".into(),
            Value::String(document.data_source_id.clone()),
        );
        let source = if document.from_bucket {
            "x-amz-bedrock-kb-source-uri"
        } else {
            "x-amz-bedrock-kb-document-id"
        };
        implicit.insert(source.into(), Value::String(document.id.clone()));
        self.positions.insert(key, at);
        self.entries.push(Entry {
            document,
            rows,
            terms,
            implicit,
        });
    }

    fn forget(&mut self, key: &(String, String)) -> bool {
        let Some(at) = self.positions.remove(key) else {
            return false;
        };
        let entry = self.entries.swap_remove(at);
        self.lexical.remove(&entry.terms);
        for owner in &mut self.owner[entry.rows.clone()] {
            *owner = DEAD;
        }
        self.dead_rows += entry.rows.len();
        // The last entry moved into the hole.
        if let Some(moved) = self.entries.get(at) {
            let d = &moved.document;
            self.positions
                .insert((d.data_source_id.clone(), d.id.clone()), at);
            for owner in &mut self.owner[moved.rows.clone()] {
                *owner = at as u32;
            }
        }
        let live = self.owner.len() - self.dead_rows;
        if self.dead_rows > COMPACT_FROM_DEAD && self.dead_rows > live / 4 {
            self.compact();
        }
        true
    }

    /// Drops dead rows: live ones are renumbered in entry order, so the graph goes (until
    /// a new one is built, searches are exact).
    fn compact(&mut self) {
        let mut vectors = Vec::with_capacity((self.owner.len() - self.dead_rows) * self.dims);
        let mut owner = Vec::with_capacity(self.owner.len() - self.dead_rows);
        for (at, entry) in self.entries.iter_mut().enumerate() {
            let first = owner.len();
            let old = entry.rows.start * self.dims..entry.rows.end * self.dims;
            vectors.extend_from_slice(&self.vectors[old]);
            owner.extend(std::iter::repeat_n(at as u32, entry.rows.len()));
            entry.rows = first..owner.len();
        }
        self.vectors = vectors;
        self.owner = owner;
        self.dead_rows = 0;
        self.graph = None;
        self.building = false;
        self.generation += 1;
    }

    fn file(&self, data_source_id: &str, id: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(data_source_id.as_bytes());
        h.update([0]);
        h.update(id.as_bytes());
        self.dir.join(format!("{}.json", hex(&h.finalize())))
    }

    pub fn get(&self, data_source_id: &str, id: &str) -> Option<&Document> {
        self.positions
            .get(&(data_source_id.to_string(), id.to_string()))
            .and_then(|&at| self.entries.get(at))
            .map(|e| &e.document)
    }

    /// Every document of a data source, in identifier order.
    pub fn documents_of(&self, data_source_id: &str) -> Vec<&Document> {
        let mut docs: Vec<&Document> = self
            .entries
            .iter()
            .map(|e| &e.document)
            .filter(|d| d.data_source_id == data_source_id)
            .collect();
        docs.sort_by(|a, b| a.id.cmp(&b.id));
        docs
    }

    pub fn passage_count(&self) -> usize {
        self.owner.len() - self.dead_rows
    }

    /// Searches go through the graph once this many passages are live (tests and
    /// benchmarks move it; the default suits 384-dimension vectors).
    pub fn set_approximate_from(&mut self, passages: usize) {
        self.approximate_from = passages;
    }

    /// The candidates a graph search keeps: more is slower and finds more true neighbours.
    pub fn set_ef_search(&mut self, ef: usize) {
        self.ef_search = ef.max(1);
    }

    /// Whether searches go through the graph now.
    pub fn approximate(&self) -> bool {
        self.graph.is_some()
    }

    /// When the index has grown to need a graph and none is built or being built: a copy of
    /// its vectors to build one from. Whoever takes it should run it and install the result.
    pub fn graph_wanted(&mut self) -> Option<GraphBuild> {
        if self.graph.is_some() || self.building || self.passage_count() < self.approximate_from {
            return None;
        }
        self.building = true;
        Some(GraphBuild {
            vectors: self.vectors.clone(),
            dims: self.dims,
            generation: self.generation,
        })
    }

    /// Serves a built graph, with the rows added since its copy was taken; false (and the
    /// graph dropped) if the rows were renumbered meanwhile.
    pub fn install_graph(&mut self, built: BuiltGraph) -> bool {
        if built.generation != self.generation {
            return false;
        }
        let mut graph = built.graph;
        while graph.len() < self.owner.len() {
            graph.push(&self.vectors);
        }
        self.graph = Some(graph);
        self.building = false;
        true
    }

    /// Builds the graph now, on this thread, if the index is large enough to want one.
    pub fn build_graph(&mut self) {
        if let Some(build) = self.graph_wanted() {
            let built = build.run();
            self.install_graph(built);
        }
    }

    /// Stores a document (replacing one with the same data source and id) durably, then
    /// serves it.
    pub fn put(&mut self, document: Document) -> Result<(), KnowledgeError> {
        let stored = StoredDocument {
            data_source_id: document.data_source_id.clone(),
            id: document.id.clone(),
            from_bucket: document.from_bucket,
            content_hash: document.content_hash.clone(),
            metadata: document.metadata.clone(),
            updated_at: document.updated_at,
            passages: document
                .passages
                .iter()
                .map(|p| StoredPassage {
                    text: p.text.clone(),
                    vector: encode_vector(&p.vector),
                    parent: p.parent,
                })
                .collect(),
            parents: document.parents.clone(),
        };
        let path = self.file(&document.data_source_id, &document.id);
        let bytes = serde_json::to_vec(&stored)
            .map_err(|e| KnowledgeError::Corrupt(format!("cannot encode a document: {e}")))?;
        write_atomically(&path, &bytes)?;
        self.insert(
            (document.data_source_id.clone(), document.id.clone()),
            document,
        );
        Ok(())
    }

    /// Removes a document; false if there was none.
    pub fn delete(&mut self, data_source_id: &str, id: &str) -> Result<bool, KnowledgeError> {
        let path = self.file(data_source_id, id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(KnowledgeError::io(&path, e)),
        }
        Ok(self.forget(&(data_source_id.to_string(), id.to_string())))
    }

    /// The `k` passages nearest `query` (cosine similarity; vectors are unit length) that
    /// pass `filter`, after skipping the first `skip` (paging), best first. Exact below the
    /// size where the graph takes over, or when the filter leaves fewer passages than that
    /// (scanning those is quicker than walking a graph mostly of refused ones); else through
    /// the graph, with the filter applied as it walks.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        skip: usize,
        filter: Option<&Filter>,
    ) -> Vec<Hit<'_>> {
        self.search_in(query, k, skip, filter, true)
    }

    /// [`Index::search`], always scoring every passage: what the graph is measured against.
    pub fn search_exact(
        &self,
        query: &[f32],
        k: usize,
        skip: usize,
        filter: Option<&Filter>,
    ) -> Vec<Hit<'_>> {
        self.search_in(query, k, skip, filter, false)
    }

    fn search_in(
        &self,
        query: &[f32],
        k: usize,
        skip: usize,
        filter: Option<&Filter>,
        approximate: bool,
    ) -> Vec<Hit<'_>> {
        let want = k.saturating_add(skip);
        if want == 0 || self.dims == 0 || query.len() != self.dims {
            return Vec::new();
        }
        let passing: Option<Vec<bool>> =
            filter.map(|f| self.entries.iter().map(|e| e.passes(Some(f))).collect());
        let candidates = match &passing {
            None => self.passage_count(),
            Some(passing) => self
                .entries
                .iter()
                .zip(passing)
                .filter(|(_, &passes)| passes)
                .map(|(e, _)| e.rows.len())
                .sum(),
        };
        let mut best = Best::new(want);
        match &self.graph {
            Some(graph) if approximate && candidates >= self.approximate_from => {
                self.search_graph(graph, query, passing.as_deref(), &mut best);
            }
            _ => self.search_every(query, passing.as_deref(), &mut best),
        }
        let mut hits = best.hits;
        hits.drain(..skip.min(hits.len()));
        hits
    }

    /// Scores every passage of every document that passes.
    fn search_every<'a>(&'a self, query: &[f32], passing: Option<&[bool]>, best: &mut Best<'a>) {
        let score_rows = score_rows_kernel();
        let mut scores = Vec::new();
        for (at, entry) in self.entries.iter().enumerate() {
            if passing.is_some_and(|p| !p.get(at).copied().unwrap_or(false)) {
                continue;
            }
            let matrix = &self.vectors[entry.rows.start * self.dims..entry.rows.end * self.dims];
            score_rows(matrix, query, &mut scores);
            for (i, (vector, &score)) in matrix.chunks_exact(self.dims).zip(&scores).enumerate() {
                best.offer(score, &entry.document, i, vector);
            }
        }
    }

    /// Walks the graph; passages of one parent count once, so when they crowd out the
    /// results asked for, it walks again keeping more candidates.
    fn search_graph<'a>(
        &'a self,
        graph: &Graph,
        query: &[f32],
        passing: Option<&[bool]>,
        best: &mut Best<'a>,
    ) {
        let accept = |row: u32| match self.owner.get(row as usize) {
            Some(&owner) if owner != DEAD => {
                passing.is_none_or(|p| p.get(owner as usize).copied().unwrap_or(false))
            }
            _ => false,
        };
        let mut ef = self.ef_search.max(best.want);
        loop {
            let found = graph.search(&self.vectors, query, ef, &accept);
            for s in &found {
                let row = s.row as usize;
                let Some(entry) = self
                    .owner
                    .get(row)
                    .and_then(|&o| self.entries.get(o as usize))
                else {
                    continue;
                };
                let vector = &self.vectors[row * self.dims..(row + 1) * self.dims];
                best.offer(s.sim, &entry.document, row - entry.rows.start, vector);
            }
            if best.hits.len() >= best.want || found.len() < ef || ef >= self.owner.len() {
                return;
            }
            ef *= 2;
        }
    }
}

/// The best results so far, best first, at most `want`, one per parent.
struct Best<'a> {
    want: usize,
    hits: Vec<Hit<'a>>,
}

impl<'a> Best<'a> {
    fn new(want: usize) -> Self {
        Best {
            want,
            hits: Vec::with_capacity(want + 1),
        }
    }

    fn offer(&mut self, score: f32, document: &'a Document, i: usize, vector: &'a [f32]) {
        let best = &mut self.hits;
        if best.len() == self.want && best.last().is_some_and(|w| !better(score, document, i, w)) {
            return;
        }
        // One result per parent: a better passage of the same one replaces it.
        let group = document.group(i);
        if let Some(at) = best.iter().position(|h| {
            std::ptr::eq(h.document, document) && h.document.group(h.passage) == group
        }) {
            if !better(score, document, i, &best[at]) {
                return;
            }
            best.remove(at);
        }
        let at = best
            .iter()
            .position(|h| better(score, document, i, h))
            .unwrap_or(best.len());
        best.insert(
            at,
            Hit {
                score,
                document,
                passage: i,
                vector,
            },
        );
        best.truncate(self.want);
    }
}

impl Index {
    /// The `k` passages that keyword relevance (BM25 over `text`) and vector similarity
    /// (to `query`) rank best together, fused by reciprocal rank, after skipping `skip`;
    /// both rankings see only passages that pass `filter`. The score is the fused one.
    pub fn search_hybrid(
        &self,
        query: &[f32],
        text: &str,
        k: usize,
        skip: usize,
        filter: Option<&Filter>,
    ) -> Vec<Hit<'_>> {
        let want = k.saturating_add(skip);
        let depth = want.saturating_mul(HYBRID_DEPTH).max(50);
        let semantic = self.search(query, depth, 0, filter);
        let keywords = self.search_keywords(text, depth, filter);
        type Key<'a> = (&'a str, &'a str, (bool, usize));
        let mut fused: HashMap<Key<'_>, (f32, Hit<'_>)> = HashMap::new();
        for ranking in [&semantic, &keywords] {
            // A result (a parent, or a passage) counts once per ranking, at its best rank.
            let mut seen = std::collections::HashSet::new();
            let mut rank = 0.0;
            for hit in ranking.iter() {
                let key = (
                    hit.document.data_source_id.as_str(),
                    hit.document.id.as_str(),
                    hit.document.group(hit.passage),
                );
                if !seen.insert(key) {
                    continue;
                }
                rank += 1.0;
                let entry = fused.entry(key).or_insert((0.0, *hit));
                entry.0 += 1.0 / (RRF_K + rank);
            }
        }
        let mut hits: Vec<Hit<'_>> = fused
            .into_values()
            .map(|(score, hit)| Hit { score, ..hit })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| (&a.document.id, a.passage).cmp(&(&b.document.id, b.passage)))
        });
        hits.into_iter().skip(skip).take(k).collect()
    }

    /// The `k` passages with the best BM25 score for `text` (those with none left out).
    fn search_keywords(&self, text: &str, k: usize, filter: Option<&Filter>) -> Vec<Hit<'_>> {
        let query = self.lexical.query(text);
        if query.is_empty() {
            return Vec::new();
        }
        let mut hits = Vec::new();
        for entry in self.entries.iter().filter(|e| e.passes(filter)) {
            let document = &entry.document;
            let matrix = &self.vectors[entry.rows.start * self.dims..entry.rows.end * self.dims];
            let rows = matrix.chunks_exact(self.dims.max(1));
            for ((i, t), vector) in entry.terms.iter().enumerate().zip(rows) {
                let score = self.lexical.score(&query, t);
                if score > 0.0 {
                    hits.push(Hit {
                        score,
                        document,
                        passage: i,
                        vector,
                    });
                }
            }
        }
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| (&a.document.id, a.passage).cmp(&(&b.document.id, b.passage)))
        });
        hits.truncate(k);
        hits
    }
}

/// Higher score first; ties by document id, then passage, so results never depend on
/// the order documents were added in.
fn better(score: f32, document: &Document, passage: usize, than: &Hit<'_>) -> bool {
    match score.total_cmp(&than.score) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => (&document.id, passage) < (&than.document.id, than.passage),
    }
}

/// The similarity of two vectors for the graph, and for the scan ([`score_rows_kernel`]).
fn similarity_kernel() -> Similarity {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        return dot_fma_checked;
    }
    dot
}

#[cfg(target_arch = "x86_64")]
fn has_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
fn dot_fma_checked(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: handed out only where `has_fma` said the CPU has AVX2 and FMA.
    unsafe { dot_fma(a, b) }
}

/// Scores every row of a matrix against a query: `out[i]` = row i · query.
type ScoreRows = fn(&[f32], &[f32], &mut Vec<f32>);

/// The row scorer for this CPU: AVX2 and FMA where it has them (checked once per search),
/// else the portable loops, which the compiler vectorises for SSE2. Either way a row scores
/// exactly what [`similarity_kernel`] gives it, so a passage scores the same whether the
/// scan or the graph found it.
fn score_rows_kernel() -> ScoreRows {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        return score_rows_fma;
    }
    score_rows
}

#[cfg(target_arch = "x86_64")]
fn score_rows_fma(matrix: &[f32], query: &[f32], out: &mut Vec<f32>) {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn inner(matrix: &[f32], query: &[f32], out: &mut Vec<f32>) {
        out.clear();
        for row in matrix.chunks_exact(query.len().max(1)) {
            // SAFETY: this function runs only where AVX2 and FMA are (see below).
            out.push(unsafe { dot_fma(row, query) });
        }
    }
    // SAFETY: handed out only where `has_fma` said the CPU has AVX2 and FMA.
    unsafe { inner(matrix, query, out) }
}

#[inline(always)]
fn score_rows(matrix: &[f32], query: &[f32], out: &mut Vec<f32>) {
    out.clear();
    // (Four rows at a time, interleaved, measured slower here: the scan is bound by
    // memory, and the extra accumulators spill.)
    out.extend(
        matrix
            .chunks_exact(query.len().max(1))
            .map(|row| dot(row, query)),
    );
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums: the compiler keeps them in vector registers.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `dot` with AVX2 and FMA: four vector sums, so each step need not wait for the one
/// before (a graph search is a chain of single dot products, and that wait was its cost).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (loads): every load reads 8 floats at i + 8k with i + 32 <= n (or i + 8 <= n
    // below), within both slices.
    while i + 32 <= n {
        for (k, sum) in acc.iter_mut().enumerate() {
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * k)),
                    _mm256_loadu_ps(pb.add(i + 8 * k)),
                )
            };
            *sum = _mm256_fmadd_ps(x, y, *sum);
        }
        i += 32;
    }
    while i + 8 <= n {
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

fn encode_vector(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_vector(s: &str) -> Result<Vec<f32>, KnowledgeError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| KnowledgeError::Corrupt(format!("a vector is not base64: {e}")))?;
    if bytes.len() % 4 != 0 {
        return Err(KnowledgeError::Corrupt(
            "a vector's length is not a whole number of floats".into(),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn read_document(path: &Path) -> Result<Document, KnowledgeError> {
    let bytes = std::fs::read(path).map_err(|e| KnowledgeError::io(path, e))?;
    let stored: StoredDocument = serde_json::from_slice(&bytes)
        .map_err(|e| KnowledgeError::Corrupt(format!("not a stored document: {e}")))?;
    let passages = stored
        .passages
        .into_iter()
        .map(|p| {
            Ok(Passage {
                vector: decode_vector(&p.vector)?,
                text: p.text,
                parent: p.parent,
            })
        })
        .collect::<Result<Vec<_>, KnowledgeError>>()?;
    Ok(Document {
        data_source_id: stored.data_source_id,
        id: stored.id,
        from_bucket: stored.from_bucket,
        content_hash: stored.content_hash,
        metadata: stored.metadata,
        passages,
        parents: stored.parents,
        updated_at: stored.updated_at,
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), KnowledgeError> {
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| KnowledgeError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn doc(id: &str, year: i64, vectors: &[&[f32]]) -> Document {
        Document {
            data_source_id: "ds1".into(),
            id: id.into(),
            from_bucket: false,
            content_hash: id.into(),
            metadata: json!({"year": year}).as_object().unwrap().clone(),
            passages: vectors
                .iter()
                .enumerate()
                .map(|(i, v)| Passage {
                    text: format!("{id}#{i}"),
                    vector: unit(v),
                    parent: None,
                })
                .collect(),
            parents: Vec::new(),
            updated_at: 0,
        }
    }

    fn texts(hits: &[Hit<'_>]) -> Vec<String> {
        hits.iter()
            .map(|h| {
                h.document
                    .text_of(h.passage)
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn row_scores_match_one_dot_at_a_time() {
        for dims in [1, 7, 8, 13, 384] {
            let rows = 9;
            let matrix: Vec<f32> = (0..rows * dims).map(|i| (i % 17) as f32 - 8.0).collect();
            let query: Vec<f32> = (0..dims).map(|i| (i % 5) as f32 * 0.5).collect();
            let mut out = Vec::new();
            score_rows_kernel()(&matrix, &query, &mut out);
            let expected: Vec<f32> = matrix.chunks_exact(dims).map(|r| dot(r, &query)).collect();
            assert_eq!(out.len(), rows);
            for (a, b) in out.iter().zip(&expected) {
                assert!(
                    (a - b).abs() <= 1e-3 * b.abs().max(1.0),
                    "{dims}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn search_is_exact_filtered_paged_and_durable() {
        let dir = std::env::temp_dir().join(format!("basalt-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut index, skipped) = Index::open(&dir).unwrap();
        assert!(skipped.is_empty());
        index
            .put(doc("a", 2020, &[&[1.0, 0.0], &[0.6, 0.8]]))
            .unwrap();
        index
            .put(doc("b", 2024, &[&[0.9, 0.1], &[0.0, 1.0]]))
            .unwrap();
        let q = unit(&[1.0, 0.05]);
        assert_eq!(texts(&index.search(&q, 3, 0, None)), ["a#0", "b#0", "a#1"]);
        assert_eq!(texts(&index.search(&q, 2, 1, None)), ["b#0", "a#1"]);
        // The filter applies inside the search: two results though the best ones fail it.
        let recent =
            Filter::parse(&json!({"greaterThan": {"key": "year", "value": 2022}}), "f").unwrap();
        assert_eq!(
            texts(&index.search(&q, 2, 0, Some(&recent))),
            ["b#0", "b#1"]
        );

        // Reopened from its files: the same answers; a deleted document is gone.
        std::fs::write(dir.join("garbage.json"), b"{not json").unwrap();
        let (mut again, skipped) = Index::open(&dir).unwrap();
        assert_eq!(skipped.len(), 1);
        assert_eq!(texts(&again.search(&q, 3, 0, None)), ["a#0", "b#0", "a#1"]);
        assert!(again.delete("ds1", "a").unwrap());
        assert!(!again.delete("ds1", "a").unwrap());
        let (reopened, _) = Index::open(&dir).unwrap();
        assert_eq!(texts(&reopened.search(&q, 9, 0, None)), ["b#0", "b#1"]);
        assert_eq!(reopened.passage_count(), 2);
        // Hybrid: a keyword only one passage holds lifts it over a nearer vector.
        let mut words = reopened;
        let mut special = doc("c", 2020, &[&[0.0, 1.0]]);
        special.passages[0].text = "the zebra passage".into();
        words.put(special).unwrap();
        let q = unit(&[1.0, 0.0]);
        assert_eq!(texts(&words.search(&q, 1, 0, None)), ["b#0"]);
        assert_eq!(
            texts(&words.search_hybrid(&q, "zebra", 1, 0, None)),
            ["the zebra passage"]
        );

        // Children of one parent are one result, returned as the parent.
        let mut family = doc("p", 2020, &[&[1.0, 0.0], &[0.99, 0.1], &[0.0, 1.0]]);
        family.parents = vec!["parent one".into(), "parent two".into()];
        for (i, parent) in [0, 0, 1].into_iter().enumerate() {
            family.passages[i].parent = Some(parent);
        }
        words.put(family).unwrap();
        let found = texts(&words.search(&q, 3, 0, None));
        assert_eq!(found[0], "parent one");
        assert_eq!(
            found.iter().filter(|t| *t == "parent one").count(),
            1,
            "{found:?}"
        );
        let fused = texts(&words.search_hybrid(&q, "parent", 9, 0, None));
        assert_eq!(
            fused.iter().filter(|t| *t == "parent one").count(),
            1,
            "{fused:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Seeded unit vectors in 3 dimensions spread over the sphere.
    fn spread(n: usize, seed: u32) -> Vec<Vec<f32>> {
        (0..n)
            .map(|i| {
                let t = (i as f32 + seed as f32 * 0.37) * 2.399;
                let z = 1.0 - 2.0 * ((i * 7919 + seed as usize) % n) as f32 / n as f32;
                let r = (1.0 - z * z).max(0.0).sqrt();
                unit(&[r * t.cos(), r * t.sin(), z + 1e-3])
            })
            .collect()
    }

    fn grown(documents: usize) -> Index {
        let mut index = Index::default();
        index.set_approximate_from(100);
        for (d, vectors) in spread(documents * 4, 1).chunks(4).enumerate() {
            let refs: Vec<&[f32]> = vectors.iter().map(Vec::as_slice).collect();
            index.serve_unsaved(doc(&format!("d{d:04}"), 2000 + (d % 5) as i64, &refs));
        }
        index
    }

    #[test]
    fn the_graph_takes_over_when_large_and_agrees_with_exact_search() {
        let mut index = grown(200);
        assert!(!index.approximate());
        index.build_graph();
        assert!(index.approximate());
        let recent =
            Filter::parse(&json!({"greaterThan": {"key": "year", "value": 2000}}), "f").unwrap();
        let (mut found, mut total) = (0, 0);
        for q in spread(40, 9) {
            for filter in [None, Some(&recent)] {
                let exact = texts(&index.search_exact(&q, 10, 0, filter));
                let approximate = texts(&index.search(&q, 10, 0, filter));
                assert_eq!(approximate.len(), 10);
                found += approximate.iter().filter(|t| exact.contains(t)).count();
                total += 10;
            }
        }
        assert!(found as f64 >= 0.98 * total as f64, "{found} of {total}");
        // A filter that leaves few passages is answered by scanning them: exactly.
        let rare = Filter::parse(&json!({"equals": {"key": "year", "value": 2003}}), "f").unwrap();
        let q = unit(&[0.3, 0.4, 0.5]);
        let few = index.search(&q, 5, 0, Some(&rare));
        assert_eq!(
            texts(&few),
            texts(&index.search_exact(&q, 5, 0, Some(&rare)))
        );
    }

    #[test]
    fn the_graph_follows_inserts_and_deletes_and_goes_when_rows_are_renumbered() {
        let mut index = grown(200);
        index.build_graph();
        // A new document is found through the graph at once; a deleted one never again.
        let q = unit(&[0.1, -0.7, 0.2]);
        let mut new = doc("new", 2020, &[&q]);
        new.passages[0].text = "the new one".into();
        index.serve_unsaved(new);
        assert!(index.approximate());
        assert_eq!(texts(&index.search(&q, 1, 0, None)), ["the new one"]);
        index.forget(&("ds1".into(), "new".into()));
        assert_ne!(texts(&index.search(&q, 1, 0, None)), ["the new one"]);
        assert_eq!(index.search(&q, 10, 0, None).len(), 10);

        // A build whose rows were renumbered before it came back is thrown away.
        let mut other = grown(600);
        let build = other.graph_wanted().unwrap();
        assert!(other.graph_wanted().is_none(), "one build at a time");
        for d in 0..400 {
            other.forget(&("ds1".into(), format!("d{d:04}")));
        }
        assert!(!other.install_graph(build.run()));
        assert!(!other.approximate());
        assert_eq!(other.passage_count(), 800);
        // The survivors are all still found, exactly.
        let all = other.search(&q, 1000, 0, None);
        assert_eq!(all.len(), 800);
        assert!(all.iter().all(|h| h.document.id.as_str() >= "d0400"));
        other.build_graph();
        assert!(other.approximate());
        assert_eq!(
            texts(&other.search(&q, 3, 0, None)),
            texts(&other.search_exact(&q, 3, 0, None))
        );
    }
}
