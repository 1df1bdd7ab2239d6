//! The built library exports exactly the hook table, `dlsym`, and tslice's
//! own C ABI: nothing more (no Rust internals), nothing less.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

// Expand the single source of truth with a macro that only keeps the names.
macro_rules! hook_table {
    ($(
        $name:ident
            fn($($arg:ident : $ty:ty),* $(,)?) = $imp:path;
    )*) => {
        const HOOKED: &[&str] = &[$(stringify!($name)),*];
    };
}
macro_rules! nvml_table {
    ($(
        $name:ident
            fn($($arg:ident : $ty:ty),* $(,)?) = $imp:path;
    )*) => {
        const NVML_HOOKED: &[&str] = &[$(stringify!($name)),*];
    };
}
include!("../src/hooks/table.rs");

/// tslice's own ABI (include/tslice.h).
const OWN_ABI: &[&str] = &[
    "tslice_abi_version",
    "tslice_version",
    "tslice_get_device_stats",
];

#[test]
fn exported_symbols_match_the_hook_table() {
    let lib = common::shim_path();
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("nm (binutils) must be installed");
    assert!(out.status.success());
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "addr T name": only code and data the library defines.
            (f.len() == 3 && f[1] != "A").then(|| f[2].to_string())
        })
        .collect();
    let mut expected: BTreeSet<String> = HOOKED
        .iter()
        .chain(NVML_HOOKED)
        .map(|s| s.to_string())
        .collect();
    expected.extend(OWN_ABI.iter().map(|s| s.to_string()));
    expected.insert("dlsym".into());
    let missing: Vec<_> = expected.difference(&exported).collect();
    let extra: Vec<_> = exported.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing exports {missing:?}, unexpected exports {extra:?}"
    );
}

#[test]
fn table_is_consistent() {
    let mut seen = BTreeSet::new();
    for &name in HOOKED {
        assert!(seen.insert(name), "{name} is listed twice");
        let (abi, per_thread) =
            cuda_abi::abi::by_export(name).expect("every hook is in cuda_abi::abi::ABIS");
        assert!(
            name.starts_with(abi.base),
            "{name} is not a version of {}",
            abi.base
        );
        assert_eq!(
            per_thread,
            name.ends_with("_ptsz") || name.ends_with("_ptds"),
            "{name}"
        );
        // Every per-thread hook has its legacy sibling hooked too.
        if per_thread {
            assert!(
                HOOKED.contains(&abi.export.unwrap()),
                "{name} has no legacy row"
            );
        }
    }
}
