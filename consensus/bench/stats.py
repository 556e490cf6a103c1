"""Benchmark results: latency percentiles, the merged report, its text summary and its JSON.

Percentiles are exact (nearest rank over every sample, no histogram
buckets); latencies are kept in seconds in ``array('d')`` and reported in
milliseconds.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9)


def latency_summary(samples: Sequence[float]) -> dict[str, float | int | None]:
    """``{count, avg, min, max, stddev, p10 .. p99.9}`` in milliseconds (None when empty)."""
    n = len(samples)
    out: dict[str, float | int | None] = {"count": n}
    if n == 0:
        for name in ("avg", "min", "max", "stddev", *(_pname(p) for p in PERCENTILES)):
            out[name] = None
        return out
    ordered = sorted(samples)
    mean = math.fsum(ordered) / n
    var = math.fsum((x - mean) ** 2 for x in ordered) / n
    out["avg"] = round(mean * 1000, 4)
    out["min"] = round(ordered[0] * 1000, 4)
    out["max"] = round(ordered[-1] * 1000, 4)
    out["stddev"] = round(math.sqrt(var) * 1000, 4)
    for p in PERCENTILES:
        rank = max(1, math.ceil(p / 100 * n))
        out[_pname(p)] = round(ordered[rank - 1] * 1000, 4)
    return out


def _pname(p: float) -> str:
    return f"p{p:g}".replace(".", "")  # p50, p99, p999


@dataclass
class PartResult:
    """What one generator process measured (merged by :func:`merge`)."""

    index: int
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0
    cpu_s: float = 0.0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    extra: dict[str, Any] = field(default_factory=dict)
    watch_seq: array[int] = field(default_factory=lambda: array("q"))
    watch_t: array[float] = field(default_factory=lambda: array("d"))
    put_sent: array[float] = field(default_factory=lambda: array("d"))
    put_acked: array[float] = field(default_factory=lambda: array("d"))
    setup_error: str | None = None

    def error(self, status_name: str, text: str) -> None:
        """Count one failed call of kind ``status_name: text``."""
        key = f"{status_name}: {text}" if text else status_name
        if len(key) > 200:
            key = key[:200] + "..."
        self.errors[key] = self.errors.get(key, 0) + 1


@dataclass
class Report:
    """The merged result of one benchmark run."""

    workload: str
    config: dict[str, Any]
    ok: int
    errors: int
    error_kinds: dict[str, int]
    duration_s: float
    throughput: float
    latency_ms: dict[str, float | int | None]
    generator: dict[str, Any]
    extra: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (what ``--json`` prints)."""
        return {
            "workload": self.workload,
            "config": self.config,
            "requests": self.ok + self.errors,
            "ok": self.ok,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "duration_s": round(self.duration_s, 4),
            "throughput": round(self.throughput, 2),
            "latency_ms": self.latency_ms,
            "generator": self.generator,
            "extra": self.extra,
        }

    def text(self) -> str:
        """A human summary in the spirit of etcd's benchmark tool."""
        lat = self.latency_ms
        unit = self.extra.get("unit", "requests")
        lines = [
            f"Workload: {self.workload}  ({_config_line(self.config)})",
            "Summary:",
            f"  Total:        {self.duration_s:.4f} s",
            f"  {unit.capitalize() + ':':<13} {self.ok} ok, {self.errors} errors",
            f"  Throughput:   {self.throughput:.1f} {unit}/s",
        ]
        if lat.get("count"):
            lines += [
                f"  Latency (ms): avg {lat['avg']:.3f}  p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  "
                f"p99 {lat['p99']:.3f}  p99.9 {lat['p999']:.3f}  max {lat['max']:.3f}",
                f"                min {lat['min']:.3f}  stddev {lat['stddev']:.3f}",
            ]
        gen = self.generator
        lines.append(
            f"  Generator:    {gen['cpu_s']:.2f} CPU-s in {gen['procs']} process(es) "
            f"= {gen['cores']:.2f} cores, {gen['cpu_us_per_op']:.1f} CPU-us per {unit[:-1] if unit.endswith('s') else unit}"
            f" (transport {gen['transport']})"
        )
        for key, value in self.extra.items():
            if key == "unit":
                continue
            if isinstance(value, dict) and "count" in value and "p99" in value:
                if value.get("count"):
                    lines.append(
                        f"  {key}: p50 {value['p50']:.3f}  p90 {value['p90']:.3f}  "
                        f"p99 {value['p99']:.3f}  max {value['max']:.3f} ms (n={value['count']})"
                    )
            else:
                lines.append(f"  {key}: {value}")
        if self.error_kinds:
            lines.append("Errors:")
            for kind, count in sorted(self.error_kinds.items(), key=lambda kv: -kv[1]):
                lines.append(f"  {count:>8}  {kind}")
        return "\n".join(lines)


def _config_line(config: dict[str, Any]) -> str:
    keys = ("endpoints", "conns", "clients", "total", "duration", "rate", "procs")
    return ", ".join(f"{k}={config[k]}" for k in keys if config.get(k) not in (None, 0, ""))


def merge_errors(parts: Iterable[PartResult]) -> dict[str, int]:
    """The error counts of every process, added up by kind."""
    out: dict[str, int] = {}
    for part in parts:
        for key, count in part.errors.items():
            out[key] = out.get(key, 0) + count
    return out
