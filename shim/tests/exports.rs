//! The built library exports exactly the hook table, `dlsym`, and tslice's
//! own C ABI: nothing more (no Rust internals), nothing less.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

// Expand the single source of truth with a macro that only keeps the names.
macro_rules! hook_table {
    ($(
        $name:ident ($base:literal, $since:literal, $variant:ident)
            fn($($arg:ident : $ty:ty),* $(,)?) = $imp:path;
    )*) => {
        const HOOKED: &[&str] = &[$(stringify!($name)),*];
        const ROWS: &[(&str, &str, i32, &str)] = &[$((stringify!($name), $base, $since, stringify!($variant))),*];
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
    let mut expected: BTreeSet<String> = HOOKED.iter().map(|s| s.to_string()).collect();
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
    for &(name, base, since, variant) in ROWS {
        assert!(seen.insert(name), "{name} is listed twice");
        assert!(name.starts_with(base), "{name} is not a version of {base}");
        assert!(
            (2000..=13050).contains(&since),
            "{name}: odd ABI version {since}"
        );
        match variant {
            "per_thread" => assert!(name.ends_with("_ptsz") || name.ends_with("_ptds"), "{name}"),
            "legacy" => assert!(
                !name.ends_with("_ptsz") && !name.ends_with("_ptds"),
                "{name}"
            ),
            v => panic!("{name}: unknown variant {v}"),
        }
    }
    // Every per-thread row has its legacy sibling.
    for &(name, base, _, variant) in ROWS {
        if variant == "per_thread" {
            assert!(
                ROWS.iter().any(|r| r.1 == base && r.3 == "legacy"),
                "{name} has no legacy row"
            );
        }
    }
}
