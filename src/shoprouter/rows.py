"""Data rows (DESIGN.md contract): read and write JSONL with clear errors."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

MAX_TEXT_CHARS = 2000


@dataclass
class Turn:
    """An earlier user turn and the decision made for it."""

    text: str
    label: str | None = None


@dataclass
class Row:
    """One labelled message, optionally with earlier turns and the base phrase (group) it came from."""

    text: str
    label: str
    history: list[Turn] = field(default_factory=list)
    group: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out: dict = {"text": self.text, "label": self.label}
        if self.history:
            out["history"] = [{"text": t.text, "label": t.label} for t in self.history]
        if self.group is not None:
            out["group"] = self.group
        out.update(self.extra)
        return out


def validate_text(text: object, what: str = "text") -> str:
    """Return the text if it is a non-empty string of at most MAX_TEXT_CHARS characters."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be a string")
    if not text.strip():
        raise InputError(f"{what} is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"{what} is too long ({len(text)} characters; the limit is {MAX_TEXT_CHARS})")
    return text


def parse_history(raw: object, labels: Iterable[str] | None = None, where: str = "history") -> list[Turn]:
    """Validate a history list of {text, label?} objects (or plain strings)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InputError(f"{where} must be a list of turns")
    known = set(labels) if labels is not None else None
    turns = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or "text" not in item:
            raise InputError(f"{where}[{i}] must be an object with a 'text'")
        label = item.get("label")
        if label is not None and known is not None and label not in known:
            raise InputError(f"{where}[{i}] has unknown label {label!r}")
        turns.append(Turn(validate_text(item["text"], f"{where}[{i}].text"), label))
    return turns


def row_from_dict(obj: object, labels: Iterable[str] | None = None, where: str = "row") -> Row:
    """Build a Row from a parsed JSON object, checking fields and labels."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object")
    if "text" not in obj or "label" not in obj:
        raise InputError(f"{where}: needs 'text' and 'label'")
    known = list(labels) if labels is not None else None
    label = obj["label"]
    if not isinstance(label, str) or (known is not None and label not in known):
        raise InputError(f"{where}: unknown label {label!r}" + (f" (known: {', '.join(known)})" if known else ""))
    text = validate_text(obj["text"], f"{where}: text")
    history = parse_history(obj.get("history"), known, f"{where}: history")
    group = obj.get("group")
    extra = {k: v for k, v in obj.items() if k not in ("text", "label", "history", "group")}
    return Row(text, label, history, None if group is None else str(group), extra)


def read_utf8(path: Path, what: str = "file") -> str:
    """A text file's content; InputError when it is missing or not UTF-8 (with the line of the bad byte)."""
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not valid UTF-8") from None


def read_rows(path: str | Path, labels: Iterable[str] | None = None) -> list[Row]:
    """Read a JSONL file of rows; raise InputError with the line number on any problem."""
    p = Path(path)
    content = read_utf8(p)
    known = list(labels) if labels is not None else None
    rows = []
    for n, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}:{n}: invalid JSON ({exc.msg})") from None
        rows.append(row_from_dict(obj, known, f"{p}:{n}"))
    if not rows:
        raise InputError(f"{p}: no rows")
    return rows


def write_rows(rows: Iterable[Row], path: str | Path) -> None:
    """Write rows as JSONL (UTF-8, one object a line)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
