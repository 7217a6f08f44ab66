"""Command line: `hms-ffi` / `python -m hms_ffi_native`.

    hms-ffi --libdir | --includedir | --pkgconfig-dir | --version
    hms-ffi ls [--json]                     live services, versions, functions, pids
    hms-ffi call SERVICE FUNCTION [JSON]    call a function with a JSON payload (sent as CBOR)
    hms-ffi demo [--frontend go|python] [-n N]   the order flow: a Python OMS and a Go (or Python) front end
    hms-ffi gateway --listen HOST:PORT [--tls-cert F --tls-key F [--tls-client-ca F]] [--insecure]
                                            serve this host's services to other hosts over gRPC
    hms-ffi codegen FILE.proto... [-I DIR] [--out DIR] [--lang python,go,rust]
                                            typed clients and server base classes (docs/idl.md)

Exit codes: 0 ok, 1 the operation failed (the status name is printed), 2 usage error.
"""
from __future__ import annotations

import argparse
import json
import sys


def _ls(args) -> int:
    import hms_ffi_native as hms

    services = hms.list_services(args.runtime_dir)
    if args.json:
        print(json.dumps([s.__dict__ for s in services], indent=2))
        return 0
    if not services:
        print(f"no services in {args.runtime_dir or hms.default_runtime_dir()}")
        return 0
    rows = [("SERVICE", "VERSION", "PID", "NODE", "FUNCTIONS")]
    rows += [(s.name, s.version, str(s.pid), s.node, ", ".join(sorted(s.functions))) for s in services]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    return 0


def _call(args) -> int:
    import hms_ffi_native as hms

    try:
        payload = json.loads(args.payload) if args.payload is not None else None
    except ValueError as e:
        print(f"payload is not valid JSON: {e}", file=sys.stderr)
        return 2
    with hms.connect(args.service, args.version, runtime_dir=args.runtime_dir) as c:
        reply = c.call(args.function, payload, timeout=args.timeout)
    if isinstance(reply, bytes):
        print(reply.hex())
    else:
        print(json.dumps(reply, indent=2, default=str))
    return 0


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
    ls = sub.add_parser("ls", help="list live services")
    ls.add_argument("--json", action="store_true")
    call = sub.add_parser("call", help="call a function with a JSON payload")
    call.add_argument("service")
    call.add_argument("function")
    call.add_argument("payload", nargs="?")
    call.add_argument("--version", dest="version", default="*", help="version requirement, e.g. ^1")
    call.add_argument("--timeout", type=float, default=5.0)
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
