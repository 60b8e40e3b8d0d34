"""Interleaved A/B of the two int8 kernels, oneDNN's (the default) and fbgemm's, in one process.

    python scripts/int8_kernels_ab.py [--rounds 3] [--singles 150]

Two routers (shipped adapter, int8) are built, one with each kernel (`runtime.Int8Linear`,
`runtime.FbgemmInt8Linear`), and route the same realistic messages in turn, batch by batch, so both see the
same moments of a noisy machine. Reports throughput in batches of 32, single-message p50, how far their
probabilities differ on the whole realistic set, how many decisions differ and how many each gets right.
Memory is `scripts/memory_profile.py`'s job (one router per process).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from shoprouter import runtime
from shoprouter.lora import LoraRouter, length_buckets
from shoprouter.rows import read_rows


def _router(onednn: bool) -> LoraRouter:
    available = runtime.onednn_int8
    runtime.onednn_int8 = lambda: onednn and available()
    try:
        return LoraRouter()
    finally:
        runtime.onednn_int8 = available


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="passes over 256 messages per kernel")
    ap.add_argument("--singles", type=int, default=150, help="single messages per kernel")
    args = ap.parse_args()
    if not runtime.onednn_int8():
        raise SystemExit("oneDNN's int8 kernels do not run on this machine: nothing to compare")
    routers = {"onednn": _router(True), "fbgemm": _router(False)}
    kinds = {name: type(r.engine._runtime.layers[0].down).__name__ for name, r in routers.items()}
    rows = read_rows(Path(__file__).resolve().parents[1] / "data" / "realistic_dev.jsonl")
    encoded = [routers["onednn"].engine.encode(r.text, r.history) for r in rows]
    for r in routers.values():
        for e in encoded[:3]:
            r.engine.score([e])
    seconds = dict.fromkeys(routers, 0.0)
    n = 0
    for _ in range(args.rounds):
        for start in range(0, 256, 32):
            batch = [encoded[(start + j) % len(encoded)] for j in range(32)]
            for name, r in routers.items():
                t = time.perf_counter()
                for chunk in length_buckets([len(e.ids) for e in batch], 32):
                    r.engine.score([batch[i] for i in chunk], r.temperature)
                seconds[name] += time.perf_counter() - t
            n += 32
    single: dict[str, list[float]] = {name: [] for name in routers}
    for i in range(args.singles):
        for name, r in routers.items():
            t = time.perf_counter()
            r.engine.score([encoded[i % len(encoded)]], r.temperature)
            single[name].append((time.perf_counter() - t) * 1000)
    for name in routers:
        print(f"{name} ({kinds[name]}): batches of 32 {n / seconds[name]:.1f} messages/s, "
              f"single p50 {statistics.median(single[name]):.1f} ms")
    texts, hists = [r.text for r in rows], [r.history for r in rows]
    routed = {name: [d for s in range(0, len(rows), 32) for d in r.route_batch(texts[s:s + 32], hists[s:s + 32])]
              for name, r in routers.items()}
    a, b = routed["onednn"], routed["fbgemm"]
    diffs = [max(abs(x.scores[k] - y.scores[k]) for k in x.scores) for x, y in zip(a, b, strict=True)]
    flips = sum(x.decision != y.decision for x, y in zip(a, b, strict=True))
    right = {name: sum(d.decision == r.label for d, r in zip(ds, rows, strict=True)) for name, ds in routed.items()}
    print(f"{len(rows)} realistic messages: largest probability difference {max(diffs):.4f}, median "
          f"{statistics.median(diffs):.5f}; decisions that differ: {flips}; right: onednn {right['onednn']}, "
          f"fbgemm {right['fbgemm']}")


if __name__ == "__main__":
    main()
