//! `basalt serve`'s engine settings at the command line: out-of-range values are refused
//! before anything starts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn an_admission_window_over_a_second_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["serve", "--admission-window-ms", "5000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--admission-window-ms") && stderr.contains("0..=1000"),
        "{stderr}"
    );
}
