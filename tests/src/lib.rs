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

pub mod k8s;
pub mod raw;

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

/// The simulated NVML (`libnvidia_ml.so`, installed as `libnvidia-ml.so.1`).
pub fn simnvml_lib() -> PathBuf {
    let p = profile_dir().join("libnvidia_ml.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` before `cargo test`",
        p.display()
    );
    p
}

/// The path `KEY=` names in an env file a setup script wrote (`file`
/// relative to the repository root); panics naming the `script` to run when
/// the file or the key is missing.
pub fn setup_path(file: &str, key: &str, script: &str) -> PathBuf {
    let env = repo_root().join(file);
    let text = std::fs::read_to_string(&env)
        .unwrap_or_else(|e| panic!("{}: {e}: run scripts/{script}", env.display()));
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{} has no {key}=: run scripts/{script}", env.display()));
    PathBuf::from(v.trim())
}

/// `CUDA_HOME` of the pinned toolkit, from `.cuda/env`.
pub fn cuda_home() -> PathBuf {
    let home = setup_path(".cuda/env", "CUDA_HOME", "setup-cuda-toolkit.sh");
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
        let nvml = simnvml_lib();
        std::os::unix::fs::symlink(&nvml, root.join("lib/libnvidia-ml.so.1"))
            .expect("symlink libnvidia-ml.so.1");
        std::os::unix::fs::symlink(&nvml, root.join("lib/libnvidia-ml.so"))
            .expect("symlink libnvidia-ml.so");
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

    /// The p50 and p99 (us) of a latency-sensitive program's launches (it
    /// printed `pid=`, `t_start=` and `launch_offsets_ns=`, as
    /// `tests/cuda/victim.cu` does, each launch of `work_ns` waited for
    /// before the next) measured on device 0's record of when its work
    /// ran: from the launch until its work had run there. What the GPU's
    /// scheduling and tslice do to the program is in it; the host's delay
    /// in waking the program once its work is done is not (on a loaded
    /// 2-core CI machine that delay alone can pass a millisecond at p99).
    pub fn latencies_on_device(&self, out: &str, work_ns: u64) -> (f64, f64) {
        let pid = field(out, "pid") as u32;
        let t_start = field(out, "t_start") as u64;
        let launches: Vec<u64> = text_field(out, "launch_offsets_ns")
            .split(',')
            .map(|v| {
                t_start
                    + v.parse::<u64>()
                        .unwrap_or_else(|e| panic!("launch_offsets_ns: {v:?}: {e}"))
            })
            .collect();
        let from = *launches.first().expect("no launches");
        let report = self
            .monitor(0)
            .runs_between(pid, from, u64::MAX)
            .expect("read the device's record");
        assert!(
            report.complete,
            "the device's record no longer holds {from} (retained from {})",
            report.retained_from_ns
        );
        let mut lat = latencies(&launches, &report.runs, work_ns)
            .unwrap_or_else(|e| panic!("pid {pid}: {e}"));
        lat.sort_unstable();
        let q = |p: f64| lat[((p * lat.len() as f64) as usize).min(lat.len() - 1)] as f64 / 1e3;
        (q(0.50), q(0.99))
    }

    /// Handshake on ground truth: returns once device 0 has run `busy_ns` of
    /// `pid`'s work (a minute at most, then the test fails).
    pub fn wait_until_busy(&self, pid: u32, busy_ns: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(m) = simgpu::Monitor::open(&self.dir(), 0) {
                let busy: u64 = m
                    .snapshot()
                    .processes
                    .iter()
                    .filter(|p| p.pid == pid)
                    .map(|p| p.busy_ns)
                    .sum();
                if busy >= busy_ns {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pid {pid} never got {busy_ns} ns of device time"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
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

/// Runs a test program and asserts that it succeeded and reported no
/// failures (`OK FAILS=0`, the last line of the programs in `tests/cuda`);
/// returns its stdout. Panics with its stdout and stderr otherwise.
pub fn run_checked(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("OK FAILS=0"),
        "{cmd:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The value of `key=<number>` in a program's output.
pub fn field(out: &str, key: &str) -> f64 {
    text_field(out, key)
        .trim_end_matches(',')
        .parse()
        .unwrap_or_else(|e| panic!("{key}= is not a number ({e}) in:\n{out}"))
}

/// For launches made at `launches` (ns, ascending), each of `work_ns` and
/// each waited for before the next, and the `runs` of the process's work on
/// the device (`[start, end)`, in time order): the time from each launch
/// until `work_ns` of work had run after it. An error if a launch's work
/// did not finish before the next launch (or at all).
pub fn latencies(launches: &[u64], runs: &[(u64, u64)], work_ns: u64) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(launches.len());
    let mut r = runs.iter().copied().peekable();
    for (i, &at) in launches.iter().enumerate() {
        let next = launches.get(i + 1).copied().unwrap_or(u64::MAX);
        let mut left = work_ns;
        let mut done = None;
        while let Some(&(a, b)) = r.peek() {
            if b <= at {
                r.next();
                continue;
            }
            let a = a.max(at);
            if a >= next {
                break;
            }
            if b - a >= left {
                // The rest of this run, if any, is before the next launch.
                done = Some(a + left);
                break;
            }
            left -= b - a;
            r.next();
        }
        match done {
            Some(t) if t <= next => out.push(t - at),
            _ => {
                return Err(format!(
                    "the work of launch {i} (at {at}) did not run to its end before the next launch ({next})"
                ))
            }
        }
    }
    Ok(out)
}

/// The text of a `key=value` word in a program's output.
pub fn text_field<'a>(out: &'a str, key: &str) -> &'a str {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|w| w.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in output:\n{out}"))
}

/// Runs a measurement made on the host's clock (latencies, shares of a
/// few seconds) up to three times and passes on the first attempt that
/// meets every bound; `attempt` (given 1, 2, 3) returns what it found
/// wrong. Time this machine loses to others (steal time on a shared CI
/// host, a burst of reclaim) only ever makes a tenant look slower or
/// starved, so a scheduler that does its job passes within three tries,
/// and one that does not fails all three (the panic lists each). Before a
/// second or third attempt it waits (10 s at most) for a quiet host, so
/// that one episode of load does not spoil every attempt.
pub fn measured(mut attempt: impl FnMut(u32) -> Result<(), String>) {
    let mut failures = Vec::new();
    for n in 1..=3 {
        if n > 1 {
            let busy = wait_for_quiet_host();
            failures.push(format!(
                "(host CPUs {:.0}% busy before attempt {n})",
                busy * 100.0
            ));
        }
        match attempt(n) {
            Ok(()) => return,
            Err(e) => {
                eprintln!("attempt {n}: {e}");
                failures.push(format!("attempt {n}: {e}"));
            }
        }
    }
    panic!("every attempt failed:\n{}", failures.join("\n"));
}

/// Waits until the host's CPUs were less than a fifth busy (stolen time
/// counts as busy) over half a second, 10 s at most; returns the last
/// fraction seen.
fn wait_for_quiet_host() -> f64 {
    // (busy, total) jiffies of all CPUs, from /proc/stat's first line.
    let sample = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let total: u64 = v.iter().sum();
        let idle = v.get(3)? + v.get(4)?;
        Some((total - idle, total))
    };
    let mut busy = 1.0;
    for _ in 0..20 {
        let a = sample();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (Some((b0, t0)), Some((b1, t1))) = (a, sample()) else {
            return busy;
        };
        busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
        if busy < 0.2 {
            break;
        }
    }
    busy
}

/// What a [`measured`] attempt returns: `Ok` when every check holds, else
/// the messages of those that do not, joined.
pub fn checks(checks: impl IntoIterator<Item = (bool, String)>) -> Result<(), String> {
    let broken: Vec<String> = checks
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, why)| why)
        .collect();
    if broken.is_empty() {
        Ok(())
    } else {
        Err(broken.join("; "))
    }
}

/// A `tslice-broker` process for one test: its own socket and config in a
/// fresh directory, stopped (killed) when dropped.
pub struct Broker {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    log: PathBuf,
    child: Option<std::process::Child>,
    /// Extra environment of the broker process.
    env: Vec<(String, String)>,
}

/// A directory of this process and call that every user can reach (under
/// the system's temporary directory, mode 0755, however private the
/// checkout is): broker sockets, and programs run as another user. Short,
/// too (a socket's path has at most 107 bytes). Removed by [`Broker`]'s drop.
pub fn shared_dir() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "tslice-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a shared dir");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
        .expect("make the shared dir reachable");
    d
}

/// A path under `target/` unique to this process and call.
pub fn scratch(kind: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = profile_dir()
        .parent()
        .expect("target dir")
        .join(kind)
        .join(format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a scratch dir");
    d
}

/// A binary of the workspace built by `cargo build` (`tslice-broker`, `tslice`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

impl Broker {
    /// Starts a broker with `config` (TOML, without `socket`, which is set
    /// here) and waits until it answers.
    pub fn start(config: &str) -> Broker {
        Broker::start_with_env(config, &[])
    }

    /// As [`Broker::start`], with extra environment for the broker process.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Broker {
        let dir = scratch("broker-tests");
        let socket = shared_dir().join("broker.sock");
        let cfg = dir.join("broker.toml");
        let mut b = Broker {
            dir: dir.clone(),
            socket,
            config: cfg,
            log: dir.join("broker.log"),
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        b.write_config(config);
        b.spawn();
        b
    }

    fn config_text(&self, body: &str) -> String {
        format!("socket = {:?}\n{body}", self.socket.display().to_string())
    }

    /// Replaces the configuration file atomically (the broker notices).
    pub fn write_config(&self, body: &str) {
        let tmp = self.dir.join("broker.toml.new");
        std::fs::write(&tmp, self.config_text(body)).expect("write the config");
        std::fs::rename(&tmp, &self.config).expect("rename the config");
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("broker log");
        let child = Command::new(workspace_bin("tslice-broker"))
            .arg("--config")
            .arg(&self.config)
            .arg("--log")
            .arg("info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stderr(log)
            .spawn()
            .expect("start tslice-broker");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.try_status().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the broker did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// `tslice status --json`.
    pub fn try_status(&self) -> Result<serde_json::Value, String> {
        let o = Command::new(workspace_bin("tslice"))
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())
    }

    pub fn status(&self) -> serde_json::Value {
        self.try_status()
            .unwrap_or_else(|e| panic!("tslice status: {e}\n{}", self.log()))
    }

    /// One tenant of the status (panics if absent).
    pub fn tenant(&self, name: &str) -> serde_json::Value {
        let st = self.status();
        st["tenants"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no tenant {name:?} in {st:#}"))
    }

    /// Kills the broker with SIGKILL (as a crash would).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the broker with SIGTERM (as a service manager would) and waits
    /// for it to exit.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) of our own child, which has not been waited for.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let st = c.wait().expect("wait for the broker");
            assert!(
                st.success(),
                "the broker stopped with {st}:\n{}",
                self.log()
            );
        }
    }

    /// Starts it again on the same socket and configuration.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if let Some(d) = self.socket.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// cgroup v2 directories for one test, under the test process's own
/// cgroup (which works as root), removed when dropped.
pub struct Cgroups {
    /// The directory in the cgroup file system.
    root_dir: PathBuf,
    /// The same as `/proc/PID/cgroup` shows it.
    root_path: String,
    made: std::sync::Mutex<Vec<PathBuf>>,
}

impl Cgroups {
    pub fn new() -> Cgroups {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("/proc/self/mountinfo");
        let mount = mounts
            .lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                post.starts_with("cgroup2 ")
                    .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
                    .flatten()
            })
            .expect("no cgroup v2 file system is mounted: the broker tests need one");
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("no cgroup v2 line")
            .trim()
            .to_string();
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tslice-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let root_path = format!("{}/{name}", own.trim_end_matches('/'));
        let root_dir = mount.join(root_path.trim_start_matches('/'));
        std::fs::create_dir_all(&root_dir).unwrap_or_else(|e| {
            panic!(
                "cannot create cgroup {}: {e} (the broker tests run as root)",
                root_dir.display()
            )
        });
        Cgroups {
            root_dir: root_dir.clone(),
            root_path,
            made: std::sync::Mutex::new(vec![root_dir]),
        }
    }

    /// The cgroup path (as `/proc/PID/cgroup` shows it) of `name` below the
    /// test's root; created.
    pub fn path(&self, name: &str) -> String {
        // Each level made here is removed again (deepest first).
        let mut dir = self.root_dir.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).expect("create a cgroup");
                self.made.lock().unwrap().push(dir.clone());
            }
        }
        format!("{}/{name}", self.root_path)
    }

    /// The test's root cgroup path.
    pub fn root(&self) -> &str {
        &self.root_path
    }

    /// Wraps `cmd` so that it starts inside cgroup `name` (the shell moves
    /// itself there, then execs the program).
    pub fn wrap(&self, name: &str, cmd: Command) -> Command {
        let _ = self.path(name);
        let procs = self.root_dir.join(name).join("cgroup.procs");
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(procs)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }
}

impl Default for Cgroups {
    fn default() -> Self {
        Cgroups::new()
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner()).clone();
        made.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in made {
            for _ in 0..100 {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// A program run interactively: lines to its stdin, lines from its stdout.
pub struct Interactive {
    pub child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Interactive {
    pub fn spawn(mut cmd: Command) -> Interactive {
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Interactive {
            child,
            stdin,
            lines,
        }
    }

    /// The next line (30 s at most: a hang fails the test).
    pub fn line(&mut self) -> String {
        self.lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("pid {} printed nothing for 30 s", self.child.id()))
    }

    /// Sends a command and returns the line it answers.
    pub fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").expect("write to the child");
        self.line()
    }

    /// Sends a command that answers nothing.
    pub fn tell(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").expect("write to the child");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends it (exit command, then waits).
    pub fn finish(mut self) -> std::process::ExitStatus {
        let _ = writeln!(self.stdin, "exit");
        self.child.wait().expect("wait")
    }
}

/// The shim library built by `cargo build`.
pub fn shim() -> PathBuf {
    let p = profile_dir().join("libtslice.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// `tests/cuda/tenant.c`: a CUDA program that allocates on command.
pub fn tenant_prog() -> PathBuf {
    let libdir = format!("-L{}", profile_dir().display());
    build_cuda(&cuda_src("tenant.c"), &[&libdir, "-lcuda", "-lpthread"])
}

/// `tenant_prog` with `args` under the shim, connected to `broker`, started
/// in cgroup `cg` (a path below `cgroups`' root).
pub fn broker_tenant(
    gpu: &SimGpu,
    broker: &Broker,
    cgroups: &Cgroups,
    cg: &str,
    args: &[&str],
) -> Interactive {
    let mut c = gpu.command(&tenant_prog());
    c.args(args)
        .env("LD_PRELOAD", shim())
        .env("TSLICE_BROKER", &broker.socket);
    Interactive::spawn(cgroups.wrap(cg, c))
}

/// Memory the simulated device holds for these pids (ground truth).
pub fn device_used(gpu: &SimGpu, pids: &[u32]) -> u64 {
    gpu.monitor(0)
        .snapshot()
        .processes
        .iter()
        .filter(|p| pids.contains(&p.pid) && p.alive)
        .map(|p| p.mem_used)
        .sum()
}

/// Polls `cond` until it holds; fails the test after `limit`. Returns how
/// long it took.
pub fn wait_for(
    what: &str,
    limit: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    t0.elapsed()
}

#[cfg(test)]
mod tests {
    use super::latencies;

    #[test]
    fn latencies_follow_each_launch_through_its_runs() {
        // Launch at 0: waits until 100, runs 100-150 and 300-350 (preempted
        // between). Launch at 400: runs at once, 400-500.
        let runs = [(100, 150), (300, 350), (400, 500)];
        assert_eq!(latencies(&[0, 400], &runs, 100), Ok(vec![350, 100]));
        // A run that starts before the launch counts from the launch.
        assert_eq!(latencies(&[120], &[(100, 300)], 100), Ok(vec![100]));
        // Work that never finished, or finished only after the next launch.
        assert!(latencies(&[0], &[(0, 50)], 100).is_err());
        assert!(latencies(&[0, 60], &[(0, 50), (70, 120)], 100).is_err());
    }
}
