fn main() {
    // The shim's own references to its exports bind locally, and the library
    // carries its usual soname.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtslice.so");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic-functions");
    println!("cargo:rerun-if-changed=build.rs");
}
