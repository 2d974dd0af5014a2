//! Header parsing over a byte slice. Every read is bounds-checked; every count is checked
//! against the bytes that remain before anything is allocated for it.

use std::collections::BTreeMap;

use crate::{Array, GgufError, Header, TensorInfo, TensorType, Value};

const MAGIC: [u8; 4] = *b"GGUF";
/// No real model has tensors with more dimensions than this.
const MAX_DIMS: u32 = 4;
/// Keys and tensor names longer than this are certainly hostile.
const MAX_NAME_LEN: u64 = 64 * 1024;

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn corrupt(what: impl Into<String>) -> GgufError {
    GgufError::Corrupt(what.into())
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(corrupt(format!(
                "needed {n} bytes at offset {}, file ends first",
                self.pos
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count that must be backed by at least `min_elem_size` bytes per element.
    fn count(&mut self, min_elem_size: usize, what: &str) -> Result<usize, GgufError> {
        let n = self.u64()?;
        let n =
            usize::try_from(n).map_err(|_| corrupt(format!("{what} count {n} is too large")))?;
        if n.saturating_mul(min_elem_size.max(1)) > self.remaining() {
            return Err(corrupt(format!(
                "{what} count {n} needs more bytes than the file has left ({})",
                self.remaining()
            )));
        }
        Ok(n)
    }

    fn string(&mut self, max_len: u64) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > max_len {
            return Err(corrupt(format!(
                "string of {len} bytes at offset {}",
                self.pos
            )));
        }
        let bytes = self.take(usize::try_from(len).map_err(|_| corrupt("string length"))?)?;
        // Token lists contain invalid UTF-8 in some real models (partial byte tokens); keep
        // them lossily rather than refusing the file.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Sizes of the scalar metadata types, indexed by their GGUF type code; strings (8), arrays
/// (9) are variable.
fn scalar_size(ty: u32) -> Option<usize> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

fn read_scalar(c: &mut Cursor<'_>, ty: u32) -> Result<Value, GgufError> {
    Ok(match ty {
        0 => Value::U8(c.u8()?),
        1 => Value::I8(c.u8()? as i8),
        2 => Value::U16(c.u16()?),
        3 => Value::I16(c.u16()? as i16),
        4 => Value::U32(c.u32()?),
        5 => Value::I32(c.u32()? as i32),
        6 => Value::F32(f32::from_bits(c.u32()?)),
        7 => Value::Bool(c.u8()? != 0),
        10 => Value::U64(c.u64()?),
        11 => Value::I64(c.u64()? as i64),
        12 => Value::F64(f64::from_bits(c.u64()?)),
        other => return Err(corrupt(format!("unknown metadata type {other}"))),
    })
}

fn read_array(c: &mut Cursor<'_>, depth: u32) -> Result<Array, GgufError> {
    if depth > 2 {
        return Err(corrupt("metadata arrays nested too deeply"));
    }
    let elem_ty = c.u32()?;
    match elem_ty {
        8 => {
            // Each string costs at least its 8-byte length prefix.
            let n = c.count(8, "string array")?;
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(c.string(u64::MAX)?);
            }
            Ok(Array::Strings(out))
        }
        9 => {
            let n = c.count(12, "nested array")?;
            for _ in 0..n {
                read_array(c, depth + 1)?;
            }
            Ok(Array::Nested(n))
        }
        ty => {
            let size =
                scalar_size(ty).ok_or_else(|| corrupt(format!("unknown array type {ty}")))?;
            let n = c.count(size, "array")?;
            match ty {
                6 | 12 => {
                    let mut out = Vec::with_capacity(n);
                    for _ in 0..n {
                        out.push(read_scalar(c, ty)?.as_f64().unwrap_or(0.0) as f32);
                    }
                    Ok(Array::Floats(out))
                }
                7 => {
                    let mut out = Vec::with_capacity(n);
                    for _ in 0..n {
                        out.push(c.u8()? != 0);
                    }
                    Ok(Array::Bools(out))
                }
                _ => {
                    let mut out = Vec::with_capacity(n);
                    for _ in 0..n {
                        out.push(read_scalar(c, ty)?.as_i64().unwrap_or(0));
                    }
                    Ok(Array::Ints(out))
                }
            }
        }
    }
}

fn read_value(c: &mut Cursor<'_>, ty: u32) -> Result<Value, GgufError> {
    match ty {
        8 => Ok(Value::String(c.string(u64::MAX)?)),
        9 => Ok(Value::Array(read_array(c, 0)?)),
        _ => read_scalar(c, ty),
    }
}

/// Parses and validates a GGUF header: metadata, tensor directory, and that every tensor's
/// data lies inside `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic: [u8; 4] = c.array().map_err(|_| GgufError::BadMagic([0; 4]))?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = c.u32()?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion(version));
    }
    // A tensor entry is at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset) bytes; a
    // metadata entry at least 8 + 4 + 1.
    let n_tensors = c.count(24, "tensor")?;
    let n_kv = c.count(13, "metadata")?;

    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string(MAX_NAME_LEN)?;
        let ty = c.u32()?;
        let value = read_value(&mut c, ty)?;
        metadata.insert(key, value);
    }

    let mut tensors = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string(MAX_NAME_LEN)?;
        let n_dims = c.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(corrupt(format!("tensor `{name}` has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = c.u64()?;
            let d = usize::try_from(d)
                .map_err(|_| corrupt(format!("tensor `{name}` dimension {d}")))?;
            dims.push(d);
        }
        let raw_ty = c.u32()?;
        let ty = TensorType::from_u32(raw_ty).ok_or_else(|| GgufError::UnsupportedTensorType {
            name: name.clone(),
            ty: raw_ty,
        })?;
        let offset = c.u64()?;
        let offset =
            usize::try_from(offset).map_err(|_| corrupt(format!("tensor `{name}` offset")))?;
        let elements = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| corrupt(format!("tensor `{name}` has an impossible element count")))?;
        let (block_elems, block_bytes) = ty.block_layout();
        if dims[0] % block_elems != 0 {
            return Err(corrupt(format!(
                "tensor `{name}` row length {} is not a multiple of the {} block size {block_elems}",
                dims[0],
                ty.name()
            )));
        }
        let size_bytes = (elements / block_elems)
            .checked_mul(block_bytes)
            .ok_or_else(|| corrupt(format!("tensor `{name}` is impossibly large")))?;
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            size_bytes,
        });
    }

    let alignment = match metadata.get("general.alignment") {
        Some(v) => v
            .as_u64()
            .filter(|a| a.is_power_of_two() && *a <= 1 << 20)
            .ok_or_else(|| {
                corrupt("general.alignment must be a power of two no larger than 1 MiB")
            })? as usize,
        None => 32,
    };
    let data_offset = c.pos.div_ceil(alignment) * alignment;
    let data_len = bytes.len().saturating_sub(data_offset);
    for t in &tensors {
        let end = t.offset.checked_add(t.size_bytes);
        if t.offset % alignment != 0 || end.is_none_or(|e| e > data_len) {
            return Err(corrupt(format!(
                "tensor `{}` ({} bytes at data offset {}) lies outside the file's {} data bytes",
                t.name, t.size_bytes, t.offset, data_len
            )));
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        data_offset,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::write::Writer;

    pub(crate) fn sample() -> Vec<u8> {
        Writer::new()
            .string("general.architecture", "llama")
            .u32("llama.block_count", 2)
            .strings("tokenizer.ggml.tokens", &["a", "b", "ab"])
            .tensor_f32("w", &[4, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
            .tensor_f32("v", &[3], &[9.0, 10.0, 11.0])
            .to_bytes()
    }

    #[test]
    fn parses_a_valid_file() {
        let bytes = sample();
        let h = parse_header(&bytes).unwrap();
        assert_eq!(h.architecture().unwrap(), "llama");
        assert_eq!(h.u64("llama.block_count").unwrap(), 2);
        assert_eq!(h.array("tokenizer.ggml.tokens").unwrap().len(), 3);
        let w = h.tensor("w").unwrap();
        assert_eq!(w.dims, vec![4, 2]);
        assert_eq!(w.size_bytes, 32);
        let v = h.tensor("v").unwrap();
        let start = h.data_offset + v.offset;
        assert_eq!(&bytes[start..start + 4], &9.0f32.to_le_bytes());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        for len in 0..bytes.len() - 1 {
            // Truncation inside the trailing data padding is legitimately still valid only
            // if all tensor data remains; anything else must fail cleanly.
            let _ = parse_header(&bytes[..len]);
        }
        assert!(parse_header(&bytes[..bytes.len() - 24]).is_err());
        assert!(parse_header(&bytes[..10]).is_err());
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        let mut bytes = sample();
        // Tensor count of 2^60: must be refused before any allocation.
        bytes[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(parse_header(&bytes), Err(GgufError::Corrupt(_))));

        // A string array claiming 2^61 entries.
        let mut b = Writer::new().strings("x", &["a"]).to_bytes();
        let pos = 24 + 8 + 1 + 4 + 4; // header + key len + key + value type + elem type
        b[pos..pos + 8].copy_from_slice(&(1u64 << 61).to_le_bytes());
        assert!(matches!(parse_header(&b), Err(GgufError::Corrupt(_))));

        // A key whose length is u64::MAX.
        let mut b = Writer::new().u32("k", 1).to_bytes();
        b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse_header(&b), Err(GgufError::Corrupt(_))));
    }

    #[test]
    fn tensor_outside_the_file_is_refused() {
        let mut bytes = Writer::new().tensor_f32("w", &[1 << 20], &[1.0]).to_bytes();
        // The directory says 2^20 floats but the data holds one.
        let r = parse_header(&bytes);
        assert!(matches!(r, Err(GgufError::Corrupt(_))), "{r:?}");
        // Dimensions whose product overflows.
        let dims_pos = 24 + 8 + 1 + 4;
        bytes[dims_pos..dims_pos + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_header(&bytes).is_err());
    }

    #[test]
    fn wrong_magic_and_version() {
        assert!(matches!(
            parse_header(b"GGML\x03\0\0\0"),
            Err(GgufError::BadMagic(_))
        ));
        let mut bytes = sample();
        bytes[4..8].copy_from_slice(&7u32.to_le_bytes());
        assert!(matches!(
            parse_header(&bytes),
            Err(GgufError::UnsupportedVersion(7))
        ));
    }

    #[test]
    fn unknown_tensor_type_is_named() {
        let b = Writer::new().tensor("w", &[1], 99, 1f32.to_le_bytes().to_vec());
        let r = parse_header(&b.to_bytes());
        assert!(
            matches!(r, Err(GgufError::UnsupportedTensorType { ty: 99, .. })),
            "{r:?}"
        );
    }

    /// Mutated valid files, in bulk: every one parses or is refused, never a panic, and a
    /// header that parses describes only tensors that lie inside the file.
    #[test]
    fn mutated_files_parse_or_are_refused() {
        let seed = Writer::new()
            .string("general.architecture", "llama")
            .u32("llama.block_count", 2)
            .u32("llama.context_length", 2048)
            .strings("tokenizer.ggml.tokens", &["a", "b", "ab", "<s>"])
            .tensor_f32("w", &[4, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
            .tensor_f32("v", &[3], &[9.0, 10.0, 11.0])
            .to_bytes();
        let budget = basalt_fuzz::Budget::new(20_000, 10);
        let ran = budget.run(0x5EED_0004, |_, rng| {
            let bytes = basalt_fuzz::mutate_bytes(&seed, rng);
            if let Ok(h) = parse_header(&bytes) {
                for t in &h.tensors {
                    let end = h.data_offset + t.offset + t.size_bytes;
                    assert!(
                        end <= bytes.len(),
                        "tensor `{}` ends at {end} of {}",
                        t.name,
                        bytes.len()
                    );
                }
            }
        });
        assert!(ran > 100);
    }
}
