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

const SMOL: &str = "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

/// A copy of `real`'s file with `header` in place of its first bytes: the rest is a hole
/// in a sparse file (zeros, no disk), which is all a load that is refused before compute
/// ever reads.
fn sparse_copy(name: &str, header: &[u8], len: u64) -> std::path::PathBuf {
    let path = temp(name);
    let f = std::fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut &f, header).unwrap();
    f.set_len(len.max(header.len() as u64)).unwrap();
    path
}

/// The file's header (everything before its tensor data) and its length.
fn smol_header() -> (Vec<u8>, u64) {
    let path = common::model_path(SMOL);
    let file = basalt_gguf::GgufFile::open(&path).unwrap();
    let data_offset = file.header().data_offset;
    let bytes = std::fs::read(&path).unwrap();
    (bytes[..data_offset].to_vec(), bytes.len() as u64)
}

/// Overwrites the integer value of metadata key `key` in a GGUF header; returns false if the
/// key is not there or not an integer.
fn set_integer(header: &mut [u8], key: &str, value: u64) -> bool {
    let mut needle = (key.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(key.as_bytes());
    let Some(at) = header.windows(needle.len()).position(|w| w == needle) else {
        return false;
    };
    let ty_at = at + needle.len();
    let ty = u32::from_le_bytes(header[ty_at..ty_at + 4].try_into().unwrap());
    let width = match ty {
        0 | 1 => 1,   // u8, i8
        2 | 3 => 2,   // u16, i16
        4 | 5 => 4,   // u32, i32
        10 | 11 => 8, // u64, i64
        _ => return false,
    };
    let v = ty_at + 4;
    header[v..v + width].copy_from_slice(&value.to_le_bytes()[..width]);
    true
}

#[test]
fn a_layer_count_the_tensors_do_not_have_is_refused_without_allocating() {
    let (mut header, len) = smol_header();
    assert!(set_integer(
        &mut header,
        "llama.block_count",
        u32::MAX as u64
    ));
    let path = sparse_copy("layers.gguf", &header, len);
    let e = LoadedModel::inspect(&path).expect_err("inspect must refuse it");
    assert!(e.to_string().contains("block_count"), "{e}");
    match LoadedModel::load(&path, EngineConfig::default()) {
        Ok(_) => panic!("load must refuse it"),
        Err(e) => assert!(e.to_string().contains("block_count"), "{e}"),
    }
    // One layer more or fewer than the tensors hold is refused just the same.
    for layers in [0, 29, 31] {
        let (mut header, len) = smol_header();
        assert!(set_integer(&mut header, "llama.block_count", layers));
        let path = sparse_copy("layers-off.gguf", &header, len);
        assert!(LoadedModel::inspect(&path).is_err(), "{layers} layers");
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn every_hyper_parameter_at_every_boundary_loads_or_is_refused() {
    let (pristine, len) = smol_header();
    let keys = [
        "llama.block_count",
        "llama.context_length",
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.dimension_count",
        "llama.vocab_size",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.padding_token_id",
    ];
    let mut tried = 0;
    for key in keys {
        for &value in basalt_fuzz::BOUNDARY_U64 {
            let mut header = pristine.clone();
            if !set_integer(&mut header, key, value) {
                continue;
            }
            let path = sparse_copy("hparam.gguf", &header, len);
            // Either outcome is fine for some values (a context length of 2 loads); what
            // is checked is that none of them panics or aborts the test process.
            let _ = LoadedModel::inspect(&path);
            tried += 1;
        }
    }
    assert!(
        tried >= 60,
        "only {tried} cases: keys not found in the file"
    );
}

#[test]
fn mutated_headers_load_or_are_refused() {
    let (pristine, len) = smol_header();
    // The metadata before the tokenizer's arrays holds the hyper-parameters; the tensor
    // directory sits at the end of the header. Mutations go to both.
    let budget = basalt_fuzz::Budget::new(150, 20);
    let ran = budget.run(0x5EED_0005, |i, rng| {
        let split = if i % 2 == 0 {
            4096
        } else {
            pristine.len() - 8192
        };
        let mut header = pristine.clone();
        let tail = header.split_off(split.min(header.len()));
        let region = if i % 2 == 0 { &header } else { &tail };
        let mutated = basalt_fuzz::mutate_bytes(region, rng);
        let bytes = if i % 2 == 0 {
            [mutated, tail].concat()
        } else {
            [header, mutated].concat()
        };
        let path = sparse_copy("mutated.gguf", &bytes, len);
        let _ = LoadedModel::inspect(&path);
    });
    assert!(ran >= 10, "only {ran} cases");
}

/// Each family's loader (biases, per-head norms, fused tensors, long rope, soft caps and
/// windows) against its own hyper-parameters at every boundary: loads or is refused, never
/// panics; and a fused tensor that does not split as the hyper-parameters say is refused by
/// name.
#[test]
fn every_family_refuses_hyper_parameters_its_tensors_do_not_have() {
    use common::tiny;
    let source = basalt_gguf::GgufFile::open(&common::model_path(SMOL)).unwrap();
    let mut tried = 0;
    for (family, pre) in [
        (tiny::QWEN2, "qwen2"),
        (tiny::QWEN3, "qwen2"),
        (tiny::PHI3, "llama-bpe"),
        (tiny::GEMMA2, "llama-bpe"),
        (tiny::GRANITE, "llama-bpe"),
    ] {
        let bytes = tiny::decoder(&source, pre, family);
        let path = temp("family.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let data_offset = basalt_gguf::GgufFile::open(&path)
            .unwrap()
            .header()
            .data_offset;
        std::fs::remove_file(&path).unwrap();
        let pristine = bytes[..data_offset].to_vec();
        let len = bytes.len() as u64;
        let arch = family.arch;
        for key in [
            "embedding_length",
            "feed_forward_length",
            "attention.head_count",
            "attention.head_count_kv",
            "attention.key_length",
            "attention.value_length",
            "rope.dimension_count",
            "rope.scaling.original_context_length",
            "attention.sliding_window",
        ] {
            for &value in basalt_fuzz::BOUNDARY_U64 {
                let mut header = pristine.clone();
                if !set_integer(&mut header, &format!("{arch}.{key}"), value) {
                    continue;
                }
                let path = sparse_copy("family-hparam.gguf", &header, len);
                let _ = LoadedModel::inspect(&path);
                tried += 1;
            }
        }
        if family.name == "phi3" {
            let mut header = pristine.clone();
            assert!(set_integer(&mut header, "phi3.feed_forward_length", 100));
            let path = sparse_copy("phi3-ffn.gguf", &header, len);
            let e = LoadedModel::inspect(&path).expect_err("a gate-up tensor of the wrong size");
            assert!(e.to_string().contains("ffn_up"), "{e}");
        }
    }
    let _ = std::fs::remove_file(temp("family-hparam.gguf"));
    let _ = std::fs::remove_file(temp("phi3-ffn.gguf"));
    assert!(tried >= 100, "only {tried} cases: keys not found");
}
