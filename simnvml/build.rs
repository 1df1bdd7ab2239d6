//! Links the cdylib as NVML is linked: soname `libnvidia-ml.so.1` (the name
//! programs linked with `-lnvidia-ml` record, and tools and PyTorch dlopen),
//! and `-Bsymbolic-functions` so that its calls among its own entry points
//! are never rebound to a same-named export of a preloaded interposer (the
//! shim hooks NVML's memory queries).
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnvidia-ml.so.1");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic-functions");
    println!("cargo:rerun-if-changed=build.rs");
}
