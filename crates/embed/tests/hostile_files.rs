#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! The embedding model's safetensors reader against the real all-MiniLM-L6-v2 file with a
//! mutated header: every case loads or is refused with an error; none panics or reads
//! outside the file. The weights after the header are a hole in a sparse file, so a case
//! costs a header's worth of disk.

use std::path::PathBuf;

use basalt_embed::EmbeddingModel;

fn model_dir() -> PathBuf {
    std::env::var_os("BASALT_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(basalt_catalog::default_models_dir)
        .join("all-minilm-l6-v2")
}

#[test]
fn mutated_safetensors_headers_load_or_are_refused() {
    let real = model_dir();
    let weights = std::fs::read(real.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header = weights[..8 + header_len].to_vec();
    let header_json: serde_json::Value = serde_json::from_slice(&header[8..]).unwrap();
    let len = weights.len() as u64;
    drop(weights);

    let dir = std::env::temp_dir().join(format!("basalt-embed-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&real).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "model.safetensors" {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    let write = |bytes: &[u8]| {
        let f = std::fs::File::create(dir.join("model.safetensors")).unwrap();
        std::io::Write::write_all(&mut &f, bytes).unwrap();
        f.set_len(len.max(bytes.len() as u64)).unwrap();
    };
    write(&header);
    EmbeddingModel::load(&dir).expect("the pristine header loads");

    let mut refused = 0;
    let ran = basalt_fuzz::Budget::new(200, 15).run(0x5EED_0007, |i, rng| {
        let bytes = if i % 2 == 0 {
            let text = basalt_fuzz::mutate_json(&header_json, rng).to_string();
            let mut b = (text.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(text.as_bytes());
            b
        } else {
            basalt_fuzz::mutate_bytes(&header, rng)
        };
        write(&bytes);
        if EmbeddingModel::load(&dir).is_err() {
            refused += 1;
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ran >= 10, "only {ran} cases");
    assert!(refused > 0, "no mutation of {ran} was refused");
}
