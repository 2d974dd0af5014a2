//! The approximate index: a hierarchical navigable small-world graph (Malkov and Yashunin,
//! 2016) over a matrix of unit vectors, searched by inner product.
//!
//! Node `i` is row `i` of the matrix the caller passes to every call; the graph keeps no
//! vectors of its own, so it costs about `M0` neighbour ids per row beside them. Rows are
//! only ever added: a row whose passage was deleted stays in the graph as a stepping stone
//! and is left out of results by the caller's `accept`, until the index compacts its matrix
//! and builds a new graph. The same rows in the same order give the same graph: a node's
//! level comes from a hash of its number, not from a random generator's state.
//!
//! This module must never read files or know what a passage or a filter is: it answers
//! "which accepted rows are nearest this query", nothing more.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Neighbours per node on the layers above the bottom one.
const M: usize = 16;
/// Neighbours per node on the bottom layer, where every node lives: twice `M`, as the
/// paper and hnswlib have it.
const M0: usize = 2 * M;
/// Candidates kept while linking a new node: more builds a better graph, more slowly.
const EF_CONSTRUCTION: usize = 128;
/// No level above this, whatever the hash says (a 2^-64 event at M = 16 anyway).
const MAX_LEVEL: usize = 12;

/// The inner product of two rows of the same length.
pub(crate) type Similarity = fn(&[f32], &[f32]) -> f32;

/// A row and its similarity to whatever is being searched for; orders by similarity, then
/// (for a total order) the lower row first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scored {
    pub sim: f32,
    pub row: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sim
            .total_cmp(&other.sim)
            .then_with(|| other.row.cmp(&self.row))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The graph.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    dims: usize,
    similarity: Similarity,
    /// The bottom layer's neighbour lists, `M0` slots per node: node `i`'s are
    /// `bottom[i * M0..][..bottom_len[i]]`. One allocation, read in order.
    bottom: Vec<u32>,
    bottom_len: Vec<u8>,
    /// The layers above: `upper[i][l - 1]` is node `i`'s list on layer `l`, for the few
    /// nodes that reach it.
    upper: Vec<Vec<Vec<u32>>>,
    /// Where every search starts: a node on the top layer.
    entry: Option<u32>,
    top: usize,
}

/// Which rows a search or an insertion has looked at: one bit per row.
struct Visited(Vec<u64>);

impl Visited {
    fn new(rows: usize) -> Self {
        Visited(vec![0; rows.div_ceil(64)])
    }

    fn clear(&mut self) {
        self.0.fill(0);
    }

    /// Marks `row`; false if it was marked already.
    fn insert(&mut self, row: u32) -> bool {
        let (word, bit) = (row as usize / 64, 1u64 << (row % 64));
        match self.0.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            Some(_) => false,
            None => {
                self.0.resize(word + 1, 0);
                self.0[word] |= bit;
                true
            }
        }
    }
}

/// A node's level: floor(-ln(u) / ln(M)) for u uniform in (0, 1), u from a hash of the row.
fn level_of(row: u32) -> usize {
    // splitmix64's finaliser: consecutive rows get unrelated bits.
    let mut z = u64::from(row).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    ((-u.ln() / (M as f64).ln()) as usize).min(MAX_LEVEL)
}

impl Graph {
    pub fn new(dims: usize, similarity: Similarity) -> Self {
        Graph {
            dims,
            similarity,
            bottom: Vec::new(),
            bottom_len: Vec::new(),
            upper: Vec::new(),
            entry: None,
            top: 0,
        }
    }

    /// Rows in the graph: rows `0..len()` of the matrix.
    pub fn len(&self) -> usize {
        self.bottom_len.len()
    }

    fn row<'v>(&self, vectors: &'v [f32], row: u32) -> &'v [f32] {
        let start = row as usize * self.dims;
        vectors.get(start..start + self.dims).unwrap_or(&[])
    }

    fn sim(&self, vectors: &[f32], query: &[f32], row: u32) -> f32 {
        (self.similarity)(query, self.row(vectors, row))
    }

    fn neighbours(&self, row: u32, layer: usize) -> &[u32] {
        let row = row as usize;
        if layer == 0 {
            let len = self.bottom_len.get(row).map_or(0, |&n| n as usize);
            self.bottom.get(row * M0..row * M0 + len).unwrap_or(&[])
        } else {
            self.upper
                .get(row)
                .and_then(|layers| layers.get(layer - 1))
                .map_or(&[], Vec::as_slice)
        }
    }

    fn set_neighbours(&mut self, row: u32, layer: usize, list: &[u32]) {
        let row = row as usize;
        if layer == 0 {
            let len = list.len().min(M0);
            if let Some(slots) = self.bottom.get_mut(row * M0..row * M0 + len) {
                slots.copy_from_slice(&list[..len]);
                self.bottom_len[row] = len as u8;
            }
        } else if let Some(slot) = self
            .upper
            .get_mut(row)
            .and_then(|layers| layers.get_mut(layer - 1))
        {
            slot.clear();
            slot.extend_from_slice(list);
        }
    }

    /// Adds the next row, `len()`, of `vectors` (which must hold it) to the graph.
    pub fn push(&mut self, vectors: &[f32]) {
        let row = self.len() as u32;
        let level = level_of(row);
        self.bottom.resize(self.bottom.len() + M0, 0);
        self.bottom_len.push(0);
        self.upper.push(vec![Vec::new(); level]);
        let Some(mut entry) = self.entry else {
            self.entry = Some(row);
            self.top = level;
            return;
        };
        let query = self.row(vectors, row);
        let mut entry_sim = self.sim(vectors, query, entry);
        for layer in (level + 1..=self.top).rev() {
            (entry, entry_sim) = self.descend(vectors, query, entry, entry_sim, layer);
        }
        let mut visited = Visited::new(self.len());
        let mut entries = vec![Scored {
            sim: entry_sim,
            row: entry,
        }];
        for layer in (0..=level.min(self.top)).rev() {
            visited.clear();
            let found = self.search_layer(
                vectors,
                query,
                &entries,
                EF_CONSTRUCTION,
                layer,
                &|_| true,
                &mut visited,
            );
            let chosen = self.diverse(vectors, &found, M);
            self.set_neighbours(row, layer, &chosen);
            let max = if layer == 0 { M0 } else { M };
            for &n in &chosen {
                self.link(vectors, n, row, layer, max);
            }
            entries = found;
        }
        if level > self.top {
            self.top = level;
            self.entry = Some(row);
        }
    }

    /// Adds `to` to `from`'s list on `layer`; a full list keeps the most diverse `max`.
    fn link(&mut self, vectors: &[f32], from: u32, to: u32, layer: usize, max: usize) {
        let mut list = self.neighbours(from, layer).to_vec();
        if list.len() < max {
            list.push(to);
        } else {
            let base = self.row(vectors, from);
            let mut candidates: Vec<Scored> = list
                .iter()
                .chain(std::iter::once(&to))
                .map(|&n| Scored {
                    sim: self.sim(vectors, base, n),
                    row: n,
                })
                .collect();
            candidates.sort_by(|a, b| b.cmp(a));
            list = self.diverse(vectors, &candidates, max);
        }
        self.set_neighbours(from, layer, &list);
    }

    /// The paper's neighbour heuristic: from candidates best first, keep one only if it is
    /// nearer the base than to every one kept already, so the links point in different
    /// directions and a search can leave a cluster.
    fn diverse(&self, vectors: &[f32], candidates: &[Scored], m: usize) -> Vec<u32> {
        let mut chosen: Vec<u32> = Vec::with_capacity(m);
        for c in candidates {
            if chosen.len() >= m {
                break;
            }
            let v = self.row(vectors, c.row);
            if chosen
                .iter()
                .all(|&kept| self.sim(vectors, v, kept) < c.sim)
            {
                chosen.push(c.row);
            }
        }
        chosen
    }

    /// Greedy steps on one layer: to the best neighbour while that improves.
    fn descend(
        &self,
        vectors: &[f32],
        query: &[f32],
        mut at: u32,
        mut at_sim: f32,
        layer: usize,
    ) -> (u32, f32) {
        loop {
            let mut moved = false;
            for &n in self.neighbours(at, layer) {
                let s = self.sim(vectors, query, n);
                if s > at_sim {
                    (at, at_sim, moved) = (n, s, true);
                }
            }
            if !moved {
                return (at, at_sim);
            }
        }
    }

    /// The best-first search of one layer from `entries`: up to `ef` accepted rows, best
    /// first. Rows `accept` refuses are walked through but never returned, so a filter
    /// applies inside the search.
    #[allow(clippy::too_many_arguments)]
    fn search_layer(
        &self,
        vectors: &[f32],
        query: &[f32],
        entries: &[Scored],
        ef: usize,
        layer: usize,
        accept: &dyn Fn(u32) -> bool,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        let mut candidates: BinaryHeap<Scored> = BinaryHeap::new();
        let mut results: BinaryHeap<Reverse<Scored>> = BinaryHeap::new();
        for &e in entries {
            if visited.insert(e.row) {
                candidates.push(e);
                if accept(e.row) {
                    results.push(Reverse(e));
                }
            }
        }
        while results.len() > ef {
            results.pop();
        }
        while let Some(c) = candidates.pop() {
            let worst = results.peek().map(|w| w.0.sim);
            if results.len() >= ef && worst.is_some_and(|w| c.sim < w) {
                break;
            }
            for &n in self.neighbours(c.row, layer) {
                if !visited.insert(n) {
                    continue;
                }
                let s = self.sim(vectors, query, n);
                let worst = results.peek().map(|w| w.0.sim);
                if results.len() < ef || worst.is_some_and(|w| s > w) {
                    let scored = Scored { sim: s, row: n };
                    candidates.push(scored);
                    if accept(n) {
                        results.push(Reverse(scored));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
        }
        let mut out: Vec<Scored> = results.into_iter().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out
    }

    /// Up to `ef` rows that `accept` lets through, nearest `query` first.
    pub fn search(
        &self,
        vectors: &[f32],
        query: &[f32],
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let Some(mut entry) = self.entry else {
            return Vec::new();
        };
        let mut entry_sim = self.sim(vectors, query, entry);
        for layer in (1..=self.top).rev() {
            (entry, entry_sim) = self.descend(vectors, query, entry, entry_sim, layer);
        }
        let mut visited = Visited::new(self.len());
        let start = [Scored {
            sim: entry_sim,
            row: entry,
        }];
        self.search_layer(vectors, query, &start, ef, 0, accept, &mut visited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// Seeded unit vectors in clusters, as embeddings of related texts come.
    fn vectors(rows: usize, dims: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dims).map(|_| next()).collect())
            .collect();
        let mut out = Vec::with_capacity(rows * dims);
        for r in 0..rows {
            let v: Vec<f32> = centres[r % 20].iter().map(|c| c + next() * 0.8).collect();
            let n = dot(&v, &v).sqrt();
            out.extend(v.iter().map(|x| x / n));
        }
        out
    }

    fn exact(
        vectors: &[f32],
        dims: usize,
        q: &[f32],
        k: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<u32> {
        let mut all: Vec<Scored> = vectors
            .chunks_exact(dims)
            .enumerate()
            .filter(|(i, _)| accept(*i as u32))
            .map(|(i, v)| Scored {
                sim: dot(q, v),
                row: i as u32,
            })
            .collect();
        all.sort_by(|a, b| b.cmp(a));
        all.iter().take(k).map(|s| s.row).collect()
    }

    #[test]
    fn finds_nearly_every_true_neighbour_filtered_or_not() {
        let (rows, dims) = (3000, 32);
        let data = vectors(rows, dims, 11);
        let mut graph = Graph::new(dims, dot);
        for _ in 0..rows {
            graph.push(&data);
        }
        assert_eq!(graph.len(), rows);
        let queries = vectors(50, dims, 99);
        let odd = |r: u32| r % 2 == 1;
        for accept in [&(|_| true) as &dyn Fn(u32) -> bool, &odd] {
            let mut found = 0;
            for q in queries.chunks_exact(dims) {
                let truth = exact(&data, dims, q, 10, accept);
                let got: Vec<u32> = graph
                    .search(&data, q, 100, accept)
                    .iter()
                    .take(10)
                    .map(|s| s.row)
                    .collect();
                assert!(got.iter().all(|&r| accept(r)));
                found += truth.iter().filter(|t| got.contains(t)).count();
            }
            let recall = found as f64 / (queries.len() / dims * 10) as f64;
            assert!(recall >= 0.97, "recall@10 {recall}");
        }
    }

    #[test]
    fn same_rows_same_graph_and_empty_graph_finds_nothing() {
        let data = vectors(200, 8, 3);
        let build = || {
            let mut g = Graph::new(8, dot);
            for _ in 0..200 {
                g.push(&data);
            }
            g
        };
        let (a, b) = (build(), build());
        assert_eq!(a.bottom, b.bottom);
        assert_eq!(a.upper, b.upper);
        assert!(Graph::new(8, dot)
            .search(&data, &data[..8], 10, &|_| true)
            .is_empty());
        // A query whose every row is refused gets nothing, and the search ends.
        assert!(a.search(&data, &data[..8], 10, &|_| false).is_empty());
    }
}
