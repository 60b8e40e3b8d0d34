"""Copy a dataset with its agent labels renamed (history labels too), for training a router on other agents.

    python scripts/rename_agents.py --map order=shipping,payment=billing --src gen --out gen-renamed \\
        [--also data/realistic_dev.jsonl]

Every JSONL file of SRC (train/val/test) is written to OUT with each `label` in the map replaced; files given
with `--also` are written to OUT under their own names. Labels not in the map (clarify, none, unmapped agents)
are kept. Used for the *Your own agents* run in the README: the generated data and the realistic dev set under
seven renamed agents with their own descriptions (docs/examples/renamed-agents.yaml).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path


def main() -> None:
    from shoprouter.rows import read_rows, write_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--map", required=True, help="old=new pairs, comma-separated")
    ap.add_argument("--src", type=Path, required=True, help="dataset directory (its *.jsonl files)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--also", type=Path, action="append", default=[], help="another JSONL file to rename")
    args = ap.parse_args()
    pairs = [p.split("=", 1) for p in args.map.split(",") if p.strip()]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise SystemExit(f"error: --map needs old=new pairs, got {args.map!r}")
    mapping = dict(pairs)
    files = sorted(args.src.glob("*.jsonl")) + list(args.also)
    if not files:
        raise SystemExit(f"error: no JSONL files in {args.src}")
    for path in files:
        rows = [replace(r, label=mapping.get(r.label, r.label),
                        history=[replace(t, label=mapping.get(t.label, t.label)) for t in r.history])
                for r in read_rows(path)]
        write_rows(rows, args.out / path.name)
        print(f"{args.out / path.name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
