"""Shared fixtures. Each test gets its own runtime directory, so tests never see each other's services."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import hms_ffi_native as hms

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "_servers.py"
# Child processes must import the same hms_ffi_native as the tests (installed or built in place).
PKG_PARENT = str(Path(hms.__file__).resolve().parent.parent)


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # `python -c`/`-m` put the working directory first on sys.path; in a source checkout that is the
    # unbuilt source package. Python >= 3.11 honours PYTHONSAFEPATH; tests also run from a temp dir.
    env["PYTHONSAFEPATH"] = "1"
    env.update(extra)
    return env


@pytest.fixture
def runtime_dir(monkeypatch):
    # Short paths: Unix socket paths are limited to 107 bytes.
    d = tempfile.mkdtemp(prefix="hmst-", dir="/tmp")
    monkeypatch.setenv("HMS_FFI_RUNTIME_DIR", d)
    monkeypatch.chdir(d)  # child processes must not import the source tree's unbuilt package
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def node(runtime_dir):
    n = hms.Node("test")
    yield n
    n.close()


class ServerProcess:
    """A service running in another process (tests/_servers.py), killed at the end of the test."""

    def __init__(self, kind: str, *args: str, env=None) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SERVERS), kind, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env or child_env())
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.kill()
            raise RuntimeError(f"server {kind} did not start: {line!r} {err}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self, sig: int = 9) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture
def server_process(runtime_dir):
    started = []

    def start(kind: str = "echo", *args: str) -> ServerProcess:
        sp = ServerProcess(kind, *args)
        started.append(sp)
        return sp

    yield start
    for sp in started:
        sp.kill()


def wait_until(pred, timeout: float = 5.0, step: float = 0.005) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def c_sources_present() -> bool:
    root = HERE.parent
    return (root / "csrc").is_dir() and (root / "include" / "hms_ffi" / "hms_ffi.h").is_file()
