"""Malicious-peer fuzzing of the C core's receiving side (issue 6, item 2) and a ThreadSanitizer stress test
of the ring and wait code (issue 6, item 7).

* libFuzzer targets (tests/c/fuzz_server_ring.c: a hostile client's request ring against a real server;
  fuzz_client_ring.c: a hostile server's response ring against a real client; fuzz_handshake.c: hostile
  hellos and welcomes), built from the sources with clang -fsanitize=fuzzer,address,undefined:
  - every committed input (tests/c/corpus/<target>/: seeds from gen_seeds.py and regress-* inputs of
    fixed findings) is replayed once, deterministically, with the descriptor check after every input;
  - then each target fuzzes for HMS_FUZZ_SECONDS (default 10) from a scratch copy of its corpus.
  Skipped when clang with libFuzzer is missing, unless HMS_REQUIRE_FUZZ=1 (CI sets it).
* tests/c/tsan_ring_stress.c under -fsanitize=thread: HMS_TSAN_FRAMES frames (default 300000, a few
  seconds) through one ring, both sides spinning and sleeping. Skipped without a TSan runtime unless
  HMS_REQUIRE_FUZZ=1.
Long runs on demand: docs/fuzzing.md.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import c_sources_present, child_env

ROOT = Path(__file__).resolve().parent.parent
CDIR = ROOT / "tests" / "c"
CORPUS = CDIR / "corpus"
TARGETS = ("server_ring", "client_ring", "handshake")
REQUIRE = os.environ.get("HMS_REQUIRE_FUZZ") == "1"
SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1:allocator_may_return_null=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1", "TSAN_OPTIONS": "halt_on_error=1:second_deadlock_stack=1"}

pytestmark = pytest.mark.skipif(not c_sources_present(), reason="C sources not present (testing an installed wheel)")


def _skip_or_fail(why: str):
    if REQUIRE:
        pytest.fail(f"{why}; HMS_REQUIRE_FUZZ=1 demands these tests run (apt-get install clang)")
    pytest.skip(why)


def _libfuzzer_clang():
    clang = shutil.which(os.environ.get("HMS_FUZZ_CC", "clang"))
    if not clang:
        return None
    probe = subprocess.run([clang, "-fsanitize=fuzzer", "-x", "c", "-", "-o", os.devnull],
                           input="#include <stdint.h>\n#include <stddef.h>\n"
                                 "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n",
                           capture_output=True, text=True)
    return clang if probe.returncode == 0 else None


def _core_sources():
    return sorted(str(p) for p in (ROOT / "csrc").glob("*.c"))


@pytest.fixture(scope="module")
def fuzzers(tmp_path_factory):
    clang = _libfuzzer_clang()
    if not clang:
        _skip_or_fail("clang with libFuzzer is not installed")
    out = tmp_path_factory.mktemp("fuzz")
    built = {}
    for t in TARGETS:
        exe = out / f"fuzz_{t}"
        cmd = [clang, "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", "-Wall",
               "-Wextra", "-Werror", "-DHMS_FFI_BUILDING=1", "-D_GNU_SOURCE", f"-I{ROOT / 'include'}",
               f"-I{ROOT / 'csrc'}", *_core_sources(), str(CDIR / f"fuzz_{t}.c"), "-o", str(exe), "-pthread"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, " ".join(cmd) + "\n" + r.stderr[-6000:]
        built[t] = exe
    return built


def _run(cmd, timeout, **env):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(**SAN_ENV, **env))


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_corpus_replay(fuzzers, target):
    """Every committed input once (seeds and the regression inputs of fixed findings), checking for leaked
    descriptors after each one: the deterministic part, and the regression tests of what was found."""
    files = sorted(str(p) for p in (CORPUS / target).iterdir() if p.is_file())
    assert len(files) >= 8, f"the {target} corpus is missing: run tests/c/corpus/gen_seeds.py"
    r = _run([str(fuzzers[target]), "-timeout=20", "-rss_limit_mb=2048", *files], 600, HMS_FUZZ_FD_EVERY="1")
    assert r.returncode == 0, r.stderr[-8000:]
    assert r.stderr.count("Executed ") == len(files), r.stderr[-3000:]


def test_regressions_are_committed():
    """The findings fixed so far keep their inputs (replayed by test_fuzz_corpus_replay)."""
    names = {p.name for p in (CORPUS / "server_ring").iterdir()}
    assert {"regress-signal-on-serving-thread", "regress-empty-message-with-fd", "regress-oneway-batch-empty-payloads"} <= names


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_bounded(fuzzers, target, tmp_path):
    seconds = int(os.environ.get("HMS_FUZZ_SECONDS", "10"))
    corpus = tmp_path / "corpus"  # a scratch copy: the committed corpus stays as it is
    shutil.copytree(CORPUS / target, corpus)
    r = _run([str(fuzzers[target]), f"-max_total_time={seconds}", "-timeout=20", "-rss_limit_mb=2048",
              "-print_final_stats=1", f"-artifact_prefix={tmp_path}/", str(corpus)], seconds + 300)
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "leak-", "oom-")))
    assert r.returncode == 0 and not crashes, (
        f"fuzz_{target} found {crashes}: reproduce with the binary and the file; stderr:\n" + r.stderr[-8000:])
    assert "Done" in r.stderr
    runs = [line for line in r.stderr.splitlines() if line.startswith("stat::number_of_executed_units")]
    print(f"fuzz_{target}: {runs[0] if runs else '?'} in {seconds} s")


def _tsan_cc():
    cc = os.environ.get("CC", "cc")
    if not shutil.which(cc):
        return None
    probe = subprocess.run([cc, "-fsanitize=thread", "-x", "c", "-", "-o", os.devnull, "-pthread"],
                           input="int main(void) { return 0; }\n", capture_output=True, text=True)
    return cc if probe.returncode == 0 else None


def test_ring_wait_under_tsan(tmp_path):
    cc = _tsan_cc()
    if not cc:
        _skip_or_fail("no compiler with a ThreadSanitizer runtime (-fsanitize=thread)")
    exe = tmp_path / "tsan_ring_stress"
    cmd = [cc, "-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-fsanitize=thread", "-DHMS_FFI_BUILDING=1",
           "-D_GNU_SOURCE", f"-I{ROOT / 'include'}", f"-I{ROOT / 'csrc'}", str(ROOT / "csrc" / "ring.c"),
           str(ROOT / "csrc" / "wait.c"), str(CDIR / "tsan_ring_stress.c"), "-o", str(exe), "-pthread"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, " ".join(cmd) + "\n" + r.stderr[-6000:]
    frames = os.environ.get("HMS_TSAN_FRAMES", "300000")
    r = _run([str(exe), frames], 600)
    assert r.returncode == 0 and "WARNING: ThreadSanitizer" not in r.stderr, r.stdout + r.stderr[-8000:]
    assert "ring stress passed" in r.stdout
    print(r.stdout.strip())
