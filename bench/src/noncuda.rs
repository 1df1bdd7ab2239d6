//! `noncuda`: processes that never use CUDA, with the shim preloaded, must
//! run unchanged and cost nothing measurable (issue 2 §2). Times the whole
//! process (spawn to exit) of `ls /`, `python3 -c 1` and `threads-demo`
//! (8 threads of arithmetic), interleaved with and without `LD_PRELOAD`
//! (order A B B A, so drift cancels), and checks that their output is the
//! same both ways.

use crate::env::Setup;
use crate::report::{mean, median, progress, verdict, Report, Table};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

pub struct Params {
    pub iterations: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params { iterations: 60 }
    }
}

/// A run of `argv`, with the shim preloaded or not, from a clean environment
/// (no tslice variables, no other preload).
fn command(argv: &[String], shim: Option<&PathBuf>) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TSLICE_") {
            c.env_remove(k);
        }
    }
    c.env_remove("LD_PRELOAD");
    if let Some(s) = shim {
        c.env("LD_PRELOAD", s);
    }
    c
}

fn output(argv: &[String], shim: Option<&PathBuf>) -> Result<(String, String), String> {
    let o = command(argv, shim)
        .output()
        .map_err(|e| format!("cannot run {argv:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{argv:?} {} the shim failed ({}): {}",
            if shim.is_some() { "with" } else { "without" },
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok((
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

/// An empty shared library, as a reference: what preloading any library
/// costs on this machine. None (and a note) when there is no C compiler.
fn empty_preload(setup: &Setup) -> Option<PathBuf> {
    let dir = setup.release.join("bench-noncuda");
    std::fs::create_dir_all(&dir).ok()?;
    let src = dir.join("empty.c");
    let lib = dir.join("libempty.so");
    std::fs::write(&src, "void tslice_bench_empty(void) {}\n").ok()?;
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(lib)
}

/// Wall time of one run, spawn to exit, in ms.
fn time_once(argv: &[String], shim: Option<&PathBuf>) -> Result<f64, String> {
    let mut c = command(argv, shim);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let t = Instant::now();
    let st = c
        .status()
        .map_err(|e| format!("cannot run {argv:?}: {e}"))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !st.success() {
        return Err(format!("{argv:?} failed ({st})"));
    }
    Ok(ms)
}

pub fn run(setup: &Setup, p: &Params, rep: &mut Report) -> Result<(), String> {
    let demo = setup.sibling_bin("threads-demo")?;
    // `python3` on PATH may be a wrapper script (pyenv's shim runs a dozen
    // bash processes before the interpreter): time the interpreter itself.
    let (py, _) = output(
        &[
            "python3".into(),
            "-c".into(),
            "import sys; print(sys.executable)".into(),
        ],
        None,
    )?;
    let py = py.trim().to_string();
    let progs: Vec<(String, Vec<String>)> = vec![
        ("ls /".into(), vec!["ls".into(), "/".into()]),
        (
            format!("python3 -c 1 ({py})"),
            vec![py.clone(), "-c".into(), "1".into()],
        ),
        (
            "threads-demo (8 threads)".into(),
            vec![demo.display().to_string()],
        ),
    ];
    let shim = Some(&setup.shim);
    let empty = empty_preload(setup);
    rep.line(format!(
        "Wall time of the whole process (spawn to exit), {} runs each way, interleaved A B B A after 3 \
         warm-up runs each way. A/A noise: |median of odd - median of even| baseline runs. Verdict: \
         PASS when |added| <= max(3% of the baseline median, 2 x A/A noise), i.e. not measurable. Reference: the same programs with an empty library preloaded instead \
         (what any LD_PRELOAD costs here).",
        p.iterations
    ));
    rep.blank();
    let mut t = Table::new(&[
        "program",
        ">mean ms, no shim",
        ">median ms, no shim",
        ">mean ms, shim",
        ">median ms, shim",
        ">added ms (median)",
        ">ratio (median)",
        ">A/A noise ms",
        ">added ms, empty preload (reference)",
        "same output",
        "",
    ]);
    for (name, argv) in &progs {
        progress(format!("noncuda {name}"));
        let (o0, e0) = output(argv, None)?;
        let (o1, e1) = output(argv, shim)?;
        let same = o0 == o1 && e0 == e1;
        for _ in 0..3 {
            time_once(argv, None)?;
            time_once(argv, shim)?;
        }
        let (mut a, mut b, mut e) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..p.iterations {
            if i % 2 == 0 {
                a.push(time_once(argv, None)?);
                b.push(time_once(argv, shim)?);
            } else {
                b.push(time_once(argv, shim)?);
                a.push(time_once(argv, None)?);
            }
            if let Some(lib) = &empty {
                e.push(time_once(argv, Some(lib))?);
            }
        }
        let (ma, mb) = (median(&a), median(&b));
        let odd: Vec<f64> = a.iter().skip(1).step_by(2).copied().collect();
        let even: Vec<f64> = a.iter().step_by(2).copied().collect();
        let noise = (median(&odd) - median(&even)).abs();
        let added = mb - ma;
        let ok = same && added.abs() <= (0.03 * ma).max(2.0 * noise);
        t.row(vec![
            name.clone(),
            format!("{:.3}", mean(&a)),
            format!("{ma:.3}"),
            format!("{:.3}", mean(&b)),
            format!("{mb:.3}"),
            format!("{added:+.3}"),
            format!("{:.3}", mb / ma),
            format!("{noise:.3}"),
            if e.is_empty() {
                "-".into()
            } else {
                format!("{:+.3}", median(&e) - ma)
            },
            if same { "yes" } else { "NO" }.into(),
            verdict(ok),
        ]);
    }
    rep.table(&t);
    if empty.is_none() {
        rep.blank();
        rep.line("(no C compiler `cc`: the empty-preload reference was not measured)");
    }
    Ok(())
}
