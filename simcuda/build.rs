//! Links the cdylib the way a CUDA driver must be linked: soname `libcuda.so.1`
//! (the runtime dlopens that name), and `-Bsymbolic-functions` so that the
//! function pointers this library hands out through `cuGetProcAddress` are its
//! own, never rebound to a same-named export of a preloaded interposer.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic-functions");
    println!("cargo:rerun-if-changed=build.rs");
}
