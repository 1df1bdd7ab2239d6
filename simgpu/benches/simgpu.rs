//! `cargo bench -p simgpu`: cost of the hot paths and the wake-up latency of
//! waiters. Prints a small table; the numbers are recorded in
//! `simgpu/README.md`.

use std::time::Instant;

use simgpu::{now_ns, Config, Device, Work, WorkKind};

fn dir(name: &str) -> std::path::PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("simgpu-bench-{}-{name}", std::process::id()))
}

fn config(d: &std::path::Path) -> Config {
    Config {
        dir: d.to_path_buf(),
        devices: 1,
        mem_bytes: 80 << 30,
        timeslice_ns: 1_024_000,
        switch_ns: 90_000,
        queue_depth: 1024,
    }
}

fn kernel(d: u64) -> Work {
    Work {
        kind: WorkKind::Kernel,
        duration_ns: d,
        tag: 0,
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn set_timer_slack(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let d = dir("ops");
    let dev = Device::open(&config(&d), 0).unwrap();
    let ctx = dev.create_context().unwrap();
    let n = 1_000_000u64;

    // Submits of 10 ns kernels: shorter than a submit, so the device keeps
    // up, the queue stays short and submit never blocks (with longer kernels
    // the queue fills and the loop measures the model's throughput instead);
    // each submit also completes the work that finished since the last one.
    let t = Instant::now();
    for _ in 0..n {
        ctx.submit(kernel(10));
    }
    let submit_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let last = ctx.last_submitted();
    ctx.wait(last);

    let t = Instant::now();
    let mut done = 0u64;
    for i in 0..n {
        done += ctx.is_complete(1 + i % last) as u64;
    }
    let query_ns = t.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(done, n);

    let marker = Work {
        kind: WorkKind::Marker,
        duration_ns: 0,
        tag: 0,
    };
    let t = Instant::now();
    for _ in 0..n {
        ctx.submit(marker);
    }
    let marker_ns = t.elapsed().as_nanos() as f64 / n as f64;

    let t = Instant::now();
    for _ in 0..n {
        dev.mem_charge(4096).unwrap();
        dev.mem_uncharge(4096);
    }
    let mem_ns = t.elapsed().as_nanos() as f64 / n as f64;

    // Two threads, two contexts, one device: contended lock. Markers, since
    // kernels of two contexts would wait for context switches (90 us each)
    // and the loop would measure the model.
    let c2 = dev.create_context().unwrap();
    let t = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..n / 2 {
                ctx.submit(marker);
            }
        });
        s.spawn(|| {
            for _ in 0..n / 2 {
                c2.submit(marker);
            }
        });
    });
    let contended_ns = t.elapsed().as_nanos() as f64 / n as f64;

    println!("simgpu hot paths (release build, {} submits):", n);
    println!("  submit (10 ns kernel, uncontended)   {submit_ns:8.1} ns/op");
    println!("  submit (marker, uncontended)         {marker_ns:8.1} ns/op");
    println!("  is_complete                          {query_ns:8.1} ns/op");
    println!("  mem_charge + mem_uncharge            {mem_ns:8.1} ns/pair");
    println!("  submit (marker), 2 threads, 2 ctxs   {contended_ns:8.1} ns/op (aggregate)");
    drop((ctx, c2, dev));
    let _ = std::fs::remove_dir_all(&d);

    // Wake-up latency: model completion time (event stamp) to the waiter
    // being back, for a 200 us kernel waited on right after submission.
    // simgpu lowers the slack itself while waiting; the thread's own setting
    // should not matter.
    for (label, slack) in [
        ("thread slack 50 us (default)", None),
        ("thread slack 1 us", Some(1_000)),
    ] {
        let d = dir("wake");
        let dev = Device::open(&config(&d), 0).unwrap();
        let ctx = dev.create_context().unwrap();
        let ev = ctx.alloc_event().unwrap();
        if let Some(s) = slack {
            set_timer_slack(s);
        }
        let mut lat = Vec::new();
        let t0 = now_ns();
        for _ in 0..2000 {
            ctx.submit(kernel(200_000));
            let m = ctx.record_event(&ev);
            ctx.wait(m);
            let back = now_ns();
            let done = ctx.event_time(&ev, m).unwrap();
            lat.push(back - done);
        }
        let wall = now_ns() - t0;
        if slack.is_some() {
            set_timer_slack(50_000);
        }
        let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
        println!(
            "wait wake-up latency, {label}: p50 {:.1} us, p99 {:.1} us, max {:.1} us ({} waits, {:.0} ms)",
            p50 as f64 / 1e3,
            p99 as f64 / 1e3,
            max as f64 / 1e3,
            lat.len(),
            wall as f64 / 1e6
        );
        drop((ctx, dev));
        let _ = std::fs::remove_dir_all(&d);
    }
}
