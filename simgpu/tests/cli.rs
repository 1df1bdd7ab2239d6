//! The `simgpu` command-line tool.

mod common;

use std::process::Command;

use common::{kernel, TestDir, MS};
use simgpu::Device;

fn simgpu(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_simgpu"));
    c.args(args).env_remove("SIMCUDA_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

/// Brackets balance outside strings, and the text is one object.
fn looks_like_json_object(s: &str) -> bool {
    let s = s.trim();
    let (mut depth, mut in_str, mut esc) = (0i32, false, false);
    for ch in s.chars() {
        if in_str {
            match (esc, ch) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    depth == 0 && !in_str && s.starts_with('{') && s.ends_with('}')
}

#[test]
fn status_and_busy_print_the_ground_truth() {
    let t = TestDir::new("cli");
    let d = Device::open(&t.config(), 0).unwrap();
    d.mem_charge(12345).unwrap();
    let c = d.create_context().unwrap();
    let s = c.submit(kernel(3 * MS));
    c.wait(s);
    let dir = t.0.to_str().unwrap();
    let pid = std::process::id();

    let (code, out, err) = simgpu(&["status", "--dir", dir, "--device", "0"], &[]);
    assert_eq!(code, 0, "{err}");
    println!("{out}");
    assert!(looks_like_json_object(&out), "{out}");
    assert!(out.contains("\"mem_used\":12345"), "{out}");
    assert!(out.contains("\"mem_total\":1073741824"), "{out}");
    assert!(out.contains("\"timeslice_ns\":1024000"), "{out}");
    assert!(out.contains(&format!(
        "{{\"pid\":{pid},\"alive\":true,\"mem_used\":12345,\"mem_peak\":12345,\"busy_ns\":3000000,\"items_completed\":1}}"
    )), "{out}");
    assert!(out.contains("\"state\":\"open\""), "{out}");

    // SIMCUDA_DIR is the default directory.
    let (code, out2, _) = simgpu(&["status"], &[("SIMCUDA_DIR", dir)]);
    assert_eq!(code, 0);
    assert!(out2.contains("\"mem_used\":12345"));

    let (code, out, err) = simgpu(
        &[
            "busy",
            "--dir",
            dir,
            "--pid",
            &pid.to_string(),
            "--from",
            "0",
            "--to",
            &u64::MAX.to_string(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(looks_like_json_object(&out), "{out}");
    assert!(out.contains("\"busy_ns\":3000000"), "{out}");
    assert!(out.contains("\"complete\":true"), "{out}");
}

#[test]
fn errors_are_reported_with_status() {
    let t = TestDir::new("cli-err");
    let dir = t.0.to_str().unwrap();
    let (code, out, err) = simgpu(&["status", "--dir", dir], &[]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("device0.shm"), "{err}");
    let (code, _, err) = simgpu(&["busy", "--dir", dir, "--pid", "1"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("usage"), "{err}");
    let (code, _, err) = simgpu(&["status", "--device", "x"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--device"), "{err}");
    let (code, _, err) = simgpu(&["frobnicate"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown command"), "{err}");
    let (code, _, err) = simgpu(&["status"], &[("SIMCUDA_DIR", "relative")]);
    assert_eq!(code, 1);
    assert!(err.contains("SIMCUDA_DIR=\"relative\" is invalid"), "{err}");
}
