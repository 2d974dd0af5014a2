//! Products sharing an input (`QMatrix::matmul_shared_input`, used for q/k/v and gate/up:
//! fused for one token, one quantisation for several) give every output exactly what
//! separate products give it, on the real models' tensors,
//! with the compute pool split across threads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use basalt_engine::kernels::{ActScratch, QMatrix};
use basalt_gguf::GgufFile;

fn matrices(file: &GgufFile, names: &[&str]) -> Vec<QMatrix> {
    names
        .iter()
        .map(|name| {
            let info = file.header().tensor(name).unwrap();
            QMatrix::new(info, file.tensor_bytes(info).unwrap()).unwrap()
        })
        .collect()
}

#[test]
fn fused_products_equal_separate_products_bit_for_bit() {
    basalt_engine::set_compute_threads(2);
    let models = [
        // Q4_1 throughout.
        "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
        // Q5_0 q/k with a Q8_0 v: two kernels in one fused product.
        "gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
    ];
    for model in models {
        let file = GgufFile::open(&common::model_path(model)).unwrap();
        for group in [
            &[
                "blk.3.attn_q.weight",
                "blk.3.attn_k.weight",
                "blk.3.attn_v.weight",
            ][..],
            &["blk.3.ffn_gate.weight", "blk.3.ffn_up.weight"][..],
        ] {
            let mats = matrices(&file, group);
            // One token (the fused product) and several (one quantisation, shared).
            for tokens in [1, 5] {
                let x: Vec<f32> = (0..mats[0].cols * tokens)
                    .map(|i| ((i * 7919 % 113) as f32 - 56.0) / 19.0)
                    .collect();
                let mut scratch = ActScratch::default();
                let separate: Vec<Vec<f32>> = mats
                    .iter()
                    .map(|m| {
                        let mut out = vec![0f32; m.rows * tokens];
                        m.matmul(&x, &mut out, &mut scratch);
                        out
                    })
                    .collect();
                let mut fused: Vec<Vec<f32>> = mats
                    .iter()
                    .map(|m| vec![f32::NAN; m.rows * tokens])
                    .collect();
                let mut outs: Vec<&mut [f32]> =
                    fused.iter_mut().map(|v| v.as_mut_slice()).collect();
                let refs: Vec<&QMatrix> = mats.iter().collect();
                // A fresh scratch: nothing left over from the separate products.
                QMatrix::matmul_shared_input(&refs, &x, &mut outs, &mut ActScratch::default());
                for ((name, a), b) in group.iter().zip(&separate).zip(&fused) {
                    assert!(
                        a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{model} {name}, {tokens} tokens"
                    );
                }
            }
        }
    }
}
