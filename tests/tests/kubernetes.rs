//! tslice on a Kubernetes node, against a real API server (etcd and
//! kube-apiserver built from their Go modules; no kubelet): pods created
//! with `spec.nodeName`, real CUDA programs started in cgroups named as the
//! kubelet names them for those pods, the broker watching the node's pods.
//! Ground truth from the simulated device and the broker's status.

use std::time::Duration;
use tslice_tests::k8s::{kubelet_cgroup, ApiServer, Gate};
use tslice_tests::{
    device_used, field, shim, tenant_prog, wait_for, Broker, Cgroups, Interactive, SimGpu,
};

const MIB: u64 = 1 << 20;

fn broker_via(kubeconfig: &std::path::Path, node: &str, extra: &str) -> Broker {
    let config = format!(
        "[defaults]\nmemory-limit = \"256Mi\"\n[kubernetes]\nnode-name = \"{node}\"\npod-wait = \"3s\"\n{extra}"
    );
    Broker::start_with_env(&config, &[("KUBECONFIG", kubeconfig.to_str().unwrap())])
}

fn broker_for(api: &ApiServer, node: &str, extra: &str) -> Broker {
    let b = broker_via(&api.kubeconfig, node, extra);
    wait_for(
        "the broker lists the node's pods",
        Duration::from_secs(30),
        || b.log().contains("the node's pods are listed"),
    );
    b
}

/// A tenant program under the shim, in the cgroup of a pod's container.
fn in_pod(
    gpu: &SimGpu,
    broker: &Broker,
    cg: &Cgroups,
    uid: &str,
    n: u32,
    args: &[&str],
) -> Interactive {
    let mut c = gpu.command(&tenant_prog());
    c.args(args)
        .env("LD_PRELOAD", shim())
        .env("TSLICE_BROKER", &broker.socket);
    Interactive::spawn(cg.wrap(&kubelet_cgroup(uid, n), c))
}

fn limit_of(broker: &Broker, tenant: &str) -> Option<u64> {
    let st = broker.status();
    st["tenants"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == tenant)
        .and_then(|t| t["devices"][0]["memory_limit"].as_u64())
}

#[test]
fn a_pods_annotations_are_its_limits_live_and_deleting_it_releases_its_ledger() {
    let api = ApiServer::shared();
    api.create_namespace("team-a");
    let uid = api.create_pod(
        "team-a",
        "trainer",
        "node-a",
        &[("tslice.dev/memory-limit", "512Mi")],
    );
    let other = api.create_pod("team-a", "plain", "node-a", &[]);
    // A pod of another node is not this broker's.
    api.create_pod(
        "team-a",
        "elsewhere",
        "node-b",
        &[("tslice.dev/memory-limit", "8Gi")],
    );
    let broker = broker_for(api, "node-a", "");
    let cg = Cgroups::new();
    let gpu = SimGpu::new();
    // Two containers of the pod: one ledger.
    let mut p1 = in_pod(&gpu, &broker, &cg, &uid, 1, &["grab", "384", "64"]);
    assert_eq!(field(&p1.line(), "held") as u64, 384 * MIB);
    let mut p2 = in_pod(&gpu, &broker, &cg, &uid, 2, &["grab", "384", "64"]);
    let held2 = field(&p2.line(), "held") as u64;
    assert!(
        device_used(&gpu, &[p1.pid(), p2.pid()]) <= 512 * MIB,
        "the pod passed its 512Mi annotation (p2 got {held2})"
    );
    assert_eq!(limit_of(&broker, "pod:team-a/trainer"), Some(512 * MIB));
    // A pod without annotations gets the node's defaults.
    let mut p3 = in_pod(&gpu, &broker, &cg, &other, 1, &["grab", "512", "64"]);
    assert_eq!(field(&p3.line(), "held") as u64, 256 * MIB);
    assert_eq!(limit_of(&broker, "pod:team-a/plain"), Some(256 * MIB));
    // An annotation changed on the running pod reaches its processes within 1 s.
    api.annotate("team-a", "trainer", "tslice.dev/memory-limit", Some("1Gi"));
    let took = wait_for("the new limit is applied", Duration::from_secs(5), || {
        limit_of(&broker, "pod:team-a/trainer") == Some(1024 * MIB)
    });
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let alloc = p2.ask("alloc 256");
    assert!(alloc.contains("alloc=0"), "{alloc}");
    let used = device_used(&gpu, &[p1.pid(), p2.pid()]);
    assert!(used > 512 * MIB && used <= 1024 * MIB, "{used}");
    // Deleting the pod releases its ledger (its processes, if any linger,
    // are one tenant with the defaults).
    api.delete_pod("team-a", "trainer");
    let took = wait_for(
        "the pod's ledger is released",
        Duration::from_secs(5),
        || limit_of(&broker, "pod:team-a/trainer").is_none(),
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(
        limit_of(&broker, &format!("pod:uid:{uid}")),
        Some(256 * MIB)
    );
    for p in [p1, p2, p3] {
        assert!(p.finish().success());
    }
}

#[test]
fn a_process_whose_pod_is_not_delivered_yet_waits_for_it_then_takes_the_defaults() {
    let api = ApiServer::shared();
    api.create_namespace("team-b");
    let uid = api.create_pod(
        "team-b",
        "late",
        "node-c",
        &[("tslice.dev/memory-limit", "320Mi")],
    );
    // The broker's way to the API server is held: its watch has delivered
    // nothing when the pod's process connects.
    let gate = Gate::new(api);
    let broker = broker_via(&gate.kubeconfig(api), "node-c", "");
    let cg = Cgroups::new();
    let gpu = SimGpu::new();
    let mut p = in_pod(&gpu, &broker, &cg, &uid, 1, &["grab", "512", "64"]);
    // A process of a pod that does not exist at all, beside it.
    let ghost = "00000000-0000-4000-8000-000000000000";
    let mut q = in_pod(&gpu, &broker, &cg, ghost, 1, &["grab", "512", "64"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!broker.log().contains("the node's pods are listed"));
    gate.open();
    assert_eq!(
        field(&p.line(), "held") as u64,
        320 * MIB,
        "it waited for its pod"
    );
    assert_eq!(limit_of(&broker, "pod:team-b/late"), Some(320 * MIB));
    // The other waited pod-wait (3 s) and got the defaults, as one tenant.
    assert_eq!(field(&q.line(), "held") as u64, 256 * MIB);
    assert_eq!(
        limit_of(&broker, &format!("pod:uid:{ghost}")),
        Some(256 * MIB)
    );
    assert!(p.finish().success() && q.finish().success());
}

#[test]
fn a_namespace_ceiling_holds_whatever_the_pod_asks() {
    let api = ApiServer::shared();
    api.create_namespace("team-c");
    let uid = api.create_pod(
        "team-c",
        "greedy",
        "node-d",
        &[
            ("tslice.dev/memory-limit", "4Gi"),
            ("tslice.dev/class", "latency-critical"),
        ],
    );
    let broker = broker_for(
        api,
        "node-d",
        "[[ceiling]]\nnamespace = \"team-c\"\nmemory-limit = \"384Mi\"\nlatency-critical = false\n",
    );
    let cg = Cgroups::new();
    let gpu = SimGpu::new();
    let mut p = in_pod(&gpu, &broker, &cg, &uid, 1, &["grab", "1024", "64"]);
    assert_eq!(field(&p.line(), "held") as u64, 384 * MIB);
    let t = broker.tenant("pod:team-c/greedy");
    assert_eq!(t["class"], "standard", "{t:#}");
    assert!(p.finish().success());
}
