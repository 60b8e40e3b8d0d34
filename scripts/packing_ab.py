"""Interleaved A/B of the lean runtime's packing and of the batch bucketing, in one process.

    python scripts/packing_ab.py [--rounds 3] [--singles 150]

One router (the default: shipped adapter, int8) routes the same realistic messages under each configuration
in turn, batch by batch, so every configuration sees the same moments of a noisy machine:
- packed: per-token work on the real tokens only (what the router does), or not packed (every padded
  position computed, as before);
- the length-bucket slack of `lora.length_buckets` (1.25, the router's, or looser: fewer, larger forwards
  with more padding in attention).
Batches are 32 messages, split into length buckets as `LoraRouter.scores_batch` splits them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from shoprouter.lora import LoraRouter, length_buckets
from shoprouter.rows import read_rows

CONFIGS = {"packed, slack 1.25 (default)": (True, 1.25), "not packed, slack 1.25": (False, 1.25),
           "packed, slack 3": (True, 3.0), "packed, one forward per 32": (True, 1e9)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="passes over 256 messages per configuration")
    ap.add_argument("--singles", type=int, default=150, help="single messages per packing mode")
    args = ap.parse_args()
    router = LoraRouter()
    engine, runtime = router.engine, router.engine._runtime
    hidden_at, packed = runtime.hidden_at, {"on": True}
    runtime.hidden_at = lambda ids, prefix, rows, cols, lengths=None: hidden_at(
        ids, prefix, rows, cols, lengths if packed["on"] else None)
    rows = read_rows(Path(__file__).resolve().parents[1] / "data" / "realistic_dev.jsonl")
    encoded = [engine.encode(r.text, r.history) for r in rows]
    for e in encoded[:3]:
        engine.score([e])
    seconds = dict.fromkeys(CONFIGS, 0.0)
    n = 0
    for _ in range(args.rounds):
        for start in range(0, 256, 32):
            batch = [encoded[(start + j) % len(encoded)] for j in range(32)]
            for name, (on, slack) in CONFIGS.items():
                packed["on"] = on
                t = time.perf_counter()
                for chunk in length_buckets([len(e.ids) for e in batch], 32, slack):
                    engine.score([batch[i] for i in chunk], router.temperature)
                seconds[name] += time.perf_counter() - t
            n += 32
    for name in CONFIGS:
        print(f"batches of 32, {name}: {n / seconds[name]:.1f} messages/s")
    single: dict[bool, list[float]] = {True: [], False: []}
    for i in range(args.singles):
        for on in (True, False):
            packed["on"] = on
            t = time.perf_counter()
            engine.score([encoded[i % len(encoded)]], router.temperature)
            single[on].append((time.perf_counter() - t) * 1000)
    print(f"single messages, p50: packed {statistics.median(single[True]):.1f} ms, "
          f"not packed {statistics.median(single[False]):.1f} ms (pad_to={engine.pad_multiple})")


if __name__ == "__main__":
    main()
