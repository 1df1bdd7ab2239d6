//! The broker against processes that do not play by the rules: pages
//! truncated under its mappings, connections that say nothing, lies about
//! the device or about what they hold, reservations that cross, budget
//! pages reopened for writing, absurd requests; and the shim against a
//! broker that answers too late. Each was a defect found by review; each
//! test failed before its fix. Ground truth from the simulated device and
//! the broker's own status.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::Duration;
use tslice_proto::page::{BudgetPage, BUDGET_LEN, BUDGET_MAGIC, PAGE_VERSION};
use tslice_proto::{FrameBuf, Msg};
use tslice_tests::raw::{self, HelloSpec, RawClient};
use tslice_tests::{
    device_used, field, shim, tenant_prog, wait_for, workspace_bin, Broker, Cgroups, Interactive,
    SimGpu,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A tenant process under the shim, connected to `broker`, in cgroup `cg`.
fn tenant(gpu: &SimGpu, broker: &Broker, cg: &Cgroups, name: &str, args: &[&str]) -> Interactive {
    tslice_tests::broker_tenant(gpu, broker, cg, name, args)
}

/// A scripted raw client (`broker_client`) in cgroup `name`.
fn raw_client(broker: &Broker, cg: &Cgroups, name: &str) -> Interactive {
    let mut c = Command::new(workspace_bin("broker_client"));
    c.arg(&broker.socket);
    Interactive::spawn(cg.wrap(name, c))
}

fn one_tenant(cg: &Cgroups, limit: &str) -> String {
    format!(
        "[[tenant]]\nname = \"a\"\ncgroup = \"{}\"\nmemory-limit = \"{limit}\"\n",
        cg.path("a")
    )
}

/// The device's UUID as 32 hex digits, from the broker's status.
fn device_hex(broker: &Broker) -> String {
    let st = broker.status();
    st["devices"][0]["uuid"]
        .as_str()
        .expect("a device in the status")
        .trim_start_matches("GPU-")
        .replace('-', "")
}

fn alive(broker: &Broker) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", broker.pid()))
        .is_ok_and(|s| !s.contains(") Z "))
}

fn processes(broker: &Broker) -> usize {
    broker.status()["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["processes"].as_array().unwrap().len())
        .sum()
}

#[test]
fn a_process_page_that_can_shrink_is_refused_and_cannot_kill_the_broker() {
    let broker = Broker::start("");
    // The shim's kind of page: sealed, so it cannot be truncated.
    let mut good = RawClient::connect(&broker.socket).unwrap();
    good.hello(&HelloSpec::default()).unwrap();
    let e = good.truncate_page().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    drop(good);
    wait_for(
        "the first connection is gone",
        Duration::from_secs(5),
        || processes(&broker) == 0,
    );
    // An unsealed one is not mapped at all; truncating it harms nobody.
    let mut bad = RawClient::connect(&broker.socket).unwrap();
    bad.hello(&HelloSpec {
        page: Some(false),
        ..HelloSpec::default()
    })
    .unwrap();
    bad.truncate_page().unwrap();
    wait_for("the refusal is logged", Duration::from_secs(5), || {
        broker.log().contains("F_SEAL_SHRINK")
    });
    // Ticks (every 10 ms) read every mapped page; the broker lives on.
    for _ in 0..10 {
        assert_eq!(processes(&broker), 1);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(alive(&broker), "{}", broker.log());
}

#[test]
fn connections_that_say_nothing_are_closed_and_cannot_starve_the_broker() {
    let broker = Broker::start("");
    // A service's usual descriptor limit, lower than the connections below.
    let st = Command::new("prlimit")
        .args(["--pid", &broker.pid().to_string(), "--nofile=256:256"])
        .status()
        .unwrap();
    assert!(st.success());
    let mut idle = Vec::new();
    for _ in 0..300 {
        match UnixStream::connect(&broker.socket) {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    assert!(idle.len() > 256, "the backlog takes the rest");
    // Each is closed by the broker once its Hello is overdue (5 s).
    let first = &mut idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 8];
    let n = std::io::Read::read(first, &mut buf);
    assert!(matches!(n, Ok(0) | Err(_)), "closed: {n:?}");
    drop(idle);
    // It still serves.
    wait_for("the broker answers again", Duration::from_secs(10), || {
        broker.try_status().is_ok()
    });
    let mut c = RawClient::connect(&broker.socket).unwrap();
    assert!(c.hello(&HelloSpec::default()).is_ok());
    assert!(alive(&broker), "{}", broker.log());
}

#[test]
fn a_lie_about_the_devices_size_cannot_raise_a_share_of_device_limit() {
    let cg = Cgroups::new();
    let broker = Broker::start(&one_tenant(&cg, "10%"));
    let gpu = SimGpu::new();
    let mut p = tenant(&gpu, &broker, &cg, "a/x", &["grab", "64", "64"]);
    assert_eq!(field(&p.line(), "held") as u64, 64 * MIB);
    let limit = broker.tenant("a")["devices"][0]["memory_limit"]
        .as_u64()
        .unwrap();
    // A sibling claims the device is enormous, then leaves.
    let mut liar = raw_client(&broker, &cg, "a/y");
    let said = liar.ask(&format!(
        "hello total={} uuid={}",
        u64::MAX / 2,
        device_hex(&broker)
    ));
    assert_eq!(said, "tenant=a");
    assert!(liar.finish().success());
    assert_eq!(
        broker.tenant("a")["devices"][0]["memory_limit"].as_u64(),
        Some(limit)
    );
    // The honest process still cannot pass the limit.
    for _ in 0..4 {
        p.ask(&format!("alloc {}", limit / MIB / 2));
    }
    let used = device_used(&gpu, &[p.pid()]);
    assert!(used <= limit, "{used} > {limit}");
    assert!(p.finish().success());
}

#[test]
fn a_reconnect_that_claims_everything_cannot_make_the_ledger_forget_siblings() {
    let cg = Cgroups::new();
    let broker = Broker::start(&one_tenant(&cg, "1GiB"));
    let gpu = SimGpu::new();
    let mut p1 = tenant(&gpu, &broker, &cg, "a/x", &["grab", "768", "64"]);
    assert_eq!(field(&p1.line(), "held") as u64, 768 * MIB);
    let mut liar = raw_client(&broker, &cg, "a/y");
    let said = liar.ask(&format!(
        "hello total={} reconnect={} uuid={}",
        80 * GIB,
        u64::MAX,
        device_hex(&broker)
    ));
    assert_eq!(said, "tenant=a");
    assert!(liar.finish().success());
    wait_for("the liar is gone", Duration::from_secs(5), || {
        processes(&broker) == 1
    });
    let mut p2 = tenant(&gpu, &broker, &cg, "a/z", &["grab", "768", "64"]);
    let held2 = field(&p2.line(), "held") as u64;
    let used = device_used(&gpu, &[p1.pid(), p2.pid()]);
    assert!(
        used <= GIB,
        "tenant a holds {used} > 1 GiB (p2 got {held2})"
    );
    assert!(p1.finish().success() && p2.finish().success());
}

#[test]
fn siblings_reserving_at_once_each_get_what_the_other_returns() {
    let cg = Cgroups::new();
    let broker = Broker::start(&one_tenant(&cg, "1GiB"));
    let mut a = raw_client(&broker, &cg, "a/x");
    let mut b = raw_client(&broker, &cg, "a/y");
    for c in [&mut a, &mut b] {
        assert_eq!(c.ask("hello total=85899345920"), "tenant=a");
        let g: u64 = c.ask(&format!("reserve {}", 448 * MIB))[6..]
            .parse()
            .unwrap();
        assert!(g >= 448 * MIB);
    }
    // Neither has room for 256 MiB more unless the other returns what it
    // holds unused, which each does when asked (as the shim does).
    let ra = a.ask(&format!("send-reserve {}", 256 * MIB));
    let rb = b.ask(&format!("send-reserve {}", 256 * MIB));
    let ga = a.ask(&format!("wait {}", &ra[4..]));
    let gb = b.ask(&format!("wait {}", &rb[4..]));
    let granted = |s: &str| s.strip_prefix("grant=").unwrap().parse::<u64>().unwrap();
    assert!(
        granted(&ga) >= 256 * MIB && granted(&gb) >= 256 * MIB,
        "{ga} {gb}: each was refused waiting for the other"
    );
    let reserved = broker.tenant("a")["devices"][0]["memory_reserved"]
        .as_u64()
        .unwrap();
    assert!(reserved <= GIB);
    assert!(a.finish().success() && b.finish().success());
}

#[test]
fn a_budget_page_cannot_be_reopened_for_writing() {
    let broker = Broker::start("");
    let mut c = RawClient::connect(&broker.socket).unwrap();
    c.hello(&HelloSpec::default()).unwrap();
    assert!(c.budget.is_some());
    assert!(
        !c.budget_writable(),
        "the process mapped its own budget writable"
    );
}

/// Two processes of a 1 GiB tenant hold 960 MiB; the broker is stopped by
/// `stop` and started again; a new process asks for 1 GiB at once, before
/// its siblings are back: the tenant never holds more than 1 GiB.
fn restart_keeps_the_ledger_whole(stop: impl FnOnce(&mut Broker)) -> (Broker, Cgroups) {
    let cg = Cgroups::new();
    let mut broker = Broker::start(&one_tenant(&cg, "1GiB"));
    let gpu = SimGpu::new();
    let mut p1 = tenant(&gpu, &broker, &cg, "a/x", &["grab", "512", "64"]);
    assert_eq!(field(&p1.line(), "held") as u64, 512 * MIB);
    let mut p2 = tenant(&gpu, &broker, &cg, "a/y", &["grab", "448", "64"]);
    assert_eq!(field(&p2.line(), "held") as u64, 448 * MIB);
    stop(&mut broker);
    // Long enough for the shims' reconnect backoff to grow to its cap.
    std::thread::sleep(Duration::from_millis(1400));
    broker.restart();
    let mut p3 = tenant(&gpu, &broker, &cg, "a/z", &["grab", "1024", "64"]);
    let held3 = field(&p3.line(), "held") as u64;
    let used = device_used(&gpu, &[p1.pid(), p2.pid(), p3.pid()]);
    assert!(
        used <= GIB,
        "tenant a holds {used} > 1 GiB (p3 got {held3})"
    );
    assert!(p1.finish().success() && p2.finish().success() && p3.finish().success());
    (broker, cg)
}

#[test]
fn a_restarted_broker_grants_nothing_its_reconnecting_processes_still_hold() {
    restart_keeps_the_ledger_whole(|b| b.kill9());
}

#[test]
fn a_reservation_beyond_any_device_is_refused_and_the_process_leaves_cleanly() {
    let broker = Broker::start("");
    {
        let mut c = RawClient::connect(&broker.socket).unwrap();
        c.hello(&HelloSpec::default()).unwrap();
        assert_eq!(c.reserve(u64::MAX - 4096).unwrap(), Some(0));
        assert_eq!(c.reserve(u64::MAX).unwrap(), Some(0));
        assert!(c.reserve(64 * MIB).unwrap().is_some_and(|g| g >= 64 * MIB));
    }
    wait_for("the process is gone", Duration::from_secs(5), || {
        processes(&broker) == 0
    });
    assert!(!broker.log().contains("panicked"), "{}", broker.log());
}

/// A broker of the test's own making that answers a reservation only after
/// the shim stopped waiting for it: the late grant must come back.
#[test]
fn a_grant_that_comes_too_late_is_given_back() {
    let dir = tempdir();
    let path = dir.join("late.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut fb = FrameBuf::new();
        let mut page = None;
        let next = |fb: &mut FrameBuf, page: &mut Option<_>| loop {
            if let Some(m) = fb.next_msg().unwrap() {
                return m;
            }
            raw::recv_with_fd(&sock, fb, page).unwrap();
        };
        assert!(matches!(next(&mut fb, &mut page), Msg::Hello(_)));
        let budget = budget_page();
        raw::send_with_fd(
            &sock,
            &Msg::Welcome {
                tenant: "late".into(),
                flags: 0,
            }
            .encode(),
            budget.as_raw_fd(),
        )
        .unwrap();
        let Msg::Reserve { req, dev, .. } = next(&mut fb, &mut page) else {
            panic!("expected a reservation")
        };
        // The tenant has given up on it (it printed its result).
        go_rx.recv().unwrap();
        (&sock)
            .write_all(
                &Msg::Grant {
                    req,
                    bytes: 128 * MIB,
                }
                .encode(),
            )
            .unwrap();
        let back = next(&mut fb, &mut page);
        (dev, back)
    });
    let gpu = SimGpu::new();
    let mut c = gpu.command(&tenant_prog());
    c.args(["grab", "64", "64"])
        .env("LD_PRELOAD", shim())
        .env("TSLICE_BROKER", &path);
    let mut p = Interactive::spawn(c);
    assert_eq!(
        field(&p.line(), "held") as u64,
        0,
        "no answer in time: refused"
    );
    go_tx.send(()).unwrap();
    let (dev, back) = server.join().unwrap();
    assert_eq!(
        back,
        Msg::Release {
            dev,
            bytes: 128 * MIB
        }
    );
    assert!(p.finish().success());
}

use std::io::Write;

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tslice-hostile-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A budget page as a broker makes it: no limits.
fn budget_page() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    use std::sync::atomic::Ordering;
    // SAFETY: test code: a memfd we own, sized and mapped, written through
    // the page's atomics, unmapped.
    unsafe {
        let fd = libc::memfd_create(c"late-budget".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, BUDGET_LEN as libc::off_t), 0);
        let m = libc::mmap(
            std::ptr::null_mut(),
            BUDGET_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(m, libc::MAP_FAILED);
        let page = &*(m as *const BudgetPage);
        page.version.store(PAGE_VERSION, Ordering::Relaxed);
        for d in &page.dev {
            d.share_ppm.store(1_000_000, Ordering::Relaxed);
            d.mem_limit.store(u64::MAX, Ordering::Relaxed);
        }
        page.magic.store(BUDGET_MAGIC, Ordering::Release);
        libc::munmap(m, BUDGET_LEN);
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

#[test]
fn a_broker_stopped_with_sigterm_is_also_recovered_from() {
    // Stopped the way a service manager does it: the socket must stay while
    // processes are connected, so that the next broker knows they are
    // coming back.
    let (mut broker, _cg) = restart_keeps_the_ledger_whole(|b| {
        b.terminate();
        assert!(b.socket.exists(), "the socket stays for the processes");
    });
    // With nobody connected, a stop removes the socket (the next start
    // grants at once).
    wait_for("the processes are gone", Duration::from_secs(5), || {
        processes(&broker) == 0
    });
    broker.terminate();
    assert!(!broker.socket.exists());
}

#[test]
fn a_reused_pid_is_not_taken_for_the_process_that_connected() {
    // A kernel without SO_PEERPIDFD: the broker has only SO_PEERCRED's pid.
    let old_kernel = tslice_tests::build_cuda(
        &tslice_tests::cuda_src("old_kernel.c"),
        &["-shared", "-fPIC", "-ldl"],
    );
    let cg = Cgroups::new();
    let config = format!(
        "[defaults]\nmemory-limit = \"1GiB\"\n[[tenant]]\nname = \"gold\"\ncgroup = \"{}\"\nmemory-limit = \"70GiB\"\n",
        cg.path("gold")
    );
    let broker = Broker::start_with_env(&config, &[("LD_PRELOAD", old_kernel.to_str().unwrap())]);
    // The attacker connects, hands its socket to a child and exits; its pid
    // goes to a process of tenant gold; the child then says Hello.
    let mut attacker = raw_client(&broker, &cg, "evil");
    let x = attacker.pid();
    let handed = attacker.ask("handoff");
    assert_eq!(handed, format!("handed pid={x}"));
    let mut st = 0;
    // SAFETY: waitpid of our own child (the std handle is not used again).
    assert_eq!(unsafe { libc::waitpid(x as i32, &mut st, 0) }, x as i32);
    let mut victim = None;
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (x - 1).to_string()).unwrap();
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let mut v = cg.wrap("gold", sleep).spawn().unwrap();
        if v.id() == x {
            victim = Some(v);
            break;
        }
        v.kill().unwrap();
        v.wait().unwrap();
    }
    let mut victim = victim.expect("pid reused for the victim (another process kept taking it)");
    wait_for("the victim is in gold", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{x}/cgroup"))
            .is_ok_and(|c| c.contains(&format!("0::{}\n", cg.path("gold"))))
    });
    let answer = attacker.ask("hello total=85899345920");
    victim.kill().unwrap();
    victim.wait().unwrap();
    assert!(
        answer.starts_with("refused=") && answer.contains("reused"),
        "the attacker was taken for the process now at pid {x}: {answer}\n{}",
        broker.log()
    );
    attacker.tell("exit");
}

#[test]
fn one_process_holds_one_connection() {
    let broker = Broker::start("");
    let mut first = RawClient::connect(&broker.socket).unwrap();
    first.hello(&HelloSpec::default()).unwrap();
    let mut second = RawClient::connect(&broker.socket).unwrap();
    let e = second.hello(&HelloSpec::default()).unwrap_err();
    assert!(e.to_string().contains("already connected"), "{e}");
    assert_eq!(processes(&broker), 1);
    // Once the first is closed (as at exec), the process connects again.
    drop(first);
    let mut again = RawClient::connect(&broker.socket).unwrap();
    again.hello(&HelloSpec::default()).unwrap();
    wait_for(
        "the old connection is let go",
        Duration::from_secs(5),
        || processes(&broker) == 1,
    );
}

#[test]
fn a_node_that_fixes_its_broker_ignores_what_the_process_says() {
    // The shim as the DaemonSet installs it: beside a root-owned file naming
    // the node's broker. The process points TSLICE_BROKER elsewhere and asks
    // to run standalone: neither counts.
    let broker = Broker::start("[defaults]\nmemory-limit = \"256MiB\"\n");
    let dir = tempdir();
    let lib = dir.join("libtslice.so");
    std::fs::copy(shim(), &lib).unwrap();
    let fixed = dir.join("tslice-broker.path");
    std::fs::write(&fixed, format!("{}\n", broker.socket.display())).unwrap();
    let gpu = SimGpu::new();
    let run = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fixed, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut c = gpu.command(&tenant_prog());
        c.args(["grab", "1024", "64"])
            .env("LD_PRELOAD", &lib)
            .env("TSLICE_BROKER", dir.join("elsewhere.sock"))
            .env("TSLICE_NO_BROKER", "standalone");
        let mut p = Interactive::spawn(c);
        let held = field(&p.line(), "held") as u64;
        assert!(p.finish().success());
        held
    };
    assert_eq!(
        run(0o644),
        256 * MIB,
        "the node's broker and its default limit"
    );
    // A file others may write fixes nothing (the environment decides).
    assert_eq!(run(0o666), GIB, "standalone, as the environment asked");
}
