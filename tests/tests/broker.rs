//! Issue 7: the node broker. A real `tslice-broker` process, real tenant
//! processes in real cgroups (created under this test's own cgroup), the
//! shim between them and the simulated GPU; ground truth from the
//! simulated device's ledger and run record.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tslice_tests::{
    build_cuda, cuda_src, field, workspace_bin, Broker, Cgroups, Interactive, SimGpu,
};
use tslice_tests::{device_used, shim, tenant_prog, wait_for};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A tenant process under the shim, connected to `broker`, in cgroup `cg`.
fn tenant(
    gpu: &SimGpu,
    broker: &Broker,
    cgroups: &Cgroups,
    cg: &str,
    args: &[&str],
) -> Interactive {
    tslice_tests::broker_tenant(gpu, broker, cgroups, cg, args)
}

fn config_two_tenants(cg: &Cgroups, limit_a: &str) -> String {
    format!(
        "[[tenant]]\nname = \"a\"\ncgroup = \"{}\"\nmemory-limit = \"{limit_a}\"\n\n[[tenant]]\nname = \"b\"\ncgroup = \"{}\"\nmemory-limit = \"1GiB\"\n",
        cg.path("a"),
        cg.path("b")
    )
}

#[test]
fn a_tenants_processes_share_one_memory_limit_and_tenants_are_apart() {
    let cg = Cgroups::new();
    let broker = Broker::start(&config_two_tenants(&cg, "1GiB"));
    let gpu = SimGpu::new();
    let mut p1 = tenant(&gpu, &broker, &cg, "a/x", &["grab", "768", "64"]);
    let l1 = p1.line();
    assert_eq!(field(&l1, "held") as u64, 768 * MIB, "{l1}");
    assert_eq!(
        field(&l1, "total") as u64,
        GIB,
        "cuMemGetInfo shows the tenant's limit: {l1}"
    );
    assert_eq!(
        field(&l1, "free") as u64,
        256 * MIB,
        "and what the tenant has left: {l1}"
    );
    let mut p2 = tenant(&gpu, &broker, &cg, "a/y", &["grab", "768", "64"]);
    let l2 = p2.line();
    let held2 = field(&l2, "held") as u64;
    assert_eq!(
        held2,
        256 * MIB,
        "the second process gets what the tenant has left, reserved or not: {l2}"
    );
    assert_eq!(field(&l2, "free") as u64, 0, "{l2}");
    // Another tenant is not touched by a's limit.
    let mut p3 = tenant(&gpu, &broker, &cg, "b", &["grab", "768", "64"]);
    let l3 = p3.line();
    assert_eq!(field(&l3, "held") as u64, 768 * MIB, "{l3}");
    assert!(
        device_used(&gpu, &[p1.pid(), p2.pid()]) <= GIB,
        "ground truth"
    );
    // Memory one process frees is the other's.
    assert_eq!(p1.ask("free"), "freed");
    assert_eq!(p2.ask("alloc 512"), "alloc=0");
    assert_eq!(
        p2.ask("alloc 512"),
        "alloc=2",
        "over the tenant's limit: CUDA_ERROR_OUT_OF_MEMORY"
    );
    let a = broker.tenant("a");
    assert_eq!(a["processes"].as_array().unwrap().len(), 2, "{a:#}");
    assert!(a["devices"][0]["memory_reserved"].as_u64().unwrap() <= GIB);
    assert_eq!(a["devices"][0]["memory_limit"].as_u64(), Some(GIB));
    for p in [p1, p2, p3] {
        assert!(p.finish().success());
    }
}

#[test]
fn two_processes_of_one_tenant_racing_never_pass_its_limit() {
    let cg = Cgroups::new();
    let broker = Broker::start(&config_two_tenants(&cg, "1GiB"));
    let gpu = SimGpu::new();
    let mut a = tenant(&gpu, &broker, &cg, "a/one", &["race", "16", "32"]);
    let mut b = tenant(&gpu, &broker, &cg, "a/two", &["race", "16", "32"]);
    let (ha, hb) = (
        field(&a.line(), "held") as u64,
        field(&b.line(), "held") as u64,
    );
    let truth = device_used(&gpu, &[a.pid(), b.pid()]);
    assert!(
        ha + hb <= GIB && truth <= GIB,
        "{ha} + {hb} (device {truth}) over 1 GiB"
    );
    assert!(
        ha + hb >= GIB - 64 * MIB,
        "the threads pressed against the limit: {ha} + {hb}"
    );
    let peak: u64 = gpu
        .monitor(0)
        .snapshot()
        .processes
        .iter()
        .filter(|p| [a.pid(), b.pid()].contains(&p.pid))
        .map(|p| p.mem_peak)
        .sum();
    assert!(peak <= GIB, "peaks {peak}");
    assert!(a.finish().success() && b.finish().success());
}

#[test]
fn a_killed_process_has_its_memory_back_within_a_second() {
    let cg = Cgroups::new();
    let broker = Broker::start(&config_two_tenants(&cg, "1GiB"));
    let gpu = SimGpu::new();
    let mut p1 = tenant(&gpu, &broker, &cg, "a", &["grab", "1024", "256"]);
    assert_eq!(field(&p1.line(), "held") as u64, GIB);
    let reserved = || {
        broker.tenant("a")["devices"][0]["memory_reserved"]
            .as_u64()
            .unwrap_or(u64::MAX)
    };
    assert!(reserved() >= GIB);
    p1.child.kill().expect("SIGKILL");
    let took = wait_for(
        "the ledger gets the memory back",
        Duration::from_secs(1),
        || reserved() == 0,
    );
    eprintln!("reclaimed {took:?} after SIGKILL");
    let _ = p1.child.wait();
    let mut p2 = tenant(&gpu, &broker, &cg, "a", &["grab", "1024", "1024"]);
    assert_eq!(field(&p2.line(), "held") as u64, GIB);
    assert!(p2.finish().success());
}

#[test]
fn the_environment_can_only_lower_the_brokers_limit() {
    let cg = Cgroups::new();
    let broker = Broker::start(&config_two_tenants(&cg, "1GiB"));
    for (env, total) in [("4GiB", GIB), ("256MiB", 256 * MIB)] {
        let gpu = SimGpu::new().env("TSLICE_HBM_LIMIT", env);
        let mut p = tenant(&gpu, &broker, &cg, "a", &["grab", "2048", "64"]);
        let l = p.line();
        assert_eq!(
            field(&l, "total") as u64,
            total,
            "TSLICE_HBM_LIMIT={env}: {l}"
        );
        assert_eq!(
            field(&l, "held") as u64,
            total,
            "TSLICE_HBM_LIMIT={env}: {l}"
        );
        assert!(p.finish().success());
    }
}

#[test]
fn without_its_broker_a_process_fails_closed_or_runs_standalone_as_asked() {
    let gpu = SimGpu::new();
    let missing =
        std::env::temp_dir().join(format!("tslice-no-broker-{}.sock", std::process::id()));
    let run = |extra: &[(&str, &str)]| {
        let mut c = gpu.command(&tenant_prog());
        c.args(["grab", "64", "64"])
            .env("LD_PRELOAD", shim())
            .env("TSLICE_BROKER", &missing);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).output().expect("run")
    };
    let o = run(&[]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        out.contains("cuda=800"),
        "refused by default (CUDA_ERROR_NOT_PERMITTED): {out}{err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("tslice")).collect();
    assert_eq!(lines.len(), 1, "one clear line: {err}");
    assert!(
        lines[0].contains("cannot reach the tslice broker")
            && lines[0].contains("TSLICE_NO_BROKER=standalone"),
        "{err}"
    );
    let o = run(&[
        ("TSLICE_NO_BROKER", "standalone"),
        ("TSLICE_HBM_LIMIT", "128MiB"),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        field(&out, "total") as u64,
        128 * MIB,
        "standalone, with its own limit: {out}"
    );
    let o = run(&[("TSLICE_NO_BROKER", "sometimes")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("TSLICE_NO_BROKER=\"sometimes\" is invalid; accepted: refuse, standalone"),
        "{err}"
    );
}

#[test]
fn hostile_clients_are_cut_off_and_nobody_else_notices() {
    use std::io::{Read, Write};
    let cg = Cgroups::new();
    let broker = Broker::start(&config_two_tenants(&cg, "1GiB"));
    let gpu = SimGpu::new();
    let mut p = tenant(&gpu, &broker, &cg, "a", &["grab", "256", "64"]);
    assert_eq!(field(&p.line(), "held") as u64, 256 * MIB);
    let mut garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        (1u32 << 30).to_le_bytes().to_vec(), // a huge length
        [8u32.to_le_bytes().to_vec(), vec![9, 0, 1, 0, 0, 0, 0, 0]].concat(), // version 9
        tslice_proto::Msg::Reserve {
            req: 1,
            dev: 0,
            bytes: 1 << 40,
        }
        .encode(), // before Hello
        [4u32.to_le_bytes().to_vec(), vec![1, 0, 250, 0]].concat(), // unknown kind
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    garbage.push(
        (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect(),
    );
    for g in &garbage {
        let mut s = std::os::unix::net::UnixStream::connect(&broker.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(g);
        let mut buf = [0u8; 64];
        // The broker closes that connection (EOF or reset), and only that one.
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("the broker answered garbage {g:?} with {n} bytes"),
        }
    }
    assert_eq!(p.ask("alloc 256"), "alloc=0", "the tenant works on");
    assert!(
        broker.log().contains("closing the connection"),
        "the reason is logged:\n{}",
        broker.log()
    );
    let st = broker.status();
    assert_eq!(
        st["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["processes"].as_array().unwrap().len())
            .sum::<usize>(),
        1
    );
    assert!(p.finish().success());
}

#[test]
fn sixty_four_processes_starting_at_once_are_all_served() {
    let cg = Cgroups::new();
    let broker = Broker::start(&config_two_tenants(&cg, "1GiB"));
    let gpu = SimGpu::new();
    let t0 = Instant::now();
    let kids: Vec<_> = (0..64)
        .map(|i| {
            let mut c = gpu.command(&tenant_prog());
            c.args(["grab", "8", "8"])
                .env("LD_PRELOAD", shim())
                .env("TSLICE_BROKER", &broker.socket);
            cg.wrap(if i % 2 == 0 { "a" } else { "b" }, c)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for k in kids {
        let o = k.wait_with_output().expect("wait");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && field(&out, "held") as u64 == 8 * MIB,
            "{out}"
        );
    }
    eprintln!("64 processes in {:?}", t0.elapsed());
    wait_for(
        "every process gone from the ledger",
        Duration::from_secs(2),
        || {
            ["a", "b"]
                .iter()
                .all(|t| broker.tenant(t)["devices"][0]["memory_reserved"].as_u64() == Some(0))
        },
    );
}

#[test]
fn a_broker_killed_and_restarted_leaves_no_window_over_the_limit() {
    let cg = Cgroups::new();
    let mut broker = Broker::start(&config_two_tenants(&cg, "1GiB"));
    let gpu = SimGpu::new();
    let mut p = tenant(&gpu, &broker, &cg, "a", &["grab", "512", "512"]);
    assert_eq!(field(&p.line(), "held") as u64, 512 * MIB);
    broker.kill9();
    // While it is away the process keeps what it has; more is not granted.
    assert_eq!(p.ask("alloc 600"), "alloc=2");
    broker.restart();
    wait_for(
        "the process reconnects and reports its holdings",
        Duration::from_secs(5),
        || {
            broker.try_status().is_ok_and(|st| {
                st["tenants"].as_array().is_some_and(|ts| {
                    ts.iter().any(|t| {
                        t["name"] == "a"
                            && t["devices"][0]["memory_reserved"].as_u64().unwrap_or(0) >= 512 * MIB
                    })
                })
            })
        },
    );
    assert_eq!(
        p.ask("alloc 600"),
        "alloc=2",
        "the rebuilt ledger counts what it holds"
    );
    assert_eq!(p.ask("alloc 256"), "alloc=0");
    assert!(device_used(&gpu, &[p.pid()]) <= GIB);
    assert!(p.finish().success());
}

#[test]
fn a_configuration_change_reaches_running_processes_within_a_second() {
    let cg = Cgroups::new();
    let broker = Broker::start(&config_two_tenants(&cg, "1GiB"));
    let gpu = SimGpu::new();
    let mut p = tenant(&gpu, &broker, &cg, "a", &["grab", "512", "64"]);
    assert_eq!(field(&p.line(), "held") as u64, 512 * MIB);
    // Lowered below what it holds: nothing is taken, new allocations are refused.
    broker.write_config(&config_two_tenants(&cg, "256MiB"));
    let took = wait_for("the new limit is in force", Duration::from_secs(1), || {
        field(&p.ask("info"), "total") as u64 == 256 * MIB
    });
    eprintln!("lowered in {took:?}");
    assert_eq!(p.ask("alloc 2"), "alloc=2");
    assert_eq!(
        field(&p.ask("info"), "held") as u64,
        512 * MIB,
        "nothing is killed or taken away"
    );
    // Raised: room again.
    broker.write_config(&config_two_tenants(&cg, "2GiB"));
    wait_for(
        "the raised limit is in force",
        Duration::from_secs(1),
        || field(&p.ask("info"), "total") as u64 == 2 * GIB,
    );
    assert_eq!(p.ask("alloc 1024"), "alloc=0");
    // An invalid file keeps the last good policy and says why.
    broker.write_config("[[tenant]]\nname = \"a\"\ncgroup = \"/x\"\nmemory-limit = \"lots\"\n");
    wait_for(
        "the broker logs the invalid file",
        Duration::from_secs(2),
        || broker.log().contains("keeping the last good configuration"),
    );
    assert_eq!(
        broker.tenant("a")["devices"][0]["memory_limit"].as_u64(),
        Some(2 * GIB)
    );
    assert!(p.finish().success());
}

#[test]
fn tenants_are_told_apart_by_uid_from_the_kernel_and_status_is_for_root() {
    let broker = Broker::start(
        "[[tenant]]\nname = \"u1001\"\nuid = 1001\n\n[[tenant]]\nname = \"rootly\"\nuid = 0\n",
    );
    // The broker's socket directory is reachable by the other user (the
    // harness makes it so); the programs it runs are copied there, since the
    // checkout may not be.
    let shared = broker.socket.parent().unwrap().to_path_buf();
    let copy = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        let to = shared.join(name);
        std::fs::copy(workspace_bin(name), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to
    };
    let hello = copy("broker_hello");
    let tslice = copy("tslice");
    let as_root = Command::new(&hello)
        .arg(&broker.socket)
        .output()
        .expect("run broker_hello");
    assert!(
        String::from_utf8_lossy(&as_root.stdout).contains("tenant=rootly"),
        "{as_root:?}"
    );
    let as_1001 = Command::new("setpriv")
        .args(["--reuid=1001", "--regid=1001", "--clear-groups"])
        .arg(&hello)
        .arg(&broker.socket)
        .output()
        .expect("setpriv (util-linux) is needed to run as another user");
    assert!(
        String::from_utf8_lossy(&as_1001.stdout).contains("tenant=u1001"),
        "{as_1001:?}\n{}",
        broker.log()
    );
    let status_1001 = Command::new("setpriv")
        .args(["--reuid=1001", "--regid=1001", "--clear-groups"])
        .arg(&tslice)
        .args(["status", "--socket"])
        .arg(&broker.socket)
        .output()
        .expect("setpriv");
    assert!(!status_1001.status.success());
    assert!(
        String::from_utf8_lossy(&status_1001.stderr).contains("may not read the node's status"),
        "{status_1001:?}"
    );
}

#[test]
fn an_invalid_configuration_is_refused_at_start_with_one_clear_message() {
    let dir = std::env::temp_dir().join(format!("tslice-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("broker.toml");
    std::fs::write(
        &cfg,
        "[[tenant]]\nname = \"a\"\ncgroup = \"/a\"\ncompute-request = \"lots\"\n",
    )
    .unwrap();
    let o = Command::new(workspace_bin("tslice-broker"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("tenant \"a\": compute-request = \"lots\" is invalid")
            && err.contains("accepted:"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tslice_run_preloads_the_shim_with_the_given_limits() {
    let gpu = SimGpu::new();
    let mut c = gpu.command(&workspace_bin("tslice"));
    c.args(["run", "--memory", "192MiB", "--lib"])
        .arg(shim())
        .arg("--")
        .arg(tenant_prog())
        .args(["grab", "1024", "64"])
        .env("TSLICE_NO_BROKER", "standalone")
        .env(
            "TSLICE_BROKER",
            std::env::temp_dir().join("tslice-none.sock"),
        );
    let o = c.stdin(Stdio::null()).output().expect("tslice run");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(field(&out, "total") as u64, 192 * MIB, "{out}");
    let bad = Command::new(workspace_bin("tslice"))
        .args(["run", "--memory", "lots", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--memory=\"lots\" is invalid"),
        "{bad:?}"
    );
}

/// A broker for the two tenants of [`config_two_tenants`] (a: 1 GiB) that
/// serves its metrics on a free port (bound, read, released for it).
fn broker_with_metrics(cg: &Cgroups) -> (Broker, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let broker = Broker::start(&format!(
        "metrics = \"127.0.0.1:{port}\"\n{}",
        config_two_tenants(cg, "1GiB")
    ));
    (broker, port)
}

#[test]
fn metrics_are_exported_for_prometheus() {
    let cg = Cgroups::new();
    let (broker, port) = broker_with_metrics(&cg);
    let gpu = SimGpu::new();
    let mut p = tenant(&gpu, &broker, &cg, "a", &["grab", "128", "64"]);
    assert_eq!(field(&p.line(), "held") as u64, 128 * MIB);
    assert_eq!(p.ask("alloc 2000"), "alloc=2");
    let body = http_get(port, "/metrics");
    for needle in [
        "tslice_tenant_memory_limit_bytes{tenant=\"a\"",
        "tslice_tenant_memory_used_bytes{tenant=\"a\"",
        "tslice_tenant_memory_high_water_bytes{tenant=\"a\"",
        "tslice_tenant_memory_denials_total{tenant=\"a\"",
        "tslice_tenant_processes{tenant=\"a\"} 1",
        "tslice_broker_up 1",
    ] {
        assert!(body.contains(needle), "no {needle} in:\n{body}");
    }
    assert!(p.finish().success());
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_c_header_describes_the_same_pages() {
    use std::mem::{offset_of, size_of};
    use tslice_proto::page::{BudgetDev, BudgetPage, ProcessDev, ProcessPage};
    let prog = build_cuda(&cuda_src("broker_layout.c"), &[]);
    let out =
        String::from_utf8_lossy(&Command::new(&prog).output().expect("run").stdout).into_owned();
    for (key, rust) in [
        ("budget_dev", size_of::<BudgetDev>()),
        ("budget_page", size_of::<BudgetPage>()),
        ("budget_dev_off", offset_of!(BudgetPage, dev)),
        ("slot_len_off", offset_of!(BudgetDev, slot_len_ns)),
        ("mem_mine_off", offset_of!(BudgetDev, mem_mine)),
        ("process_dev", size_of::<ProcessDev>()),
        ("process_page", size_of::<ProcessPage>()),
        ("process_dev_off", offset_of!(ProcessPage, dev)),
        ("mem_peak_off", offset_of!(ProcessDev, mem_peak)),
    ] {
        assert_eq!(field(&out, key) as usize, rust, "{key}: {out}");
    }
}

#[test]
fn fork_children_belong_to_their_parents_tenant() {
    let cg = Cgroups::new();
    let broker = Broker::start(&config_two_tenants(&cg, "1GiB"));
    let gpu = SimGpu::new();
    let mut c = gpu.command(&tenant_prog());
    c.args(["forkgrab", "768", "1024"])
        .env("LD_PRELOAD", shim())
        .env("TSLICE_BROKER", &broker.socket);
    let o = cg.wrap("a", c).stdin(Stdio::null()).output().expect("run");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(field(&out, "parent_held") as u64, 768 * MIB, "{out}");
    assert_eq!(field(&out, "child_status"), 0.0, "{out}");
    assert_eq!(
        field(&out, "child_held") as u64,
        256 * MIB,
        "the child shares its parent's tenant ledger: {out}"
    );
}

#[test]
fn a_process_that_never_uses_cuda_starts_no_thread_and_never_connects() {
    let broker = Broker::start("");
    let gpu = SimGpu::new();
    let mut c = gpu.command(std::path::Path::new("/bin/sleep"));
    c.arg("2")
        .env("LD_PRELOAD", shim())
        .env("TSLICE_BROKER", &broker.socket)
        .stdin(Stdio::null());
    let mut child = c.spawn().expect("sleep");
    std::thread::sleep(Duration::from_millis(300));
    let threads = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .expect("task dir")
        .count();
    let st = broker.status();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        threads, 1,
        "no thread in a process that never initialises CUDA"
    );
    assert_eq!(
        st["tenants"].as_array().map_or(0, |t| t.len()),
        0,
        "and no connection: {st:#}"
    );
}

#[test]
fn sighup_reloads_the_configuration() {
    let cg = Cgroups::new();
    let broker = Broker::start(&config_two_tenants(&cg, "1GiB"));
    // A change the file watch has not seen yet: same content length and
    // mtime do not matter, SIGHUP reloads whatever the file says.
    broker.write_config(&format!(
        "{}\n[[tenant]]\nname = \"c\"\nuid = 4242\n",
        config_two_tenants(&cg, "1GiB")
    ));
    // SAFETY: sends SIGHUP to the broker process this test started.
    unsafe { libc::kill(broker.pid() as i32, libc::SIGHUP) };
    wait_for("tenant c appears", Duration::from_secs(2), || {
        broker.status()["tenants"]
            .as_array()
            .is_some_and(|ts| ts.iter().any(|t| t["name"] == "c"))
    });
    wait_for("the signal is logged", Duration::from_secs(2), || {
        broker.log().contains("SIGHUP: reloading")
    });
    assert!(
        broker.log().contains("configuration reloaded"),
        "{}",
        broker.log()
    );
}

/// NVML under a broker shows the tenant's device: its limit as the total,
/// what its processes reserved as used, and its processes (not another
/// tenant's), in a process that never initialises CUDA (`nvidia-smi` in a
/// pod: it asks the broker, without being admitted) as in one that does
/// (which lists its tenant's other processes too).
#[test]
fn nvml_shows_the_tenants_device_with_or_without_cuda() {
    let cg = Cgroups::new();
    let (broker, port) = broker_with_metrics(&cg);
    let counter = |name: &str| -> u64 {
        let body = http_get(port, "/metrics");
        let line = body
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let gpu = SimGpu::new();
    let mut p1 = tenant(&gpu, &broker, &cg, "a/x", &["grab", "256", "64"]);
    assert_eq!(field(&p1.line(), "held") as u64, 256 * MIB);
    let mut other = tenant(&gpu, &broker, &cg, "b", &["grab", "512", "64"]);
    assert_eq!(field(&other.line(), "held") as u64, 512 * MIB);
    let libdir = format!("-L{}", tslice_tests::profile_dir().display());
    let prog = build_cuda(&cuda_src("nvml_cap.c"), &[&libdir, "-lcuda", "-ldl"]);
    let run = |cgroup: &str, args: &[&str]| {
        let mut c = gpu.command(&prog);
        c.args(args)
            .env("LD_PRELOAD", shim())
            .env("TSLICE_BROKER", &broker.socket);
        tslice_tests::run_checked(cg.wrap(cgroup, c))
    };
    let reserved = || {
        broker.tenant("a")["devices"][0]["memory_reserved"]
            .as_u64()
            .unwrap()
    };
    let pids = |text: &str| -> Vec<u32> {
        let list = tslice_tests::text_field(text, "pids");
        list.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap())
            .collect()
    };
    // Without CUDA.
    let (connections, views) = (
        counter("tslice_broker_connections_total"),
        counter("tslice_broker_views_total"),
    );
    let text = run("a/smi", &["0", "nocuda"]);
    assert_eq!(field(&text, "nvml_total") as u64, GIB, "{text}");
    assert_eq!(field(&text, "nvml_used") as u64, reserved(), "{text}");
    assert_eq!(
        pids(&text),
        vec![p1.pid()],
        "the tenant's process only: {text}"
    );
    assert_eq!(
        counter("tslice_broker_connections_total"),
        connections,
        "asking is not being admitted"
    );
    assert!(counter("tslice_broker_views_total") > views);
    // The other tenant sees its own.
    let text = run("b", &["0", "nocuda"]);
    assert_eq!(pids(&text), vec![other.pid()], "{text}");
    // With CUDA: the driver API's numbers, and the tenant's processes.
    let text = run("a/y", &["300", "dlopen"]);
    assert_eq!(field(&text, "nvml_total") as u64, GIB, "{text}");
    assert_eq!(field(&text, "mine"), 1.0, "{text}");
    let listed = pids(&text);
    assert_eq!(listed.len(), 2, "itself and its sibling: {text}");
    assert!(listed.contains(&p1.pid()), "{text}");
    assert!(!listed.contains(&other.pid()), "{text}");
    // Without a broker to ask, NVML in a process without CUDA is unchanged.
    let mut c = gpu.command(&prog);
    c.args(["0", "nocuda"]).env("LD_PRELOAD", shim());
    let text = tslice_tests::run_checked(c);
    assert_eq!(pids(&text).len(), 2, "{text}");
    assert!(field(&text, "nvml_total") as u64 > GIB, "{text}");
    for p in [p1, other] {
        assert!(p.finish().success());
    }
}
