//! Writes a face: `cargo run -p basalt-image --example face -- weights.tar SEED out.png [SIZE]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, ckpt, seed, out, rest @ ..] = &args[..] else {
        return Err("usage: face CHECKPOINT SEED OUT.png [SIZE]".into());
    };
    let size: u32 = rest.first().map_or(Ok(64), |s| s.parse())?;
    let model = basalt_image::ImageModel::load(std::path::Path::new(ckpt))?;
    let t = std::time::Instant::now();
    let png = model.generate_seeded(seed.parse()?, size, size)?;
    println!("{} bytes in {:?}", png.len(), t.elapsed());
    std::fs::write(out, png)?;
    Ok(())
}
