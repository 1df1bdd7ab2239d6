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
            "{}={:?} is invalid: {}; accepted: {}",
            self.what, self.value, self.problem, self.accepted
        )
    }
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
        return Err(format!("{t:?} does not start with a number"));
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
        _ => return Err(format!("unknown unit {unit:?}")),
    };
    let bytes = match num.split_once('.') {
        None => num
            .parse::<u64>()
            .map_err(|_| format!("{num:?} is not a whole number"))?
            .checked_mul(mult)
            .ok_or_else(|| "it is too large".to_string())?,
        Some((int, frac)) => {
            if frac.contains('.') || (int.is_empty() && frac.is_empty()) {
                return Err(format!("{num:?} is not a number"));
            }
            if mult == 1 {
                return Err("a fraction of a byte is not a size".into());
            }
            // Exact decimal arithmetic: int * mult + frac * mult / 10^len(frac).
            let int_v: u64 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| format!("{num:?} is not a number"))?
            };
            if frac.len() > 9 {
                return Err(format!("{num:?} has more than 9 decimals"));
            }
            let frac_v: u64 = if frac.is_empty() {
                0
            } else {
                frac.parse().map_err(|_| format!("{num:?} is not a number"))?
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
            ("18446744073709551616", "not a whole number"),
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
