//! `basalt generate-image`: images from an image model of the store (DCGAN or Stable
//! Diffusion), in-process, with per-step progress on the terminal.

use std::io::Write as _;
use std::path::PathBuf;

use basalt_catalog::{Catalog, Format, Modality};
use basalt_diffusion::StableDiffusion;
use basalt_image::{ImageGenerator, ImageJob, ImageModel, Step};

use crate::{CatalogArgs, CliResult};

#[derive(clap::Args)]
pub struct GenerateImageArgs {
    /// Image model id [default: the first image model in the store]
    model: Option<String>,
    /// The prompt. The DCGAN face model reads no text: the prompt only picks the seed
    /// (when --seed is not given).
    #[arg(long, default_value = "")]
    prompt: String,
    /// What the image should not show (diffusion models)
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Seed of the first image (image i uses seed + i)
    #[arg(long)]
    seed: Option<u64>,
    /// WIDTHxHEIGHT [default: the model's own size; DCGAN resamples with Lanczos-3]
    #[arg(long)]
    size: Option<String>,
    /// Denoising steps (diffusion models) [default: 30]
    #[arg(long)]
    steps: Option<u32>,
    /// Classifier-free guidance scale (diffusion models) [default: 7.5]
    #[arg(long)]
    cfg_scale: Option<f32>,
    /// How many images
    #[arg(long, default_value_t = 1)]
    n: u32,
    /// Output file; with several images, `-N` is added before the extension
    #[arg(long, default_value = "image.png")]
    out: PathBuf,
    #[command(flatten)]
    catalog: CatalogArgs,
}

pub fn run(args: GenerateImageArgs) -> CliResult {
    let catalog = Catalog::open(&args.catalog.dir())?;
    let entry = catalog
        .entries()
        .iter()
        .find(|e| {
            e.manifest.output_modalities.contains(&Modality::Image)
                && args.model.as_ref().is_none_or(|m| &e.manifest.id == m)
        })
        .ok_or("no such image model in the store (scripts/fetch-models installs one)")?;
    let size = match &args.size {
        None => None,
        Some(s) => Some(
            s.split_once('x')
                .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
                .ok_or("--size must look like 256x256")?,
        ),
    };
    if args.n == 0 || args.n > 100 {
        return Err("--n must be between 1 and 100".into());
    }
    eprint!("loading {} ... ", entry.manifest.id);
    let model: Box<dyn ImageGenerator> = match entry.manifest.format {
        Format::Diffusers => Box::new(StableDiffusion::load(&entry.dir, Default::default())?),
        _ => Box::new(ImageModel::load(&entry.weights_path())?),
    };
    eprintln!("done");
    if !model.reads_text() && !args.prompt.is_empty() {
        eprintln!("note: this model reads no text; the prompt only picks the seed");
    }
    let base = args
        .seed
        .unwrap_or_else(|| basalt_image::seed_for(&args.prompt));
    for i in 0..args.n {
        let seed = base.wrapping_add(i as u64);
        let job = ImageJob {
            prompt: args.prompt.clone(),
            negative_prompt: args.negative_prompt.clone(),
            seed,
            width: size.map(|(w, _)| w),
            height: size.map(|(_, h)| h),
            steps: args.steps,
            guidance: args.cfg_scale,
        };
        let started = std::time::Instant::now();
        let png = model.generate(&job, &mut |done, total| {
            let per_step = started.elapsed().as_secs_f64() / f64::from(done.max(1));
            eprint!(
                "\rimage {}/{}: step {done}/{total} ({per_step:.1} s/step) ",
                i + 1,
                args.n
            );
            let _ = std::io::stderr().flush();
            Step::Continue
        })?;
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
