//! The rpath for this package's binaries and tests: hms-ffi-sys found libhms_ffi and passes its
//! directory as `links` metadata (a dependency's `rustc-link-arg` does not reach our targets).
fn main() {
    let libdir = std::env::var("DEP_HMS_FFI_LIBDIR").expect("hms-ffi-sys sets DEP_HMS_FFI_LIBDIR");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    println!("cargo:rustc-env=HMS_FFI_LIB_DIR={libdir}");
}
