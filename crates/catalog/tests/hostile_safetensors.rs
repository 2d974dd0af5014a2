#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! The safetensors header check that `models import` runs, against mutated valid files: it
//! accepts a file only when every tensor it lists lies inside the file with a size that
//! matches its shape, and refuses everything else without panicking.

use basalt_catalog::validate_safetensors;
use serde_json::{json, Value};

fn file(header: &Value, data: &[u8]) -> Vec<u8> {
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

fn seed() -> (Value, Vec<u8>) {
    let header = json!({
        "__metadata__": {"format": "pt"},
        "embeddings.weight": {"dtype": "F32", "shape": [4, 2], "data_offsets": [0, 32]},
        "norm.bias": {"dtype": "F16", "shape": [4], "data_offsets": [32, 40]},
        "ids": {"dtype": "I64", "shape": [1], "data_offsets": [40, 48]},
    });
    (header, (0..48u8).collect())
}

/// What a header that passed must mean: every tensor's range inside the data.
fn consistent(bytes: &[u8]) -> bool {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    else {
        return false;
    };
    let Some(text) = bytes.get(8..8 + len as usize) else {
        return false;
    };
    let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(text) else {
        return false;
    };
    let data = (bytes.len() - 8 - len as usize) as u64;
    h.iter()
        .filter(|(k, _)| *k != "__metadata__")
        .all(|(_, t)| t["data_offsets"][1].as_u64().is_some_and(|end| end <= data))
}

#[test]
fn mutated_headers_and_bytes_are_checked_or_refused() {
    let (header, data) = seed();
    let dir = std::env::temp_dir().join(format!("basalt-st-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, file(&header, &data)).unwrap();
    assert_eq!(validate_safetensors(&path).unwrap(), 3);
    let valid = file(&header, &data);
    let mut accepted = 0;
    let ran = basalt_fuzz::Budget::new(4_000, 10).run(0x5EED_0006, |i, rng| {
        let bytes = if i % 2 == 0 {
            file(&basalt_fuzz::mutate_json(&header, rng), &data)
        } else {
            basalt_fuzz::mutate_bytes(&valid, rng)
        };
        std::fs::write(&path, &bytes).unwrap();
        if validate_safetensors(&path).is_ok() {
            accepted += 1;
            assert!(consistent(&bytes), "accepted a file whose tensors leave it");
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ran > 100, "only {ran} cases");
    assert!(accepted < ran, "every mutation was accepted");
}
