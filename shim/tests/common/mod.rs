//! Helpers shared by the shim's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>`: where the built `libtslice.so` lies (the test binary
/// lives in `target/<profile>/deps`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>")
        .to_path_buf()
}

pub fn shim_path() -> PathBuf {
    let p = profile_dir().join("libtslice.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p tslice-shim` first",
        p.display()
    );
    p
}

/// Compiles C sources with gcc into `out` (a shared library with `-shared`).
pub fn gcc(out: &std::path::Path, args: &[&str]) {
    let st = Command::new("gcc")
        .args(args)
        .arg("-o")
        .arg(out)
        .status()
        .expect("gcc must be installed");
    assert!(st.success(), "gcc {args:?} failed");
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tslice-shim-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
