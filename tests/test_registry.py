"""Discovery: runtime directory, version requirements, stale entries, duplicates."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

import hms_ffi_native as hms

from conftest import ServerProcess, child_env, wait_until


def test_default_runtime_dir_follows_env(runtime_dir, monkeypatch):
    assert hms.default_runtime_dir() == runtime_dir
    monkeypatch.delenv("HMS_FFI_RUNTIME_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime_dir)
    assert hms.default_runtime_dir() == os.path.join(runtime_dir, "hms-ffi")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert hms.default_runtime_dir() == f"/tmp/hms-ffi-{os.getuid()}"


def test_runtime_dir_created_private(runtime_dir):
    sub = os.path.join(runtime_dir, "fresh")
    with hms.Node("n", runtime_dir=sub) as n:
        n.service("a.svc", "1.0.0")
        st = os.stat(sub)
        assert stat.S_IMODE(st.st_mode) == 0o700
        sock = os.path.join(sub, "a.svc@1.0.0.sock")
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert not os.path.exists(os.path.join(sub, "a.svc@1.0.0.sock"))  # unregistered on close
    assert not os.path.exists(os.path.join(sub, "a.svc@1.0.0.meta"))


def test_world_writable_runtime_dir_refused(runtime_dir):
    bad = os.path.join(runtime_dir, "open")
    os.mkdir(bad)
    os.chmod(bad, 0o777)
    with hms.Node("n", runtime_dir=bad) as n:
        with pytest.raises(hms.FailedPrecondition, match="world-writable.*chmod 700"):
            n.service("a.svc", "1.0.0")


def test_missing_runtime_dir_for_clients(runtime_dir):
    missing = os.path.join(runtime_dir, "nope")
    assert hms.list_services(missing) == []
    with pytest.raises(hms.NotFound, match="does not exist"):
        hms.connect("x.svc", runtime_dir=missing)


def test_list_services_in_other_process(server_process):
    sp = server_process("echo")
    services = hms.list_services()
    assert [(s.name, s.version, s.pid) for s in services] == [("py.echo", "1.0.0", sp.pid)]
    assert {"echo", "sleep", "fail"} <= set(services[0].functions)
    assert services[0].uid == os.getuid()
    assert services[0].node == "srv-echo"


def test_version_requirements_pick_newest_compatible(server_process):
    server_process("versions", "1.0.0", "1.2.0", "1.2.7", "1.10.1", "2.0.0", "0.3.1")
    cases = {"*": "2.0.0", "^1": "1.10.1", "^1.2": "1.10.1", "~1.2": "1.2.7", "1.2.0": "1.2.0",
             "=1.2.7": "1.2.7", "~1": "1.10.1", ">=1.3": "2.0.0", "^0.3": "0.3.1", "1.2": "1.2.7", "2": "2.0.0"}
    for req, want in cases.items():
        with hms.connect("py.versioned", req) as c:
            assert c.call("version", None, timeout=5) == want, req
    with pytest.raises(hms.NotFound, match=r"no version matches '\^3'.*2\.0\.0"):
        hms.connect("py.versioned", "^3")
    with pytest.raises(hms.InvalidArgument, match="does not parse"):
        hms.connect("py.versioned", "^one")


def test_duplicate_service_in_same_node_and_other_process(node, server_process):
    node.service("dup.svc", "1.0.0")
    with pytest.raises(hms.AlreadyExists, match="already serves"):
        node.service("dup.svc", "1.0.0")
    node.service("dup.svc", "1.0.1")  # another version is fine
    sp = server_process("echo")
    with pytest.raises(hms.AlreadyExists, match=f"pid {sp.pid}"):
        node.service("py.echo", "1.0.0")


def test_bad_service_names_and_versions(node):
    for name in ["", "has space", "slash/x", ".hidden", "-dash", "x" * 200, "ünï"]:
        with pytest.raises(hms.InvalidArgument):
            node.service(name, "1.0.0")
    for version in ["1", "1.2", "1.2.3.4", "v1.2.3", "1.2.x", ""]:
        with pytest.raises(hms.InvalidArgument, match="MAJOR.MINOR.PATCH"):
            node.service("ok.svc", version)
    with pytest.raises(hms.InvalidArgument):
        node.service(42, "1.0.0")


def test_stale_entry_of_killed_process_is_removed_and_name_reusable(server_process, runtime_dir):
    sp = server_process("echo")
    sock = os.path.join(runtime_dir, "py.echo@1.0.0.sock")
    meta = os.path.join(runtime_dir, "py.echo@1.0.0.meta")
    assert os.path.exists(sock) and os.path.exists(meta)
    sp.kill(9)
    assert os.path.exists(meta)  # nobody cleaned up: the process died at once
    assert hms.list_services() == []  # detected as dead ...
    assert not os.path.exists(meta) and not os.path.exists(sock)  # ... and removed
    sp2 = server_process("echo")  # the name is free again
    with hms.connect("py.echo") as c:
        assert c.server_pid == sp2.pid


def test_stale_entry_taken_over_by_new_service_without_listing(server_process, runtime_dir):
    sp = server_process("echo")
    sp.kill(9)
    with hms.Node("again") as n:
        n.service("py.echo", "1.0.0")  # bind finds the dead socket and takes it over
        assert [s.pid for s in hms.list_services()] == [os.getpid()]


def test_entry_with_reused_pid_is_not_trusted(runtime_dir):
    # A metadata file naming a live pid (ours) but a different process start time is stale.
    meta = os.path.join(runtime_dir, "ghost.svc@1.0.0.meta")
    with open(meta, "w") as f:
        f.write(f"hms-ffi-service 1\nname=ghost.svc\nversion=1.0.0\nnode=x\npid={os.getpid()}\nuid=0\nstarttime=1\n")
    assert hms.list_services() == []
    assert not os.path.exists(meta)


def test_garbage_metadata_is_ignored(runtime_dir):
    for name, text in [("a@1.0.0.meta", "not a meta file"), ("b@1.0.0.meta", "hms-ffi-service 1\nname=b\n"),
                       ("c@1.0.0.meta", "hms-ffi-service 1\nname=../../etc\nversion=1.0.0\npid=1\n")]:
        with open(os.path.join(runtime_dir, name), "w") as f:
            f.write(text)
    assert hms.list_services() == []


def test_two_processes_racing_for_one_name(runtime_dir):
    # Several processes register the same name at once: exactly one wins, the others get AlreadyExists.
    code = ("import hms_ffi_native as hms, sys, time\n"
            "n = hms.Node('racer')\n"
            "try:\n"
            "    n.service('race.svc', '1.0.0'); print('won', flush=True); time.sleep(2)\n"
            "except hms.AlreadyExists:\n"
            "    print('lost', flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=child_env())
             for _ in range(6)]
    outs = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert sorted(outs) == ["lost"] * 5 + ["won"]


def test_cli_ls_and_call(server_process):
    server_process("echo")
    out = subprocess.run([sys.executable, "-m", "hms_ffi_native", "ls"], capture_output=True, text=True,
                         env=child_env(), timeout=30)
    assert out.returncode == 0 and "py.echo" in out.stdout and "1.0.0" in out.stdout
    out = subprocess.run([sys.executable, "-m", "hms_ffi_native", "ls", "--json"], capture_output=True, text=True,
                         env=child_env(), timeout=30)
    import json

    assert json.loads(out.stdout)[0]["name"] == "py.echo"
    out = subprocess.run([sys.executable, "-m", "hms_ffi_native", "call", "py.echo", "echo", '{"a": [1, 2]}'],
                         capture_output=True, text=True, env=child_env(), timeout=30)
    assert out.returncode == 0 and json.loads(out.stdout) == {"a": [1, 2]}
    out = subprocess.run([sys.executable, "-m", "hms_ffi_native", "call", "py.echo", "nope"],
                         capture_output=True, text=True, env=child_env(), timeout=30)
    assert out.returncode == 3 and "NOT_FOUND" in out.stderr  # 3: not found / unavailable
    out = subprocess.run([sys.executable, "-m", "hms_ffi_native", "call", "no.such", "f"],
                         capture_output=True, text=True, env=child_env(), timeout=30)
    assert out.returncode == 3 and "no live service" in out.stderr
