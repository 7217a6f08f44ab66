"""Access control, resource limits and the audit log (issue 6, items 3, 4 and 6; docs/security.md).

In-process tests use policies that match or do not match the current uid. The real-second-user tests
create temporary users and a group with useradd/groupadd (root only; skipped otherwise) and run a C
client (tests/c/hms_access_test.c, linked against the shipped library) as each of them.
"""
from __future__ import annotations

import asyncio
import glob
import grp
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import hms_ffi_native as hms
from hms_ffi_native import _paths

ROOT = Path(__file__).resolve().parent.parent
UID, GID = os.getuid(), os.getgid()
FIELDS = {"ts", "service", "function", "pid", "uid", "gid", "status", "code", "duration_us", "trace_id", "call_id",
          "decision"}


def records(path):
    out = []
    for p in sorted(glob.glob(path + "*")):
        with open(p) as f:
            out += [json.loads(line) for line in f]
    return out


def serve_echo(node, svc_name="acl.py", functions=("echo", "secret", "admin_only")):
    svc = node.service(svc_name, "1.0.0")
    for name in functions:
        svc.add_function(name, lambda x: x)
    node.start()
    return svc


# ---------------------------------------------------------------------------------------------- policy
def test_policy_matching_and_not_matching_the_current_uid(runtime_dir):
    policy = {
        "roles": {"admin": {"uids": [UID]}, "ops": {"gids": [4_000_001]}},
        "service": {"acl.py": {
            "uids": [UID],  # the service's rule: functions without their own
            "functions": {
                "secret": {"uids": [4_000_000], "gids": [4_000_002], "roles": ["ops"]},
                "admin_only": {"roles": ["admin"]},
            }}},
    }
    with hms.Node("acl", policy=policy) as node:
        serve_echo(node)
        with node.connect("acl.py") as c:
            assert c.call("echo", b"a") == b"a"
            assert c.call("admin_only", b"b") == b"b"  # through the role's uid
            with pytest.raises(hms.PermissionDenied) as ei:
                c.call("secret", b"c")
            assert ei.value.message == (f"uid {UID} (gid {GID}) may not call acl.py.secret; the policy allows uids "
                                        "[4000000], gids [4000001, 4000002], roles [ops]")
            assert ei.value.source == "remote"
            assert c.call("echo", b"d") == b"d"  # a refusal does not hurt the connection


def test_policy_file_toml_names_and_owner(runtime_dir, tmp_path):
    user, group = pwd.getpwuid(UID).pw_name, grp.getgrgid(GID).gr_name
    p = tmp_path / "policy.toml"
    p.write_text(f"""
[roles]
me = {{ uids = ["{user}"] }}

[defaults]
others = false                       # owner only, unless a service says otherwise

[service."acl.py".functions.secret]
gids = [4000000]

[service."acl.py".functions.admin_only]
roles = ["me"]
gids = ["{group}"]
""")
    pol = hms.load_policy(p)
    assert pol.access_for("acl.py", "admin_only")["uids"] == [UID]
    assert pol.access_for("acl.py", "admin_only")["gids"] == [GID]
    assert pol.access_for("other.svc", "x")["flags"] == hms._lib.HMS_ACCESS_OWNER
    with hms.Node("acl", policy=str(p)) as node:
        serve_echo(node)
        with node.connect("acl.py") as c:
            assert c.call("echo", b"x") == b"x"  # others = false: the owner (this uid) still may
            assert c.call("admin_only", b"x") == b"x"
            with pytest.raises(hms.PermissionDenied, match=r"may not call acl.py.secret; the policy allows uids \[\], "
                                                            r"gids \[4000000\], roles \[\]"):
                c.call("secret", b"x")


def test_gid_rules_use_kernel_groups(runtime_dir):
    with hms.Node("acl") as node:
        svc = serve_echo(node)
        svc.set_access("secret", gids=[GID])
        svc.set_access("admin_only", gids=[4_000_003], roles=["nobody"])
        with node.connect("acl.py") as c:
            assert c.call("secret", b"1") == b"1"
            with pytest.raises(hms.PermissionDenied, match=r"roles \[nobody\]"):
                c.call("admin_only", b"1")
            # rules change while serving: the connection re-evaluates before its next call
            svc.set_access("admin_only", anyone=True)
            assert c.call("admin_only", b"2") == b"2"
            svc.set_access("echo", owner=True)
            assert c.call("echo", b"3") == b"3"
            svc.set_access("echo", uids=[4_000_004])
            with pytest.raises(hms.PermissionDenied):
                c.call("echo", b"4")


@pytest.mark.parametrize("bad, msg", [
    ({"servce": {}}, "unknown key"),
    ({"service": {"a": {"uids": [1], "others": False}}}, "owner only"),
    ({"service": {"a": {"roles": ["ghost"]}}}, "role 'ghost'"),
    ({"service": {"a": {"uids": ["no-such-user-hms"]}}}, "does not exist"),
    ({"service": {"a": {"audit": "loud"}}}, "audit"),
    ({"service": {"a": {"max_inflight": -1}}}, "non-negative"),
    ({"service": {"a": {"functions": {"f": {"max_inflight": 1}}}}}, "unknown key"),
])
def test_bad_policies_are_refused_with_the_reason(bad, msg):
    with pytest.raises(hms.InvalidArgument, match=msg):
        hms.load_policy(bad)


def test_denied_calls_never_reach_the_handler_in_any_call_pattern(runtime_dir):
    ran = []
    with hms.Node("acl") as node:
        svc = node.service("acl.py", "1.0.0")
        svc.add_function("f", lambda x: ran.append(x))
        svc.add_function("gen", lambda x: (yield from [1, 2]))
        svc.add_batch_handler("f", lambda items: ran.extend(items))
        svc.add_function("ping", lambda x: b"pong")
        for name in ("f", "gen"):
            svc.set_access(name, uids=[4_000_000])
        node.start()
        with node.connect("acl.py") as c:
            with pytest.raises(hms.PermissionDenied):
                c.call_async("f", b"x").result(5)
            with pytest.raises(hms.PermissionDenied):
                list(c.stream("gen", None))
            out = c.batch([("f", b"1"), ("f", b"2")])
            assert all(isinstance(o, hms.PermissionDenied) for o in out)
            c.send_many("f", [b"a", b"b", b"c"])  # one-way: refused silently (nobody to tell) ...
            c.send("f", b"d")
            assert c.call("ping", b"", timeout=5) == b"pong"  # in order: the one-way calls were handled
            svc.set_access("f", anyone=True)
            c.send("f", b"allowed")
            deadline = time.monotonic() + 5
            while not ran and time.monotonic() < deadline:
                time.sleep(0.01)
        assert ran == [b"allowed"]  # ... but never run


# ---------------------------------------------------------------------------------------------- limits
def test_max_connections_refused_at_the_handshake(runtime_dir):
    with hms.Node("acl", policy={"service": {"acl.py": {"max_connections": 2}}}) as node:
        serve_echo(node)
        a, b = node.connect("acl.py"), node.connect("acl.py")
        with pytest.raises(hms.ResourceExhausted, match="acl.py allows at most 2 connections and has 2 open"):
            node.connect("acl.py")
        assert a.call("echo", b"1") == b"1" and b.call("echo", b"2") == b"2"  # the others go on
        a.close()
        deadline = time.monotonic() + 5
        while True:  # the server notices the close at its next look at the socket
            try:
                c = node.connect("acl.py")
                break
            except hms.ResourceExhausted:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert c.call("echo", b"3") == b"3"
        b.close()
        c.close()


def test_max_inflight_per_connection_others_unaffected(runtime_dir):
    with hms.Node("acl") as node:
        svc = node.service("acl.py", "1.0.0")
        gate = {}

        @svc.function()
        async def hold(x):
            await gate.setdefault("ev", asyncio.Event()).wait()
            return b"held"

        @svc.function()
        async def release(x):
            gate.setdefault("ev", asyncio.Event()).set()
            return b"ok"

        svc.set_limits(max_inflight=4)
        node.start()
        with node.connect("acl.py") as a, node.connect("acl.py") as b:
            futs = [a.call_async("hold", b"", timeout=10) for _ in range(10)]
            time.sleep(0.3)
            refused = [f for f in futs if f.done()]
            assert len(refused) == 6
            for f in refused:
                with pytest.raises(hms.ResourceExhausted, match="this connection has 4 calls in flight and acl.py "
                                                                "allows 4 per connection"):
                    f.result()
            assert b.call("release", b"", timeout=5) == b"ok"  # another connection is not affected
            assert [f.result(5) for f in futs if f not in refused] == [b"held"] * 4


def test_max_message_and_ring_quota(runtime_dir):
    policy = {"service": {"acl.py": {"max_message": 1000, "max_ring_bytes": 65536}}}
    with hms.Node("acl", policy=policy) as node:
        serve_echo(node)
        with node.connect("acl.py") as c:
            assert c.call("echo", b"x" * 1000) == b"x" * 1000
            with pytest.raises(hms.ResourceExhausted, match="request of 1001 bytes to acl.py.echo exceeds the "
                                                            "service's max message of 1000 bytes"):
                c.call("echo", b"x" * 1001)
            assert c.call("echo", b"y") == b"y"
        with pytest.raises(hms.ResourceExhausted, match="ring quota of 65536"):
            node.connect("acl.py", ring_bytes=1 << 20)
        with node.connect("acl.py", ring_bytes=65536) as c:
            assert c.call("echo", b"z") == b"z"


# ---------------------------------------------------------------------------------------------- audit
def test_audit_records_every_call_under_load(runtime_dir):
    log = os.path.join(runtime_dir, "audit.jsonl")
    n_calls = 50_000
    with hms.Node("acl", audit_log=log, audit_level="all", audit_queue=16384) as node:
        svc = serve_echo(node)
        svc.set_access("secret", uids=[4_000_000])
        with node.connect("acl.py") as c:
            sent = 0
            while sent < n_calls - 1000:
                out = c.batch([("echo", b"%d" % (sent + i)) for i in range(1000)], timeout=30)
                assert len(out) == 1000 and not any(isinstance(o, Exception) for o in out)
                sent += 1000
            futs = [c.call_async("echo", b"a", timeout=30) for _ in range(990)]
            [f.result() for f in futs]
            for _ in range(10):
                with pytest.raises(hms.PermissionDenied):
                    c.call("secret", b"")
        node.audit_flush(10)
        st = node.audit_stats()
    recs = records(log)
    assert st["dropped"] == 0 and st["write_errors"] == 0
    assert st["queued"] == st["written"] == n_calls == len(recs)
    assert all(set(r) == FIELDS for r in recs)
    assert len({r["call_id"] for r in recs}) == n_calls  # every call once
    allowed = [r for r in recs if r["decision"] == "allow"]
    denied = [r for r in recs if r["decision"] == "deny"]
    assert len(allowed) == n_calls - 10 and len(denied) == 10
    assert all(r["status"] == "OK" and r["code"] == 0 and r["function"] == "echo" for r in allowed)
    assert all(r["status"] == "PERMISSION_DENIED" and r["function"] == "secret" for r in denied)
    assert all(r["pid"] == os.getpid() and r["uid"] == UID and r["gid"] == GID for r in recs)
    assert all(r["duration_us"] >= 0 for r in recs) and all(r["ts"].endswith("Z") for r in recs)


def test_audit_level_deny_and_trace_id(runtime_dir):
    log = os.path.join(runtime_dir, "audit.jsonl")
    with hms.Node("acl", policy={"audit": {"path": log, "level": "deny"},
                                 "service": {"acl.py": {"functions": {"secret": {"uids": [4_000_000]},
                                                                      "admin_only": {"audit": "all"}}}}}) as node:
        serve_echo(node)
        with node.connect("acl.py") as c:
            c.call("echo", b"")
            c.call("admin_only", b"")
            tid = bytes(range(16))
            hms._lib.hms_set_thread_trace(tid, bytes(8), 1)
            try:
                with pytest.raises(hms.PermissionDenied):
                    c.call("secret", b"")
            finally:
                hms._lib.hms_set_thread_trace(hms._ffi.NULL, hms._ffi.NULL, 0)
        node.audit_flush()
    recs = records(log)
    assert [(r["function"], r["decision"]) for r in recs] == [("admin_only", "allow"), ("secret", "deny")]
    assert recs[1]["trace_id"] == tid.hex() and recs[0]["trace_id"] is None


def test_async_handlers_are_recorded_with_their_final_status(runtime_dir):
    log = os.path.join(runtime_dir, "audit.jsonl")
    with hms.Node("acl", audit_log=log, audit_level="all") as node:
        svc = node.service("acl.py", "1.0.0")

        @svc.function()
        async def slow(x):
            await asyncio.sleep(0.05)
            if x == b"bad":
                raise hms.InvalidArgument("bad input")
            return x

        node.start()
        with node.connect("acl.py") as c:
            assert c.call("slow", b"ok", timeout=5) == b"ok"
            with pytest.raises(hms.InvalidArgument):
                c.call("slow", b"bad", timeout=5)
        node.audit_flush()
    recs = records(log)
    assert [(r["status"], r["decision"]) for r in recs] == [("OK", "allow"), ("INVALID_ARGUMENT", "allow")]
    assert all(r["duration_us"] >= 40_000 for r in recs)  # measured to the deferred answer


def test_full_audit_queue_is_reported_with_its_count(runtime_dir):
    fifo = os.path.join(runtime_dir, "audit.fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that does not read yet: a stalled disk
    chunks, stop = [], threading.Event()
    n_calls = 3000
    try:
        with hms.Node("acl", audit_log=fifo, audit_level="all", audit_queue=16) as node:
            serve_echo(node)
            with node.connect("acl.py") as c:
                for i in range(0, n_calls, 500):
                    c.batch([("echo", b"") for _ in range(500)], timeout=30)
                st = node.audit_stats()
                assert st["dropped"] > 0, st  # the pipe (64 KiB) and the queue (16) are full
                assert st["queued"] + st["dropped"] == n_calls  # every record is written or counted

                def drain():
                    while not stop.is_set():
                        try:
                            b = os.read(rfd, 1 << 16)
                            if b:
                                chunks.append(b)
                                continue
                        except BlockingIOError:
                            pass
                        time.sleep(0.005)

                t = threading.Thread(target=drain)
                t.start()
                node.audit_flush(10)
                c.call("echo", b"")  # space again: this one is recorded
                node.audit_flush(10)
                st = node.audit_stats()
            node_dropped = st["dropped"]
        time.sleep(0.1)
        stop.set()
        t.join()
        while True:
            try:
                b = os.read(rfd, 1 << 16)
            except BlockingIOError:
                break
            if not b:
                break
            chunks.append(b)
    finally:
        stop.set()
        os.close(rfd)
    lines = [json.loads(x) for x in b"".join(chunks).decode().splitlines()]
    calls = [r for r in lines if "event" not in r]
    drops = [r for r in lines if r.get("event") == "audit_dropped"]
    assert drops, "the drop count was never written"
    assert sum(d["count"] for d in drops) == node_dropped == drops[-1]["total"]
    assert len(calls) + node_dropped == n_calls + 1
    assert lines.index(drops[0]) < len(lines) - 1  # reported once there was room, before later records


def test_audit_rotation_keeps_n_files(runtime_dir):
    log = os.path.join(runtime_dir, "audit.jsonl")
    with hms.Node("acl", audit_log=log, audit_level="all", audit_max_bytes=4096, audit_keep=3) as node:
        serve_echo(node)
        with node.connect("acl.py") as c:
            for _ in range(10):
                c.batch([("echo", b"") for _ in range(30)])
        node.audit_flush()
        st = node.audit_stats()
    files = sorted(glob.glob(log + "*"))
    assert files == [log, log + ".1", log + ".2", log + ".3"]
    assert st["rotations"] >= 3 and st["written"] == 300
    for f in files:
        assert os.path.getsize(f) <= 4096
        with open(f) as fh:
            lines = [json.loads(x) for x in fh]  # whole lines only: never split across files
        assert lines and all(r["function"] == "echo" for r in lines)
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    ts = [json.loads(x)["ts"] for f in [log + ".3", log + ".2", log + ".1", log] for x in open(f)]
    assert ts == sorted(ts)  # oldest in .3, newest in the live file


def test_audit_errors_are_explained(runtime_dir):
    with pytest.raises(hms.FailedPrecondition, match="cannot open the audit log"):
        hms.Node("acl", audit_log="/nonexistent-dir/audit.jsonl")
    with pytest.raises(hms.InvalidArgument, match="audit_level"):
        hms.Node("acl", audit_log=os.path.join(runtime_dir, "a"), audit_level="everything")
    with hms.Node("acl") as node, pytest.raises(hms.FailedPrecondition, match="no audit log"):
        node.audit_stats()


# ---------------------------------------------------------------------------------------------- real users
def _root_and_tools():
    if os.geteuid() != 0:
        return "needs root: the test creates temporary users and a group with useradd/groupadd"
    for tool in ("useradd", "userdel", "groupadd", "groupdel"):
        if shutil.which(tool) is None:
            return f"needs {tool} (package passwd/shadow-utils)"
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return "needs a C compiler to build the second users' client (tests/c/hms_access_test.c)"
    return None


@pytest.fixture
def second_users():
    reason = _root_and_tools()
    if reason:
        pytest.skip(reason)
    tag = secrets.token_hex(3)
    group, users = f"hmsg{tag}", [f"hmsa{tag}", f"hmsb{tag}", f"hmsc{tag}"]
    made_users, made_group = [], False
    try:
        subprocess.run(["groupadd", group], check=True, capture_output=True)
        made_group = True
        for i, u in enumerate(users):
            extra = ["-G", group] if i < 2 else []  # the third is not in the group
            subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", "-N", *extra, u], check=True,
                           capture_output=True)
            made_users.append(u)
        yield grp.getgrnam(group).gr_gid, [pwd.getpwnam(u) for u in users]
    finally:
        for u in made_users:
            subprocess.run(["userdel", u], capture_output=True)
        if made_group:
            subprocess.run(["groupdel", group], capture_output=True)


@pytest.fixture
def client_exe():
    d = tempfile.mkdtemp(prefix="hmsacl-", dir="/tmp")
    os.chmod(d, 0o755)  # the second users run it
    exe = os.path.join(d, "hms_access_test")
    # The shipped library may sit where the second users cannot read (a 0700 venv or home): run them
    # against a copy next to the program.
    shutil.copy2(_paths.libdir() / "libhms_ffi.so", d)
    os.chmod(os.path.join(d, "libhms_ffi.so"), 0o755)
    subprocess.run([os.environ.get("CC", "cc"), "-std=gnu11", "-O1", f"-I{_paths.includedir()}",
                    str(ROOT / "tests" / "c" / "hms_access_test.c"), "-o", exe, f"-L{d}",
                    f"-Wl,-rpath,{d}", "-lhms_ffi"], check=True, capture_output=True, text=True)
    yield exe
    shutil.rmtree(d, ignore_errors=True)


def _call_as(exe, user, rdir, fn, gid_extra=None):
    groups = [g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem]
    r = subprocess.run([exe, "call", "acl.users", fn], capture_output=True, text=True, timeout=30,
                       user=user.pw_uid, group=user.pw_gid, extra_groups=groups,
                       env={"HMS_FFI_RUNTIME_DIR": rdir, "PATH": "/usr/bin:/bin"}, cwd="/")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_real_second_users_policy_and_group_socket(second_users, client_exe):
    gid, (alice, bob, carol) = second_users
    rdir = tempfile.mkdtemp(prefix="hmsu-", dir="/tmp")  # every parent lets the group through
    log = os.path.join(rdir, "audit.jsonl")
    try:
        policy = {"audit": {"path": log, "level": "deny"},
                  "service": {"acl.users": {"group": gid, "functions": {
                      "echo": {"uids": [alice.pw_uid]},
                      "team": {"gids": [gid]},
                      "root_only": {"others": False}}}}}
        with hms.Node("acl", runtime_dir=rdir, policy=policy) as node:
            svc = node.service("acl.users", "1.0.0")
            for name in ("echo", "team", "root_only"):
                svc.add_function(name, lambda x: b"hi")
            node.start()
            sock = os.path.join(rdir, "acl.users@1.0.0.sock")
            s, m, d = os.stat(sock), os.stat(sock[:-5] + ".meta"), os.stat(rdir)
            assert (stat.S_IMODE(s.st_mode), s.st_gid) == (0o660, gid)
            assert (stat.S_IMODE(m.st_mode), m.st_gid) == (0o640, gid)
            assert (stat.S_IMODE(d.st_mode), d.st_gid) == (0o750, gid)

            assert _call_as(client_exe, alice, rdir, "echo") == "OK 2"
            out = _call_as(client_exe, bob, rdir, "echo")
            assert out == (f"ERROR PERMISSION_DENIED uid {bob.pw_uid} (gid {bob.pw_gid}) may not call acl.users.echo; "
                           f"the policy allows uids [{alice.pw_uid}], gids [], roles []")
            # a supplementary group (the kernel's SO_PEERGROUPS), not the primary one
            assert _call_as(client_exe, bob, rdir, "team") == "OK 2"
            assert _call_as(client_exe, alice, rdir, "root_only").startswith(
                f"ERROR PERMISSION_DENIED uid {alice.pw_uid}")
            assert node.connect("acl.users").call("root_only", b"") == b"hi"
            # not in the group: cannot even read the directory or reach the socket
            out = _call_as(client_exe, carol, rdir, "team")
            assert out.startswith("ERROR") and "Permission denied" in out, out
            node.audit_flush()
        recs = records(log)
        assert {(r["uid"], r["function"], r["decision"]) for r in recs} == {
            (bob.pw_uid, "echo", "deny"), (alice.pw_uid, "root_only", "deny")}
    finally:
        shutil.rmtree(rdir, ignore_errors=True)


def test_real_second_user_cannot_reach_a_service_not_opened(second_users, client_exe):
    gid, (alice, _, _) = second_users
    rdir = tempfile.mkdtemp(prefix="hmsu-", dir="/tmp")
    try:
        with hms.Node("acl", runtime_dir=rdir) as node:
            node.service("acl.users", "1.0.0").add_function("echo", lambda x: b"hi")
            node.start()
            assert stat.S_IMODE(os.stat(rdir).st_mode) == 0o700
            out = _call_as(client_exe, alice, rdir, "echo")
            assert out.startswith("ERROR") and "Permission denied" in out, out
    finally:
        shutil.rmtree(rdir, ignore_errors=True)
