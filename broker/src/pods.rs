//! Pods as tenants: the policy source of a broker on a Kubernetes node.
//!
//! The broker watches the pods of its own node (`spec.nodeName`) and keeps
//! each one's `tslice.dev/*` annotations. A connecting process's pod comes
//! from the kernel (its cgroup, `policy::podcgroup`), never from what it
//! says; the pod is the tenant (`pod:<namespace>/<name>`), all its
//! containers and processes together, with the node's defaults overlaid by
//! its annotations and held under its namespace's ceiling. Processes that
//! are not in a pod are classified by the configuration file as before.
//! A change of a pod (annotated, deleted) is applied to its running
//! processes at once (the watch wakes the broker, which classifies every
//! process again).

use crate::config::{Config, Limits, PolicySource};
use crate::identity::Peer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::Notify;
use tracing::{info, warn};
use tslice_policy::annotations::{self, PodQuota};
use tslice_policy::podcgroup;

/// What the broker knows of one pod of its node.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// Its annotations' quota (the valid ones; the invalid are logged and
    /// left to the defaults).
    pub quota: PodQuota,
}

/// The pods of the node, by UID, as the watch delivers them.
#[derive(Default)]
pub struct Pods {
    map: RwLock<HashMap<String, PodInfo>>,
    /// Wakes the broker to classify its processes again.
    pub changed: Notify,
}

impl Pods {
    pub fn get(&self, uid: &str) -> Option<PodInfo> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
    }

    /// Sets (or, with None, removes) a pod.
    pub fn set(&self, uid: &str, info: Option<PodInfo>) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        let changed = match info {
            Some(i) => m.insert(uid.to_string(), i.clone()).as_ref() != Some(&i),
            None => m.remove(uid).is_some(),
        };
        drop(m);
        if changed {
            self.changed.notify_one();
        }
    }

    /// Replaces every pod (a watch's initial list, or a relist).
    pub fn replace(&self, all: HashMap<String, PodInfo>) {
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = all;
        self.changed.notify_one();
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A pod's limits: the node's defaults overlaid with what its annotations
/// ask for, under its namespace's ceiling.
pub fn limits_of(cfg: &Config, info: &PodInfo) -> Limits {
    let mut q = info.quota.clone();
    let ceiling = cfg.ceiling(&info.namespace);
    if let Some(c) = ceiling {
        // The device is not known here: compute ceilings apply now, the
        // memory ceiling when the ledger resolves the limit.
        q = c.clamp(&q, u64::MAX);
    }
    let d = &cfg.defaults;
    let mut l = Limits {
        memory: q.memory.or_else(|| d.memory.clone()),
        compute_request: q.compute_request.unwrap_or(d.compute_request),
        compute_limit: q.compute_limit.unwrap_or(d.compute_limit),
        weight: q.weight.unwrap_or(d.weight),
        class: q.class.unwrap_or(d.class),
        memory_ceiling: ceiling.and_then(|c| c.memory),
    };
    if let Some(c) = ceiling {
        // The defaults are held under the ceiling too.
        if let Some(m) = c.compute_limit {
            l.compute_limit = l.compute_limit.min(m);
        }
        if let Some(m) = c.compute_request {
            l.compute_request = l.compute_request.min(m);
        }
        if let Some(m) = c.weight {
            l.weight = l.weight.min(m);
        }
        if c.forbid_latency_critical && l.class == tslice_policy::class::Class::LatencyCritical {
            l.class = tslice_policy::class::Class::Standard;
        }
    }
    l.compute_request = l.compute_request.min(l.compute_limit);
    l
}

/// The pod a watch event describes, as the broker keeps it.
pub fn info_of(pod: &Pod) -> Option<(String, PodInfo)> {
    let meta = &pod.metadata;
    let uid = meta.uid.clone()?;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let notes = meta.annotations.clone().unwrap_or_default();
    // The valid annotations count; each invalid one is logged.
    let (quota, errors) =
        annotations::parse_lenient(notes.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for e in &errors {
        warn!(pod = %format!("{namespace}/{name}"), "{e}; the node's default applies instead");
    }
    Some((
        uid,
        PodInfo {
            namespace,
            name,
            quota,
        },
    ))
}

/// The policy source of a broker on a Kubernetes node.
pub struct KubeSource {
    pub config: Config,
    pub pods: Arc<Pods>,
}

impl KubeSource {
    /// The pod of a process (below the kubelet's roots only).
    fn pod_of(&self, peer: &Peer) -> Option<podcgroup::PodRef> {
        let roots = self
            .config
            .kubernetes
            .as_ref()
            .map(|k| k.cgroup_roots.as_slice())
            .unwrap_or_default();
        podcgroup::pod_of_path(&peer.cgroup, roots)
    }
}

impl PolicySource for KubeSource {
    fn classify(&self, peer: &Peer) -> (String, Limits) {
        let Some(pod) = self.pod_of(peer) else {
            return self.config.classify(&peer.cgroup, peer.uid, peer.gid);
        };
        match self.pods.get(&pod.uid) {
            Some(info) => (
                format!("pod:{}/{}", info.namespace, info.name),
                limits_of(&self.config, &info),
            ),
            // Not delivered (yet, or deleted): the pod is still one tenant,
            // with the defaults, under the ceiling for every namespace.
            None => {
                let info = PodInfo {
                    namespace: String::new(),
                    name: String::new(),
                    quota: PodQuota::default(),
                };
                (
                    format!("pod:uid:{}", pod.uid),
                    limits_of(&self.config, &info),
                )
            }
        }
    }

    fn declared(&self) -> Vec<(String, Limits)> {
        self.config.declared()
    }

    fn defaults(&self) -> Limits {
        self.config.defaults.clone()
    }

    fn known(&self, peer: &Peer) -> bool {
        self.pod_of(peer)
            .is_none_or(|p| self.pods.get(&p.uid).is_some())
    }
}

/// Watches the pods of `node` into `pods` until the process ends (the
/// watch retries with backoff when the API server is away).
pub async fn watch(pods: Arc<Pods>, node: String) {
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot reach the Kubernetes API server ({e}); pods get the node's defaults");
            return;
        }
    };
    let api: kube::Api<Pod> = kube::Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut listing: Option<HashMap<String, PodInfo>> = None;
    info!(%node, "watching the node's pods");
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => listing = Some(HashMap::new()),
            Ok(Event::InitApply(p)) => {
                if let (Some(l), Some((uid, info))) = (listing.as_mut(), info_of(&p)) {
                    l.insert(uid, info);
                }
            }
            Ok(Event::InitDone) => {
                let all = listing.take().unwrap_or_default();
                info!(pods = all.len(), "the node's pods are listed");
                pods.replace(all);
            }
            Ok(Event::Apply(p)) => {
                if let Some((uid, info)) = info_of(&p) {
                    pods.set(&uid, Some(info));
                }
            }
            Ok(Event::Delete(p)) => {
                if let Some(uid) = p.metadata.uid {
                    pods.set(&uid, None);
                }
            }
            Err(e) => warn!("watching pods: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tslice_policy::class::Class;

    #[test]
    fn ceilings_hold_the_defaults_too() {
        let cfg = Config::parse(
            "[defaults]\nclass = \"latency-critical\"\ncompute-limit = \"80%\"\nweight = 50\n\
             [[ceiling]]\nnamespace = \"a\"\ncompute-limit = \"40%\"\nweight = 5\nlatency-critical = false\n",
            "t",
        )
        .unwrap();
        let info = |ns: &str| PodInfo {
            namespace: ns.into(),
            name: "p".into(),
            quota: PodQuota::default(),
        };
        let l = limits_of(&cfg, &info("a"));
        assert_eq!(l.class, Class::Standard);
        assert_eq!(l.compute_limit.0, 400_000);
        assert_eq!(l.weight, 5);
        let l = limits_of(&cfg, &info("b"));
        assert_eq!(l.class, Class::LatencyCritical, "no ceiling there");
        assert_eq!(l.weight, 50);
    }
}
