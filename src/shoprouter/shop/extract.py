"""What the agents pull out of a customer's message: order numbers, amounts, e-mails, addresses, products."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

_ORDER_EXPLICIT = re.compile(
    r"(?:\border(?:\s+(?:number|no\.?|num|id))?|#|\bno\.?|\bnumber)\s*[:#]?\s*(\d{4,7})\b", re.I)
_NUMBER = re.compile(r"(?<![\w$€£.,-])(\d{5})(?![\w.,]\d|\s*(?:%|usd|eur|gbp|dollars?|euros?|pounds?))", re.I)
_MONEY = re.compile(r"(?:[$€£]\s?(\d{1,6}(?:[.,]\d{1,2})?)|\b(\d{1,6}(?:[.,]\d{1,2})?)\s?(?:usd|eur|gbp|dollars?|euros?|"
                    r"pounds?|bucks)\b)", re.I)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w])(\+?\d[\d\s().-]{7,}\d)(?![\w])")
_RMA = re.compile(r"\bR-?(\d{5})\b", re.I)
_INVOICE = re.compile(r"\bINV-?(\d{4,7})\b", re.I)
_GIFT = re.compile(r"\bGC-[A-Z0-9]{4}-[A-Z0-9]{4}\b", re.I)
_CODE = re.compile(r"\b[A-Za-z]{3,12}\d{0,3}\b")
_ERROR_CODE = re.compile(r"\b(?:E-?\d{4}|(?<![\d$.,])[45]\d\d(?![\d.,]))\b", re.I)
_STREET_KINDS = r"street|st|road|rd|avenue|ave|lane|ln|drive|dr|way|boulevard|blvd|court|ct|place|pl|terrace|close|square|sq"
_ADDRESS = re.compile(rf"\b(\d{{1,5}}[a-z]?\s+(?:(?!(?:to|at|for|and|on|in)\b)(?!\d+\s)[A-Za-z0-9'.-]+\s+){{0,4}}"
                      rf"(?:{_STREET_KINDS})\b\.?[^!?\n]*)", re.I)
_SIZE = re.compile(r"\bsize\s+(\d{1,2}(?:\.5)?|xxs|xs|s|m|l|xl|xxl)\b|\b(xxs|xs|xxl|xl)\b", re.I)
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_IRREGULAR = {"mice": "mouse", "boxes": "box", "watches": "watch", "glasses": "glass", "tees": "tee"}

COLORS = ("black", "white", "grey", "gray", "silver", "blue", "navy", "red", "green", "olive", "yellow", "orange",
          "purple", "pink", "brown", "rose gold", "space grey", "oak")


def norm_token(tok: str) -> str:
    """Lowercase singular-ish form: 'earbuds' -> 'earbud', 'laptops' -> 'laptop', 'mice' -> 'mouse'."""
    tok = tok.lower()
    if tok in _IRREGULAR:
        return _IRREGULAR[tok]
    if len(tok) > 3 and tok.endswith("s") and not tok.endswith(("ss", "us", "is")):
        return tok[:-1]
    return tok


def tokens(text: str) -> list[str]:
    return [norm_token(t) for t in _TOKEN.findall(text.lower())]


def contains_phrase(toks: list[str], phrase: str) -> bool:
    p = tokens(phrase)
    n = len(p)
    return n > 0 and any(toks[i:i + n] == p for i in range(len(toks) - n + 1))


def has_any(text: str, words) -> bool:
    """Whole-word (or whole-phrase) match of any of the words, case-insensitive."""
    low = text.lower()
    return any(re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", low) for w in words)


def order_ids(text: str) -> list[int]:
    """Order numbers: '#10023', 'order 10023', 'order number 10023', or a bare five-digit number."""
    out = [int(m) for m in _ORDER_EXPLICIT.findall(text)]
    if not out:
        cleaned = _ADDRESS.sub(" ", text)
        cleaned = _RMA.sub(" ", _INVOICE.sub(" ", cleaned))
        out = [int(m) for m in _NUMBER.findall(cleaned)]
    seen = []
    for o in out:
        if o not in seen:
            seen.append(o)
    return seen


def amounts(text: str) -> list[float]:
    out = []
    for a, b in _MONEY.findall(text):
        raw = (a or b).replace(",", ".")
        try:
            out.append(float(raw))
        except ValueError:  # pragma: no cover
            continue
    return out


def price_range(text: str) -> tuple[float | None, float | None]:
    """(min, max) from 'under $50', 'less than 100', 'over 200', 'between 20 and 50 dollars'."""
    low = text.lower()
    num = r"[$€£]?\s?(\d{1,6}(?:[.,]\d{1,2})?)"
    m = re.search(rf"between\s+{num}\s*(?:and|-|to)\s*{num}", low)
    if m:
        a, b = float(m.group(1).replace(",", ".")), float(m.group(2).replace(",", "."))
        return min(a, b), max(a, b)
    lo = hi = None
    m = re.search(rf"(?:under|below|less than|cheaper than|max(?:imum)?|up to|at most|no more than|within)\s+{num}", low)
    if m:
        hi = float(m.group(1).replace(",", "."))
    m = re.search(rf"(?:over|above|more than|at least|from|min(?:imum)?)\s+{num}", low)
    if m:
        lo = float(m.group(1).replace(",", "."))
    return lo, hi


def emails(text: str) -> list[str]:
    return [e.lower() for e in _EMAIL.findall(text)]


def phones(text: str) -> list[str]:
    no_mail = _EMAIL.sub(" ", text)
    out = []
    for m in _PHONE.findall(no_mail):
        digits = re.sub(r"\D", "", m)
        if 9 <= len(digits) <= 15:
            out.append(m.strip())
    return out


def address(text: str) -> str | None:
    """A street address: '12 Oak Street, Springfield 12345' (the rest of the sentence after the number)."""
    m = _ADDRESS.search(text)
    if not m:
        return None
    addr = re.split(r"\s+(?:instead|please|pls|thanks|thank you)\b", m.group(1), flags=re.I)[0]
    return addr.strip(" ,.;")


def return_ids(text: str) -> list[str]:
    return [f"R-{m}" for m in _RMA.findall(text)]


def invoice_numbers(text: str) -> list[str]:
    return [f"INV-{m}" for m in _INVOICE.findall(text)]


def gift_cards(text: str) -> list[str]:
    return [m.upper() for m in _GIFT.findall(text)]


def code_candidates(text: str) -> list[str]:
    """Words that may be promo codes (checked against the promo table by the caller)."""
    return [m.upper() for m in _CODE.findall(text)]


def error_codes(text: str) -> list[str]:
    out = []
    for m in _ERROR_CODE.findall(text):
        m = m.upper()
        if m.startswith("E") and "-" not in m:
            m = "E-" + m[1:]
        out.append(m)
    return out


def size(text: str) -> str | None:
    m = _SIZE.search(text)
    if not m:
        return None
    return (m.group(1) or m.group(2)).upper()


def colors(text: str) -> list[str]:
    low = text.lower()
    out = []
    for c in COLORS:
        if re.search(rf"\b{c}\b", low):
            out.append("grey" if c == "gray" else c)
    return out


# ------------------------------------------------------------------------------------------------- products

@dataclass
class ProductMatch:
    product_id: int
    name: str
    score: float


class ProductIndex:
    """Finds products named in a message: brand, model and category words, weighted by rarity."""

    def __init__(self, products: list[tuple[int, str, str, str, str]], category_words: dict[str, list[str]]):
        # products: (id, name, brand, model, category)
        self.products = {p[0]: p for p in products}
        self.category_words = category_words
        self.name_tokens: dict[int, set[str]] = {}
        self.model_tokens: dict[int, list[str]] = {}
        df: Counter = Counter()
        for pid, name, _brand, model, _cat in products:
            toks = set(tokens(name))
            self.name_tokens[pid] = toks
            self.model_tokens[pid] = tokens(model)
            df.update(toks)
        n = len(products)
        self.idf = {t: math.log(1 + n / c) for t, c in df.items()}
        self.brands = {p[2].lower() for p in products}
        # category phrases, longest first, for category detection
        self.category_phrases = sorted(((w, cat) for cat, ws in category_words.items() for w in ws),
                                       key=lambda x: -len(x[0]))

    def categories(self, text: str) -> list[str]:
        toks = tokens(text)
        out: list[str] = []
        for phrase, cat in self.category_phrases:
            if contains_phrase(toks, phrase) and cat not in out:
                out.append(cat)
        return out

    def brand(self, text: str) -> str | None:
        toks = set(tokens(text))
        for b in sorted(self.brands):
            if b in toks:
                return b
        return None

    def match(self, text: str) -> list[ProductMatch]:
        """Products the text could mean, best first: the model word must be there; a category, brand or the
        full model name ('Nova Pro', not just 'Nova') named in the text narrows the candidates down."""
        toks = tokens(text)
        tset = set(toks)
        m = re.search(r"\bsku-?(\d{1,5})\b", text, re.I)
        if m and int(m.group(1)) in self.products:
            p = self.products[int(m.group(1))]
            return [ProductMatch(p[0], p[1], 100.0)]
        cands = [pid for pid, model in self.model_tokens.items() if model and model[0] in tset]
        if not cands:
            return []
        cats = set(self.categories(text))
        brand = self.brand(text)
        narrowed = [
            lambda pid: self.products[pid][4] in cats,
            lambda pid: brand is not None and self.products[pid][2].lower() == brand,
            lambda pid: len(self.model_tokens[pid]) > 1 and all(t in tset for t in self.model_tokens[pid]),
        ]
        for keep in narrowed:
            sub = [pid for pid in cands if keep(pid)]
            if sub:
                cands = sub
        out = [ProductMatch(pid, self.products[pid][1],
                            round(sum(self.idf[t] for t in self.name_tokens[pid] & tset), 4)) for pid in cands]
        out.sort(key=lambda m: (-m.score, m.product_id))
        return out

    def best(self, text: str) -> tuple[ProductMatch | None, list[ProductMatch]]:
        """(the product, []) when exactly one product fits; (None, the candidates) when several do."""
        found = self.match(text)
        if len(found) == 1:
            return found[0], []
        return None, found[:5]

    def several(self, text: str) -> list[ProductMatch]:
        """Distinct products named in different parts of the text ('compare A and B', 'A vs B')."""
        parts = re.split(r"\b(?:and|vs\.?|versus|or|with|against|to)\b|,|/", text, flags=re.I)
        cats = set(self.categories(text))
        out: list[ProductMatch] = []
        for part in parts:
            best, tied = self.best(part)
            if best is None and tied and cats:  # 'the Nova Pro earbuds or the Zephyr Max': same kind of product
                same = [m for m in tied if self.products[m.product_id][4] in cats]
                best = same[0] if len(same) == 1 else None
            if best and all(best.product_id != o.product_id for o in out):
                out.append(best)
        return out
