use basalt_engine::kernels::{ActScratch, QMatrix};
use basalt_gguf::GgufFile;
fn main() {
    let f = GgufFile::open(std::path::Path::new(&std::env::args().nth(1).unwrap())).unwrap();
    for name in [
        "blk.0.attn_q.weight",
        "blk.0.ffn_down.weight",
        "token_embd.weight",
        "blk.0.attn_output.weight",
        "blk.0.ffn_gate.weight",
    ] {
        let Some(info) = f.header().tensor(name) else {
            continue;
        };
        let m = QMatrix::new(info, f.tensor_bytes(info).unwrap()).unwrap();
        let x: Vec<f32> = (0..m.cols)
            .map(|i| ((i * 7919 % 97) as f32 / 50.0) - 1.0)
            .collect();
        let mut out = vec![0f32; m.rows];
        m.matmul(&x, &mut out, &mut ActScratch::default());
        let mut row = vec![0f32; m.cols];
        let mut maxerr = 0f32;
        let mut maxv = 0f32;
        for r in 0..m.rows.min(500) {
            m.dequantize_row(r, &mut row);
            let want: f32 = row.iter().zip(&x).map(|(a, b)| a * b).sum();
            maxerr = maxerr.max((want - out[r]).abs());
            maxv = maxv.max(want.abs());
        }
        println!("{name} {:?} maxerr {maxerr} maxv {maxv}", m.ty);
    }
}
