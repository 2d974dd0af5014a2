//! PyTorch checkpoints (`torch.save`'s zip format) read without Python: the zip's central
//! directory, the pickle that describes the state dict (only the opcodes `torch.save`
//! emits for tensors and dicts; anything else is an error, never code execution), and the
//! raw little-endian storages the tensors view.

use std::collections::HashMap;
use std::path::Path;

use crate::ImageError;

/// A float32 tensor copied out of a checkpoint, contiguous, row-major.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn bad(why: impl Into<String>) -> ImageError {
    ImageError::Model(format!("checkpoint: {}", why.into()))
}

/// Stored (uncompressed) members of a zip archive, by name: (offset, length).
fn zip_members(bytes: &[u8]) -> Result<HashMap<String, (usize, usize)>, ImageError> {
    let u16_at = |i: usize| -> Result<usize, ImageError> {
        let s = bytes.get(i..i + 2).ok_or_else(|| bad("truncated zip"))?;
        Ok(u16::from_le_bytes([s[0], s[1]]) as usize)
    };
    let u32_at = |i: usize| -> Result<usize, ImageError> {
        let s = bytes.get(i..i + 4).ok_or_else(|| bad("truncated zip"))?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    // The end-of-central-directory record is in the last 64 KiB + 22 bytes.
    let search_from = bytes.len().saturating_sub(65_557);
    let eocd = (search_from..bytes.len().saturating_sub(21))
        .rev()
        .find(|&i| bytes[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(|| bad("not a zip file"))?;
    let entries = u16_at(eocd + 10)?;
    let mut at = u32_at(eocd + 16)?;
    let mut out = HashMap::new();
    for _ in 0..entries {
        if bytes.get(at..at + 4) != Some(&[0x50, 0x4b, 0x01, 0x02]) {
            return Err(bad("bad central directory"));
        }
        let method = u16_at(at + 10)?;
        let size = u32_at(at + 20)?;
        let name_len = u16_at(at + 28)?;
        let extra_len = u16_at(at + 30)?;
        let comment_len = u16_at(at + 32)?;
        let local = u32_at(at + 42)?;
        let name = bytes
            .get(at + 46..at + 46 + name_len)
            .ok_or_else(|| bad("truncated name"))?;
        let name = String::from_utf8_lossy(name).into_owned();
        if method != 0 {
            return Err(bad(format!(
                "member `{name}` is compressed (torch.save stores)"
            )));
        }
        if bytes.get(local..local + 4) != Some(&[0x50, 0x4b, 0x03, 0x04]) {
            return Err(bad("bad local header"));
        }
        let start = local + 30 + u16_at(local + 26)? + u16_at(local + 28)?;
        if start.checked_add(size).is_none_or(|end| end > bytes.len()) {
            return Err(bad(format!("member `{name}` lies outside the file")));
        }
        out.insert(name, (start, size));
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Val {
    None,
    /// Booleans and floats appear (`requires_grad`, hyper-parameters) but are never needed.
    Bool,
    Int(i64),
    Float,
    Str(String),
    Tuple(Vec<Val>),
    List(Vec<Val>),
    Dict(Vec<(Val, Val)>),
    Global(String),
    /// A persistent storage reference: its key in `data/`, and whether it holds float32.
    Storage(String, bool),
    /// (storage key, element offset, shape, strides); float32 tensors only.
    TensorRef(String, usize, Vec<usize>, Vec<usize>),
    Mark,
    Opaque,
}

fn as_usizes(v: &Val) -> Result<Vec<usize>, ImageError> {
    match v {
        Val::Tuple(items) | Val::List(items) => items
            .iter()
            .map(|i| match i {
                Val::Int(n) if *n >= 0 => Ok(*n as usize),
                _ => Err(bad("expected a tuple of sizes")),
            })
            .collect(),
        _ => Err(bad("expected a tuple of sizes")),
    }
}

/// Runs the pickle of a torch zip checkpoint, far enough to know its tensors.
fn unpickle(p: &[u8]) -> Result<Val, ImageError> {
    let mut stack: Vec<Val> = Vec::new();
    let mut memo: HashMap<usize, Val> = HashMap::new();
    let mut i = 0;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], ImageError> {
        let s = p.get(*i..*i + n).ok_or_else(|| bad("truncated pickle"))?;
        *i += n;
        Ok(s)
    };
    let pop = |stack: &mut Vec<Val>| stack.pop().ok_or_else(|| bad("pickle stack underflow"));
    let pop_mark = |stack: &mut Vec<Val>| -> Result<Vec<Val>, ImageError> {
        let at = stack
            .iter()
            .rposition(|v| matches!(v, Val::Mark))
            .ok_or_else(|| bad("no mark"))?;
        let items = stack.split_off(at + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        let op = *p.get(i).ok_or_else(|| bad("pickle ends without STOP"))?;
        i += 1;
        match op {
            0x80 => {
                take(&mut i, 1)?;
            }
            b'}' => stack.push(Val::Dict(Vec::new())),
            b']' => stack.push(Val::List(Vec::new())),
            b')' => stack.push(Val::Tuple(Vec::new())),
            b'(' => stack.push(Val::Mark),
            b'N' => stack.push(Val::None),
            0x88 => stack.push(Val::Bool),
            0x89 => stack.push(Val::Bool),
            b'q' => {
                let k = take(&mut i, 1)?[0] as usize;
                memo.insert(k, stack.last().cloned().ok_or_else(|| bad("empty stack"))?);
            }
            b'r' => {
                let b = take(&mut i, 4)?;
                let k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                memo.insert(k, stack.last().cloned().ok_or_else(|| bad("empty stack"))?);
            }
            b'h' => {
                let k = take(&mut i, 1)?[0] as usize;
                stack.push(memo.get(&k).cloned().ok_or_else(|| bad("bad memo"))?);
            }
            b'j' => {
                let b = take(&mut i, 4)?;
                let k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                stack.push(memo.get(&k).cloned().ok_or_else(|| bad("bad memo"))?);
            }
            b'X' => {
                let b = take(&mut i, 4)?;
                let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                stack.push(Val::Str(
                    String::from_utf8_lossy(take(&mut i, n)?).into_owned(),
                ));
            }
            0x8c | b'U' => {
                let n = take(&mut i, 1)?[0] as usize;
                stack.push(Val::Str(
                    String::from_utf8_lossy(take(&mut i, n)?).into_owned(),
                ));
            }
            b'c' => {
                let line = |i: &mut usize| -> Result<String, ImageError> {
                    let end = p[*i..]
                        .iter()
                        .position(|&c| c == b'\n')
                        .ok_or_else(|| bad("bad GLOBAL"))?;
                    let s = String::from_utf8_lossy(&p[*i..*i + end]).into_owned();
                    *i += end + 1;
                    Ok(s)
                };
                let module = line(&mut i)?;
                let name = line(&mut i)?;
                stack.push(Val::Global(format!("{module}.{name}")));
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Val::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(bad("pickle stack underflow"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Val::Tuple(items));
            }
            b'K' => stack.push(Val::Int(take(&mut i, 1)?[0] as i64)),
            b'M' => {
                let b = take(&mut i, 2)?;
                stack.push(Val::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
            }
            b'J' => {
                let b = take(&mut i, 4)?;
                stack.push(Val::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64));
            }
            0x8a => {
                let n = take(&mut i, 1)?[0] as usize;
                let b = take(&mut i, n)?;
                if n > 8 {
                    return Err(bad("integer too large"));
                }
                let mut v: i64 = 0;
                for (k, byte) in b.iter().enumerate() {
                    v |= (*byte as i64) << (8 * k);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Val::Int(v));
            }
            b'G' => {
                take(&mut i, 8)?;
                stack.push(Val::Float);
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                let Val::Tuple(parts) = pid else {
                    return Err(bad("bad persistent id"));
                };
                let float =
                    matches!(parts.get(1), Some(Val::Global(g)) if g == "torch.FloatStorage");
                match parts.get(2) {
                    Some(Val::Str(key)) => stack.push(Val::Storage(key.clone(), float)),
                    _ => return Err(bad("bad storage reference")),
                }
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                let Val::Tuple(args) = args else {
                    return Err(bad("REDUCE without an argument tuple"));
                };
                let made = match callable {
                    Val::Global(g) if g == "collections.OrderedDict" => Val::Dict(Vec::new()),
                    Val::Global(g) if g == "torch._utils._rebuild_tensor_v2" => {
                        match (args.first(), args.get(1), args.get(2), args.get(3)) {
                            (
                                Some(Val::Storage(k, true)),
                                Some(Val::Int(off)),
                                Some(size),
                                Some(stride),
                            ) => Val::TensorRef(
                                k.clone(),
                                *off as usize,
                                as_usizes(size)?,
                                as_usizes(stride)?,
                            ),
                            // Integer buffers (BatchNorm's step counter): not weights.
                            (Some(Val::Storage(_, false)), ..) => Val::Opaque,
                            _ => return Err(bad("bad tensor arguments")),
                        }
                    }
                    _ => Val::Opaque,
                };
                stack.push(made);
            }
            0x81 => {
                pop(&mut stack)?;
                pop(&mut stack)?;
                stack.push(Val::Opaque);
            }
            b'b' => {
                pop(&mut stack)?; // state for the object below: not needed
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                if let Some(Val::Dict(d)) = stack.last_mut() {
                    d.push((k, v));
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                if let Some(Val::Dict(d)) = stack.last_mut() {
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.push((k, v));
                    }
                }
            }
            b'a' => {
                let v = pop(&mut stack)?;
                if let Some(Val::List(l)) = stack.last_mut() {
                    l.push(v);
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                if let Some(Val::List(l)) = stack.last_mut() {
                    l.extend(items);
                }
            }
            b'.' => return stack.pop().ok_or_else(|| bad("empty pickle")),
            other => return Err(bad(format!("unsupported pickle opcode 0x{other:02x}"))),
        }
    }
}

/// The float tensors of the state dict stored under `key` in a torch zip checkpoint.
pub fn load_state_dict(path: &Path, key: &str) -> Result<HashMap<String, Tensor>, ImageError> {
    let file = std::fs::File::open(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    // SAFETY: read-only map of a model file nobody writes while Basalt runs.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
    let members = zip_members(&bytes)?;
    let (pkl_name, &(start, len)) = members
        .iter()
        .find(|(n, _)| n.ends_with("/data.pkl"))
        .ok_or_else(|| bad("no data.pkl"))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let root = unpickle(&bytes[start..start + len])?;
    let Val::Dict(top) = root else {
        return Err(bad("the checkpoint is not a dict"));
    };
    let state = top
        .into_iter()
        .find(|(k, _)| matches!(k, Val::Str(s) if s == key))
        .map(|(_, v)| v)
        .ok_or_else(|| bad(format!("no `{key}` in the checkpoint")))?;
    let Val::Dict(entries) = state else {
        return Err(bad(format!("`{key}` is not a dict")));
    };
    let mut out = HashMap::new();
    for (k, v) in entries {
        let (Val::Str(name), Val::TensorRef(storage, offset, shape, stride)) = (k, v) else {
            continue;
        };
        let &(s_start, s_len) = members
            .get(&format!("{prefix}data/{storage}"))
            .ok_or_else(|| bad(format!("storage {storage} missing")))?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("tensor `{name}` is impossibly large")))?;
        // Tensors in a state dict are contiguous views; anything else is refused.
        let mut expect = 1;
        for (d, s) in shape.iter().zip(&stride).rev() {
            if *d > 1 && *s != expect {
                return Err(bad(format!("tensor `{name}` is not contiguous")));
            }
            expect *= d;
        }
        let end = offset
            .checked_add(count)
            .and_then(|e| e.checked_mul(4))
            .filter(|&e| e <= s_len)
            .ok_or_else(|| bad(format!("tensor `{name}` runs past its storage")))?;
        let byte_start = s_start + end - count * 4;
        let data = bytes[byte_start..byte_start + count * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, Tensor { shape, data });
    }
    Ok(out)
}
