//! What the benchmarks run on: the release build of the shim and the
//! simulated driver, the pinned CUDA toolkit, and a fresh simulated GPU per
//! measurement (or the machine's real GPU with `--real-gpu`).
//!
//! The test harness's `SimGpu` finds the libraries next to a *test* binary
//! (`target/<profile>/deps/`) and falls back to `target/debug`; a benchmark
//! binary lives in `target/release/`, so this module finds the release
//! libraries itself and keeps the harness for compiling CUDA programs
//! (`build_cuda`) and reading their output (`field`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// How to reach the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The project's simulated driver over a fresh shared simulated GPU.
    Sim,
    /// The machine's CUDA driver (`libcuda.so.1` from the system loader path).
    Real,
}

/// The checked environment of a benchmark run.
pub struct Setup {
    pub backend: Backend,
    /// `target/release`.
    pub release: PathBuf,
    /// `target/release/libtslice.so`.
    pub shim: PathBuf,
    /// `target/release/libcuda.so` (the simulated driver; unused with `Real`).
    pub simcuda: PathBuf,
}

const BUILD_HINT: &str = "run `cargo build --release --workspace` first";

/// `target/release` of the build that produced this binary (honours
/// `CARGO_TARGET_DIR`, since the binary lives in it).
pub fn release_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or("this executable has no parent directory")?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let target = dir
        .parent()
        .ok_or("this executable is not inside a target directory")?;
    Ok(target.join("release"))
}

fn need_file(p: &Path, what: &str) -> Result<(), String> {
    if p.is_file() {
        Ok(())
    } else {
        Err(format!("{what} {} is missing: {BUILD_HINT}", p.display()))
    }
}

impl Setup {
    /// Checks the release libraries (and, when `cuda` is set, the toolkit)
    /// and says what to run when something is missing.
    pub fn check(backend: Backend, cuda: bool) -> Result<Setup, String> {
        let release = release_dir()?;
        let shim = release.join("libtslice.so");
        let simcuda = release.join("libcuda.so");
        need_file(&shim, "the shim")?;
        if cuda {
            match backend {
                Backend::Sim => need_file(&simcuda, "the simulated driver")?,
                Backend::Real => check_real_driver()?,
            }
            check_toolkit()?;
        }
        Ok(Setup {
            backend,
            release,
            shim,
            simcuda,
        })
    }

    /// A helper binary of this package (`threads-demo`), built beside the bench.
    pub fn sibling_bin(&self, name: &str) -> Result<PathBuf, String> {
        let here = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join(name)))
            .filter(|p| p.is_file());
        let p = here.unwrap_or_else(|| self.release.join(name));
        need_file(&p, "the helper program")?;
        Ok(p)
    }
}

/// `--real-gpu` needs the machine's driver: `libcuda.so.1` on
/// `LD_LIBRARY_PATH` or in the loader cache.
fn check_real_driver() -> Result<(), String> {
    let on_path = std::env::var_os("LD_LIBRARY_PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("libcuda.so.1").exists()));
    let cached = Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libcuda.so.1 "));
    if on_path || cached {
        Ok(())
    } else {
        Err("--real-gpu: no CUDA driver (libcuda.so.1) on LD_LIBRARY_PATH or in the loader cache \
             (`ldconfig -p`); run it on a machine with an NVIDIA GPU and driver, or drop --real-gpu \
             to use the simulated GPU"
            .into())
    }
}

/// The pinned toolkit from `.cuda/env` (what `tslice_tests::cuda_home`
/// asserts, checked here first so that a missing toolkit is a clear message
/// rather than a panic).
fn check_toolkit() -> Result<PathBuf, String> {
    let hint = "run scripts/setup-cuda-toolkit.sh";
    let env = tslice_tests::repo_root().join(".cuda/env");
    let text = std::fs::read_to_string(&env).map_err(|_| {
        format!(
            "the CUDA toolkit is not installed ({} is missing): {hint}",
            env.display()
        )
    })?;
    let home = text
        .lines()
        .find_map(|l| l.strip_prefix("CUDA_HOME="))
        .ok_or_else(|| format!("{} has no CUDA_HOME= line: {hint}", env.display()))?;
    let home = PathBuf::from(home.trim());
    if !home.join("bin/nvcc").is_file() {
        return Err(format!("{} lacks bin/nvcc: {hint}", home.display()));
    }
    Ok(home)
}

/// Compiles a CUDA program once (cached by the harness under
/// `target/cuda-progs/`).
pub fn program(src: &Path) -> PathBuf {
    tslice_tests::build_cuda(src, &[])
}

/// A CUDA program of this benchmark (`bench/cuda/<name>`).
pub fn bench_src(name: &str) -> PathBuf {
    tslice_tests::repo_root().join("bench/cuda").join(name)
}

/// One GPU for one measurement: a fresh simulated GPU (its own device
/// directory, so every measurement starts from an idle device and an empty
/// record), or the real one.
pub struct Gpu<'a> {
    setup: &'a Setup,
    /// Root of the simulated GPU's files (`lib/`, `dev/`); None for `Real`.
    root: Option<PathBuf>,
}

impl<'a> Gpu<'a> {
    pub fn new(setup: &'a Setup) -> Result<Gpu<'a>, String> {
        if setup.backend == Backend::Real {
            return Ok(Gpu { setup, root: None });
        }
        static N: AtomicU32 = AtomicU32::new(0);
        // tmpfs when there is one: the device file is a shared mapping, and
        // a disk-backed one is written back in the background.
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            setup.release.join("simgpu-bench")
        };
        let root = base.join(format!(
            "tslice-bench-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let mk = |p: &Path| {
            std::fs::create_dir_all(p).map_err(|e| format!("create {}: {e}", p.display()))
        };
        mk(&root.join("lib"))?;
        mk(&root.join("dev"))?;
        for name in ["libcuda.so.1", "libcuda.so"] {
            std::os::unix::fs::symlink(&setup.simcuda, root.join("lib").join(name))
                .map_err(|e| format!("symlink {name}: {e}"))?;
        }
        Ok(Gpu {
            setup,
            root: Some(root),
        })
    }

    /// A command running `prog` on this GPU, without the shim and with no
    /// tslice or simulator settings inherited from the caller's environment.
    pub fn command(&self, prog: &Path) -> Command {
        let mut c = Command::new(prog);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("TSLICE_") || k.starts_with("SIMCUDA_") {
                c.env_remove(&*k);
            }
        }
        c.env_remove("LD_PRELOAD");
        let cudart = tslice_tests::cuda_home().join("lib");
        match &self.root {
            Some(root) => {
                let ld = format!("{}:{}", root.join("lib").display(), cudart.display());
                c.env("LD_LIBRARY_PATH", ld)
                    .env("SIMCUDA_DIR", root.join("dev"));
            }
            None => {
                // The real driver comes from the system's loader path (or
                // the caller's LD_LIBRARY_PATH, kept after the runtime's).
                let mut ld = cudart.display().to_string();
                if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
                    ld.push(':');
                    ld.push_str(&old.to_string_lossy());
                }
                c.env("LD_LIBRARY_PATH", ld);
            }
        }
        c
    }

    /// Like [`Gpu::command`], with the shim preloaded and `env` set.
    pub fn command_with_shim(&self, prog: &Path, env: &[(&str, &str)]) -> Command {
        let mut c = self.command(prog);
        c.env("LD_PRELOAD", &self.setup.shim);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// The simulated device directory (`SIMCUDA_DIR`; None on a real GPU).
    pub fn dev_dir(&self) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join("dev"))
    }

    /// The simulator's ground truth for device 0 (None on a real GPU).
    pub fn monitor(&self) -> Result<Option<simgpu::Monitor>, String> {
        match &self.root {
            None => Ok(None),
            Some(root) => simgpu::Monitor::open(&root.join("dev"), 0)
                .map(Some)
                .map_err(|e| format!("no simulated device in {}: {e}", root.join("dev").display())),
        }
    }
}

impl Drop for Gpu<'_> {
    fn drop(&mut self) {
        if let Some(root) = &self.root {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}
