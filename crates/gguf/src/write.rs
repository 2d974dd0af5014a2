//! Writing GGUF files: metadata and tensors laid out as the reader expects them (version 3,
//! 32-byte alignment). For tools and tests that make model files, such as the tiny
//! random-weight models the engine's fidelity tests build; nothing here runs when serving.

/// Metadata value types, as GGUF numbers them.
const U32: u32 = 4;
const I32: u32 = 5;
const F32: u32 = 6;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
/// GGUF's tensor type number for F32 data.
const TENSOR_F32: u32 = 0;
const ALIGNMENT: usize = 32;

/// A GGUF file being put together in memory: add metadata and tensors in the order they
/// should appear, then take the bytes.
#[derive(Debug, Default)]
pub struct Writer {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<Tensor>,
}

#[derive(Debug)]
struct Tensor {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend((s.len() as u64).to_le_bytes());
    buf.extend(s.as_bytes());
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(mut self, key: &str, ty: u32) -> Self {
        put_string(&mut self.kv, key);
        self.kv.extend(ty.to_le_bytes());
        self.n_kv += 1;
        self
    }

    pub fn string(self, key: &str, value: &str) -> Self {
        let mut w = self.key(key, STRING);
        put_string(&mut w.kv, value);
        w
    }

    pub fn u32(self, key: &str, value: u32) -> Self {
        let mut w = self.key(key, U32);
        w.kv.extend(value.to_le_bytes());
        w
    }

    pub fn f32(self, key: &str, value: f32) -> Self {
        let mut w = self.key(key, F32);
        w.kv.extend(value.to_le_bytes());
        w
    }

    pub fn bool(self, key: &str, value: bool) -> Self {
        let mut w = self.key(key, BOOL);
        w.kv.push(u8::from(value));
        w
    }

    fn array(self, key: &str, ty: u32, len: usize) -> Self {
        let mut w = self.key(key, ARRAY);
        w.kv.extend(ty.to_le_bytes());
        w.kv.extend((len as u64).to_le_bytes());
        w
    }

    pub fn strings<S: AsRef<str>>(self, key: &str, values: &[S]) -> Self {
        let mut w = self.array(key, STRING, values.len());
        for s in values {
            put_string(&mut w.kv, s.as_ref());
        }
        w
    }

    pub fn i32s(self, key: &str, values: &[i32]) -> Self {
        let mut w = self.array(key, I32, values.len());
        w.kv.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        w
    }

    pub fn f32s(self, key: &str, values: &[f32]) -> Self {
        let mut w = self.array(key, F32, values.len());
        w.kv.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        w
    }

    /// An F32 tensor; `dims` innermost first, as GGUF lists them.
    pub fn tensor_f32(self, name: &str, dims: &[u64], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, TENSOR_F32, data)
    }

    /// A tensor of any type number, its data already encoded.
    pub fn tensor(mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> Self {
        self.tensors.push(Tensor {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            data,
        });
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kv);
        let mut data = Vec::new();
        for t in &self.tensors {
            put_string(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend((data.len() as u64).to_le_bytes());
            data.extend(&t.data);
            data.resize(data.len().next_multiple_of(ALIGNMENT), 0);
        }
        out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
        out.extend(data);
        out
    }
}
