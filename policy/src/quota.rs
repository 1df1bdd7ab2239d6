//! Parsing of quota values: memory sizes, memory limits (absolute or a share
//! of the device), per-device limit lists, and compute shares.
//!
//! Every parser returns a [`QuotaError`] whose message names what was wrong
//! and lists the accepted forms, so the caller can print it as is.

use std::fmt;

/// A value that could not be parsed. `Display` gives one line: the variable,
/// the value, what is wrong, and what is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaError {
    /// What was being parsed (an environment variable, an annotation key).
    pub what: String,
    /// The whole value as given.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
    /// The forms that are accepted.
    pub accepted: &'static str,
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={} is invalid: {}; accepted: {}",
            self.what,
            clip(&self.value),
            self.problem,
            self.accepted
        )
    }
}

/// Characters of a value echoed back in a message; longer values are cut.
pub const ECHO_MAX: usize = 64;

/// A value as messages echo it: quoted and escaped as `{:?}` does, and cut
/// after [`ECHO_MAX`] characters with its length, so that a hostile 64 KiB
/// value makes a readable line, not a 131 KB one.
pub fn clip(s: &str) -> String {
    if s.chars().count() <= ECHO_MAX {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(ECHO_MAX - 16).collect();
    format!("{head:?}... ({} bytes)", s.len())
}

impl std::error::Error for QuotaError {}

/// Accepted forms of a plain size.
pub const SIZE_FORMS: &str = "bytes (8589934592) or a number with a unit: \
K/M/G/T, KiB/MiB/GiB/TiB or Ki/Mi/Gi/Ti (powers of 1024), KB/MB/GB/TB (powers of 1000); \
e.g. 8GiB, 8G, 8192MiB, 1.5GiB";

/// Why a size string is not a size (without the surrounding context).
fn size_problem(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("it is empty".into());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() {
        return Err(format!("{} does not start with a number", clip(t)));
    }
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("unknown unit {}", clip(unit))),
    };
    let bytes = match num.split_once('.') {
        // Only digits here: a parse error can only be an overflow.
        None => num
            .parse::<u64>()
            .map_err(|_| "it is too large".to_string())?
            .checked_mul(mult)
            .ok_or_else(|| "it is too large".to_string())?,
        Some((int, frac)) => {
            if frac.contains('.') || (int.is_empty() && frac.is_empty()) {
                return Err(format!("{} is not a number", clip(num)));
            }
            if mult == 1 {
                return Err("a fraction of a byte is not a size".into());
            }
            // Exact decimal arithmetic: int * mult + frac * mult / 10^len(frac).
            let int_v: u64 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| "it is too large".to_string())?
            };
            if frac.len() > 9 {
                return Err(format!("{} has more than 9 decimals", clip(num)));
            }
            let frac_v: u64 = if frac.is_empty() {
                0
            } else {
                frac.parse()
                    .map_err(|_| format!("{} is not a number", clip(num)))?
            };
            let scale = 10u64.pow(frac.len() as u32);
            let whole = int_v
                .checked_mul(mult)
                .ok_or_else(|| "it is too large".to_string())?;
            let part = (frac_v as u128 * mult as u128 / scale as u128) as u64;
            whole
                .checked_add(part)
                .ok_or_else(|| "it is too large".to_string())?
        }
    };
    Ok(bytes)
}

/// Parses a size: plain bytes or a number with a unit (see [`SIZE_FORMS`]).
/// `what` names the setting for the error message.
pub fn parse_size(what: &str, s: &str) -> Result<u64, QuotaError> {
    size_problem(s).map_err(|problem| QuotaError {
        what: what.into(),
        value: s.into(),
        problem,
        accepted: SIZE_FORMS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    #[test]
    fn sizes() {
        for (s, v) in [
            ("8GiB", 8 * GIB),
            ("8G", 8 * GIB),
            ("8g", 8 * GIB),
            ("8Gi", 8 * GIB),
            ("8192MiB", 8 * GIB),
            ("8589934592", 8 * GIB),
            ("8589934592B", 8 * GIB),
            (" 8 GiB ", 8 * GIB),
            ("1.5GiB", 3 * GIB / 2),
            ("0.5M", MIB / 2),
            (".5M", MIB / 2),
            ("8GB", 8_000_000_000),
            ("1TiB", 1 << 40),
            ("0", 0),
        ] {
            assert_eq!(parse_size("X", s), Ok(v), "{s}");
        }
    }

    #[test]
    fn bad_sizes_name_the_problem() {
        for (s, needle) in [
            ("", "empty"),
            ("GiB", "does not start with a number"),
            ("8 gigs", "unknown unit \"gigs\""),
            ("8XB", "unknown unit"),
            ("1.2.3G", "not a number"),
            ("1.5", "fraction of a byte"),
            ("99999999999T", "too large"),
            ("18446744073709551616", "too large"),
            ("99999999999999999999999.5G", "too large"),
            ("-1G", "does not start with a number"),
            ("1.0000000001G", "more than 9 decimals"),
        ] {
            let e = parse_size("TSLICE_X", s).unwrap_err();
            assert!(e.problem.contains(needle), "{s}: {e}");
            let line = e.to_string();
            assert!(line.starts_with("TSLICE_X="), "{line}");
            assert!(line.contains("accepted:"), "{line}");
            assert!(!line.contains('\n'));
        }
    }
}

/// One memory limit: an absolute size, or a share of the device's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemLimit {
    Bytes(u64),
    /// Parts per million of the device's memory, 10_000..=1_000_000 (1%..100%).
    Share(Ppm),
}

impl MemLimit {
    /// The limit in bytes on a device of `device_total` bytes: never more
    /// than the device.
    pub fn resolve(self, device_total: u64) -> u64 {
        match self {
            MemLimit::Bytes(b) => b.min(device_total),
            MemLimit::Share(p) => p.of(device_total),
        }
    }
}

/// A fraction in parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ppm(pub u32);

impl Ppm {
    pub const ONE: Ppm = Ppm(1_000_000);
    /// `self` of `x`, rounded down, without overflow.
    pub fn of(self, x: u64) -> u64 {
        (x as u128 * self.0 as u128 / 1_000_000) as u64
    }
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl fmt::Display for Ppm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = self.0 as f64 / 10_000.0;
        write!(f, "{pct}%")
    }
}

/// Parses `25%`, `12.5%` (at most 4 decimals) into a share; the range is
/// `min..=100%`.
fn percent_problem(s: &str, min: Ppm) -> Result<Ppm, String> {
    let t = s.trim();
    let Some(num) = t.strip_suffix('%') else {
        return Err(format!("{} is not a percentage", clip(t)));
    };
    let num = num.trim();
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let all_digits = |x: &str| x.chars().all(|c| c.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return Err(format!("{} is not a number", clip(num)));
    }
    if frac.len() > 4 {
        return Err(format!("{} has more than 4 decimals", clip(num)));
    }
    let int_v: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| "it is too large".to_string())?
    };
    let frac_v: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().unwrap_or(0)
    };
    let ppm = int_v
        .checked_mul(10_000)
        .and_then(|v| v.checked_add(frac_v * 10u64.pow(4 - frac.len() as u32)))
        .ok_or_else(|| "it is too large".to_string())?;
    if ppm > 1_000_000 {
        return Err(format!("{} is more than 100%", clip(t)));
    }
    if ppm < min.0 as u64 {
        return Err(format!("{} is less than {min}", clip(t)));
    }
    Ok(Ppm(ppm as u32))
}

/// Which device an entry of a per-device list applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSel {
    /// The CUDA ordinal as the process sees it (after `CUDA_VISIBLE_DEVICES`).
    Ordinal(u32),
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as `nvidia-smi -L` prints it (lowercased).
    Uuid(String),
}

/// A value for all devices and/or per-device values:
/// `8GiB`, `0=8GiB,1=25%`, `25%,GPU-…=4GiB` (the bare value is the default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerDevice<T> {
    pub default: Option<T>,
    pub devices: Vec<(DeviceSel, T)>,
}

impl<T: Copy> PerDevice<T> {
    /// The value for the device with this ordinal and UUID string: a UUID
    /// entry wins over an ordinal entry, which wins over the default.
    pub fn for_device(&self, ordinal: u32, uuid: Option<&str>) -> Option<T> {
        let by_uuid = uuid.and_then(|u| {
            self.devices.iter().find_map(|(sel, v)| match sel {
                DeviceSel::Uuid(x) if x.eq_ignore_ascii_case(u) => Some(*v),
                _ => None,
            })
        });
        let by_ordinal = || {
            self.devices.iter().find_map(|(sel, v)| match sel {
                DeviceSel::Ordinal(o) if *o == ordinal => Some(*v),
                _ => None,
            })
        };
        by_uuid.or_else(by_ordinal).or(self.default)
    }
}

impl fmt::Display for DeviceSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSel::Ordinal(o) => write!(f, "device {o}"),
            DeviceSel::Uuid(u) => write!(f, "{}", u.replacen("gpu-", "GPU-", 1)),
        }
    }
}

impl<T> PerDevice<T> {
    /// The per-device entries that match none of `devices` (ordinal, UUID as
    /// `nvidia-smi -L` prints it): an unknown UUID, an ordinal past the last
    /// device. They cap nothing, which the user should be told.
    pub fn unmatched(&self, devices: &[(u32, Option<String>)]) -> Vec<&DeviceSel> {
        self.devices
            .iter()
            .map(|(sel, _)| sel)
            .filter(|sel| {
                !devices.iter().any(|(o, u)| match sel {
                    DeviceSel::Ordinal(x) => x == o,
                    DeviceSel::Uuid(x) => u.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(x)),
                })
            })
            .collect()
    }
}

fn parse_device_sel(s: &str) -> Result<DeviceSel, String> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return t
            .parse::<u32>()
            .ok()
            .filter(|&o| o < 1024)
            .map(DeviceSel::Ordinal)
            .ok_or_else(|| format!("device ordinal {} is out of range (0 to 1023)", clip(t)));
    }
    let lower = t.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("gpu-") {
        let groups: Vec<&str> = hex.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens == [8, 4, 4, 4, 12]
            && groups
                .iter()
                .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Ok(DeviceSel::Uuid(lower));
        }
        return Err(format!(
            "{} is not a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
            clip(t)
        ));
    }
    Err(format!(
        "{} is neither a device ordinal nor a GPU UUID",
        clip(t)
    ))
}

/// Parses a comma-separated per-device list whose values `value` parses.
fn parse_per_device<T>(
    what: &str,
    s: &str,
    accepted: &'static str,
    value: impl Fn(&str) -> Result<T, String>,
) -> Result<PerDevice<T>, QuotaError> {
    let err = |problem: String| QuotaError {
        what: what.into(),
        value: s.into(),
        problem,
        accepted,
    };
    if s.trim().is_empty() {
        return Err(err("it is empty".into()));
    }
    let mut out = PerDevice {
        default: None,
        devices: Vec::new(),
    };
    for entry in s.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(err("it has an empty entry".into()));
        }
        match entry.split_once('=') {
            None => {
                if out.default.is_some() {
                    return Err(err("it has more than one value for all devices".into()));
                }
                out.default = Some(value(entry).map_err(err)?);
            }
            Some((dev, v)) => {
                let sel = parse_device_sel(dev).map_err(err)?;
                if out.devices.iter().any(|(d, _)| *d == sel) {
                    return Err(err(format!("{sel} is given twice")));
                }
                out.devices.push((sel, value(v).map_err(err)?));
            }
        }
    }
    Ok(out)
}

/// Accepted forms of a memory limit (`TSLICE_HBM_LIMIT`).
pub const MEM_LIMIT_FORMS: &str = "a size (8GiB, 8G, 8192MiB, 8589934592 bytes) or a share of the \
device from 1% to 100% (25%); optionally per device as a comma list of \
ORDINAL=VALUE or GPU-<uuid>=VALUE, with at most one bare VALUE for the others (8GiB,1=4GiB)";

/// Parses a memory limit list, e.g. `TSLICE_HBM_LIMIT`.
pub fn parse_mem_limits(what: &str, s: &str) -> Result<PerDevice<MemLimit>, QuotaError> {
    parse_per_device(what, s, MEM_LIMIT_FORMS, |v| {
        if v.trim().ends_with('%') {
            return percent_problem(v, Ppm(10_000)).map(MemLimit::Share);
        }
        match size_problem(v)? {
            b if b < crate::ledger::GRANULARITY => Err(format!(
                "a limit of {b} bytes is less than one 2 MiB page (the unit tslice charges) and would refuse every allocation"
            )),
            b => Ok(MemLimit::Bytes(b)),
        }
    })
}

/// Accepted forms of a compute share (`TSLICE_COMPUTE_LIMIT`).
pub const COMPUTE_LIMIT_FORMS: &str = "a share of the GPU's time from 0.1% to 100% (30%, 12.5%); \
optionally per device as a comma list of ORDINAL=SHARE or GPU-<uuid>=SHARE, with at most one bare \
SHARE for the others (30%,1=50%)";

/// Parses a compute share list, e.g. `TSLICE_COMPUTE_LIMIT`.
pub fn parse_compute_limits(what: &str, s: &str) -> Result<PerDevice<Ppm>, QuotaError> {
    parse_per_device(what, s, COMPUTE_LIMIT_FORMS, |v| {
        percent_problem(v, Ppm(1_000))
    })
}

/// Accepted forms of a duration.
pub const DURATION_FORMS: &str = "a number with a unit: ns, us, ms or s (500us, 2ms, 1.5ms)";

/// Parses a duration (`500us`, `2ms`) into nanoseconds.
pub fn parse_duration(what: &str, s: &str) -> Result<u64, QuotaError> {
    let problem = || -> Result<u64, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("it is empty".into());
        }
        if t.starts_with('-') {
            return Err("a duration cannot be negative".into());
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(format!("{} does not start with a number", clip(t)));
        }
        let mult: u64 = match unit.trim() {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "" => return Err(format!("{} has no unit", clip(t))),
            u => return Err(format!("unknown unit {}", clip(u))),
        };
        let v: f64 = num
            .parse()
            .map_err(|_| format!("{} is not a number", clip(num)))?;
        let ns = v * mult as f64;
        if !(0.0..=3.6e12).contains(&ns) {
            return Err("it is out of range (0 to 1 hour)".into());
        }
        Ok(ns.round() as u64)
    };
    problem().map_err(|p| QuotaError {
        what: what.into(),
        value: s.into(),
        problem: p,
        accepted: DURATION_FORMS,
    })
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    const GIB: u64 = 1 << 30;
    const UUID: &str = "GPU-0a1b2c3d-0000-1111-2222-333344445555";

    #[test]
    fn single_values() {
        let p = parse_mem_limits("L", "8GiB").unwrap();
        assert_eq!(p.default, Some(MemLimit::Bytes(8 * GIB)));
        assert!(p.devices.is_empty());
        assert_eq!(
            parse_mem_limits("L", "25%").unwrap().default,
            Some(MemLimit::Share(Ppm(250_000)))
        );
        assert_eq!(
            parse_mem_limits("L", "100%").unwrap().default,
            Some(MemLimit::Share(Ppm::ONE))
        );
        assert_eq!(
            parse_mem_limits("L", "1%").unwrap().default,
            Some(MemLimit::Share(Ppm(10_000)))
        );
        assert_eq!(
            parse_mem_limits("L", "12.5%").unwrap().default,
            Some(MemLimit::Share(Ppm(125_000)))
        );
    }

    #[test]
    fn per_device() {
        let p = parse_mem_limits("L", &format!("8GiB, 1=4GiB ,{UUID}=50%")).unwrap();
        assert_eq!(p.for_device(0, None), Some(MemLimit::Bytes(8 * GIB)));
        assert_eq!(p.for_device(1, None), Some(MemLimit::Bytes(4 * GIB)));
        let u = UUID.to_ascii_lowercase();
        assert_eq!(
            p.for_device(1, Some(&u)),
            Some(MemLimit::Share(Ppm(500_000)))
        );
        assert_eq!(
            p.for_device(1, Some(UUID)),
            Some(MemLimit::Share(Ppm(500_000)))
        );
        let only = parse_mem_limits("L", "1=4GiB").unwrap();
        assert_eq!(only.for_device(0, None), None);
        assert_eq!(only.for_device(1, None), Some(MemLimit::Bytes(4 * GIB)));
    }

    #[test]
    fn resolve_never_exceeds_device() {
        assert_eq!(MemLimit::Bytes(100 * GIB).resolve(80 * GIB), 80 * GIB);
        assert_eq!(MemLimit::Bytes(8 * GIB).resolve(80 * GIB), 8 * GIB);
        assert_eq!(MemLimit::Share(Ppm(250_000)).resolve(80 * GIB), 20 * GIB);
        assert_eq!(Ppm::ONE.of(u64::MAX), u64::MAX);
    }

    #[test]
    fn bad_limits() {
        for (s, needle) in [
            ("", "empty"),
            ("0", "0 bytes"),
            ("1", "1 bytes is less than one 2 MiB page"),
            ("1KB", "1000 bytes is less than one 2 MiB page"),
            ("2097151", "less than one 2 MiB page"),
            ("0%", "less than 1%"),
            ("0.5%", "less than 1%"),
            ("101%", "more than 100%"),
            ("abc%", "not a number"),
            ("8 gigs", "unknown unit"),
            ("8GiB,4GiB", "more than one value"),
            ("0=1G,0=2G", "given twice"),
            ("x=1G", "neither a device ordinal nor a GPU UUID"),
            ("GPU-123=1G", "not a GPU UUID"),
            ("8GiB,", "empty entry"),
            ("99999=1G", "out of range"),
            ("1.23456%", "more than 4 decimals"),
        ] {
            let e = parse_mem_limits("TSLICE_HBM_LIMIT", s).unwrap_err();
            assert!(e.problem.contains(needle), "{s:?}: {e}");
            assert!(e.to_string().contains("accepted: a size"), "{e}");
        }
    }

    #[test]
    fn the_smallest_limit_is_one_page() {
        assert_eq!(
            parse_mem_limits("L", "2MiB").unwrap().default,
            Some(MemLimit::Bytes(2 << 20))
        );
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(65536);
        let e = parse_mem_limits("TSLICE_HBM_LIMIT", &long).unwrap_err();
        let line = e.to_string();
        assert!(line.len() < 600, "{} bytes", line.len());
        assert!(line.contains("(65536 bytes)"), "{line}");
        let e = parse_mem_limits("TSLICE_HBM_LIMIT", &format!("8{long}")).unwrap_err();
        assert!(e.to_string().len() < 700);
        assert_eq!(clip("short"), "\"short\"");
    }

    #[test]
    fn entries_matching_no_device_are_found() {
        let p = parse_mem_limits("L", &format!("8GiB,1=4GiB,99=1GiB,{UUID}=2GiB")).unwrap();
        let devs = vec![
            (
                0,
                Some("GPU-00000000-0000-0000-0000-000000000000".to_string()),
            ),
            (1, None),
        ];
        let un: Vec<String> = p.unmatched(&devs).iter().map(|s| s.to_string()).collect();
        assert_eq!(un, vec!["device 99".to_string(), UUID.to_string()]);
        let devs = vec![(0, Some(UUID.to_ascii_lowercase())), (1, None), (99, None)];
        assert!(p.unmatched(&devs).is_empty());
    }

    #[test]
    fn compute_limits() {
        assert_eq!(
            parse_compute_limits("C", "30%").unwrap().default,
            Some(Ppm(300_000))
        );
        assert_eq!(
            parse_compute_limits("C", "0.1%").unwrap().default,
            Some(Ppm(1_000))
        );
        let p = parse_compute_limits("C", "20%,1=70%").unwrap();
        assert_eq!(p.for_device(1, None), Some(Ppm(700_000)));
        for (s, needle) in [
            ("30", "not a percentage"),
            ("0%", "less than 0.1%"),
            ("150%", "more than 100%"),
            ("8GiB", "not a percentage"),
            ("", "empty"),
        ] {
            let e = parse_compute_limits("TSLICE_COMPUTE_LIMIT", s).unwrap_err();
            assert!(e.problem.contains(needle), "{s:?}: {e}");
            assert!(e.to_string().starts_with("TSLICE_COMPUTE_LIMIT="), "{e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("D", "2ms"), Ok(2_000_000));
        assert_eq!(parse_duration("D", "500us"), Ok(500_000));
        assert_eq!(parse_duration("D", "1.5ms"), Ok(1_500_000));
        assert_eq!(parse_duration("D", "7ns"), Ok(7));
        assert!(parse_duration("D", "5")
            .unwrap_err()
            .problem
            .contains("no unit"));
        assert!(parse_duration("D", "5 parsecs")
            .unwrap_err()
            .problem
            .contains("unknown unit"));
        assert!(parse_duration("D", "-1ms")
            .unwrap_err()
            .problem
            .contains("negative"));
        assert!(parse_duration("D", "")
            .unwrap_err()
            .problem
            .contains("empty"));
        assert!(parse_duration("D", "ms")
            .unwrap_err()
            .problem
            .contains("does not start with a number"));
        assert!(parse_duration("D", "99999999999999999999s")
            .unwrap_err()
            .problem
            .contains("out of range"));
    }
}
