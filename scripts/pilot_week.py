"""Replay a labelled pilot week through the real conversation flow and correct it as a support human would.

    python scripts/pilot_week.py --data data/pilot_traffic.jsonl --store runs/pilot/conversations.sqlite3 \
        --held-out runs/pilot/week2.jsonl

Rows of the pilot file are split into two weeks by group number (odd: week 1, even: week 2). Every week-1
row becomes a conversation in a real SQLite store: its earlier turns and then its message are sent through
`ConversationManager.send` with the shipped router (routing, clarification, hand-off, agents, as in the
service). Standing in for the human at the console, the script then corrects every customer turn whose
routing differs from the label the pilot file gives it (`ConversationManager.correct`, the same call as the
console's label correction). Week 2 is written to `--held-out` untouched: later traffic that continued
training never sees. `shoprouter data export-corrections` then reads the corrections from the store.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shoprouter.conversation import ConversationManager
from shoprouter.router import get_router
from shoprouter.rows import read_rows, write_rows
from shoprouter.session import open_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--store", type=Path, required=True, help="SQLite file to create (must not exist)")
    ap.add_argument("--held-out", type=Path, required=True, help="where week 2 is written as JSONL rows")
    ap.add_argument("--adapter", type=Path, default=None)
    args = ap.parse_args()

    rows = read_rows(args.data)
    week = {1: [], 2: []}
    for r in rows:
        week[1 if int(r.group.rsplit("/", 1)[1]) % 2 else 2].append(r)
    write_rows(week[2], args.held_out)
    if args.store.exists():
        raise SystemExit(f"error: {args.store} exists; the replay needs a new store")
    args.store.parent.mkdir(parents=True, exist_ok=True)
    router = get_router("lora", **({"adapter": args.adapter} if args.adapter else {}))
    store = open_store(f"sqlite:///{args.store}")
    manager = ConversationManager(router, store)
    corrected = turns = 0
    try:
        for r in week[1]:
            conv = manager.start(meta={"source": "pilot", "group": r.group})
            for t in [*r.history, r]:
                sent = manager.send(conv.id, t.text)
                turns += 1
                if sent.turn.decision != t.label:
                    manager.correct(conv.id, sent.turn.seq, t.label, author="pilot-review",
                                    note=f"routed {sent.turn.decision}")
                    corrected += 1
    finally:
        store.close()
    print(json.dumps({"week1_conversations": len(week[1]), "week1_customer_turns": turns, "corrected": corrected,
                      "week2_rows": len(week[2]), "store": str(args.store), "held_out": str(args.held_out)}))


if __name__ == "__main__":
    main()
