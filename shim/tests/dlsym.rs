//! The `dlsym` override: unrelated lookups behave exactly as glibc's, and
//! `dlsym(RTLD_NEXT, …)` still means "next after the caller" for other
//! interposers loaded beside the shim.

mod common;

use std::process::Command;

const PROG: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
int main(void) {
    void *libc = dlopen("libc.so.6", RTLD_NOW);
    size_t (*sl)(const char*) = (size_t(*)(const char*))dlsym(libc, "strlen");
    if (!sl || sl("four") != 4) { printf("FAIL strlen\n"); return 1; }
    if (dlsym(RTLD_DEFAULT, "no_such_symbol_xyz") != NULL) { printf("FAIL missing\n"); return 1; }
    if (dlsym(libc, "cuNoSuchThing") != NULL) { printf("FAIL cu-missing\n"); return 1; }
    void *v = dlvsym(libc, "memcpy", "GLIBC_2.14");
    if (!v) { printf("FAIL dlvsym\n"); return 1; }
    puts("hello through the interposer");
    printf("OK\n");
    return 0;
}
"#;

/// An interposer on `puts` that finds the real one with RTLD_NEXT. If the
/// shim's dlsym resolved RTLD_NEXT relative to itself instead of the caller,
/// this would find itself (it comes after the shim) and recurse forever.
const NEXT_LIB: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
static int calls;
int puts(const char *s) {
    int (*next)(const char*) = (int(*)(const char*))dlsym(RTLD_NEXT, "puts");
    if (next == puts) { fprintf(stderr, "RTLD_NEXT returned the caller itself\n"); return -1; }
    calls++;
    return next(s);
}
__attribute__((destructor)) static void report(void) { fprintf(stderr, "interposed puts calls: %d\n", calls); }
"#;

#[test]
fn lookups_and_rtld_next_are_unchanged() {
    let dir = common::tmpdir("dlsym");
    std::fs::write(dir.join("prog.c"), PROG).unwrap();
    std::fs::write(dir.join("next.c"), NEXT_LIB).unwrap();
    let prog = dir.join("prog");
    let next = dir.join("libnext.so");
    common::gcc(&prog, &[dir.join("prog.c").to_str().unwrap(), "-ldl"]);
    common::gcc(
        &next,
        &[
            "-shared",
            "-fPIC",
            dir.join("next.c").to_str().unwrap(),
            "-ldl",
        ],
    );
    let shim = common::shim_path();
    let baseline = Command::new(&prog)
        .env("LD_PRELOAD", &next)
        .output()
        .unwrap();
    assert!(baseline.status.success());
    let base_err = String::from_utf8_lossy(&baseline.stderr).into_owned();
    assert!(base_err.contains("interposed puts calls: "), "{base_err}");
    for preload in [
        format!("{}:{}", shim.display(), next.display()),
        format!("{}:{}", next.display(), shim.display()),
    ] {
        let out = Command::new(&prog)
            .env("LD_PRELOAD", &preload)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "LD_PRELOAD={preload}: {stdout}{stderr}"
        );
        assert!(
            stdout.contains("hello through the interposer") && stdout.contains("OK"),
            "{stdout}"
        );
        assert_eq!(stderr, base_err, "LD_PRELOAD={preload}");
        assert_eq!(out.stdout, baseline.stdout);
        assert!(
            !stderr.contains("tslice"),
            "the shim must stay silent: {stderr}"
        );
    }
}

#[test]
fn processes_that_never_use_cuda_are_untouched() {
    let shim = common::shim_path();
    // Even an invalid limit is not reported by a process that never calls CUDA.
    for (cmd, args) in [
        ("ls", vec!["/"]),
        (
            "python3",
            vec!["-c", "import ctypes; ctypes.CDLL(None).getpid(); print(1)"],
        ),
    ] {
        let plain = Command::new(cmd).args(&args).output().expect(cmd);
        let pre = Command::new(cmd)
            .args(&args)
            .env("LD_PRELOAD", &shim)
            .env("TSLICE_HBM_LIMIT", "not a size")
            .output()
            .unwrap();
        assert_eq!(plain.status.code(), pre.status.code(), "{cmd}");
        assert_eq!(plain.stdout, pre.stdout, "{cmd}");
        assert_eq!(plain.stderr, pre.stderr, "{cmd}");
    }
}

/// A Rust program using threads (std looks symbols up with dlsym itself)
/// runs with the shim preloaded exactly as without: this test binary
/// re-executes itself under LD_PRELOAD and runs `threads_child` there.
#[test]
fn rust_program_with_threads_is_untouched() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(&exe)
        .args([
            "--ignored",
            "--exact",
            "threads_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("LD_PRELOAD", common::shim_path())
        .env("TSLICE_THREADS_CHILD", "1")
        .env("TSLICE_HBM_LIMIT", "not a size")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("threads ok: 8 x 200000"), "{stdout}");
    assert!(!stderr.contains("tslice"), "{stderr}");
}

/// The child half of the test above; it runs only when re-executed by it.
#[test]
#[ignore = "run by rust_program_with_threads_is_untouched under LD_PRELOAD"]
fn threads_child() {
    assert!(
        std::env::var_os("TSLICE_THREADS_CHILD").is_some(),
        "run through rust_program_with_threads_is_untouched"
    );
    let handles: Vec<_> = (0..8u64)
        .map(|i| {
            std::thread::spawn(move || {
                thread_local!(static N: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
                let mut v = Vec::new();
                for j in 0..200_000u64 {
                    N.with(|n| n.set(n.get() + 1));
                    if j % 1000 == 0 {
                        v.push(format!("{i}-{j}"));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
                (N.with(|n| n.get()), v.len())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.iter().all(|&(n, l)| n == 200_000 && l == 200));
    println!("threads ok: {} x {}", results.len(), results[0].0);
}
