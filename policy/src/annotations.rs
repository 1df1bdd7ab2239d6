//! A pod's quota from its `tslice.dev/*` annotations (the tenant is the pod:
//! all its containers and processes together), and the ceilings a platform
//! sets on them. The mutating/validating webhook and the broker both use
//! this, so a pod is refused at creation with the message the broker would
//! log.
//!
//! Memory takes Kubernetes' binary quantities (`8Gi`, `500Mi`, `1.5Gi`)
//! beside tslice's own forms (`8GiB`, `8GB`, `10%`, per-device lists). A
//! bare decimal suffix (`8G`) is refused: Kubernetes reads it as 8×10⁹
//! bytes, tslice's environment variables as 8 GiB, and a quota must not
//! depend on which one the reader had in mind.

use crate::class::Class;
use crate::quota::{self, MemLimit, PerDevice, Ppm, QuotaError};

pub const MEMORY_LIMIT: &str = "tslice.dev/memory-limit";
pub const COMPUTE_REQUEST: &str = "tslice.dev/compute-request";
pub const COMPUTE_LIMIT: &str = "tslice.dev/compute-limit";
pub const WEIGHT: &str = "tslice.dev/weight";
pub const CLASS: &str = "tslice.dev/class";
/// Set by tslice's webhook on the pods it injected (read by nobody: it
/// grants nothing, and is accepted with any value).
pub const INJECTED: &str = "tslice.dev/injected";
/// Every annotation tslice reads.
pub const KNOWN: [&str; 5] = [MEMORY_LIMIT, COMPUTE_REQUEST, COMPUTE_LIMIT, WEIGHT, CLASS];
/// The prefix of tslice's annotations (any other key under it is a typo).
pub const PREFIX: &str = "tslice.dev/";

/// Accepted forms of `tslice.dev/memory-limit`.
pub const MEMORY_FORMS: &str =
    "a size in Kubernetes' binary units (8Gi, 500Mi, 1.5Gi) or tslice's \
(8GiB, 8192MiB, 8GB = 8x10^9 bytes, 8589934592 bytes), or a share of the device from 1% to 100% \
(10%); optionally per device as ORDINAL=VALUE or GPU-<uuid>=VALUE entries (8Gi,1=4Gi)";
const SHARE_FORMS: &str =
    "a share of the GPU's time from 0% (request) or 0.1% (limit) to 100% (30%, 12.5%)";
const WEIGHT_FORMS: &str = "a whole number from 1 to 1000 (default 1)";
const CLASS_FORMS: &str = "latency-critical, standard, best-effort";

/// What a pod's annotations ask for (None: not annotated, the node's
/// default applies).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodQuota {
    pub memory: Option<PerDevice<MemLimit>>,
    pub compute_request: Option<Ppm>,
    pub compute_limit: Option<Ppm>,
    pub weight: Option<u32>,
    pub class: Option<Class>,
}

fn err(key: &str, value: &str, problem: impl Into<String>, accepted: &'static str) -> QuotaError {
    QuotaError {
        what: format!("annotation {key}"),
        value: value.into(),
        problem: problem.into(),
        accepted,
    }
}

/// A value with a bare decimal suffix (`8G`, `500M`, `1k`).
fn ambiguous(v: &str) -> bool {
    let t = v.trim();
    let Some(last) = t.chars().last() else {
        return false;
    };
    let num = &t[..t.len() - last.len_utf8()].trim_end();
    "kKMGTPE".contains(last)
        && !num.is_empty()
        && num.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Parses a memory limit in the annotation's forms (also the ceilings').
pub fn memory(value: &str) -> Result<PerDevice<MemLimit>, QuotaError> {
    for entry in value.split(',') {
        let v = entry.split_once('=').map_or(entry, |(_, v)| v);
        if ambiguous(v) {
            return Err(err(
                MEMORY_LIMIT,
                value,
                format!(
                    "{} is ambiguous: Kubernetes reads a bare {} as a power of 1000, tslice as a power of 1024; write {}i (binary) or {}B (decimal)",
                    quota::clip(v.trim()),
                    v.trim().chars().last().unwrap_or('G'),
                    v.trim(),
                    v.trim()
                ),
                MEMORY_FORMS,
            ));
        }
    }
    quota::parse_mem_limits(MEMORY_LIMIT, value).map_err(|e| QuotaError {
        what: format!("annotation {MEMORY_LIMIT}"),
        accepted: MEMORY_FORMS,
        ..e
    })
}

fn share(key: &str, value: &str, min: Ppm) -> Result<Ppm, QuotaError> {
    if min.0 == 0 && value.trim() == "0%" {
        return Ok(Ppm(0));
    }
    let p = quota::parse_compute_limits(key, value)
        .map_err(|e| err(key, value, e.problem, SHARE_FORMS))?;
    match (p.default, p.devices.is_empty()) {
        (Some(x), true) if x >= min => Ok(x),
        (Some(_), true) => Err(err(
            key,
            value,
            format!("it is less than {min}"),
            SHARE_FORMS,
        )),
        _ => Err(err(
            key,
            value,
            "per-device shares are not supported in annotations",
            SHARE_FORMS,
        )),
    }
}

/// Parses a pod's annotations (all of them: keys outside `tslice.dev/` are
/// ignored). Every problem is reported, each naming the annotation, its
/// value and what is accepted.
pub fn parse<'a>(
    annotations: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<PodQuota, Vec<QuotaError>> {
    let (q, errors) = parse_lenient(annotations);
    if errors.is_empty() {
        Ok(q)
    } else {
        Err(errors)
    }
}

/// As [`parse`], for a pod that exists already (the broker): what the
/// valid annotations ask for, beside every problem. A request above the
/// limit leaves the compute annotations (and the rest) to the defaults.
pub fn parse_lenient<'a>(
    annotations: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (PodQuota, Vec<QuotaError>) {
    let mut q = PodQuota::default();
    let mut errors = Vec::new();
    for (key, value) in annotations {
        if !key.starts_with(PREFIX) || key == INJECTED {
            continue;
        }
        let r = match key {
            MEMORY_LIMIT => memory(value).map(|m| q.memory = Some(m)),
            COMPUTE_REQUEST => share(key, value, Ppm(0)).map(|s| q.compute_request = Some(s)),
            COMPUTE_LIMIT => share(key, value, Ppm(1_000)).map(|s| q.compute_limit = Some(s)),
            WEIGHT => match value.trim().parse::<u32>() {
                Ok(w) if (1..=1000).contains(&w) => {
                    q.weight = Some(w);
                    Ok(())
                }
                _ => Err(err(key, value, "not a whole number from 1 to 1000", WEIGHT_FORMS)),
            },
            CLASS => match Class::parse(value) {
                Some(c) => {
                    q.class = Some(c);
                    Ok(())
                }
                None => Err(err(key, value, "not a class", CLASS_FORMS)),
            },
            _ => Err(QuotaError {
                what: format!("annotation {key}"),
                value: value.into(),
                problem: "tslice has no such annotation".into(),
                accepted: "tslice.dev/memory-limit, tslice.dev/compute-request, tslice.dev/compute-limit, tslice.dev/weight, tslice.dev/class",
            }),
        };
        if let Err(e) = r {
            errors.push(e);
        }
    }
    if let (Some(r), Some(l)) = (q.compute_request, q.compute_limit) {
        if r > l {
            errors.push(err(
                COMPUTE_REQUEST,
                &r.to_string(),
                format!("it is above {COMPUTE_LIMIT} ({l})"),
                "a request no larger than the limit",
            ));
            q = PodQuota::default();
        }
    }
    (q, errors)
}

/// The most a platform lets a pod (of a namespace) ask for. None: no
/// ceiling of that kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ceiling {
    pub memory: Option<MemLimit>,
    pub compute_request: Option<Ppm>,
    pub compute_limit: Option<Ppm>,
    pub weight: Option<u32>,
    /// Whether `latency-critical` may be asked for.
    pub forbid_latency_critical: bool,
}

impl Ceiling {
    /// Where `q` asks for more than this ceiling allows (each naming the
    /// annotation). A memory size and a memory share are compared only
    /// where both are of one kind, or where `device_total` is known.
    pub fn violations(&self, q: &PodQuota, device_total: Option<u64>) -> Vec<QuotaError> {
        let mut out = Vec::new();
        if let (Some(c), Some(m)) = (self.memory, &q.memory) {
            let values = m.default.iter().chain(m.devices.iter().map(|(_, v)| v));
            for v in values {
                let over = match (*v, c, device_total) {
                    (MemLimit::Bytes(a), MemLimit::Bytes(b), _) => a > b,
                    (MemLimit::Share(a), MemLimit::Share(b), _) => a > b,
                    (a, b, Some(t)) => a.resolve(t) > b.resolve(t),
                    // Not comparable without the device: the broker checks it.
                    _ => false,
                };
                if over {
                    out.push(err(
                        MEMORY_LIMIT,
                        &show_mem(*v),
                        format!("it is above this namespace's ceiling ({})", show_mem(c)),
                        "at most the namespace's ceiling",
                    ));
                }
            }
        }
        let shares = [
            (COMPUTE_REQUEST, q.compute_request, self.compute_request),
            (COMPUTE_LIMIT, q.compute_limit, self.compute_limit),
        ];
        for (key, asked, max) in shares {
            if let (Some(a), Some(m)) = (asked, max) {
                if a > m {
                    out.push(err(
                        key,
                        &a.to_string(),
                        format!("it is above this namespace's ceiling ({m})"),
                        "at most the namespace's ceiling",
                    ));
                }
            }
        }
        if let (Some(w), Some(m)) = (q.weight, self.weight) {
            if w > m {
                out.push(err(
                    WEIGHT,
                    &w.to_string(),
                    format!("it is above this namespace's ceiling ({m})"),
                    "at most the namespace's ceiling",
                ));
            }
        }
        if self.forbid_latency_critical && q.class == Some(Class::LatencyCritical) {
            out.push(err(
                CLASS,
                "latency-critical",
                "this namespace may not ask for latency-critical",
                "standard, best-effort",
            ));
        }
        out
    }

    /// `q` brought under this ceiling (what the broker applies if a pod got
    /// past admission, e.g. annotated before the ceiling was set).
    pub fn clamp(&self, q: &PodQuota, device_total: u64) -> PodQuota {
        let mut q = q.clone();
        if let (Some(c), Some(m)) = (self.memory, q.memory.as_mut()) {
            let cap = |v: &mut MemLimit| {
                if v.resolve(device_total) > c.resolve(device_total) {
                    *v = c;
                }
            };
            m.default.iter_mut().for_each(cap);
            m.devices.iter_mut().for_each(|(_, v)| cap(v));
        }
        if let Some(m) = self.compute_request {
            q.compute_request = q.compute_request.map(|r| r.min(m));
        }
        if let Some(m) = self.compute_limit {
            q.compute_limit = Some(q.compute_limit.map_or(m, |l| l.min(m)));
        }
        if let Some(m) = self.weight {
            q.weight = q.weight.map(|w| w.min(m));
        }
        if self.forbid_latency_critical && q.class == Some(Class::LatencyCritical) {
            q.class = Some(Class::Standard);
        }
        if let (Some(r), Some(l)) = (q.compute_request, q.compute_limit) {
            q.compute_request = Some(r.min(l));
        }
        q
    }
}

fn show_mem(m: MemLimit) -> String {
    match m {
        MemLimit::Bytes(b) if b % (1 << 30) == 0 => format!("{}Gi", b >> 30),
        MemLimit::Bytes(b) if b % (1 << 20) == 0 => format!("{}Mi", b >> 20),
        MemLimit::Bytes(b) => format!("{b}"),
        MemLimit::Share(p) => p.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn one(key: &str, value: &str) -> Result<PodQuota, Vec<QuotaError>> {
        parse([(key, value)])
    }

    fn mem(value: &str) -> Result<MemLimit, String> {
        one(MEMORY_LIMIT, value)
            .map(|q| q.memory.unwrap().default.unwrap())
            .map_err(|e| e[0].to_string())
    }

    #[test]
    fn memory_in_kubernetes_and_tslice_forms() {
        assert_eq!(mem("8Gi"), Ok(MemLimit::Bytes(8 * GI)));
        assert_eq!(mem("500Mi"), Ok(MemLimit::Bytes(500 << 20)));
        assert_eq!(mem("1.5Gi"), Ok(MemLimit::Bytes(3 * GI / 2)));
        assert_eq!(mem("8GiB"), Ok(MemLimit::Bytes(8 * GI)));
        assert_eq!(mem("8GB"), Ok(MemLimit::Bytes(8_000_000_000)));
        assert_eq!(mem("8589934592"), Ok(MemLimit::Bytes(8 * GI)));
        assert_eq!(mem(" 10% "), Ok(MemLimit::Share(Ppm(100_000))));
        let q = one(MEMORY_LIMIT, "8Gi,1=4Gi").unwrap().memory.unwrap();
        assert_eq!(q.devices.len(), 1);
    }

    #[test]
    fn bad_memory_names_the_annotation_the_value_and_the_forms() {
        for (v, says) in [
            ("lots", "not"),
            ("8G", "ambiguous"),
            ("500M", "ambiguous"),
            ("0=8G", "ambiguous"),
            ("1Ki", "less than one 2 MiB page"),
            ("0.5%", "less than"),
            ("", "empty"),
        ] {
            let e = mem(v).unwrap_err();
            assert!(e.starts_with("annotation tslice.dev/memory-limit="), "{e}");
            assert!(e.contains(says), "{v}: {e}");
            assert!(
                e.contains("accepted: a size in Kubernetes' binary units"),
                "{e}"
            );
        }
        let e = mem("8G").unwrap_err();
        assert!(e.contains("write 8Gi (binary) or 8GB (decimal)"), "{e}");
    }

    #[test]
    fn shares_weights_classes() {
        let q = parse([
            (COMPUTE_REQUEST, "30%"),
            (COMPUTE_LIMIT, "60%"),
            (WEIGHT, "7"),
            (CLASS, "best-effort"),
            ("example.com/other", "whatever"),
            (INJECTED, "true"),
        ])
        .unwrap();
        assert_eq!(q.compute_request, Some(Ppm(300_000)));
        assert_eq!(q.compute_limit, Some(Ppm(600_000)));
        assert_eq!(q.weight, Some(7));
        assert_eq!(q.class, Some(Class::BestEffort));
        assert_eq!(q.memory, None);
        assert_eq!(
            one(COMPUTE_REQUEST, "0%").unwrap().compute_request,
            Some(Ppm(0))
        );
        assert_eq!(parse([]), Ok(PodQuota::default()));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = parse([
            (COMPUTE_REQUEST, "70%"),
            (COMPUTE_LIMIT, "60%"),
            (WEIGHT, "0"),
            (CLASS, "gold"),
            ("tslice.dev/memory-limt", "8Gi"),
            (COMPUTE_LIMIT, "1=50%"),
        ])
        .unwrap_err();
        let all: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        let text = all.join("\n");
        assert!(
            text.contains("annotation tslice.dev/weight=\"0\" is invalid"),
            "{text}"
        );
        assert!(text.contains("annotation tslice.dev/class=\"gold\" is invalid: not a class; accepted: latency-critical"), "{text}");
        assert!(
            text.contains(
                "tslice.dev/memory-limt=\"8Gi\" is invalid: tslice has no such annotation"
            ),
            "{text}"
        );
        assert!(
            text.contains("per-device shares are not supported"),
            "{text}"
        );
        assert!(text.contains("above tslice.dev/compute-limit"), "{text}");
        assert_eq!(e.len(), 5, "{text}");
        for (v, says) in [
            ("101%", "more than 100%"),
            ("0.05%", "less than 0.1%"),
            ("x", "not a percentage"),
        ] {
            let e = one(COMPUTE_LIMIT, v).unwrap_err()[0].to_string();
            assert!(e.contains(says), "{v}: {e}");
        }
        for w in ["1001", "-1", "1.5", ""] {
            assert!(one(WEIGHT, w).is_err(), "{w}");
        }
    }

    #[test]
    fn a_running_pods_valid_annotations_count_beside_its_invalid_ones() {
        let (q, e) = parse_lenient([(MEMORY_LIMIT, "8Gi"), (WEIGHT, "0")]);
        assert_eq!(e.len(), 1);
        assert_eq!(q.memory.unwrap().default, Some(MemLimit::Bytes(8 * GI)));
        assert_eq!(q.weight, None);
        let (q, e) = parse_lenient([
            (MEMORY_LIMIT, "8Gi"),
            (COMPUTE_REQUEST, "70%"),
            (COMPUTE_LIMIT, "60%"),
        ]);
        assert_eq!(
            (q, e.len()),
            (PodQuota::default(), 1),
            "inconsistent: the defaults"
        );
    }

    #[test]
    fn ceilings_are_checked_and_applied() {
        let c = Ceiling {
            memory: Some(MemLimit::Bytes(16 * GI)),
            compute_request: Some(Ppm(200_000)),
            compute_limit: Some(Ppm(500_000)),
            weight: Some(10),
            forbid_latency_critical: true,
        };
        let q = parse([
            (MEMORY_LIMIT, "32Gi"),
            (COMPUTE_REQUEST, "30%"),
            (COMPUTE_LIMIT, "60%"),
            (WEIGHT, "20"),
            (CLASS, "latency-critical"),
        ])
        .unwrap();
        let v = c.violations(&q, None);
        assert_eq!(v.len(), 5, "{v:?}");
        assert!(
            v[0].to_string()
                .contains("above this namespace's ceiling (16Gi)"),
            "{}",
            v[0]
        );
        let clamped = c.clamp(&q, 80 * GI);
        assert!(c.violations(&clamped, Some(80 * GI)).is_empty());
        assert_eq!(
            clamped.memory.unwrap().default,
            Some(MemLimit::Bytes(16 * GI))
        );
        assert_eq!(clamped.compute_limit, Some(Ppm(500_000)));
        assert_eq!(clamped.class, Some(Class::Standard));
        // A share against a size: only with the device known.
        let q = parse([(MEMORY_LIMIT, "50%")]).unwrap();
        assert!(c.violations(&q, None).is_empty());
        assert_eq!(c.violations(&q, Some(80 * GI)).len(), 1);
        // Unannotated compute gets the ceiling as its limit.
        assert_eq!(
            c.clamp(&PodQuota::default(), 80 * GI).compute_limit,
            Some(Ppm(500_000))
        );
        assert!(Ceiling::default().violations(&q, Some(80 * GI)).is_empty());
    }
}
