#!/usr/bin/env python3
"""Generates bindings/php/hms_ffi.php.h, the declarations PHP's FFI::cdef() loads, from the public
header include/hms_ffi/hms_ffi.h. Nothing from the header is copied by hand.

    python bindings/php/tools/gen_header.py            # rewrite bindings/php/hms_ffi.php.h
    python bindings/php/tools/gen_header.py --check    # exit 1 if the committed copy is stale
    python bindings/php/tools/gen_header.py --stdout [HEADER]

How (the same idea as hms_ffi_native/_build/build_cffi.py for cffi):
* the header runs through `cc -E -P -DHMS_FFI_CDEF`, which skips its system #includes, makes
  HMS_API empty and drops comments and directives: PHP's FFI parser understands none of those;
* PHP FFI has no preprocessor, so the integer `#define HMS_...` constants would be lost. The
  preprocessor itself evaluates them (a stringifying macro prints name and value) and they are
  emitted as an `enum` of the same names, so PHP reads them like the header's own enums
  (`$ffi->HMS_FFI_ABI_VERSION`). A value that does not fit a C int is refused: an enum cannot hold it;
* the declarations are re-tokenized and printed in one fixed layout, so the output does not depend
  on how a given gcc or clang spaces its -E output (the staleness test must not flap between
  compilers).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

PHP_DIR = Path(__file__).resolve().parent.parent          # bindings/php
ROOT = PHP_DIR.parent.parent                              # repository root
HEADER = ROOT / "include" / "hms_ffi" / "hms_ffi.h"
OUTPUT = PHP_DIR / "hms_ffi.php.h"

# `#define HMS_NAME <integer literal>` (optionally followed by a comment); function-like macros,
# the include guard and HMS_API never match.
_DEFINE_RE = re.compile(
    r"^[ \t]*#[ \t]*define[ \t]+(HMS_[A-Z0-9_]+)[ \t]+"
    r"(-?(?:0[xX][0-9A-Fa-f]+|[0-9]+)[uUlL]*)[ \t]*(?:$|/[/*])",
    re.MULTILINE,
)
_SKIP_DEFINES = {"HMS_FFI_H", "HMS_API"}
_TOKEN_RE = re.compile(
    r"\s*(?:(?P<tok>[A-Za-z_][A-Za-z0-9_]*|0[xX][0-9A-Fa-f]+[uUlL]*|[0-9]+[uUlL]*"
    r"|\"(?:[^\"\\]|\\.)*\"|\.\.\.|<<|>>|[{}()\[\];,*=<>|&+\-~:.])|(?P<bad>\S))"
)


def _cc() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def _preprocess(source: str, include_dir: Path) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".c", delete=False) as f:
        f.write(source)
        path = f.name
    cmd = [*_cc(), "-E", "-P", "-DHMS_FFI_CDEF", f"-I{include_dir}", "-x", "c", path]
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError as exc:
        raise SystemExit(f"gen_header: the C compiler {cmd[0]!r} was not found (install gcc or clang, or set CC)") from exc
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"gen_header: preprocessing failed: {shlex.join(cmd)}\n{exc.stderr}") from exc
    finally:
        os.unlink(path)


def integer_defines(header: Path) -> list[tuple[str, int]]:
    """(name, value) of every integer #define, values computed by the preprocessor."""
    names: list[str] = []
    for m in _DEFINE_RE.finditer(header.read_text(encoding="utf-8")):
        if m.group(1) not in _SKIP_DEFINES and m.group(1) not in names:
            names.append(m.group(1))
    probe = [f'#include "{header.name}"', "#define HMS_PHP_DEFINE(n) HMS_PHP_VALUE #n n"]
    probe += [f"HMS_PHP_DEFINE({n})" for n in names]
    out = _preprocess("\n".join(probe) + "\n", header.parent)
    values: dict[str, int] = {}
    for m in re.finditer(r'HMS_PHP_VALUE\s+"(\w+)"\s+\(?\s*(-?)\s*(0[xX][0-9A-Fa-f]+|[0-9]+)[uUlL]*\s*\)?', out):
        values[m.group(1)] = int(m.group(2) + m.group(3), 0)
    result = []
    for n in names:
        if n not in values:
            raise SystemExit(f"gen_header: #define {n} did not expand to an integer literal; keep the header's "
                             "constants plain integers (STYLE.md) or teach gen_header.py the new form")
        if not -(2**31) <= values[n] < 2**31:
            raise SystemExit(f"gen_header: #define {n} = {values[n]} does not fit a C int, so PHP FFI cannot "
                             "see it as an enum constant; expose it through a function instead")
        result.append((n, values[n]))
    return result


def _declarations(header: Path) -> list[str]:
    text = _preprocess(f'#include "{header.name}"\n', header.parent)
    tokens: list[str] = []
    for m in _TOKEN_RE.finditer(text):
        if m.group("bad"):
            raise SystemExit(f"gen_header: unexpected character {m.group('bad')!r} in the preprocessed header")
        if m.group("tok"):
            tokens.append(m.group("tok"))
    return tokens


def _layout(tokens: list[str]) -> str:
    """One declaration per line, struct/enum members indented: a layout no compiler influences."""
    lines: list[str] = []
    cur: list[str] = []
    depth = 0

    def flush() -> None:
        if cur:
            lines.append("  " * depth + _join(cur))
            cur.clear()

    for t in tokens:
        if t == "{":
            cur.append("{")
            flush()
            depth += 1
        elif t == "}":
            flush()
            depth -= 1
            cur.append("}")
        elif t == ";":
            cur.append(";")
            flush()
        elif t == "," and depth > 0 and not _inside_parens(cur):
            cur.append(",")
            flush()
        else:
            cur.append(t)
    flush()
    if depth != 0:
        raise SystemExit("gen_header: unbalanced braces in the preprocessed header")
    return "\n".join(lines)


def _inside_parens(cur: list[str]) -> bool:
    return cur.count("(") > cur.count(")")


def _join(toks: list[str]) -> str:
    out = ""
    prev = ""
    for t in toks:
        if not out:
            out = t
        elif t in (",", ";", ")", "]", "[") or prev in ("(", "[", "*") or (t == "(" and (_is_word(prev) or prev == ")")):
            out += t
        else:
            out += " " + t
        prev = t
    return out


def _is_word(t: str) -> bool:
    return bool(re.match(r"[A-Za-z_0-9]", t))


def generate(header: Path = HEADER) -> str:
    header = header.resolve()
    decls = _layout(_declarations(header))
    defines = integer_defines(header)
    enum = "enum {\n" + ",\n".join(f"  {n} = {v}" for n, v in defines) + "\n};"
    return (
        "/* GENERATED by bindings/php/tools/gen_header.py from include/hms_ffi/hms_ffi.h: do not edit.\n"
        "   Regenerate: python bindings/php/tools/gen_header.py (tests/test_binding_php.py fails when stale). */\n"
        f"{decls}\n"
        "/* the header's integer #defines, evaluated by the preprocessor */\n"
        f"{enum}\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("header", nargs="?", type=Path, default=HEADER)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 when the committed file differs")
    g.add_argument("--stdout", action="store_true", help="print instead of writing")
    g.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = ap.parse_args(argv)
    text = generate(args.header)
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else None
        if current != text:
            print(f"{OUTPUT} is stale (or missing): run python bindings/php/tools/gen_header.py and commit it",
                  file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
