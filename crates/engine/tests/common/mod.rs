//! Shared helpers for tests that need the real default models.

use std::path::PathBuf;

#[allow(dead_code)] // not every test binary builds tiny models
pub mod tiny;

/// The model store the tests read: `$BASALT_MODELS_DIR` or the default location, where
/// `scripts/fetch-models` (run by `make test`) puts the models.
pub fn model_path(relative: &str) -> PathBuf {
    let root = std::env::var_os("BASALT_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let data = std::env::var_os("XDG_DATA_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share")
                });
            data.join("basalt/models")
        });
    let path = root.join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run `scripts/fetch-models` (or `make test`, which does) first",
        path.display()
    );
    path
}

#[allow(dead_code)] // not every test binary reads fixtures
pub fn fixture(name: &str) -> serde_json::Value {
    // The package directory as cargo gives it when it runs the test, not as compiled in: a
    // build directory shared by several checkouts can hold a binary compiled in another.
    let path = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}
