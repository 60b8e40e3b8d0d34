"""The conversation store (SQLite and Redis, one suite for both) and the multi-turn conversation logic."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from shoprouter.conversation import ConversationManager, is_followup
from shoprouter.errors import InputError
from shoprouter.session import (
    HANDED_OFF,
    ConflictError,
    Handoff,
    NotFoundError,
    RedisStore,
    SQLiteStore,
    TurnRecord,
    new_id,
    open_store,
)
from shoprouter.shop import ShopAgents, ShopDB

from .service_support import (  # noqa: F401
    REDIS_BIN,
    RedisServer,
    copy_shop,
    needs_redis,
    redis_server,
    shop_db_path,
)
from .support_router import KeywordTestRouter


def turn(text: str, decision: str = "order", mid: str | None = None, **kw) -> TurnRecord:
    return TurnRecord(seq=None, message_id=mid or new_id(), text=text, decision=decision,
                      agent=decision if decision not in ("clarify", "none") else None, confidence=0.9,
                      scores={decision: 0.9}, reply={"agent": decision, "action": "x", "text": "ok", "data": {},
                                                     "missing": []}, **kw)


# ------------------------------------------------------------------------------------------------ the store
def test_create_append_get_roundtrip(store):
    conv = store.create(customer_id=7, meta={"channel": "web", "ünïcode": "✓"})
    assert conv.turn_count == 0 and conv.status == "open"
    t1, created = store.append_turn(conv.id, turn('where is "my" order 10007?\nnew line ✓', mid="m-1"),
                                    state={"last_agent": "order"}, expected_seq=0)
    assert created and t1.seq == 1 and t1.created_at
    t2, _ = store.append_turn(conv.id, turn("and my refund?", "returns"), state={"last_agent": "returns"})
    assert t2.seq == 2
    got = store.get(conv.id)
    assert got.customer_id == 7 and got.meta == {"channel": "web", "ünïcode": "✓"}
    assert got.turn_count == 2 and got.state == {"last_agent": "returns"}
    assert [t.seq for t in got.turns] == [1, 2]
    assert got.turns[0].text == 'where is "my" order 10007?\nnew line ✓'
    assert got.turns[0].reply["text"] == "ok" and got.turns[0].scores == {"order": 0.9}
    assert got.turns[1].decision == "returns" and got.updated_at >= got.created_at
    assert [t.seq for t in store.get(conv.id, turns=1).turns] == [2]
    assert store.get(conv.id, turns=0).turns == []
    assert store.find_turn(conv.id, "m-1").text.startswith("where is")
    assert store.find_turn(conv.id, "nope") is None
    assert store.ping()


def test_unknown_conversation_and_taken_id(store):
    with pytest.raises(NotFoundError):
        store.get("does-not-exist")
    with pytest.raises(NotFoundError):
        store.append_turn("does-not-exist", turn("hi"))
    store.create(conversation_id="ticket-42")
    with pytest.raises(ConflictError):
        store.create(conversation_id="ticket-42")
    with pytest.raises(InputError):
        store.create(conversation_id="bad id with spaces")


def test_message_id_is_idempotent(store):
    conv = store.create()
    first, created = store.append_turn(conv.id, turn("hello", mid="same"))
    again, created2 = store.append_turn(conv.id, turn("a different text", mid="same"))
    assert created and not created2
    assert again.seq == first.seq == 1 and again.text == "hello"
    assert store.get(conv.id).turn_count == 1


def test_expected_seq_conflict(store):
    conv = store.create()
    store.append_turn(conv.id, turn("one"), expected_seq=0)
    with pytest.raises(ConflictError):
        store.append_turn(conv.id, turn("stale"), expected_seq=0)
    store.append_turn(conv.id, turn("two"), expected_seq=1)
    assert [t.text for t in store.get(conv.id).turns] == ["one", "two"]


def test_handoff_is_stored_with_the_turn(store):
    conv = store.create(customer_id=3)
    store.append_turn(conv.id, turn("where is my order"))
    h = Handoff(id=new_id(), conversation_id=conv.id, reason="out_of_scope", customer_id=3,
                transcript=[{"seq": 1, "text": "where is my order"}], note="n")
    t, _ = store.append_turn(conv.id, turn("what's the weather", "none"), status=HANDED_OFF, handoff=h,
                             state={"handoff_reason": "out_of_scope"})
    got = store.get(conv.id)
    assert got.status == HANDED_OFF
    assert len(got.handoffs) == 1 and got.handoffs[0].seq == t.seq == 2
    assert got.handoffs[0].reason == "out_of_scope" and got.handoffs[0].transcript[0]["text"] == "where is my order"
    assert any(x.id == h.id for x in store.list_handoffs(10))


def test_many_concurrent_writers_lose_and_duplicate_nothing(store):
    """16 threads append to 4 conversations at once, half of them with optimistic expected_seq retries."""
    convs = [store.create().id for _ in range(4)]
    per_thread = 25
    errors = []

    def writer(i: int):
        try:
            for j in range(per_thread):
                cid = convs[(i + j) % len(convs)]
                t = turn(f"w{i}-{j}", mid=f"w{i}-{j}")
                if i % 2:
                    store.append_turn(cid, t)
                else:
                    while True:
                        seen = store.get(cid, turns=0).turn_count
                        try:
                            store.append_turn(cid, t, expected_seq=seen)
                            break
                        except ConflictError:
                            continue
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    texts = []
    for cid in convs:
        got = store.get(cid)
        assert [t.seq for t in got.turns] == list(range(1, got.turn_count + 1))
        texts += [t.text for t in got.turns]
    assert sorted(texts) == sorted(f"w{i}-{j}" for i in range(16) for j in range(per_thread))


_WRITER = r"""
import sys, json
from shoprouter.session import open_store, TurnRecord
store = open_store(sys.argv[1])
cid = sys.argv[2]
i = 0
while True:
    i += 1
    t, _ = store.append_turn(cid, TurnRecord(None, f"{sys.argv[3]}-{i}", f"message {i}", "order", "order"))
    print(json.dumps({"mid": t.message_id, "seq": t.seq}), flush=True)
"""


def _crash_writers(url: str, cid: str, n_procs: int, acks_wanted: int, kill_redis: RedisServer | None = None):
    """Start writer processes, SIGKILL them (and redis-server) mid-write; return the acknowledged turns."""
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, cid, f"p{k}"], stdout=subprocess.PIPE, text=True)
             for k in range(n_procs)]
    acked: list[dict] = []
    lock = threading.Lock()

    def reader(p):
        for line in p.stdout:
            with lock:
                acked.append(json.loads(line))

    readers = [threading.Thread(target=reader, args=(p,), daemon=True) for p in procs]
    for r in readers:
        r.start()
    deadline = time.monotonic() + 30
    while len(acked) < acks_wanted and time.monotonic() < deadline:
        time.sleep(0.01)
    if kill_redis is not None:
        kill_redis.kill9()
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(10)
    for r in readers:
        r.join(5)
    return acked


def test_sqlite_acknowledged_turns_survive_sigkill_of_writers(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    store = open_store(url)
    cid = store.create().id
    store.close()
    acked = _crash_writers(url, cid, n_procs=3, acks_wanted=150)
    assert len(acked) >= 150
    store = open_store(url)
    got = store.get(cid)
    stored = {t.message_id: t.seq for t in got.turns}
    assert all(stored.get(a["mid"]) == a["seq"] for a in acked), "an acknowledged turn was lost"
    assert [t.seq for t in got.turns] == list(range(1, got.turn_count + 1))
    assert store.durability()["durable"]
    store.close()


@needs_redis
def test_redis_acknowledged_turns_survive_sigkill_of_writers_and_redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        store = open_store(server.url)
        assert store.durability() == {"durable": True, "appendonly": "yes", "appendfsync": "always"}
        cid = store.create().id
        store.close()
        acked = _crash_writers(server.url, cid, n_procs=2, acks_wanted=100, kill_redis=server)
        assert len(acked) >= 100
        server.start()  # same port, same directory: Redis replays its append-only file
        store = open_store(server.url)
        got = store.get(cid)
        stored = {t.message_id: t.seq for t in got.turns}
        assert all(stored.get(a["mid"]) == a["seq"] for a in acked), "an acknowledged turn was lost"
        assert [t.seq for t in got.turns] == list(range(1, got.turn_count + 1))
        store.close()
    finally:
        server.stop()


def test_sqlite_file_is_wal_and_created_on_first_use(tmp_path):
    path = tmp_path / "deep" / "dir" / "c.sqlite3"
    s = open_store(str(path))
    assert path.exists() and s.durability()["journal_mode"] == "wal"
    assert isinstance(s, SQLiteStore)
    s.close()


def test_open_store_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPROUTER_HOME", str(tmp_path / "home"))
    s = open_store(None)
    assert s.kind == "sqlite" and str(s.path).startswith(str(tmp_path / "home"))
    s.close()
    s = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    assert s.path == tmp_path / "x.db"
    s.close()
    for bad in ("mysql://x", "sqlite:", "sqlite://host/x"):
        with pytest.raises(InputError):
            open_store(bad)


@needs_redis
def test_redis_store_reports_missing_durability(tmp_path, caplog):
    server = RedisServer(tmp_path / "r").start()
    try:
        import redis

        redis.Redis(port=server.port).config_set("appendfsync", "everysec")
        with caplog.at_level("WARNING"):
            s = open_store(server.url)
        assert s.durability()["durable"] is False
        assert isinstance(s, RedisStore) and "appendfsync" in caplog.text
        s.close()
    finally:
        server.stop()


def test_unreachable_redis_is_a_clear_error():
    from shoprouter.errors import ShopRouterError

    with pytest.raises(ShopRouterError, match="cannot reach Redis"):
        open_store("redis://127.0.0.1:1/0")


# --------------------------------------------------------------------------------- multi-turn conversations
@pytest.fixture
def manager(store, tmp_path, shop_db_path):  # noqa: F811
    agents = ShopAgents(ShopDB(copy_shop(shop_db_path, tmp_path / "shop")))
    return ConversationManager(KeywordTestRouter(), store, agents)


def _orders(agents: ShopAgents, sql: str):
    return agents.db.one(sql)


def test_followups_go_where_the_context_says(manager):
    shipped = _orders(manager.agents, "SELECT id, customer_id FROM orders WHERE status = 'shipped' LIMIT 1")
    conv = manager.start(customer_id=shipped["customer_id"])
    r1 = manager.send(conv.id, f"where is my order {shipped['id']}")
    assert r1.turn.decision == "order" and r1.turn.reply["action"] == "track"
    # no keyword at all: the router says none, the context says order
    r2 = manager.send(conv.id, "and when will it get here?")
    assert (r2.turn.decision, r2.turn.reason) == ("order", "context")
    assert r2.turn.meta["router_decision"] == "none"
    assert r2.turn.reply["data"]["order_id"] == shipped["id"]
    # explicit topic switch: followed, and the order from earlier is remembered by the new agent
    r3 = manager.send(conv.id, "also I need the invoice for it")
    assert r3.turn.decision == "payment" and r3.turn.reply["action"] == "invoice"
    assert r3.turn.reply["data"]["order_id"] == shipped["id"]
    got = manager.get(conv.id)
    assert [t.decision for t in got.turns] == ["order", "order", "payment"]


def test_history_window_is_bounded(manager):
    seen = []

    class Spy(KeywordTestRouter):
        def scores_batch(self, texts, histories):
            seen.append([h.text for h in histories[0]])
            return super().scores_batch(texts, histories)

    manager.router = Spy()
    conv = manager.start()
    for i in range(9):
        manager.send(conv.id, f"is the app crashing {i}")
    assert [len(h) for h in seen] == [0, 1, 2, 3, 4, 5, 6, 6, 6]
    assert seen[-1][-1] == "is the app crashing 7"


def test_clarification_names_the_likeliest_agents_and_the_answer_resolves_it(manager):
    delivered = _orders(manager.agents, "SELECT o.id, o.customer_id FROM orders o JOIN shipments s ON s.order_id = o.id "
                                        "WHERE o.status = 'delivered' LIMIT 1")
    conv = manager.start(customer_id=delivered["customer_id"])
    r1 = manager.send(conv.id, f"I have a problem with my order {delivered['id']} and a refund")
    assert r1.turn.decision == "clarify" and r1.turn.reply["action"] == "clarify"
    assert r1.turn.reply["text"] == "Is this about your order, or a return or refund?"
    assert r1.turn.reply["data"]["candidates"] == ["order", "returns"]
    r2 = manager.send(conv.id, "the refund")
    assert (r2.turn.decision, r2.turn.reason) == ("returns", "clarification_answer")
    # the agent got the original message too: it knows the order number from the first turn
    assert r2.turn.reply["data"].get("order_id") == delivered["id"]
    assert manager.get(conv.id).status == "open"


def test_clarification_answered_by_position(manager):
    conv = manager.start()
    r1 = manager.send(conv.id, "my card and my account")  # payment and account tie
    assert r1.turn.decision == "clarify" and set(r1.turn.reply["data"]["candidates"]) == {"payment", "account"}
    r2 = manager.send(conv.id, "the second one")
    assert r2.turn.decision == r1.turn.reply["data"]["candidates"][1]


def test_two_clarifications_in_a_row_hand_over(manager):
    conv = manager.start(customer_id=4)
    manager.send(conv.id, "I have a problem with my order and a refund")
    r2 = manager.send(conv.id, "hmm, not sure really")
    assert r2.turn.decision == "clarify" and r2.turn.reply["action"] == "handoff"
    assert r2.handoff is not None and r2.handoff.reason == "repeated_clarification"
    got = manager.get(conv.id)
    assert got.status == "handed_off" and got.handoffs[0].reason == "repeated_clarification"
    assert [x["text"] for x in got.handoffs[0].transcript] == ["I have a problem with my order and a refund",
                                                               "hmm, not sure really"]
    assert got.handoffs[0].customer_id == 4
    # later messages are kept for the human, and no agent answers them
    r3 = manager.send(conv.id, "where is my order 10001")
    assert r3.turn.reply["action"] == "handed_off" and r3.handoff is None
    assert len(manager.get(conv.id).handoffs) == 1


def test_none_hands_over_as_out_of_scope_and_unsure_none_as_low_confidence(manager):
    conv = manager.start()
    r = manager.send(conv.id, "what's the weather in Paris tomorrow?")
    assert r.turn.decision == "none" and r.handoff.reason == "out_of_scope"
    assert r.turn.reply["action"] == "handoff" and "colleague" in r.turn.reply["text"]

    class Unsure(KeywordTestRouter):
        def score_one(self, text):
            s = super().score_one(text)
            if s["none"] > 0.5:
                s = {k: 0.0 for k in s}
                s.update(none=0.4, clarify=0.3, order=0.3)
            return s

    manager.router = Unsure()
    conv2 = manager.start()
    r2 = manager.send(conv2.id, "blorp")
    assert r2.turn.decision == "none" and r2.handoff.reason == "low_confidence"


def test_agent_question_is_answered_in_the_next_message(manager):
    """The order agent asks for the e-mail on the order before cancelling; the answer goes back to it."""
    row = _orders(manager.agents, "SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id "
                                  "WHERE o.status = 'processing' LIMIT 1")
    conv = manager.start()  # not signed in
    r1 = manager.send(conv.id, f"please cancel order {row['id']}")
    assert r1.turn.decision == "order" and r1.turn.reply["missing"] == ["email"]
    r2 = manager.send(conv.id, f"sure, it's {row['email']}")  # the router alone would say account (email)
    assert (r2.turn.decision, r2.turn.reason) == ("order", "context")
    assert r2.turn.reply["action"] == "cancel" and r2.turn.reply["data"]["cancelled"] is True


def test_followup_heuristic():
    assert is_followup("and when will it arrive?")
    assert is_followup("ok cancel it then")
    assert is_followup("what about the blue one")
    assert not is_followup("what's the weather in Paris tomorrow and the day after, I need to know")
    assert not is_followup("tell me a joke")


def test_replayed_message_id_returns_the_stored_turn(manager):
    conv = manager.start()
    a = manager.send(conv.id, "is the app crashing for everyone?", message_id="client-1")
    b = manager.send(conv.id, "is the app crashing for everyone?", message_id="client-1")
    assert a.created and not b.created and a.turn.seq == b.turn.seq == 1
    assert manager.get(conv.id).turn_count == 1


def test_concurrent_messages_to_one_conversation(manager):
    conv = manager.start()
    texts = [f"the app shows error {500 + i}" for i in range(24)]
    threads = [threading.Thread(target=manager.send, args=(conv.id, t)) for t in texts]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got = manager.get(conv.id)
    assert sorted(t.text for t in got.turns) == sorted(texts)
    assert [t.seq for t in got.turns] == list(range(1, 25))


def test_clarification_with_a_router_that_gives_flat_agent_scores(manager):
    from .support_router import FlatClarifyRouter

    manager.router = FlatClarifyRouter()
    conv = manager.start()
    r1 = manager.send(conv.id, "something is wrong with my order and the payment")
    assert r1.turn.decision == "clarify"
    assert r1.turn.reply["data"]["candidates"] == ["order", "payment"]  # named in the message, not registry order
    assert r1.turn.reply["text"] == "Is this about your order, or a payment?"
    r2 = manager.send(conv.id, "payment")  # the router still says clarify for a one-word answer
    assert (r2.turn.decision, r2.turn.reason) == ("payment", "clarification_answer")
    conv2 = manager.start()
    manager.send(conv2.id, "my order and my card")
    r3 = manager.send(conv2.id, "actually my password")  # an agent the question did not offer
    assert r3.turn.decision == "account"
