//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use simgpu::Config;

/// A fresh device directory, removed on drop. On /dev/shm when it exists.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!(
            "simgpu-test-{}-{}-{}",
            std::process::id(),
            name,
            simgpu::now_ns()
        ));
        TestDir(d)
    }
    pub fn config(&self) -> Config {
        Config {
            dir: self.0.clone(),
            devices: 2,
            mem_bytes: 1 << 30,
            timeslice_ns: 1_024_000,
            switch_ns: 90_000,
            queue_depth: 1024,
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const US: u64 = 1_000;
pub const MS: u64 = 1_000_000;

pub fn kernel(d: u64) -> simgpu::Work {
    simgpu::Work {
        kind: simgpu::WorkKind::Kernel,
        duration_ns: d,
        tag: 1,
    }
}

/// CPU time consumed by the calling thread, in ns.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer; CLOCK_THREAD_CPUTIME_ID always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
