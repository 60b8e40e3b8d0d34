"""The feedback loop: a human's corrections in the console become training rows for the router.

`correction_rows(store)` turns every stored correction into a data row of the DESIGN.md contract: the
customer's text, the corrected label, the earlier customer turns of the conversation as `history` (the
same window the service routes with, each with its corrected label where one exists, else the decision the
service made) and `group` = `correction/CONVERSATION/SEQ`. Human replies are never part of a row.

Continued training should see the corrections together with a replay sample of the original data, so the
adapter learns the fix without forgetting the rest: `replay_mix()` repeats the corrections and adds a random
sample of the original training rows, and `write_train_set()` writes that mix as a dataset directory
(`train.jsonl` plus the original `val.jsonl`) that `shoprouter train --data DIR --resume-from ADAPTER`
trains on as it is.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from .conversation import HISTORY_WINDOW
from .errors import InputError
from .rows import Row, Turn, read_rows, write_rows
from .session import CUSTOMER, ConversationStore, NotFoundError


def correction_rows(store: ConversationStore, labels: list[str] | None = None,
                    history_window: int = HISTORY_WINDOW) -> list[Row]:
    """One row per corrected turn, oldest correction first (corrections of erased conversations are gone)."""
    rows: list[Row] = []
    cache: dict = {}
    for c in store.list_corrections():
        if labels is not None and c.label not in labels:
            continue
        if c.conversation_id not in cache:
            try:
                cache[c.conversation_id] = store.get(c.conversation_id)
            except NotFoundError:
                cache[c.conversation_id] = None
        conv = cache[c.conversation_id]
        if conv is None:
            continue
        turns = [t for t in conv.turns if t.role == CUSTOMER]
        target = next((t for t in turns if t.seq == c.seq), None)
        if target is None:
            continue
        earlier = [t for t in turns if t.seq < c.seq][-history_window:] if history_window else []
        history = []
        for t in earlier:
            fix = conv.corrections.get(t.seq)
            history.append(Turn(t.text, fix.label if fix is not None else t.decision))
        rows.append(Row(target.text, c.label, history, group=f"correction/{c.conversation_id}/{c.seq}"))
    return rows


def replay_mix(corrections: list[Row], original: list[Row], replay: int, repeat: int = 1,
               seed: int = 0) -> list[Row]:
    """The corrections `repeat` times each plus `replay` rows sampled from the original data, shuffled."""
    if repeat < 1:
        raise InputError("--repeat must be at least 1")
    rng = random.Random(seed)
    sample = rng.sample(original, min(max(0, replay), len(original)))
    mixed = [r for r in corrections for _ in range(repeat)] + sample
    rng.shuffle(mixed)
    return mixed


def write_train_set(corrections: list[Row], data_dir: Path, out_dir: Path, replay: int, repeat: int = 1,
                    seed: int = 0, labels: list[str] | None = None) -> dict:
    """Write OUT/train.jsonl (the mix) and OUT/val.jsonl (a copy of DATA/val.jsonl) for continued training."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    train_path = data_dir / "train.jsonl"
    if not train_path.is_file():
        raise InputError(f"no train.jsonl in {data_dir} (the original dataset to replay)")
    if not corrections:
        raise InputError("there are no corrections to train on")
    original = read_rows(train_path, labels)
    mixed = replay_mix(corrections, original, replay, repeat, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_rows(mixed, out_dir / "train.jsonl")
    if (data_dir / "val.jsonl").is_file():
        shutil.copyfile(data_dir / "val.jsonl", out_dir / "val.jsonl")
    return {"train_rows": len(mixed), "corrections": len(corrections), "repeat": repeat,
            "replayed": len(mixed) - len(corrections) * repeat, "dir": str(out_dir)}
