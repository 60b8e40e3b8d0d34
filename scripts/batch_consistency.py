"""Does a message's decision depend on the batch it is routed in? `route_batch` against `route`, per router.

    python scripts/batch_consistency.py [--rows 160] [--quantize auto|none]

Routes the first `--rows` messages of the realistic dev set in `route_batch` calls of 32 and then one at a
time, and reports the largest and median difference of any label's probability between the two, how many
decisions differ, and how many of each are right. fbgemm's dynamic quantisation takes one input range per
call; int8 routing pins that range (`runtime.Int8Linear`) so that it gives the same numbers either way, as
bf16 does. Before it did, 2 of these 160 decisions differed.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from shoprouter.lora import LoraRouter
from shoprouter.rows import read_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=160)
    ap.add_argument("--quantize", choices=["auto", "none"], default="auto")
    args = ap.parse_args()
    router = LoraRouter(quantize=None if args.quantize == "none" else "auto")
    rows = read_rows(Path(__file__).resolve().parents[1] / "data" / "realistic_dev.jsonl")[: args.rows]
    texts, hists = [r.text for r in rows], [r.history for r in rows]
    batched = []
    for s in range(0, len(rows), 32):
        batched += router.route_batch(texts[s:s + 32], hists[s:s + 32])
    single = [router.route(t, h) for t, h in zip(texts, hists, strict=True)]
    diffs = [max(abs(b.scores[k] - s.scores[k]) for k in b.scores) for b, s in zip(batched, single, strict=True)]
    flips = sum(b.decision != s.decision for b, s in zip(batched, single, strict=True))
    right_b = sum(b.decision == r.label for b, r in zip(batched, rows, strict=True))
    right_s = sum(s.decision == r.label for s, r in zip(single, rows, strict=True))
    print(f"{router.quantize or router.dtype}: {len(rows)} messages; largest probability difference "
          f"{max(diffs):.4f}, median {statistics.median(diffs):.5f}; decisions that differ: {flips}; "
          f"right in batches {right_b}, one at a time {right_s}")


if __name__ == "__main__":
    main()
