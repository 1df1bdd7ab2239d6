//! The shared-memory device within one process: files, ledger, contexts in
//! real time. (Several processes: `tests/multiprocess.rs`.)

mod common;

use std::io::Write;
use std::sync::Arc;

use common::{kernel, thread_cpu_ns, TestDir, MS, US};
use simgpu::{now_ns, Device, Monitor, SimError, Work, WorkKind};

#[test]
fn open_creates_then_attaches_and_first_config_wins() {
    let t = TestDir::new("open");
    let cfg = t.config();
    assert!(Monitor::open(&t.0, 0).is_err(), "no file yet");
    let d0 = Device::open(&cfg, 0).unwrap();
    assert!(t.0.join("device0.shm").exists());
    assert_eq!(d0.ordinal(), 0);
    assert_eq!(d0.total_mem(), 1 << 30);
    // A later process with another size attaches to what is there.
    let mut other = cfg.clone();
    other.mem_bytes = 5 << 20;
    other.queue_depth = 4;
    let d0b = Device::open(&other, 0).unwrap();
    assert_eq!(d0b.total_mem(), 1 << 30);
    assert_eq!(
        (d0b.queue_depth(), d0b.timeslice_ns(), d0b.switch_ns()),
        (1024, 1_024_000, 90_000)
    );
    assert_eq!(d0b.uuid(), d0.uuid());
    let d1 = Device::open(&cfg, 1).unwrap();
    assert_ne!(d1.uuid(), d0.uuid());
    assert!(Device::open(&cfg, 2).is_err(), "SIMCUDA_DEVICES=2");
    let m = Monitor::open(&t.0, 0).unwrap();
    assert_eq!(m.uuid(), d0.uuid());
    assert_eq!(m.total_mem(), 1 << 30);
    let det = m.details().unwrap();
    assert_eq!(det.queue_depth, 1024);
    assert_eq!(det.timeslice_ns, 1_024_000);
    assert_eq!(det.switch_ns, 90_000);
    // The uuid is stable per (dir, ordinal): the same after re-creating.
    let u = d0.uuid();
    drop((d0, d0b, m));
    std::fs::remove_file(t.0.join("device0.shm")).unwrap();
    assert_eq!(Device::open(&cfg, 0).unwrap().uuid(), u);
}

#[test]
fn foreign_or_incompatible_files_are_refused() {
    let t = TestDir::new("bad");
    let cfg = t.config();
    std::fs::create_dir_all(&t.0).unwrap();
    let path = t.0.join("device0.shm");
    std::fs::write(&path, vec![7u8; 8192]).unwrap();
    let e = Device::open(&cfg, 0).err().unwrap().to_string();
    assert!(e.contains("not a simgpu device file"), "{e}");
    std::fs::write(&path, b"tiny").unwrap();
    let e = Device::open(&cfg, 0).err().unwrap().to_string();
    assert!(e.contains("too small"), "{e}");
    // A valid file with another layout version.
    std::fs::remove_file(&path).unwrap();
    drop(Device::open(&cfg, 0).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_ne_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = Device::open(&cfg, 0).err().unwrap().to_string();
    assert!(e.contains("layout version 99"), "{e}");
    let e = Monitor::open(&t.0, 0).err().unwrap().to_string();
    assert!(e.contains("layout version 99"), "{e}");
    // Truncated.
    bytes[8..12].copy_from_slice(&simgpu::LAYOUT_VERSION.to_ne_bytes());
    bytes.truncate(bytes.len() - 4096);
    std::fs::write(&path, &bytes).unwrap();
    let e = Device::open(&cfg, 0).err().unwrap().to_string();
    assert!(e.contains("its header says"), "{e}");
    // Left half-made by a creator that died (magic never written): redone.
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all(&[0u8; 8]).unwrap();
    drop(f);
    let d = Device::open(&cfg, 0).unwrap();
    assert_eq!(d.total_mem(), 1 << 30);
}

#[test]
fn ledger_and_monitor_agree() {
    let t = TestDir::new("ledger");
    let mut cfg = t.config();
    cfg.mem_bytes = 1000;
    let d = Device::open(&cfg, 0).unwrap();
    d.mem_charge(600).unwrap();
    assert_eq!(d.mem_charge(401), Err(simgpu::OutOfMemory));
    d.mem_charge(400).unwrap();
    assert_eq!(d.mem_used(), 1000);
    d.mem_uncharge(700);
    assert_eq!(d.mem_used(), 300);
    let s = Monitor::open(&t.0, 0).unwrap().snapshot();
    assert_eq!((s.mem_total, s.mem_used, s.mem_peak), (1000, 300, 1000));
    let me = s
        .processes
        .iter()
        .find(|p| p.pid == std::process::id())
        .unwrap();
    assert!(me.alive);
    assert_eq!((me.mem_used, me.mem_peak), (300, 1000));
}

#[test]
fn real_time_kernels_markers_and_events() {
    let t = TestDir::new("rt");
    let d = Device::open(&t.config(), 0).unwrap();
    let c = d.create_context().unwrap();
    let e1 = c.alloc_event().unwrap();
    let e2 = c.alloc_event().unwrap();
    let t0 = now_ns();
    // A marker behind a kernel completes when the kernel does, and the next
    // kernel starts at that instant: the events bracket exactly 5 ms, as
    // long as everything was queued behind the first kernel (a blocker of
    // 100 ms; the clock tells whether this thread was descheduled longer).
    let blocker = 100 * MS;
    let k0 = c.submit(kernel(blocker));
    let m1 = c.record_event(&e1);
    let k = c.submit(kernel(5 * MS));
    let m2 = c.record_event(&e2);
    let queued_behind = now_ns() - t0 < blocker;
    assert_eq!((k0, m1, k, m2), (1, 2, 3, 4));
    assert_eq!(c.last_submitted(), 4);
    // Not complete before its time (checked against the clock, so a
    // descheduled test thread cannot make this flaky).
    let done_early = c.is_complete(k);
    assert!(!done_early || now_ns() - t0 >= blocker + 5 * MS);
    assert_eq!(c.event_time(&e2, m2), None);
    c.wait(m2);
    let waited = now_ns() - t0;
    assert!(c.is_complete(k));
    let (a, b) = (
        c.event_time(&e1, m1).unwrap(),
        c.event_time(&e2, m2).unwrap(),
    );
    // The second marker takes its 1 ns of device time after the kernel.
    if queued_behind {
        assert_eq!(b - a, 5 * MS + simgpu::model::MIN_DEVICE_NS);
    } else {
        assert!(b - a >= 5 * MS + simgpu::model::MIN_DEVICE_NS);
    }
    assert!(a >= t0 + blocker);
    assert!(waited >= blocker + 5 * MS, "{waited}");
    assert!(
        waited < blocker + 5 * MS + 200 * MS,
        "generous bound for a loaded machine: {waited}"
    );
    // A marker on an empty queue of the resident context completes at once.
    let e0 = c.alloc_event().unwrap();
    let before = now_ns();
    let m0 = c.record_event(&e0);
    c.wait(m0);
    let stamp = c.event_time(&e0, m0).unwrap();
    assert!(stamp >= before && stamp <= now_ns());
    let pid = std::process::id();
    let m = Monitor::open(&t.0, 0).unwrap();
    // Two kernels and three markers of 1 ns each.
    let markers = 3 * simgpu::model::MIN_DEVICE_NS;
    assert_eq!(m.busy_between(pid, 0, u64::MAX), blocker + 5 * MS + markers);
    assert_eq!(m.busy_between(pid, a, a + MS), MS);
    let around = m.busy_between(pid, a - MS, b + MS);
    assert!(
        (6 * MS - markers..=6 * MS + markers).contains(&around),
        "{around}"
    );
    let r = m.busy_report(pid, 0, u64::MAX).unwrap();
    assert!(r.complete);
    let me = m
        .snapshot()
        .processes
        .into_iter()
        .find(|p| p.pid == pid)
        .unwrap();
    assert_eq!(me.busy_ns, blocker + 5 * MS + markers);
    assert_eq!(me.items_completed, 5);
    c.free_event(e1);
    assert!(matches!(
        c.try_record_event(&simgpu::EventSlot { index: 0 }),
        Err(SimError::BadEvent)
    ));
    assert!(matches!(c.try_wait(99), Err(SimError::InvalidSeq)));
    assert!(!c.is_complete(99));
    // A copy behind nothing completes at once.
    let cp = c.submit(Work {
        kind: WorkKind::Copy,
        duration_ns: 0,
        tag: 0,
    });
    assert!(c.is_complete(cp));
}

#[test]
fn wait_sleeps_instead_of_spinning() {
    let t = TestDir::new("sleep");
    let d = Device::open(&t.config(), 0).unwrap();
    let c = d.create_context().unwrap();
    let s = c.submit(kernel(150 * MS));
    let cpu0 = thread_cpu_ns();
    let t0 = now_ns();
    c.wait(s);
    let wall = now_ns() - t0;
    let cpu = thread_cpu_ns() - cpu0;
    assert!(wall >= 140 * MS, "{wall}");
    // ~150 wake-ups of a few us each; spinning would burn ~150 ms.
    assert!(cpu < 30 * MS, "waiting used {cpu} ns of CPU over {wall} ns");
}

#[test]
fn full_queue_blocks_the_submitter() {
    let t = TestDir::new("full");
    let mut cfg = t.config();
    cfg.queue_depth = 2;
    let d = Device::open(&cfg, 0).unwrap();
    let c = d.create_context().unwrap();
    let t0 = now_ns();
    c.submit(kernel(30 * MS));
    c.submit(kernel(30 * MS));
    assert!(
        !c.is_complete(1) || now_ns() - t0 >= 30 * MS,
        "two fit without waiting"
    );
    let cpu0 = thread_cpu_ns();
    let s3 = c.submit(kernel(MS));
    let blocked = now_ns() - t0;
    assert_eq!(s3, 3);
    assert!(
        blocked >= 30 * MS,
        "the third waits for the first to finish: {blocked}"
    );
    assert!(c.is_complete(1));
    assert!(thread_cpu_ns() - cpu0 < 15 * MS, "blocked by sleeping");
    c.wait(s3);
}

#[test]
fn contexts_are_shared_between_threads() {
    let t = TestDir::new("threads");
    let d = Device::open(&t.config(), 0).unwrap();
    let c = Arc::new(d.create_context().unwrap());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..250 {
                    let s = c.submit(kernel(10 * US));
                    assert!(s > last, "seqs increase per thread");
                    last = s;
                }
                c.wait(last);
                last
            })
        })
        .collect();
    let max = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap();
    assert_eq!(max, 1000);
    assert!(c.is_complete(1000));
    let m = Monitor::open(&t.0, 0).unwrap();
    assert_eq!(
        m.busy_between(std::process::id(), 0, u64::MAX),
        1000 * 10 * US
    );
}

#[test]
fn two_contexts_in_one_process_time_slice() {
    // Two contexts of one process are two contexts to the device (as with
    // real time-slicing): they alternate with switches.
    let t = TestDir::new("twoctx");
    let d = Device::open(&t.config(), 0).unwrap();
    let a = d.create_context().unwrap();
    let b = d.create_context().unwrap();
    for _ in 0..20 {
        a.submit(kernel(MS));
        b.submit(kernel(MS));
    }
    let (la, lb) = (a.last_submitted(), b.last_submitted());
    a.wait(la);
    b.wait(lb);
    let det = Monitor::open(&t.0, 0).unwrap().details().unwrap();
    // How often they alternate depends on how the submissions interleave in
    // real time (exact alternation is tested on the pure model); the
    // accounting is exact whatever happened.
    let switches = det.snapshot.context_switches;
    assert!(switches >= 1);
    assert_eq!(det.switching_ns, switches * 90 * US);
    let ca = det.contexts.iter().find(|c| c.index == a.index()).unwrap();
    let cb = det.contexts.iter().find(|c| c.index == b.index()).unwrap();
    assert_eq!((ca.busy_ns, cb.busy_ns), (20 * MS, 20 * MS));
    assert_eq!(det.busy_ns, 40 * MS);
    drop(a);
    let det = Monitor::open(&t.0, 0).unwrap().details().unwrap();
    assert_eq!(
        det.contexts.iter().find(|c| c.index == 0).unwrap().state,
        "done"
    );
}
