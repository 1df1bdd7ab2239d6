//! Test harness shared by the project's integration tests: find the repo and
//! the built libraries, compile CUDA programs with the pinned toolkit, and
//! run them on a fresh simulated GPU (optionally under an LD_PRELOAD hook).
//!
//! Nothing here skips: a missing toolkit or library is a test failure that
//! says what to run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `target/<profile>` of the build that produced the running executable
/// (honours `CARGO_TARGET_DIR`): test executables live in `<it>/deps/`,
/// binaries (the benchmarks) in `<it>/` itself.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("the executable's directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        return dir.parent().expect("profile dir").to_path_buf();
    }
    dir.to_path_buf()
}

/// The simulated driver built by `cargo build` (`libcuda.so`).
pub fn simcuda_lib() -> PathBuf {
    let p = profile_dir().join("libcuda.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` before `cargo test`",
        p.display()
    );
    p
}

/// `CUDA_HOME` of the pinned toolkit, from `.cuda/env`.
pub fn cuda_home() -> PathBuf {
    let env = repo_root().join(".cuda/env");
    let text = std::fs::read_to_string(&env).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run scripts/setup-cuda-toolkit.sh",
            env.display()
        )
    });
    let home = text
        .lines()
        .find_map(|l| l.strip_prefix("CUDA_HOME="))
        .unwrap_or_else(|| {
            panic!(
                "{} has no CUDA_HOME=: run scripts/setup-cuda-toolkit.sh",
                env.display()
            )
        });
    let home = PathBuf::from(home.trim());
    assert!(
        home.join("bin/nvcc").exists(),
        "{} lacks bin/nvcc: run scripts/setup-cuda-toolkit.sh",
        home.display()
    );
    home
}

/// FNV-1a, stable across toolchains (cache keys).
fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Compiles a CUDA (`.cu`, nvcc) or C (`.c`, gcc) program into
/// `target/cuda-progs/<name>-<hash of source, headers beside it, include/*.h
/// and args>`,
/// reusing an earlier build with the same hash.
pub fn build_cuda(src: &Path, extra_args: &[&str]) -> PathBuf {
    let home = cuda_home();
    let src = if src.is_absolute() {
        src.to_path_buf()
    } else {
        repo_root().join(src)
    };
    let text = std::fs::read(&src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    let mut h = fnv(&text, 0xcbf2_9ce4_8422_2325);
    // Headers beside the source and the project's public headers (include/).
    for dir in [
        src.parent().map(Path::to_path_buf),
        Some(repo_root().join("include")),
    ]
    .into_iter()
    .flatten()
    {
        let mut headers: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "h" || x == "cuh"))
            .collect();
        headers.sort();
        for p in headers {
            h = fnv(&std::fs::read(&p).unwrap_or_default(), h);
        }
    }
    for a in extra_args {
        h = fnv(a.as_bytes(), h);
        h = fnv(&[0], h);
    }
    let out_dir = profile_dir()
        .parent()
        .expect("target dir")
        .join("cuda-progs");
    std::fs::create_dir_all(&out_dir).expect("create target/cuda-progs");
    let stem = src
        .file_stem()
        .expect("file name")
        .to_string_lossy()
        .to_string();
    let exe = out_dir.join(format!("{stem}-{h:016x}"));
    if exe.exists() {
        return exe;
    }
    // Unique per build, not only per process: tests of one binary run on
    // threads, and two of them may build the same program at once (each
    // writes its own file; the renames onto `exe` are atomic).
    static BUILDS: AtomicU32 = AtomicU32::new(0);
    let tmp = out_dir.join(format!(
        "{stem}-{h:016x}.tmp{}-{}",
        std::process::id(),
        BUILDS.fetch_add(1, Ordering::Relaxed)
    ));
    let inc = home.join("include");
    let lib = home.join("lib");
    let mut cmd = if src.extension().is_some_and(|x| x == "cu") {
        let mut c = Command::new(home.join("bin/nvcc"));
        c.args(["-arch=sm_90", "-cudart", "shared", "-O2"])
            .arg(format!("-I{}", inc.display()))
            .arg(format!("-L{}", lib.display()));
        c
    } else {
        let mut c = Command::new("gcc");
        c.args(["-O2", "-Wall"]).arg(format!("-I{}", inc.display()));
        c
    };
    cmd.arg("-o").arg(&tmp).arg(&src).args(extra_args);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running the compiler for {}: {e}", src.display()));
    assert!(
        out.status.success(),
        "compiling {} failed:\n{}{}",
        src.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &exe).expect("rename built program");
    exe
}

/// A fresh simulated GPU for one test: its own `SIMCUDA_DIR` and a library
/// directory where `libcuda.so.1` is the simulated driver.
pub struct SimGpu {
    root: PathBuf,
    envs: Vec<(String, String)>,
    preload: Option<PathBuf>,
}

impl SimGpu {
    pub fn new() -> SimGpu {
        static N: AtomicU32 = AtomicU32::new(0);
        let lib = simcuda_lib();
        let root = profile_dir()
            .parent()
            .expect("target dir")
            .join("simgpu-tests")
            .join(format!(
                "{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("lib")).expect("create sim dirs");
        std::fs::create_dir_all(root.join("dev")).expect("create sim dirs");
        std::os::unix::fs::symlink(&lib, root.join("lib/libcuda.so.1"))
            .expect("symlink libcuda.so.1");
        std::os::unix::fs::symlink(&lib, root.join("lib/libcuda.so")).expect("symlink libcuda.so");
        SimGpu {
            root,
            envs: Vec::new(),
            preload: None,
        }
    }

    /// Sets an environment variable for every command (`SIMCUDA_MEM`, ...).
    pub fn env(mut self, k: &str, v: &str) -> SimGpu {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// Preloads a library (the shim) into every command.
    pub fn preload(mut self, lib: &Path) -> SimGpu {
        self.preload = Some(lib.to_path_buf());
        self
    }

    /// The shared device directory (`SIMCUDA_DIR`).
    pub fn dir(&self) -> PathBuf {
        self.root.join("dev")
    }

    /// Directory holding `libcuda.so.1` (and `libcuda.so` for `-lcuda` links).
    pub fn lib_dir(&self) -> PathBuf {
        self.root.join("lib")
    }

    /// A command running `prog` on this simulated GPU.
    pub fn command(&self, prog: &Path) -> Command {
        let mut c = Command::new(prog);
        let ld = format!(
            "{}:{}",
            self.lib_dir().display(),
            cuda_home().join("lib").display()
        );
        c.env("LD_LIBRARY_PATH", ld)
            .env("SIMCUDA_DIR", self.dir())
            .env_remove("LD_PRELOAD");
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        if let Some(p) = &self.preload {
            c.env("LD_PRELOAD", p);
        }
        c
    }

    /// Runs `prog` with `args` and returns its output (any exit status).
    pub fn run(&self, prog: &Path, args: &[&str]) -> Output {
        self.command(prog)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", prog.display()))
    }

    /// Runs and asserts success; returns stdout.
    pub fn run_ok(&self, prog: &Path, args: &[&str]) -> String {
        let o = self.run(prog, args);
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        if !o.status.success() {
            let _ = std::io::stderr().write_all(&o.stderr);
            panic!(
                "{} {:?} failed ({}):\n{stdout}\n{}",
                prog.display(),
                args,
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        stdout
    }

    /// The ground-truth view of device `ordinal`.
    pub fn monitor(&self, ordinal: u32) -> simgpu::Monitor {
        simgpu::Monitor::open(&self.dir(), ordinal).unwrap_or_else(|e| {
            panic!(
                "no simulated device {ordinal} in {}: {e}",
                self.dir().display()
            )
        })
    }
}

impl Default for SimGpu {
    fn default() -> Self {
        SimGpu::new()
    }
}

impl Drop for SimGpu {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A CUDA program source under `tests/cuda/`.
pub fn cuda_src(name: &str) -> PathBuf {
    repo_root().join("tests/cuda").join(name)
}

/// The value of `key=<number>` in a program's output.
pub fn field(out: &str, key: &str) -> f64 {
    let pat = format!("{key}=");
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(&pat))
        .unwrap_or_else(|| panic!("no {key}= in output:\n{out}"))
        .trim_end_matches(',')
        .parse()
        .unwrap_or_else(|e| panic!("{key}= is not a number ({e}) in:\n{out}"))
}
