//! A real Kubernetes API server for the tests, as envtest starts one: etcd
//! and kube-apiserver built from their Go modules (`scripts/setup-k8s-testbin.sh`,
//! pinned, cached in `.k8s/`), with a CA, serving and client certificates
//! and service-account keys made by `openssl`; RBAC on; no kubelet, no
//! scheduler, no controllers. One per test binary, shared by its tests
//! (each uses namespaces and node names of its own), killed when the test
//! process exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

/// A running API server.
pub struct ApiServer {
    pub dir: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// An admin's kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// The CA of the server's certificate (and of client certificates).
    pub ca: PathBuf,
    rt: tokio::runtime::Runtime,
}

/// A binary of `.k8s/bin` (built by the setup script on first use).
pub fn testbin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let st = Command::new(crate::repo_root().join("scripts/setup-k8s-testbin.sh"))
            .status()
            .expect("run scripts/setup-k8s-testbin.sh");
        assert!(
            st.success(),
            "scripts/setup-k8s-testbin.sh failed: the Kubernetes tests need etcd, kube-apiserver and helm built from their Go modules"
        );
    });
    let p = crate::repo_root().join(".k8s/bin").join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes the certificates and keys (EC P-256, quick to generate).
fn make_pki(dir: &Path) {
    sh(
        dir,
        r#"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.crt -days 2 -subj "/CN=tslice-test-ca" 2>/dev/null
openssl req $ec -keyout serving.key -out serving.csr -subj "/CN=kube-apiserver" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > serving.ext
openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out serving.crt -days 2 -extfile serving.ext 2>/dev/null
openssl req $ec -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 2 -extfile client.ext 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out sa.key
openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
"#,
    );
}

/// A kubeconfig for `url` with these credentials (`user` is YAML).
pub fn kubeconfig(path: &Path, url: &str, ca: &Path, user: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: user\n  user:\n{user}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: user\ncurrent-context: test\n",
        ca.display()
    );
    std::fs::write(path, text).expect("write a kubeconfig");
}

/// Spawns `cmd` so that it dies with the test process (the spawning thread
/// lives as long as the process).
fn spawn_for_life(mut cmd: Command, log: &Path) -> u32 {
    let log = std::fs::File::create(log).expect("log file");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl in the forked child before exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn a server");
        tx.send(child.id()).expect("report the pid");
        // The parent-death signal follows this thread: it stays as long
        // as the server runs.
        let _ = child.wait();
    });
    rx.recv().expect("spawned")
}

/// Whether a process has exited (or is a zombie).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z'))
    })
}

impl ApiServer {
    /// The test binary's API server (started on first use).
    pub fn shared() -> &'static ApiServer {
        static SERVER: OnceLock<Result<ApiServer, String>> = OnceLock::new();
        match SERVER.get_or_init(ApiServer::start) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    fn start() -> Result<ApiServer, String> {
        let etcd = testbin("etcd");
        let apiserver = testbin("kube-apiserver");
        let dir = crate::scratch("k8s");
        make_pki(&dir);
        let (client, peer, secure) = (free_port(), free_port(), free_port());
        let mut e = Command::new(etcd);
        e.args([
            "--data-dir",
            dir.join("etcd").to_str().unwrap(),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
            "--unsafe-no-fsync",
        ]);
        spawn_for_life(e, &dir.join("etcd.log"));
        let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
        let mut a = Command::new(apiserver);
        a.args([
            format!("--etcd-servers=http://127.0.0.1:{client}"),
            format!("--secure-port={secure}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--tls-cert-file={}", p("serving.crt")),
            format!("--tls-private-key-file={}", p("serving.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--cert-dir={}", p("certs")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=RBAC".into(),
            // No controllers make service accounts' default objects here.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            // One server on loopback: no endpoints of a kubernetes Service.
            "--endpoint-reconciler-type=none".into(),
        ]);
        let pid = spawn_for_life(a, &dir.join("kube-apiserver.log"));
        let url = format!("https://127.0.0.1:{secure}");
        let kubeconfig = dir.join("admin.kubeconfig");
        kubeconfig_file(&kubeconfig, &url, &dir);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let s = ApiServer {
            ca: dir.join("ca.crt"),
            dir,
            url,
            kubeconfig,
            rt,
        };
        let t0 = Instant::now();
        loop {
            // (Any failure below is reported to every test that asks.)
            let ok = s.block_on(async {
                let ns: Api<Namespace> = Api::all(s.client().await);
                ns.get("default").await.is_ok()
            });
            if ok {
                break;
            }
            if gone(pid) || t0.elapsed() > Duration::from_secs(120) {
                let log =
                    std::fs::read_to_string(s.dir.join("kube-apiserver.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                return Err(format!(
                    "kube-apiserver did not come up ({}); the end of its log:\n{}",
                    s.dir.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(s)
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// An admin client.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig).await
    }

    pub fn create_namespace(&self, name: &str) {
        self.create_namespace_labeled(name, &[]);
    }

    pub fn create_namespace_labeled(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        self.block_on(async {
            let api: Api<Namespace> = Api::all(self.client().await);
            let ns: Namespace = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": labels}
            }))
            .unwrap();
            api.create(&PostParams::default(), &ns)
                .await
                .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        });
    }

    /// Creates a pod bound to `node` (as the scheduler would) with these
    /// annotations; returns its UID.
    pub fn create_pod(&self, ns: &str, name: &str, node: &str, notes: &[(&str, &str)]) -> String {
        let notes: serde_json::Map<String, serde_json::Value> = notes
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "annotations": notes},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "main", "image": "example.com/trainer:1",
                                "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
            }
        }))
        .unwrap();
        self.block_on(async {
            let api: Api<Pod> = Api::namespaced(self.client().await, ns);
            let p = api
                .create(&PostParams::default(), &pod)
                .await
                .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"));
            p.metadata.uid.expect("a UID")
        })
    }

    /// Sets (or with None removes) an annotation of a pod.
    pub fn annotate(&self, ns: &str, name: &str, key: &str, value: Option<&str>) {
        self.block_on(async {
            let api: Api<Pod> = Api::namespaced(self.client().await, ns);
            let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap_or_else(|e| panic!("annotate {ns}/{name}: {e}"));
        });
    }

    pub fn delete_pod(&self, ns: &str, name: &str) {
        self.block_on(async {
            let api: Api<Pod> = Api::namespaced(self.client().await, ns);
            api.delete(name, &DeleteParams::default().grace_period(0))
                .await
                .unwrap_or_else(|e| panic!("delete {ns}/{name}: {e}"));
        });
    }
}

fn kubeconfig_file(path: &Path, url: &str, dir: &Path) {
    let user = format!(
        "    client-certificate: {}\n    client-key: {}",
        dir.join("admin.crt").display(),
        dir.join("admin.key").display()
    );
    kubeconfig(path, url, &dir.join("ca.crt"), &user);
}

/// A TCP relay to the API server that holds every connection until it is
/// opened: a broker whose watch cannot have delivered anything yet.
pub struct Gate {
    pub url: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Gate {
    pub fn new(api: &ApiServer) -> Gate {
        use std::sync::atomic::{AtomicBool, Ordering};
        let target = api.url.trim_start_matches("https://").to_string();
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a relay");
        let url = format!("https://{}", l.local_addr().unwrap());
        let open = std::sync::Arc::new(AtomicBool::new(false));
        let o = open.clone();
        std::thread::spawn(move || {
            for c in l.incoming().map_while(Result::ok) {
                let (o, target) = (o.clone(), target.clone());
                std::thread::spawn(move || {
                    while !o.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let Ok(up) = std::net::TcpStream::connect(&target) else {
                        return;
                    };
                    let (Ok(mut c2), Ok(mut up2)) = (c.try_clone(), up.try_clone()) else {
                        return;
                    };
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut up2);
                    });
                    let (mut c, mut up) = (c, up);
                    let _ = std::io::copy(&mut up, &mut c);
                });
            }
        });
        Gate { url, open }
    }

    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::Release);
    }

    /// An admin kubeconfig through this relay.
    pub fn kubeconfig(&self, api: &ApiServer) -> PathBuf {
        let path = api.dir.join(format!(
            "gate-{}.kubeconfig",
            self.url.rsplit(':').next().unwrap()
        ));
        kubeconfig_file(&path, &self.url, &api.dir);
        path
    }
}

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("read the kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("a client configuration");
    kube::Client::try_from(cfg).expect("a client")
}

/// The cgroup path the kubelet (systemd driver) gives a container of a
/// best-effort pod, below `kubepods.slice` (the container ID is made up).
pub fn kubelet_cgroup(pod_uid: &str, container: u32) -> String {
    format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{:064x}.scope",
        pod_uid.replace('-', "_"),
        container
    )
}

/// `helm` with these arguments; (success, stdout, stderr).
pub fn helm(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(testbin("helm"))
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            crate::repo_root().join(".k8s/helm/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            crate::repo_root().join(".k8s/helm/config"),
        )
        .env("HELM_DATA_HOME", crate::repo_root().join(".k8s/helm/data"))
        .output()
        .expect("run helm");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The chart's directory.
pub fn chart() -> PathBuf {
    crate::repo_root().join("deploy/helm/tslice")
}

/// The objects of a multi-document YAML text (empty documents dropped).
pub fn yaml_objects(text: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple::<serde_json::Value>(text)
        .expect("parse the rendered YAML")
        .into_iter()
        .filter(|v| v.is_object())
        .collect()
}

impl ApiServer {
    /// Applies objects server-side (as `kubectl apply --server-side`);
    /// returns each object's error, if any, by kind/name.
    pub fn apply(&self, objects: &[serde_json::Value]) -> Vec<String> {
        use kube::api::DynamicObject;
        use kube::core::GroupVersionKind;
        self.block_on(async {
            let client = self.client().await;
            let discovery = kube::Discovery::new(client.clone())
                .run()
                .await
                .expect("discover the API");
            let mut errors = Vec::new();
            for o in objects {
                let (group, version) = match o["apiVersion"].as_str().unwrap_or("").split_once('/')
                {
                    Some((g, v)) => (g.to_string(), v.to_string()),
                    None => (
                        String::new(),
                        o["apiVersion"].as_str().unwrap_or("").to_string(),
                    ),
                };
                let kind = o["kind"].as_str().unwrap_or("").to_string();
                let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
                let gvk = GroupVersionKind::gvk(&group, &version, &kind);
                let Some((ar, caps)) = discovery.resolve_gvk(&gvk) else {
                    errors.push(format!("{kind}/{name}: the API server has no such kind"));
                    continue;
                };
                let api: Api<DynamicObject> = match caps.scope {
                    kube::discovery::Scope::Namespaced => Api::namespaced_with(
                        client.clone(),
                        o["metadata"]["namespace"].as_str().unwrap_or("default"),
                        &ar,
                    ),
                    kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &ar),
                };
                let pp = PatchParams::apply("tslice-tests").force();
                if let Err(e) = api.patch(&name, &pp, &Patch::Apply(o)).await {
                    errors.push(format!("{kind}/{name}: {e}"));
                }
            }
            errors
        })
    }

    /// A token of a service account (the TokenRequest API, as kubelet gets
    /// one for a pod).
    pub fn token(&self, ns: &str, sa: &str) -> String {
        use k8s_openapi::api::core::v1::ServiceAccount;
        self.block_on(async {
            let api: Api<ServiceAccount> = Api::namespaced(self.client().await, ns);
            let req = serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}
            });
            let r: serde_json::Value = api
                .create_subresource("token", sa, &PostParams::default(), &req)
                .await
                .unwrap_or_else(|e| panic!("a token for {ns}/{sa}: {e}"));
            r["status"]["token"].as_str().expect("a token").to_string()
        })
    }

    /// A kubeconfig that authenticates with a bearer token.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        kubeconfig(&path, &self.url, &self.ca, &format!("    token: {token}"));
        path
    }

    /// A serving certificate for 127.0.0.1 signed by the test CA: (cert, key).
    pub fn issue_cert(&self, name: &str) -> (PathBuf, PathBuf) {
        sh(
            &self.dir,
            &format!(
                r#"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout {name}.key -out {name}.csr -subj "/CN={name}" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > {name}.ext
openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {name}.crt -days 2 -extfile {name}.ext 2>/dev/null
"#
            ),
        );
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        )
    }

    /// Creates an object from JSON with the admin's client; the object the
    /// server returns, or its refusal.
    pub fn create_pod_json(
        &self,
        ns: &str,
        pod: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.block_on(async {
            let api: Api<Pod> = Api::namespaced(self.client().await, ns);
            let pod: Pod = serde_json::from_value(pod).map_err(|e| e.to_string())?;
            api.create(&PostParams::default(), &pod)
                .await
                .map(|p| serde_json::to_value(p).unwrap())
                .map_err(|e| e.to_string())
        })
    }

    /// Patches a pod's annotation through its status subresource; the
    /// refusal if any.
    pub fn try_annotate_status(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), String> {
        self.block_on(async {
            let api: Api<Pod> = Api::namespaced(self.client().await, ns);
            let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    /// Patches a pod's annotation; the refusal if any.
    pub fn try_annotate(&self, ns: &str, name: &str, key: &str, value: &str) -> Result<(), String> {
        self.block_on(async {
            let api: Api<Pod> = Api::namespaced(self.client().await, ns);
            let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}
