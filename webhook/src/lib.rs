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
}

impl Default for Injection {
    fn default() -> Self {
        Injection {
            host_lib_dir: "/var/lib/tslice/lib".into(),
            host_socket_dir: "/run/tslice".into(),
            socket_name: "broker.sock".into(),
            ld_so_preload: false,
            gpu_resources: vec!["nvidia.com/gpu".into()],
        }
    }
}

/// Where the library and the socket appear in the container.
pub const LIB_MOUNT: &str = "/opt/tslice";
pub const SOCKET_MOUNT: &str = "/run/tslice";
/// Set on a pod once injected.
pub const INJECTED: &str = "tslice.dev/injected";

/// Whether any container of the pod asks for a GPU.
pub fn wants_gpu(pod: &Value, inj: &Injection) -> bool {
    let containers = pod["spec"]["containers"].as_array().into_iter().flatten();
    let inits = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten();
    containers.chain(inits).any(|c| {
        ["limits", "requests"].iter().any(|k| {
            c["resources"][k]
                .as_object()
                .is_some_and(|m| inj.gpu_resources.iter().any(|r| m.contains_key(r)))
        })
    })
}

/// The pod as injected (None: nothing to do: no GPU, or injected already).
pub fn inject(pod: &Value, inj: &Injection) -> Option<Value> {
    if !wants_gpu(pod, inj) || pod["metadata"]["annotations"][INJECTED] == "true" {
        return None;
    }
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
    let spec = p["spec"].as_object_mut()?;
    let vols = spec.entry("volumes").or_insert_with(|| json!([]));
    let vols = vols.as_array_mut()?;
    for v in volumes {
        if !vols.iter().any(|x| x["name"] == v["name"]) {
            vols.push(v);
        }
    }
    for key in ["containers", "initContainers"] {
        let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs {
            let c = c.as_object_mut()?;
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let mounts = mounts.as_array_mut()?;
            let mut add = vec![
                json!({"name": "tslice-lib", "mountPath": LIB_MOUNT, "readOnly": true}),
                json!({"name": "tslice-run", "mountPath": SOCKET_MOUNT}),
            ];
            if inj.ld_so_preload {
                add.push(json!({"name": "tslice-preload", "mountPath": "/etc/ld.so.preload", "readOnly": true}));
            }
            for m in add {
                if !mounts.iter().any(|x| x["name"] == m["name"]) {
                    mounts.push(m);
                }
            }
            let env = c.entry("env").or_insert_with(|| json!([]));
            let env = env.as_array_mut()?;
            set_env(env, "TSLICE_BROKER", &socket, false);
            if !inj.ld_so_preload {
                set_env(env, "LD_PRELOAD", &lib, true);
            }
        }
    }
    let meta = p["metadata"].as_object_mut()?;
    let notes = meta.entry("annotations").or_insert_with(|| json!({}));
    notes
        .as_object_mut()?
        .insert(INJECTED.into(), json!("true"));
    Some(p)
}

/// Sets an environment variable; `prepend`: put `value` first in an
/// existing colon list (LD_PRELOAD the image already sets is kept).
fn set_env(env: &mut Vec<Value>, name: &str, value: &str, prepend: bool) {
    match env.iter_mut().find(|e| e["name"] == name) {
        Some(e) => {
            let old = e["value"].as_str().unwrap_or("").to_string();
            if prepend && !old.is_empty() && !old.split([':', ' ']).any(|x| x == value) {
                e["value"] = json!(format!("{value}:{old}"));
            } else if !prepend || old.is_empty() {
                e["value"] = json!(value);
            }
        }
        None => env.push(json!({"name": name, "value": value})),
    }
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
    fn a_gpu_pod_gets_the_shim_in_every_container_once() {
        let inj = Injection::default();
        let p = inject(
            &pod(
                true,
                json!([{"name": "LD_PRELOAD", "value": "/usr/lib/libjemalloc.so"}]),
            ),
            &inj,
        )
        .unwrap();
        for c in p["spec"]["containers"].as_array().unwrap() {
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
        let main_pre = &p["spec"]["containers"][0]["env"][0]["value"];
        assert_eq!(
            main_pre, "/opt/tslice/libtslice.so:/usr/lib/libjemalloc.so",
            "the image's preload is kept"
        );
        assert_eq!(p["metadata"]["annotations"][INJECTED], "true");
        assert_eq!(
            p["metadata"]["annotations"]["tslice.dev/memory-limit"],
            "8Gi"
        );
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 2);
        assert_eq!(inject(&p, &inj), None, "injecting twice changes nothing");
        assert_eq!(
            inject(&pod(false, json!([])), &inj),
            None,
            "no GPU, no shim"
        );
    }

    #[test]
    fn ld_so_preload_mode_mounts_the_nodes_file() {
        let inj = Injection {
            ld_so_preload: true,
            ..Injection::default()
        };
        let p = inject(&pod(true, json!([])), &inj).unwrap();
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
