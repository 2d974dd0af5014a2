#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! The DCGAN face model from its real checkpoint (installed by `scripts/fetch-models`):
//! deterministic per seed, different across seeds, not flat; and hostile checkpoint files
//! (truncated, flipped bytes, not a zip) are errors, never panics.

use std::path::PathBuf;

use basalt_image::ImageModel;

fn checkpoint() -> PathBuf {
    let root = std::env::var_os("BASALT_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(basalt_catalog::default_models_dir);
    let path = root.join("dcgan-faces/weights.tar");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models",
        path.display()
    );
    path
}

#[test]
fn faces_are_deterministic_per_seed_and_differ_across_seeds() {
    let model = ImageModel::load(&checkpoint()).unwrap();
    let a = model.generate_seeded(1, 64, 64).unwrap();
    assert_eq!(a, model.generate_seeded(1, 64, 64).unwrap());
    assert_ne!(a, model.generate_seeded(2, 64, 64).unwrap());
    let big = model.generate_seeded(1, 200, 120).unwrap();
    assert_eq!(u32::from_be_bytes(big[16..20].try_into().unwrap()), 200);
    assert_eq!(u32::from_be_bytes(big[20..24].try_into().unwrap()), 120);
    assert!(model.generate_seeded(1, 4096, 64).is_err());
}

#[test]
fn hostile_checkpoints_are_errors() {
    let good = std::fs::read(checkpoint()).unwrap();
    let dir = std::env::temp_dir().join(format!("basalt-hostile-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"not a zip at all".to_vec(),
        good[..good.len() / 2].to_vec(),
        good[..good.len() - 30].to_vec(),
    ];
    // Flip bytes through the pickle and the central directory.
    for at in [64, 200, 1000, 2000, good.len() - 100, good.len() - 10] {
        let mut bad = good.clone();
        bad[at] ^= 0xff;
        cases.push(bad);
    }
    for (i, bytes) in cases.iter().enumerate() {
        let path = dir.join(format!("{i}.tar"));
        std::fs::write(&path, bytes).unwrap();
        // Any outcome but a panic: most are errors; a flip inside weight data still loads.
        let _ = ImageModel::load(&path).map(|m| m.generate_seeded(0, 64, 64));
    }
    assert!(ImageModel::load(&dir.join("0.tar")).is_err());
    assert!(ImageModel::load(&dir.join("2.tar")).is_err());
    let _ = std::fs::remove_dir_all(dir);
}
