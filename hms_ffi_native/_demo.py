"""The demo behind `hms-ffi demo`: the order flow of examples/orders across languages.

    hms-ffi demo [--frontend auto|go|python] [-n N]

Starts the OMS (Python, SQLite; hms_ffi_native/_orders/oms.py) in a second process and the API front
end in a third: the Go one (examples/orders/go, built with `go build` and cached) when Go and the
source checkout are there, else the Python one with the same steps. The front end creates orders,
sends them to the OMS, updates their status, verifies the signed status events, shows one tampered
event rejected and measures round trips. Everything lives in one temporary directory (runtime
directory, SQLite database, the HMAC key file of mode 0600), removed at the end, also on failure or
Ctrl-C; both children also die with this process (PR_SET_PDEATHSIG).

Where the Go front end comes from: $HMS_FFI_SOURCE_DIR, else the checkout this package was imported
from (in-place or editable installs), else the working directory or one of its parents: whichever
holds examples/orders/go and bindings/go. The binary is cached in $HMS_FFI_DEMO_CACHE (default
~/.cache/hms-ffi/demo), keyed by a hash of its sources, the library and the Go version.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

import hms_ffi_native as hms

from . import _paths

PKG_PARENT = str(Path(__file__).resolve().parent.parent)
START_TIMEOUT = 15.0
FRONTEND_TIMEOUT = 60.0
BUILD_TIMEOUT = 600.0


def _pdeathsig() -> None:
    # In the child between fork and exec: die with the demo even when it is SIGKILLed.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _child_env(runtime: str, key_file: str) -> dict:
    env = dict(os.environ)
    env.pop("HMS_ORDERS_HMAC_KEY", None)  # the demo's own key file, nothing else
    env.update(HMS_FFI_RUNTIME_DIR=runtime, HMS_ORDERS_HMAC_KEY_FILE=key_file, PYTHONSAFEPATH="1",
               PYTHONUNBUFFERED="1")
    # The children import this very package (installed or built in place), never a source tree that
    # happens to be the working directory.
    env["PYTHONPATH"] = PKG_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# ----------------------------------------------------------------------------------------------------
# The Go front end: find its sources, build it once, cache the binary
# ----------------------------------------------------------------------------------------------------
def find_source_checkout() -> Optional[Path]:
    candidates: List[Path] = []
    if os.environ.get("HMS_FFI_SOURCE_DIR"):
        candidates.append(Path(os.environ["HMS_FFI_SOURCE_DIR"]))
    candidates.append(Path(PKG_PARENT))
    cwd = Path.cwd().resolve()
    candidates += [cwd, *cwd.parents]
    for c in candidates:
        if (c / "examples/orders/go/go.mod").is_file() and (c / "bindings/go/go.mod").is_file():
            return c
    return None


def _build_key(src: Path, go: str) -> str:
    h = hashlib.sha256()
    for d in (src / "examples/orders/go", src / "bindings/go"):
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix in (".go", ".c", ".h", ".mod", ".sum") and not p.name.endswith("_test.go"):
                h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes())
    lib = Path(_paths.libdir()) / "libhms_ffi.so"
    st = lib.stat()
    h.update(f"{lib}:{st.st_size}:{st.st_mtime_ns}".encode())  # the rpath points at this library
    h.update(subprocess.run([go, "version"], capture_output=True, text=True).stdout.encode())
    return h.hexdigest()[:16]


def build_go_frontend(src: Path, go: str, log_path: str) -> Tuple[Optional[Path], str]:
    """(binary, note): the cached or freshly built front end, or (None, why not)."""
    cache = Path(os.environ.get("HMS_FFI_DEMO_CACHE")
                 or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hms-ffi" / "demo")
    try:
        exe = cache / f"hms-orders-api-{_build_key(src, go)}"
    except (OSError, FileNotFoundError) as e:
        return None, f"cannot hash the Go sources: {e}"
    if exe.is_file() and os.access(exe, os.X_OK):
        return exe, f"cached {exe}"
    cache.mkdir(parents=True, exist_ok=True)
    print(f"building the Go front end from {src / 'examples/orders/go'} (first run: up to a minute)...", flush=True)
    env = dict(os.environ, PKG_CONFIG_PATH=str(_paths.pkgconfig_dir()) + (
        os.pathsep + os.environ["PKG_CONFIG_PATH"] if os.environ.get("PKG_CONFIG_PATH") else ""),
        CGO_ENABLED="1", GOFLAGS="-mod=mod -buildvcs=false")
    tmp = cache / f".{exe.name}.{os.getpid()}.tmp"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        try:
            r = subprocess.run([go, "build", "-o", str(tmp), "."], cwd=src / "examples/orders/go", env=env,
                               stdout=log, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            tmp.unlink(missing_ok=True)
            return None, f"go build took longer than {BUILD_TIMEOUT:.0f} s"
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        with open(log_path) as f:
            tail = f.read().strip().splitlines()[-3:]
        return None, "go build failed: " + " | ".join(tail)
    os.replace(tmp, exe)
    for old in cache.glob("hms-orders-api-*"):  # one binary per source state: drop the stale ones
        if old != exe:
            old.unlink(missing_ok=True)
    return exe, f"built in {time.monotonic() - t0:.1f} s, cached as {exe}"


def choose_frontend(choice: str, tmp: str, n: int) -> Tuple[List[str], str]:
    """The front end's command line and one line saying which it is and why."""
    py = [sys.executable, "-u", "-m", "hms_ffi_native._orders.frontend", "-n", str(n)]
    if choice == "python":
        return py, "Python API front end (--frontend python)"
    go = shutil.which("go")
    src = find_source_checkout()
    why = None
    if go is None:
        why = "Go is not installed"
    elif src is None:
        why = ("the Go sources are not here (run from the source checkout, or set HMS_FFI_SOURCE_DIR to it)")
    else:
        exe, note = build_go_frontend(src, go, os.path.join(tmp, "go-build.log"))
        if exe is not None:
            return [str(exe), "-n", str(n)], f"Go API front end ({note})"
        why = note
    if choice == "go":
        raise RuntimeError(f"--frontend go: {why}")
    return py, f"{why}: running the Python API front end instead (same steps)"


# ----------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------
def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))
        if r:
            return proc.stdout.readline().decode(errors="replace").strip()
        if proc.poll() is not None:
            return ""
    return ""


def _stop(proc: Optional[subprocess.Popen], sig=signal.SIGTERM, grace: float = 5.0) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _db_summary(db: str) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT id, status, oms_reference FROM orders ORDER BY id").fetchall()
        changes = con.execute("SELECT COUNT(*) FROM status_history").fetchone()[0]
    finally:
        con.close()
    orders = ", ".join(f"order {i} {s}" + (f" ({ref})" if ref else "") for i, s, ref in rows)
    return f"OMS database (SQLite): {orders}; {changes} status changes recorded"


def run(frontend: str = "auto", n: int = 500) -> int:
    tmp = tempfile.mkdtemp(prefix="hms-demo-", dir="/tmp")  # short: Unix socket paths are limited
    runtime = os.path.join(tmp, "rt")
    key_file = os.path.join(tmp, "status-events.key")
    db = os.path.join(tmp, "orders.db")
    oms = fe = None
    old_term = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    rc = 1
    try:
        os.mkdir(runtime, 0o700)
        from ._orders import signing

        signing.create_key_file(key_file)
        print(f"hms-ffi-native {hms.__version__} demo: the order flow across languages "
              f"(hms.order.v1, protobuf over shared memory)")
        print(f"  temporary directory {tmp}: runtime dir rt/, orders.db, status-events.key "
              f"(HMAC-SHA256 key, mode {os.stat(key_file).st_mode & 0o777:04o})")
        env = _child_env(runtime, key_file)
        sys.stdout.flush()
        with open(os.path.join(tmp, "oms.log"), "w") as oms_log:
            oms = subprocess.Popen([sys.executable, "-m", "hms_ffi_native._orders.oms", "--db", db], env=env,
                                   stdout=subprocess.PIPE, stderr=oms_log, preexec_fn=_pdeathsig)
        cmd, which = choose_frontend(frontend, tmp, n)
        line = _read_line(oms, START_TIMEOUT)
        if not line.startswith("ready"):
            with open(os.path.join(tmp, "oms.log")) as f:
                print(f"the OMS did not start (it said {line!r}):\n{f.read()[-2000:]}", file=sys.stderr)
            return 1
        print(f"OMS (Python, pid {oms.pid}): serving hms.order.v1.OrderService@1.0.0 and "
              f"hms.order.v1.OMSIntegrationService@1.0.0, SQLite orders.db, signing status events on order.status")
        print(which, flush=True)
        fe = subprocess.Popen(cmd, env=env, stdout=None, stderr=subprocess.STDOUT, preexec_fn=_pdeathsig)
        try:
            fe_rc = fe.wait(FRONTEND_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"the front end did not finish within {FRONTEND_TIMEOUT:.0f} s", file=sys.stderr)
            return 1
        _stop(oms)
        oms_rc = oms.returncode
        if fe_rc != 0:
            print(f"the front end failed (exit status {fe_rc})", file=sys.stderr)
            return 1
        if oms_rc != 0:
            with open(os.path.join(tmp, "oms.log")) as f:
                print(f"the OMS exited with status {oms_rc}:\n{f.read()[-2000:]}", file=sys.stderr)
            return 1
        print(_db_summary(db))
        rc = 0
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        rc = 130
        return 130
    except RuntimeError as e:
        print(f"hms-ffi demo: {e}", file=sys.stderr)
        return 1
    finally:
        # Ctrl-C reached the children too (same process group); whatever still runs is stopped here.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        _stop(fe)
        _stop(oms)
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, old_term)
        pids = " and ".join(f"{name} (pid {p.pid})" for name, p in (("OMS", oms), ("front end", fe)) if p is not None)
        print(f"cleaned up: stopped {pids or 'nothing'}, removed {tmp}", file=sys.stdout if rc == 0 else sys.stderr)


if __name__ == "__main__":
    sys.exit(run())
