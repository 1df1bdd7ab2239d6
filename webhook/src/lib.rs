//! The decisions of tslice's admission webhook, as plain functions of JSON
//! (the server in `main.rs` only carries AdmissionReviews to and from them).
//!
//! - **Injection** (`/mutate`): a pod that requests a GPU gets what the shim
//!   needs in every container: the library from the node (a read-only
//!   hostPath the DaemonSet fills), `LD_PRELOAD` of it (put first, before
//!   any the image sets), the broker's socket directory and `TSLICE_BROKER`;
//!   or, in `ld.so.preload` mode, the node's `/etc/ld.so.preload` file
//!   mounted over the container's, which also covers programs that clear
//!   their environment. Injecting twice changes nothing.
//! - **Validation** (`/validate`): a pod's `tslice.dev/*` annotations must
//!   parse and stay under its namespace's ceiling, at creation and when
//!   they are changed on a running pod; the refusal names the annotation,
//!   the value and what is accepted, and the user sees it in `kubectl`.
//!   Optionally only some groups may change them on a running pod.

use serde_json::{json, Value};
use tslice_broker::config::Config;
use tslice_policy::annotations;

/// Which containers of a GPU pod get the shim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Containers {
    /// Those that request a GPU (the others have no GPU device; a sidecar
    /// of another C library, musl's, could not load a glibc library).
    Gpu,
    /// Every container (and init container) of the pod.
    All,
}

/// Where things are on the node and in the container.
#[derive(Clone, Debug)]
pub struct Injection {
    /// The node's directory holding `libtslice.so` (and `ld.so.preload`).
    pub host_lib_dir: String,
    /// The node's directory of the broker's socket.
    pub host_socket_dir: String,
    /// The socket's file name in that directory.
    pub socket_name: String,
    /// Mount `/etc/ld.so.preload` instead of setting `LD_PRELOAD`.
    pub ld_so_preload: bool,
    /// Extended resources that mean "this pod uses a GPU".
    pub gpu_resources: Vec<String>,
    pub containers: Containers,
}

impl Default for Injection {
    fn default() -> Self {
        Injection {
            host_lib_dir: "/var/lib/tslice/lib".into(),
            host_socket_dir: "/run/tslice".into(),
            socket_name: "broker.sock".into(),
            ld_so_preload: false,
            gpu_resources: vec!["nvidia.com/gpu".into()],
            containers: Containers::Gpu,
        }
    }
}

/// Where the library and the socket appear in the container.
pub const LIB_MOUNT: &str = "/opt/tslice";
pub const SOCKET_MOUNT: &str = "/run/tslice";
pub const PRELOAD_MOUNT: &str = "/etc/ld.so.preload";
/// Set on a pod once injected (it grants nothing: injection is applied
/// again whatever it says).
pub use tslice_policy::annotations::INJECTED;
/// The volumes tslice owns in a pod: a pod's own volume of one of these
/// names is replaced.
const VOLUMES: [&str; 3] = ["tslice-lib", "tslice-run", "tslice-preload"];

/// Whether a container asks for a GPU.
fn container_wants_gpu(c: &Value, inj: &Injection) -> bool {
    ["limits", "requests"].iter().any(|k| {
        c["resources"][k]
            .as_object()
            .is_some_and(|m| inj.gpu_resources.iter().any(|r| m.contains_key(r)))
    })
}

/// Whether any container of the pod asks for a GPU.
pub fn wants_gpu(pod: &Value, inj: &Injection) -> bool {
    let containers = pod["spec"]["containers"].as_array().into_iter().flatten();
    let inits = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten();
    containers.chain(inits).any(|c| container_wants_gpu(c, inj))
}

/// The pod as injected: Ok(None) when there is nothing to change (no GPU,
/// or injected exactly so already); Err, the message refusing the pod.
///
/// What the pod already says is not trusted: volumes of tslice's names are
/// replaced by tslice's, mounts at tslice's paths or of its volumes are
/// replaced, every `TSLICE_*` variable the pod sets is removed (the node
/// decides where the broker is), and `LD_PRELOAD` becomes the shim followed
/// by what the pod listed.
pub fn inject(pod: &Value, inj: &Injection) -> Result<Option<Value>, String> {
    if !wants_gpu(pod, inj) {
        return Ok(None);
    }
    let bad = || "the pod is not an object with a spec".to_string();
    let mut p = pod.clone();
    let lib = format!("{LIB_MOUNT}/libtslice.so");
    let socket = format!("{SOCKET_MOUNT}/{}", inj.socket_name);
    let mut volumes = vec![
        json!({"name": "tslice-lib", "hostPath": {"path": inj.host_lib_dir, "type": "Directory"}}),
        json!({"name": "tslice-run", "hostPath": {"path": inj.host_socket_dir, "type": "DirectoryOrCreate"}}),
    ];
    if inj.ld_so_preload {
        volumes.push(json!({"name": "tslice-preload", "hostPath": {
            "path": format!("{}/ld.so.preload", inj.host_lib_dir), "type": "File"}}));
    }
    let spec = p["spec"].as_object_mut().ok_or_else(bad)?;
    let vols = spec.entry("volumes").or_insert_with(|| json!([]));
    let vols = vols.as_array_mut().ok_or_else(bad)?;
    vols.retain(|v| !VOLUMES.iter().any(|n| v["name"] == *n));
    vols.extend(volumes);
    for key in ["containers", "initContainers"] {
        let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs {
            if inj.containers == Containers::Gpu && !container_wants_gpu(c, inj) {
                continue;
            }
            let name = c["name"].as_str().unwrap_or("").to_string();
            let c = c.as_object_mut().ok_or_else(bad)?;
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let mounts = mounts.as_array_mut().ok_or_else(bad)?;
            let paths = [LIB_MOUNT, SOCKET_MOUNT, PRELOAD_MOUNT];
            mounts.retain(|m| {
                !VOLUMES.iter().any(|n| m["name"] == *n)
                    && !paths.iter().any(|p| m["mountPath"] == *p)
            });
            mounts.push(json!({"name": "tslice-lib", "mountPath": LIB_MOUNT, "readOnly": true}));
            // Read-only: a tenant cannot remove or replace the node's socket.
            mounts.push(json!({"name": "tslice-run", "mountPath": SOCKET_MOUNT, "readOnly": true}));
            if inj.ld_so_preload {
                mounts.push(
                    json!({"name": "tslice-preload", "mountPath": PRELOAD_MOUNT, "readOnly": true}),
                );
            }
            let env = c.entry("env").or_insert_with(|| json!([]));
            let env = env.as_array_mut().ok_or_else(bad)?;
            let mut preload: Vec<String> = Vec::new();
            for e in env.iter().filter(|e| e["name"] == "LD_PRELOAD") {
                match e["value"].as_str() {
                    Some(v) if e.get("valueFrom").is_none() => preload.extend(
                        v.split([':', ' '])
                            .filter(|x| !x.is_empty() && *x != lib)
                            .map(str::to_string),
                    ),
                    None if e.get("valueFrom").is_none() => {}
                    _ => {
                        return Err(format!(
                            "container {name:?} sets LD_PRELOAD with valueFrom; tslice puts its shim first in LD_PRELOAD, so set it as a literal value (or use ld.so.preload injection)"
                        ))
                    }
                }
            }
            env.retain(|e| {
                let n = e["name"].as_str().unwrap_or("");
                !n.starts_with("TSLICE_") && (n != "LD_PRELOAD" || inj.ld_so_preload)
            });
            env.push(json!({"name": "TSLICE_BROKER", "value": socket}));
            if !inj.ld_so_preload {
                let mut list = vec![lib.clone()];
                list.extend(preload);
                env.push(json!({"name": "LD_PRELOAD", "value": list.join(":")}));
            }
        }
    }
    let meta = p["metadata"].as_object_mut().ok_or_else(bad)?;
    let notes = meta.entry("annotations").or_insert_with(|| json!({}));
    notes
        .as_object_mut()
        .ok_or_else(bad)?
        .insert(INJECTED.into(), json!("true"));
    Ok((p != *pod).then_some(p))
}

/// Who may change `tslice.dev/*` annotations of a running pod (empty:
/// whoever RBAC lets update the pod, within the namespace's ceiling).
#[derive(Clone, Debug, Default)]
pub struct Editors(pub Vec<String>);

/// Whether a pod (created, or updated from `old`) may be admitted: its
/// annotations parse and stay under its namespace's ceiling, and a change
/// of them on a running pod comes from an allowed group. The error is the
/// message the user sees.
pub fn validate(
    cfg: &Config,
    editors: &Editors,
    namespace: &str,
    pod: &Value,
    old: Option<&Value>,
    groups: &[String],
) -> Result<(), String> {
    let notes = tslice_notes(pod);
    if let Some(old) = old {
        let before = tslice_notes(old);
        if before != notes && !editors.0.is_empty() && !groups.iter().any(|g| editors.0.contains(g))
        {
            return Err(format!(
                "tslice.dev/* annotations of a running pod may only be changed by the groups {} (tslice's annotation-editors)",
                editors.0.join(", ")
            ));
        }
        if before == notes {
            return Ok(());
        }
    }
    let q = annotations::parse(notes.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|errs| join(&errs))?;
    if let Some(c) = cfg.ceiling(namespace) {
        let v = c.violations(&q, None);
        if !v.is_empty() {
            return Err(join(&v));
        }
    }
    Ok(())
}

fn join(errs: &[tslice_policy::quota::QuotaError]) -> String {
    errs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The pod's `tslice.dev/*` annotations but tslice's own marker.
fn tslice_notes(pod: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pod["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(annotations::PREFIX) && *k != INJECTED)
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(gpu: bool, env: Value) -> Value {
        let limits = if gpu {
            json!({"nvidia.com/gpu": "1"})
        } else {
            json!({"cpu": "1"})
        };
        json!({
            "metadata": {"name": "p", "namespace": "team-a", "annotations": {"tslice.dev/memory-limit": "8Gi"}},
            "spec": {"containers": [
                {"name": "main", "image": "x", "resources": {"limits": limits}, "env": env},
                {"name": "sidecar", "image": "y"}
            ]}
        })
    }

    #[test]
    fn a_gpu_pod_gets_the_shim_in_its_gpu_containers_once() {
        let inj = Injection::default();
        let p = inject(
            &pod(
                true,
                json!([{"name": "LD_PRELOAD", "value": "/usr/lib/libjemalloc.so"}]),
            ),
            &inj,
        )
        .unwrap()
        .unwrap();
        // The GPU container only: the sidecar has no GPU.
        let sidecar = &p["spec"]["containers"][1];
        assert!(
            sidecar["env"].is_null() && sidecar["volumeMounts"].is_null(),
            "{sidecar:#}"
        );
        for c in p["spec"]["containers"].as_array().unwrap().iter().take(1) {
            let env = c["env"].as_array().unwrap();
            let get = |n: &str| {
                env.iter()
                    .find(|e| e["name"] == n)
                    .map(|e| e["value"].clone())
            };
            assert_eq!(get("TSLICE_BROKER"), Some(json!("/run/tslice/broker.sock")));
            let pre = get("LD_PRELOAD").unwrap();
            assert!(
                pre.as_str()
                    .unwrap()
                    .starts_with("/opt/tslice/libtslice.so"),
                "{pre}"
            );
            let mounts = c["volumeMounts"].as_array().unwrap();
            assert!(mounts
                .iter()
                .any(|m| m["mountPath"] == LIB_MOUNT && m["readOnly"] == true));
            assert!(mounts.iter().any(|m| m["mountPath"] == SOCKET_MOUNT));
        }
        let main_pre = p["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "LD_PRELOAD")
            .map(|e| e["value"].clone())
            .unwrap();
        assert_eq!(
            main_pre, "/opt/tslice/libtslice.so:/usr/lib/libjemalloc.so",
            "the pod's own preload follows the shim"
        );
        assert_eq!(p["metadata"]["annotations"][INJECTED], "true");
        assert_eq!(
            p["metadata"]["annotations"]["tslice.dev/memory-limit"],
            "8Gi"
        );
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 2);
        assert_eq!(
            inject(&p, &inj),
            Ok(None),
            "injecting twice changes nothing"
        );
        assert_eq!(
            inject(&pod(false, json!([])), &inj),
            Ok(None),
            "no GPU, no shim"
        );
        let all = Injection {
            containers: Containers::All,
            ..Injection::default()
        };
        let p = inject(&pod(true, json!([])), &all).unwrap().unwrap();
        assert!(
            p["spec"]["containers"][1]["env"].is_array(),
            "every container"
        );
    }

    #[test]
    fn ld_so_preload_mode_mounts_the_nodes_file() {
        let inj = Injection {
            ld_so_preload: true,
            ..Injection::default()
        };
        let p = inject(&pod(true, json!([])), &inj).unwrap().unwrap();
        let c = &p["spec"]["containers"][0];
        assert!(c["env"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["name"] != "LD_PRELOAD"));
        assert!(c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/etc/ld.so.preload"));
        assert!(p["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["hostPath"]["path"] == "/var/lib/tslice/lib/ld.so.preload"));
    }

    #[test]
    fn what_the_pod_says_cannot_skip_or_redirect_the_injection() {
        let inj = Injection::default();
        // A marker set by the tenant, its own volume of tslice's name, a
        // mount at tslice's path, and variables of its own.
        let mut p = pod(
            true,
            json!([
                {"name": "TSLICE_BROKER", "value": "/tmp/mine.sock"},
                {"name": "TSLICE_NO_BROKER", "value": "standalone"},
                {"name": "TSLICE_BROKER", "value": "/tmp/again.sock"},
                {"name": "LD_PRELOAD", "value": "/a.so /opt/tslice/libtslice.so:/b.so"},
            ]),
        );
        p["metadata"]["annotations"][INJECTED] = json!("true");
        p["spec"]["volumes"] = json!([{"name": "tslice-lib", "emptyDir": {}}]);
        p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "tslice-lib", "mountPath": "/elsewhere"}, {"name": "x", "mountPath": "/run/tslice"}]);
        let q = inject(&p, &inj).unwrap().unwrap();
        let c = &q["spec"]["containers"][0];
        let env = c["env"].as_array().unwrap();
        let named = |n: &str| env.iter().filter(|e| e["name"] == n).collect::<Vec<_>>();
        assert_eq!(named("TSLICE_BROKER").len(), 1);
        assert_eq!(
            named("TSLICE_BROKER")[0]["value"],
            "/run/tslice/broker.sock"
        );
        assert!(named("TSLICE_NO_BROKER").is_empty());
        assert_eq!(
            named("LD_PRELOAD")[0]["value"],
            "/opt/tslice/libtslice.so:/a.so:/b.so"
        );
        let mounts = c["volumeMounts"].as_array().unwrap();
        assert_eq!(mounts.len(), 2, "{mounts:?}");
        assert!(mounts.iter().all(|m| m["readOnly"] == true));
        let vols = q["spec"]["volumes"].as_array().unwrap();
        assert!(vols.iter().all(|v| v.get("emptyDir").is_none()), "{vols:?}");
        // LD_PRELOAD from valueFrom cannot be put behind the shim: refused.
        let p = pod(
            true,
            json!([{"name": "LD_PRELOAD", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]),
        );
        let e = inject(&p, &inj).unwrap_err();
        assert!(
            e.contains("container \"main\" sets LD_PRELOAD with valueFrom"),
            "{e}"
        );
    }

    fn cfg(text: &str) -> Config {
        Config::parse(text, "broker.toml").unwrap()
    }

    fn with(notes: Value) -> Value {
        json!({"metadata": {"annotations": notes}})
    }

    #[test]
    fn annotations_are_validated_with_a_message_naming_them() {
        let c = cfg("");
        let e = validate(
            &c,
            &Editors::default(),
            "a",
            &with(json!({"tslice.dev/memory-limit": "lots"})),
            None,
            &[],
        )
        .unwrap_err();
        assert!(
            e.starts_with("annotation tslice.dev/memory-limit=\"lots\" is invalid"),
            "{e}"
        );
        assert!(
            e.contains("accepted: a size in Kubernetes' binary units"),
            "{e}"
        );
        assert!(validate(
            &c,
            &Editors::default(),
            "a",
            &with(json!({"tslice.dev/memory-limit": "8Gi", "other": "x"})),
            None,
            &[]
        )
        .is_ok());
        assert!(validate(
            &c,
            &Editors::default(),
            "a",
            &json!({"metadata": {}}),
            None,
            &[]
        )
        .is_ok());
    }

    #[test]
    fn ceilings_and_editors_hold_on_running_pods() {
        let c = cfg("[[ceiling]]\nnamespace = \"a\"\nmemory-limit = \"16Gi\"\n");
        let big = with(json!({"tslice.dev/memory-limit": "32Gi"}));
        let e = validate(&c, &Editors::default(), "a", &big, None, &[]).unwrap_err();
        assert!(e.contains("above this namespace's ceiling (16Gi)"), "{e}");
        assert!(
            validate(&c, &Editors::default(), "b", &big, None, &[]).is_ok(),
            "another namespace"
        );
        let ed = Editors(vec!["platform".into()]);
        let old = with(json!({"tslice.dev/memory-limit": "8Gi"}));
        let new = with(json!({"tslice.dev/memory-limit": "12Gi"}));
        let e = validate(&c, &ed, "a", &new, Some(&old), &["team-a".into()]).unwrap_err();
        assert!(
            e.contains("may only be changed by the groups platform"),
            "{e}"
        );
        assert!(validate(&c, &ed, "a", &new, Some(&old), &["platform".into()]).is_ok());
        // Other changes of the pod are not the editors' business.
        assert!(validate(&c, &ed, "a", &old, Some(&old), &["team-a".into()]).is_ok());
    }
}
