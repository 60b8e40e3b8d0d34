"""The support desk behind the console: store operations (SQLite and Redis), authentication, erasure,
retention, the overview and the corrections export (API and CLI)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from fastapi.testclient import TestClient

from shoprouter.auth import AuthConfig, hash_key, parse_env_keys, read_keys_file, required_scope
from shoprouter.cli import main
from shoprouter.conversation import ConversationManager
from shoprouter.errors import InputError
from shoprouter.rows import read_rows
from shoprouter.service import create_app
from shoprouter.session import Correction, NotFoundError, iso_days_ago, open_store
from shoprouter.shop import ShopAgents, ShopDB

from .service_support import (  # noqa: F401
    REDIS_BIN,
    REPO,
    TEST_ROUTER,
    Service,
    copy_shop,
    redis_server,
    shop_db_path,
)
from .support_router import KeywordTestRouter

KEY = "sr_console-test-key-0123456789abcdef"
ROUTE_KEY = "sr_route-only-key-0123456789abcdef"
H = {"authorization": f"Bearer {KEY}"}
H_ROUTE = {"authorization": f"Bearer {ROUTE_KEY}"}
H_WRONG = {"authorization": "Bearer sr_wrong-key-0123456789abcdefgh"}


@pytest.fixture
def agents(tmp_path, shop_db_path):  # noqa: F811
    return ShopAgents(ShopDB(copy_shop(shop_db_path, tmp_path / "shop")))


@pytest.fixture
def manager(store, agents):
    return ConversationManager(KeywordTestRouter(), store, agents)


def make_app(store, agents, **kw):
    auth = kw.pop("auth", None) or AuthConfig(parse_env_keys(f"alice={KEY},robot:route={ROUTE_KEY}"))
    return create_app(KeywordTestRouter(), store, agents, auth=auth, **kw)


# ------------------------------------------------------------------------------------------------ the store
def test_human_desk_in_the_store(manager, store):
    a = manager.start(customer_id=3)
    manager.send(a.id, "where is my order 10002")
    r = manager.send(a.id, "tell me a joke")
    assert r.status == "handed_off" and r.handoff.reason == "out_of_scope"
    held = manager.send(a.id, "hello? anyone?")
    assert held.turn.reply["action"] == "handed_off"
    b = manager.start()
    manager.send(b.id, "my card was declined")

    queue = store.list_handoffs(10, status="open", oldest_first=True)
    assert [h.conversation_id for h in queue] == [a.id] and queue[0].status == "open"
    human, created = manager.reply(a.id, "Hi, this is Sam from support. What can I do?", author="sam")
    assert created and human.role == "human" and human.author == "sam" and human.seq == 4
    again, created2 = manager.reply(a.id, "dup", author="sam", message_id="r-1")
    assert created2 and manager.reply(a.id, "dup", author="sam", message_id="r-1")[1] is False

    # a correction of any customer turn; the newest one counts; human turns have no label
    c = manager.correct(a.id, 2, "none", author="sam")
    assert c.previous == "none" and c.label == "none"
    c = manager.correct(a.id, 3, "order", author="sam")
    assert c.previous == "none" and c.author == "sam"
    manager.correct(a.id, 3, "technical", author="kim")
    with pytest.raises(InputError, match="only customer turns"):
        manager.correct(a.id, 4, "order")
    with pytest.raises(InputError, match="unknown label"):
        manager.correct(a.id, 1, "pizza")
    with pytest.raises(NotFoundError):
        manager.correct(a.id, 99, "order")
    with pytest.raises(NotFoundError):
        manager.correct("nope", 1, "order")
    conv = store.get(a.id)
    assert conv.corrections[3].label == "technical" and conv.corrections[3].author == "kim"
    assert [(x.conversation_id, x.seq) for x in store.list_corrections()] == [(a.id, 2), (a.id, 3)]
    out = conv.to_dict(include_state=False)
    assert out["turns"][2]["correction"]["label"] == "technical" and out["turns"][0]["correction"] is None

    # resolving closes the hand-off; the next customer message goes to the agents again
    done = manager.resolve(a.id, author="sam")
    assert [h.status for h in done] == ["resolved"] and done[0].resolved_by == "sam"
    assert store.get(a.id).status == "resolved" and store.get(a.id).handoffs[0].resolved_by == "sam"
    assert store.list_handoffs(10, status="open") == []
    assert [h.status for h in store.list_handoffs(10)] == ["resolved"]
    assert manager.resolve(a.id) == []
    nxt = manager.send(a.id, "and when will my order 10002 arrive?")
    assert nxt.status == "open" and nxt.turn.decision == "order" and nxt.turn.reply["agent"] == "order"


def test_list_and_search_conversations(manager, store):
    ids = []
    for i, text in enumerate(["where is my order 10002", "my card was declined", "the website is not loading"]):
        c = manager.start(customer_id=10 + i, conversation_id=f"conv-{i}")
        manager.send(c.id, text)
        ids.append(c.id)
        time.sleep(0.003)  # distinct last-activity times (milliseconds)
    joke = manager.start(conversation_id="ticket-100_x")
    manager.send(joke.id, "tell me a joke")
    items, total = store.list_conversations(limit=10)
    assert total == 4 and [x["id"] for x in items] == [joke.id, *reversed(ids)]  # most recently active first
    assert items[0]["status"] == "handed_off" and items[0]["last_text"] == "tell me a joke"
    assert store.list_conversations(limit=2, offset=1)[0][0]["id"] == ids[2]
    assert [x["id"] for x in store.list_conversations(query="CARD")[0]] == [ids[1]]
    assert [x["id"] for x in store.list_conversations(query="11")[0]] == [ids[1]]  # the customer id
    assert [x["id"] for x in store.list_conversations(query="100_")[0]] == [joke.id]  # LIKE wildcards are literal
    assert store.list_conversations(query="%")[1] == 0 and store.list_conversations(query="_")[1] == 1
    assert [x["id"] for x in store.list_conversations(status="handed_off")[0]] == [joke.id]
    assert store.list_conversations(status="resolved", query="order") == ([], 0)


def test_delete_and_retention(manager, store):
    old = manager.start()
    manager.send(old.id, "tell me a joke")
    manager.correct(old.id, 1, "none")
    keep = manager.start()
    manager.send(keep.id, "my card was declined")
    assert manager.delete(old.id) is True and manager.delete(old.id) is False
    with pytest.raises(NotFoundError):
        store.get(old.id)
    assert store.list_handoffs(10) == [] and store.list_handoffs(10, status="open") == []
    assert store.list_corrections() == [] and store.list_conversations()[1] == 1
    # retention: only conversations whose last activity is before the cut-off
    future = datetime.now(timezone.utc) + timedelta(days=31)
    assert store.conversations_older_than(iso_days_ago(30)) == []
    assert store.conversations_older_than(iso_days_ago(30, now=future)) == [keep.id]
    assert store.purge_older_than(iso_days_ago(30)) == 0
    assert store.purge_older_than(iso_days_ago(30, now=future)) == 1
    assert store.list_conversations() == ([], 0)


def test_sqlite_erasure_leaves_no_trace_of_the_text(tmp_path, agents):
    store = open_store(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    m = ConversationManager(KeywordTestRouter(), store, agents)
    marker = "zebra-marker-" + uuid.uuid4().hex
    for _ in range(3):
        c = m.start()
        m.send(c.id, f"tell me a joke about {marker}")  # a hand-off: the transcript holds the text too
        m.correct(c.id, 1, "none")
        keep = m.start()
        m.send(keep.id, "my card was declined")
        assert m.delete(c.id)
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("c.sqlite3*"))
    assert marker.encode() not in blob
    assert b"my card was declined" in blob
    store.close()


# -------------------------------------------------------------------------------------------- the endpoints
def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "1" if m.group(0) == "{seq}" else "x-1", path)


def test_every_protected_page_and_endpoint_needs_credentials(store, agents):
    app = make_app(store, agents)
    c = TestClient(app)
    checked = 0
    for r in app.routes:
        for method in sorted(getattr(r, "methods", None) or []):
            if method == "HEAD":
                continue
            path = _concrete(r.path)
            need = required_scope(method, path, public_routing=False)
            for headers in ({}, H_WRONG, {"cookie": "shoprouter_session=forged.token"}):
                resp = c.request(method, path, headers=headers, json={"text": "hi"} if method != "GET" else None)
                if need is None:
                    assert resp.status_code != 401, (method, path)
                else:
                    assert resp.status_code == 401, (method, path, headers, resp.status_code)
                    assert resp.headers["www-authenticate"].startswith("Bearer")
                    checked += 1
    assert checked >= 3 * 16
    page = c.get("/")
    assert page.status_code == 401 and 'id="login-form"' in page.text and "Content-Security-Policy" in page.headers
    for path in ("/healthz", "/login", "/static/console.js", "/static/console.css", "/openapi.json"):
        assert c.get(path).status_code == 200, path
    assert c.get("/static/%2e%2e%2fsession.py").status_code == 404  # only the shipped files, by name
    assert c.get("/static/nothing.js").status_code == 404


def test_a_wrong_key_never_reveals_whether_a_conversation_exists(store, agents):
    c = TestClient(make_app(store, agents))
    cid = c.post("/v1/conversations", json={}, headers=H_ROUTE).json()["id"]
    c.post(f"/v1/conversations/{cid}/messages", json={"text": "tell me a joke"}, headers=H_ROUTE)
    for headers, status in ((H_WRONG, 401), ({}, 401), (H_ROUTE, 403)):
        for method, suffix, body in (("GET", "", None), ("DELETE", "", None), ("POST", "/replies", {"text": "hi"}),
                                     ("POST", "/resolve", None), ("PUT", "/turns/1/label", {"label": "order"})):
            a = c.request(method, f"/v1/conversations/{cid}{suffix}", headers=headers, json=body)
            b = c.request(method, f"/v1/conversations/does-not-exist{suffix}", headers=headers, json=body)
            assert a.status_code == b.status_code == status, (method, suffix, a.status_code, b.status_code)
            assert a.content == b.content
    # the route-only key sends messages, but a wrong key can't probe with them either
    a = c.post(f"/v1/conversations/{cid}/messages", json={"text": "hi"}, headers=H_WRONG)
    b = c.post("/v1/conversations/nope/messages", json={"text": "hi"}, headers=H_WRONG)
    assert a.status_code == b.status_code == 401 and a.content == b.content
    assert c.get(f"/v1/conversations/{cid}", headers=H).status_code == 200
    assert c.get("/v1/conversations/does-not-exist", headers=H).status_code == 404
    assert c.post("/v1/route", json={"text": "hi"}, headers=H_ROUTE).status_code == 200
    assert c.get("/metrics", headers=H_ROUTE).status_code == 403 and c.get("/metrics", headers=H).status_code == 200
    assert c.get("/v1/handoffs", headers={"x-api-key": KEY}).status_code == 200


def test_public_routing_and_disabled_auth(store, agents):
    auth = AuthConfig(parse_env_keys(KEY), public_routing=True)
    c = TestClient(make_app(store, agents, auth=auth))
    assert c.post("/v1/route", json={"text": "my card was declined"}).status_code == 200
    assert c.post("/v1/route/batch", json={"items": [{"text": "hi"}]}).status_code == 200
    assert c.post("/v1/conversations", json={}).status_code == 401
    assert c.get("/v1/handoffs").status_code == 401
    open_app = TestClient(make_app(store, agents, auth=AuthConfig.disabled()))
    assert open_app.get("/v1/handoffs").status_code == 200
    assert open_app.get("/v1/session").json()["auth"] is False
    # no key configured at all: everything protected stays closed
    closed = TestClient(create_app(KeywordTestRouter(), store, agents, auth=AuthConfig.from_env(env={})))
    assert closed.get("/v1/handoffs").status_code == 401 and closed.post("/v1/route", json={"text": "x"}).status_code == 401


def test_console_session_cookie_csrf_and_logout(store, agents):
    c = TestClient(make_app(store, agents))
    assert c.post("/v1/session", json={"key": "sr_not-a-key-0123456789abcdef"}).status_code == 401
    r = c.post("/v1/session", json={"key": KEY})
    assert r.status_code == 200 and r.json()["name"] == "alice"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and KEY.lower() not in cookie
    assert c.get("/").status_code == 200 and "console.js" in c.get("/").text
    assert c.get("/v1/session").json()["name"] == "alice"
    # a cookie alone can read, but changing something needs the console header (no cross-site forgery)
    assert c.post("/v1/conversations", json={}).status_code == 403
    assert c.post("/v1/conversations", json={}, headers={"x-shoprouter-console": "1"}).status_code == 201
    token = c.cookies.get("shoprouter_session")
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")

    def with_cookie(value):
        other = TestClient(c.app)
        other.cookies.set("shoprouter_session", value)
        return other

    assert with_cookie(token).get("/v1/handoffs").status_code == 200
    assert with_cookie(tampered).get("/v1/handoffs").status_code == 401
    assert c.delete("/v1/session", headers={"x-shoprouter-console": "1"}).status_code == 204
    assert with_cookie(token).get("/v1/handoffs").status_code == 401  # signed out
    # a route-only key can't sign in to the console
    r2 = TestClient(c.app)
    assert r2.post("/v1/session", json={"key": ROUTE_KEY}).status_code == 403
    assert r2.get("/v1/conversations").status_code == 401


def test_login_attempts_are_limited(store, agents):
    c = TestClient(make_app(store, agents))
    codes = [c.post("/v1/session", json={"key": f"sr_guess-{i:04d}-0123456789abcdef"}).status_code for i in range(22)]
    assert codes[:20] == [401] * 20 and codes[20:] == [429, 429]
    assert c.post("/v1/session", json={"key": KEY}).status_code == 429


def test_keys_configuration(tmp_path, monkeypatch, capsys):
    creds = parse_env_keys(f"a={KEY}, b:route={ROUTE_KEY}, {hash_key('sr_third-key-0123456789')}")
    assert [(c.name, sorted(c.scopes)) for c in creds] == [("a", ["console", "route"]), ("b", ["route"]),
                                                           ("env-3", ["console", "route"])]
    assert all(c.key_hash.startswith("sha256:") and KEY not in c.key_hash for c in creds)
    with pytest.raises(InputError, match="at least 16"):
        parse_env_keys("short")
    with pytest.raises(InputError, match="unknown scope"):
        parse_env_keys(f"x:admin={KEY}")
    keys = tmp_path / "keys.txt"
    assert main(["keys", "create", "alice", "--keys-file", str(keys)]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("sr_") and key not in keys.read_text()
    assert main(["keys", "create", "bot", "--scopes", "route", "--keys-file", str(keys)]) == 0
    bot_key = capsys.readouterr().out.strip()
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    assert main(["keys", "create", "alice", "--keys-file", str(keys)]) == 2
    auth = AuthConfig.from_env(keys, env={})
    assert auth.check_key(key).name == "alice" and auth.check_key(bot_key).scopes == {"route"}
    assert auth.check_key("sr_nope-0123456789abcdefgh") is None
    assert main(["keys", "list", "--keys-file", str(keys)]) == 0
    listed = capsys.readouterr().out
    assert "alice" in listed and key not in listed
    assert main(["keys", "revoke", "bot", "--keys-file", str(keys)]) == 0
    assert [c.name for c in read_keys_file(keys)] == ["alice"]
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(key + "\n"))
    assert main(["keys", "hash"]) == 0
    assert capsys.readouterr().out.strip() == hash_key(key)
    keys.write_text(f"alice console {key}\n")  # a plain key in the file is refused
    with pytest.raises(InputError, match="never keys"):
        AuthConfig.from_env(keys, env={})
    with pytest.raises(InputError, match="not found"):
        AuthConfig.from_env(env={"SHOPROUTER_KEYS_FILE": str(tmp_path / "missing")})


def test_serve_without_keys_makes_one_and_serves_nothing_openly(tmp_path, shop_db_path):  # noqa: F811
    svc = Service(f"sqlite:///{tmp_path / 'c.sqlite3'}", copy_shop(shop_db_path, tmp_path / "shop"), tmp_path,
                  env={"SHOPROUTER_API_KEYS": None}).start()
    try:
        m = re.search(r"^\s+(sr_\S+)\s*$", svc.log_text(), re.M)
        assert m, svc.log_text()
        key = m.group(1)
        assert httpx.get(svc.url + "/v1/handoffs").status_code == 401
        assert httpx.get(svc.url + "/").status_code == 401
        assert httpx.post(svc.url + "/v1/route", json={"text": "hi"}).status_code == 401
        assert httpx.get(svc.url + "/v1/handoffs", headers={"authorization": f"Bearer {key}"}).status_code == 200
    finally:
        svc.stop()


def test_retention_erases_old_conversations_at_startup(tmp_path, agents):
    path = tmp_path / "c.sqlite3"
    store = open_store(f"sqlite:///{path}")
    m = ConversationManager(KeywordTestRouter(), store, agents)
    old, new = m.start(), m.start()
    m.send(old.id, "tell me a joke")
    m.send(new.id, "my card was declined")
    db = sqlite3.connect(str(path))
    db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (iso_days_ago(45), old.id))
    db.commit()
    db.close()
    with TestClient(make_app(store, agents, retention_days=30)) as c:
        ids = [x["id"] for x in c.get("/v1/conversations", headers=H).json()["items"]]
        assert ids == [new.id]
        assert c.get("/v1/handoffs", headers=H).json() == []
        assert 'shoprouter_conversations_deleted_total{why="retention"} 1.0' in c.get("/metrics", headers=H).text
    store.close()


def test_console_endpoints_and_overview(store, agents):
    c = TestClient(make_app(store, agents), headers=H)
    cid = c.post("/v1/conversations", json={"customer_id": 5}).json()["id"]
    for text in ("where is my order?", "I have a problem with my order and a refund", "well, you know"):
        c.post(f"/v1/conversations/{cid}/messages", json={"text": text})
    c.post("/v1/route", json={"text": "my card was declined"})
    queue = c.get("/v1/handoffs", params={"status": "open", "order": "oldest"}).json()
    assert [h["reason"] for h in queue] == ["repeated_clarification"] and queue[0]["status"] == "open"
    r = c.post(f"/v1/conversations/{cid}/replies", json={"text": "Sorry! Is it the refund for order 10268?"})
    assert r.status_code == 201 and r.json()["role"] == "human" and r.json()["author"] == "alice"
    # the chat front end (a route-scope key) fetches the humans' replies for the customer
    got = c.get(f"/v1/conversations/{cid}/replies", params={"after": 3}, headers=H_ROUTE).json()
    assert [(t["seq"], t["text"]) for t in got] == [(4, "Sorry! Is it the refund for order 10268?")]
    assert c.get(f"/v1/conversations/{cid}/replies", params={"after": 4}, headers=H_ROUTE).json() == []
    assert c.post(f"/v1/conversations/{cid}/replies", json={"text": ""}).status_code == 422
    fix = c.put(f"/v1/conversations/{cid}/turns/2/label", json={"label": "returns"})
    assert fix.status_code == 200 and fix.json()["previous"] == "clarify" and fix.json()["author"] == "alice"
    assert c.put(f"/v1/conversations/{cid}/turns/4/label", json={"label": "order"}).status_code == 422
    assert c.put(f"/v1/conversations/{cid}/turns/9/label", json={"label": "order"}).status_code == 404
    assert c.put(f"/v1/conversations/{cid}/turns/0/label", json={"label": "order"}).status_code == 422
    assert c.put(f"/v1/conversations/{cid}/turns/2/label", json={"label": "pizza"}).status_code == 422
    conv = c.get(f"/v1/conversations/{cid}").json()
    assert [t["role"] for t in conv["turns"]] == ["customer"] * 3 + ["human"]
    assert conv["turns"][1]["correction"]["label"] == "returns"
    rows = [json.loads(x) for x in c.get("/v1/corrections/export").text.splitlines()]
    assert rows == [{"text": "I have a problem with my order and a refund", "label": "returns",
                     "history": [{"text": "where is my order?", "label": "order"}],
                     "group": f"correction/{cid}/2"}]
    assert c.post(f"/v1/conversations/{cid}/resolve").json()[0]["resolved_by"] == "alice"
    assert c.get("/v1/handoffs", params={"status": "open"}).json() == []
    listed = c.get("/v1/conversations", params={"q": "refund", "status": "resolved"}).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == cid
    assert c.get("/v1/conversations", params={"status": "bogus"}).status_code == 422
    o = c.get("/v1/overview", params={"window": 900}).json()
    assert o["routings"] == 4 and o["turns"] == 3 and o["conversations"] == 1 and o["human_replies"] == 1
    assert o["decisions"]["payment"] == 1 and o["decisions"]["clarify"] >= 2
    assert o["clarification_rate"] == pytest.approx(1 / 3, abs=1e-3) and o["handoff_rate"] == 1.0
    assert o["handoff_reasons"] == {"repeated_clarification": 1} and o["corrections"] == 1
    assert o["latency_ms"]["p50"] is not None and o["series"] and o["series"][-1]["p95_ms"] is not None
    assert c.delete(f"/v1/conversations/{cid}").status_code == 204
    assert c.get(f"/v1/conversations/{cid}").status_code == 404
    assert c.delete(f"/v1/conversations/{cid}").status_code == 404
    assert c.get("/v1/handoffs").json() == [] and c.get("/v1/corrections").json() == []


def test_export_corrections_cli(tmp_path, agents):
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    store = open_store(url)
    m = ConversationManager(KeywordTestRouter(), store, agents)
    c = m.start()
    m.send(c.id, "where is my order 10002")
    m.send(c.id, "tell me a joke")
    m.reply(c.id, "Hi there, a human here.", author="sam")
    m.send(c.id, "ok then, is my parcel insured?")
    m.correct(c.id, 1, "order")
    m.correct(c.id, 4, "details")
    m.correct(c.id, 2, "clarify")
    store.set_correction(Correction(c.id, 2, "none", "", "kim"))  # the newest correction of a turn counts
    store.close()
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"text": f"row {i}", "label": "order"}) + "\n"
                                              for i in range(50)))
    (data / "val.jsonl").write_text(json.dumps({"text": "v", "label": "none"}) + "\n")
    out = tmp_path / "corrections.jsonl"
    args = ["data", "export-corrections", "--out", str(out), "--store", url, "--train-set", str(tmp_path / "mix"),
            "--replay-from", str(data), "--replay", "20", "--repeat", "3"]
    assert main(args) == 0
    rows = read_rows(out, ["order", "search", "details", "returns", "account", "payment", "technical",
                           "clarify", "none"])
    assert [(r.text, r.label) for r in rows] == [("where is my order 10002", "order"),
                                                 ("ok then, is my parcel insured?", "details"),
                                                 ("tell me a joke", "none")]
    assert [(t.text, t.label) for t in rows[1].history] == [("where is my order 10002", "order"),
                                                           ("tell me a joke", "none")]  # no human turn
    assert rows[0].history == [] and rows[2].group == f"correction/{c.id}/2"
    mixed = read_rows(tmp_path / "mix" / "train.jsonl")
    assert len(mixed) == 3 * 3 + 20 and sum(r.text == "tell me a joke" for r in mixed) == 3
    assert (tmp_path / "mix" / "val.jsonl").read_text() == (data / "val.jsonl").read_text()
    assert main(["data", "export-corrections", "--out", str(out), "--train-set", str(tmp_path / "m2")]) == 2


def test_serve_cli_options_are_checked(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "SHOPROUTER_HOME": str(tmp_path)}
    cmd = [sys.executable, "-c", "import sys; from shoprouter.cli import main; sys.exit(main(sys.argv[1:]))",
           "serve", "--router", TEST_ROUTER, "--store", f"sqlite:///{tmp_path / 'c.db'}"]
    p = subprocess.run(cmd + ["--retention-days", "0"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "retention" in p.stderr
    p = subprocess.run(cmd + ["--keys-file", str(tmp_path / "none.txt")], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 2 and "keys file not found" in p.stderr


def test_a_session_keeps_the_scopes_of_the_key_it_was_made_with(store, agents):
    auth = AuthConfig(parse_env_keys(f"sam:console={KEY},sam:route+console={ROUTE_KEY}"))
    c = TestClient(make_app(store, agents, auth=auth))
    assert c.post("/v1/session", json={"key": KEY}).json()["scopes"] == ["console"]
    assert c.get("/v1/conversations").status_code == 200
    assert c.post("/v1/route", json={"text": "hi"}, headers={"x-shoprouter-console": "1"}).status_code == 403
    c2 = TestClient(c.app)
    assert c2.post("/v1/session", json={"key": ROUTE_KEY}).json()["scopes"] == ["console", "route"]
    assert c2.post("/v1/route", json={"text": "hi"}, headers={"x-shoprouter-console": "1"}).status_code == 200
