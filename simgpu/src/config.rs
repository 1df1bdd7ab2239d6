//! `Config::from_env`: the `SIMCUDA_*` variables.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::model::MAX_QUEUE_DEPTH;
use crate::Config;

pub const MAX_DEVICES: u32 = 16;
pub const MAX_TIMESLICE_US: u64 = 1_000_000;
pub const MAX_SWITCH_US: u64 = 1_000_000;

/// The default directory: `/dev/shm/simcuda-<uid>`.
pub fn default_dir() -> PathBuf {
    PathBuf::from(format!("/dev/shm/simcuda-{}", crate::sys::uid()))
}

fn invalid(name: &str, value: &str, problem: &str, accepted: &str) -> String {
    format!("{name}={value:?} is invalid: {problem}; accepted: {accepted}")
}

fn text(
    get: &dyn Fn(&str) -> Option<OsString>,
    name: &str,
    accepted: &str,
) -> Result<Option<String>, String> {
    match get(name) {
        None => Ok(None),
        Some(v) => v.into_string().map(Some).map_err(|v| {
            invalid(
                name,
                &v.to_string_lossy(),
                "it is not valid UTF-8",
                accepted,
            )
        }),
    }
}

fn integer(
    get: &dyn Fn(&str) -> Option<OsString>,
    name: &str,
    min: u64,
    max: u64,
    default: u64,
    unit: &str,
) -> Result<u64, String> {
    let accepted = format!("a whole number{unit} from {min} to {max}");
    let Some(v) = text(get, name, &accepted)? else {
        return Ok(default);
    };
    let t = v.trim();
    let n: u64 = match t.parse() {
        Ok(n) => n,
        Err(_) if t.is_empty() => return Err(invalid(name, &v, "it is empty", &accepted)),
        Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(invalid(name, &v, "it is too large", &accepted))
        }
        Err(_) => return Err(invalid(name, &v, "it is not a whole number", &accepted)),
    };
    if n < min || n > max {
        return Err(invalid(name, &v, "it is out of range", &accepted));
    }
    Ok(n)
}

/// Reads the configuration through `get` (the environment in
/// `Config::from_env`; a map in tests).
pub fn from_lookup(get: &dyn Fn(&str) -> Option<OsString>) -> Result<Config, String> {
    let dir_forms = "an absolute directory path (default /dev/shm/simcuda-<uid>)";
    let dir = match text(get, "SIMCUDA_DIR", dir_forms)? {
        None => default_dir(),
        Some(v) if v.is_empty() => {
            return Err(invalid("SIMCUDA_DIR", &v, "it is empty", dir_forms))
        }
        Some(v) if !v.starts_with('/') => return Err(invalid(
            "SIMCUDA_DIR",
            &v,
            "it is relative (processes with other working directories would not share the device)",
            dir_forms,
        )),
        Some(v) => PathBuf::from(v),
    };
    let devices = integer(get, "SIMCUDA_DEVICES", 1, MAX_DEVICES as u64, 1, "")? as u32;
    let mem_bytes = match text(get, "SIMCUDA_MEM", tslice_policy::quota::SIZE_FORMS)? {
        None => 80 << 30,
        Some(v) => match tslice_policy::quota::parse_size("SIMCUDA_MEM", &v) {
            Ok(0) => {
                return Err(invalid(
                    "SIMCUDA_MEM",
                    &v,
                    "a device needs at least 1 byte",
                    tslice_policy::quota::SIZE_FORMS,
                ))
            }
            Ok(n) => n,
            Err(e) => return Err(e.to_string()),
        },
    };
    let timeslice_us = integer(
        get,
        "SIMCUDA_TIMESLICE_US",
        1,
        MAX_TIMESLICE_US,
        1024,
        " of microseconds",
    )?;
    let switch_us = integer(
        get,
        "SIMCUDA_SWITCH_US",
        0,
        MAX_SWITCH_US,
        90,
        " of microseconds",
    )?;
    let queue_depth = integer(
        get,
        "SIMCUDA_QUEUE_DEPTH",
        1,
        MAX_QUEUE_DEPTH as u64,
        1024,
        "",
    )? as u32;
    Ok(Config {
        dir,
        devices,
        mem_bytes,
        timeslice_ns: timeslice_us * 1_000,
        switch_ns: switch_us * 1_000,
        queue_depth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<Config, String> {
        let m: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        from_lookup(&|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = with(&[]).unwrap();
        assert_eq!(c.dir, default_dir());
        assert!(c.dir.to_str().unwrap().starts_with("/dev/shm/simcuda-"));
        assert_eq!(c.devices, 1);
        assert_eq!(c.mem_bytes, 80 << 30);
        assert_eq!(c.timeslice_ns, 1_024_000);
        assert_eq!(c.switch_ns, 90_000);
        assert_eq!(c.queue_depth, 1024);
    }

    #[test]
    fn values() {
        let c = with(&[
            ("SIMCUDA_DIR", "/tmp/x"),
            ("SIMCUDA_DEVICES", "16"),
            ("SIMCUDA_MEM", "512MiB"),
            ("SIMCUDA_TIMESLICE_US", "2000"),
            ("SIMCUDA_SWITCH_US", "0"),
            ("SIMCUDA_QUEUE_DEPTH", "8"),
        ])
        .unwrap();
        assert_eq!(c.dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.devices, 16);
        assert_eq!(c.mem_bytes, 512 << 20);
        assert_eq!(c.timeslice_ns, 2_000_000);
        assert_eq!(c.switch_ns, 0);
        assert_eq!(c.queue_depth, 8);
        assert_eq!(with(&[("SIMCUDA_MEM", "16G")]).unwrap().mem_bytes, 16 << 30);
        assert_eq!(with(&[("SIMCUDA_MEM", "1000")]).unwrap().mem_bytes, 1000);
    }

    #[test]
    fn errors_name_variable_value_and_forms() {
        for (k, v, problem) in [
            ("SIMCUDA_DEVICES", "0", "out of range"),
            ("SIMCUDA_DEVICES", "17", "out of range"),
            ("SIMCUDA_DEVICES", "two", "not a whole number"),
            ("SIMCUDA_DEVICES", "", "empty"),
            ("SIMCUDA_TIMESLICE_US", "-5", "not a whole number"),
            (
                "SIMCUDA_TIMESLICE_US",
                "99999999999999999999999",
                "too large",
            ),
            ("SIMCUDA_SWITCH_US", "1.5", "not a whole number"),
            ("SIMCUDA_QUEUE_DEPTH", "0", "out of range"),
            ("SIMCUDA_QUEUE_DEPTH", "70000", "out of range"),
            ("SIMCUDA_MEM", "lots", "does not start with a number"),
            ("SIMCUDA_MEM", "0", "at least 1 byte"),
            ("SIMCUDA_MEM", "8XB", "unknown unit"),
            ("SIMCUDA_DIR", "relative/dir", "relative"),
            ("SIMCUDA_DIR", "", "empty"),
        ] {
            let e = with(&[(k, v)]).unwrap_err();
            assert!(e.starts_with(&format!("{k}={v:?} is invalid")), "{e}");
            assert!(e.contains(problem), "{e}");
            assert!(e.contains("accepted: "), "{e}");
        }
        let e = with(&[("SIMCUDA_DEVICES", "0")]).unwrap_err();
        assert!(e.contains("from 1 to 16"), "{e}");
        let e = with(&[("SIMCUDA_MEM", "lots")]).unwrap_err();
        assert!(e.contains("GiB"), "{e}");
    }
}
