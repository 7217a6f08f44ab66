"""Malicious-peer fuzzing of the Python decoding layer (issue 6, item 2): hostile payload bytes for every
content type (hms_ffi_native._codec.decode) and hostile Arrow layouts (hms_ffi_native._arrow.decode)
may only end in a value or an FFIError (InvalidArgument), never in another exception or a crash.

* hypothesis (always): random bytes and mutations of valid encodings; HMS_FUZZ_EXAMPLES sets the count.
* atheris (when installed: pip install atheris): a coverage-guided run in a child process for
  HMS_FUZZ_RUNS inputs (default 3000), seeded with valid encodings; a crash of the interpreter (the
  Arrow decoder is C) fails the test with atheris' report.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hms_ffi_native as hms
from hms_ffi_native import _codec

from conftest import child_env

EXAMPLES = int(os.environ.get("HMS_FUZZ_EXAMPLES", "300"))
CONTENT_TYPES = [0, 1, 2, 3, 4, 5, 6, 7, 99, 2**31 - 1]
SAMPLES = [None, 1, -2**70, 1.5, "text", b"\x00\xff", [1, [2, {"k": b"v"}]], {"a": {1, 2}}]


def _valid_encodings():
    out = []
    for v in SAMPLES:
        for codec in ("cbor", "json"):
            try:
                out.append(_codec.encode(v, codec))
            except (hms.FFIError, TypeError, ValueError):
                pass
    try:
        import numpy as np

        from hms_ffi_native import _ndarray  # noqa: F401

        out.append(_codec.encode(np.arange(12, dtype="int32").reshape(3, 4), None))
    except Exception:
        pass
    return [(bytes(d), ct) for d, ct in out]


VALID = _valid_encodings()


def check_decode(ct: int, data: bytes) -> None:
    try:
        _codec.decode(ct, data)
    except hms.FFIError:
        pass


def _mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, pos, val in ops:
        if not b:
            b.append(val)
            continue
        i = pos % len(b)
        if kind == 0:
            b[i] = val
        elif kind == 1:
            del b[i:]
        else:
            b.insert(i, val)
    return bytes(b)


MUTATIONS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(CONTENT_TYPES), st.binary(max_size=512))
def test_decode_random_bytes_for_every_content_type(ct, data):
    check_decode(ct, data)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(range(len(VALID))) if VALID else st.just(None), MUTATIONS)
def test_decode_mutated_valid_encodings(i, ops):
    if i is None:
        pytest.skip("no valid encodings")
    data, ct = VALID[i]
    check_decode(ct, _mutate(data, ops))


def _arrow_seeds():
    pa = pytest.importorskip("pyarrow")
    from hms_ffi_native import _arrow

    seeds = []
    for obj in (pa.array([1, None, 3]), pa.array(["a", None, "ccc"]),
                pa.table({"x": [1.5, 2.5], "y": [["p"], []]}),
                pa.record_batch({"d": pa.array([{"k": 1}, None])})):
        buf = bytearray(_arrow.encoded_size(obj))
        n = _arrow.encode_into(obj, buf)
        seeds.append(bytes(buf[:n]))
    return _arrow, seeds


def check_arrow(_arrow, data: bytes) -> None:
    try:
        obj = _arrow.decode(data)
    except hms.FFIError:
        return
    # accepted: the data must be readable without crashing
    try:
        if hasattr(obj, "to_pylist"):
            obj.to_pylist()
        elif hasattr(obj, "to_pydict"):
            obj.to_pydict()
    except Exception:
        pass  # pyarrow may refuse values it cannot convert; it must not crash


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 3), MUTATIONS, st.binary(max_size=64))
def test_arrow_decode_hostile_layouts(i, ops, junk):
    _arrow, seeds = _arrow_seeds()
    check_arrow(_arrow, _mutate(seeds[i], ops))
    check_arrow(_arrow, junk)


ATHERIS_TARGET = textwrap.dedent('''
    import sys, atheris
    with atheris.instrument_imports():
        import hms_ffi_native as hms
        from hms_ffi_native import _codec
    try:
        from hms_ffi_native import _arrow
        import pyarrow  # noqa: F401
    except ImportError:
        _arrow = None
    CTS = [0, 1, 2, 3, 4, 5, 6, 7, 99]

    def one(data):
        fdp = atheris.FuzzedDataProvider(data)
        ct = CTS[fdp.ConsumeIntInRange(0, len(CTS) - 1)]
        arrow = fdp.ConsumeBool()
        body = fdp.ConsumeBytes(fdp.remaining_bytes())
        try:
            if arrow and _arrow is not None:
                obj = _arrow.decode(body)
                getattr(obj, "to_pylist", lambda: None)()
            else:
                _codec.decode(ct, body)
        except hms.FFIError:
            pass

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
''')


def test_atheris_decoders(tmp_path):
    try:
        import atheris  # noqa: F401
    except ImportError:
        if os.environ.get("HMS_REQUIRE_FUZZ") == "1":
            pytest.fail("atheris is not installed (pip install atheris) and HMS_REQUIRE_FUZZ=1")
        pytest.skip("atheris is not installed (pip install atheris); the hypothesis tests above cover the same functions")
    script = tmp_path / "atheris_decode.py"
    script.write_text(ATHERIS_TARGET)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k, (data, ct) in enumerate(VALID):
        (corpus / f"seed-{k}").write_bytes(bytes([CONTENT_TYPES.index(ct) if ct in CONTENT_TYPES else 0, 0]) + data)
    runs = int(os.environ.get("HMS_FUZZ_RUNS", "3000"))
    r = subprocess.run([sys.executable, str(script), f"-runs={runs}", "-timeout=10", "-rss_limit_mb=2048", str(corpus)],
                       capture_output=True, text=True, timeout=600, env=child_env(), cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    assert "Done" in r.stderr, r.stderr[-3000:]
