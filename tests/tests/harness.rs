//! The test harness itself (issue 6, defect 6): tests that build the same
//! program at once must not trip over each other's temporary files ("Text
//! file busy" on a fresh clone's first run).

use tslice_tests::build_cuda;

#[test]
fn concurrent_builds_of_one_program_all_succeed() {
    // A source no earlier run has built, so every thread really compiles it.
    let dir = tempdir();
    let src = dir.join("concurrent.c");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::fs::write(
        &src,
        format!("int main(void) {{ return {stamp} % 1 == 0 ? 0 : 1; }}\n"),
    )
    .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let src = src.clone();
            std::thread::spawn(move || build_cuda(&src, &[]))
        })
        .collect();
    let built: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("a build panicked"))
        .collect();
    assert!(
        built.windows(2).all(|w| w[0] == w[1]),
        "one program, one path: {built:?}"
    );
    let status = std::process::Command::new(&built[0])
        .status()
        .expect("run the built program");
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tslice-harness-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
