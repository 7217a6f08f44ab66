"""Per-function metrics of services: snapshots as dicts, rates, percentiles, Prometheus text and
OpenTelemetry instruments.

The C core keeps the counters in a shared-memory block per service (see "Metrics and tracing" in
include/hms_ffi/hms_ffi.h). This process's own services are read directly (``Service.stats()``);
another process's through a read-only mapping the service hands over on a stats handshake
(``stats("name")``, ``StatsView``), without disturbing its calls.

A snapshot dict::

    {"service": "demo.echo", "version": "1.0.0", "node": "srv", "pid": 4242, "alive": True,
     "uptime_s": 12.5, "connections": 1, "connections_total": 3, "handshakes_refused": 0,
     "unknown_function_calls": 0, "stats_reads": 2,
     "functions": {"echo": {"id": 1, "calls": 1000, "completed": 1000, "errors": 0, "in_flight": 0,
                            "oneway": 0, "streams": 0, "cancels": 0, "deferred": 0,
                            "bytes_in": 64000, "bytes_out": 64000,
                            "status": {"OK": 1000},                 # non-zero codes only
                            "latency": {"count": 1000, "sum_ns": ..., "max_ns": ..., "mean_ns": ...,
                                        "p50_ns": ..., "p90_ns": ..., "p99_ns": ...,
                                        "buckets": [48 counts: bucket i = [2**i, 2**(i+1)) ns]}}}}

Percentiles come from the log2 histogram (interpolated inside a bucket), so they are estimates
within a factor of two of the truth at worst, and much closer in practice.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Optional

from ._errors import STATUS_NAMES
from ._native import ffi, lib

__all__ = ["stats", "StatsView", "prometheus_text", "percentile_ns", "rates", "otel_register"]

BUCKETS = 48
_NS = 1_000_000_000
_FN_FIELDS = ("calls", "completed", "errors", "in_flight", "oneway", "streams", "cancels", "deferred", "bytes_in",
              "bytes_out")


def _raise(st: int, err) -> None:
    from ._core import _raise as core_raise

    core_raise(st, err)


def percentile_ns(buckets: List[int], q: float, max_ns: Optional[int] = None) -> Optional[float]:
    """The q-quantile (0..1) of a log2 latency histogram, in ns (None when it is empty): the bucket
    that holds it, interpolated linearly inside it, capped at the largest latency seen."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            lo, hi = (0.0, 2.0) if i == 0 else (float(2 ** i), float(2 ** (i + 1)))
            v = lo + (hi - lo) * max(0.0, min(1.0, (rank - seen) / n))
            return min(v, float(max_ns)) if max_ns else v
        seen += n
    return float(max_ns) if max_ns else float(2 ** BUCKETS)


def _latency(buckets: List[int], sum_ns: int, max_ns: int) -> Dict[str, Any]:
    count = sum(buckets)
    return {"count": count, "sum_ns": sum_ns, "max_ns": max_ns, "mean_ns": (sum_ns / count) if count else None,
            "p50_ns": percentile_ns(buckets, 0.50, max_ns), "p90_ns": percentile_ns(buckets, 0.90, max_ns),
            "p99_ns": percentile_ns(buckets, 0.99, max_ns), "buckets": buckets}


def _to_dict(snap) -> Dict[str, Any]:
    fns: Dict[str, Any] = {}
    for i in range(snap.function_count):
        f = snap.functions[i]
        d: Dict[str, Any] = {"id": f.id, "flags": f.flags}
        for k in _FN_FIELDS:
            d[k] = int(getattr(f, k))
        d["status"] = {STATUS_NAMES[c]: int(f.status[c]) for c in range(lib.HMS_STATS_STATUS_CODES)
                       if f.status[c]}
        d["latency"] = _latency(list(ffi.unpack(f.latency_buckets, BUCKETS)), int(f.latency_sum_ns),
                                int(f.latency_max_ns))
        fns[ffi.string(f.name).decode()] = d
    return {"service": ffi.string(snap.service).decode(), "version": ffi.string(snap.service_version).decode(),
            "node": ffi.string(snap.node).decode(), "pid": snap.pid, "alive": bool(snap.alive),
            "uptime_s": snap.uptime_ns / _NS, "connections": int(snap.connections),
            "connections_total": int(snap.connections_total), "handshakes_refused": int(snap.handshakes_refused),
            "unknown_function_calls": int(snap.unknown_function_calls), "stats_reads": int(snap.stats_reads),
            "functions": fns, "time": time.time()}


def _snapshot(fill) -> Dict[str, Any]:
    snap = ffi.new("hms_service_stats_t *")
    lib.hms_service_stats_init(snap)
    err = ffi.new("hms_error_t *")
    st = fill(snap, err)
    if st:
        _raise(st, err)
    try:
        return _to_dict(snap)
    finally:
        snap.release(snap)


def service_stats(service) -> Dict[str, Any]:
    """Snapshot of a service served by this process (``Service.stats()``)."""
    service.node._check_open()
    return _snapshot(lambda s, e: lib.hms_service_stats(service._ptr, s, e))


class StatsView:
    """A read-only view of another process's service counters: ``snapshot()`` as often as you like
    (each is a copy of the counters at that moment). Close it (or use ``with``). It stays readable
    after the service went away: ``alive`` turns False and the last counters remain."""

    def __init__(self, service: str, version: str = "*", *, runtime_dir: Optional[str] = None,
                 timeout: Optional[float] = 5.0, node=None) -> None:
        from ._core import _default_node, _timeout_ns

        if node is None and runtime_dir is not None:
            node = _default_node(runtime_dir)
        out = ffi.new("hms_stats_t **")
        err = ffi.new("hms_error_t *")
        st = lib.hms_stats_open(node._ptr if node is not None else ffi.NULL, service.encode(), version.encode(),
                                -1 if timeout is None else _timeout_ns(timeout), out, err)
        if st:
            _raise(st, err)
        self._ptr = out[0]
        self.service = service

    def snapshot(self) -> Dict[str, Any]:
        if self._ptr is None:
            from ._errors import FailedPrecondition

            raise FailedPrecondition("this stats view is closed")
        return _snapshot(lambda s, e: lib.hms_stats_snapshot(self._ptr, s, e))

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            lib.hms_stats_close(ptr)

    def __enter__(self) -> "StatsView":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def stats(service: str, version: str = "*", *, runtime_dir: Optional[str] = None,
          timeout: Optional[float] = 5.0) -> Dict[str, Any]:
    """One snapshot of the counters of ``service`` (the newest live version matching ``version``),
    served by any process on this host. Raises NotFound when no such service is live."""
    with StatsView(service, version, runtime_dir=runtime_dir, timeout=timeout) as v:
        return v.snapshot()


def rates(prev: Dict[str, Any], cur: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per function between two snapshots of one service: calls/s, errors/s, and p50/p99 of the calls
    that finished in between (from the histogram's difference). A function new in ``cur`` counts
    from zero."""
    dt = max(cur.get("time", 0) - prev.get("time", 0), 1e-9)
    out = {}
    for name, f in cur["functions"].items():
        p = prev["functions"].get(name)
        pb = p["latency"]["buckets"] if p else [0] * BUCKETS
        delta = [max(0, a - b) for a, b in zip(f["latency"]["buckets"], pb)]
        out[name] = {
            "calls_per_s": (f["calls"] - (p["calls"] if p else 0)) / dt,
            "errors_per_s": (f["errors"] - (p["errors"] if p else 0)) / dt,
            "p50_ns": percentile_ns(delta, 0.50, f["latency"]["max_ns"]),
            "p99_ns": percentile_ns(delta, 0.99, f["latency"]["max_ns"]),
        }
    return out


# ------------------------------------------------------------------------------------- Prometheus
def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(snapshots: Iterable[Dict[str, Any]]) -> str:
    """The Prometheus text exposition format (version 0.0.4) of service snapshots: counters per
    function and status, the latency histogram in seconds (cumulative ``le`` buckets at the log2
    bounds), in-flight gauges and connection gauges."""
    snaps = list(snapshots)
    lines: List[str] = []

    def family(name: str, kind: str, help_: str, rows: List[str]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(rows)

    def labels(s: Dict[str, Any], fn: Optional[str] = None, **extra: str) -> str:
        parts = [f'service="{_esc(s["service"])}"', f'version="{_esc(s["version"])}"']
        if fn is not None:
            parts.append(f'function="{_esc(fn)}"')
        parts += [f'{k}="{_esc(v)}"' for k, v in extra.items()]
        return "{" + ",".join(parts) + "}"

    def rows(metric: str, key: str) -> List[str]:
        return [f"{metric}{labels(s, fn)} {f[key]}" for s in snaps for fn, f in s["functions"].items()]

    family("hms_calls_total", "counter", "Calls started by the service's dispatcher.", rows("hms_calls_total", "calls"))
    family("hms_calls_completed_total", "counter", "Calls finished, by status code.",
           [f"hms_calls_completed_total{labels(s, fn, status=st)} {n}" for s in snaps
            for fn, f in s["functions"].items() for st, n in sorted(f["status"].items())])
    family("hms_call_errors_total", "counter", "Calls finished with a status other than OK.",
           rows("hms_call_errors_total", "errors"))
    family("hms_calls_in_flight", "gauge", "Calls started and not finished.", rows("hms_calls_in_flight", "in_flight"))
    family("hms_oneway_calls_total", "counter", "One-way calls among the calls.", rows("hms_oneway_calls_total", "oneway"))
    family("hms_stream_calls_total", "counter", "Stream calls among the calls.", rows("hms_stream_calls_total", "streams"))
    family("hms_calls_cancelled_before_start_total", "counter", "Requests skipped: cancelled before they started.",
           rows("hms_calls_cancelled_before_start_total", "cancels"))
    family("hms_request_bytes_total", "counter", "Request payload bytes.", rows("hms_request_bytes_total", "bytes_in"))
    family("hms_response_bytes_total", "counter", "Reply and stream item payload bytes.",
           rows("hms_response_bytes_total", "bytes_out"))
    hist: List[str] = []
    for s in snaps:
        for fn, f in s["functions"].items():
            lat = f["latency"]
            acc = 0
            for i, n in enumerate(lat["buckets"][:-1]):
                acc += n
                hist.append(f'hms_call_duration_seconds_bucket{labels(s, fn, le=repr(2 ** (i + 1) / _NS))} {acc}')
            hist.append(f'hms_call_duration_seconds_bucket{labels(s, fn, le="+Inf")} {lat["count"]}')
            hist.append(f"hms_call_duration_seconds_sum{labels(s, fn)} {lat['sum_ns'] / _NS!r}")
            hist.append(f"hms_call_duration_seconds_count{labels(s, fn)} {lat['count']}")
    family("hms_call_duration_seconds", "histogram", "Time from the dispatcher taking a request to its reply.", hist)
    family("hms_connections", "gauge", "Clients connected now.",
           [f"hms_connections{labels(s)} {s['connections']}" for s in snaps])
    family("hms_connections_total", "counter", "Clients that completed the handshake.",
           [f"hms_connections_total{labels(s)} {s['connections_total']}" for s in snaps])
    family("hms_unknown_function_calls_total", "counter", "Requests naming a function the service does not have.",
           [f"hms_unknown_function_calls_total{labels(s)} {s['unknown_function_calls']}" for s in snaps])
    family("hms_service_up", "gauge", "1 while the serving process lives.",
           [f"hms_service_up{labels(s)} {int(s['alive'])}" for s in snaps])
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- OpenTelemetry
def otel_register(sources, meter_provider=None) -> List[Any]:
    """Exports the counters through OpenTelemetry metrics (needs ``opentelemetry-api``; imported only
    here). ``sources`` is a list of StatsView, Service (this process's) or callables returning a
    snapshot dict; each collection takes one snapshot of each. Instruments: ``hms.calls``,
    ``hms.calls.completed`` (attribute ``rpc.grpc.status``), ``hms.call.errors``, ``hms.calls.in_flight``,
    ``hms.call.duration.sum`` (s), ``hms.call.duration.p50`` / ``.p99`` (s, since the process started),
    ``hms.connections``; attributes ``rpc.service``, ``service.version``, ``rpc.method``.
    Returns the instruments (keep them referenced as long as they should report)."""
    from opentelemetry import metrics
    from opentelemetry.metrics import Observation

    meter = (meter_provider.get_meter("hms_ffi_native") if meter_provider is not None
             else metrics.get_meter("hms_ffi_native"))

    def snap_all() -> List[Dict[str, Any]]:
        out = []
        for src in sources:
            if callable(src):
                out.append(src())
            elif hasattr(src, "snapshot"):
                out.append(src.snapshot())
            else:
                out.append(src.stats())
        return out

    def attrs(s, fn=None, **extra):
        a = {"rpc.system": "hms-ffi", "rpc.service": s["service"], "service.version": s["version"]}
        if fn is not None:
            a["rpc.method"] = fn
        a.update(extra)
        return a

    def fn_obs(key, scale=1.0):
        def cb(options):
            return [Observation(f[key] * scale if scale != 1.0 else f[key], attrs(s, fn))
                    for s in snap_all() for fn, f in s["functions"].items()]
        return cb

    def completed(options):
        return [Observation(n, attrs(s, fn, **{"rpc.grpc.status": st})) for s in snap_all()
                for fn, f in s["functions"].items() for st, n in f["status"].items()]

    def lat(key):
        def cb(options):
            return [Observation(f["latency"][key] / _NS, attrs(s, fn)) for s in snap_all()
                    for fn, f in s["functions"].items() if f["latency"][key] is not None]
        return cb

    def conns(options):
        return [Observation(s["connections"], attrs(s)) for s in snap_all()]

    return [
        meter.create_observable_counter("hms.calls", [fn_obs("calls")], unit="{call}",
                                        description="calls started by the dispatcher"),
        meter.create_observable_counter("hms.calls.completed", [completed], unit="{call}",
                                        description="calls finished, by status"),
        meter.create_observable_counter("hms.call.errors", [fn_obs("errors")], unit="{call}"),
        meter.create_observable_up_down_counter("hms.calls.in_flight", [fn_obs("in_flight")], unit="{call}"),
        meter.create_observable_counter("hms.call.duration.sum", [lat("sum_ns")], unit="s"),
        meter.create_observable_gauge("hms.call.duration.p50", [lat("p50_ns")], unit="s"),
        meter.create_observable_gauge("hms.call.duration.p99", [lat("p99_ns")], unit="s"),
        meter.create_observable_up_down_counter("hms.connections", [conns], unit="{connection}"),
    ]
