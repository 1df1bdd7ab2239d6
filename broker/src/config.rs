//! The broker's configuration file (TOML) and the policy it describes.
//!
//! ```toml
//! socket  = "/run/tslice/broker.sock"
//! metrics = "127.0.0.1:9400"
//! default-tenant = "uid"     # or "cgroup": who shares the defaults
//! [defaults]
//! memory-limit = "8GiB"
//! compute-limit = "50%"
//! [[tenant]]
//! name = "team-a"
//! cgroup = "/kubepods.slice/team-a"
//! memory-limit = "20GiB"
//! compute-request = "30%"
//! compute-limit = "60%"
//! weight = 2
//! class = "standard"
//! [kubernetes]                 # pods and their tslice.dev/* annotations
//! node-name = "gpu-node-1"     # default: $NODE_NAME
//! pod-wait = "2s"              # a process whose pod is not known yet waits
//! cgroup-roots = ["/kubepods.slice", "/kubepods"]   # the kubelet's (default: these and kind's)
//! [[ceiling]]                  # the most a namespace's pods may ask for
//! namespace = "team-a"         # "*": every namespace
//! memory-limit = "16Gi"
//! compute-request = "20%"
//! compute-limit = "50%"
//! weight = 10
//! latency-critical = false
//! ```
//!
//! Every key is optional except a tenant's `name` and at least one matcher
//! (`cgroup`, `uid`, `gid`; all given must match). Values use the shim's
//! forms (`policy::quota`). An invalid file is refused with one message that
//! names the key, the value and what is accepted.

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tslice_policy::annotations::Ceiling;
use tslice_policy::quota::{self, MemLimit, PerDevice, Ppm};

/// Where shims connect unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tslice/broker.sock";
/// Where the broker reads its configuration unless told otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/tslice/broker.toml";

pub use tslice_policy::class::Class;

/// What a tenant may use.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Device memory for all the tenant's processes together (None: no cap).
    pub memory: Option<PerDevice<MemLimit>>,
    /// Guaranteed share of GPU time while it has work.
    pub compute_request: Ppm,
    /// Ceiling (100%: may use idle time).
    pub compute_limit: Ppm,
    /// Share of spare time.
    pub weight: u32,
    pub class: Class,
    /// A namespace's ceiling on the memory limit (for every device).
    pub memory_ceiling: Option<MemLimit>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: None,
            compute_request: Ppm(0),
            compute_limit: Ppm::ONE,
            weight: 1,
            class: Class::Standard,
            memory_ceiling: None,
        }
    }
}

/// Which processes a tenant is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matcher {
    /// A prefix of the cgroup v2 path, by whole path components.
    pub cgroup: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Matcher {
    /// Whether a process with this identity matches every given criterion.
    pub fn matches(&self, cgroup: &str, uid: u32, gid: u32) -> bool {
        self.cgroup
            .as_deref()
            .is_none_or(|p| cgroup_under(cgroup, p))
            && self.uid.is_none_or(|u| u == uid)
            && self.gid.is_none_or(|g| g == gid)
    }
}

/// Whether cgroup `path` is `prefix` or below it (whole components:
/// `/a/b` is under `/a` but `/ab` is not).
pub fn cgroup_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// How processes that match no tenant are grouped into default tenants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultTenant {
    /// One per user: a user cannot multiply the defaults by making cgroups
    /// (systemd delegates a subtree to every user session).
    #[default]
    Uid,
    /// One per cgroup: each container its own (for nodes where workloads
    /// cannot create cgroups).
    Cgroup,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TenantSpec {
    pub name: String,
    pub matcher: Matcher,
    pub limits: Limits,
}

/// The whole policy of a configuration file.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    /// Processes that match no tenant: each uid (or cgroup, as
    /// `default_tenant` says) is a tenant of its own with these limits.
    pub defaults: Limits,
    pub default_tenant: DefaultTenant,
    pub tenants: Vec<TenantSpec>,
    /// Pods as tenants, from the API server (None: not on Kubernetes).
    pub kubernetes: Option<KubeSettings>,
    /// Namespace ceilings ("*": every namespace), in file order.
    pub ceilings: Vec<(String, Ceiling)>,
}

/// The `[kubernetes]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeSettings {
    /// The node whose pods are watched (None: `$NODE_NAME`, see
    /// [`KubeSettings::node`]).
    pub node_name: Option<String>,
    /// How long a process whose pod the watch has not delivered yet waits
    /// before it gets the defaults (nanoseconds).
    pub pod_wait_ns: u64,
    /// The kubelet's cgroup roots: only a process below one of them is in
    /// a pod.
    pub cgroup_roots: Vec<String>,
}

impl KubeSettings {
    /// The node whose pods the broker watches: `node-name`, else
    /// `$NODE_NAME` (the DaemonSet sets it from `spec.nodeName`).
    pub fn node(&self, file: &str) -> Result<String, ConfigError> {
        match &self.node_name {
            Some(n) => Ok(n.clone()),
            None => match std::env::var("NODE_NAME") {
                Ok(n) if !n.trim().is_empty() => Ok(n),
                _ => Err(ConfigError(format!(
                    "{file}: [kubernetes] node-name is missing and NODE_NAME is not set; accepted: node-name = \"<the node's name>\" (the DaemonSet sets NODE_NAME from spec.nodeName)"
                ))),
            },
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from(DEFAULT_SOCKET),
            metrics: None,
            defaults: Limits::default(),
            default_tenant: DefaultTenant::Uid,
            tenants: Vec::new(),
            kubernetes: None,
            ceilings: Vec::new(),
        }
    }
}

impl Config {
    /// The ceiling of a namespace: its own, else the one for every
    /// namespace ("*"), else none.
    pub fn ceiling(&self, namespace: &str) -> Option<&Ceiling> {
        self.ceilings
            .iter()
            .find(|(n, _)| n == namespace)
            .or_else(|| self.ceilings.iter().find(|(n, _)| n == "*"))
            .map(|(_, c)| c)
    }
}

/// A configuration that cannot be used: where, what, and what is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    socket: Option<String>,
    metrics: Option<String>,
    default_tenant: Option<toml::Value>,
    defaults: Option<RawLimits>,
    tenant: Option<Vec<RawTenant>>,
    kubernetes: Option<RawKube>,
    ceiling: Option<Vec<RawCeiling>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawKube {
    node_name: Option<toml::Value>,
    pod_wait: Option<toml::Value>,
    cgroup_roots: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCeiling {
    namespace: Option<toml::Value>,
    memory_limit: Option<toml::Value>,
    compute_request: Option<toml::Value>,
    compute_limit: Option<toml::Value>,
    weight: Option<toml::Value>,
    latency_critical: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    memory_limit: Option<toml::Value>,
    compute_request: Option<toml::Value>,
    compute_limit: Option<toml::Value>,
    weight: Option<toml::Value>,
    class: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTenant {
    name: Option<toml::Value>,
    cgroup: Option<toml::Value>,
    uid: Option<toml::Value>,
    gid: Option<toml::Value>,
    #[serde(flatten)]
    limits: RawLimits,
}

const KEYS: &str =
    "socket, metrics, default-tenant, [defaults] (memory-limit, compute-limit, compute-request, weight, class), \
[[tenant]] (name, cgroup, uid, gid, memory-limit, compute-request, compute-limit, weight, class), \
[kubernetes] (node-name, pod-wait, cgroup-roots), [[ceiling]] (namespace, memory-limit, compute-request, compute-limit, weight, latency-critical)";

/// A value as a string (TOML strings, and integers for sizes).
fn text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

struct Ctx<'a> {
    file: &'a str,
    section: String,
}

impl Ctx<'_> {
    fn err(&self, key: &str, value: &toml::Value, problem: &str, accepted: &str) -> ConfigError {
        // As written in the file: strings quoted (and cut if long), numbers bare.
        let shown = match value {
            toml::Value::String(s) => quota::clip(s),
            other => quota::clip(&other.to_string())
                .trim_matches('"')
                .to_string(),
        };
        ConfigError(format!(
            "{}: {}{key} = {shown} is invalid: {problem}; accepted: {accepted}",
            self.file, self.section
        ))
    }

    fn quota_err(&self, e: quota::QuotaError, key: &str, value: &toml::Value) -> ConfigError {
        self.err(key, value, &e.problem, e.accepted)
    }

    fn limits(&self, raw: &RawLimits, base: &Limits) -> Result<Limits, ConfigError> {
        let mut l = base.clone();
        if let Some(v) = &raw.memory_limit {
            l.memory = Some(
                quota::parse_mem_limits("memory-limit", &text(v))
                    .map_err(|e| self.quota_err(e, "memory-limit", v))?,
            );
        }
        let share = |key: &str, v: &toml::Value, min: Ppm| -> Result<Ppm, ConfigError> {
            let p = quota::parse_compute_limits(key, &text(v))
                .map_err(|e| self.quota_err(e, key, v))?;
            match (p.default, p.devices.is_empty()) {
                (Some(x), true) if x >= min => Ok(x),
                (Some(_), true) => Err(self.err(
                    key,
                    v,
                    &format!("it is less than {min}"),
                    "a share from 0% to 100%",
                )),
                _ => Err(self.err(
                    key,
                    v,
                    "per-device shares are not supported here",
                    "one share for every device (30%)",
                )),
            }
        };
        if let Some(v) = &raw.compute_request {
            l.compute_request = if text(v).trim() == "0%" {
                Ppm(0)
            } else {
                share("compute-request", v, Ppm(0))?
            };
        }
        if let Some(v) = &raw.compute_limit {
            l.compute_limit = share("compute-limit", v, Ppm(1_000))?;
        }
        if let Some(v) = &raw.weight {
            l.weight = match v {
                toml::Value::Integer(w) if (1..=1000).contains(w) => *w as u32,
                _ => {
                    return Err(self.err(
                        "weight",
                        v,
                        "not a whole number from 1 to 1000",
                        "1..1000 (default 1)",
                    ))
                }
            };
        }
        if let Some(v) = &raw.class {
            l.class = match v {
                toml::Value::String(s) => Class::parse(s),
                _ => None,
            }
            .ok_or_else(|| self.err("class", v, "not a class", Class::FORMS))?;
        }
        if l.compute_request > l.compute_limit {
            let v = raw
                .compute_request
                .clone()
                .unwrap_or(toml::Value::String(l.compute_request.to_string()));
            return Err(self.err(
                "compute-request",
                &v,
                &format!("it is above compute-limit ({})", l.compute_limit),
                "a request no larger than the limit",
            ));
        }
        Ok(l)
    }
}

/// Where tenants and their limits come from. The broker asks it who a
/// connecting process is (from the kernel's identity of it) and which
/// tenants exist; this crate implements it for the configuration file, the
/// Kubernetes integration for pods and their annotations.
pub trait PolicySource: Send + Sync {
    /// The tenant of a process with this identity, and what it may use.
    fn classify(&self, peer: &crate::identity::Peer) -> (String, Limits);
    /// Tenants that exist whether or not they have processes (shown by
    /// `tslice status`, and keeping their high-water marks).
    fn declared(&self) -> Vec<(String, Limits)>;
    /// What a process that matches no tenant may use.
    fn defaults(&self) -> Limits;
    /// Whether the source knows enough about this process to classify it
    /// now (a pod the API server has not delivered yet: not yet, and the
    /// broker waits a little before it takes the defaults).
    fn known(&self, _peer: &crate::identity::Peer) -> bool {
        true
    }
}

impl PolicySource for Config {
    fn classify(&self, peer: &crate::identity::Peer) -> (String, Limits) {
        Config::classify(self, &peer.cgroup, peer.uid, peer.gid)
    }
    fn declared(&self) -> Vec<(String, Limits)> {
        self.tenants
            .iter()
            .map(|t| (t.name.clone(), t.limits.clone()))
            .collect()
    }
    fn defaults(&self) -> Limits {
        self.defaults.clone()
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses configuration text (`file` names it in messages).
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().replace('\n', " ");
            let at = e
                .span()
                .map(|s| format!(" (at byte {})", s.start))
                .unwrap_or_default();
            ConfigError(format!("{file}: {msg}{at}; accepted keys: {KEYS}"))
        })?;
        let top = Ctx {
            file,
            section: String::new(),
        };
        let mut cfg = Config::default();
        if let Some(s) = raw.socket {
            if s.trim().is_empty() {
                return Err(top.err("socket", &toml::Value::String(s), "it is empty", "a path"));
            }
            cfg.socket = PathBuf::from(s);
        }
        if let Some(m) = raw.metrics {
            cfg.metrics = Some(m.parse().map_err(|_| {
                top.err(
                    "metrics",
                    &toml::Value::String(m.clone()),
                    "not an address and port",
                    "127.0.0.1:9400",
                )
            })?);
        }
        match raw.default_tenant {
            None => {}
            Some(toml::Value::String(v)) if v == "uid" => cfg.default_tenant = DefaultTenant::Uid,
            Some(toml::Value::String(v)) if v == "cgroup" => {
                cfg.default_tenant = DefaultTenant::Cgroup
            }
            Some(v) => {
                return Err(top.err(
                    "default-tenant",
                    &v,
                    "not a grouping",
                    "\"uid\" (one default tenant per user) or \"cgroup\" (one per cgroup)",
                ))
            }
        }
        let dctx = Ctx {
            file,
            section: "[defaults] ".into(),
        };
        cfg.defaults = dctx.limits(&raw.defaults.unwrap_or_default(), &Limits::default())?;
        let mut names = std::collections::HashSet::new();
        for (i, t) in raw.tenant.unwrap_or_default().into_iter().enumerate() {
            let label = match &t.name {
                Some(toml::Value::String(n)) => format!("tenant {n:?}: "),
                _ => format!("tenant #{}: ", i + 1),
            };
            let c = Ctx {
                file,
                section: label,
            };
            let name = match &t.name {
                Some(toml::Value::String(n)) if !n.trim().is_empty() && n.len() <= 253 => n.clone(),
                Some(v) => {
                    return Err(c.err(
                        "name",
                        v,
                        "not a name",
                        "a non-empty string of at most 253 bytes",
                    ))
                }
                None => {
                    return Err(ConfigError(format!(
                        "{file}: {}name is missing; accepted: every [[tenant]] has a name",
                        c.section
                    )))
                }
            };
            if !names.insert(name.clone()) {
                return Err(c.err(
                    "name",
                    &toml::Value::String(name),
                    "it is given twice",
                    "unique tenant names",
                ));
            }
            let id = |key: &str, v: &Option<toml::Value>| -> Result<Option<u32>, ConfigError> {
                match v {
                    None => Ok(None),
                    Some(toml::Value::Integer(x)) if (0..=u32::MAX as i64).contains(x) => {
                        Ok(Some(*x as u32))
                    }
                    Some(v) => Err(c.err(key, v, "not a numeric id", "a whole number (1001)")),
                }
            };
            let cgroup = match &t.cgroup {
                None => None,
                Some(toml::Value::String(p)) if p.starts_with('/') => {
                    Some(p.trim_end_matches('/').to_string())
                }
                Some(v) => {
                    return Err(c.err(
                        "cgroup",
                        v,
                        "not a cgroup path",
                        "an absolute cgroup v2 path (/kubepods.slice/x)",
                    ))
                }
            };
            let matcher = Matcher {
                cgroup,
                uid: id("uid", &t.uid)?,
                gid: id("gid", &t.gid)?,
            };
            if matcher == Matcher::default() {
                return Err(ConfigError(format!(
                    "{file}: {}no matcher; accepted: cgroup, uid or gid (all given must match)",
                    c.section
                )));
            }
            let limits = c.limits(&t.limits, &cfg.defaults)?;
            cfg.tenants.push(TenantSpec {
                name,
                matcher,
                limits,
            });
        }
        if let Some(k) = raw.kubernetes {
            let c = Ctx {
                file,
                section: "[kubernetes] ".into(),
            };
            // The node's name is the broker's business (the webhook reads this
            // file too, and runs on no node in particular): see `node_name`.
            let node_name = match k.node_name {
                Some(toml::Value::String(n)) if !n.trim().is_empty() => Some(n),
                Some(v) => {
                    return Err(c.err("node-name", &v, "not a node name", "the node's name"))
                }
                None => None,
            };
            let pod_wait_ns = match &k.pod_wait {
                None => 2_000_000_000,
                Some(v) => quota::parse_duration("pod-wait", &self::text(v))
                    .map_err(|e| c.quota_err(e, "pod-wait", v))?,
            };
            let cgroup_roots = match &k.cgroup_roots {
                None => tslice_policy::podcgroup::DEFAULT_ROOTS
                    .iter()
                    .map(|r| r.to_string())
                    .collect(),
                Some(toml::Value::Array(a))
                    if !a.is_empty()
                        && a.iter().all(|r| r.as_str().is_some_and(|r| r.starts_with('/') && r.len() > 1)) =>
                {
                    a.iter()
                        .filter_map(|r| r.as_str())
                        .map(|r| r.trim_end_matches('/').to_string())
                        .collect()
                }
                Some(v) => {
                    return Err(c.err(
                        "cgroup-roots",
                        v,
                        "not a list of cgroup paths",
                        "absolute cgroup paths of the kubelet's roots ([\"/kubepods.slice\", \"/kubepods\"])",
                    ))
                }
            };
            cfg.kubernetes = Some(KubeSettings {
                node_name,
                pod_wait_ns,
                cgroup_roots,
            });
        }
        for (i, r) in raw.ceiling.unwrap_or_default().into_iter().enumerate() {
            let ns = match &r.namespace {
                Some(toml::Value::String(n)) if !n.trim().is_empty() => n.clone(),
                Some(v) => {
                    let c = Ctx {
                        file,
                        section: format!("ceiling #{}: ", i + 1),
                    };
                    return Err(c.err("namespace", v, "not a namespace", "a namespace name, or \"*\" for every namespace"));
                }
                None => {
                    return Err(ConfigError(format!(
                        "{file}: ceiling #{}: namespace is missing; accepted: a namespace name, or \"*\" for every namespace",
                        i + 1
                    )))
                }
            };
            let c = Ctx {
                file,
                section: format!("ceiling {ns:?}: "),
            };
            if cfg.ceilings.iter().any(|(n, _)| *n == ns) {
                return Err(c.err(
                    "namespace",
                    &toml::Value::String(ns),
                    "it is given twice",
                    "one [[ceiling]] per namespace",
                ));
            }
            let raw_limits = RawLimits {
                memory_limit: None,
                compute_request: r.compute_request.clone(),
                compute_limit: r.compute_limit.clone(),
                weight: r.weight.clone(),
                class: None,
            };
            let l = c.limits(&raw_limits, &Limits::default())?;
            let memory = match &r.memory_limit {
                None => None,
                Some(v) => {
                    let m = tslice_policy::annotations::memory(&self::text(v))
                        .map_err(|e| c.quota_err(e, "memory-limit", v))?;
                    match (m.default, m.devices.is_empty()) {
                        (Some(x), true) => Some(x),
                        _ => {
                            return Err(c.err(
                                "memory-limit",
                                v,
                                "per-device ceilings are not supported",
                                "one size or share (16Gi, 25%)",
                            ))
                        }
                    }
                }
            };
            let forbid_latency_critical = match &r.latency_critical {
                None | Some(toml::Value::Boolean(true)) => false,
                Some(toml::Value::Boolean(false)) => true,
                Some(v) => {
                    return Err(c.err(
                        "latency-critical",
                        v,
                        "not true or false",
                        "true (allowed, the default) or false",
                    ))
                }
            };
            cfg.ceilings.push((
                ns,
                Ceiling {
                    memory,
                    compute_request: r.compute_request.is_some().then_some(l.compute_request),
                    compute_limit: r.compute_limit.is_some().then_some(l.compute_limit),
                    weight: r.weight.is_some().then_some(l.weight),
                    forbid_latency_critical,
                },
            ));
        }
        Ok(cfg)
    }

    /// The tenant of a process with this identity: the first matching one in
    /// file order, else its user's (or cgroup's) default tenant.
    pub fn classify(&self, cgroup: &str, uid: u32, gid: u32) -> (String, Limits) {
        match self
            .tenants
            .iter()
            .find(|t| t.matcher.matches(cgroup, uid, gid))
        {
            Some(t) => (t.name.clone(), t.limits.clone()),
            None => (
                match self.default_tenant {
                    DefaultTenant::Uid => format!("default:uid:{uid}"),
                    DefaultTenant::Cgroup => format!("default:{cgroup}"),
                },
                self.defaults.clone(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(
            r#"
socket  = "/run/tslice/broker.sock"
metrics = "127.0.0.1:9400"
[defaults]
memory-limit = "8GiB"
compute-limit = "50%"
[[tenant]]
name = "team-a"
cgroup = "/kubepods.slice/team-a"
memory-limit = "20GiB"
compute-request = "30%"
compute-limit = "60%"
weight = 2
class = "standard"
[[tenant]]
name = "batch"
uid = 1001
class = "best-effort"
"#,
            "broker.toml",
        )
        .unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9400".parse().unwrap()));
        assert_eq!(c.defaults.compute_limit, Ppm(500_000));
        let a = &c.tenants[0];
        assert_eq!(
            a.limits.memory.as_ref().unwrap().default,
            Some(MemLimit::Bytes(20 * GIB))
        );
        assert_eq!(
            (
                a.limits.compute_request,
                a.limits.compute_limit,
                a.limits.weight
            ),
            (Ppm(300_000), Ppm(600_000), 2)
        );
        let b = &c.tenants[1];
        assert_eq!(
            b.limits.memory.as_ref().unwrap().default,
            Some(MemLimit::Bytes(8 * GIB)),
            "inherits the defaults"
        );
        assert_eq!(b.limits.class, Class::BestEffort);
        assert_eq!(c.classify("/kubepods.slice/team-a/pod1", 0, 0).0, "team-a");
        assert_eq!(c.classify("/kubepods.slice/team-ab", 1001, 0).0, "batch");
        assert_eq!(
            c.classify("/user.slice/a", 1000, 1000).0,
            "default:uid:1000"
        );
        assert_eq!(
            c.classify("/user.slice/b", 1000, 1000).0,
            "default:uid:1000",
            "a user's cgroups share its default tenant"
        );
        let by_cgroup = Config::parse("default-tenant = \"cgroup\"", "x").unwrap();
        assert_eq!(
            by_cgroup.classify("/user.slice/a", 1000, 1000).0,
            "default:/user.slice/a"
        );
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let c = Config::parse("", "x").unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn invalid_files_name_the_key_the_value_and_what_is_accepted() {
        for (text, needles) in [
            ("[[tenant]]\nname = \"a\"\ncgroup = \"/a\"\nmemory-limit = \"lots\"", &["tenant \"a\": memory-limit = \"lots\" is invalid", "accepted: a size"][..]),
            ("[defaults]\ncompute-limit = \"150%\"", &["[defaults] compute-limit = \"150%\"", "more than 100%"]),
            ("[[tenant]]\nname = \"a\"\nuid = 1\nweight = 0", &["weight = 0", "1..1000"]),
            ("[[tenant]]\nname = \"a\"\nuid = 1\nclass = \"urgent\"", &["class = \"urgent\"", "latency-critical, standard, best-effort"]),
            ("[[tenant]]\nname = \"a\"", &["no matcher", "cgroup, uid or gid"]),
            ("[[tenant]]\nuid = 3", &["name is missing"]),
            ("[[tenant]]\nname = \"a\"\nuid = 1\n[[tenant]]\nname = \"a\"\ngid = 2", &["given twice"]),
            ("[[tenant]]\nname = \"a\"\ncgroup = \"relative\"", &["cgroup = \"relative\"", "absolute"]),
            ("[[tenant]]\nname = \"a\"\nuid = -1", &["uid = -1", "whole number"]),
            ("[[tenant]]\nname = \"a\"\nuid = 1\ncompute-request = \"70%\"\ncompute-limit = \"60%\"", &["above compute-limit"]),
            ("metrics = \"nowhere\"", &["metrics = \"nowhere\"", "127.0.0.1:9400"]),
            ("default-tenant = \"pod\"", &["default-tenant = \"pod\"", "\"uid\"", "\"cgroup\""]),
            ("sockett = \"/x\"", &["unknown field `sockett`", "accepted keys"]),
            ("memory-limit = ", &["accepted keys"]),
        ] {
            let e = Config::parse(text, "broker.toml").unwrap_err().to_string();
            assert!(e.starts_with("broker.toml: "), "{e}");
            for n in needles {
                assert!(e.contains(n), "{text:?}: {e} lacks {n:?}");
            }
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn cgroup_prefixes_match_whole_components() {
        assert!(cgroup_under("/a/b", "/a"));
        assert!(cgroup_under("/a", "/a"));
        assert!(cgroup_under("/a", "/a/"));
        assert!(!cgroup_under("/ab", "/a"));
        assert!(cgroup_under("/anything", "/"));
        let m = Matcher {
            cgroup: Some("/k".into()),
            uid: Some(5),
            gid: None,
        };
        assert!(m.matches("/k/x", 5, 9));
        assert!(!m.matches("/k/x", 6, 9), "all given criteria must match");
    }
}

#[cfg(test)]
mod class_codes {
    use super::Class;
    use tslice_proto::page::{CLASS_BEST_EFFORT, CLASS_LATENCY_CRITICAL, CLASS_STANDARD};

    #[test]
    fn the_policys_class_codes_are_the_pages() {
        assert_eq!(Class::Standard.code(), CLASS_STANDARD);
        assert_eq!(Class::LatencyCritical.code(), CLASS_LATENCY_CRITICAL);
        assert_eq!(Class::BestEffort.code(), CLASS_BEST_EFFORT);
    }
}
