"""Is one adapter better than another beyond chance? Both route the same rows; paired counts and McNemar's test.

    python scripts/compare_adapters.py --a DIR --b DIR [--data F.jsonl ...] [--data-b F.jsonl ...] [--batch-size 32]

Routes every row of each data file (default: the generated test split and the realistic dev set) with the
default `lora` router on adapter A and then on adapter B, and prints per file, and for its rows with
history: each adapter's accuracy (decision == label, the default clarify threshold), the rows only A routes
right and the rows only B routes right, and the exact two-sided McNemar p-value (a binomial test on those
discordant rows). Accuracy gaps of a point on a few hundred rows are often chance; this says how often.

`--data-b` (one per `--data`): B routes these files instead, the same messages row for row labelled for B's
agents, e.g. an adapter trained on renamed agents (scripts/rename_agents.py) against one on the default seven.
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

from scipy.stats import binomtest

from shoprouter.evaluate import route_rows
from shoprouter.lora import LoraRouter
from shoprouter.rows import Row, read_rows

ROOT = Path(__file__).resolve().parents[1]


def right_or_wrong(adapter: Path, files: dict[str, list[Row]], batch_size: int) -> dict[str, list[bool]]:
    """Per file, whether the router on `adapter` decides each row as labelled."""
    router = LoraRouter(adapter=adapter)
    out = {name: [d.decision == r.label for d, r in zip(route_rows(router, rows, batch_size), rows, strict=True)]
           for name, rows in files.items()}
    del router
    gc.collect()
    return out


def paired_line(name: str, a: list[bool], b: list[bool]) -> str:
    """One line: n, both accuracies, the discordant counts and McNemar's exact p."""
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return (f"{name}: n={len(a)}  A {sum(a) / len(a):.3f}  B {sum(b) / len(b):.3f}  "
            f"only A right {only_a}  only B right {only_b}  McNemar p={p:.3f}")


def _shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it (as the report is read from there)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, required=True, help="adapter directory A")
    ap.add_argument("--b", type=Path, required=True, help="adapter directory B")
    ap.add_argument("--data", type=Path, action="append",
                    help="JSONL rows (repeatable; default gen/test.jsonl and data/realistic_dev.jsonl)")
    ap.add_argument("--data-b", type=Path, action="append",
                    help="what B routes instead, one file per --data: the same messages with B's labels")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    paths = args.data or [Path("gen/test.jsonl"), ROOT / "data" / "realistic_dev.jsonl"]
    files = {_shown(p): read_rows(p) for p in paths}
    files_b = files
    if args.data_b:
        if len(args.data_b) != len(paths):
            raise SystemExit("error: give one --data-b per --data")
        files_b = {name: read_rows(p) for name, p in zip(files, args.data_b, strict=True)}
        for (name, rows), rows_b in zip(files.items(), files_b.values(), strict=True):
            if [r.text for r in rows] != [r.text for r in rows_b]:
                raise SystemExit(f"error: the --data-b file for {name} does not hold the same messages in order")
    hits_a = right_or_wrong(args.a, files, args.batch_size)
    hits_b = right_or_wrong(args.b, files_b, args.batch_size)
    print(f"A = {args.a}\nB = {args.b}")
    for name, rows in files.items():
        print(paired_line(name, hits_a[name], hits_b[name]))
        turns = [i for i, r in enumerate(rows) if r.history]
        if turns:
            print(paired_line(f"{name} (rows with history)", [hits_a[name][i] for i in turns],
                              [hits_b[name][i] for i in turns]))


if __name__ == "__main__":
    main()
