"""The crash matrix (tests/chaos/harness.py) as a bounded CI run.

HMS_CHAOS_ROUNDS (default 200, ~15-30 s on 2 cores) rounds, each killing a server, client, publisher or
subscriber with SIGKILL at a random point; HMS_CHAOS_SEED replays a run (the seed is printed, and named
in every failure); HMS_CHAOS_MAX_SECONDS (default 60) stops early on a slow machine. Long runs:
``HMS_CHAOS_ROUNDS=5000 pytest tests/chaos`` or ``python tests/chaos/harness.py --rounds 5000``.

Latency bound asserted (kill() of a server -> its pending call raises UNAVAILABLE in the survivor): the
99th percentile within 100 ms (the design's promise) and every single call within 500 ms. A single
sample is not held to 100 ms: on a loaded 2-core CI machine the process teardown and the wake-up of the
harness's Python threads alone have been seen to take ~85 ms (with other test suites running), and a
one-off scheduling hiccup must not fail CI; a hang or a slow path (a waiter that only notices the death
at a timeout) shows up far above 500 ms and in the percentile.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Harness, format_summary  # noqa: E402

ROUNDS = int(os.environ.get("HMS_CHAOS_ROUNDS", "200"))
SEED = int(os.environ["HMS_CHAOS_SEED"]) if os.environ.get("HMS_CHAOS_SEED") else None
MAX_SECONDS = float(os.environ.get("HMS_CHAOS_MAX_SECONDS", "60"))

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open") or not sys.platform.startswith("linux"),
                                reason="the crash matrix needs Linux pidfds (Python >= 3.9, kernel >= 5.3)")


def test_crash_matrix(runtime_dir, capsys):
    h = Harness(runtime_dir=runtime_dir, seed=SEED)
    with capsys.disabled():
        print(f"\nchaos: seed {h.seed} (HMS_CHAOS_SEED={h.seed} replays it), {ROUNDS} rounds", flush=True)
    try:
        h.run(ROUNDS, MAX_SECONDS)
    finally:
        summary = h.summary()
        with capsys.disabled():
            print(format_summary(summary), flush=True)
        if os.environ.get("HMS_CHAOS_REPORT"):
            Path(os.environ["HMS_CHAOS_REPORT"]).write_text(json.dumps(summary, indent=2))
        h.close()
    counts = summary["counts"]
    if counts["rounds"] >= 100:  # every scenario of the matrix ran
        missing = [k for k in Harness.SERVER_SCENARIOS + Harness.CLIENT_SCENARIOS + Harness.TOPIC_SCENARIOS
                   if not counts.get(k)]
        assert not missing, f"scenarios that never ran: {missing}"
    lat = summary["latency_ms"]["server_kill_to_unavailable"]
    assert lat["p99"] <= 100, f"p99 of kill -> UNAVAILABLE is {lat['p99']} ms (> 100 ms): {lat}"
    assert lat["max"] <= 500, f"a pending call took {lat['max']} ms after the kill to fail (> 500 ms): {lat}"
    assert counts["pending_calls_failed"] > 0
