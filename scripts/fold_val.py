"""Copy a dataset with most of its validation split folded into training: more base phrases to learn from, a
smaller validation split left for calibration, the test split unchanged.

    python scripts/fold_val.py --src gen --out gen-tv [--keep 0.3]

Validation groups (base phrases) are chosen by a hash of their name: about `--keep` of them (default 3 in 10)
stay in OUT/val.jsonl; the rows of the others are appended to OUT/train.jsonl after SRC's training rows.
OUT/test.jsonl is SRC's test split as it is, so an adapter trained on OUT is measured on the same held-out
groups as one trained on SRC. Used for the *train on the validation split too* run in the README.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path


def stays_in_val(group: str, keep: float) -> bool:
    """True for the validation groups kept for calibration (deterministic: a hash of the group's name)."""
    return int(hashlib.sha256(f"tv|{group}".encode()).hexdigest(), 16) % 10 < round(keep * 10)


def main() -> None:
    from shoprouter.rows import read_rows, write_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True, help="dataset directory with train/val/test.jsonl")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--keep", type=float, default=0.3, help="share of validation groups kept (tenths)")
    args = ap.parse_args()
    if not 0.1 <= args.keep <= 0.9:
        raise SystemExit(f"error: --keep must be from 0.1 to 0.9, got {args.keep}")
    train, val, test = (read_rows(args.src / f"{s}.jsonl") for s in ("train", "val", "test"))
    if any(r.group is None for r in val):
        raise SystemExit("error: every validation row needs a group to fold by")
    kept, folded = [], []
    for r in val:
        (kept if stays_in_val(r.group, args.keep) else folded).append(r)
    args.out.mkdir(parents=True, exist_ok=True)
    write_rows(train + folded, args.out / "train.jsonl")
    write_rows(kept, args.out / "val.jsonl")
    write_rows(test, args.out / "test.jsonl")
    print(f"{args.out}: train {len(train)} + {len(folded)} folded rows "
          f"({len({r.group for r in folded})} groups), val {len(kept)} rows ({len({r.group for r in kept})} groups), "
          f"test {len(test)} rows")


if __name__ == "__main__":
    main()
