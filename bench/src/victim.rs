//! `victim`: latency of a latency-sensitive tenant (`tests/cuda/victim.cu`:
//! one 200 us kernel, then synchronize, in a loop) alone, beside a saturating
//! neighbour with no enforcement (plain time-slicing), and beside the same
//! neighbour capped at 50% by tslice. The victim measures its own latencies
//! (launch to end of synchronize), so this runs unchanged on a real GPU.

use crate::env::{program, Gpu, Setup};
use crate::report::{field, progress, verdict, Report, Table};
use crate::run;

/// The GPU's timeslice (the simulated GPU's default, and the open kernel
/// modules' default on real GPUs).
const TIMESLICE_US: f64 = 1024.0;

pub struct Params {
    pub solo_seconds: f64,
    pub seconds: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            solo_seconds: 1.5,
            seconds: 2.5,
        }
    }
}

struct Lat {
    p50: f64,
    p99: f64,
    max: f64,
    samples: f64,
}

/// One victim run on a fresh GPU; `neighbour`: None alone, Some(None) beside
/// an unenforced neighbour, Some(Some(cap)) beside a capped one.
fn victim_run(setup: &Setup, neighbour: Option<Option<&str>>, secs: f64) -> Result<Lat, String> {
    let victim = program(&tslice_tests::cuda_src("victim.cu"));
    let spin = program(&tslice_tests::cuda_src("spin_loop.cu"));
    let gpu = Gpu::new(setup)?;
    let n = match neighbour {
        None => None,
        Some(limit) => {
            let mut c = match limit {
                Some(l) => gpu.command_with_shim(&spin, &[("TSLICE_COMPUTE_LIMIT", l)]),
                None => gpu.command(&spin),
            };
            // The neighbour outlasts the victim (which starts 0.3 s later and
            // warms up first).
            c.args(["kernels", "200", &format!("{}", secs + 0.9)]);
            Some(run::spawn(c)?)
        }
    };
    if n.is_some() {
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let mut c = gpu.command(&victim);
    c.args(["200", &secs.to_string()]);
    let v = run::run(c);
    let n = n.map(run::finish).transpose();
    let v = v.map_err(|e| format!("victim: {e}"))?;
    n.map_err(|e| format!("neighbour: {e}"))?;
    Ok(Lat {
        p50: field(&v.out, "p50_us")?,
        p99: field(&v.out, "p99_us")?,
        max: field(&v.out, "max_us")?,
        samples: field(&v.out, "samples")?,
    })
}

pub fn run(setup: &Setup, p: &Params, rep: &mut Report) -> Result<(), String> {
    progress("victim solo");
    let solo = victim_run(setup, None, p.solo_seconds)?;
    progress("victim beside an unenforced neighbour");
    let open = victim_run(setup, Some(None), p.seconds)?;
    progress("victim beside a neighbour capped at 50%");
    let cap = victim_run(setup, Some(Some("50%")), p.seconds)?;
    rep.line(format!(
        "Victim: 200 us kernel + synchronize in a loop ({} s solo, {} s beside the neighbour); \
         neighbour: saturating loop of 200 us kernels. Latency of launch + synchronize, us.",
        p.solo_seconds, p.seconds
    ));
    rep.blank();
    let mut t = Table::new(&["victim", ">samples", ">p50 us", ">p99 us", ">max us"]);
    for (name, l) in [
        ("solo", &solo),
        ("beside a neighbour, no enforcement", &open),
        ("beside a neighbour capped at 50% by tslice", &cap),
    ] {
        t.row(vec![
            name.into(),
            format!("{:.0}", l.samples),
            format!("{:.1}", l.p50),
            format!("{:.1}", l.p99),
            format!("{:.1}", l.max),
        ]);
    }
    rep.table(&t);
    rep.blank();
    let bound = 1.5 * solo.p99 + TIMESLICE_US;
    let mut t = Table::new(&["check", ">measured", ">target", ""]);
    t.row(vec![
        "p99 with the capped neighbour <= 1.5 x solo p99 + one timeslice".into(),
        format!("{:.1} us", cap.p99),
        format!("<= {bound:.1} us"),
        verdict(cap.p99 <= bound),
    ]);
    t.row(vec![
        "p50 with the capped neighbour < p50 with no enforcement".into(),
        format!("{:.1} us", cap.p50),
        format!("< {:.1} us", open.p50),
        verdict(cap.p50 < open.p50),
    ]);
    rep.table(&t);
    Ok(())
}
