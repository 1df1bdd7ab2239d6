//! Starting and collecting the CUDA programs.

use crate::report::field_u64;
use std::process::{Child, Command, Stdio};

/// A finished CUDA program.
pub struct Done {
    pub pid: u32,
    pub out: String,
    /// CLOCK_MONOTONIC ns when its measured loop started (if it prints one).
    pub t_start: u64,
    /// ... and ended (the victim prints none).
    pub t_end: Option<u64>,
}

pub fn spawn(mut cmd: Command) -> Result<Child, String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))
}

/// Waits for a program and checks that it succeeded (`OK FAILS=0`).
pub fn finish(child: Child) -> Result<Done, String> {
    let pid = child.id();
    let o = child
        .wait_with_output()
        .map_err(|e| format!("waiting for pid {pid}: {e}"))?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() || !out.contains("OK FAILS=0") {
        return Err(format!(
            "pid {pid} failed ({}):\n--- stdout\n{out}--- stderr\n{err}",
            o.status
        ));
    }
    let t_start = if out.contains("t_start=") {
        field_u64(&out, "t_start")?
    } else {
        0
    };
    let t_end = if out.contains("t_end=") {
        Some(field_u64(&out, "t_end")?)
    } else {
        None
    };
    Ok(Done {
        pid,
        out,
        t_start,
        t_end,
    })
}

/// Runs a program to completion; see [`finish`].
pub fn run(cmd: Command) -> Result<Done, String> {
    finish(spawn(cmd)?)
}
