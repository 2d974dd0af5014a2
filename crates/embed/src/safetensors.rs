//! Reading F32 tensors out of a `.safetensors` file, defensively: the header length, the
//! JSON, every tensor's dtype, shape and byte range are checked before any data is read.

use std::collections::HashMap;
use std::path::Path;

use crate::EmbedError;

/// Header sizes above this are not real model files.
const MAX_HEADER: u64 = 100 << 20;

#[derive(Debug)]
struct Entry {
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// A safetensors file, memory-mapped, with its F32 tensors indexed by name.
pub struct SafeTensors {
    map: memmap2::Mmap,
    data_start: usize,
    entries: HashMap<String, Entry>,
}

/// A header field that is a list of non-negative integers (empty if it is not).
fn numbers(entry: &serde_json::Value, key: &str) -> Vec<usize> {
    entry
        .get(key)
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64().map(|x| x as usize))
                .collect()
        })
        .unwrap_or_default()
}

fn bad(path: &Path, why: impl std::fmt::Display) -> EmbedError {
    EmbedError::Model(format!("{}: {why}", path.display()))
}

impl SafeTensors {
    pub fn open(path: &Path) -> Result<Self, EmbedError> {
        let file = std::fs::File::open(path).map_err(|e| bad(path, e))?;
        // SAFETY: the map is read-only and the file is not modified while Basalt runs
        // (model directories are written once, by `fetch-models` or `models import`).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(path, e))?;
        let len_bytes: [u8; 8] = map
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad(path, "shorter than a safetensors header"))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER || header_len + 8 > map.len() as u64 {
            return Err(bad(path, format!("impossible header length {header_len}")));
        }
        let data_start = 8 + header_len as usize;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&map[8..data_start]).map_err(|e| bad(path, e))?;
        let data_len = map.len() - data_start;
        let mut entries = HashMap::new();
        for (name, v) in header {
            if name == "__metadata__" {
                continue;
            }
            let dtype = v.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
            let shape = numbers(&v, "shape");
            let offsets = numbers(&v, "data_offsets");
            let [start, end] = offsets[..] else {
                return Err(bad(path, format!("tensor `{name}` has no data offsets")));
            };
            if start > end || end > data_len {
                return Err(bad(path, format!("tensor `{name}` lies outside the file")));
            }
            if dtype != "F32" {
                continue; // position ids and the like: not weights we read
            }
            let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if count.and_then(|c| c.checked_mul(4)) != Some(end - start) {
                return Err(bad(
                    path,
                    format!("tensor `{name}`: shape and size disagree"),
                ));
            }
            entries.insert(name, Entry { shape, start, end });
        }
        Ok(Self {
            map,
            data_start,
            entries,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// A tensor of exactly `shape`, copied out as f32 (little-endian on disk).
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| EmbedError::Model(format!("missing tensor `{name}`")))?;
        if e.shape != shape {
            return Err(EmbedError::Model(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                e.shape
            )));
        }
        let bytes = &self.map[self.data_start + e.start..self.data_start + e.end];
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}
