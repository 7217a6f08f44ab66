"""Typed clients and servers from ``.proto`` service definitions (``hms-ffi codegen``, docs/idl.md).

``generate(["order.proto"], out="gen")`` runs protoc (from grpcio-tools) for the messages and writes,
for every .proto file that defines services:

* Python ``<name>_hms.py``: per service a client class (``OrderServiceClient(hms.connect(...))``, one
  typed method per rpc) and a server base class (``OrderServiceBase``: override the rpcs, then
  ``register(node, version)``). Requests are checked on the server before a handler runs: they must
  parse, fields annotated ``// hms: required`` must be set, enum values must be defined.
* Go ``<name>_hms.go`` (with protoc-gen-go's ``<name>.pb.go``): the same client and server over
  bindings/go, with the same checks.
* Rust ``<name>_hms.rs``: clients and a handler trait over the hms-ffi crate, which has no protobuf
  support: requests and replies are the messages' serialized bytes.

The second half of this module is the runtime the generated Python code uses (``Rpc``,
``ClientStub``, ``ServiceBase``).

Annotations: a comment on a field (leading or trailing) holding ``hms: required`` marks it required.
Any other ``hms:`` word in a field comment is refused, so a typo cannot silently drop a check.
"""
from __future__ import annotations

import importlib.util
import inspect
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ._errors import Internal, InvalidArgument

__all__ = ["generate", "CodegenError", "Rpc", "ClientStub", "ServiceBase", "LANGUAGES"]

LANGUAGES = ("python", "go", "rust")
PROTOC_GEN_GO_VERSION = "v1.36.12"  # what examples/orders/gen.sh pins
GO_BINDING_IMPORT = "github.com/hms-ffi/hms-ffi-native/bindings/go"

_ANNOTATION = re.compile(r"\bhms:\s*([A-Za-z_][\w-]*)")
_KNOWN_ANNOTATIONS = {"required"}


class CodegenError(Exception):
    """Code generation failed; the message says why and what to do."""


# ================================================================================================
# Reading the .proto files
# ================================================================================================
@dataclass
class _Method:
    name: str
    input: str  # full message names, without the leading dot
    output: str
    client_streaming: bool
    server_streaming: bool
    doc: str


@dataclass
class _ServiceDef:
    name: str
    full_name: str
    doc: str
    methods: List[_Method]


@dataclass
class _FileDef:
    name: str  # as protoc knows it ("order.proto", "a/b.proto")
    package: str
    go_package: str
    services: List[_ServiceDef]
    messages: List[str] = field(default_factory=list)  # full names of the messages it defines


def _protoc_base() -> List[str]:
    if importlib.util.find_spec("grpc_tools") is None:
        raise CodegenError("hms-ffi codegen runs protoc from grpcio-tools, which is not installed: "
                           "pip install grpcio-tools (or pip install 'hms-ffi-native[codegen]')")
    return [sys.executable, "-m", "grpc_tools.protoc"]


def _wkt_include() -> str:
    import grpc_tools

    return os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")


def _run_protoc(args: List[str]) -> None:
    r = subprocess.run(_protoc_base() + args, capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip()
        raise CodegenError(f"protoc failed ({r.returncode}): {msg}")


def _proto_names(protos: Sequence[str], includes: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(include dirs, names of the files relative to one of them): protoc wants both."""
    incs = [os.path.abspath(i) for i in includes]
    names = []
    for p in protos:
        ap = os.path.abspath(p)
        if not os.path.isfile(ap):
            raise CodegenError(f"{p}: no such file")
        if not incs:
            incs.append(os.path.dirname(ap))
        for inc in incs:
            if ap.startswith(inc.rstrip(os.sep) + os.sep):
                names.append(os.path.relpath(ap, inc).replace(os.sep, "/"))
                break
        else:
            raise CodegenError(f"{p} is not under any include directory ({', '.join(incs)}): "
                               f"add -I {os.path.dirname(ap)}")
    return incs, names


def _comments(loc) -> str:
    return "\n".join(s.strip("\n") for s in (loc.leading_comments, loc.trailing_comments) if s)


def _clean_doc(text: str) -> str:
    lines = [ln.strip() for ln in text.strip("\n").splitlines()]
    return "\n".join(lines).strip()


def _read_descriptors(fds) -> Tuple[Dict[str, _FileDef], Dict[str, List[str]], Dict[str, str]]:
    """Services of every file, the required fields reachable from each file (its own annotations
    and those of the files it imports, transitively), and message -> file."""
    files: Dict[str, _FileDef] = {}
    own: Dict[str, List[str]] = {}
    defined_in: Dict[str, str] = {}
    for fp in fds.file:
        required: List[str] = own.setdefault(fp.name, [])
        locs = {tuple(loc.path): loc for loc in fp.source_code_info.location}
        prefix = f"{fp.package}." if fp.package else ""
        fdef = _FileDef(fp.name, fp.package, fp.options.go_package, [])

        def walk(msgs, path, scope):
            for i, m in enumerate(msgs):
                full = scope + m.name
                defined_in[full] = fp.name
                fdef.messages.append(full)
                for j, f in enumerate(m.field):
                    loc = locs.get(tuple(path) + (i, 2, j))
                    if loc is None:
                        continue
                    for word in _ANNOTATION.findall(_comments(loc)):
                        if word not in _KNOWN_ANNOTATIONS:
                            line = loc.span[0] + 1 if loc.span else "?"
                            raise CodegenError(f"{fp.name}:{line}: unknown annotation 'hms: {word}' on "
                                               f"{full}.{f.name}; known: {', '.join(sorted(_KNOWN_ANNOTATIONS))}")
                        required.append(f"{full}.{f.name}")
                walk(m.nested_type, tuple(path) + (i, 3), full + ".")

        walk(fp.message_type, (4,), prefix)
        for si, s in enumerate(fp.service):
            methods = []
            for mi, m in enumerate(s.method):
                loc = locs.get((6, si, 2, mi))
                methods.append(_Method(m.name, m.input_type.lstrip("."), m.output_type.lstrip("."),
                                       m.client_streaming, m.server_streaming,
                                       _clean_doc(loc.leading_comments) if loc else ""))
            loc = locs.get((6, si))
            fdef.services.append(_ServiceDef(s.name, prefix + s.name, _clean_doc(loc.leading_comments) if loc else "",
                                             methods))
        files[fp.name] = fdef
    deps = {fp.name: list(fp.dependency) for fp in fds.file}
    reach: Dict[str, List[str]] = {}
    for name in deps:
        seen, todo = set(), [name]
        while todo:
            f = todo.pop()
            if f not in seen:
                seen.add(f)
                todo += deps.get(f, [])
        reach[name] = sorted({r for f in seen for r in own.get(f, [])})
    return files, reach, defined_in


def _py_module(proto_name: str) -> str:
    return proto_name[:-len(".proto")].replace("-", "_").replace("/", ".") + "_pb2"


def _is_wkt(name: str) -> bool:
    return name.startswith("google/protobuf/")


# ================================================================================================
# generate()
# ================================================================================================
def generate(protos: Sequence[str], includes: Sequence[str] = (), out: str = ".",
             languages: Sequence[str] = ("python",)) -> List[Path]:
    """Generates code for ``protos`` into ``out``; returns the files written. Raises CodegenError."""
    langs = list(dict.fromkeys(languages))
    bad = [x for x in langs if x not in LANGUAGES]
    if bad:
        raise CodegenError(f"unknown language(s) {', '.join(bad)}; choose from {', '.join(LANGUAGES)}")
    if not protos:
        raise CodegenError("no .proto files given")
    incs, names = _proto_names(protos, includes)
    from google.protobuf import descriptor_pb2

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    inc_args = [f"-I{i}" for i in incs] + [f"-I{_wkt_include()}"]
    with tempfile.TemporaryDirectory(prefix="hms-codegen-") as tmp:
        ds = os.path.join(tmp, "set.pb")
        _run_protoc(inc_args + [f"--descriptor_set_out={ds}", "--include_imports", "--include_source_info", *names])
        fds = descriptor_pb2.FileDescriptorSet.FromString(Path(ds).read_bytes())
    files, required, defined_in = _read_descriptors(fds)
    # Messages of imported files are generated too (except the well-known types, which ship with
    # the protobuf runtimes), so the output imports without anything else.
    all_files = [f.name for f in fds.file if not _is_wkt(f.name)]
    written: List[Path] = []
    if "python" in langs:
        _run_protoc(inc_args + [f"--python_out={out_dir}", f"--pyi_out={out_dir}", *all_files])
        for f in all_files:
            base = out_dir / _py_module(f).replace(".", "/")
            written += [base.with_suffix(".py"), base.with_suffix(".pyi")]
        for n in names:
            if files[n].services:
                path = out_dir / (n[:-len(".proto")].replace("-", "_") + "_hms.py")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(_python_source(files[n], files, required[n], defined_in), encoding="utf-8")
                written.append(path)
    if "go" in langs:
        plugin = _protoc_gen_go()
        for f in all_files:
            if not files[f].go_package:
                raise CodegenError(f"{f} has no `option go_package = \"IMPORT/PATH;name\";`: protoc-gen-go needs it")
        _run_protoc(inc_args + [f"--plugin=protoc-gen-go={plugin}", f"--go_out={out_dir}",
                                "--go_opt=paths=source_relative", *all_files])
        written += [out_dir / (f[:-len(".proto")] + ".pb.go") for f in all_files]
        for n in names:
            if files[n].services:
                path = out_dir / (n[:-len(".proto")] + "_hms.go")
                path.write_text(_go_source(files[n], files, required[n], defined_in), encoding="utf-8")
                written.append(path)
    if "rust" in langs:
        for n in names:
            if files[n].services:
                path = out_dir / (n[:-len(".proto")].replace("-", "_") + "_hms.rs")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(_rust_source(files[n]), encoding="utf-8")
                written.append(path)
    return written


def _protoc_gen_go() -> str:
    found = shutil.which("protoc-gen-go")
    if found:
        return found
    candidates = [os.path.expanduser("~/go/bin/protoc-gen-go")]
    go = shutil.which("go")
    if go:
        r = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            candidates.insert(0, os.path.join(r.stdout.strip().split(os.pathsep)[0], "bin", "protoc-gen-go"))
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    raise CodegenError("--lang go needs protoc-gen-go (the Go message types), found neither on PATH nor in "
                       f"GOPATH/bin: go install google.golang.org/protobuf/cmd/protoc-gen-go@{PROTOC_GEN_GO_VERSION}")


# ================================================================================================
# Python
# ================================================================================================
def _py_ident(name: str) -> str:
    return name + "_" if keyword.iskeyword(name) else name


def _py_doc(text: str, indent: str) -> str:
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = [w for ln in text.splitlines() for w in (textwrap.wrap(ln, 100 - len(indent)) or [""])] or [""]
    if len(lines) == 1:
        return f'{indent}"""{lines[0]}"""\n'
    return f'{indent}"""' + lines[0] + "\n" + "".join(f"{indent}{ln}\n" if ln else "\n" for ln in lines[1:]) + \
        f'{indent}"""\n'


def _python_source(fdef: _FileDef, files: Dict[str, _FileDef], required: List[str],
                   defined_in: Dict[str, str]) -> str:
    modules: Dict[str, str] = {}  # python module -> alias

    def ref(full: str) -> str:
        fname = defined_in[full]
        mod = _py_module(fname)
        alias = modules.setdefault(mod, f"_pb{len(modules)}")
        pkg = files[fname].package
        local = full[len(pkg) + 1:] if pkg else full
        return f"{alias}.{local}"

    body: List[str] = []
    for s in fdef.services:
        table = f"_{s.name}_RPCS"
        body.append(f"{table} = {{\n")
        for m in s.methods:
            body.append(f"    {m.name!r}: _rt.Rpc(\n        {s.full_name!r}, {m.name!r}, {ref(m.input)}, {ref(m.output)},\n"
                        f"        client_streaming={m.client_streaming}, server_streaming={m.server_streaming}, "
                        f"required=_REQUIRED),\n")
        body.append("}\n\n\n")
        # -- client
        body.append(f"class {s.name}Client(_rt.ClientStub):\n")
        body.append(_py_doc(f"Typed client of {s.full_name}: ``{s.name}Client(hms.connect({s.full_name!r}, \"^1\"))`` "
                            f"or ``{s.name}Client.connect(\"^1\")``."
                            + (f"\n\n{s.doc}" if s.doc else ""), "    "))
        body.append(f"\n    SERVICE = {s.full_name!r}\n    RPCS = {table}\n")
        for m in s.methods:
            req, resp = ref(m.input), ref(m.output)
            many = f"requests: Iterable[{req}], *, timeout: Optional[float] = None"
            one = f"request: Optional[{req}] = None, *, timeout: Optional[float] = None, **fields"
            if m.client_streaming and m.server_streaming:
                args, ret = many, "_rt.TypedStream"
                kind = "bidirectional stream: sends ``requests`` from a thread, yields the replies"
                call = f"self._bidi({m.name!r}, requests, timeout)"
            elif m.client_streaming:
                args, ret = many, resp
                kind = "client stream: sends every request, returns the one reply"
                call = f"self._client_stream({m.name!r}, requests, timeout)"
            elif m.server_streaming:
                args, ret = one, "_rt.TypedStream"
                kind = "server stream: an iterator of replies (close it, or exhaust it)"
                call = f"self._server_stream({m.name!r}, request, fields, timeout)"
            else:
                args, ret = one, resp
                kind = "``request`` or the request's fields as keywords"
                call = f"self._unary({m.name!r}, request, fields, timeout)"
            args = args.replace(", *", ",\n            *")
            body.append(f"\n    def {_py_ident(m.name)}(\n            self, {args}) -> {ret}:\n")
            doc = f"{m.input} -> {m.output} ({kind})." + (f"\n\n{m.doc}" if m.doc else "")
            body.append(_py_doc(doc, "        "))
            body.append(f"        return {call}\n")
        body.append("\n\n")
        # -- server base
        body.append(f"class {s.name}Base(_rt.ServiceBase):\n")
        body.append(_py_doc(f"Server of {s.full_name}: subclass it, override the rpcs, then "
                            f"``{s.name}Impl().register(node, \"1.0.0\")``. Rpcs left alone answer UNIMPLEMENTED. "
                            "A method may be ``async def`` (server-stream methods: async generators), except "
                            "client-streaming ones.", "    "))
        body.append(f"\n    SERVICE = {s.full_name!r}\n    RPCS = {table}\n")
        for m in s.methods:
            req, resp = ref(m.input), ref(m.output)
            body.append("\n")
            if m.client_streaming and m.server_streaming:
                sig = f"(self, requests: Iterator[{req}], ctx: hms.CallContext) -> Iterator[{resp}]"
                what = "a generator of replies over an iterator of checked requests"
            elif m.client_streaming:
                sig = f"(self, requests: Iterator[{req}], ctx: hms.CallContext) -> {resp}"
                what = "the reply to an iterator of checked requests"
            elif m.server_streaming:
                sig = f"(self, request: {req}, ctx: hms.CallContext) -> Iterator[{resp}]"
                what = "a generator of replies"
            else:
                sig = f"(self, request: {req}, ctx: hms.CallContext) -> {resp}"
                what = "the reply"
            body.append(f"    def {_py_ident(m.name)}{sig}:\n")
            body.append(_py_doc(f"Returns {what}." + (f"\n\n{m.doc}" if m.doc else ""), "        "))
            unimpl = f"{s.full_name}.{m.name} is not implemented: override it in a subclass of {s.name}Base"
            body.append(f"        raise hms.Unimplemented({unimpl!r})\n")
        body.append("\n\n")

    head = [f"# Generated by `hms-ffi codegen` from {fdef.name}. Do not edit: change the .proto and regenerate.\n",
            _py_doc(f"Typed hms-ffi clients and server base classes for the services of {fdef.name}"
                    + (f" (package {fdef.package})" if fdef.package else "") + ".\n\n"
                    "Import it with the generated *_pb2 modules on sys.path (the --out directory).", ""),
            "from __future__ import annotations\n\n",
            "from typing import Iterable, Iterator, Optional\n\n",
            "import hms_ffi_native as hms\n",
            "from hms_ffi_native import codegen as _rt\n"]
    for mod, alias in modules.items():
        if "." in mod:
            pkg, leaf = mod.rsplit(".", 1)
            head.append(f"from {pkg} import {leaf} as {alias}\n")
        else:
            head.append(f"import {mod} as {alias}\n")
    head.append("\n# Fields annotated `// hms: required` (in this file and the files it imports): checked before a\n"
                "# handler runs.\n")
    head.append("_REQUIRED = frozenset({\n" + "".join(f"    {r!r},\n" for r in required) + "})\n\n")
    exports = [n for s in fdef.services for n in (f"{s.name}Client", f"{s.name}Base")]
    head.append(f"__all__ = {exports!r}\n\n\n")
    return "".join(head) + "".join(body).rstrip("\n") + "\n"


# ================================================================================================
# Go
# ================================================================================================
def _go_camel(s: str) -> str:
    """protoc-gen-go's GoCamelCase (google.golang.org/protobuf/internal/strs)."""
    b = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "." and i + 1 < n and s[i + 1].islower():
            pass
        elif c == ".":
            b.append("_")
        elif c == "_" and (i == 0 or s[i - 1] == "."):
            b.append("X")
        elif c == "_" and i + 1 < n and "a" <= s[i + 1] <= "z":
            pass
        elif c.isdigit():
            b.append(c)
        else:
            b.append(c.upper() if "a" <= c <= "z" else c)
            while i + 1 < n and "a" <= s[i + 1] <= "z":
                i += 1
                b.append(s[i])
        i += 1
    return "".join(b)


def _go_pkg(go_package: str) -> Tuple[str, str]:
    path, _, name = go_package.partition(";")
    if not name:
        name = re.sub(r"\W", "_", path.rsplit("/", 1)[-1])
    return path, name


def _go_comment(text: str, indent: str = "") -> str:
    return "".join(f"{indent}// {ln}".rstrip() + "\n" for ln in text.splitlines())


def _go_source(fdef: _FileDef, files: Dict[str, _FileDef], required: List[str], defined_in: Dict[str, str]) -> str:
    my_path, my_pkg = _go_pkg(fdef.go_package)
    stem = re.sub(r"\W", "_", Path(fdef.name).stem)
    imports: Dict[str, str] = {}

    def ref(full: str) -> str:
        fname = defined_in[full]
        f = files[fname]
        local = full[len(f.package) + 1:] if f.package else full
        gname = "_".join(_go_camel(part) for part in local.split("."))
        path, name = _go_pkg(f.go_package)
        if path == my_path:
            return gname
        alias = imports.setdefault(path, f"{name}{len(imports)}")
        return f"{alias}.{gname}"

    sfx = "_" + stem
    uses_io = any(m.client_streaming for s in fdef.services for m in s.methods)  # io.EOF in recv
    out: List[str] = []
    for s in fdef.services:
        sname = _go_camel(s.name)
        const = f"{sname}Name"
        out.append(f"// {const} is the name {s.full_name} is served under.\nconst {const} = {s.full_name!r}\n\n"
                   .replace("'", '"'))
        # -- client
        out.append(f"// {sname}Client calls {s.full_name} through a connected *hms.Client.\n")
        if s.doc:
            out.append("//\n" + _go_comment(s.doc))
        out.append(f"type {sname}Client struct{{ C *hms.Client }}\n\n")
        out.append(f"// New{sname}Client wraps a client connected to {const} (node.Connect(ctx, {const}, \"^1\", nil)).\n"
                   f"func New{sname}Client(c *hms.Client) *{sname}Client {{ return &{sname}Client{{C: c}} }}\n\n")
        for m in s.methods:
            mname = _go_camel(m.name)
            req, resp = ref(m.input), ref(m.output)
            doc = _go_comment(m.doc) if m.doc else ""
            if m.client_streaming or m.server_streaming:
                st = f"{sname}_{mname}Stream"
                out.append(f"// {st} is an open {m.name} stream: Recv reads replies (io.EOF at the end)"
                           + (", Send/CloseSend send requests" if m.client_streaming else "") + ".\n")
                out.append(f"type {st} struct{{ S *hms.Stream }}\n\n")
                out.append(f"// Recv returns the next reply, io.EOF after the last.\n"
                           f"func (x *{st}) Recv(ctx context.Context) (*{resp}, error) {{\n"
                           f"\tp, err := x.S.Next(ctx)\n\tif err != nil {{\n\t\treturn nil, err\n\t}}\n"
                           f"\tout := new({resp})\n"
                           f"\tif err := hmsParseReply{sfx}({const}, {m.name!r}, p, out); err != nil {{\n\t\treturn nil, err\n\t}}\n"
                           f"\treturn out, nil\n}}\n\n".replace("'", '"'))
                if m.client_streaming:
                    out.append(f"// Send sends one request.\nfunc (x *{st}) Send(req *{req}) error {{\n"
                               f"\tp, err := hmsPayload{sfx}({const}, {m.name!r}, req)\n{_GO_RET}"
                               f"\treturn x.S.Send(p)\n}}\n\n"
                               f"// CloseSend says no more requests follow.\nfunc (x *{st}) CloseSend() error {{ return x.S.CloseSend() }}\n\n"
                               .replace("'", '"'))
                out.append(f"// Close ends the stream (cancels it if it is still running).\n"
                           f"func (x *{st}) Close() error {{ return x.S.Close() }}\n\n")
                if m.client_streaming:
                    direction = "hms.StreamBidi" if m.server_streaming else "hms.StreamClient"
                    out.append(f"// {mname} opens the {'bidirectional' if m.server_streaming else 'client'} stream "
                               f"{m.input} -> {m.output}.\n" + ("//\n" + doc if doc else ""))
                    out.append(f"func (c *{sname}Client) {mname}(ctx context.Context) (*{st}, error) {{\n"
                               f"\ts, err := c.C.OpenStream(ctx, {m.name!r}, hms.Payload{{}}, {direction})\n"
                               f"\tif err != nil {{\n\t\treturn nil, err\n\t}}\n\treturn &{st}{{S: s}}, nil\n}}\n\n"
                               .replace("'", '"'))
                else:
                    out.append(f"// {mname} opens the server stream {m.input} -> {m.output}.\n" + ("//\n" + doc if doc else ""))
                    out.append(f"func (c *{sname}Client) {mname}(ctx context.Context, req *{req}) (*{st}, error) {{\n"
                               f"\tp, err := hmsPayload{sfx}({const}, {m.name!r}, req)\n{_GO_RET_NIL}"
                               f"\ts, err := c.C.Stream(ctx, {m.name!r}, p)\n"
                               f"\tif err != nil {{\n\t\treturn nil, err\n\t}}\n\treturn &{st}{{S: s}}, nil\n}}\n\n"
                               .replace("'", '"'))
                continue
            out.append(f"// {mname} calls {m.input} -> {m.output}.\n" + ("//\n" + doc if doc else ""))
            out.append(f"func (c *{sname}Client) {mname}(ctx context.Context, req *{req}) (*{resp}, error) {{\n"
                       f"\tp, err := hmsPayload{sfx}({const}, {m.name!r}, req)\n{_GO_RET_NIL}"
                       f"\treply, err := c.C.Call(ctx, {m.name!r}, p)\n\tif err != nil {{\n\t\treturn nil, err\n\t}}\n"
                       f"\tout := new({resp})\n"
                       f"\tif err := hmsParseReply{sfx}({const}, {m.name!r}, reply, out); err != nil {{\n\t\treturn nil, err\n\t}}\n"
                       f"\treturn out, nil\n}}\n\n".replace("'", '"'))
        # -- server
        out.append(f"// {sname}Server serves {s.full_name}: RegisterOrderService checks every request before\n"
                   f"// calling these (it parses; required fields are set; enum values are defined).\n"
                   .replace("RegisterOrderService", f"Register{sname}"))
        out.append(f"type {sname}Server interface {{\n")
        for m in s.methods:
            mname = _go_camel(m.name)
            req, resp = ref(m.input), ref(m.output)
            if m.client_streaming and m.server_streaming:
                out.append(f"\t// {mname}: recv returns the next request (io.EOF after the last); send sends a reply.\n"
                           f"\t{mname}(call *hms.Call, recv func() (*{req}, error), send func(*{resp}) error) error\n")
            elif m.client_streaming:
                out.append(f"\t// {mname}: recv returns the next request (io.EOF after the last).\n"
                           f"\t{mname}(call *hms.Call, recv func() (*{req}, error)) (*{resp}, error)\n")
            elif m.server_streaming:
                out.append(f"\t// {mname}: send sends one reply of the stream.\n"
                           f"\t{mname}(call *hms.Call, req *{req}, send func(*{resp}) error) error\n")
            else:
                out.append(f"\t{mname}(call *hms.Call, req *{req}) (*{resp}, error)\n")
        out.append("}\n\n")
        out.append(f"// Register{sname} adds {const} at version to node, every rpc served by impl.\n"
                   f"func Register{sname}(node *hms.Node, version string, impl {sname}Server) (*hms.Service, error) {{\n"
                   f"\tsvc, err := node.AddService({const}, version)\n\tif err != nil {{\n\t\treturn nil, err\n\t}}\n")
        for m in s.methods:
            mname = _go_camel(m.name)
            req, resp = ref(m.input), ref(m.output)
            fn = f"{m.name!r}".replace("'", '"')
            send = (f"\t\tsend := func(r *{resp}) error {{\n"
                    f"\t\t\tp, err := hmsPayload{sfx}({const}, {fn}, r)\n\t\t\tif err != nil {{\n\t\t\t\treturn err\n\t\t\t}}\n"
                    f"\t\t\treturn call.Send(p)\n\t\t}}\n")
            recv = (f"\t\tn := 0\n\t\trecv := func() (*{req}, error) {{\n"
                    f"\t\t\tp, end, err := call.Recv(-1)\n\t\t\tif err != nil {{\n\t\t\t\treturn nil, err\n\t\t\t}}\n"
                    f"\t\t\tif end {{\n\t\t\t\treturn nil, io.EOF\n\t\t\t}}\n"
                    f"\t\t\tr := new({req})\n"
                    f"\t\t\tif err := hmsParseRequest{sfx}({const}, {fn}, p, r, fmt.Sprintf(\"[%d].\", n)); err != nil {{\n"
                    f"\t\t\t\treturn nil, err\n\t\t\t}}\n\t\t\tn++\n\t\t\treturn r, nil\n\t\t}}\n")
            parse = (f"\t\treq := new({req})\n"
                     f"\t\tif err := hmsParseRequest{sfx}({const}, {fn}, p, req, \"\"); err != nil {{\n"
                     f"\t\t\treturn hms.Payload{{}}, err\n\t\t}}\n")
            if m.client_streaming and m.server_streaming:
                inner, flags = recv + send + f"\t\treturn hms.Payload{{}}, impl.{mname}(call, recv, send)\n", \
                    ", hms.FnStream, hms.FnClientStream"
            elif m.client_streaming:
                inner, flags = recv + (f"\t\tout, err := impl.{mname}(call, recv)\n\t\tif err != nil {{\n"
                                       f"\t\t\treturn hms.Payload{{}}, err\n\t\t}}\n"
                                       f"\t\treturn hmsPayload{sfx}({const}, {fn}, out)\n"), ", hms.FnClientStream"
            elif m.server_streaming:
                inner, flags = parse + send + f"\t\treturn hms.Payload{{}}, impl.{mname}(call, req, send)\n", ", hms.FnStream"
            else:
                inner, flags = parse + (f"\t\tout, err := impl.{mname}(call, req)\n\t\tif err != nil {{\n"
                                        f"\t\t\treturn hms.Payload{{}}, err\n\t\t}}\n"
                                        f"\t\treturn hmsPayload{sfx}({const}, {fn}, out)\n"), ""
            pname = "_" if m.client_streaming else "p"
            out.append(f"\tif err := svc.Handle({fn}, func(call *hms.Call, {pname} hms.Payload) (hms.Payload, error) {{\n"
                       f"{inner}\t}}{flags}); err != nil {{\n\t\treturn nil, err\n\t}}\n")
        out.append("\treturn svc, nil\n}\n\n")
        # -- unimplemented base
        out.append(f"// Unimplemented{sname}Server answers UNIMPLEMENTED for every rpc: embed it to serve some only.\n"
                   f"type Unimplemented{sname}Server struct{{}}\n\n")
        for m in s.methods:
            mname = _go_camel(m.name)
            req, resp = ref(m.input), ref(m.output)
            msg = f'hms.Errorf(hms.Unimplemented, "{s.full_name}.{m.name} is not implemented")'
            if m.client_streaming and m.server_streaming:
                out.append(f"func (Unimplemented{sname}Server) {mname}(*hms.Call, func() (*{req}, error), func(*{resp}) error) error {{\n"
                           f"\treturn {msg}\n}}\n\n")
            elif m.client_streaming:
                out.append(f"func (Unimplemented{sname}Server) {mname}(*hms.Call, func() (*{req}, error)) (*{resp}, error) {{\n"
                           f"\treturn nil, {msg}\n}}\n\n")
            elif m.server_streaming:
                out.append(f"func (Unimplemented{sname}Server) {mname}(*hms.Call, *{req}, func(*{resp}) error) error {{\n"
                           f"\treturn {msg}\n}}\n\n")
            else:
                out.append(f"func (Unimplemented{sname}Server) {mname}(*hms.Call, *{req}) (*{resp}, error) {{\n"
                           f"\treturn nil, {msg}\n}}\n\n")

    helpers = _GO_HELPERS.replace("_SFX", sfx)
    req_lines = "".join(f'\t"{r}": true,\n' for r in required)
    helpers = helpers.replace("\t// REQUIRED\n", req_lines)
    imps = ['\t"context"\n', '\t"fmt"\n'] + (['\t"io"\n'] if uses_io else []) + \
        ["\n", f'\thms "{GO_BINDING_IMPORT}"\n', '\t"google.golang.org/protobuf/proto"\n',
         '\t"google.golang.org/protobuf/reflect/protoreflect"\n']
    imps += [f'\t{alias} "{path}"\n' for path, alias in imports.items()]
    head = (f"// Code generated by hms-ffi codegen from {fdef.name}. DO NOT EDIT.\n\n"
            f"// Typed hms-ffi stubs for the services of {fdef.name}: clients over bindings/go's *hms.Client and\n"
            "// servers over *hms.Service, with protobuf payloads (content type 4) of protoc-gen-go's types.\n"
            f"package {my_pkg}\n\nimport (\n" + "".join(imps) + ")\n\n")
    return head + "".join(out) + helpers


_GO_RET_NIL = "\tif err != nil {\n\t\treturn nil, err\n\t}\n"
_GO_RET = "\tif err != nil {\n\t\treturn err\n\t}\n"

_GO_HELPERS = '''// hmsRequired_SFX holds the fields annotated `// hms: required` (full names).
var hmsRequired_SFX = map[protoreflect.FullName]bool{
	// REQUIRED
}

func hmsPayload_SFX(service, fn string, m proto.Message) (hms.Payload, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return hms.Payload{}, hms.Errorf(hms.InvalidArgument, "%s.%s: cannot encode %s: %v", service, fn,
			m.ProtoReflect().Descriptor().FullName(), err)
	}
	return hms.Payload{Data: data, Type: hms.Protobuf}, nil
}

func hmsParseReply_SFX(service, fn string, p hms.Payload, out proto.Message) error {
	name := out.ProtoReflect().Descriptor().FullName()
	if p.Type != hms.Protobuf && p.Type != hms.Raw && p.Type != hms.None {
		return hms.Errorf(hms.Internal, "%s.%s replied with content type %d, not a protobuf %s", service, fn, p.Type, name)
	}
	if err := proto.Unmarshal(p.Data, out); err != nil {
		return hms.Errorf(hms.Internal, "%s.%s replied bytes that do not parse as %s: %v", service, fn, name, err)
	}
	return nil
}

func hmsParseRequest_SFX(service, fn string, p hms.Payload, out proto.Message, prefix string) error {
	name := out.ProtoReflect().Descriptor().FullName()
	if p.Type != hms.Protobuf && p.Type != hms.Raw && p.Type != hms.None {
		return hms.Errorf(hms.InvalidArgument, "%s.%s takes a protobuf %s; got content type %d", service, fn, name, p.Type)
	}
	if err := proto.Unmarshal(p.Data, out); err != nil {
		return hmsFieldError_SFX(hms.Errorf(hms.InvalidArgument, "payload does not parse as %s: %v", name, err), "")
	}
	return hmsCheck_SFX(out.ProtoReflect(), prefix)
}

func hmsFieldError_SFX(e *hms.Error, field string) error {
	if d, err := hms.EncodeCBOR(hms.Map{{Key: "field", Value: field}}); err == nil {
		e.Details, e.DetailsType = d, hms.CBOR
	}
	return e
}

// hmsCheck_SFX: required fields set, enum values defined, at any depth (the first problem wins).
func hmsCheck_SFX(m protoreflect.Message, prefix string) error {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		path := prefix + string(fd.Name())
		if hmsRequired_SFX[fd.FullName()] && !m.Has(fd) {
			return hmsFieldError_SFX(hms.Errorf(hms.InvalidArgument, "%s: required field is not set", path), path)
		}
		switch {
		case fd.IsList():
			l := m.Get(fd).List()
			for j := 0; j < l.Len(); j++ {
				if err := hmsCheckValue_SFX(fd, l.Get(j), fmt.Sprintf("%s[%d]", path, j)); err != nil {
					return err
				}
			}
		case fd.IsMap():
			var err error
			m.Get(fd).Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				err = hmsCheckValue_SFX(fd.MapValue(), v, fmt.Sprintf("%s[%q]", path, k.String()))
				return err == nil
			})
			if err != nil {
				return err
			}
		case m.Has(fd) || fd.Kind() == protoreflect.EnumKind:
			if err := hmsCheckValue_SFX(fd, m.Get(fd), path); err != nil {
				return err
			}
		}
	}
	return nil
}

func hmsCheckValue_SFX(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) error {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		if fd.Enum().Values().ByNumber(v.Enum()) == nil {
			return hmsFieldError_SFX(hms.Errorf(hms.InvalidArgument, "%s: %d is not a defined %s value", path, v.Enum(),
				fd.Enum().FullName()), path)
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return hmsCheck_SFX(v.Message(), path+".")
	}
	return nil
}
'''


# ================================================================================================
# Rust
# ================================================================================================
def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


def _rust_source(fdef: _FileDef) -> str:
    out = [f"// Generated by `hms-ffi codegen` from {fdef.name}. Do not edit: change the .proto and regenerate.\n",
           f"//! Typed hms-ffi stubs for the services of {fdef.name}.\n//!\n"
           "//! The Rust binding (hms-ffi) has no protobuf support, so requests and replies here are the\n"
           "//! messages' serialized bytes (content type protobuf, 4): encode and decode them with prost or\n"
           "//! rust-protobuf. What these stubs add: the service and function names, the content type, and a\n"
           "//! reply of another content type refused with INTERNAL. Not checked in Rust: that bytes parse,\n"
           "//! required fields, enum values (a Python or Go server of the same .proto checks them). Client\n"
           "//! and bidirectional streams have no client-side API in hms-ffi yet: those rpcs are left out\n"
           "//! of the client (the handler trait has them, reading items with Call::recv).\n\n"
           "#![allow(dead_code, unused_imports)]\n\n"
           "use hms_ffi::{Call, Client, Code, Error, Node, Result, Service, Stream, CT_NONE, CT_PROTOBUF, CT_RAW};\n"
           "use std::sync::Arc;\nuse std::time::Duration;\n\n"]
    out.append("fn check_reply(service: &str, function: &str, reply: hms_ffi::Payload) -> Result<Vec<u8>> {\n"
               "    let ct = reply.content_type();\n"
               "    if ct != CT_PROTOBUF && ct != CT_RAW && ct != CT_NONE {\n"
               "        return Err(Error::new(Code::Internal, format!(\"{service}.{function} replied with content type {ct}, not protobuf (4)\")));\n"
               "    }\n    Ok(reply.to_vec())\n}\n\n"
               "fn check_request(service: &str, function: &str, call: &Call<'_>) -> Result<()> {\n"
               "    let ct = call.content_type();\n"
               "    if ct != CT_PROTOBUF && ct != CT_RAW && ct != CT_NONE {\n"
               "        return Err(Error::new(Code::InvalidArgument, format!(\"{service}.{function} takes protobuf (4); got content type {ct}\")));\n"
               "    }\n    Ok(())\n}\n\n")
    for s in fdef.services:
        const = _snake(s.name).upper()
        out.append(f"/// The name {s.full_name} is served under.\npub const {const}: &str = \"{s.full_name}\";\n\n")
        out.append(f"/// Calls {s.full_name} (serialized protobuf messages in and out).\n"
                   + "".join(f"/// {ln}\n" for ln in s.doc.splitlines()) +
                   f"pub struct {s.name}Client<'n> {{\n    pub client: Client<'n>,\n}}\n\n"
                   f"impl<'n> {s.name}Client<'n> {{\n"
                   f"    /// Connects to {const} through `node` (`version_req` such as \"^1\").\n"
                   f"    pub fn connect(node: &'n Node, version_req: &str) -> Result<Self> {{\n"
                   f"        Ok({s.name}Client {{ client: node.connect({const}, version_req)? }})\n    }}\n")
        for m in s.methods:
            fn = _snake(m.name)
            doc = "".join(f"    /// {ln}\n" for ln in m.doc.splitlines())
            if m.client_streaming:
                out.append(f"    // {m.name}: a {'bidirectional' if m.server_streaming else 'client'} stream, "
                           "which the Rust binding cannot open yet.\n")
                continue
            if m.server_streaming:
                out.append(f"\n    /// {m.input} -> stream of {m.output} (serialized); items arrive as payloads.\n{doc}"
                           f"    pub fn {fn}(&self, request: &[u8], timeout: Option<Duration>) -> Result<Stream<'_>> {{\n"
                           f"        self.client.stream(\"{m.name}\", request, CT_PROTOBUF, timeout)\n    }}\n")
            else:
                out.append(f"\n    /// {m.input} -> {m.output} (serialized).\n{doc}"
                           f"    pub fn {fn}(&self, request: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>> {{\n"
                           f"        let reply = self.client.call(\"{m.name}\", request, CT_PROTOBUF, timeout)?;\n"
                           f"        check_reply({const}, \"{m.name}\", reply)\n    }}\n")
        out.append("}\n\n")
        out.append(f"/// Serves {s.full_name}: override the rpcs (the rest answer UNIMPLEMENTED), then\n"
                   f"/// `register_{_snake(s.name)}(&node, \"1.0.0\", Arc::new(impl))`.\n"
                   f"pub trait {s.name}Handler: Send + Sync + 'static {{\n")
        for m in s.methods:
            fn = _snake(m.name)
            unimpl = f"Err(Error::new(Code::Unimplemented, \"{s.full_name}.{m.name} is not implemented\"))"
            if m.client_streaming or m.server_streaming:
                what = ("reads requests with call.recv() and " if m.client_streaming else "") + \
                    ("sends replies with call.send(bytes, CT_PROTOBUF)" if m.server_streaming
                     else "returns the reply")
                ret = "Result<()>" if m.server_streaming else "Result<Vec<u8>>"
                req = "" if m.client_streaming else ", request: &[u8]"
                out.append(f"    /// {m.name}: {what}.\n"
                           f"    fn {fn}(&self, call: &mut Call<'_>{req}) -> {ret} {{\n"
                           f"        let _ = {'(call, request)' if req else 'call'};\n        {unimpl}\n    }}\n")
            else:
                out.append(f"    /// {m.input} -> {m.output} (serialized).\n"
                           f"    fn {fn}(&self, call: &Call<'_>, request: &[u8]) -> Result<Vec<u8>> {{\n"
                           f"        let _ = (call, request);\n        {unimpl}\n    }}\n")
        out.append("}\n\n")
        out.append(f"/// Adds {const} at `version` to `node`, every rpc served by `handler`.\n"
                   f"pub fn register_{_snake(s.name)}<'n, H: {s.name}Handler>(node: &'n Node, version: &str, handler: Arc<H>) "
                   f"-> Result<Service<'n>> {{\n    let svc = node.service({const}, version)?;\n")
        for m in s.methods:
            fn = _snake(m.name)
            out.append("    {\n        let h = Arc::clone(&handler);\n")
            if m.client_streaming:
                flags = "hms_ffi::sys::HMS_FN_CLIENT_STREAM" + (" | hms_ffi::sys::HMS_FN_STREAM" if m.server_streaming else "")
                body = (f"let out = h.{fn}(call)?;\n            call.reply(&out, CT_PROTOBUF)" if not m.server_streaming
                        else f"h.{fn}(call)")
                out.append(f"        svc.function_with_flags(\"{m.name}\", {flags}, move |call| {{\n"
                           f"            {body}\n        }})?;\n    }}\n")
            elif m.server_streaming:
                out.append(f"        svc.stream_function(\"{m.name}\", move |call| {{\n"
                           f"            check_request({const}, \"{m.name}\", call)?;\n"
                           f"            let request = call.request();\n"
                           f"            h.{fn}(call, request)\n        }})?;\n    }}\n")
            else:
                out.append(f"        svc.function(\"{m.name}\", move |call| {{\n"
                           f"            check_request({const}, \"{m.name}\", call)?;\n"
                           f"            let out = h.{fn}(call, call.request())?;\n"
                           f"            call.reply(&out, CT_PROTOBUF)\n        }})?;\n    }}\n")
        out.append("    Ok(svc)\n}\n\n")
    return "".join(out).rstrip("\n") + "\n"


# ================================================================================================
# Runtime of the generated Python code
# ================================================================================================
class Rpc:
    """One rpc of a generated service: its message classes, its kind and its request checks."""

    __slots__ = ("service", "name", "request", "response", "client_streaming", "server_streaming", "required",
                 "_check", "_req_name", "_resp_name")

    def __init__(self, service: str, name: str, request, response, *, client_streaming: bool = False,
                 server_streaming: bool = False, required=frozenset()) -> None:
        self.service, self.name = service, name
        self.request, self.response = request, response
        self.client_streaming, self.server_streaming = client_streaming, server_streaming
        self.required = frozenset(required)
        self._check = None
        self._req_name = request.DESCRIPTOR.full_name
        self._resp_name = response.DESCRIPTOR.full_name

    @property
    def check(self) -> Callable[[Any], None]:
        """The request checker (required fields, enum values), compiled on first use."""
        c = self._check
        if c is None:
            from ._schema import message_checker

            c = self._check = message_checker(self.request, self.required)
        return c

    def request_of(self, request, fields: Optional[dict] = None):
        """A caller's request: an instance of the request type, or one built from keyword fields."""
        if request is None:
            try:
                return self.request(**(fields or {}))
            except (TypeError, ValueError) as e:
                raise InvalidArgument(f"{self.service}.{self.name}: cannot build a {self._req_name} from "
                                      f"{sorted(fields or {})}: {e}") from None
        if fields:
            raise InvalidArgument(f"{self.service}.{self.name}: pass a {self._req_name} or its fields as keywords, "
                                  "not both")
        if not isinstance(request, self.request):
            raise InvalidArgument(f"{self.service}.{self.name} takes a {self._req_name}, got "
                                  f"{type(request).__module__}.{type(request).__qualname__}")
        return request

    def parse_reply(self, value):
        """A reply value (bytes of a protobuf/raw payload) as the response message; INTERNAL otherwise."""
        if value is None:
            value = b""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise Internal(f"{self.service}.{self.name} replied with a {type(value).__name__} value (not a protobuf "
                           f"payload); expected a {self._resp_name}", details={"type": self._resp_name})
        try:
            return self.response.FromString(bytes(value))
        except Exception as e:  # DecodeError and friends
            raise Internal(f"{self.service}.{self.name} replied bytes that do not parse as {self._resp_name}: {e}",
                           details={"type": self._resp_name}) from None

    def reply_of(self, result):
        """What a server method returned, checked to be the response type."""
        if isinstance(result, self.response):
            return result
        raise Internal(f"{self.service}.{self.name} returned {type(result).__module__}.{type(result).__qualname__}; "
                       f"it must return a {self._resp_name}")

    def parse_item(self, value, index: int):
        """One item of a client stream: parsed and checked, errors naming the item."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"{self.service}.{self.name} takes a stream of protobuf {self._req_name}; item "
                                  f"[{index}] is a {type(value).__name__} value", details={"field": f"[{index}]"})
        from ._codec import parse_protobuf

        msg = parse_protobuf(self.request, bytes(value))
        try:
            self.check(msg)
        except InvalidArgument as e:
            field = (e.details or {}).get("field", "")
            at = f"[{index}].{field}" if field else f"[{index}]"
            raise InvalidArgument(f"{at}: {e.message.split(': ', 1)[-1]}", details={"field": at}) from None
        return msg


class TypedStream:
    """Replies of a stream, parsed as the rpc's response type. Iterate it; close() (or ``with``)
    cancels a stream you stop reading early."""

    def __init__(self, stream, rpc: Rpc) -> None:
        self._stream, self._rpc = stream, rpc

    def __iter__(self) -> "TypedStream":
        return self

    def __next__(self):
        return self._rpc.parse_reply(next(self._stream))

    def next_item(self, timeout: Optional[float] = None):
        """The next reply, waiting at most ``timeout``; StopIteration at the end."""
        return self._rpc.parse_reply(self._stream.next_item(timeout))

    def cancel(self) -> None:
        self._stream.cancel()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "TypedStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ClientStub:
    """Base of the generated clients: wraps an ``hms.Client`` (or a RemoteClient) of the service."""

    SERVICE = ""
    RPCS: Dict[str, Rpc] = {}

    def __init__(self, client) -> None:
        svc = getattr(client, "service", None)
        if svc is not None and svc != self.SERVICE:
            raise InvalidArgument(f"{type(self).__name__} needs a client of {self.SERVICE}, got one of {svc}")
        self.client = client

    @classmethod
    def connect(cls, version: str = "*", **kwargs) -> "ClientStub":
        """``cls(hms.connect(cls.SERVICE, version, **kwargs))``."""
        from ._core import connect

        return cls(connect(cls.SERVICE, version, **kwargs))

    def close(self) -> None:
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _unary(self, name: str, request, fields, timeout):
        rpc = self.RPCS[name]
        req = rpc.request_of(request, fields)
        return rpc.parse_reply(self.client.call(name, req, timeout=timeout, codec="protobuf"))

    def _server_stream(self, name: str, request, fields, timeout) -> TypedStream:
        rpc = self.RPCS[name]
        req = rpc.request_of(request, fields)
        return TypedStream(self.client.stream(name, req, timeout=timeout, codec="protobuf"), rpc)

    def _client_stream(self, name: str, requests, timeout):
        rpc = self.RPCS[name]
        reply = self.client.client_stream(name, (rpc.request_of(r) for r in requests), timeout=timeout,
                                          codec="protobuf")
        return rpc.parse_reply(reply)

    def _bidi(self, name: str, requests, timeout) -> TypedStream:
        rpc = self.RPCS[name]
        return TypedStream(self.client.bidi_stream(name, (rpc.request_of(r) for r in requests), timeout=timeout,
                                                   codec="protobuf"), rpc)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.client!r}>"


class ServiceBase:
    """Base of the generated server classes: ``register(node, version)`` serves every rpc with the
    subclass's methods, checking requests before and replies after them."""

    SERVICE = ""
    RPCS: Dict[str, Rpc] = {}

    def register(self, node, version: str = "1.0.0", *, name: Optional[str] = None, idempotent: Iterable[str] = ()):
        """Adds the service (``name`` defaults to the .proto's full service name) to ``node`` with one
        function per rpc; returns the ``hms.Service``. ``idempotent`` names rpcs to flag idempotent."""
        svc = node.service(name or self.SERVICE, version)
        idem = set(idempotent)
        unknown = idem - set(self.RPCS)
        if unknown:
            raise InvalidArgument(f"{self.SERVICE} has no rpc {sorted(unknown)} (it has: {', '.join(self.RPCS)})")
        for rpc_name, rpc in self.RPCS.items():
            method = getattr(self, rpc_name if not keyword.iskeyword(rpc_name) else rpc_name + "_")
            handler = _handler(rpc, method)
            svc.add_function(rpc_name, handler, codec="protobuf", idempotent=rpc_name in idem,
                             client_stream=rpc.client_streaming,
                             request_type=None if rpc.client_streaming else rpc.request)
            rpc.check  # compile now: a bad descriptor fails at registration, not on the first call
        return svc


def _handler(rpc: Rpc, method) -> Callable:
    """The function registered for one rpc: checks, the user's method, the reply check. Its shape
    (plain, generator, coroutine, async generator) follows the rpc and the method."""
    check, reply_of = rpc.check, rpc.reply_of
    is_async = inspect.iscoroutinefunction(method)
    is_async_gen = inspect.isasyncgenfunction(method)
    if rpc.client_streaming:
        if is_async or is_async_gen:
            raise InvalidArgument(f"{rpc.service}.{rpc.name} is a client-streaming rpc: its method must be a plain "
                                  "function (or generator), not async def")

        def requests(items):
            for i, item in enumerate(items):
                yield rpc.parse_item(item, i)

        if rpc.server_streaming:
            def bidi(items, ctx):
                for reply in method(requests(items), ctx):
                    yield reply_of(reply)
            return bidi

        def client_stream(items, ctx):
            return reply_of(method(requests(items), ctx))
        return client_stream
    if rpc.server_streaming:
        if is_async_gen:
            async def server_stream_async(request, ctx):
                check(request)
                async for reply in method(request, ctx):
                    yield reply_of(reply)
            return server_stream_async

        def server_stream(request, ctx):
            check(request)
            for reply in method(request, ctx):
                yield reply_of(reply)
        return server_stream
    if is_async:
        async def unary_async(request, ctx):
            check(request)
            return reply_of(await method(request, ctx))
        return unary_async

    def unary(request, ctx):
        check(request)
        return reply_of(method(request, ctx))
    return unary
