//! `basalt generate-image`: images from an image model of the store, in-process, with
//! progress on the terminal.

use std::io::Write as _;
use std::path::PathBuf;

use basalt_catalog::{Catalog, Modality};
use basalt_image::ImageModel;

use crate::{CliResult, StoreArgs};

#[derive(clap::Args)]
pub struct GenerateImageArgs {
    /// Image model id [default: the first image model in the store]
    model: Option<String>,
    /// The prompt. The DCGAN face model reads no text: the prompt only picks the seed
    /// (when --seed is not given).
    #[arg(long, default_value = "")]
    prompt: String,
    /// Seed of the first image (image i uses seed + i)
    #[arg(long)]
    seed: Option<u64>,
    /// WIDTHxHEIGHT, resampled (Lanczos-3) from the model's own size
    #[arg(long, default_value = "256x256")]
    size: String,
    /// How many images
    #[arg(long, default_value_t = 1)]
    n: u32,
    /// Output file; with several images, `-N` is added before the extension
    #[arg(long, default_value = "image.png")]
    out: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: GenerateImageArgs) -> CliResult {
    let catalog = Catalog::open(&args.store.dir())?;
    let entry = catalog
        .entries()
        .iter()
        .find(|e| {
            e.manifest.output_modalities.contains(&Modality::Image)
                && args.model.as_ref().is_none_or(|m| &e.manifest.id == m)
        })
        .ok_or("no such image model in the store (scripts/fetch-models installs one)")?;
    let (w, h) = args
        .size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .ok_or("--size must look like 256x256")?;
    if args.n == 0 || args.n > 100 {
        return Err("--n must be between 1 and 100".into());
    }
    eprint!("loading {} ... ", entry.manifest.id);
    let model = ImageModel::load(&entry.weights_path())?;
    eprintln!("done");
    let base = args
        .seed
        .unwrap_or_else(|| basalt_image::seed_for(&args.prompt));
    for i in 0..args.n {
        eprint!("\rimage {}/{} ", i + 1, args.n);
        std::io::stderr().flush()?;
        let seed = base.wrapping_add(i as u64);
        let png = model.generate(seed, w, h)?;
        let path = if args.n == 1 {
            args.out.clone()
        } else {
            let stem = args
                .out
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("image");
            args.out.with_file_name(format!("{stem}-{}.png", i + 1))
        };
        std::fs::write(&path, png)?;
        eprintln!("(seed {seed}) -> {}", path.display());
    }
    Ok(())
}
