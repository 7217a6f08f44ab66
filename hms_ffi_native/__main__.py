"""Command line: `hms-ffi` / `python -m hms_ffi_native`.

    hms-ffi --libdir | --includedir | --pkgconfig-dir | --version
    hms-ffi ls [--json]                     live services: version, pid, node, clients, calls, errors, functions
    hms-ffi call SERVICE FUNCTION [JSON] [--timeout S] [--json]
                                            call a function with a JSON payload (sent as CBOR), print the reply
    hms-ffi stats [SERVICE] [--json | --prometheus]
                                            per-function counters, errors by status, latency percentiles
    hms-ffi top [SERVICE] [--interval S] [--once | --iterations N]
                                            live calls/s and p50/p99 per function (q quits)
    hms-ffi doctor [--json]                 checks this machine: memfd seals, runtime dir, RemoveIPC, ABI, ...
    hms-ffi bench [--quick] [--builtin] [-n N]   the side-by-side latency comparison
    hms-ffi demo [--frontend go|python] [-n N]   the order flow: a Python OMS and a Go (or Python) front end
    hms-ffi gateway --listen HOST:PORT [--tls-cert F --tls-key F [--tls-client-ca F]] [--insecure]
                                            serve this host's services to other hosts over gRPC
    hms-ffi codegen FILE.proto... [-I DIR] [--out DIR] [--lang python,go,rust]
                                            typed clients and server base classes (docs/idl.md)

Exit codes: 0 ok; 1 the operation failed (the status name is printed; doctor: a check failed);
2 usage error; 3 the service (or function) was not found or is unavailable.
"""
from __future__ import annotations

import argparse
import json
import sys


# Exit codes of ls/call/stats/top/doctor/bench (docstring above).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3


def _fmt_ns(ns) -> str:
    if ns is None:
        return "-"
    if ns < 1_000:
        return f"{ns:.0f}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f}ms"
    return f"{ns / 1e9:.2f}s"


def _fmt_n(n) -> str:
    if n is None:
        return "-"
    if isinstance(n, float):
        return f"{n:,.1f}" if n < 100 else f"{n:,.0f}"
    return f"{n:,}"


def _table(rows, right=()) -> str:
    """Rows of strings as aligned columns (columns in `right` right-aligned); the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _open_view(name: str, version: str, runtime_dir, timeout: float):
    from ._stats import StatsView

    return StatsView(name, version, runtime_dir=runtime_dir, timeout=timeout)


def _service_stats(s, runtime_dir, timeout: float = 0.5):
    """A snapshot of one listed service, or None (a server that predates stats, or a busy one)."""
    from ._errors import FFIError

    try:
        with _open_view(s.name, f"={s.version}", runtime_dir, timeout) as v:
            return v.snapshot()
    except FFIError:
        return None


def _ls(args) -> int:
    import hms_ffi_native as hms

    services = hms.list_services(args.runtime_dir)
    rows = []
    for s in services:
        st = _service_stats(s, args.runtime_dir)
        fns = st["functions"] if st else {}
        rows.append({"name": s.name, "version": s.version, "pid": s.pid, "node": s.node, "uid": s.uid,
                     "functions": sorted(s.functions),
                     "clients": st["connections"] if st else None,
                     "calls": sum(f["calls"] for f in fns.values()) if st else None,
                     "errors": sum(f["errors"] for f in fns.values()) if st else None,
                     "in_flight": sum(f["in_flight"] for f in fns.values()) if st else None})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no services in {args.runtime_dir or hms.default_runtime_dir()}")
        return EXIT_OK
    table = [("SERVICE", "VERSION", "PID", "NODE", "CLIENTS", "CALLS", "ERRORS", "FUNCTIONS")]
    for r in rows:
        table.append((r["name"], r["version"], str(r["pid"]), r["node"], _fmt_n(r["clients"]), _fmt_n(r["calls"]),
                      _fmt_n(r["errors"]), ", ".join(r["functions"])))
    print(_table(table, right={2, 4, 5, 6}))
    return EXIT_OK


def _call(args) -> int:
    import hms_ffi_native as hms

    try:
        payload = json.loads(args.payload) if args.payload is not None else None
    except ValueError as e:
        print(f"hms-ffi call: the payload is not valid JSON ({e}); quote it for the shell, e.g. '{{\"id\": 1}}'",
              file=sys.stderr)
        return EXIT_USAGE
    if args.timeout is not None and args.timeout < 0:
        print("hms-ffi call: --timeout must be >= 0 seconds", file=sys.stderr)
        return EXIT_USAGE
    try:
        c = hms.connect(args.service, args.version, runtime_dir=args.runtime_dir,
                        timeout=min(args.timeout, 5.0) if args.timeout else 5.0)
    except (hms.NotFound, hms.Unavailable, hms.DeadlineExceeded) as e:
        return _call_error(args, e, EXIT_NOT_FOUND)
    with c:
        if args.function not in c.functions:
            known = ", ".join(sorted(c.functions)) or "none"
            return _call_error(args, hms.NotFound(f"{args.service}@{c.version} has no function {args.function!r} "
                                                  f"(it has: {known})"), EXIT_NOT_FOUND)
        try:
            reply = c.call(args.function, payload, timeout=args.timeout)
        except hms.FFIError as e:
            lost = isinstance(e, hms.Unavailable) and e.source == "local"  # the server went away
            return _call_error(args, e, EXIT_NOT_FOUND if lost else EXIT_FAILED)
    if args.json:
        print(json.dumps({"ok": True, "reply": reply.hex() if isinstance(reply, bytes) else reply}, default=str))
    elif isinstance(reply, bytes):
        print(reply.hex())
    else:
        print(json.dumps(reply, indent=2, default=str))
    return EXIT_OK


def _call_error(args, e, code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "status": e.status, "code": e.code, "message": e.message,
                          "details": e.details, "source": e.source}, default=str))
    else:
        print(f"hms-ffi call: {e.status}: {e.message}", file=sys.stderr)
        if e.details is not None:
            print(f"details: {json.dumps(e.details, default=str)}", file=sys.stderr)
    return code


def _targets(args):
    """(name, version requirement) of the services a stats/top command looks at."""
    import hms_ffi_native as hms

    if args.service:
        return [(args.service, args.version)]
    return [(s.name, f"={s.version}") for s in hms.list_services(args.runtime_dir)]


def _stats_rows(snap, rates=None):
    rows = [("FUNCTION", "CALLS", "ERRORS", "IN-FLIGHT", "P50", "P99", "MAX", "BYTES-IN", "BYTES-OUT", "STATUS")]
    right = {1, 2, 3, 4, 5, 6, 7, 8}
    if rates is not None:
        rows = [("FUNCTION", "CALLS/S", "ERRORS/S", "IN-FLIGHT", "P50", "P99", "CALLS", "ERRORS", "STATUS")]
        right = {1, 2, 3, 4, 5, 6, 7}
    for name, f in sorted(snap["functions"].items()):
        lat = f["latency"]
        status = " ".join(f"{k}={v}" for k, v in sorted(f["status"].items()) if k != "OK") or "-"
        if rates is None:
            rows.append((name, _fmt_n(f["calls"]), _fmt_n(f["errors"]), _fmt_n(f["in_flight"]),
                         _fmt_ns(lat["p50_ns"]), _fmt_ns(lat["p99_ns"]), _fmt_ns(lat["max_ns"] if lat["count"] else None),
                         _fmt_n(f["bytes_in"]), _fmt_n(f["bytes_out"]), status))
        else:
            r = rates.get(name, {})
            rows.append((name, _fmt_n(r.get("calls_per_s", 0.0)), _fmt_n(r.get("errors_per_s", 0.0)),
                         _fmt_n(f["in_flight"]), _fmt_ns(r.get("p50_ns")), _fmt_ns(r.get("p99_ns")),
                         _fmt_n(f["calls"]), _fmt_n(f["errors"]), status))
    return rows, right


def _service_line(snap) -> str:
    state = "" if snap["alive"] else "  (gone: last counters)"
    return (f"{snap['service']}@{snap['version']}  pid {snap['pid']}  node {snap['node']}  "
            f"clients {snap['connections']} ({snap['connections_total']} ever)  up {snap['uptime_s']:.0f}s{state}")


def _stats(args) -> int:
    from ._errors import FFIError
    from ._stats import prometheus_text

    snaps, failed = [], []
    for name, version in _targets(args):
        try:
            with _open_view(name, version, args.runtime_dir, args.timeout) as v:
                snaps.append(v.snapshot())
        except FFIError as e:
            failed.append((name, e))
    for name, e in failed:
        print(f"hms-ffi stats: {name}: {e.status}: {e.message}", file=sys.stderr)
    if args.service and failed:
        return EXIT_NOT_FOUND if failed[0][1].status in ("NOT_FOUND", "UNAVAILABLE", "DEADLINE_EXCEEDED") else EXIT_FAILED
    if args.prometheus:
        sys.stdout.write(prometheus_text(snaps))
    elif args.json:
        print(json.dumps(snaps if not args.service else snaps[0], indent=2))
    elif not snaps:
        print("no services")
    else:
        for i, snap in enumerate(snaps):
            if i:
                print()
            print(_service_line(snap))
            rows, right = _stats_rows(snap)
            print(_table(rows, right) if len(rows) > 1 else "  (no functions)")
    return EXIT_OK


def _top(args) -> int:
    import select
    import time

    from ._errors import FFIError
    from ._stats import rates as _rates

    if args.interval <= 0:
        print("hms-ffi top: --interval must be > 0 seconds", file=sys.stderr)
        return EXIT_USAGE
    views, prev = {}, {}
    iterations = 1 if args.once else args.iterations
    interactive = iterations is None and sys.stdin.isatty() and sys.stdout.isatty()
    tty_state = None
    if interactive:
        import termios
        import tty

        tty_state = termios.tcgetattr(sys.stdin)
        tty.setcbreak(sys.stdin.fileno())

    def refresh_views():
        for key in _targets(args):
            if key not in views:
                try:
                    views[key] = _open_view(key[0], key[1], args.runtime_dir, 0.5)
                    prev[key] = views[key].snapshot()
                except FFIError as e:
                    if args.service:
                        raise
                    print(f"hms-ffi top: {key[0]}: {e.status}: {e.message}", file=sys.stderr)

    try:
        try:
            refresh_views()
        except FFIError as e:
            print(f"hms-ffi top: {e.status}: {e.message}", file=sys.stderr)
            return EXIT_NOT_FOUND
        done = 0
        while iterations is None or done < iterations:
            if interactive:
                r, _, _ = select.select([sys.stdin], [], [], args.interval)
                if r and sys.stdin.read(1) in ("q", "Q"):
                    break
            else:
                time.sleep(args.interval)
            frames = []
            for key, v in list(views.items()):
                cur = v.snapshot()
                rows, right = _stats_rows(cur, _rates(prev[key], cur))
                prev[key] = cur
                frames.append(_service_line(cur) + "\n" + (_table(rows, right) if len(rows) > 1 else "  (no functions)"))
            head = f"hms-ffi top — every {args.interval:g}s" + ("  (q quits)" if interactive else "")
            text = head + "\n\n" + ("\n\n".join(frames) if frames else "no services")
            if interactive:
                sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
            else:
                sys.stdout.write(text + "\n")
            sys.stdout.flush()
            done += 1
            if not args.service and done % 5 == 0:
                refresh_views()  # services that appeared meanwhile
    except KeyboardInterrupt:
        pass
    finally:
        if tty_state is not None:
            import termios

            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, tty_state)
        for v in views.values():
            v.close()
    return EXIT_OK


def _check_shm():
    import os

    if not os.path.isdir("/dev/shm"):
        return ("ok", "no /dev/shm: not needed by hms-ffi (it maps memfds, never files in /dev/shm)",
                "other shared-memory libraries (multiprocessing) may need it: mount a tmpfs there")
    st = os.statvfs("/dev/shm")
    size = st.f_frsize * st.f_blocks
    writable = os.access("/dev/shm", os.W_OK)
    detail = f"{size / 2**20:.0f} MiB tmpfs, {'writable' if writable else 'not writable'}; hms-ffi does not use it"
    if size < 64 << 20 or not writable:
        return ("warn", detail + " (small or read-only: a container's default)",
                "hms-ffi is unaffected; for other libraries run the container with --shm-size=256m or more")
    return ("ok", detail, "")


def _check_memfd():
    import errno
    import fcntl
    import mmap
    import os

    if not hasattr(os, "memfd_create"):
        return ("fail", "os.memfd_create is missing (not Linux?)", "hms-ffi needs Linux >= 5.1")
    try:
        fd = os.memfd_create("hms-ffi-doctor", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError as e:
        return ("fail", f"memfd_create failed: {e.strerror}",
                "allow memfd_create (seccomp profile of the container/sandbox) or use a newer kernel")
    try:
        os.ftruncate(fd, 4096)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        future_write = 0x0010  # F_SEAL_FUTURE_WRITE (Linux >= 5.1)
        try:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, future_write)
        except OSError as e:
            m.close()
            return ("fail", f"F_SEAL_FUTURE_WRITE refused ({e.strerror}): kernel {os.uname().release} is older "
                            "than 5.1", "topics and stats need Linux >= 5.1; calls work without it")
        try:
            mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE).close()
            m.close()
            return ("fail", "a memfd sealed F_SEAL_FUTURE_WRITE can still be mapped writable",
                    "this kernel ignores the seal: readers could write our memory; upgrade the kernel")
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EACCES):
                raise
        m[0:1] = b"x"  # our own mapping stays writable
        m.close()
    except OSError as e:
        return ("fail", f"memfd sealing failed: {e.strerror}", "hms-ffi needs memfd sealing (Linux >= 5.1)")
    finally:
        os.close(fd)
    return ("ok", f"memfd_create, sealing and F_SEAL_FUTURE_WRITE work (kernel {os.uname().release})", "")


def _check_runtime_dir(runtime_dir):
    import os
    import stat

    import hms_ffi_native as hms

    d = runtime_dir or hms.default_runtime_dir()
    if not os.path.exists(d):
        parent = os.path.dirname(d.rstrip("/")) or "/"
        if os.access(parent, os.W_OK | os.X_OK):
            return ("ok", f"{d} does not exist yet; it is created (mode 0700) when a node opens", "")
        return ("fail", f"{d} does not exist and {parent} is not writable",
                f"set HMS_FFI_RUNTIME_DIR to a directory you own, or create {d} with mode 0700")
    st = os.stat(d)
    problems = []
    if not stat.S_ISDIR(st.st_mode):
        problems.append("is not a directory")
    if st.st_uid != os.geteuid():
        problems.append(f"belongs to uid {st.st_uid}, not to you ({os.geteuid()})")
    if st.st_mode & 0o077:
        problems.append(f"mode {stat.S_IMODE(st.st_mode):o} lets others in")
    if not os.access(d, os.W_OK | os.X_OK):
        problems.append("is not writable")
    if problems:
        return ("fail", f"{d} " + "; ".join(problems),
                f"chmod 700 {d} (and chown it to yourself), or set HMS_FFI_RUNTIME_DIR to a private directory")
    return ("ok", f"{d} (mode {stat.S_IMODE(st.st_mode):o}, yours)", "")


def _check_remove_ipc(runtime_dir):
    import glob
    import os
    import re

    import hms_ffi_native as hms

    files = ["/etc/systemd/logind.conf", *sorted(glob.glob("/etc/systemd/logind.conf.d/*.conf")),
             *sorted(glob.glob("/run/systemd/logind.conf.d/*.conf"))]
    value, source = None, None
    for f in files:
        try:
            text = open(f, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        for m in re.finditer(r"^\s*RemoveIPC\s*=\s*(\S+)", text, re.M):
            value, source = m.group(1).lower(), f
    if value is None and not os.path.isdir("/run/systemd/system"):
        return ("ok", "systemd-logind is not running here: RemoveIPC does not apply", "")
    remove = value in (None, "yes", "true", "1", "on")  # logind's default is yes
    where = f"RemoveIPC={value} in {source}" if value else "RemoveIPC not set (logind's default: yes)"
    d = runtime_dir or hms.default_runtime_dir()
    uid = os.geteuid()
    if not remove:
        return ("ok", where, "")
    if uid < 1000:
        return ("ok", f"{where}; it spares system users (uid {uid})", "")
    in_user_run = d.startswith(f"/run/user/{uid}")
    return ("warn", f"{where}: when your last login session ends, logind removes your IPC objects"
            + (f" and {d} with /run/user/{uid}" if in_user_run else ""),
            "for services that outlive a login: `loginctl enable-linger`, a system user, RemoveIPC=no, or "
            "HMS_FFI_RUNTIME_DIR outside /run/user")


def _check_abi():
    import ctypes

    from . import _paths
    from ._native import ffi, lib

    header_abi = lib.HMS_FFI_ABI_VERSION
    built = lib.hms_abi_version()
    version = ffi.string(lib.hms_version_string()).decode()
    if built != header_abi:
        return ("fail", f"the Python extension's C library has ABI {built}, its header {header_abi}",
                "reinstall hms-ffi-native so both come from one build")
    try:
        so = _paths.libdir() / "libhms_ffi.so"
        shipped = ctypes.CDLL(str(so))
        shipped.hms_abi_version.restype = ctypes.c_uint32
        shipped.hms_version_string.restype = ctypes.c_char_p
        sabi, sver = shipped.hms_abi_version(), shipped.hms_version_string().decode()
    except (OSError, FileNotFoundError, AttributeError) as e:
        return ("warn", f"Python bindings ABI {built} ({version}); the shipped libhms_ffi.so could not be loaded: {e}",
                "C/Go/Rust/PHP programs link that library: reinstall the package (or build it: "
                "python setup.py build_ext --inplace)")
    if sabi != built or sver != version:
        return ("fail", f"libhms_ffi.so ({so}) is ABI {sabi} / {sver} but the Python extension is ABI {built} / "
                        f"{version}", "reinstall the package so the library and the extension match")
    return ("ok", f"ABI {built}, version {version}, libhms_ffi.so at {so}", "")


def _check_proc_and_fds():
    import os
    import resource

    problems = []
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        problems.append("no /proc: dead services are detected by kill(0) only (pid reuse goes unnoticed)")
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 1024:
        problems.append(f"open-file limit {soft} (each connection takes 3-4 descriptors)")
    if problems:
        return ("warn", "; ".join(problems), "ulimit -n 4096 (or more) for busy services; mount /proc")
    return ("ok", f"/proc mounted, open-file limit {'unlimited' if soft == resource.RLIM_INFINITY else soft}", "")


def _run_checks(runtime_dir):
    checks = [("/dev/shm", _check_shm), ("memfd + seals", _check_memfd),
              ("runtime directory", lambda: _check_runtime_dir(runtime_dir)),
              ("systemd RemoveIPC", lambda: _check_remove_ipc(runtime_dir)),
              ("library ABI", _check_abi), ("/proc, descriptors", _check_proc_and_fds)]
    results = []
    for name, fn in checks:
        try:
            result, detail, fix = fn()
        except Exception as e:  # a check that breaks says so instead of hiding the others
            result, detail, fix = "fail", f"the check itself failed: {type(e).__name__}: {e}", "report this"
        results.append((name, result, detail, fix))
    return results


def _doctor(args) -> int:
    results = _run_checks(args.runtime_dir)
    if args.json:
        print(json.dumps([{"check": n, "result": r, "detail": d, "fix": f} for n, r, d, f in results], indent=2))
    else:
        width = max(len(n) for n, _, _, _ in results)
        for name, result, detail, fix in results:
            print(f"{result.upper():4}  {name.ljust(width)}  {detail}")
            if fix and result != "ok":
                print(f"{'':4}  {'':{width}}  fix: {fix}")
    return EXIT_FAILED if any(r == "fail" for _, r, _, _ in results) else EXIT_OK


class _Progress:
    """A progress bar on stderr (only when it is a terminal, or when forced for tests)."""

    def __init__(self, label: str, total: int, force: bool = False) -> None:
        self.label, self.total, self.done = label, max(1, total), 0
        self.on = force or sys.stderr.isatty()

    def update(self, done: int) -> None:
        self.done = done
        if self.on:
            frac = min(1.0, done / self.total)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{self.label:<24} [{bar:<30}] {frac * 100:5.1f}%")
            sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _bench_builtin(args) -> int:
    """64-byte echo round trips: hms-ffi Python <-> Python (a server in a child process) beside a
    multiprocessing.Pipe echo, per-call times with perf_counter_ns."""
    import multiprocessing as mp
    import statistics
    import subprocess
    import tempfile
    import time

    import hms_ffi_native as hms

    n = args.n
    payload = b"x" * 64
    results = []
    with tempfile.TemporaryDirectory(prefix="hms-bench-") as rt:
        code = ("import hms_ffi_native as h,sys\nn=h.Node('bench-srv',runtime_dir=sys.argv[1])\n"
                "s=n.service('hms.bench.echo','1.0.0')\ns.add_function('echo',lambda x:x)\n"
                "print('ready',flush=True)\nn.serve()\n")
        srv = subprocess.Popen([sys.executable, "-c", code, rt], stdout=subprocess.PIPE, text=True)
        try:
            if srv.stdout.readline().strip() != "ready":
                print("hms-ffi bench: the echo server did not start", file=sys.stderr)
                return EXIT_FAILED
            with hms.connect("hms.bench.echo", runtime_dir=rt) as c:
                results.append(("hms-ffi Py<->Py", _timed(lambda: c.call("echo", payload), n, "hms-ffi", args)))
        finally:
            srv.terminate()
            srv.wait(5)
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_pipe_echo, args=(child,), daemon=True)
    proc.start()
    try:
        def rt_pipe():
            parent.send_bytes(payload)
            parent.recv_bytes()
        results.append(("multiprocessing.Pipe", _timed(rt_pipe, n, "multiprocessing.Pipe", args)))
    finally:
        parent.send_bytes(b"")
        proc.join(5)
    base = statistics.median(results[0][1])
    rows = [("TRANSPORT", "P50", "P99", "CALLS/S", "P50 VS HMS-FFI")]
    out = []
    for name, times in results:
        times.sort()
        p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
        rate = len(times) / (sum(times) / 1e9)
        out.append({"transport": name, "p50_ns": p50, "p99_ns": p99, "calls_per_s": rate})
        rows.append((name, _fmt_ns(p50), _fmt_ns(p99), f"{rate:,.0f}", f"{p50 / base:.2f}x"))
    if args.json:
        print(json.dumps({"n": n, "payload_bytes": 64, "rows": out}, indent=2))
    else:
        print(f"64-byte echo round trips, {n} calls each (hms-ffi bench; the full comparison runs from a source "
              f"checkout: bench/compare.py)")
        print(_table(rows, right={1, 2, 3, 4}))
    return EXIT_OK


def _pipe_echo(conn) -> None:
    while True:
        b = conn.recv_bytes()
        if not b:
            return
        conn.send_bytes(b)


def _timed(fn, n: int, label: str, args):
    import gc
    import time

    for _ in range(n // 10 + 100):  # warm-up
        fn()
    bar = _Progress(label, n, force=args.progress)
    times = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        step = max(1, n // 100)
        for i in range(n):
            t = clock()
            fn()
            times.append(clock() - t)
            if i % step == 0:
                bar.update(i)
        bar.update(n)
    finally:
        gc.enable()
        bar.close()
    return times


def _bench(args) -> int:
    import subprocess
    from pathlib import Path

    compare = Path(__file__).resolve().parent.parent / "bench" / "compare.py"
    if args.builtin or not compare.is_file():
        return _bench_builtin(args)
    # A source checkout: the full side-by-side comparison. Its lines pass through; the bar counts them.
    cmd = [sys.executable, str(compare), *(["--quick"] if args.quick else []), *args.compare_args]
    bar = _Progress("bench/compare.py", 0, force=args.progress)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
    lines = 0
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines += 1
            if bar.on:
                sys.stderr.write(f"\r{'bench/compare.py':<24} running, {lines} lines of output")
                sys.stderr.flush()
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(10)
        rc = 130
    bar.close()
    return EXIT_OK if rc == 0 else EXIT_FAILED


def _gateway(args) -> int:
    from .gateway import GatewayConfigError, serve

    try:
        serve(args.listen, runtime_dir=args.runtime_dir, tls_cert=args.tls_cert, tls_key=args.tls_key,
              tls_client_ca=args.tls_client_ca, insecure=args.insecure, max_workers=args.max_workers,
              max_message=args.max_message)
    except GatewayConfigError as e:
        print(f"hms-ffi gateway: {e.message}", file=sys.stderr)
        return 2
    return 0


def _codegen(args) -> int:
    from .codegen import CodegenError, generate

    langs = [x.strip() for x in args.lang.split(",") if x.strip()]
    try:
        written = generate(args.protos, args.include, args.out, langs)
    except CodegenError as e:
        print(f"hms-ffi codegen: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


def _versions() -> tuple:
    """(package version, ABI version) from the header shipped next to this package -- the header is
    where both are written down (setup.py reads the version from it) -- without loading _native."""
    import re

    from . import _paths

    text = _paths.header_path().read_text(encoding="utf-8")

    def define(name: str) -> str:
        m = re.search(rf"^[ \t]*#[ \t]*define[ \t]+{name}[ \t]+([0-9]+)\b", text, re.M)
        if not m:
            raise LookupError(f"{name} not found in {_paths.header_path()}")
        return m.group(1)

    version = ".".join(define(f"HMS_FFI_VERSION_{part}") for part in ("MAJOR", "MINOR", "PATCH"))
    return version, int(define("HMS_FFI_ABI_VERSION"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="hms-ffi", description="hms-ffi-native: cross-process calls over shared memory")
    p.add_argument("--libdir", action="store_true", help="print the directory holding libhms_ffi.so")
    p.add_argument("--includedir", action="store_true", help="print the directory holding hms_ffi/hms_ffi.h")
    p.add_argument("--pkgconfig-dir", action="store_true", help="print the directory holding hms_ffi.pc")
    p.add_argument("--version", dest="show_version", action="store_true", help="print the package and ABI version")
    p.add_argument("--runtime-dir", default=None, help="runtime directory (default: $HMS_FFI_RUNTIME_DIR, ...)")
    sub = p.add_subparsers(dest="cmd")
    ls = sub.add_parser("ls", help="list live services with their clients, calls and errors")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    call = sub.add_parser("call", help="call a function with a JSON payload and print the reply")
    call.add_argument("service")
    call.add_argument("function")
    call.add_argument("payload", nargs="?", help="the request as JSON (default: null)")
    call.add_argument("--version", dest="version", default="*", help="version requirement, e.g. ^1")
    call.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    call.add_argument("--json", action="store_true", help='print {"ok": ..., "reply"|"status": ...} as JSON')
    stats = sub.add_parser("stats", help="per-function counters and latency of a service (all services by default)")
    stats.add_argument("service", nargs="?")
    stats.add_argument("--version", dest="version", default="*", help="version requirement, e.g. ^1")
    fmt = stats.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the full snapshot (histogram buckets included) as JSON")
    fmt.add_argument("--prometheus", action="store_true", help="Prometheus text exposition format")
    stats.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for a busy service (default 2)")
    top = sub.add_parser("top", help="live calls/s and p50/p99 per function, refreshing (q quits)")
    top.add_argument("service", nargs="?")
    top.add_argument("--version", dest="version", default="*", help="version requirement, e.g. ^1")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    top.add_argument("--once", action="store_true", help="print one refresh and exit")
    top.add_argument("--iterations", type=int, default=None, help="print N refreshes and exit")
    doctor = sub.add_parser("doctor", help="check this machine for what hms-ffi needs")
    doctor.add_argument("--json", action="store_true")
    bench = sub.add_parser("bench", help="the side-by-side latency comparison (bench/compare.py in a checkout, "
                                         "else a built-in echo comparison)")
    bench.add_argument("--quick", action="store_true", help="a short run (bench/compare.py --quick)")
    bench.add_argument("--builtin", action="store_true", help="the built-in comparison even in a checkout")
    bench.add_argument("-n", type=int, default=20000, help="calls per row of the built-in comparison")
    bench.add_argument("--json", action="store_true", help="built-in comparison: results as JSON")
    bench.add_argument("--progress", action="store_true", help="draw the progress bar even when stderr is no terminal")
    bench.add_argument("compare_args", nargs=argparse.REMAINDER, help="after --: arguments for bench/compare.py")
    demo = sub.add_parser("demo", help="the order flow across languages: a Python OMS (SQLite) and a Go API front end "
                                       "(Python when Go is missing), protobuf calls, signed status events")
    demo.add_argument("--frontend", choices=["auto", "go", "python"], default="auto",
                      help="which API front end to run (auto: Go when it can be built, else Python)")
    demo.add_argument("-n", type=int, default=500, help="round trips per latency measurement (default 500)")
    gw = sub.add_parser("gateway", help="serve this host's services to other hosts over gRPC (docs/gateway.md)")
    gw.add_argument("--listen", default="127.0.0.1:50051",
                    help="HOST:PORT to listen on (default 127.0.0.1:50051; port 0 picks a free one)")
    gw.add_argument("--tls-cert", help="server certificate chain (PEM)")
    gw.add_argument("--tls-key", help="server private key (PEM)")
    gw.add_argument("--tls-client-ca", help="require client certificates signed by this CA (mutual TLS)")
    gw.add_argument("--insecure", action="store_true",
                    help="allow plaintext on a non-loopback address (only on a network you trust)")
    gw.add_argument("--max-workers", type=int, default=64,
                    help="RPCs served at once; each stream or subscription holds one (default 64)")
    gw.add_argument("--max-message", type=int, default=64 << 20, help="largest message in bytes (default 64 MiB)")
    cg = sub.add_parser("codegen", help="typed clients and server base classes from .proto services (docs/idl.md)")
    cg.add_argument("protos", nargs="+", metavar="FILE.proto")
    cg.add_argument("-I", "--proto-path", dest="include", action="append", default=[],
                    help="directory to search for imports (repeatable; default: the first file's directory)")
    cg.add_argument("--out", default=".", help="output directory (default: the current one)")
    cg.add_argument("--lang", default="python", help="comma-separated: python, go, rust (default: python)")
    args = p.parse_args(argv)

    # The flags answer from the files shipped in the package (_paths) and never touch _core/_native:
    # a build system asking for -I/-L must not depend on the Python extension loading.
    if args.libdir or args.includedir or args.pkgconfig_dir:
        from . import _paths

        try:
            if args.libdir:
                print(_paths.libdir())
            if args.includedir:
                print(_paths.includedir())
            if args.pkgconfig_dir:
                print(_paths.pkgconfig_dir())
        except FileNotFoundError as e:
            print(e, file=sys.stderr)
            return 1
        return 0
    if args.show_version:
        try:
            version, abi = _versions()
        except (FileNotFoundError, LookupError) as e:
            print(e, file=sys.stderr)
            return 1
        print(f"hms-ffi-native {version} (ABI {abi})")
        return 0
    if args.cmd is None:
        p.print_help()
        return 2
    from ._errors import FFIError

    try:
        if args.cmd == "ls":
            return _ls(args)
        if args.cmd == "call":
            return _call(args)
        if args.cmd == "stats":
            return _stats(args)
        if args.cmd == "top":
            return _top(args)
        if args.cmd == "doctor":
            return _doctor(args)
        if args.cmd == "bench":
            if args.compare_args and args.compare_args[0] == "--":
                args.compare_args = args.compare_args[1:]
            if args.n <= 0:
                print("hms-ffi bench: -n must be > 0", file=sys.stderr)
                return EXIT_USAGE
            return _bench(args)
        if args.cmd == "demo":
            from ._demo import run

            return run(frontend=args.frontend, n=args.n)
        if args.cmd == "gateway":
            return _gateway(args)
        if args.cmd == "codegen":
            return _codegen(args)
    except FFIError as e:
        print(f"hms-ffi: {e}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
