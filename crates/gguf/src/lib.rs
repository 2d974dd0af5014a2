//! A defensive reader for GGUF model files.
//!
//! GGUF files come from users (`basalt models import`) and so are untrusted input. This reader
//! checks every length, count and offset against the bytes actually present before it
//! allocates or slices, so a truncated or hostile header is an error, never a panic, an
//! out-of-bounds read or a multi-gigabyte allocation.
//!
//! A file is opened one of two ways. [`GgufFile::open`] memory-maps it: only the header
//! pages are read, and tensor data is paged in by the OS when a model first touches it, which
//! suits inspecting and importing files. [`GgufFile::load_resident`] reads it into private
//! memory backed by huge pages, which suits serving (see there for why). This crate never
//! interprets tensor contents; the engine does.

#![deny(clippy::undocumented_unsafe_blocks)]

mod parse;
pub mod write;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use thiserror::Error;

pub use parse::parse_header;

#[derive(Debug, Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a GGUF file (magic bytes are {0:?})")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("GGUF file is truncated or corrupt: {0}")]
    Corrupt(String),
    #[error("tensor `{name}` has type {ty} which Basalt does not support")]
    UnsupportedTensorType { name: String, ty: u32 },
    #[error("metadata key `{0}` is missing")]
    MissingKey(String),
    #[error("metadata key `{key}` has the wrong type (expected {expected})")]
    WrongType { key: String, expected: &'static str },
}

/// Tensor element encodings that Basalt knows the layout of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    /// 4-bit non-linear: Q4_0's layout, the nibbles indexing a fixed table of 16 levels.
    IQ4NL,
}

impl TensorType {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            20 => Self::IQ4NL,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// Elements per block and bytes per block.
    pub fn block_layout(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q8_1 => (32, 36),
            Self::Q2K => (256, 84),
            Self::Q3K => (256, 110),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
            Self::Q8K => (256, 292),
            Self::IQ4NL => (32, 18),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q8_1 => "Q8_1",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::Q8K => "Q8_K",
            Self::IQ4NL => "IQ4_NL",
        }
    }
}

/// A metadata value. Arrays keep their element type so that a 262,144-entry token list is
/// one vector of strings, not a vector of boxed values.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Bools(Vec<bool>),
    Strings(Vec<String>),
    /// Arrays of arrays exist in the format but no model we load uses them; we skip their
    /// contents safely and remember only how many there were.
    Nested(usize),
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::Ints(v) => v.len(),
            Array::Floats(v) => v.len(),
            Array::Bools(v) => v.len(),
            Array::Strings(v) => v.len(),
            Array::Nested(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            Value::U64(v) => i64::try_from(v).ok(),
            _ => self.as_u64().map(|v| v as i64),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, innermost (contiguous) first, as GGUF stores them.
    pub dims: Vec<usize>,
    pub ty: TensorType,
    /// Byte offset of the data, relative to the start of the data section.
    pub offset: usize,
    pub size_bytes: usize,
}

impl TensorInfo {
    pub fn element_count(&self) -> usize {
        self.dims.iter().product()
    }
}

/// Everything in a GGUF file except the tensor data itself.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the tensor data section.
    pub data_offset: usize,
}

impl Header {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn string(&self, key: &str) -> Result<&str, GgufError> {
        match self.metadata.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(GgufError::WrongType {
                key: key.into(),
                expected: "string",
            }),
            None => Err(GgufError::MissingKey(key.into())),
        }
    }

    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self
            .metadata
            .get(key)
            .ok_or_else(|| GgufError::MissingKey(key.into()))?;
        v.as_u64().ok_or_else(|| GgufError::WrongType {
            key: key.into(),
            expected: "integer",
        })
    }

    pub fn usize(&self, key: &str) -> Result<usize, GgufError> {
        let v = self.u64(key)?;
        usize::try_from(v).map_err(|_| GgufError::WrongType {
            key: key.into(),
            expected: "usize",
        })
    }

    pub fn f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self
            .metadata
            .get(key)
            .ok_or_else(|| GgufError::MissingKey(key.into()))?;
        v.as_f64().ok_or_else(|| GgufError::WrongType {
            key: key.into(),
            expected: "number",
        })
    }

    pub fn array(&self, key: &str) -> Result<&Array, GgufError> {
        match self.metadata.get(key) {
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(GgufError::WrongType {
                key: key.into(),
                expected: "array",
            }),
            None => Err(GgufError::MissingKey(key.into())),
        }
    }

    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.string("general.architecture")
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// An open, memory-mapped GGUF file with a validated header.
pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    header: Header,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only. Basalt never writes model files while serving
        // them; a file truncated underneath a running server is outside what we defend
        // against (as for any mmap-based model server).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let header = parse_header(&map)?;
        Ok(Self {
            path: path.to_path_buf(),
            map: Arc::new(map),
            header,
        })
    }

    /// Reads the whole file into anonymous memory that the kernel is asked to back with
    /// transparent huge pages, where `open` maps the page cache.
    ///
    /// Every generated token streams every weight once. From the page cache, that stream
    /// crosses a 4 KiB page every 4 KiB: one TLB miss each (a two-level page walk on a
    /// virtual machine), and the hardware prefetcher stops at each boundary. In 2 MiB pages
    /// the stream crosses 512 times fewer boundaries. The cost is that the weights are read
    /// up front and are private to this process rather than shared through the page cache;
    /// resident memory is the same, as serving touches every page anyway. The file is read,
    /// not mapped and copied, so its pages never count twice in the resident set.
    pub fn load_resident(path: &Path) -> Result<Self, GgufError> {
        use std::io::Read;
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let len = usize::try_from(file.metadata().map_err(io)?.len())
            .map_err(|_| GgufError::Corrupt("the file is larger than the address space".into()))?;
        if len == 0 {
            // An empty anonymous mapping is an error; an empty file is simply not GGUF.
            return Err(GgufError::Corrupt("the file is empty".into()));
        }
        let mut memory = memmap2::MmapMut::map_anon(len).map_err(io)?;
        // Advice only: where transparent huge pages are off, the weights sit in ordinary
        // pages and everything still works.
        #[cfg(target_os = "linux")]
        let _ = memory.advise(memmap2::Advice::HugePage);
        // The magic first, so a file that is not GGUF at all fails before it is read whole.
        let magic_len = len.min(4);
        file.read_exact(&mut memory[..magic_len]).map_err(io)?;
        if memory[..magic_len] != *b"GGUF" {
            let mut magic = [0u8; 4];
            magic[..magic_len].copy_from_slice(&memory[..magic_len]);
            return Err(GgufError::BadMagic(magic));
        }
        file.read_exact(&mut memory[magic_len..]).map_err(io)?;
        let map = memory.make_read_only().map_err(io)?;
        let header = parse_header(&map)?;
        Ok(Self {
            path: path.to_path_buf(),
            map: Arc::new(map),
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The bytes of one tensor (bounds were checked when the header was parsed).
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8], GgufError> {
        let start = self.header.data_offset + info.offset;
        self.map.get(start..start + info.size_bytes).ok_or_else(|| {
            GgufError::Corrupt(format!("tensor `{}` lies outside the file", info.name))
        })
    }

    /// A tensor's bytes as an owned handle that keeps the mapping alive, for model structs
    /// that outlive this `GgufFile`.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<TensorBytes, GgufError> {
        self.tensor_data(info)?;
        let start = self.header.data_offset + info.offset;
        Ok(TensorBytes {
            map: Arc::clone(&self.map),
            start,
            len: info.size_bytes,
        })
    }

    pub fn file_size(&self) -> usize {
        self.map.len()
    }
}

/// The bytes of one tensor inside a shared memory map.
#[derive(Clone)]
pub struct TensorBytes {
    map: Arc<Mmap>,
    start: usize,
    len: usize,
}

impl TensorBytes {
    /// `len` bytes from `offset` within this tensor's: one part of a fused tensor (a
    /// query-key-value projection stored as one matrix). `None` when out of range.
    pub fn slice(&self, offset: usize, len: usize) -> Option<TensorBytes> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then(|| TensorBytes {
            map: Arc::clone(&self.map),
            start: self.start + offset,
            len,
        })
    }
}

impl std::ops::Deref for TensorBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // In bounds: checked by `tensor_data` when the handle was made.
        &self.map[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for TensorBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorBytes({} bytes at {})", self.len, self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_and_mapped_files_read_the_same_tensors() {
        let bytes = parse::tests::sample();
        let path = std::env::temp_dir().join(format!("basalt-gguf-{}.gguf", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let mapped = GgufFile::open(&path).unwrap();
        let resident = GgufFile::load_resident(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(resident.file_size(), bytes.len());
        for info in &mapped.header().tensors {
            let theirs = resident.header().tensor(&info.name).unwrap();
            assert_eq!(
                &*mapped.tensor_bytes(info).unwrap(),
                &*resident.tensor_bytes(theirs).unwrap()
            );
        }
    }

    #[test]
    fn a_file_that_is_not_gguf_is_refused_by_its_magic() {
        let path = std::env::temp_dir().join(format!("basalt-gguf-junk-{}", std::process::id()));
        std::fs::write(&path, b"PK\x03\x04 a zip archive, not a model").unwrap();
        let result = GgufFile::load_resident(&path);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(result, Err(GgufError::BadMagic(m)) if &m == b"PK\x03\x04"));
    }

    #[test]
    fn an_empty_or_missing_file_is_an_error() {
        let path = std::env::temp_dir().join(format!("basalt-gguf-empty-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            GgufFile::load_resident(&path),
            Err(GgufError::Corrupt(_))
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            GgufFile::load_resident(&path),
            Err(GgufError::Io { .. })
        ));
    }
}
