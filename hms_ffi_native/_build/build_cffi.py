"""cffi builder (API mode, out of line) for ``hms_ffi_native._native``.

The cdef is generated from ``include/hms_ffi/hms_ffi.h`` at build time -- the header is the single
source of truth and nothing from it is pasted here:

* the header is run through the C preprocessor with ``-DHMS_FFI_CDEF`` (which skips its system
  #includes and makes ``HMS_API`` empty), giving plain declarations cffi can parse;
* ``cc -E`` drops ``#define`` integer constants, so those are taken from the raw header text with a
  regex and added as ``#define NAME ...`` (cffi lets the C compiler fill in the value);
* the ``extern "Python"`` callbacks the Python layer implements with ``@ffi.def_extern()`` are appended.

Used by setup.py through ``cffi_modules=["hms_ffi_native/_build/build_cffi.py:ffibuilder"]``; cffi
executes this file (as ``__name__ == "__cffi__"``) with the current directory set to the project
root. Build in place with ``python setup.py build_ext --inplace``. Running this file directly
(``python hms_ffi_native/_build/build_cffi.py [header]``) prints the generated cdef.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import cffi

ROOT = Path(__file__).resolve().parent.parent.parent  # <root>/hms_ffi_native/_build/build_cffi.py
HEADER = ROOT / "include" / "hms_ffi" / "hms_ffi.h"

# `#define HMS_NAME <integer literal>` (optionally followed by a comment). Function-like macros and
# defines without an integer value (the include guard, HMS_API) never match.
_DEFINE_RE = re.compile(
    r"^[ \t]*#[ \t]*define[ \t]+(HMS_[A-Z0-9_]+)[ \t]+"
    r"(-?(?:0[xX][0-9A-Fa-f]+|[0-9]+)[uUlL]*)[ \t]*(?:$|/[/*])",
    re.MULTILINE,
)
_SKIP_DEFINES = {"HMS_FFI_H", "HMS_API"}

# Callbacks implemented in Python with @ffi.def_extern() (see the Python API modules).
PYTHON_CALLBACKS = """
extern "Python" hms_status_t _hms_py_handler(hms_call_t *call, const hms_payload_t *req, void *user_data);
extern "Python" void _hms_py_batch_handler(const hms_batch_t *batch, void *user_data);
"""


def _cc() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def integer_defines(header_text: str) -> list[str]:
    """Names of the ``#define HMS_... <integer>`` constants of the header, in order."""
    names: list[str] = []
    for m in _DEFINE_RE.finditer(header_text):
        name = m.group(1)
        if name not in _SKIP_DEFINES and name not in names:
            names.append(name)
    return names


def preprocess(header_path: str | os.PathLike) -> str:
    """The header run through ``cc -E -P -DHMS_FFI_CDEF`` (comments and directives removed)."""
    cmd = [*_cc(), "-E", "-P", "-DHMS_FFI_CDEF", "-x", "c", str(header_path)]
    try:
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise RuntimeError(
            f"building hms_ffi_native needs a C compiler: {cmd[0]!r} was not found "
            "(install gcc or clang, or set CC)"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(
            f"preprocessing {header_path} failed: {shlex.join(cmd)}\n{exc.stderr}"
        ) from exc
    return proc.stdout


def generate_cdef(header_path: str | os.PathLike = HEADER) -> str:
    """The complete cdef for ``ffibuilder.cdef()``, generated from the public header."""
    header_path = Path(header_path)
    text = header_path.read_text(encoding="utf-8")
    decls = preprocess(header_path)
    # Drop blank lines the preprocessor leaves behind; keeps the cdef readable when printed.
    decls = "\n".join(line for line in decls.splitlines() if line.strip())
    defines = "\n".join(f"#define {name} ..." for name in integer_defines(text))
    return (
        f"/* generated from {header_path.name} by hms_ffi_native/_build/build_cffi.py */\n"
        f"{decls}\n\n/* integer #defines (values filled in by the C compiler) */\n{defines}\n"
        f"\n/* Python-side callbacks (@ffi.def_extern) */{PYTHON_CALLBACKS}"
    )


def _rel(path: Path) -> str:
    """Path as setuptools wants it: relative to the project root (cffi runs us from there)."""
    try:
        return os.path.relpath(path, Path.cwd()) if Path.cwd().resolve() == ROOT else str(path)
    except ValueError:  # different drive (not on Linux, but harmless)
        return str(path)


def make_ffibuilder() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(generate_cdef(HEADER))
    sources = sorted((ROOT / "csrc").glob("*.c"))
    ffi.set_source(
        "hms_ffi_native._native",
        '#include "hms_ffi/hms_ffi.h"',
        sources=[_rel(p) for p in sources],
        include_dirs=[_rel(ROOT / "include"), _rel(ROOT / "csrc")],
        define_macros=[("HMS_FFI_BUILDING", "1"), ("_GNU_SOURCE", "1")],
        extra_compile_args=["-O2", "-fvisibility=hidden", "-std=gnu11", "-Wall", "-Wextra", "-Wno-format-truncation"],
        libraries=["pthread"],
    )
    return ffi


if __name__ == "__cffi__":  # executed by cffi's setuptools integration (setup.py)
    ffibuilder = make_ffibuilder()


def __getattr__(name: str):
    # On a plain import (e.g. a test that only wants generate_cdef) the builder is created on first
    # access, so importing this module never needs csrc/ or a compiler.
    if name == "ffibuilder":
        global ffibuilder
        ffibuilder = make_ffibuilder()
        return ffibuilder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # print the generated cdef (debugging aid)
    import sys

    sys.stdout.write(generate_cdef(sys.argv[1] if len(sys.argv) > 1 else HEADER))
