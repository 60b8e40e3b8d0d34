"""The service's own metrics over time, for the console's overview: a ring of per-interval buckets.

The Prometheus counters in `service.Metrics` are cumulative; the overview needs "what happened in each
minute": the decision mix, clarification and hand-off rates and the p50/p95 routing latency. Each bucket
keeps counts and a bounded sample of routing latencies (reservoir sampling), so memory stays fixed
(default: 1-minute buckets for 24 hours). Per process: every replica reports its own traffic.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

LATENCY_SAMPLE = 2000  # routing latencies kept per bucket


@dataclass
class Bucket:
    start: float
    routings: int = 0
    latencies: list[float] = field(default_factory=list)
    decisions: Counter = field(default_factory=Counter)  # by label, every routing (API and conversations)
    turns: int = 0  # customer turns stored
    conversations: int = 0  # conversations with a first turn
    clarifications: int = 0
    handoffs: Counter = field(default_factory=Counter)  # by reason
    human_replies: int = 0
    corrections: int = 0


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None when there are no values."""
    if not sorted_values:
        return None
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class Timeline:
    """Thread-safe per-interval counters; `overview()` summarises a time window."""

    def __init__(self, bucket_s: float = 60.0, keep: int = 1440, clock=time.time):
        self.bucket_s = float(bucket_s)
        self.keep = int(keep)
        self.clock = clock
        self._buckets: dict[int, Bucket] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(0)
        self.started = clock()

    def _bucket(self) -> Bucket:
        idx = int(self.clock() // self.bucket_s)
        b = self._buckets.get(idx)
        if b is None:
            b = self._buckets[idx] = Bucket(idx * self.bucket_s)
            if len(self._buckets) > self.keep:
                for old in sorted(self._buckets)[: len(self._buckets) - self.keep]:
                    del self._buckets[old]
        return b

    def routing(self, decision: str, latency_ms: float | None) -> None:
        with self._lock:
            b = self._bucket()
            b.routings += 1
            b.decisions[decision] += 1
            if latency_ms is not None:
                if len(b.latencies) < LATENCY_SAMPLE:
                    b.latencies.append(float(latency_ms))
                else:
                    j = self._rng.randrange(b.routings)
                    if j < LATENCY_SAMPLE:
                        b.latencies[j] = float(latency_ms)

    def turn(self, first: bool, clarification: bool, handoff_reason: str | None) -> None:
        with self._lock:
            b = self._bucket()
            b.turns += 1
            b.conversations += int(first)
            b.clarifications += int(clarification)
            if handoff_reason:
                b.handoffs[handoff_reason] += 1

    def human_reply(self) -> None:
        with self._lock:
            self._bucket().human_replies += 1

    def correction(self) -> None:
        with self._lock:
            self._bucket().corrections += 1

    def overview(self, window_s: float = 3600.0, points: int = 60) -> dict:
        """Totals over the last `window_s` seconds and a series of at most `points` intervals."""
        now = self.clock()
        lo = now - window_s
        with self._lock:
            buckets = [b for k, b in sorted(self._buckets.items()) if b.start + self.bucket_s > lo]
            snap = [(b.start, b.routings, list(b.latencies), Counter(b.decisions), b.turns, b.conversations,
                     b.clarifications, Counter(b.handoffs), b.human_replies, b.corrections) for b in buckets]
        step = max(self.bucket_s, self.bucket_s * -(-window_s // (self.bucket_s * max(1, points))))
        series: dict[int, dict] = {}
        lat_all: list[float] = []
        decisions: Counter = Counter()
        handoffs: Counter = Counter()
        totals = {"routings": 0, "turns": 0, "conversations": 0, "clarifications": 0, "human_replies": 0,
                  "corrections": 0}
        for start, n, lats, dec, turns, convs, clar, hand, human, corr in snap:
            key = int(start // step)
            s = series.setdefault(key, {"t": key * step, "routings": 0, "lat": [], "decisions": Counter(),
                                        "turns": 0, "clarifications": 0, "handoffs": 0})
            s["routings"] += n
            s["lat"] += lats
            s["decisions"] += dec
            s["turns"] += turns
            s["clarifications"] += clar
            s["handoffs"] += sum(hand.values())
            lat_all += lats
            decisions += dec
            handoffs += hand
            totals["routings"] += n
            totals["turns"] += turns
            totals["conversations"] += convs
            totals["clarifications"] += clar
            totals["human_replies"] += human
            totals["corrections"] += corr
        out_series = []
        for key in sorted(series):
            s = series[key]
            lat = sorted(s.pop("lat"))
            s["p50_ms"] = _r(percentile(lat, 0.5))
            s["p95_ms"] = _r(percentile(lat, 0.95))
            s["decisions"] = dict(s["decisions"])
            out_series.append(s)
        lat_all.sort()
        n_handoffs = sum(handoffs.values())
        return {
            "window_s": window_s, "interval_s": step, "now": now, "since": max(lo, self.started),
            **totals,
            "decisions": dict(decisions),
            "decision_mix": {k: round(v / totals["routings"], 4) for k, v in decisions.items()} if totals["routings"] else {},
            "handoffs": n_handoffs,
            "handoff_reasons": dict(handoffs),
            "clarification_rate": round(totals["clarifications"] / totals["turns"], 4) if totals["turns"] else None,
            "handoff_rate": round(n_handoffs / totals["conversations"], 4) if totals["conversations"] else None,
            "handoff_rate_per_turn": round(n_handoffs / totals["turns"], 4) if totals["turns"] else None,
            "latency_ms": {"p50": _r(percentile(lat_all, 0.5)), "p95": _r(percentile(lat_all, 0.95)),
                           "n": len(lat_all)},
            "series": out_series,
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
