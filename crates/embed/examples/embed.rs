//! Embeds sentences given on the command line with a model directory and prints their
//! cosine similarities: `cargo run -p basalt-embed --example embed -- DIR "a" "b"`.

use basalt_embed::EmbeddingModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: embed MODEL_DIR TEXT...")?;
    let texts: Vec<String> = args.collect();
    let model = EmbeddingModel::load(std::path::Path::new(&dir))?;
    let t = std::time::Instant::now();
    let out = model.embed(&texts, true)?;
    println!("{} texts in {:?}", texts.len(), t.elapsed());
    for (i, a) in out.iter().enumerate() {
        for b in &out[i + 1..] {
            let cos: f32 = a.vector.iter().zip(&b.vector).map(|(x, y)| x * y).sum();
            println!("cosine = {cos:.4}");
        }
        println!("{} tokens, first values {:?}", a.tokens, &a.vector[..4]);
    }
    Ok(())
}
