"""Where the lora router's time goes: torch.profiler over messages routed one at a time, or in batches.

    python scripts/latency_profile.py [--messages 100] [--batch 1] [--pad-to 16] [--quantize auto|int8|none] [--top 12]

Prints the operators with the most self CPU time (quantized::linear_dynamic / mkldnn linear = the weight matmuls,
aten::bmm / matmul = attention against the prefix and the suffix, the rest elementwise work) and the
wall-clock p50 of the same messages without the profiler. With `--batch N` (N > 1) the messages go through
`route_batch` N at a time, as `shoprouter bench` measures throughput, and the wall-clock line is messages/s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1, help="messages per route_batch call (1: route one by one)")
    ap.add_argument("--pad-to", type=int, default=None)
    ap.add_argument("--quantize", choices=["auto", "int8", "none"], default="auto",
                    help="the router's quantize option (default auto: int8 on x86)")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    import torch

    from shoprouter.lora import LoraRouter
    from shoprouter.rows import read_rows

    options = {"quantize": None if args.quantize == "none" else args.quantize}
    if args.pad_to is not None:
        options["pad_to"] = args.pad_to
    router = LoraRouter(**options)
    rows = read_rows(Path(__file__).resolve().parents[1] / "data" / "realistic_dev.jsonl")
    rows = [rows[i % len(rows)] for i in range(args.messages)]
    calls = [rows[s:s + args.batch] for s in range(0, len(rows), args.batch)]

    def run(chunk) -> None:
        router.route_batch([r.text for r in chunk], [r.history for r in chunk])

    for chunk in calls[: max(1, 20 // args.batch)]:  # warm-up: first calls of a shape build kernels
        run(chunk)
    times = []
    for chunk in calls:
        t0 = time.perf_counter()
        run(chunk)
        times.append((time.perf_counter() - t0) * 1000)
    tokens = statistics.median(len(router.engine.encode(r.text, r.history).ids) for r in rows)
    shape = f"median suffix {tokens:.0f} tokens + probe, pad_to={router.engine.pad_multiple}"
    if args.batch == 1:
        print(f"wall p50 {statistics.median(times):.1f} ms over {len(rows)} messages ({shape})")
    else:
        print(f"wall {len(rows) / sum(times) * 1000:.1f} messages/s over {len(rows)} messages in batches of "
              f"{args.batch} ({shape})")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for chunk in calls:
            run(chunk)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
