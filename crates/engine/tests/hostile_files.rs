#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! Model files are user input: damaged or hostile ones must fail to load with an error,
//! never panic or allocate without bound.

mod common;

use basalt_engine::{EngineConfig, LoadedModel};

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("basalt-hostile-{}-{name}", std::process::id()))
}

#[test]
fn truncated_and_corrupted_models_are_errors() {
    let real = std::fs::read(common::model_path(
        "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    ))
    .unwrap();
    // Cut at several points: inside the header, inside the metadata, inside tensor data.
    for cut in [0, 3, 8, 24, 1_000, 100_000, 2_000_000, real.len() - 1] {
        let path = temp("truncated.gguf");
        std::fs::write(&path, &real[..cut]).unwrap();
        let result = LoadedModel::load(&path, EngineConfig::default());
        assert!(result.is_err(), "a file cut at {cut} bytes must not load");
        std::fs::remove_file(&path).unwrap();
    }
    // Flip bytes across the header: whatever it says now, loading must not panic.
    for (i, pos) in (16..4096).step_by(97).enumerate() {
        let mut bytes = real[..real.len().min(8 << 20)].to_vec();
        bytes[pos] ^= 0x5A ^ (i as u8);
        let path = temp("flipped.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let _ = LoadedModel::load(&path, EngineConfig::default());
        std::fs::remove_file(&path).unwrap();
    }
}
