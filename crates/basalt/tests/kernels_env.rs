//! `BASALT_KERNELS` at the command line: a mistyped level is refused at start-up with the
//! accepted values, and a valid one is what `basalt bench` reports running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

fn basalt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_basalt"))
}

#[test]
fn an_unknown_kernel_level_is_refused_at_start_up() {
    let out = basalt()
        .env("BASALT_KERNELS", "avx9000")
        .args(["models", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BASALT_KERNELS=avx9000") && stderr.contains("portable, avx2, avx512vnni"),
        "{stderr}"
    );
}

/// The default SmolLM2 file in the model store (where `make test` fetches it).
fn smollm2() -> PathBuf {
    let path = basalt_catalog::default_models_dir()
        .join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run `make test`",
        path.display()
    );
    path
}

#[test]
fn a_lower_kernel_level_is_the_one_that_runs() {
    for level in ["portable", "auto"] {
        let out = basalt()
            .env("BASALT_KERNELS", level)
            .arg("bench")
            .arg(smollm2())
            .args([
                "--threads",
                "1",
                "--repetitions",
                "1",
                "--prompt",
                "4",
                "--generate",
                "2",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        for line in stdout.lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let kernels = row["kernels"].as_str().unwrap();
            if level == "portable" {
                assert_eq!(kernels, "portable");
            } else {
                assert!(
                    ["portable", "avx2", "avx512vnni"].contains(&kernels),
                    "{kernels}"
                );
            }
        }
        assert!(stdout.lines().count() >= 2, "{stdout}");
    }
}
