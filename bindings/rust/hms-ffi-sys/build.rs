//! Finds libhms_ffi and its header, links the library and records where both are.
//!
//! Lookup order (the first that gives a directory wins):
//!   1. HMS_FFI_LIB_DIR (and HMS_FFI_INCLUDE_DIR) from the environment;
//!   2. `hms-ffi --libdir` / `hms-ffi --includedir` (the CLI of the installed Python package;
//!      HMS_FFI_CLI names another executable, e.g. "python3 -m hms_ffi_native").
//!
//! Emits: link search path + `-lhms_ffi`; `cargo:libdir=` / `cargo:include=` metadata so that the
//! dependent crate (`hms-ffi`) can add an rpath to its binaries and tests (a build script's
//! `rustc-link-arg` only reaches its own package's targets); and `HMS_FFI_INCLUDE_DIR` /
//! `HMS_FFI_LIB_DIR` at compile time for the header check test (tests/header.rs).
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ask_cli(flag: &str) -> Result<PathBuf, String> {
    let cli = env::var("HMS_FFI_CLI").unwrap_or_else(|_| "hms-ffi".to_string());
    let mut parts = cli.split_whitespace();
    let program = parts.next().ok_or("HMS_FFI_CLI is empty")?;
    let out = Command::new(program)
        .args(parts)
        .arg(flag)
        .output()
        .map_err(|e| format!("could not run `{cli} {flag}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{cli} {flag}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if s.is_empty() {
        return Err(format!("`{cli} {flag}` printed nothing"));
    }
    Ok(PathBuf::from(s))
}

fn locate(env_name: &str, flag: &str, must_contain: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={env_name}");
    let dir = match env::var_os(env_name) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => ask_cli(flag).unwrap_or_else(|e| {
            panic!(
                "hms-ffi-sys: cannot find libhms_ffi: {env_name} is not set and {e}.\n\
                 Install the Python package (pip install hms-ffi-native, or `pip install -e .` plus \
                 `python setup.py build_ext --inplace` in a checkout) so that `hms-ffi {flag}` works, \
                 or set {env_name} to the directory holding {must_contain}."
            )
        }),
    };
    if !dir.join(must_contain).exists() {
        panic!(
            "hms-ffi-sys: {} has no {must_contain} (from {env_name} or `hms-ffi {flag}`); \
             build the C core first (`python setup.py build_ext --inplace`) or point {env_name} elsewhere",
            dir.display()
        );
    }
    dir
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HMS_FFI_CLI");
    println!("cargo:rerun-if-env-changed=PATH");
    let libdir = locate("HMS_FFI_LIB_DIR", "--libdir", "libhms_ffi.so");
    let incdir = locate("HMS_FFI_INCLUDE_DIR", "--includedir", "hms_ffi/hms_ffi.h");
    let header: &Path = &incdir.join("hms_ffi/hms_ffi.h");
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-changed={}", libdir.join("libhms_ffi.so").display());

    println!("cargo:rustc-link-search=native={}", libdir.display());
    println!("cargo:rustc-link-lib=dylib=hms_ffi");
    // This package's own tests need the rpath too.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", libdir.display());
    // Metadata for dependents: DEP_HMS_FFI_LIBDIR / DEP_HMS_FFI_INCLUDE.
    println!("cargo:libdir={}", libdir.display());
    println!("cargo:include={}", incdir.display());
    println!("cargo:rustc-env=HMS_FFI_LIB_DIR={}", libdir.display());
    println!("cargo:rustc-env=HMS_FFI_INCLUDE_DIR={}", incdir.display());
}
