//! Helpers shared by the integration tests: a fresh runtime directory per test and a Python peer.
#![allow(dead_code)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hms_ffi::{Node, NodeOptions};

/// The repository root (bindings/rust/hms-ffi/../../..).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..").canonicalize().unwrap()
}

/// A fresh, short runtime directory under /tmp (socket paths are limited to 107 bytes), removed
/// on drop.
pub struct RuntimeDir(pub PathBuf);

impl RuntimeDir {
    pub fn new() -> RuntimeDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let p = PathBuf::from(format!(
            "/tmp/hmsr-{}-{}-{:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            nanos & 0xffff
        ));
        std::fs::create_dir(&p).unwrap();
        let mut perms = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
        std::fs::set_permissions(&p, perms).unwrap();
        RuntimeDir(p)
    }

    pub fn node(&self, name: &str) -> Node {
        Node::open_with(&NodeOptions {
            name: Some(name.into()),
            runtime_dir: Some(self.0.clone()),
            ..Default::default()
        })
        .unwrap()
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `python3 tests/_servers.py echo` serving `py.echo` in `dir`; killed on drop.
pub struct PyServer {
    child: Child,
}

impl PyServer {
    pub fn start(dir: &RuntimeDir) -> PyServer {
        let python = std::env::var("HMS_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = repo_root().join("tests/_servers.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("echo")
            .env("HMS_FFI_RUNTIME_DIR", &dir.0)
            .env("PYTHONSAFEPATH", "1")
            .current_dir(&dir.0) // never import the source tree's unbuilt package by accident
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{python} {}`: {e} (set HMS_PYTHON)", script.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the Python echo service did not start (printed {line:?}): {}\n\
                 It needs hms_ffi_native importable by `{python}` (pip install -e . in the repo, or \
                 PYTHONPATH; HMS_PYTHON picks the interpreter).",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        PyServer { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        self.kill();
    }
}
