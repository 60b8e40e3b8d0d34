"""The seven shop agents: order, search, details, returns, account, payment, technical.

Each agent reads what it needs from the message (order numbers, product names, amounts, e-mails, ...) and
from what the conversation already established (`AgentContext.slots`: the order, product, return or e-mail
of earlier turns), acts on the shop database, and returns an `AgentReply`. When something it needs is not
there it does not guess: the reply asks for it and lists it in `missing`.

Changes that a stranger must not make (cancelling an order, changing its address, starting a return) need
a verified customer: the conversation's `customer_id` owns the order, or the message gives the e-mail
address on the order. Profile changes need a signed-in conversation (`customer_id`).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta

from . import extract as ex
from .db import ACCEPTED_METHODS, CATEGORIES, ShopDB, fmt_value

AGENT_KEYS = ("order", "search", "details", "returns", "account", "payment", "technical")
SLOT_KEYS = ("order_id", "product_id", "return_id", "email")


@dataclass
class AgentReply:
    """What an agent did: its key, the action, a text for the customer, structured data, what it still needs."""

    agent: str
    action: str
    text: str
    data: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AgentContext:
    """Who is talking (customer_id when signed in) and what earlier turns established (slots)."""

    customer_id: int | None = None
    slots: dict = field(default_factory=dict)


def _or_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def money(cents: int | float) -> str:
    return f"${cents / 100:,.2f}"


def mask_email(email: str) -> str:
    user, _, domain = email.partition("@")
    return f"{user[:1]}***@{domain}"


def _d(s: str | None) -> date | None:
    return date.fromisoformat(s) if s else None


def _nice(d: date | str | None) -> str:
    if d is None:
        return "unknown"
    if isinstance(d, str):
        d = date.fromisoformat(d)
    return f"{d:%A %B} {d.day}"


class ShopAgents:
    """The seven agents over one shop database. `handle(agent, text, context)` runs one of them."""

    keys = AGENT_KEYS

    def __init__(self, db: ShopDB | None = None):
        self.db = db or ShopDB()
        rows = self.db.query("SELECT id, name, brand, model, category FROM products ORDER BY id")
        self.index = ex.ProductIndex([tuple(r) for r in rows], {c[0]: c[2] for c in CATEGORIES})
        self.promo_codes = {r["code"] for r in self.db.query("SELECT code FROM promos")}

    # ------------------------------------------------------------------------------------------- dispatch
    def handle(self, agent: str, text: str, context: AgentContext | None = None) -> AgentReply:
        ctx = context or AgentContext()
        fn = getattr(self, f"agent_{agent}", None)
        if agent not in AGENT_KEYS or fn is None:
            return AgentReply(agent, "unsupported", f"There is no '{agent}' agent in this shop.", {}, [])
        return fn(text, ctx)

    def fills_missing(self, text: str, missing: list[str]) -> bool:
        """Whether a message supplies one of the things an agent asked for (an order number, an e-mail, ...)."""
        checks = {
            "order_id": lambda t: bool(ex.order_ids(t)),
            "email": lambda t: bool(ex.emails(t)),
            "new_address": lambda t: ex.address(t) is not None,
            "address": lambda t: ex.address(t) is not None,
            "product": lambda t: bool(self.index.match(t)),
            "second_product": lambda t: bool(self.index.match(t)),
            "item": lambda t: bool(self.index.match(t)),
            "return_id": lambda t: bool(ex.return_ids(t)),
            "promo_code": lambda t: any(c in self.promo_codes for c in ex.code_candidates(t)),
            "gift_card": lambda t: bool(ex.gift_cards(t)),
            "new_value": lambda t: bool(ex.emails(t) or ex.phones(t) or re.search(r"\bto\s+\w", t, re.I)),
            "query": lambda t: bool(self.index.categories(t) or self.index.brand(t) or any(ex.price_range(t))),
            "error_message": lambda t: bool(ex.error_codes(t)) or len(t.split()) >= 3,
            "device": lambda t: ex.has_any(t, DEVICES),
            "payment_issue": lambda t: ex.has_any(t, PAYMENT_TOPIC_WORDS),
        }
        return any(checks.get(m, lambda t: False)(text) for m in missing)

    # ---------------------------------------------------------------------------------------------- helpers
    def _order(self, oid: int):
        return self.db.one("SELECT * FROM orders WHERE id = ?", (oid,))

    def _customer(self, cid: int | None):
        return None if cid is None else self.db.one("SELECT * FROM customers WHERE id = ?", (cid,))

    def _items(self, oid: int):
        return self.db.query("SELECT i.*, p.name, p.returnable, p.category FROM order_items i JOIN products p "
                             "ON p.id = i.product_id WHERE i.order_id = ? ORDER BY p.id", (oid,))

    def _product(self, pid: int):
        return self.db.one("SELECT * FROM products WHERE id = ?", (pid,))

    def _order_id(self, text: str, ctx: AgentContext) -> int | None:
        ids = ex.order_ids(text)
        if ids:
            return ids[0]
        return ctx.slots.get("order_id")

    def _resolve_order(self, agent: str, action: str, text: str, ctx: AgentContext, what: str):
        """(order row, None) or (None, a reply asking for the order or saying it is not found)."""
        oid = self._order_id(text, ctx)
        if oid is None and ctx.customer_id is not None:
            recent = self.db.query("SELECT id, status, placed_on FROM orders WHERE customer_id = ? "
                                   "ORDER BY placed_on DESC, id DESC LIMIT 3", (ctx.customer_id,))
            if len(recent) == 1:
                oid = recent[0]["id"]
            elif recent:
                opts = ", ".join(f"#{r['id']} ({r['status'].replace('_', ' ')}, placed {r['placed_on']})" for r in recent)
                return None, AgentReply(agent, action, f"Which order {what}? Your recent orders are {opts}.",
                                        {"options": [r["id"] for r in recent],
                                         "option_texts": [f"order #{r['id']}" for r in recent]}, ["order_id"])
        if oid is None:
            return None, AgentReply(agent, action, f"Which order {what}? Please give me the order number "
                                    "(for example #10023).", {}, ["order_id"])
        order = self._order(oid)
        if order is None or (ctx.customer_id is not None and order["customer_id"] != ctx.customer_id):
            return None, AgentReply(agent, action, f"I can't find order #{oid}"
                                    + (" on your account" if ctx.customer_id is not None else "")
                                    + ". Could you check the number?", {"order_id": None, "asked_order_id": oid},
                                    ["order_id"])
        return order, None

    def _verified(self, order, text: str, ctx: AgentContext) -> bool:
        if ctx.customer_id is not None and order["customer_id"] == ctx.customer_id:
            return True
        owner = self._customer(order["customer_id"])
        mails = ex.emails(text) or ([ctx.slots["email"]] if ctx.slots.get("email") else [])
        return owner is not None and owner["email"].lower() in mails

    def _ask_verification(self, agent: str, action: str, order) -> AgentReply:
        return AgentReply(agent, action, f"To make changes to order #{order['id']} I need to confirm it's yours: "
                          "what is the e-mail address on the order?", {"order_id": order["id"]}, ["email"])

    # ------------------------------------------------------------------------------------------------ order
    def agent_order(self, text: str, ctx: AgentContext) -> AgentReply:
        if ex.has_any(text, ("cancel", "cancellation", "don't want it anymore", "do not want it anymore")):
            action = "cancel"
        elif ex.has_any(text, ("address", "deliver to", "ship to", "send it to", "redirect", "different address",
                               "wrong address", "moved")) or ex.address(text):
            action = "change_address"
        else:
            action = "track"
        order, ask = self._resolve_order("order", action, text, ctx,
                                         {"track": "should I look up", "cancel": "should I cancel",
                                          "change_address": "should I change"}[action])
        if ask:
            return ask
        oid, status = order["id"], order["status"]
        if action == "track":
            return self._track(order)
        if action == "cancel":
            if status == "cancelled":
                return AgentReply("order", "cancel", f"Order #{oid} is already cancelled.", {"order_id": oid,
                                  "status": status, "cancelled": False})
            if status in ("shipped", "delivered"):
                why = ("it has already shipped, so it can't be cancelled any more. You can refuse the parcel "
                       "or return it once it arrives." if status == "shipped" else
                       "it has already been delivered. You can return it instead.")
                return AgentReply("order", "cancel", f"Sorry, order #{oid} can't be cancelled: {why}",
                                  {"order_id": oid, "status": status, "cancelled": False})
            if not self._verified(order, text, ctx):
                return self._ask_verification("order", "cancel", order)
            self.db.write([("UPDATE orders SET status = 'cancelled' WHERE id = ?", (oid,)),
                           ("UPDATE payments SET status = 'refunded' WHERE order_id = ? AND status = 'captured'", (oid,))])
            refunded = self.db.one("SELECT COALESCE(SUM(amount_cents), 0) AS s FROM payments WHERE order_id = ? AND "
                                   "status = 'refunded'", (oid,))["s"]
            msg = f"Done: order #{oid} is cancelled."
            if refunded:
                msg += f" The payment of {money(refunded)} is refunded to your original payment method within 3-5 business days."
            return AgentReply("order", "cancel", msg, {"order_id": oid, "status": "cancelled", "cancelled": True,
                                                      "refund_cents": refunded})
        # change_address
        if status not in ("placed", "processing", "payment_failed"):
            return AgentReply("order", "change_address",
                              f"Order #{oid} has already {'shipped' if status == 'shipped' else status}, so its "
                              "delivery address can't be changed here any more. The carrier's tracking page may "
                              "let you redirect the parcel.", {"order_id": oid, "status": status, "changed": False})
        new = ex.address(text)
        if not new:
            return AgentReply("order", "change_address",
                              f"What is the new delivery address for order #{oid}? (street and number, city, postcode)",
                              {"order_id": oid, "current_address": order["shipping_address"]}, ["new_address"])
        if not self._verified(order, text, ctx):
            return self._ask_verification("order", "change_address", order)
        self.db.write([("UPDATE orders SET shipping_address = ? WHERE id = ?", (new, oid))])
        return AgentReply("order", "change_address", f"Done: order #{oid} will be delivered to {new}.",
                          {"order_id": oid, "old_address": order["shipping_address"], "new_address": new,
                           "changed": True})

    def _track(self, order) -> AgentReply:
        oid, status = order["id"], order["status"]
        ship = self.db.one("SELECT * FROM shipments WHERE order_id = ?", (oid,))
        items = self._items(oid)
        names = ", ".join(i["name"] for i in items)
        data = {"order_id": oid, "status": status, "placed_on": order["placed_on"], "items": [i["name"] for i in items]}
        if status in ("placed", "processing"):
            text = (f"Order #{oid} ({names}) was placed on {_nice(order['placed_on'])} and is being prepared; "
                    "it usually ships within 1-2 business days. You'll get the tracking number by e-mail.")
        elif status == "payment_failed":
            text = f"Order #{oid} is on hold because the payment didn't go through. Please update your payment method."
        elif status == "cancelled":
            text = f"Order #{oid} was cancelled."
        elif ship is None:  # pragma: no cover - seeded data always has a shipment here
            text = f"Order #{oid} is {status}."
        elif status == "delivered":
            text = (f"Order #{oid} ({names}) was delivered on {_nice(ship['delivered_on'])} by {ship['carrier']} "
                    f"to {order['shipping_address']}.")
            data.update(carrier=ship["carrier"], tracking_number=ship["tracking_number"], delivered_on=ship["delivered_on"])
        else:
            state = "is out for delivery" if ship["status"] == "out_for_delivery" else "is on its way"
            text = (f"Order #{oid} ({names}) {state} with {ship['carrier']} (tracking {ship['tracking_number']}); "
                    f"last seen at {ship['last_location']}. Expected delivery: {_nice(ship['eta'])}.")
            data.update(carrier=ship["carrier"], tracking_number=ship["tracking_number"], eta=ship["eta"],
                        shipment_status=ship["status"])
        return AgentReply("order", "track", text, data)

    # ----------------------------------------------------------------------------------------------- search
    def agent_search(self, text: str, ctx: AgentContext) -> AgentReply:
        best, _ = self.index.best(text)
        if best and ex.has_any(text, ("in stock", "available", "availability", "sold out", "back in stock",
                                      "do you have", "have any left", "left")):
            p = self._product(best.product_id)
            sizes, colors = json.loads(p["sizes"]), json.loads(p["colors"])
            if p["stock"] > 0:
                text_ = (f"Yes, the {p['name']} is in stock ({p['stock']} left) at {money(p['price_cents'])}"
                         + (f", in {', '.join(colors)}" if colors else "") + (f", sizes {', '.join(sizes)}" if sizes else "")
                         + ".")
            else:
                text_ = f"The {p['name']} is out of stock right now. It's usually restocked within 2-3 weeks."
            return AgentReply("search", "availability", text_, {"product_id": p["id"], "in_stock": p["stock"] > 0,
                                                                 "stock": p["stock"], "colors": colors, "sizes": sizes})
        cats = self.index.categories(text)
        brand = self.index.brand(text)
        lo, hi = ex.price_range(text)
        cols = ex.colors(text)
        sz = ex.size(text)
        in_stock = ex.has_any(text, ("in stock", "available", "availability"))
        features = [f for f, words in FEATURES.items() if ex.has_any(text, words)]
        if not (cats or brand or lo or hi or cols or features):
            if best:
                p = self._product(best.product_id)
                return AgentReply("search", "search", f"I found the {p['name']} ({money(p['price_cents'])}, "
                                  f"{'in stock' if p['stock'] else 'out of stock'}).",
                                  {"results": [self._summary(p)], "product_id": p["id"], "filters": {}})
            return AgentReply("search", "search", "What are you looking for? Tell me a kind of product, a brand or "
                              "a price range (for example 'running shoes under $100').", {}, ["query"])
        sql, args = ["SELECT p.*, (SELECT AVG(rating) FROM reviews r WHERE r.product_id = p.id) AS rating "
                     "FROM products p WHERE 1=1"], []
        if cats:
            sql.append(f"AND p.category IN ({','.join('?' * len(cats))})")
            args += cats
        if brand:
            sql.append("AND lower(p.brand) = ?")
            args.append(brand)
        if lo is not None:
            sql.append("AND p.price_cents >= ?")
            args.append(int(lo * 100))
        if hi is not None:
            sql.append("AND p.price_cents <= ?")
            args.append(int(hi * 100))
        if in_stock:
            sql.append("AND p.stock > 0")
        rows = self.db.query(" ".join(sql), tuple(args))
        if cols:
            rows = [r for r in rows if any(c in json.loads(r["colors"]) for c in cols)]
        if sz:
            rows = [r for r in rows if sz in json.loads(r["sizes"])]
        for f in features:
            rows = [r for r in rows if FEATURE_TESTS[f](json.loads(r["specs"]))]
        if ex.has_any(text, ("cheapest", "cheap", "lowest price", "budget", "affordable")):
            rows.sort(key=lambda r: (r["price_cents"], r["id"]))
        elif ex.has_any(text, ("most expensive", "premium", "high end", "high-end")):
            rows.sort(key=lambda r: (-r["price_cents"], r["id"]))
        else:
            rows.sort(key=lambda r: (-(r["rating"] or 0), r["price_cents"], r["id"]))
        filters = {"category": cats, "brand": brand, "min_price": lo, "max_price": hi, "colors": cols, "size": sz,
                   "in_stock": in_stock, "features": features}
        filters = {k: v for k, v in filters.items() if v not in (None, [], False)}
        desc = ", ".join(f"{k.replace('_', ' ')} {v if not isinstance(v, list) else '/'.join(v)}" for k, v in filters.items())
        if not rows:
            return AgentReply("search", "search", f"I couldn't find anything matching {desc}. Try a wider price range "
                              "or fewer filters.", {"results": [], "filters": filters, "total": 0})
        top = rows[:5]
        lines = "; ".join(f"{r['name']} {money(r['price_cents'])}"
                          + (f" ({r['rating']:.1f}★)" if r["rating"] else "") + ("" if r["stock"] else " - out of stock")
                          for r in top)
        return AgentReply("search", "search", f"I found {len(rows)} product{'s' if len(rows) != 1 else ''} ({desc}). "
                          f"Top {len(top)}: {lines}.",
                          {"results": [self._summary(r) for r in top], "filters": filters, "total": len(rows),
                           "product_id": top[0]["id"] if len(rows) == 1 else None})

    def _summary(self, r) -> dict:
        return {"product_id": r["id"], "name": r["name"], "price": r["price_cents"] / 100, "in_stock": r["stock"] > 0}

    # ---------------------------------------------------------------------------------------------- details
    def _product_from(self, agent: str, action: str, text: str, ctx: AgentContext):
        best, tied = self.index.best(text)
        if best:
            return self._product(best.product_id), None
        if tied:
            return None, AgentReply(agent, action, f"Which one do you mean: {_or_list([m.name for m in tied])}?",
                                    {"options": [m.product_id for m in tied],
                                     "option_texts": [m.name for m in tied]}, ["product"])
        if ctx.slots.get("product_id"):
            return self._product(ctx.slots["product_id"]), None
        return None, AgentReply(agent, action, "Which product do you mean? Please give me its name (for example "
                                "'Sonara Nova Pro Wireless Earbuds').", {}, ["product"])

    def agent_details(self, text: str, ctx: AgentContext) -> AgentReply:
        if ex.has_any(text, ("compare", "comparison", "vs", "vs.", "versus", "difference between", "better", "or the")):
            found = self.index.several(text)
            if len(found) == 1 and ctx.slots.get("product_id") and ctx.slots["product_id"] != found[0].product_id:
                found.insert(0, ex.ProductMatch(ctx.slots["product_id"], "", 0))
            if len(found) >= 2:
                return self._compare(self._product(found[0].product_id), self._product(found[1].product_id))
            if ex.has_any(text, ("compare", "comparison", "vs", "versus", "difference between")):
                have = f" I have the {self._product(found[0].product_id)['name']};" if found else ""
                return AgentReply("details", "compare", f"Which two products should I compare?{have} please name "
                                  "the other one.", {"product_id": found[0].product_id if found else None},
                                  ["second_product" if found else "product"])
        if ex.has_any(text, ("review", "reviews", "rating", "ratings", "stars", "people say", "customers say",
                             "reviewers", "feedback", "any good", "worth it")):
            p, ask = self._product_from("details", "reviews", text, ctx)
            return ask or self._reviews(p)
        if ex.has_any(text, ("warranty", "guarantee", "guaranteed")):
            p, ask = self._product_from("details", "warranty", text, ctx)
            if ask:
                return ask
            return AgentReply("details", "warranty", f"The {p['name']} comes with a {p['warranty_months']}-month "
                              "manufacturer's warranty.", {"product_id": p["id"], "warranty_months": p["warranty_months"]})
        p, ask = self._product_from("details", "specs", text, ctx)
        if ask:
            return ask
        specs = json.loads(p["specs"])
        if ex.has_any(text, ("compatible", "compatibility", "work with", "works with", "support", "supports", "pair")):
            target = next((os_ for words, os_ in PLATFORMS if ex.has_any(text, words)), None)
            compat = specs.get("compatible_with")
            if compat is None:
                msg = f"The {p['name']} doesn't need a device to work with; its specs: {self._spec_text(specs)}."
                ok = None
            elif target is None:
                msg = f"The {p['name']} works with {', '.join(compat)}."
                ok = None
            else:
                ok = target in compat
                msg = (f"Yes, the {p['name']} works with {target}." if ok else
                       f"No, the {p['name']} works with {', '.join(compat)}, not {target}.")
            return AgentReply("details", "compatibility", msg, {"product_id": p["id"], "compatible_with": compat,
                                                                "asked": target, "compatible": ok})
        wanted = [k for k in specs if any(w in text.lower() for w in SPEC_WORDS.get(k, (k.split("_")[0],)))]
        shown = {k: specs[k] for k in wanted} if wanted else specs
        colors, sizes = json.loads(p["colors"]), json.loads(p["sizes"])
        extra = "" if wanted else (f" Colours: {', '.join(colors)}." + (f" Sizes: {', '.join(sizes)}." if sizes else ""))
        return AgentReply("details", "specs", f"{p['name']} ({money(p['price_cents'])}): {self._spec_text(shown)}.{extra}",
                          {"product_id": p["id"], "specs": shown, "price": p["price_cents"] / 100})

    @staticmethod
    def _spec_text(specs: dict) -> str:
        return "; ".join(f"{k.replace('_', ' ')}: {fmt_value(v)}" for k, v in specs.items())

    def _review_stats(self, pid: int) -> dict:
        rows = self.db.query("SELECT rating, pros, cons FROM reviews WHERE product_id = ?", (pid,))
        pros: dict[str, int] = {}
        cons: dict[str, int] = {}
        for r in rows:
            for x in json.loads(r["pros"]):
                pros[x] = pros.get(x, 0) + 1
            for x in json.loads(r["cons"]):
                cons[x] = cons.get(x, 0) + 1
        n = len(rows)
        avg = sum(r["rating"] for r in rows) / n if n else None
        top = lambda d: [k for k, _ in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:2]]  # noqa: E731
        return {"count": n, "average": round(avg, 2) if avg else None, "praise": top(pros), "complaints": top(cons),
                "distribution": {str(s): sum(1 for r in rows if r["rating"] == s) for s in range(1, 6)}}

    def _reviews(self, p) -> AgentReply:
        st = self._review_stats(p["id"])
        if not st["count"]:
            return AgentReply("details", "reviews", f"The {p['name']} has no reviews yet.", {"product_id": p["id"], **st})
        msg = f"The {p['name']} has {st['count']} reviews averaging {st['average']:.1f}/5."
        if st["praise"]:
            msg += f" People like: {', '.join(st['praise'])}."
        if st["complaints"]:
            msg += f" Common complaints: {', '.join(st['complaints'])}."
        return AgentReply("details", "reviews", msg, {"product_id": p["id"], **st})

    def _compare(self, a, b) -> AgentReply:
        sa, sb = json.loads(a["specs"]), json.loads(b["specs"])
        ra, rb = self._review_stats(a["id"]), self._review_stats(b["id"])
        keys = [k for k in sa if k in sb]
        diffs = [f"{k.replace('_', ' ')} {fmt_value(sa[k])} vs {fmt_value(sb[k])}" for k in keys if sa[k] != sb[k]]
        msg = (f"{a['name']} ({money(a['price_cents'])}, {ra['average'] or '-'}★) vs {b['name']} "
               f"({money(b['price_cents'])}, {rb['average'] or '-'}★)")
        msg += (": " + "; ".join(diffs[:6]) + ".") if diffs else (": same specs." if keys else
                                                                   ": they are different kinds of product.")
        return AgentReply("details", "compare", msg, {
            "product_ids": [a["id"], b["id"]], "product_id": b["id"],
            "a": {"name": a["name"], "price": a["price_cents"] / 100, "rating": ra["average"], "specs": sa},
            "b": {"name": b["name"], "price": b["price_cents"] / 100, "rating": rb["average"], "specs": sb}})

    # ---------------------------------------------------------------------------------------------- returns
    def agent_returns(self, text: str, ctx: AgentContext) -> AgentReply:
        rmas = ex.return_ids(text)
        wants_status = ex.has_any(text, ("status", "where is my refund", "refunded yet", "received my refund",
                                         "got my refund", "refund yet", "still waiting", "processed", "when will i get"))
        if rmas or (wants_status and not ex.has_any(text, ("start", "want to return", "send back"))):
            rid = rmas[0] if rmas else ctx.slots.get("return_id")
            if rid:
                ret = self.db.one("SELECT * FROM returns WHERE id = ?", (rid,))
            else:
                oid = self._order_id(text, ctx)
                if oid is None:
                    return AgentReply("returns", "refund_status", "Which return is it about? Please give me the "
                                      "return number (R-12345) or the order number.", {}, ["order_id"])
                ret = self.db.one("SELECT * FROM returns WHERE order_id = ? ORDER BY created_on DESC", (oid,))
                if ret is None:
                    return AgentReply("returns", "refund_status", f"I don't see a return for order #{oid}. Would you "
                                      "like to start one?", {"order_id": oid, "found": False})
            if ret is None or (ctx.customer_id is not None and self._order(ret["order_id"])["customer_id"] != ctx.customer_id):
                return AgentReply("returns", "refund_status", f"I can't find return {rid}. Could you check the number?",
                                  {}, ["return_id"])
            return self._return_status(ret)
        if ex.has_any(text, ("policy", "how long do i have", "how many days", "return window", "can you return",
                             "how do returns work")) and not ex.order_ids(text):
            return AgentReply("returns", "policy", f"You can return most items within {self.db.return_window_days} days "
                              "of delivery, unused and in their original packaging. Returns of damaged or wrong items "
                              "are free; refunds go to the original payment method within 5 business days of us "
                              "receiving the item.", {"return_window_days": self.db.return_window_days})
        check_only = ex.has_any(text, ("can i return", "can i still return", "eligible", "too late", "is it possible",
                                       "am i able", "could i return", "still return"))
        action = "eligibility" if check_only else "start_return"
        order, ask = self._resolve_order("returns", action, text, ctx, "is it about")
        if ask:
            return ask
        items = self._items(order["id"])
        if order["status"] != "delivered":  # no item of an undelivered order can be returned: don't ask which
            ok, why = self._eligible(order, items[0])
            return AgentReply("returns", action, f"Order #{order['id']} can't be returned yet: {why}",
                              {"order_id": order["id"], "eligible": False, "why": why})
        named = {m.product_id for m in self.index.match(text)}
        chosen = [i for i in items if i["product_id"] in named] or (
            [i for i in items if i["product_id"] == ctx.slots.get("product_id")])
        if not chosen:
            if len(items) == 1:
                chosen = items
            else:
                names = _or_list([i["name"] for i in items])
                return AgentReply("returns", action, f"Order #{order['id']} has several items: which one is it, {names}?",
                                  {"order_id": order["id"], "options": [i["product_id"] for i in items],
                                   "option_texts": [i["name"] for i in items]}, ["item"])
        item = chosen[0]
        ok, why = self._eligible(order, item)
        data = {"order_id": order["id"], "product_id": item["product_id"], "eligible": ok}
        if not ok:
            return AgentReply("returns", action, f"The {item['name']} from order #{order['id']} can't be returned: {why}",
                              {**data, "why": why})
        deadline = _d(self.db.one("SELECT delivered_on FROM shipments WHERE order_id = ?", (order["id"],))["delivered_on"]) \
            + timedelta(days=self.db.return_window_days)
        if action == "eligibility":
            return AgentReply("returns", "eligibility", f"Yes, the {item['name']} from order #{order['id']} can be "
                              f"returned until {_nice(deadline)}. Shall I start the return?",
                              {**data, "deadline": deadline.isoformat()})
        if not self._verified(order, text, ctx):
            return self._ask_verification("returns", "start_return", order)
        reason = next((r for words, r in RETURN_REASONS if ex.has_any(text, words)), "not specified")
        refund = item["price_cents"] * item["quantity"]
        # the next return id, inside the same write transaction as the insert
        conn = self.db.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            last = conn.execute("SELECT MAX(CAST(substr(id, 3) AS INTEGER)) FROM returns").fetchone()[0] or 20000
            rid = f"R-{last + 1}"
            conn.execute("INSERT INTO returns VALUES (?, ?, ?, ?, 'requested', ?, ?, NULL, NULL)",
                         (rid, order["id"], item["product_id"], reason, self.db.today.isoformat(), refund))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        free = reason in ("damaged", "wrong item")
        return AgentReply("returns", "start_return",
                          f"Return {rid} is started for the {item['name']} (order #{order['id']}, reason: {reason}). "
                          f"{'A free' if free else 'A'} return label is on its way by e-mail; once we receive the item "
                          f"we refund {money(refund)} to your original payment method within 5 business days.",
                          {**data, "return_id": rid, "reason": reason, "refund_cents": refund, "free_label": free})

    def _eligible(self, order, item) -> tuple[bool, str]:
        if order["status"] != "delivered":
            return False, (f"the order hasn't been delivered yet (it is {order['status'].replace('_', ' ')})"
                           + ("; you can cancel it instead." if order["status"] in ("placed", "processing") else "."))
        if not item["returnable"]:
            return False, "it is a final-sale item."
        ship = self.db.one("SELECT delivered_on FROM shipments WHERE order_id = ?", (order["id"],))
        delivered = _d(ship["delivered_on"])
        if delivered + timedelta(days=self.db.return_window_days) < self.db.today:
            return False, (f"it was delivered on {_nice(delivered)}, more than {self.db.return_window_days} days ago. "
                           "If it's faulty, the warranty still covers it.")
        if self.db.one("SELECT 1 FROM returns WHERE order_id = ? AND product_id = ? AND status != 'rejected'",
                       (order["id"], item["product_id"])):
            return False, "a return for it is already open."
        return True, ""

    def _return_status(self, ret) -> AgentReply:
        st = ret["status"]
        msg = {
            "requested": "is registered; we're waiting for the parcel. Use the label we e-mailed to send it.",
            "in_transit": "is on its way back to us.",
            "received": f"has arrived at our warehouse; the refund of {money(ret['refund_cents'])} is issued within "
                        "5 business days.",
            "refunded": f"is complete: {money(ret['refund_cents'])} was refunded on {_nice(ret['refunded_on'])}. "
                        "Banks can take 3-5 days to show it.",
            "rejected": f"was rejected because {ret['note'] or 'it did not meet the return policy'}.",
        }[st]
        return AgentReply("returns", "refund_status", f"Return {ret['id']} (order #{ret['order_id']}) {msg}",
                          {"return_id": ret["id"], "order_id": ret["order_id"], "status": st,
                           "refund_cents": ret["refund_cents"], "refunded_on": ret["refunded_on"]})

    # ---------------------------------------------------------------------------------------------- account
    def agent_account(self, text: str, ctx: AgentContext) -> AgentReply:
        cust = self._customer(ctx.customer_id)
        if ex.has_any(text, ("password", "reset", "locked out", "can't log in", "cannot log in")):
            mails = ex.emails(text) or ([ctx.slots["email"]] if ctx.slots.get("email") else [])
            email = mails[0] if mails else (cust["email"] if cust else None)
            if email is None:
                return AgentReply("account", "password_reset", "I can send you a password reset link: what is the "
                                  "e-mail address of your account?", {}, ["email"])
            owner = self.db.one("SELECT id FROM customers WHERE lower(email) = ?", (email.lower(),))
            if owner:
                token = secrets.token_urlsafe(16)
                self.db.write([("INSERT INTO password_resets VALUES (?, ?, ?, 0)",
                                (token, owner["id"], self.db.today.isoformat()))])
            # the same answer whether or not the account exists (no account enumeration)
            return AgentReply("account", "password_reset", f"If an account exists for {mask_email(email)}, a password "
                              "reset link is on its way; it is valid for 1 hour. Check your spam folder if it "
                              "doesn't arrive in a few minutes.", {"email": email})
        if ex.has_any(text, ("2fa", "two-factor", "two factor", "2-step", "two-step", "authenticator")):
            if cust is None:
                return AgentReply("account", "two_factor", "You can turn on two-factor authentication under Account > "
                                  "Security once you're signed in. Please sign in so I can check your settings.",
                                  {}, ["customer_id"])
            turn_off = ex.has_any(text, ("disable", "turn off", "switch off", "remove"))
            turn_on = ex.has_any(text, ("enable", "turn on", "switch on", "activate", "set up", "setup"))
            if turn_on or turn_off:
                self._change(cust, "two_factor", int(turn_on))
                return AgentReply("account", "two_factor", f"Two-factor authentication is now {'on' if turn_on else 'off'} "
                                  "for your account.", {"two_factor": bool(turn_on)})
            return AgentReply("account", "two_factor", f"Two-factor authentication is {'on' if cust['two_factor'] else 'off'} "
                              "for your account. Say 'turn on 2FA' or 'turn off 2FA' to change it.",
                              {"two_factor": bool(cust["two_factor"])})
        if cust is None:
            return AgentReply("account", "sign_in_required", "For your security I can only look at or change account "
                              "details in a signed-in conversation. Please sign in (or ask me to reset your password "
                              "if you can't).", {}, ["customer_id"])
        if ex.has_any(text, ("delete my account", "close my account", "delete account", "remove my account",
                             "deactivate")):
            return AgentReply("account", "delete_request", f"I've registered a request to delete your account. We'll "
                              f"send a confirmation link to {mask_email(cust['email'])}; the account is deleted 14 days "
                              "after you confirm.", {"customer_id": cust["id"], "requested": True})
        if ex.has_any(text, ("newsletter", "unsubscribe", "marketing", "promotional emails", "subscribe")):
            on = not ex.has_any(text, ("unsubscribe", "stop", "no more", "opt out", "turn off"))
            self._change(cust, "newsletter", int(on))
            return AgentReply("account", "newsletter", f"You're now {'subscribed to' if on else 'unsubscribed from'} our "
                              "newsletter.", {"newsletter": on})
        if ex.has_any(text, ("email", "e-mail", "mail address")) and ex.has_any(text, ("change", "update", "new", "edit")):
            new = [e for e in ex.emails(text) if e != cust["email"]]
            if not new:
                return AgentReply("account", "update_email", "What should the new e-mail address be?", {}, ["new_value"])
            self._change(cust, "email", new[0])
            return AgentReply("account", "update_email", f"Your e-mail address is now {new[0]}. We sent a confirmation "
                              f"to the old address {mask_email(cust['email'])} too.", {"field": "email", "new_value": new[0]})
        if ex.has_any(text, ("phone", "mobile number", "phone number", "number")) and \
                ex.has_any(text, ("change", "update", "new", "edit")):
            new = ex.phones(text)
            if not new:
                return AgentReply("account", "update_phone", "What is the new phone number?", {}, ["new_value"])
            self._change(cust, "phone", new[0])
            return AgentReply("account", "update_phone", f"Your phone number is now {new[0]}.",
                              {"field": "phone", "new_value": new[0]})
        m = re.search(r"\b(?:change|update)\s+(?:my\s+)?name\s+to\s+([A-Za-z][A-Za-z' -]{1,60})", text, re.I)
        if m or (ex.has_any(text, ("name",)) and ex.has_any(text, ("change", "update"))):
            if not m:
                return AgentReply("account", "update_name", "What should your name be?", {}, ["new_value"])
            name = m.group(1).strip().title()
            self._change(cust, "name", name)
            return AgentReply("account", "update_name", f"Your name is now {name}.", {"field": "name", "new_value": name})
        if ex.has_any(text, ("address", "addresses")):
            new = ex.address(text)
            if new and ex.has_any(text, ("add", "new", "save", "change", "update")):
                parts = [x.strip() for x in new.split(",")]
                self.db.write([("INSERT INTO addresses (customer_id, label, line1, city, postcode, country, is_default) "
                                "VALUES (?, 'other', ?, ?, '', '', 0)", (cust["id"], parts[0], ", ".join(parts[1:])))])
                return AgentReply("account", "add_address", f"I saved {new} to your addresses.", {"address": new})
            if ex.has_any(text, ("add", "new", "change", "update")) and not new:
                return AgentReply("account", "add_address", "What is the address you want to save? (street and number, "
                                  "city, postcode)", {}, ["address"])
            rows = self.db.query("SELECT * FROM addresses WHERE customer_id = ? ORDER BY is_default DESC, id", (cust["id"],))
            lst = "; ".join(f"{r['label']}: {r['line1']}, {r['city']} {r['postcode']}".strip() for r in rows)
            return AgentReply("account", "list_addresses", f"Your saved addresses: {lst}.",
                              {"addresses": [dict(r) for r in rows]})
        return AgentReply("account", "profile", f"Your profile: {cust['name']}, {mask_email(cust['email'])}, phone "
                          f"{cust['phone']}, two-factor {'on' if cust['two_factor'] else 'off'}. What would you like "
                          "to change?", {"customer_id": cust["id"], "name": cust["name"]}, [])

    def _change(self, cust, field_: str, value) -> None:
        self.db.write([(f"UPDATE customers SET {field_} = ? WHERE id = ?", (value, cust["id"])),
                       ("INSERT INTO profile_changes (customer_id, field, old_value, new_value, changed_on) "
                        "VALUES (?, ?, ?, ?, ?)", (cust["id"], field_, str(cust[field_]), str(value),
                                                   self.db.today.isoformat()))])

    # ---------------------------------------------------------------------------------------------- payment
    def agent_payment(self, text: str, ctx: AgentContext) -> AgentReply:
        if ex.has_any(text, ("twice", "double", "duplicate", "two charges", "charged two", "charged me two",
                             "charged 2", "two times", "2 times", "extra charge", "charged again")):
            return self._duplicate(text, ctx)
        if ex.has_any(text, ("declined", "failed", "didn't go through", "did not go through", "rejected", "won't accept",
                             "doesn't accept", "not accepted", "refused", "won't go through", "payment error")):
            return self._failed(text, ctx)
        if ex.has_any(text, ("invoice", "receipt", "vat", "bill for")):
            nums = ex.invoice_numbers(text)
            oid = int(nums[0][4:]) if nums else None
            if oid is None:
                order, ask = self._resolve_order("payment", "invoice", text, ctx, "do you need the invoice for")
                if ask:
                    return ask
                oid = order["id"]
            inv = self.db.one("SELECT * FROM invoices WHERE order_id = ?", (oid,))
            owner = self._order(oid)
            if inv is None or owner is None or (ctx.customer_id is not None and owner["customer_id"] != ctx.customer_id):
                return AgentReply("payment", "invoice", f"There is no invoice for order #{oid} (orders get one once "
                                  "they are paid).", {"order_id": oid if owner else None, "found": False})
            url = f"https://shop.example/account/invoices/{inv['number']}.pdf"
            return AgentReply("payment", "invoice", f"Invoice {inv['number']} for order #{oid} ({money(inv['amount_cents'])}, "
                              f"issued {inv['issued_on']}): {url}. It was also e-mailed to you when the order was placed.",
                              {"order_id": oid, "invoice": inv["number"], "amount_cents": inv["amount_cents"], "url": url})
        if ex.has_any(text, ("gift card", "giftcard", "gift voucher")):
            codes = ex.gift_cards(text)
            if not codes:
                return AgentReply("payment", "gift_card", "What is the gift card code? It looks like GC-XXXX-XXXX.",
                                  {}, ["gift_card"])
            card = self.db.one("SELECT * FROM gift_cards WHERE code = ?", (codes[0],))
            if card is None:
                return AgentReply("payment", "gift_card", f"I can't find gift card {codes[0]}. Please check the code.",
                                  {"found": False}, ["gift_card"])
            expired = _d(card["expires_on"]) < self.db.today
            return AgentReply("payment", "gift_card", f"Gift card {codes[0]} has {money(card['balance_cents'])} left"
                              + (f" but expired on {card['expires_on']}." if expired else f", valid until {card['expires_on']}."),
                              {"gift_card": codes[0], "balance_cents": card["balance_cents"], "expired": expired})
        if ex.has_any(text, ("promo", "coupon", "discount", "voucher", "code")):
            codes = [c for c in ex.code_candidates(text) if c in self.promo_codes]
            if not codes:
                return AgentReply("payment", "promo_code", "Which promo code are you trying to use?", {}, ["promo_code"])
            pr = self.db.one("SELECT * FROM promos WHERE code = ?", (codes[0],))
            if _d(pr["expires_on"]) < self.db.today:
                return AgentReply("payment", "promo_code", f"The code {pr['code']} expired on {pr['expires_on']}, so it "
                                  "can't be used any more.", {"code": pr["code"], "valid": False})
            what = f"{pr['percent_off']}% off" if pr["percent_off"] else "free shipping"
            cond = f" on orders over {money(pr['min_order_cents'])}" if pr["min_order_cents"] else ""
            return AgentReply("payment", "promo_code", f"{pr['code']} is valid until {pr['expires_on']}: {what}{cond}. "
                              "Enter it in the promo code field at checkout (one code per order).",
                              {"code": pr["code"], "valid": True, "percent_off": pr["percent_off"],
                               "min_order_cents": pr["min_order_cents"]})
        if not ex.has_any(text, METHOD_WORDS):
            return AgentReply("payment", "ask_topic", "What's the problem with the payment: a declined card, a double "
                              "charge, an invoice, a promo code or a gift card? If it's about an order, please add the "
                              "order number.", {}, ["payment_issue"])
        methods = f"We accept {', '.join(ACCEPTED_METHODS)}."
        data: dict = {"accepted": ACCEPTED_METHODS}
        if ctx.customer_id is not None:
            saved = self.db.query("SELECT kind, last4, expiry FROM saved_methods WHERE customer_id = ?", (ctx.customer_id,))
            if saved:
                methods += " Saved on your account: " + ", ".join(
                    f"{s['kind']}" + (f" ending {s['last4']} (exp {s['expiry']})" if s["last4"] else "") for s in saved) + "."
                data["saved"] = [dict(s) for s in saved]
        return AgentReply("payment", "methods", methods + " You can manage saved cards under Account > Payment methods.", data)

    def _duplicate(self, text: str, ctx: AgentContext) -> AgentReply:
        oid = self._order_id(text, ctx)
        if oid is None and ctx.customer_id is not None:
            amts = [int(round(a * 100)) for a in ex.amounts(text)]
            cands = self.db.query(
                "SELECT p.order_id, p.amount_cents FROM payments p JOIN orders o ON o.id = p.order_id WHERE "
                "o.customer_id = ? AND p.status = 'captured' GROUP BY p.order_id HAVING COUNT(*) > 1", (ctx.customer_id,))
            cands = [c for c in cands if not amts or c["amount_cents"] in amts]
            if len(cands) == 1:
                oid = cands[0]["order_id"]
        if oid is None:
            return AgentReply("payment", "duplicate_charge", "Sorry about that. Which order was charged twice? Please "
                              "give me the order number so I can check the payments.", {}, ["order_id"])
        order = self._order(oid)
        if order is None or (ctx.customer_id is not None and order["customer_id"] != ctx.customer_id):
            return AgentReply("payment", "duplicate_charge", f"I can't find order #{oid}. Could you check the number?",
                              {}, ["order_id"])
        caps = self.db.query("SELECT * FROM payments WHERE order_id = ? AND status = 'captured' ORDER BY id", (oid,))
        if len(caps) > 1:
            dup = caps[-1]
            self.db.write([("UPDATE payments SET status = 'refunded' WHERE id = ?", (dup["id"],))])
            return AgentReply("payment", "duplicate_charge", f"You're right: order #{oid} was charged twice "
                              f"({money(dup['amount_cents'])} on {dup['method']}). I've refunded the duplicate charge; it "
                              "shows on your statement within 3-5 business days.",
                              {"order_id": oid, "duplicate": True, "refunded_payment_id": dup["id"],
                               "refund_cents": dup["amount_cents"]})
        refunded = self.db.one("SELECT * FROM payments WHERE order_id = ? AND status = 'refunded'", (oid,))
        if refunded and caps:
            return AgentReply("payment", "duplicate_charge", f"The duplicate charge on order #{oid} was already refunded "
                              f"({money(refunded['amount_cents'])}); it can take 3-5 business days to show.",
                              {"order_id": oid, "duplicate": True, "already_refunded": True})
        total = money(caps[0]["amount_cents"]) if caps else "nothing"
        return AgentReply("payment", "duplicate_charge", f"I see only one charge for order #{oid} ({total}). A second "
                          "line on your statement is usually a temporary authorisation hold that disappears within "
                          "7 days. If it's still there after that, send us a statement screenshot.",
                          {"order_id": oid, "duplicate": False, "captured": len(caps)})

    def _failed(self, text: str, ctx: AgentContext) -> AgentReply:
        oid = self._order_id(text, ctx)
        advice = ("Check the card's expiry date and CVC, make sure the billing address matches the one your bank has, "
                  "approve the 3-D Secure prompt in your banking app, or try another payment method.")
        if oid is None:
            return AgentReply("payment", "failed_payment", f"Payments usually fail because of the card details or the "
                              f"bank's security checks. {advice} If you give me the order number I can see the exact "
                              "reason.", {"advice": advice}, ["order_id"])
        order = self._order(oid)
        if order is None or (ctx.customer_id is not None and order["customer_id"] != ctx.customer_id):
            return AgentReply("payment", "failed_payment", f"I can't find order #{oid}. Could you check the number?",
                              {}, ["order_id"])
        fail = self.db.one("SELECT * FROM payments WHERE order_id = ? AND status = 'failed' ORDER BY id DESC", (oid,))
        if fail is None:
            return AgentReply("payment", "failed_payment", f"I don't see a failed payment on order #{oid}; its payment "
                              "went through.", {"order_id": oid, "failed": False})
        paid = self.db.one("SELECT 1 FROM payments WHERE order_id = ? AND status = 'captured'", (oid,))
        card = fail["method"] + (f" ending {fail['last4']}" if fail["last4"] else "")
        msg = f"The payment for order #{oid} with {card} failed: {fail['decline_reason']}."
        msg += " A later attempt succeeded, so the order is paid." if paid else f" The order is on hold. {advice}"
        return AgentReply("payment", "failed_payment", msg, {"order_id": oid, "failed": True,
                                                             "reason": fail["decline_reason"], "paid": bool(paid)})

    # -------------------------------------------------------------------------------------------- technical
    def agent_technical(self, text: str, ctx: AgentContext) -> AgentReply:
        codes = ex.error_codes(text)
        toks = set(ex.tokens(text))
        best, best_score = None, 0.0
        for art in self.db.query("SELECT * FROM kb_articles ORDER BY id"):
            kw = set(ex.tokens(art["keywords"]))
            score = len(kw & toks) + sum(5 for c in codes if c in art["error_codes"].split())
            if score > best_score:
                best, best_score = art, score
        device = next((DEVICE_NAMES.get(d, d) for d in DEVICES if ex.has_any(text, (d,))), None)
        if best is None or best_score < 2:
            return AgentReply("technical", "troubleshoot", "I'm sorry you're having trouble. Which device and browser "
                              "or app are you using, and what exactly happens (the error message or code)?",
                              {"candidates": []}, ["device", "error_message"])
        steps = json.loads(best["steps"])
        numbered = " ".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
        on = f" on {device}" if device else ""
        return AgentReply("technical", "troubleshoot", f"{best['title']}{on} - please try: {numbered} If it still "
                          "happens, tell me and I'll pass it to our technical team.",
                          {"article_id": best["id"], "title": best["title"], "steps": steps, "device": device,
                           "error_codes": codes})


DEVICES = ("iphone", "ipad", "android", "windows", "mac", "macbook", "chrome", "safari", "firefox", "edge", "ios",
           "app", "laptop", "tablet")
METHOD_WORDS = ("method", "methods", "pay with", "pay by", "pay using", "accept", "paypal", "apple pay", "google pay",
                "klarna", "amex", "american express", "visa", "mastercard", "saved card", "saved cards", "installments",
                "how can i pay", "ways to pay")
PAYMENT_TOPIC_WORDS = ("declined", "failed", "twice", "double", "duplicate", "invoice", "receipt", "promo", "coupon",
                       "code", "gift card", "method", "methods", "charged", "refused", "rejected")
DEVICE_NAMES = {"iphone": "iPhone", "ipad": "iPad", "android": "Android", "windows": "Windows", "mac": "Mac",
                "macbook": "MacBook", "chrome": "Chrome", "safari": "Safari", "firefox": "Firefox", "edge": "Edge",
                "ios": "iOS", "app": "the app"}
PLATFORMS = ((("iphone", "ios", "ipad"), "iOS"), (("android", "samsung", "pixel"), "Android"),
             (("mac", "macbook", "macos"), "macOS"), (("windows", "pc"), "Windows"), (("linux",), "Linux"))
SPEC_WORDS = {
    "battery_hours": ("battery",), "battery_days": ("battery",), "battery_mah": ("battery",),
    "battery_minutes": ("battery",), "weight_g": ("weight", "weigh", "heavy", "light"),
    "weight_kg": ("weight", "weigh", "heavy", "light"), "dimensions_cm": ("dimension", "size", "how big", "measure"),
    "top_cm": ("dimension", "size", "how big", "measure"), "material": ("material", "made of", "fabric"),
    "upper_material": ("material", "made of"), "water_resistance": ("water", "waterproof", "ip"),
    "waterproof": ("water", "waterproof"), "waterproof_mm": ("water", "waterproof"),
    "noise_cancelling": ("noise",), "screen_in": ("screen", "display"), "size_in": ("screen", "size", "inch"),
    "storage_gb": ("storage", "memory", "gb"), "ram_gb": ("ram", "memory"), "camera_mp": ("camera",),
    "capacity_l": ("capacity", "litre", "liter", "how big"), "capacity_ml": ("capacity", "ml", "how big"),
    "capacity_people": ("capacity", "people", "person", "sleeps"), "power_w": ("power", "watt"),
    "refresh_hz": ("refresh", "hz"), "cpu": ("cpu", "processor"), "os": ("operating system", " os"),
}
FEATURES = {"waterproof": ("waterproof", "water resistant", "water-resistant"),
            "noise_cancelling": ("noise cancelling", "noise canceling", "anc"),
            "wireless": ("wireless", "cordless", "bluetooth"), "gps": ("gps",), "5g": ("5g",),
            "insulated": ("insulated", "keeps cold", "keeps hot")}
FEATURE_TESTS = {
    "waterproof": lambda s: bool(s.get("waterproof")) or s.get("water_resistance", "none") not in ("none", None)
    or bool(s.get("waterproof_mm")),
    "noise_cancelling": lambda s: bool(s.get("noise_cancelling")),
    "wireless": lambda s: bool(s.get("wireless", "bluetooth" in s or s.get("type") == "cordless stick")),
    "gps": lambda s: bool(s.get("gps")), "5g": lambda s: bool(s.get("5g")), "insulated": lambda s: bool(s.get("insulated")),
}
RETURN_REASONS = ((("damaged", "broken", "cracked", "defective", "faulty", "doesn't work", "not working"), "damaged"),
                  (("wrong item", "wrong size sent", "not what i ordered", "wrong colour", "wrong color", "wrong one"),
                   "wrong item"),
                  (("doesn't fit", "too small", "too big", "too large", "fit", "size"), "doesn't fit"),
                  (("exchange", "swap"), "exchange"),
                  (("changed my mind", "don't need", "don't like", "don't want"), "changed my mind"))
