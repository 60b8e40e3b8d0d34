"""Conversation store: conversations, their turns and hand-offs, in SQLite (default) or Redis.

One interface (`ConversationStore`), two back-ends:

- `SQLiteStore`: one file in WAL mode with `synchronous=FULL`, created on first use. Every write is one
  `BEGIN IMMEDIATE` transaction, so a turn that was acknowledged survives a crash of the process (and of
  the machine), and any number of threads or processes on one host can write to it at once.
- `RedisStore`: every write is one Lua script (atomic). With `appendonly yes` and `appendfsync always` on
  the server an acknowledged turn survives a crash of Redis too; `durability()` says whether that holds.
  Several service replicas behind one Redis share their conversations.

A turn gets its sequence number (1, 2, 3, ...) inside that atomic write, so concurrent writers never lose
or duplicate a turn. Each turn carries a `message_id` (the client's idempotency key, or a generated one):
writing a message id twice returns the turn stored the first time (`created=False`) instead of a copy.
`append_turn(..., expected_seq=n)` is optimistic concurrency: it fails with `ConflictError` when someone
else appended to the conversation after the caller read it (the caller re-reads and tries again).

The support desk (the web console) adds: listing and searching conversations, replies by a human (stored
as turns with `role="human"`), resolving a hand-off, corrections of a turn's routing label (the training
data of the feedback loop), erasing a conversation with everything that refers to it, and deleting the
conversations whose last activity is older than a retention cut-off.

Store URLs (`open_store`): `sqlite:///relative.db`, `sqlite:////absolute/path.db`, a plain file path, or
`redis://[:password@]host:port/db` (`rediss://` for TLS; `?prefix=NAME:` sets the key prefix).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from .errors import InputError, ShopRouterError

log = logging.getLogger(__name__)

OPEN, HANDED_OFF, RESOLVED = "open", "handed_off", "resolved"
STATUSES = (OPEN, HANDED_OFF, RESOLVED)
CUSTOMER, HUMAN = "customer", "human"  # who wrote a turn: the customer (routed) or a human support agent
HUMAN_DECISION = "human"  # the decision stored for a human's turn (never routed, never a training label)
HANDOFF_REASONS = ("out_of_scope", "repeated_clarification", "low_confidence")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class NotFoundError(ShopRouterError):
    """The conversation does not exist."""


class ConflictError(ShopRouterError):
    """The write lost a race (the conversation changed since it was read, or the id is taken)."""


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return uuid.uuid4().hex


def check_id(value: str, what: str = "id") -> str:
    """Ids are 1-128 characters of letters, digits and . _ : - (they end up in keys and URLs)."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise InputError(f"{what} must be 1-128 letters, digits or . _ : - (starting with a letter or digit)")
    return value


@dataclass
class TurnRecord:
    """One customer message and what was done with it."""

    seq: int | None  # 1-based position in the conversation, given by the store
    message_id: str
    text: str
    decision: str  # an agent key, clarify or none
    agent: str | None = None
    function: str | None = None
    confidence: float = 0.0
    reason: str = "model"  # model | low_confidence | context | clarification_answer | ...
    scores: dict[str, float] = field(default_factory=dict)
    reply: dict | None = None  # the agent's structured reply (agent, action, text, data, missing)
    received_at: str = ""
    created_at: str = ""
    latency_ms: float | None = None
    meta: dict = field(default_factory=dict)
    role: str = CUSTOMER  # customer | human (a support agent's reply from the console)
    author: str | None = None  # the human who wrote it (role human)

    def to_dict(self) -> dict:
        out = asdict(self)
        # seq first: RedisStore fills it in inside its script by replacing the leading '{"seq": null'.
        return {"seq": out.pop("seq"), **out}

    @classmethod
    def from_dict(cls, obj: dict) -> TurnRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})


@dataclass
class Handoff:
    """A conversation handed to a human: why, at which turn, and the transcript so far."""

    id: str
    conversation_id: str
    reason: str  # out_of_scope | repeated_clarification | low_confidence
    seq: int | None = None  # the turn that triggered it
    created_at: str = ""
    customer_id: int | None = None
    transcript: list[dict] = field(default_factory=list)
    note: str = ""
    status: str = "open"  # open (in the human queue) | resolved
    resolved_at: str | None = None
    resolved_by: str | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        return {"seq": out.pop("seq"), **out}

    @classmethod
    def from_dict(cls, obj: dict) -> Handoff:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})


@dataclass
class Correction:
    """A human's routing label for one customer turn (the newest one counts): training data for the router."""

    conversation_id: str
    seq: int
    label: str
    previous: str  # the decision the service made for the turn
    author: str | None = None
    created_at: str = ""
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> Correction:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})


@dataclass
class Conversation:
    id: str
    created_at: str
    updated_at: str
    status: str = OPEN
    customer_id: int | None = None
    turn_count: int = 0
    state: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    turns: list[TurnRecord] = field(default_factory=list)
    handoffs: list[Handoff] = field(default_factory=list)
    corrections: dict[int, Correction] = field(default_factory=dict)  # by turn seq

    def to_dict(self, include_state: bool = True) -> dict:
        turns = []
        for t in self.turns:
            d = t.to_dict()
            c = self.corrections.get(t.seq) if t.seq is not None else None
            d["correction"] = None if c is None else c.to_dict()
            turns.append(d)
        out = {
            "id": self.id, "created_at": self.created_at, "updated_at": self.updated_at,
            "status": self.status, "customer_id": self.customer_id, "turn_count": self.turn_count,
            "meta": self.meta,
            "turns": turns,
            "handoffs": [h.to_dict() for h in self.handoffs],
        }
        if include_state:
            out["state"] = self.state
        return out


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


class ConversationStore(ABC):
    """Where conversations live. Thread-safe; every method is one atomic operation."""

    kind = "store"
    url = ""

    @abstractmethod
    def create(self, customer_id: int | None = None, meta: dict | None = None,
               conversation_id: str | None = None) -> Conversation:
        """Start a conversation (ConflictError when the given id is taken)."""

    @abstractmethod
    def get(self, conversation_id: str, turns: int | None = None) -> Conversation:
        """The conversation with its last `turns` turns (all when None, none when 0) and its hand-offs."""

    @abstractmethod
    def append_turn(self, conversation_id: str, turn: TurnRecord, *, state: dict | None = None,
                    status: str | None = None, handoff: Handoff | None = None,
                    expected_seq: int | None = None) -> tuple[TurnRecord, bool]:
        """Store a turn (and the conversation's new state, status, hand-off) in one atomic write.

        Returns (the stored turn with its seq, True), or (the turn stored earlier under the same
        message_id, False). Raises NotFoundError, or ConflictError when `expected_seq` (the turn count
        the caller saw) is no longer the conversation's turn count.
        """

    @abstractmethod
    def find_turn(self, conversation_id: str, message_id: str) -> TurnRecord | None:
        """The turn stored under a message id, if any."""

    @abstractmethod
    def list_handoffs(self, limit: int = 100, status: str | None = None, oldest_first: bool = False) -> list[Handoff]:
        """Hand-offs, newest first (or oldest first), all or only those with `status` (open / resolved)."""

    # ------------------------------------------------------------------ the support desk (web console)
    @abstractmethod
    def list_conversations(self, limit: int = 50, offset: int = 0, status: str | None = None,
                           query: str | None = None) -> tuple[list[dict], int]:
        """Conversation summaries, most recently active first, and how many match.

        `query` matches (case-insensitively) a part of the id, the customer id, or the text of any turn.
        A summary: id, created_at, updated_at, status, customer_id, turn_count, meta, last_text,
        last_decision, last_role.
        """

    @abstractmethod
    def resolve_handoffs(self, conversation_id: str, by: str | None = None) -> list[Handoff]:
        """Mark the conversation's open hand-offs resolved (and a handed-off conversation `resolved`, so the
        agents answer its next message again). Returns the hand-offs it resolved; NotFoundError."""

    @abstractmethod
    def set_correction(self, correction: Correction) -> Correction:
        """Store a human's label for a turn (replacing an earlier one). NotFoundError when the conversation
        or the turn does not exist."""

    @abstractmethod
    def list_corrections(self, limit: int | None = None) -> list[Correction]:
        """Every correction, oldest first."""

    @abstractmethod
    def delete(self, conversation_id: str) -> bool:
        """Erase a conversation, its turns, hand-offs and corrections. False when it did not exist."""

    @abstractmethod
    def conversations_older_than(self, cutoff: str) -> list[str]:
        """Ids of the conversations whose last activity (`updated_at`) is before `cutoff` (ISO 8601 UTC)."""

    def purge_older_than(self, cutoff: str) -> int:
        """Erase every conversation last active before `cutoff`; returns how many were erased."""
        n = 0
        for cid in self.conversations_older_than(cutoff):
            n += bool(self.delete(cid))
        return n

    @abstractmethod
    def ping(self) -> bool:
        """True when the store answers."""

    def durability(self) -> dict:
        """How safe an acknowledged write is: {"durable": bool, ...details}."""
        return {"durable": True}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------------------- SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    customer_id INTEGER,
    turn_count INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT '{}',
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS turns (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    seq INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    text TEXT NOT NULL,
    decision TEXT NOT NULL,
    agent TEXT,
    confidence REAL NOT NULL,
    created_at TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq),
    UNIQUE (conversation_id, message_id)
);
CREATE TABLE IF NOT EXISTS handoffs (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    seq INTEGER,
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS handoffs_by_conversation ON handoffs(conversation_id, created_at);
CREATE INDEX IF NOT EXISTS handoffs_by_time ON handoffs(created_at);
CREATE TABLE IF NOT EXISTS corrections (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    seq INTEGER NOT NULL,
    label TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
CREATE INDEX IF NOT EXISTS corrections_by_time ON corrections(created_at);
CREATE INDEX IF NOT EXISTS conversations_by_update ON conversations(updated_at);
"""
# Columns added after the first release (added to an older file on open).
_MIGRATIONS = (("handoffs", "status", "ALTER TABLE handoffs ADD COLUMN status TEXT NOT NULL DEFAULT 'open'"),)
_POST_MIGRATION = "CREATE INDEX IF NOT EXISTS handoffs_by_status ON handoffs(status, created_at)"


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere (with \\ as the escape character)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def summary_of(conv: Conversation, last: TurnRecord | None) -> dict:
    """What the conversation list shows for one conversation."""
    return {"id": conv.id, "created_at": conv.created_at, "updated_at": conv.updated_at, "status": conv.status,
            "customer_id": conv.customer_id, "turn_count": conv.turn_count, "meta": conv.meta,
            "last_text": None if last is None else last.text,
            "last_decision": None if last is None else last.decision,
            "last_role": None if last is None else last.role}


def iso_days_ago(days: float, now: datetime | None = None) -> str:
    """The ISO 8601 UTC time `days` before now (the retention cut-off)."""
    from datetime import timedelta

    t = (now or datetime.now(timezone.utc)) - timedelta(days=days)
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_to_ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


class SQLiteStore(ConversationStore):
    """Conversations in one SQLite file (WAL, synchronous=FULL), one connection per thread."""

    kind = "sqlite"

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0):
        self.path = Path(path).expanduser()
        if str(path) == ":memory:":
            raise InputError("the SQLite store needs a file (in-memory databases are not shared between threads)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.url = f"sqlite:///{self.path}"
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        with self._write() as db:
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                db.execute(stmt)
            for table, column, ddl in _MIGRATIONS:
                if column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(ddl)
            db.execute(_POST_MIGRATION)

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise ShopRouterError("the conversation store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ShopRouterError(f"could not put {self.path} in WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA secure_delete=ON")  # erased conversations are overwritten, not just unlinked
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    class _Tx:
        def __init__(self, conn: sqlite3.Connection, immediate: bool):
            self.conn, self.immediate = conn, immediate

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
            return self.conn

        def __exit__(self, exc_type, exc, tb):
            if exc_type is None:
                self.conn.execute("COMMIT")
            else:
                self.conn.execute("ROLLBACK")
            return False

    def _write(self) -> SQLiteStore._Tx:
        return self._Tx(self._conn(), immediate=True)

    def _read(self) -> SQLiteStore._Tx:
        return self._Tx(self._conn(), immediate=False)

    @staticmethod
    def _conversation(row) -> Conversation:
        return Conversation(id=row[0], created_at=row[1], updated_at=row[2], status=row[3], customer_id=row[4],
                            turn_count=row[5], state=json.loads(row[6]), meta=json.loads(row[7]))

    def create(self, customer_id=None, meta=None, conversation_id=None) -> Conversation:
        cid = check_id(conversation_id, "conversation id") if conversation_id is not None else new_id()
        ts = now_iso()
        conv = Conversation(cid, ts, ts, OPEN, customer_id, 0, {}, dict(meta or {}))
        with self._write() as db:
            try:
                db.execute("INSERT INTO conversations (id, created_at, updated_at, status, customer_id, turn_count,"
                           " state, meta) VALUES (?, ?, ?, ?, ?, 0, '{}', ?)",
                           (cid, ts, ts, OPEN, customer_id, _dumps(conv.meta)))
            except sqlite3.IntegrityError:
                raise ConflictError(f"conversation {cid} already exists") from None
        return conv

    def get(self, conversation_id, turns=None) -> Conversation:
        with self._read() as db:
            row = db.execute("SELECT id, created_at, updated_at, status, customer_id, turn_count, state, meta "
                             "FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"conversation {conversation_id} not found")
            conv = self._conversation(row)
            if turns is None:
                rows = db.execute("SELECT data FROM turns WHERE conversation_id = ? ORDER BY seq",
                                  (conversation_id,)).fetchall()
            elif turns > 0:
                rows = db.execute("SELECT data FROM (SELECT seq, data FROM turns WHERE conversation_id = ? "
                                  "ORDER BY seq DESC LIMIT ?) ORDER BY seq", (conversation_id, turns)).fetchall()
            else:
                rows = []
            conv.turns = [TurnRecord.from_dict(json.loads(r[0])) for r in rows]
            conv.handoffs = [Handoff.from_dict(json.loads(r[0])) for r in db.execute(
                "SELECT data FROM handoffs WHERE conversation_id = ? ORDER BY created_at, rowid",
                (conversation_id,)).fetchall()]
            for (raw,) in db.execute("SELECT data FROM corrections WHERE conversation_id = ?", (conversation_id,)):
                c = Correction.from_dict(json.loads(raw))
                conv.corrections[c.seq] = c
        return conv

    def append_turn(self, conversation_id, turn, *, state=None, status=None, handoff=None, expected_seq=None):
        check_id(turn.message_id, "message id")
        with self._write() as db:
            row = db.execute("SELECT turn_count FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"conversation {conversation_id} not found")
            old = db.execute("SELECT data FROM turns WHERE conversation_id = ? AND message_id = ?",
                             (conversation_id, turn.message_id)).fetchone()
            if old is not None:
                return TurnRecord.from_dict(json.loads(old[0])), False
            count = row[0]
            if expected_seq is not None and expected_seq != count:
                raise ConflictError(f"conversation {conversation_id} has {count} turns, expected {expected_seq}")
            seq = count + 1
            ts = now_iso()
            stored = TurnRecord.from_dict({**turn.to_dict(), "seq": seq, "created_at": ts})
            db.execute("INSERT INTO turns (conversation_id, seq, message_id, text, decision, agent, confidence,"
                       " created_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (conversation_id, seq, stored.message_id, stored.text, stored.decision, stored.agent,
                        float(stored.confidence), ts, _dumps(stored.to_dict())))
            sets, args = ["turn_count = ?", "updated_at = ?"], [seq, ts]
            if state is not None:
                sets.append("state = ?")
                args.append(_dumps(state))
            if status is not None:
                sets.append("status = ?")
                args.append(status)
            db.execute(f"UPDATE conversations SET {', '.join(sets)} WHERE id = ?", (*args, conversation_id))
            if handoff is not None:
                h = Handoff.from_dict({**handoff.to_dict(), "seq": seq, "created_at": handoff.created_at or ts})
                db.execute("INSERT INTO handoffs (id, conversation_id, seq, reason, created_at, data, status) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (h.id, conversation_id, seq, h.reason, h.created_at, _dumps(h.to_dict()), h.status))
        return stored, True

    def find_turn(self, conversation_id, message_id):
        with self._read() as db:
            row = db.execute("SELECT data FROM turns WHERE conversation_id = ? AND message_id = ?",
                             (conversation_id, message_id)).fetchone()
        return None if row is None else TurnRecord.from_dict(json.loads(row[0]))

    def list_handoffs(self, limit=100, status=None, oldest_first=False):
        order = "ASC" if oldest_first else "DESC"
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        with self._read() as db:
            rows = db.execute(f"SELECT data FROM handoffs {where} ORDER BY created_at {order}, rowid {order} LIMIT ?",
                              (*args, int(limit))).fetchall()
        return [Handoff.from_dict(json.loads(r[0])) for r in rows]

    def list_conversations(self, limit=50, offset=0, status=None, query=None):
        where, args = [], []
        if status:
            where.append("c.status = ?")
            args.append(status)
        q = (query or "").strip()
        if q:
            pat = _like(q)
            where.append("(c.id LIKE ? ESCAPE '\\' OR CAST(c.customer_id AS TEXT) = ? OR EXISTS (SELECT 1 FROM turns t "
                         "WHERE t.conversation_id = c.id AND t.text LIKE ? ESCAPE '\\'))")
            args += [pat, q, pat]
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        with self._read() as db:
            total = db.execute(f"SELECT COUNT(*) FROM conversations c {clause}", args).fetchone()[0]
            rows = db.execute(
                "SELECT c.id, c.created_at, c.updated_at, c.status, c.customer_id, c.turn_count, c.state, c.meta, "
                "(SELECT data FROM turns t WHERE t.conversation_id = c.id AND t.seq = c.turn_count) "
                f"FROM conversations c {clause} ORDER BY c.updated_at DESC, c.rowid DESC LIMIT ? OFFSET ?",
                (*args, int(limit), int(offset))).fetchall()
        out = []
        for row in rows:
            conv = self._conversation(row[:8])
            last = TurnRecord.from_dict(json.loads(row[8])) if row[8] else None
            out.append(summary_of(conv, last))
        return out, int(total)

    def resolve_handoffs(self, conversation_id, by=None):
        ts = now_iso()
        done = []
        with self._write() as db:
            row = db.execute("SELECT status FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"conversation {conversation_id} not found")
            for hid, raw in db.execute("SELECT id, data FROM handoffs WHERE conversation_id = ? AND status = 'open' "
                                       "ORDER BY created_at, rowid", (conversation_id,)).fetchall():
                h = Handoff.from_dict(json.loads(raw))
                h.status, h.resolved_at, h.resolved_by = RESOLVED, ts, by
                db.execute("UPDATE handoffs SET status = ?, data = ? WHERE id = ?", (RESOLVED, _dumps(h.to_dict()), hid))
                done.append(h)
            if row[0] == HANDED_OFF:
                db.execute("UPDATE conversations SET status = ?, updated_at = ? WHERE id = ?",
                           (RESOLVED, ts, conversation_id))
        return done

    def set_correction(self, correction):
        c = Correction.from_dict(correction.to_dict())
        c.created_at = c.created_at or now_iso()
        with self._write() as db:
            if db.execute("SELECT 1 FROM conversations WHERE id = ?", (c.conversation_id,)).fetchone() is None:
                raise NotFoundError(f"conversation {c.conversation_id} not found")
            row = db.execute("SELECT data FROM turns WHERE conversation_id = ? AND seq = ?",
                             (c.conversation_id, int(c.seq))).fetchone()
            if row is None:
                raise NotFoundError(f"conversation {c.conversation_id} has no turn {c.seq}")
            t = TurnRecord.from_dict(json.loads(row[0]))
            if t.role != CUSTOMER:
                raise InputError(f"turn {c.seq} was written by a {t.role}; only customer turns have a routing label")
            c.previous = t.decision
            db.execute("INSERT OR REPLACE INTO corrections (conversation_id, seq, label, created_at, data) "
                       "VALUES (?, ?, ?, ?, ?)", (c.conversation_id, int(c.seq), c.label, c.created_at,
                                                  _dumps(c.to_dict())))
        return c

    def list_corrections(self, limit=None):
        with self._read() as db:
            rows = db.execute("SELECT data FROM corrections ORDER BY created_at, rowid LIMIT ?",
                              (-1 if limit is None else int(limit),)).fetchall()
        return [Correction.from_dict(json.loads(r[0])) for r in rows]

    def delete(self, conversation_id):
        with self._write() as db:
            for table in ("corrections", "turns", "handoffs"):
                db.execute(f"DELETE FROM {table} WHERE conversation_id = ?", (conversation_id,))
            gone = db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount > 0
        if gone:
            try:  # move the erased pages out of the write-ahead log too (best effort: readers may hold it)
                self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error:  # pragma: no cover
                pass
        return gone

    def conversations_older_than(self, cutoff):
        with self._read() as db:
            return [r[0] for r in db.execute("SELECT id FROM conversations WHERE updated_at < ? ORDER BY updated_at",
                                             (cutoff,)).fetchall()]

    def ping(self) -> bool:
        try:
            self._conn().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def durability(self) -> dict:
        conn = self._conn()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]  # 2 = FULL
        return {"durable": mode == "wal" and sync >= 2, "journal_mode": mode, "synchronous": sync,
                "path": str(self.path)}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover
                    pass
            self._all.clear()


# ---------------------------------------------------------------------------------------------------- Redis

# Keys of one conversation share the hash tag {id}. Global indexes (sorted sets, score = time in ms):
# conversations (id by last activity), handoff_index (every hand-off, "id|handoff id"), handoff_open (the
# human queue), corrections ("id|seq").
# KEYS: 1 conversation hash, 2 turns list, 3 message-id -> seq hash, 4 hand-offs list, 5 handoff_index,
# 6 conversations, 7 handoff_open
# ARGV: 1 message id, 2 expected seq ('' = any), 3 turn JSON starting with '{"seq": null, ', 4 state JSON
# ('' = keep), 5 status ('' = keep), 6 hand-off JSON starting with '{"seq": null' ('' = none), 7 time,
# 8 time in ms, 9 conversation id, 10 hand-off id
_APPEND_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local old = redis.call('HGET', KEYS[3], ARGV[1])
if old then return {'replay', redis.call('LINDEX', KEYS[2], tonumber(old) - 1)} end
local count = tonumber(redis.call('HGET', KEYS[1], 'turn_count') or '0')
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= count then return {'conflict', tostring(count)} end
local seq = count + 1
local turn = (string.gsub(ARGV[3], '^{"seq": null, ', '{"seq": ' .. seq .. ', ', 1))
redis.call('RPUSH', KEYS[2], turn)
redis.call('HSET', KEYS[3], ARGV[1], seq)
redis.call('HSET', KEYS[1], 'turn_count', seq, 'updated_at', ARGV[7])
redis.call('ZADD', KEYS[6], ARGV[8], ARGV[9])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[5]) end
if ARGV[6] ~= '' then
  local h = (string.gsub(ARGV[6], '^{"seq": null, ', '{"seq": ' .. seq .. ', ', 1))
  redis.call('RPUSH', KEYS[4], h)
  redis.call('ZADD', KEYS[5], ARGV[8], ARGV[9] .. '|' .. ARGV[10])
  redis.call('ZADD', KEYS[7], ARGV[8], ARGV[9] .. '|' .. ARGV[10])
end
return {'ok', turn}
"""

# KEYS: 1 conversation hash, 2 conversations index; ARGV: 1 id, 2 time, 3 customer id, 4 meta, 5 time in ms
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'created_at', ARGV[2], 'updated_at', ARGV[2], 'status', 'open',
           'customer_id', ARGV[3], 'turn_count', 0, 'state', '{}', 'meta', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return 1
"""

# KEYS: 1 conversation hash, 2 hand-offs list, 3 hand-off state hash, 4 handoff_open, 5 conversations
# ARGV: 1 id, 2 resolution JSON, 3 time, 4 time in ms
_RESOLVE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local out = {'ok'}
for _, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local hid = cjson.decode(raw)['id']
  if redis.call('HEXISTS', KEYS[3], hid) == 0 then
    redis.call('HSET', KEYS[3], hid, ARGV[2])
    redis.call('ZREM', KEYS[4], ARGV[1] .. '|' .. hid)
    table.insert(out, raw)
  end
end
if redis.call('HGET', KEYS[1], 'status') == 'handed_off' then
  redis.call('HSET', KEYS[1], 'status', 'resolved', 'updated_at', ARGV[3])
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
end
return out
"""

# KEYS: 1 conversation hash, 2 turns list, 3 corrections hash, 4 corrections index
# ARGV: 1 seq, 2 correction JSON, 3 time in ms, 4 conversation id
_CORRECT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if redis.call('LLEN', KEYS[2]) < tonumber(ARGV[1]) then return 'noturn' end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4] .. '|' .. ARGV[1])
return 'ok'
"""

# KEYS: 1 conversation hash, 2 turns, 3 message ids, 4 hand-offs, 5 hand-off states, 6 corrections,
# 7 conversations, 8 handoff_index, 9 handoff_open, 10 corrections index; ARGV: 1 id
_DELETE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, raw in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
  local hid = cjson.decode(raw)['id']
  redis.call('ZREM', KEYS[8], ARGV[1] .. '|' .. hid)
  redis.call('ZREM', KEYS[9], ARGV[1] .. '|' .. hid)
end
for _, seq in ipairs(redis.call('HKEYS', KEYS[6])) do
  redis.call('ZREM', KEYS[10], ARGV[1] .. '|' .. seq)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[7], ARGV[1])
return 1
"""

SCAN_LIMIT = 20_000  # conversations a filtered Redis listing looks at (newest first)


class RedisStore(ConversationStore):
    """Conversations in Redis: a hash per conversation, a list of turn JSON, a message-id index."""

    kind = "redis"

    def __init__(self, url: str, prefix: str = "shoprouter:", client=None):
        import redis

        self.prefix = prefix
        self.url = _redact(url)
        self.r = client or redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5,
                                                socket_timeout=15, health_check_interval=30)
        self._append = self.r.register_script(_APPEND_LUA)
        self._create = self.r.register_script(_CREATE_LUA)
        self._resolve = self.r.register_script(_RESOLVE_LUA)
        self._correct = self.r.register_script(_CORRECT_LUA)
        self._delete = self.r.register_script(_DELETE_LUA)
        try:
            self.r.ping()
        except redis.RedisError as exc:
            raise ShopRouterError(f"cannot reach Redis at {self.url}: {exc}") from None
        info = self.durability()
        if not info["durable"]:
            log.warning("Redis at %s does not fsync every write (appendonly=%s, appendfsync=%s): an acknowledged "
                        "turn can be lost if Redis crashes; set appendonly yes and appendfsync always",
                        self.url, info.get("appendonly"), info.get("appendfsync"))

    def _k(self, cid: str) -> dict[str, str]:
        base = f"{self.prefix}conv:{{{cid}}}"
        p = self.prefix
        return {"conv": base, "turns": base + ":turns", "msg": base + ":msg", "handoffs": base + ":handoffs",
                "hstate": base + ":hstate", "corrections": base + ":corrections",
                "conversations": p + "conversations", "handoff_index": p + "handoff_index",
                "handoff_open": p + "handoff_open", "correction_index": p + "corrections"}

    def _keys(self, cid: str) -> list[str]:
        k = self._k(cid)
        return [k["conv"], k["turns"], k["msg"], k["handoffs"], k["handoff_index"], k["conversations"],
                k["handoff_open"]]

    def create(self, customer_id=None, meta=None, conversation_id=None) -> Conversation:
        cid = check_id(conversation_id, "conversation id") if conversation_id is not None else new_id()
        ts = now_iso()
        meta = dict(meta or {})
        k = self._k(cid)
        ok = self._create(keys=[k["conv"], k["conversations"]],
                          args=[cid, ts, "" if customer_id is None else str(int(customer_id)), _dumps(meta),
                                iso_to_ms(ts)])
        if not ok:
            raise ConflictError(f"conversation {cid} already exists")
        return Conversation(cid, ts, ts, OPEN, customer_id, 0, {}, meta)

    @staticmethod
    def _from_hash(h: dict) -> Conversation:
        return Conversation(id=h["id"], created_at=h["created_at"], updated_at=h["updated_at"], status=h["status"],
                            customer_id=int(h["customer_id"]) if h.get("customer_id") else None,
                            turn_count=int(h["turn_count"]), state=json.loads(h.get("state") or "{}"),
                            meta=json.loads(h.get("meta") or "{}"))

    @staticmethod
    def _handoffs(raw_list: list[str], states: dict) -> list[Handoff]:
        out = []
        for x in raw_list:
            h = Handoff.from_dict(json.loads(x))
            st = states.get(h.id)
            if st:
                d = json.loads(st)
                h.status, h.resolved_at, h.resolved_by = d.get("status", RESOLVED), d.get("resolved_at"), d.get(
                    "resolved_by")
            out.append(h)
        return out

    def get(self, conversation_id, turns=None) -> Conversation:
        k = self._k(conversation_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hgetall(k["conv"])
        if turns is None:
            pipe.lrange(k["turns"], 0, -1)
        elif turns > 0:
            pipe.lrange(k["turns"], -turns, -1)
        else:
            pipe.echo("")
        pipe.lrange(k["handoffs"], 0, -1)
        pipe.hgetall(k["hstate"])
        pipe.hgetall(k["corrections"])
        h, raw_turns, raw_handoffs, states, corrections = pipe.execute()
        if not h:
            raise NotFoundError(f"conversation {conversation_id} not found")
        conv = self._from_hash(h)
        if isinstance(raw_turns, list):
            conv.turns = [TurnRecord.from_dict(json.loads(t)) for t in raw_turns]
        conv.handoffs = self._handoffs(raw_handoffs, states)
        for raw in corrections.values():
            c = Correction.from_dict(json.loads(raw))
            conv.corrections[c.seq] = c
        return conv

    def append_turn(self, conversation_id, turn, *, state=None, status=None, handoff=None, expected_seq=None):
        check_id(turn.message_id, "message id")
        ts = now_iso()
        body = turn.to_dict()
        body.update(seq=None, created_at=ts)
        hbody = ""
        if handoff is not None:
            hd = handoff.to_dict()
            hd.update(seq=None, created_at=handoff.created_at or ts)
            hbody = _dumps(hd)
        res = self._append(keys=self._keys(conversation_id), args=[
            turn.message_id, "" if expected_seq is None else str(int(expected_seq)), _dumps(body),
            "" if state is None else _dumps(state), status or "", hbody, ts, iso_to_ms(ts), conversation_id,
            "" if handoff is None else handoff.id])
        tag = res[0]
        if tag == "missing":
            raise NotFoundError(f"conversation {conversation_id} not found")
        if tag == "conflict":
            raise ConflictError(f"conversation {conversation_id} has {res[1]} turns, expected {expected_seq}")
        return TurnRecord.from_dict(json.loads(res[1])), tag == "ok"

    def find_turn(self, conversation_id, message_id):
        k = self._k(conversation_id)
        seq = self.r.hget(k["msg"], message_id)
        if seq is None:
            return None
        raw = self.r.lindex(k["turns"], int(seq) - 1)
        return None if raw is None else TurnRecord.from_dict(json.loads(raw))

    def list_handoffs(self, limit=100, status=None, oldest_first=False):
        index = f"{self.prefix}handoff_open" if status == OPEN else f"{self.prefix}handoff_index"
        out: list[Handoff] = []
        start, page = 0, 200
        while len(out) < limit:
            members = (self.r.zrange if oldest_first else self.r.zrevrange)(index, start, start + page - 1)
            if not members:
                break
            start += page
            pairs = [m.split("|", 1) for m in members]
            pipe = self.r.pipeline(transaction=False)
            for cid, _ in pairs:
                k = self._k(cid)
                pipe.lrange(k["handoffs"], 0, -1)
                pipe.hgetall(k["hstate"])
            res = pipe.execute()
            for i, (_, hid) in enumerate(pairs):
                for h in self._handoffs(res[2 * i], res[2 * i + 1]):
                    if h.id == hid and (status is None or h.status == status):
                        out.append(h)
                        break
                if len(out) >= limit:
                    break
        return out

    def _summaries(self, cids: list[str], with_turns: bool) -> list[tuple[Conversation, TurnRecord | None, list]]:
        pipe = self.r.pipeline(transaction=False)
        for cid in cids:
            k = self._k(cid)
            pipe.hgetall(k["conv"])
            if with_turns:
                pipe.lrange(k["turns"], 0, -1)
            else:
                pipe.lrange(k["turns"], -1, -1)
        res = pipe.execute()
        out = []
        for i in range(len(cids)):
            h, raw = res[2 * i], res[2 * i + 1]
            if not h:
                continue
            turns = [TurnRecord.from_dict(json.loads(t)) for t in raw]
            out.append((self._from_hash(h), turns[-1] if turns else None, turns))
        return out

    def list_conversations(self, limit=50, offset=0, status=None, query=None):
        index = f"{self.prefix}conversations"
        q = (query or "").strip().casefold()
        if not status and not q:
            total = self.r.zcard(index)
            cids = self.r.zrevrange(index, int(offset), int(offset) + int(limit) - 1)
            return [summary_of(c, last) for c, last, _ in self._summaries(cids, False)], int(total)
        matches = []
        for start in range(0, SCAN_LIMIT, 200):
            cids = self.r.zrevrange(index, start, start + 199)
            if not cids:
                break
            for conv, last, turns in self._summaries(cids, bool(q)):
                if status and conv.status != status:
                    continue
                if q and not (q in conv.id.casefold() or (conv.customer_id is not None and q == str(conv.customer_id))
                              or any(q in t.text.casefold() for t in turns)):
                    continue
                matches.append(summary_of(conv, last))
        return matches[int(offset):int(offset) + int(limit)], len(matches)

    def resolve_handoffs(self, conversation_id, by=None):
        k = self._k(conversation_id)
        ts = now_iso()
        res = self._resolve(keys=[k["conv"], k["handoffs"], k["hstate"], k["handoff_open"], k["conversations"]],
                            args=[conversation_id, _dumps({"status": RESOLVED, "resolved_at": ts, "resolved_by": by}),
                                  ts, iso_to_ms(ts)])
        if res[0] == "missing":
            raise NotFoundError(f"conversation {conversation_id} not found")
        out = []
        for raw in res[1:]:
            h = Handoff.from_dict(json.loads(raw))
            h.status, h.resolved_at, h.resolved_by = RESOLVED, ts, by
            out.append(h)
        return out

    def set_correction(self, correction):
        c = Correction.from_dict(correction.to_dict())
        c.created_at = c.created_at or now_iso()
        k = self._k(c.conversation_id)
        raw = self.r.lindex(k["turns"], int(c.seq) - 1) if int(c.seq) >= 1 else None
        if raw is None:
            if not self.r.exists(k["conv"]):
                raise NotFoundError(f"conversation {c.conversation_id} not found")
            raise NotFoundError(f"conversation {c.conversation_id} has no turn {c.seq}")
        t = TurnRecord.from_dict(json.loads(raw))
        if t.role != CUSTOMER:
            raise InputError(f"turn {c.seq} was written by a {t.role}; only customer turns have a routing label")
        c.previous = t.decision
        tag = self._correct(keys=[k["conv"], k["turns"], k["corrections"], k["correction_index"]],
                            args=[int(c.seq), _dumps(c.to_dict()), iso_to_ms(c.created_at), c.conversation_id])
        if tag == "missing":
            raise NotFoundError(f"conversation {c.conversation_id} not found")
        if tag == "noturn":  # pragma: no cover - turns are never removed one by one
            raise NotFoundError(f"conversation {c.conversation_id} has no turn {c.seq}")
        return c

    def list_corrections(self, limit=None):
        members = self.r.zrange(f"{self.prefix}corrections", 0, -1 if limit is None else int(limit) - 1)
        pipe = self.r.pipeline(transaction=False)
        for m in members:
            cid, seq = m.split("|", 1)
            pipe.hget(self._k(cid)["corrections"], seq)
        return [Correction.from_dict(json.loads(raw)) for raw in pipe.execute() if raw]

    def delete(self, conversation_id):
        k = self._k(conversation_id)
        return bool(self._delete(keys=[k["conv"], k["turns"], k["msg"], k["handoffs"], k["hstate"], k["corrections"],
                                       k["conversations"], k["handoff_index"], k["handoff_open"],
                                       k["correction_index"]], args=[conversation_id]))

    def conversations_older_than(self, cutoff):
        return list(self.r.zrangebyscore(f"{self.prefix}conversations", "-inf", f"({iso_to_ms(cutoff)}"))

    def ping(self) -> bool:
        import redis

        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False

    def durability(self) -> dict:
        import redis

        try:
            aof = self.r.config_get("appendonly").get("appendonly")
            fsync = self.r.config_get("appendfsync").get("appendfsync")
        except redis.RedisError:  # CONFIG can be disabled on managed Redis
            return {"durable": False, "appendonly": "unknown", "appendfsync": "unknown"}
        return {"durable": aof == "yes" and fsync == "always", "appendonly": aof, "appendfsync": fsync}

    def close(self) -> None:
        self.r.close()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


def default_store_path() -> Path:
    """Where the default SQLite store lives: $SHOPROUTER_HOME or $XDG_DATA_HOME/shoprouter, else ~/.local/share."""
    home = os.environ.get("SHOPROUTER_HOME")
    if home:
        return Path(home) / "conversations.sqlite3"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "shoprouter" / "conversations.sqlite3"


def open_store(url: str | None = None) -> ConversationStore:
    """A store from a URL (see the module doc); None means the default SQLite file."""
    if url is None or url == "":
        return SQLiteStore(default_store_path())
    if url.startswith(("redis://", "rediss://", "unix://")):
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        prefix = query.pop("prefix", ["shoprouter:"])[0]
        rest = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs)
        return RedisStore(urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), prefix=prefix)
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        if path.startswith("///"):
            path = path[3:]
        elif path.startswith("//"):
            raise InputError(f"store URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
        if not path:
            raise InputError(f"store URL {url!r} names no file")
        return SQLiteStore(path)
    if "://" in url:
        raise InputError(f"unknown store URL {url!r}; use sqlite:///FILE or redis://HOST:PORT/DB")
    return SQLiteStore(url)
