"""The embedded shop database and the seven agents acting on it."""

from __future__ import annotations

import json
import threading

import pytest

from shoprouter.shop import ShopAgents, ShopDB
from shoprouter.shop import extract as ex
from shoprouter.shop.agents import AgentContext, AgentReply
from shoprouter.shop.db import create_shop_db

from .service_support import copy_shop, shop_db_path  # noqa: F401


@pytest.fixture
def agents(tmp_path, shop_db_path):  # noqa: F811
    return ShopAgents(ShopDB(copy_shop(shop_db_path, tmp_path)))


def one(agents: ShopAgents, sql: str, args: tuple = ()):
    row = agents.db.one(sql, args)
    assert row is not None, sql
    return row


def ask(agents, agent, text, customer_id=None, **slots) -> AgentReply:
    r = agents.handle(agent, text, AgentContext(customer_id, slots))
    assert isinstance(r, AgentReply) and r.agent == agent and r.text
    json.dumps(r.to_dict())  # replies are JSON-serialisable
    return r


# ------------------------------------------------------------------------------------------------ database
def test_seeded_deterministically_with_enough_content(tmp_path):
    a = ShopDB(tmp_path / "a.sqlite3")
    b = ShopDB(tmp_path / "b.sqlite3")
    c = ShopDB(tmp_path / "c.sqlite3", seed=7)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    counts = {t: a.one(f"SELECT COUNT(*) AS n FROM {t}")["n"] for t in (
        "products", "reviews", "customers", "addresses", "orders", "order_items", "shipments", "payments", "invoices",
        "returns", "promos", "gift_cards", "kb_articles")}
    assert counts["products"] >= 200 and counts["reviews"] >= 600 and counts["orders"] >= 300
    assert all(n > 0 for n in counts.values()), counts
    p = a.one("SELECT * FROM products WHERE id = 1")
    assert json.loads(p["specs"]) and p["price_cents"] > 0
    statuses = {r["status"] for r in a.query("SELECT DISTINCT status FROM orders")}
    assert {"placed", "processing", "shipped", "delivered", "cancelled", "payment_failed"} <= statuses
    assert a.one("SELECT COUNT(*) AS n FROM (SELECT order_id FROM payments WHERE status = 'captured' "
                 "GROUP BY order_id HAVING COUNT(*) > 1)")["n"] > 0
    assert a.today.isoformat() == "2025-06-02"


def test_concurrent_first_use_creates_one_good_file(tmp_path):
    path = tmp_path / "race" / "shop.sqlite3"
    errors = []

    def make():
        try:
            create_shop_db(path)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ShopDB(path).one("SELECT COUNT(*) AS n FROM products")["n"] >= 200
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


# --------------------------------------------------------------------------------------------- extraction
def test_extraction():
    assert ex.order_ids("where is order #10023?") == [10023]
    assert ex.order_ids("my order number 10023 and order 10024") == [10023, 10024]
    assert ex.order_ids("it's 10023") == [10023]
    assert ex.order_ids("send it to 12 Oak Street, Springfield 12345") == []
    assert ex.order_ids("I paid $10023") == []
    assert ex.amounts("charged $49.99 twice and 20 euros") == [49.99, 20.0]
    assert ex.price_range("running shoes under $100") == (None, 100.0)
    assert ex.price_range("between 20 and 50 dollars") == (20.0, 50.0)
    assert ex.price_range("more than 200") == (200.0, None)
    assert ex.emails("mail me at Jo.Doe@Example.com please") == ["jo.doe@example.com"]
    assert ex.address("please deliver to 12 Oak Street, Springfield 12345 instead") == "12 Oak Street, Springfield 12345"
    assert ex.return_ids("status of R-20003?") == ["R-20003"]
    assert ex.error_codes("error e1042 and a 500 page") == ["E-1042", "500"]
    assert ex.size("size 10 please") == "10" and ex.size("in XL") == "XL"
    assert ex.phones("new number +1 555 123 4567") == ["+1 555 123 4567"]


def test_product_matching_asks_instead_of_guessing(agents):
    best, tied = agents.index.best("tell me about the nova")
    assert best is None and len(tied) > 1  # several products are called Nova-something
    best, _ = agents.index.best("the Sonara Nova Pro earbuds")
    assert best is not None and best.name == "Sonara Nova Pro Wireless Earbuds"
    r = ask(agents, "details", "tell me about the nova")
    assert r.missing == ["product"] and len(r.data["options"]) > 1


# ------------------------------------------------------------------------------------------------ agents
def test_order_agent(agents):
    shipped = one(agents, "SELECT id, customer_id FROM orders WHERE status = 'shipped' LIMIT 1")
    r = ask(agents, "order", f"where is my order #{shipped['id']}?")
    assert r.action == "track" and r.data["tracking_number"] and r.data["order_id"] == shipped["id"]
    r = ask(agents, "order", "where is my order?")
    assert r.missing == ["order_id"]
    r = ask(agents, "order", "where is order 99999")
    assert r.missing == ["order_id"] and "can't find" in r.text
    # someone else's order is not shown to a signed-in customer
    r = ask(agents, "order", f"where is order {shipped['id']}", customer_id=shipped["customer_id"] % 60 + 1)
    assert "can't find" in r.text
    # cancel: not once shipped; allowed while processing, with verification
    r = ask(agents, "order", f"cancel order {shipped['id']}", customer_id=shipped["customer_id"])
    assert r.action == "cancel" and r.data["cancelled"] is False
    proc = one(agents, "SELECT o.id, o.customer_id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id "
                       "WHERE o.status = 'processing' LIMIT 1")
    r = ask(agents, "order", f"cancel order {proc['id']}")
    assert r.missing == ["email"]
    r = ask(agents, "order", f"cancel order {proc['id']}, my email is {proc['email']}")
    assert r.data["cancelled"] is True
    assert one(agents, "SELECT status FROM orders WHERE id = ?", (proc["id"],))["status"] == "cancelled"
    r = ask(agents, "order", "cancel it", customer_id=proc["customer_id"], order_id=proc["id"])
    assert r.data["cancelled"] is False and "already cancelled" in r.text
    # change the address of an order that has not shipped
    placed = one(agents, "SELECT id, customer_id FROM orders WHERE status IN ('placed', 'processing') AND id != ? "
                         "LIMIT 1", (proc["id"],))
    r = ask(agents, "order", f"change the delivery address of order {placed['id']}", customer_id=placed["customer_id"])
    assert r.missing == ["new_address"]
    r = ask(agents, "order", f"please ship order {placed['id']} to 12 Oak Street, Springfield 12345",
            customer_id=placed["customer_id"])
    assert r.data["changed"] is True and r.data["new_address"] == "12 Oak Street, Springfield 12345"


def test_search_agent(agents):
    r = ask(agents, "search", "cheapest noise cancelling headphones")
    assert r.action == "search" and r.data["total"] > 0
    prices = [x["price"] for x in r.data["results"]]
    assert prices == sorted(prices)
    r = ask(agents, "search", "laptops under $800 in stock")
    assert all(x["price"] <= 800 and x["in_stock"] for x in r.data["results"])
    assert r.data["filters"]["category"] == ["laptops"]
    r = ask(agents, "search", "is the Sonara Nova Pro earbuds in stock?")
    assert r.action == "availability" and isinstance(r.data["in_stock"], bool)
    r = ask(agents, "search", "hello there")
    assert r.missing == ["query"]


def test_details_agent(agents):
    r = ask(agents, "details", "what are the specs of the Sonara Nova Pro earbuds")
    assert r.action == "specs" and "battery_hours" in r.data["specs"]
    r = ask(agents, "details", "how long does the battery last", product_id=r.data["product_id"])
    assert list(r.data["specs"]) == ["battery_hours"]
    r = ask(agents, "details", "what do reviewers say about the Corvex Quill Lite laptop")
    assert r.action == "reviews" and r.data["count"] > 0 and 1 <= r.data["average"] <= 5
    r = ask(agents, "details", "compare the Sonara Nova Pro earbuds and the Auris Vista Air earbuds")
    assert r.action == "compare" and len(r.data["product_ids"]) == 2
    r = ask(agents, "details", "does the Sonara Nova Pro earbuds work with an iphone?")
    assert r.action == "compatibility" and r.data["compatible"] is True
    r = ask(agents, "details", "what's the warranty")
    assert r.missing == ["product"]


def test_returns_agent(agents):
    d = one(agents, "SELECT o.id, o.customer_id FROM orders o JOIN shipments s ON s.order_id = o.id "
                    "WHERE o.status = 'delivered' AND s.delivered_on >= date('2025-06-02', '-25 days') "
                    "AND (SELECT COUNT(*) FROM order_items i WHERE i.order_id = o.id) = 1 "
                    "AND (SELECT p.returnable FROM order_items i JOIN products p ON p.id = i.product_id "
                    "     WHERE i.order_id = o.id) = 1 "
                    "AND NOT EXISTS (SELECT 1 FROM returns r WHERE r.order_id = o.id) LIMIT 1")
    r = ask(agents, "returns", f"can I still return order {d['id']}?")
    assert r.action == "eligibility" and r.data["eligible"] is True
    r = ask(agents, "returns", f"I want to return order {d['id']}, it arrived damaged", customer_id=d["customer_id"])
    assert r.action == "start_return" and r.data["return_id"].startswith("R-") and r.data["reason"] == "damaged"
    rid = r.data["return_id"]
    r = ask(agents, "returns", f"what's the status of my refund {rid}")
    assert r.action == "refund_status" and r.data["status"] == "requested"
    r = ask(agents, "returns", f"I want to return order {d['id']}", customer_id=d["customer_id"])
    assert r.data["eligible"] is False and "already open" in r.text
    old = one(agents, "SELECT o.id FROM orders o JOIN shipments s ON s.order_id = o.id WHERE o.status = 'delivered' "
                      "AND s.delivered_on < date('2025-06-02', '-40 days') LIMIT 1")
    r = ask(agents, "returns", f"can I return order {old['id']}")
    assert r.data["eligible"] is False and "more than 30 days" in r.text
    r = ask(agents, "returns", "what is your return policy?")
    assert r.action == "policy"
    r = ask(agents, "returns", "I want to return something")
    assert r.missing == ["order_id"]


def test_account_agent(agents):
    r = ask(agents, "account", "I forgot my password")
    assert r.missing == ["email"]
    cust = one(agents, "SELECT id, email FROM customers WHERE id = 3")
    r = ask(agents, "account", f"reset my password, it's {cust['email']}")
    assert r.action == "password_reset"
    assert one(agents, "SELECT COUNT(*) AS n FROM password_resets WHERE customer_id = 3")["n"] == 1
    r2 = ask(agents, "account", "reset my password for nobody@nowhere.example")
    assert r2.action == "password_reset" and "If an account exists" in r2.text  # no account enumeration
    r = ask(agents, "account", "change my email to new.me@example.org")
    assert r.missing == ["customer_id"]
    r = ask(agents, "account", "change my email to new.me@example.org", customer_id=3)
    assert r.action == "update_email"
    assert one(agents, "SELECT email FROM customers WHERE id = 3")["email"] == "new.me@example.org"
    r = ask(agents, "account", "update my phone number to +1 555 123 4567", customer_id=3)
    assert r.action == "update_phone" and r.data["new_value"] == "+1 555 123 4567"
    r = ask(agents, "account", "show my saved addresses", customer_id=3)
    assert r.action == "list_addresses" and r.data["addresses"]
    r = ask(agents, "account", "turn on 2fa", customer_id=3)
    assert r.data["two_factor"] is True


def test_payment_agent(agents):
    dup = one(agents, "SELECT order_id FROM payments WHERE status = 'captured' GROUP BY order_id HAVING COUNT(*) > 1")
    r = ask(agents, "payment", f"I was charged twice for order {dup['order_id']}")
    assert r.action == "duplicate_charge" and r.data["duplicate"] is True and r.data["refund_cents"] > 0
    r = ask(agents, "payment", f"I was charged twice for order {dup['order_id']}")
    assert r.data.get("already_refunded") is True
    single = one(agents, "SELECT order_id FROM payments WHERE status = 'captured' GROUP BY order_id HAVING COUNT(*) = 1")
    r = ask(agents, "payment", f"double charge on order {single['order_id']}")
    assert r.data["duplicate"] is False
    fail = one(agents, "SELECT order_id, decline_reason FROM payments WHERE status = 'failed'")
    r = ask(agents, "payment", f"my card was declined for order {fail['order_id']}")
    assert r.action == "failed_payment" and r.data["reason"] == fail["decline_reason"]
    r = ask(agents, "payment", "my card was declined")
    assert r.missing == ["order_id"]
    r = ask(agents, "payment", "I need an invoice for order 10001")
    assert r.data["invoice"] == "INV-10001"
    r = ask(agents, "payment", "I need an invoice")
    assert r.missing == ["order_id"]
    assert ask(agents, "payment", "does promo code SUMMER20 work?").data["valid"] is True
    assert ask(agents, "payment", "coupon spring15 doesn't work").data["valid"] is False
    gc = one(agents, "SELECT code FROM gift_cards LIMIT 1")["code"]
    assert ask(agents, "payment", f"balance of gift card {gc}").data["gift_card"] == gc
    r = ask(agents, "payment", "which payment methods do you take?", customer_id=3)
    assert r.action == "methods" and "PayPal" in r.data["accepted"] and r.data["saved"]


def test_technical_agent(agents):
    r = ask(agents, "technical", "the app keeps crashing on my iphone when I open it")
    assert r.action == "troubleshoot" and r.data["title"] == "App crashes on launch" and r.data["device"] == "iPhone"
    r = ask(agents, "technical", "I get error E-1042 when I log in")
    assert r.data["title"].startswith("Login error")
    r = ask(agents, "technical", "it's broken")
    assert r.missing == ["device", "error_message"]


def test_fills_missing(agents):
    assert agents.fills_missing("it's 10023", ["order_id"])
    assert agents.fills_missing("jo@example.com", ["email"])
    assert not agents.fills_missing("no idea", ["order_id", "email"])
