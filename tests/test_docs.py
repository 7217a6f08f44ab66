"""The docs' examples run: every block of docs/*.md marked runnable is executed, page by page.

Markers (an HTML comment on the line before a fenced block; GitHub does not render it):

    <!-- run -->                     run the block: ```python with this test's Python, ```sh with bash -e
    <!-- run file=client.c -->       write the block to client.c in the page's directory (not run);
                                     a later block of the same page uses it
    <!-- run requires=grpc,cc -->    skip the page's remaining blocks when a module cannot be imported
                                     (or, for cc/go/cargo/php/pkg-config, a command is not on PATH)
    <!-- output -->                  the next block lists lines the previous run block must print,
                                     in that order (each a substring of one line of its stdout)

Each page runs in a fresh temp directory (its cwd) with a fresh runtime directory
(HMS_FFI_RUNTIME_DIR), with `python` and `hms-ffi` on PATH meaning this test's interpreter and package.
A block must finish within BLOCK_TIMEOUT seconds and exit 0.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import child_env

DOCS = Path(__file__).resolve().parent.parent / "docs"
if not DOCS.is_dir():  # an installed-wheel run from a copy of tests/: the docs live in the source tree
    pytest.skip("docs/ is source-tree only (this run tests an installed package from a copy of tests/)",
                allow_module_level=True)
BLOCK_TIMEOUT = 30
COMMANDS = {"cc", "gcc", "go", "cargo", "php", "pkg-config"}
MARK = re.compile(r"^<!--\s*(run|output)\b(.*?)-->\s*$")
FENCE = re.compile(r"^(```+)\s*([\w+-]*)\s*$")


def parse(page: Path) -> list:
    """[(kind, options, lang, code, line)] for each marked block of ``page``."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = MARK.match(lines[i].strip())
        if not m:
            i += 1
            continue
        kind, opts = m.group(1), dict(o.split("=", 1) for o in m.group(2).split() if "=" in o)
        j = i + 1
        f = FENCE.match(lines[j]) if j < len(lines) else None
        if not f:
            raise AssertionError(f"{page.name}:{i + 1}: a <!-- {kind} --> marker must be followed by a fenced block")
        end = j + 1
        while end < len(lines) and lines[end].strip() != f.group(1):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page.name}:{j + 1}: unterminated fenced block")
        blocks.append((kind, opts, f.group(2), "\n".join(lines[j + 1:end]) + "\n", j + 1))
        i = end + 1
    return blocks


def missing(requires: str) -> list:
    out = []
    for r in filter(None, requires.split(",")):
        if r in COMMANDS:
            if shutil.which(r) is None:
                out.append(f"command {r}")
        elif importlib.util.find_spec(r) is None:
            out.append(f"module {r}")
    return out


PAGES = sorted(p for p in DOCS.glob("*.md") if any(k == "run" for k, *_ in parse(p)))


def test_pages_with_examples():
    """Every concept page has at least one example CI runs (pages listed here must keep theirs)."""
    want = {"services.md", "patterns.md", "zero-copy.md", "bindings.md", "security.md", "operations.md",
            "gateway.md", "idl.md"}
    have = {p.name for p in PAGES}
    assert want <= have, f"pages without a runnable example: {sorted(want - have)}"


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_doc_examples(page: Path):
    work = Path(tempfile.mkdtemp(prefix="hmsdoc-", dir="/tmp"))
    rt = work / "rt"  # short: Unix socket paths are limited to 107 bytes
    rt.mkdir(mode=0o700)
    cwd = work / "cwd"
    cwd.mkdir()
    bindir = work / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    (bindir / "hms-ffi").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hms_ffi_native "$@"\n')
    (bindir / "hms-ffi").chmod(0o755)
    env = child_env(HMS_FFI_RUNTIME_DIR=str(rt), PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    last_out, skipped = None, []
    try:
        for kind, opts, lang, code, line in parse(page):
            where = f"{page.name}:{line}"
            if kind == "output":
                assert last_out is not None, f"{where}: <!-- output --> without a run block before it"
                pos, out_lines = 0, last_out.splitlines()
                for want in filter(None, (w.strip() for w in code.splitlines())):
                    while pos < len(out_lines) and want not in out_lines[pos]:
                        pos += 1
                    assert pos < len(out_lines), f"{where}: expected output line {want!r} not printed " \
                                                 f"(in order); stdout was:\n{last_out}"
                    pos += 1
                continue
            lack = missing(opts.get("requires", ""))
            if lack:
                skipped.append(f"{where} needs {', '.join(lack)}")
                break  # later blocks of the page may depend on this one
            if "file" in opts:
                (cwd / opts["file"]).write_text(code)
                continue
            if lang == "python":
                (cwd / "example.py").write_text(code)
                cmd = [sys.executable, "example.py"]
            elif lang in ("sh", "bash", "console"):
                (cwd / "example.sh").write_text(code)
                cmd = ["bash", "-e", "example.sh"]
            else:
                raise AssertionError(f"{where}: cannot run a ```{lang} block (give it file=NAME and run it from sh)")
            try:
                r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired as e:
                raise AssertionError(f"{where}: the example did not finish within {BLOCK_TIMEOUT} s; "
                                     f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}") from None
            assert r.returncode == 0, f"{where}: the example exited {r.returncode}\nstdout:\n{r.stdout}\n" \
                                      f"stderr:\n{r.stderr}"
            last_out = r.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if skipped:
        pytest.skip("; ".join(skipped))
