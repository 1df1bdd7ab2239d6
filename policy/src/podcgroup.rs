//! Which Kubernetes pod (and container) a process belongs to, from its
//! `/proc/PID/cgroup`: the kubelet names a pod's cgroup after its UID and
//! the container runtime names the container's cgroup after its ID. Both
//! cgroup drivers (`systemd`: `kubepods-burstable-pod<uid with _>.slice`,
//! `cgroupfs`: `kubepods/burstable/pod<uid>`), cgroup v1 (any hierarchy's
//! line) and v2 (the `0::` line), a kubelet cgroup root below another
//! slice (kind: `kubelet.slice/kubelet-kubepods.slice/...`), paths
//! relative to a cgroup namespace (`/../..`), and the runtimes' container
//! naming (containerd `cri-containerd-<id>.scope`, CRI-O `crio-<id>.scope`,
//! Docker `docker-<id>.scope`, or the bare ID under cgroupfs).
//!
//! Only the kubelet's own tree counts: a path must begin at one of the
//! kubelet's cgroup roots ([`DEFAULT_ROOTS`], or the node's own), then an
//! optional QoS level, then the pod. Anybody who may make cgroups (a
//! systemd user session has a delegated subtree) can name a directory
//! `kubepods-pod<uid>.slice`; only root can make one in the kubelet's tree.
//! A path read from inside a cgroup namespace (the broker in a container)
//! starts with `..` up to the common ancestor: the rest must be the
//! kubelet's tree below its root (a QoS level or a pod), which a process
//! outside it cannot show.

/// The kubelet's cgroup roots: the systemd driver's, cgroupfs's, and a
/// kubelet whose root is below another slice (kind).
pub const DEFAULT_ROOTS: [&str; 3] = [
    "/kubepods.slice",
    "/kubepods",
    "/kubelet.slice/kubelet-kubepods.slice",
];

/// A process's pod, as its cgroup names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    /// The pod's UID as the API server shows it (dashed, lowercase; a
    /// static pod's is 32 hex digits).
    pub uid: String,
    /// The container's ID (None: in the pod's cgroup itself, or in a
    /// runtime helper such as CRI-O's `conmon`).
    pub container: Option<String>,
    /// The runtime that named the container's cgroup.
    pub runtime: Option<&'static str>,
}

/// The pod of a process, from the text of its `/proc/PID/cgroup` (every
/// line is looked at: on a cgroup v1 host the pod shows in each
/// controller's hierarchy, on v2 in the `0::` line), under the default
/// roots. None: not in a pod.
pub fn pod_of(proc_cgroup: &str) -> Option<PodRef> {
    let roots: Vec<String> = DEFAULT_ROOTS.iter().map(|r| r.to_string()).collect();
    proc_cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        pod_of_path(path, &roots)
    })
}

/// The pod of one cgroup path, in the kubelet's tree below one of `roots`.
pub fn pod_of_path(path: &str, roots: &[String]) -> Option<PodRef> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let below = roots.iter().find_map(|r| {
        let r: Vec<&str> = r.split('/').filter(|s| !s.is_empty()).collect();
        segs.starts_with(&r).then(|| &segs[r.len()..])
    });
    let below = match below {
        Some(b) => b,
        None => {
            // Relative to a cgroup namespace: what follows the `..` is the
            // kubelet's tree below its root, or a root itself.
            let ups = segs.iter().take_while(|s| **s == "..").count();
            if ups == 0 {
                return None;
            }
            let rest = &segs[ups..];
            let rooted = roots.iter().find_map(|r| {
                let r: Vec<&str> = r.split('/').filter(|s| !s.is_empty()).collect();
                (!r.is_empty() && rest.starts_with(&r)).then(|| &rest[r.len()..])
            });
            rooted.unwrap_or(rest)
        }
    };
    // An optional QoS level, then the pod, then the container.
    let mut i = 0;
    if below.first().is_some_and(|s| is_qos(s)) {
        i = 1;
    }
    let uid = pod_uid(below.get(i)?)?;
    let (container, runtime) = match below.get(i + 1).and_then(|s| container_of(s)) {
        Some((c, r)) => (Some(c), Some(r)),
        None => (None, None),
    };
    Some(PodRef {
        uid,
        container,
        runtime,
    })
}

/// A QoS level of the kubelet's tree (`kubepods-burstable.slice`,
/// `kubelet-kubepods-besteffort.slice`, `burstable`).
fn is_qos(seg: &str) -> bool {
    let unit = seg.strip_suffix(".slice").unwrap_or(seg);
    ["burstable", "besteffort"].iter().any(|q| {
        unit == *q || (seg.ends_with(".slice") && unit.ends_with(&format!("kubepods-{q}")))
    })
}

/// The pod UID in a segment: `pod<uid>` (cgroupfs) or
/// `<parent>-pod<uid with _ for ->.slice` (systemd).
fn pod_uid(seg: &str) -> Option<String> {
    let raw = match seg.strip_suffix(".slice") {
        Some(unit) => unit.rsplit_once("-pod").map(|(_, u)| u)?,
        None => seg.strip_prefix("pod")?,
    };
    let uid = raw.replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// A dashed UUID (8-4-4-4-12, lowercase hex) or a static pod's 32 hex digits.
fn is_uid(s: &str) -> bool {
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    match s.len() {
        36 => s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => hex(c),
        }),
        32 => s.chars().all(hex),
        _ => false,
    }
}

/// The container ID in a segment below the pod's, and who named it.
fn container_of(seg: &str) -> Option<(String, &'static str)> {
    let named = [
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
    ];
    let (id, runtime) = match seg.strip_suffix(".scope") {
        Some(unit) => named
            .iter()
            .find_map(|(p, r)| unit.strip_prefix(p).map(|id| (id, *r)))?,
        // cgroupfs: the bare ID (containerd, Docker), or crio-<id>.
        None => match seg.strip_prefix("crio-") {
            Some(id) => (id, "cri-o"),
            None => (seg, "containerd/docker"),
        },
    };
    let is_id = id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit());
    is_id.then(|| (id.to_ascii_lowercase(), runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f9d6c34-9f3c-4a53-9d4b-6f7e2b1c8a90";
    const UID_: &str = "0f9d6c34_9f3c_4a53_9d4b_6f7e2b1c8a90";
    const ID: &str = "3c5d3b5f0a4e2c1d9b8a7f6e5d4c3b2a19f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4";

    fn pod(container: bool, runtime: &'static str) -> Option<PodRef> {
        Some(PodRef {
            uid: UID.into(),
            container: container.then(|| ID.into()),
            runtime: container.then_some(runtime),
        })
    }

    /// Real shapes of `/proc/PID/cgroup` on Kubernetes nodes.
    #[test]
    fn pods_and_containers_under_every_driver_and_runtime() {
        let cases: Vec<(String, Option<PodRef>)> = vec![
            // cgroup v2, systemd driver, containerd, burstable.
            (
                format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope\n"),
                pod(true, "containerd"),
            ),
            // Guaranteed pods sit directly under kubepods.slice; CRI-O.
            (
                format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope\n"),
                pod(true, "cri-o"),
            ),
            // Docker through cri-dockerd, best-effort.
            (
                format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{ID}.scope\n"),
                pod(true, "docker"),
            ),
            // cgroup v2, cgroupfs driver: dashed UID, bare container ID.
            (
                format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"),
                pod(true, "containerd/docker"),
            ),
            // CRI-O under cgroupfs.
            (
                format!("0::/kubepods/burstable/pod{UID}/crio-{ID}\n"),
                pod(true, "cri-o"),
            ),
            // cgroup v1 (cgroupfs, Docker): every controller's line.
            (
                format!("12:memory:/kubepods/burstable/pod{UID}/{ID}\n11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n0::/\n"),
                pod(true, "containerd/docker"),
            ),
            // cgroup v1 with the systemd driver; a hybrid host whose v2 line is the root.
            (
                format!("0::/\n11:cpu,cpuacct:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{ID}.scope\n"),
                pod(true, "docker"),
            ),
            // kind: the kubelet's cgroup root below kubelet.slice.
            (
                format!("0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n"),
                pod(true, "containerd"),
            ),
            // Read from inside a cgroup namespace (a broker in a container).
            (
                format!("0::/../../kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n"),
                pod(true, "containerd"),
            ),
            // A sub-cgroup the container made below its own.
            (
                format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope/workers\n"),
                pod(true, "containerd"),
            ),
            // In the pod's cgroup itself, and in CRI-O's conmon.
            (
                format!("0::/kubepods.slice/kubepods-pod{UID_}.slice\n"),
                pod(false, ""),
            ),
            (
                format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope\n"),
                pod(false, ""),
            ),
            // Not pods.
            ("0::/user.slice/user-1000.slice/session-3.scope\n".into(), None),
            // A pod's name made outside the kubelet's tree (anybody with a
            // delegated cgroup subtree can make one): not that pod.
            (
                format!("0::/user.slice/user-1000.slice/user@1000.service/app.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n"),
                None,
            ),
            (
                format!("0::/user.slice/user-1000.slice/user@1000.service/kubepods.slice/kubepods-pod{UID_}.slice\n"),
                None,
            ),
            (format!("0::/system.slice/kubepods-pod{UID_}.slice\n"), None),
            (format!("0::/kubepods.slice/evil.slice/kubepods-pod{UID_}.slice\n"), None),
            (format!("0::/../../user.slice/kubepods-pod{UID_}.slice\n"), None),
            // A container's own sub-cgroup named like another pod: its pod.
            (
                format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope/kubepods-pod11111111_2222_4333_8444_555555555555.slice\n"),
                pod(true, "containerd"),
            ),
            ("0::/system.slice/containerd.service\n".into(), None),
            ("0::/\n".into(), None),
            ("0::/kubepods/podcast-app/worker\n".into(), None),
            (format!("0::/kubepods/pod{}/x\n", &UID[..35]), None),
            (format!("0::/kubepods/pod{}/x\n", UID.to_uppercase()), None),
            ("".into(), None),
            ("garbage without colons".into(), None),
        ];
        for (text, want) in cases {
            assert_eq!(pod_of(&text), want, "{text}");
        }
    }

    #[test]
    fn static_pods_have_hash_uids() {
        let uid = "3b0e9c6d7a8f6c0e4a6f1b7c4c3b2a1d";
        let p = pod_of(&format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ID}.scope"
        ))
        .unwrap();
        assert_eq!(p.uid, uid);
        assert_eq!(p.container.as_deref(), Some(ID));
    }

    #[test]
    fn a_container_id_must_be_one() {
        let roots: Vec<String> = DEFAULT_ROOTS.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            pod_of_path(&format!("/kubepods/pod{UID}/not-an-id"), &roots),
            pod(false, "")
        );
        assert_eq!(
            pod_of_path(&format!("/kubepods/pod{UID}/{}", &ID[..63]), &roots),
            pod(false, "")
        );
    }

    #[test]
    fn a_nodes_own_root() {
        let roots = vec!["/custom/kubepods.slice".to_string()];
        let path = format!("/custom/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope");
        assert_eq!(pod_of_path(&path, &roots), pod(true, "cri-o"));
        assert_eq!(
            pod_of_path(&format!("/kubepods.slice/kubepods-pod{UID_}.slice"), &roots),
            None,
            "the default roots are not this node's"
        );
        // Relative to a cgroup namespace, the root itself may show.
        let rel = format!("/../../custom/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope");
        assert_eq!(pod_of_path(&rel, &roots), pod(true, "cri-o"));
    }
}
