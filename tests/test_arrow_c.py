"""C-level tests of the Arrow codec (tests/c/hms_arrow_test.c, tests/c/fuzz_arrow_decode.c).

* against the shipped libhms_ffi.so (what C, Go and Rust users link): the exported functions work;
* from the sources under ASan+UBSan: round trips, release rules, mutated/truncated/random layouts
  and a writer thread scribbling over a layout while it is decoded (HMS_ARROW_FUZZ_ITERS sets the
  number of mutated layouts, default 20000; HMS_ARROW_SEED replays a run);
* the libFuzzer target for a bounded time when clang with libFuzzer is installed
  (HMS_ARROW_FUZZ_SECONDS, default 20), starting from the committed corpus tests/c/corpus/arrow/.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hms_ffi_native import _paths

from conftest import c_sources_present, child_env

ROOT = Path(__file__).resolve().parent.parent
CC = os.environ.get("CC", "cc")
BASE_FLAGS = ["-std=gnu11", "-g", "-Wall", "-Wextra", "-Werror", "-Wno-format-truncation", "-D_GNU_SOURCE", "-pthread"]
SAN_FLAGS = ["-O1", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}

needs_cc = pytest.mark.skipif(shutil.which(CC) is None, reason=f"no C compiler ({CC})")
needs_src = pytest.mark.skipif(not c_sources_present(), reason="C sources not present (testing an installed wheel)")


def _compile(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, " ".join(cmd) + "\n" + r.stderr[-6000:]


def _run(cmd, env, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@needs_cc
def test_arrow_c_against_shipped_library(tmp_path):
    exe = tmp_path / "hms_arrow_test"
    libdir = _paths.libdir()
    _compile([CC, *BASE_FLAGS, "-O2", f"-I{_paths.includedir()}", str(ROOT / "tests" / "c" / "hms_arrow_test.c"),
              "-o", str(exe), f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-lhms_ffi"])
    r = _run([str(exe), "2000"], child_env(), 120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "all arrow tests passed" in r.stdout


@needs_cc
@needs_src
def test_arrow_c_under_asan_ubsan(tmp_path):
    exe = tmp_path / "hms_arrow_test_san"
    # The codec needs nothing of the core but status.c (errors); the full library is linked by the
    # test above. Building only these two keeps the sanitizer build fast.
    srcs = [str(ROOT / "csrc" / "arrow.c"), str(ROOT / "csrc" / "status.c")]
    _compile([CC, *BASE_FLAGS, *SAN_FLAGS, "-DHMS_FFI_BUILDING=1", f"-I{ROOT / 'include'}", f"-I{ROOT / 'csrc'}", *srcs,
              str(ROOT / "tests" / "c" / "hms_arrow_test.c"), "-o", str(exe)])
    r = _run([str(exe)], child_env(**SAN_ENV), 600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    assert "all arrow tests passed" in r.stdout
    # the mutations must reach the builder, not only the header checks
    accepted = int(r.stdout.split("(")[-1].split(" accepted")[0])
    assert accepted > 0, r.stdout


def _libfuzzer_clang():
    clang = shutil.which(os.environ.get("HMS_FUZZ_CC", "clang"))
    if not clang:
        return None
    probe = subprocess.run([clang, "-fsanitize=fuzzer", "-x", "c", "-", "-o", os.devnull],
                           input="#include <stdint.h>\n#include <stddef.h>\n"
                                 "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n",
                           capture_output=True, text=True)
    return clang if probe.returncode == 0 else None


@needs_src
def test_arrow_decode_libfuzzer(tmp_path):
    clang = _libfuzzer_clang()
    if not clang:
        pytest.skip("clang with libFuzzer is not installed (apt-get install clang)")
    exe = tmp_path / "fuzz_arrow_decode"
    _compile([clang, "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
              "-DHMS_FFI_BUILDING=1", "-D_GNU_SOURCE", f"-I{ROOT / 'include'}", f"-I{ROOT / 'csrc'}",
              str(ROOT / "csrc" / "arrow.c"), str(ROOT / "csrc" / "status.c"),
              str(ROOT / "tests" / "c" / "fuzz_arrow_decode.c"), "-o", str(exe)])
    corpus = tmp_path / "corpus"  # a scratch copy: the committed seeds stay as they are
    shutil.copytree(ROOT / "tests" / "c" / "corpus" / "arrow", corpus)
    assert len(list(corpus.iterdir())) >= 10
    seconds = int(os.environ.get("HMS_ARROW_FUZZ_SECONDS", "20"))
    r = _run([str(exe), f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048", str(corpus)],
             child_env(**SAN_ENV), seconds + 120)
    assert r.returncode == 0, r.stderr[-6000:]
    assert "Done" in r.stderr
