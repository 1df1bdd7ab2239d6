//! tslice on a Kubernetes node, against a real API server (etcd and
//! kube-apiserver built from their Go modules; no kubelet): pods created
//! with `spec.nodeName`, real CUDA programs started in cgroups named as the
//! kubelet names them for those pods, the broker watching the node's pods.
//! Ground truth from the simulated device and the broker's status.

use std::time::Duration;
use tslice_tests::broker_tenant as in_cgroup;
use tslice_tests::k8s::{chart, helm, kubelet_cgroup, yaml_objects, ApiServer, Gate};
use tslice_tests::{device_used, field, wait_for, Broker, Cgroups, Interactive, SimGpu};

const MIB: u64 = 1 << 20;

/// A broker of node `node`, whose kubelet's cgroup root is `cg`'s
/// `kubepods.slice` (where `in_pod` starts programs).
fn broker_via(kubeconfig: &std::path::Path, cg: &Cgroups, node: &str, extra: &str) -> Broker {
    let config = format!(
        "[defaults]\nmemory-limit = \"256Mi\"\n[kubernetes]\nnode-name = \"{node}\"\npod-wait = \"3s\"\ncgroup-roots = [\"{}/kubepods.slice\"]\n{extra}",
        cg.root()
    );
    Broker::start_with_env(&config, &[("KUBECONFIG", kubeconfig.to_str().unwrap())])
}

fn broker_for(api: &ApiServer, cg: &Cgroups, node: &str, extra: &str) -> Broker {
    let b = broker_via(&api.kubeconfig, cg, node, extra);
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
    tslice_tests::broker_tenant(gpu, broker, cg, &kubelet_cgroup(uid, n), args)
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
    // (Marked as injected, as the webhook leaves it: not an annotation
    // problem for the broker.)
    let uid = api.create_pod(
        "team-a",
        "trainer",
        "node-a",
        &[
            ("tslice.dev/memory-limit", "512Mi"),
            ("tslice.dev/injected", "true"),
        ],
    );
    let other = api.create_pod("team-a", "plain", "node-a", &[]);
    // A pod of another node is not this broker's.
    api.create_pod(
        "team-a",
        "elsewhere",
        "node-b",
        &[("tslice.dev/memory-limit", "8Gi")],
    );
    let cg = Cgroups::new();
    let broker = broker_for(api, &cg, "node-a", "");
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
    assert!(!broker.log().contains("is invalid"), "{}", broker.log());
    // A pod without annotations gets the node's defaults.
    let mut p3 = in_pod(&gpu, &broker, &cg, &other, 1, &["grab", "512", "64"]);
    assert_eq!(field(&p3.line(), "held") as u64, 256 * MIB);
    assert_eq!(limit_of(&broker, "pod:team-a/plain"), Some(256 * MIB));
    // A process that names its cgroup after the pod outside the kubelet's
    // tree (as anybody with a delegated cgroup subtree could) is not the pod.
    let fake = format!(
        "user.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{:064x}.scope",
        uid.replace('-', "_"),
        9
    );
    let mut impostor = in_cgroup(&gpu, &broker, &cg, &fake, &["grab", "512", "64"]);
    assert_eq!(field(&impostor.line(), "held") as u64, 256 * MIB);
    let t = broker.tenant("pod:team-a/trainer");
    assert_eq!(t["processes"].as_array().unwrap().len(), 2, "{t:#}");
    assert!(impostor.finish().success());
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
    let cg = Cgroups::new();
    let broker = broker_via(&gate.kubeconfig(api), &cg, "node-c", "");
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
    let cg = Cgroups::new();
    let broker = broker_for(
        api,
        &cg,
        "node-d",
        "[[ceiling]]\nnamespace = \"team-c\"\nmemory-limit = \"384Mi\"\nlatency-critical = false\n",
    );
    let gpu = SimGpu::new();
    let mut p = in_pod(&gpu, &broker, &cg, &uid, 1, &["grab", "1024", "64"]);
    assert_eq!(field(&p.line(), "held") as u64, 384 * MIB);
    let t = broker.tenant("pod:team-c/greedy");
    assert_eq!(t["class"], "standard", "{t:#}");
    assert!(p.finish().success());
}

/// The chart's objects, rendered by `helm template` with these `--set`s.
fn render(release: &str, ns: &str, sets: &[&str]) -> Vec<serde_json::Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        ns,
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, out, err) = helm(&args);
    assert!(ok, "helm template failed:\n{err}");
    yaml_objects(&out)
}

/// The chart, rendered with values for this API server (its webhooks only
/// for namespaces labelled for the chart test, so other tests' pods are not
/// sent to a webhook that is not running), applied once.
fn chart_applied(api: &ApiServer) -> &'static str {
    static APPLIED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    APPLIED.get_or_init(|| {
        api.create_namespace("tslice-system");
        let objects = render(
            "t",
            "tslice-system",
            &[
                "webhook.namespaceSelector.matchLabels.tslice-chart-test=yes",
                "ceilings[0].namespace=team-a,ceilings[0].memoryLimit=16Gi,ceilings[0].latencyCritical=false",
            ],
        );
        let errors = api.apply(&objects);
        assert!(errors.is_empty(), "objects refused:\n{}", errors.join("\n"));
    });
    "tslice-system"
}

#[test]
fn the_chart_lints_renders_and_every_object_is_accepted_by_the_api_server() {
    let api = ApiServer::shared();
    let (ok, out, err) = helm(&["lint", "--strict", chart().to_str().unwrap()]);
    assert!(ok && !out.contains("[ERROR]"), "helm lint:\n{out}{err}");
    let (ok, out, err) = helm(&[
        "template",
        "t",
        chart().to_str().unwrap(),
        "--namespace",
        "tslice-system",
    ]);
    assert!(ok, "{err}");
    let objects = yaml_objects(&out);
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for want in [
        "DaemonSet",
        "Deployment",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(&want), "no {want} in {kinds:?}");
    }
    // The broker's configuration as rendered is one the broker accepts.
    let cm = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let toml = cm["data"]["broker.toml"].as_str().unwrap();
    let path = api.dir.join("rendered-broker.toml");
    std::fs::write(&path, toml).unwrap();
    let st = std::process::Command::new(tslice_tests::workspace_bin("tslice-broker"))
        .args(["--check", "--config", path.to_str().unwrap()])
        .env("NODE_NAME", "n")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{toml}\n{}",
        String::from_utf8_lossy(&st.stderr)
    );
    // An invalid value is refused by the chart, naming it.
    let (ok, _, err) = helm(&[
        "template",
        "t",
        chart().to_str().unwrap(),
        "--set",
        "webhook.preload=bogus",
    ]);
    assert!(
        !ok && err.contains("webhook.preload=\"bogus\" is invalid; accepted: env, ld.so.preload"),
        "{err}"
    );
    // Applied to the real API server: every object accepted.
    chart_applied(api);
}

#[test]
fn the_broker_runs_with_the_charts_rbac_and_is_denied_anything_else() {
    let api = ApiServer::shared();
    let ns = chart_applied(api);
    let token = api.token(ns, "t-broker");
    let kc = api.token_kubeconfig("t-broker", &token);
    // Anything but reading pods is refused to the broker's account.
    let denied = api.block_on(async {
        use k8s_openapi::api::core::v1::{Node, Pod, Secret};
        use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
        let c = tslice_tests::k8s::client_from(&kc).await;
        let is_403 = |r: Result<(), kube::Error>| match r {
            Err(kube::Error::Api(e)) => e.code == 403,
            _ => false,
        };
        let pods: Api<Pod> = Api::all(c.clone());
        assert!(
            pods.list(&ListParams::default()).await.is_ok(),
            "the broker may list pods"
        );
        let in_ns: Api<Pod> = Api::namespaced(c.clone(), "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap();
        let secrets: Api<Secret> = Api::all(c.clone());
        let nodes: Api<Node> = Api::all(c.clone());
        vec![
            (
                "create pods",
                is_403(in_ns.create(&PostParams::default(), &pod).await.map(|_| ())),
            ),
            (
                "patch pods",
                is_403(
                    in_ns
                        .patch(
                            "x",
                            &PatchParams::default(),
                            &Patch::Merge(serde_json::json!({})),
                        )
                        .await
                        .map(|_| ()),
                ),
            ),
            (
                "delete pods",
                is_403(
                    in_ns
                        .delete("x", &DeleteParams::default())
                        .await
                        .map(|_| ()),
                ),
            ),
            (
                "list secrets",
                is_403(secrets.list(&ListParams::default()).await.map(|_| ())),
            ),
            (
                "list nodes",
                is_403(nodes.list(&ListParams::default()).await.map(|_| ())),
            ),
        ]
    });
    for (what, refused) in denied {
        assert!(refused, "the broker's account may {what}");
    }
    // And with exactly that account the broker does its job.
    api.create_namespace("team-e");
    let uid = api.create_pod(
        "team-e",
        "job",
        "node-e",
        &[("tslice.dev/memory-limit", "192Mi")],
    );
    let cg = Cgroups::new();
    let broker = broker_via(&kc, &cg, "node-e", "");
    wait_for(
        "the broker lists the node's pods",
        Duration::from_secs(30),
        || broker.log().contains("the node's pods are listed"),
    );
    let gpu = SimGpu::new();
    let mut p = in_pod(&gpu, &broker, &cg, &uid, 1, &["grab", "512", "64"]);
    assert_eq!(field(&p.line(), "held") as u64, 192 * MIB);
    assert!(p.finish().success());
}

/// The chart rendered for the webhook test: its configuration and its
/// webhook objects, pointed at a webhook on this machine (there is no
/// Service without a kubelet) and at namespaces labelled for the test.
fn chart_webhook(port: u16, ca: &str) -> (String, Vec<serde_json::Value>) {
    let objects = render(
        "w",
        "tslice-w",
        &[
            "webhook.namespaceSelector.matchLabels.tslice-webhook-test=yes",
            "ceilings[0].namespace=team-w,ceilings[0].memoryLimit=16Gi",
        ],
    );
    let config = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .and_then(|o| o["data"]["broker.toml"].as_str())
        .unwrap()
        .to_string();
    let hooks = objects
        .into_iter()
        .filter(|o| {
            o["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("WebhookConfiguration"))
        })
        .map(|mut o| {
            for w in o["webhooks"].as_array_mut().unwrap() {
                let path = w["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap()
                    .to_string();
                w["clientConfig"] = serde_json::json!({
                    "url": format!("https://127.0.0.1:{port}{path}"),
                    "caBundle": ca,
                });
            }
            o
        })
        .collect();
    (config, hooks)
}

#[test]
fn the_charts_webhook_injects_gpu_pods_and_refuses_bad_annotations_with_a_clear_message() {
    let api = ApiServer::shared();
    let (cert, key) = api.issue_cert("webhook");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ca = base64(&std::fs::read(&api.ca).unwrap());
    let (config, hooks) = chart_webhook(port, &ca);
    // The chart's own configuration (with [kubernetes], and no NODE_NAME:
    // the webhook runs on no node in particular).
    let cfg = api.dir.join("webhook-broker.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = std::fs::File::create(api.dir.join("webhook.log")).unwrap();
    let mut server = KillOnDrop(
        std::process::Command::new(tslice_tests::workspace_bin("tslice-webhook"))
            .args([
                "--config",
                cfg.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ])
            .env_remove("NODE_NAME")
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_for("the webhook listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // The chart's webhook objects (rules, match conditions, selectors), as
    // the real API server compiles and applies them.
    let errors = api.apply(&hooks);
    assert!(errors.is_empty(), "{errors:?}");
    api.create_namespace_labeled("team-w", &[("tslice-webhook-test", "yes")]);
    let pod = |name: &str, gpu: bool, notes: serde_json::Value| {
        let res = if gpu {
            serde_json::json!({"limits": {"nvidia.com/gpu": "1"}})
        } else {
            serde_json::json!({})
        };
        serde_json::json!({
            "metadata": {"name": name, "annotations": notes},
            "spec": {"containers": [
                {"name": "main", "image": "example.com/job:1", "resources": res},
                {"name": "sidecar", "image": "example.com/proxy:1"}
            ]}
        })
    };
    // The webhook's registration takes a moment to reach the admission chain.
    let mut injected = serde_json::Value::Null;
    wait_for("a GPU pod is injected", Duration::from_secs(20), || {
        let name = format!("gpu-{}", rand_suffix());
        match api.create_pod_json(
            "team-w",
            pod(
                &name,
                true,
                serde_json::json!({"tslice.dev/memory-limit": "8Gi"}),
            ),
        ) {
            Ok(p) if p["metadata"]["annotations"]["tslice.dev/injected"] == "true" => {
                injected = p;
                true
            }
            _ => false,
        }
    });
    let env_of = |p: &serde_json::Value, c: usize| p["spec"]["containers"][c]["env"].clone();
    let env = env_of(&injected, 0);
    let env = env.as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "LD_PRELOAD" && e["value"] == "/opt/tslice/libtslice.so"),
        "{env:?}"
    );
    assert!(env
        .iter()
        .any(|e| e["name"] == "TSLICE_BROKER" && e["value"] == "/run/tslice/broker.sock"));
    assert!(
        env_of(&injected, 1).is_null(),
        "the sidecar has no GPU: no shim"
    );
    let vols = injected["spec"]["volumes"].as_array().unwrap();
    assert!(
        vols.iter()
            .any(|v| v["hostPath"]["path"] == "/var/lib/tslice/lib"),
        "{vols:?}"
    );
    // What the pod says cannot skip the injection or redirect the shim: a
    // marker it sets itself, its own volume of tslice's name, its own
    // TSLICE_BROKER (twice).
    let mut sneaky = pod(
        "sneaky",
        true,
        serde_json::json!({"tslice.dev/injected": "true"}),
    );
    sneaky["spec"]["volumes"] = serde_json::json!([{"name": "tslice-lib", "emptyDir": {}}]);
    sneaky["spec"]["containers"][0]["volumeMounts"] =
        serde_json::json!([{"name": "tslice-lib", "mountPath": "/elsewhere"}]);
    sneaky["spec"]["containers"][0]["env"] = serde_json::json!([
        {"name": "TSLICE_BROKER", "value": "/tmp/mine.sock"},
        {"name": "TSLICE_BROKER", "value": "/tmp/again.sock"},
        {"name": "TSLICE_NO_BROKER", "value": "standalone"}
    ]);
    let got = api.create_pod_json("team-w", sneaky).unwrap();
    let env = env_of(&got, 0);
    let brokers: Vec<&serde_json::Value> = env
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str().unwrap_or("").starts_with("TSLICE_"))
        .collect();
    assert_eq!(brokers.len(), 1, "{env:?}");
    assert_eq!(brokers[0]["value"], "/run/tslice/broker.sock");
    let vols = got["spec"]["volumes"].as_array().unwrap();
    assert!(vols.iter().all(|v| v.get("emptyDir").is_none()), "{vols:?}");
    // A pod without a GPU is left alone.
    let plain = api
        .create_pod_json("team-w", pod("cpu-only", false, serde_json::json!({})))
        .unwrap();
    assert!(env_of(&plain, 0).is_null(), "{plain:#}");
    // LD_PRELOAD from valueFrom cannot be put behind the shim: refused, saying so.
    let mut from = pod("from", true, serde_json::json!({}));
    from["spec"]["containers"][0]["env"] = serde_json::json!([
        {"name": "LD_PRELOAD", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}
    ]);
    let e = api.create_pod_json("team-w", from).unwrap_err();
    assert!(e.contains("sets LD_PRELOAD with valueFrom"), "{e}");
    // Bad annotations are refused at creation, naming the annotation, the
    // value and what is accepted.
    let e = api
        .create_pod_json(
            "team-w",
            pod(
                "lots",
                true,
                serde_json::json!({"tslice.dev/memory-limit": "lots"}),
            ),
        )
        .unwrap_err();
    assert!(
        e.contains("annotation tslice.dev/memory-limit=\"lots\" is invalid")
            && e.contains("accepted: a size in Kubernetes' binary units"),
        "{e}"
    );
    let e = api
        .create_pod_json(
            "team-w",
            pod(
                "greedy",
                true,
                serde_json::json!({"tslice.dev/memory-limit": "32Gi"}),
            ),
        )
        .unwrap_err();
    assert!(e.contains("above this namespace's ceiling (16Gi)"), "{e}");
    // And when changed on a running pod, also through its status.
    let name = injected["metadata"]["name"].as_str().unwrap().to_string();
    let e = api
        .try_annotate("team-w", &name, "tslice.dev/compute-limit", "150%")
        .unwrap_err();
    assert!(
        e.contains("annotation tslice.dev/compute-limit=\"150%\" is invalid"),
        "{e}"
    );
    let e = api
        .try_annotate_status("team-w", &name, "tslice.dev/memory-limit", "lots")
        .unwrap_err();
    assert!(
        e.contains("tslice.dev/memory-limit=\"lots\" is invalid"),
        "{e}"
    );
    api.try_annotate("team-w", &name, "tslice.dev/compute-limit", "50%")
        .unwrap();
    // With the webhook down, only what it must see waits for it: a pod
    // without a GPU or tslice annotations is admitted, a GPU pod is not.
    let _ = server.0.kill();
    let _ = server.0.wait();
    api.create_pod_json(
        "team-w",
        pod("cpu-while-down", false, serde_json::json!({})),
    )
    .expect("a pod the webhook need not see is admitted while it is down");
    assert!(api
        .create_pod_json("team-w", pod("gpu-while-down", true, serde_json::json!({})))
        .is_err());
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
