"""Synthetic dataset generator: templates -> varied rows -> group split -> JSONL files and a dataset card.

Each base phrase of a template file is one `group` ("<label>/<intent>/<index>"); it is expanded into several
rows with different slot fills and surface variation (politeness, casing, punctuation, typos). Multi-turn
rows are built from `openers` + `followups` (group "<label>/followup/<index>") and from topic switches (the
group of the last turn's base phrase). The split is by group, stratified by label, so no base phrase is in
two splits.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from .agents import CLARIFY, NON_AGENT
from .errors import ShopRouterError
from .rows import Row, Turn, write_rows

ALLOWED_SLOTS: tuple[str, ...] = (
    "product", "product2", "brand", "size", "color", "color2", "order_id", "amount", "date", "payment_method",
    "app_screen", "device", "error_code", "email", "carrier", "material", "days", "price", "quantity",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_CUTS = (0.70, 0.85)          # cumulative row fractions: train < 0.70 <= val < 0.85 <= test
NON_AGENT_SHARE = 0.07             # share of rows for clarify and for none (each)
FOLLOWUP_SHARE = 0.12              # share of an agent's rows that are opener(s) + follow-up
SWITCH_SHARE = 0.06                # share of an agent's / none's rows that are topic switches
MIN_REQUIRED_ROWS = 12550
_SLOT_RE = re.compile(r"\{([^{}]*)\}")
_LABEL_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


# --------------------------------------------------------------------------------------------- templates
@dataclass(frozen=True)
class Intent:
    """A sub-topic of a label: its id and base phrases (one group each)."""

    id: str
    phrases: tuple[str, ...]


@dataclass(frozen=True)
class LabelTemplates:
    """The templates of one label: intents, follow-up last turns and opener first turns."""

    label: str
    intents: tuple[Intent, ...]
    followups: tuple[str, ...] = ()
    openers: tuple[str, ...] = ()

    @property
    def n_phrases(self) -> int:
        return sum(len(i.phrases) for i in self.intents)


def default_templates_dir() -> Path:
    """The package's templates directory."""
    return Path(str(resources.files("shoprouter").joinpath("templates")))


def check_slots(phrase: str, where: str) -> None:
    """Raise ShopRouterError when the phrase uses an unknown slot or has a stray brace."""
    for name in _SLOT_RE.findall(phrase):
        if name not in ALLOWED_SLOTS:
            raise ShopRouterError(
                f"{where}: unknown slot {{{name}}} in {phrase!r}; allowed slots: {', '.join(ALLOWED_SLOTS)}")
    if "{" in _SLOT_RE.sub("", phrase) or "}" in _SLOT_RE.sub("", phrase):
        raise ShopRouterError(f"{where}: unbalanced brace in {phrase!r}")


def _strings(raw: object, where: str) -> list[str]:
    """A list of non-empty strings, checked."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ShopRouterError(f"{where} must be a list of strings")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, (str, int, float)) or not str(item).strip():
            raise ShopRouterError(f"{where}[{i}] must be a non-empty string")
        phrase = " ".join(str(item).split())
        check_slots(phrase, f"{where}[{i}]")
        out.append(phrase)
    return out


def _unique(phrases: Iterable[str], seen: set[str]) -> tuple[str, ...]:
    """Drop phrases already seen (case- and punctuation-insensitive), keeping order."""
    out = []
    for p in phrases:
        key = normalize(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return tuple(out)


def parse_templates(raw: object, name: str) -> LabelTemplates:
    """Validate one parsed template file (`name` is the file stem, expected to be the label)."""
    if not isinstance(raw, dict):
        raise ShopRouterError(f"template {name}.yaml must be a mapping with 'label' and 'intents'")
    label = str(raw.get("label", name))
    if label != name or not _LABEL_RE.match(label):
        raise ShopRouterError(f"template {name}.yaml: label {label!r} must equal the file name {name!r}")
    intents_raw = raw.get("intents")
    if not isinstance(intents_raw, list) or not intents_raw:
        raise ShopRouterError(f"template {name}.yaml needs a non-empty list under 'intents'")
    seen: set[str] = set()
    intents, ids = [], set()
    for i, item in enumerate(intents_raw):
        if not isinstance(item, dict) or "id" not in item:
            raise ShopRouterError(f"template {name}.yaml: intent #{i + 1} needs an 'id' and 'phrases'")
        iid = str(item["id"])
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", iid) or iid == "followup" or iid in ids:
            raise ShopRouterError(f"template {name}.yaml: intent id {iid!r} is invalid or duplicated")
        ids.add(iid)
        phrases = _unique(_strings(item.get("phrases"), f"{name}.yaml intent {iid!r} phrases"), seen)
        if phrases:
            intents.append(Intent(iid, phrases))
    if not intents:
        raise ShopRouterError(f"template {name}.yaml has no phrases")
    followups = _unique(_strings(raw.get("followups"), f"{name}.yaml followups"), set())
    openers = _unique(_strings(raw.get("openers"), f"{name}.yaml openers"), set())
    if label in NON_AGENT:   # follow-ups / openers only make sense for agents
        followups, openers = (), ()
    return LabelTemplates(label, tuple(intents), followups, openers)


def load_templates(directory: Path | None = None) -> dict[str, LabelTemplates]:
    """Load and validate every `<label>.yaml` in the directory (default: the package templates)."""
    d = Path(directory) if directory is not None else default_templates_dir()
    if not d.is_dir():
        raise ShopRouterError(f"templates directory not found: {d}")
    files = sorted(d.glob("*.yaml"))
    if not files:
        raise ShopRouterError(f"no template files (*.yaml) in {d}")
    out: dict[str, LabelTemplates] = {}
    for f in files:
        try:
            raw = yaml.safe_load(f.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ShopRouterError(f"template {f} is not valid YAML: {str(exc).splitlines()[0]}") from None
        out[f.stem] = parse_templates(raw, f.stem)
    return out


def ordered_labels(templates: dict[str, LabelTemplates]) -> list[str]:
    """Agent labels (sorted by the default registry order, then by name), then clarify and none."""
    from .agents import DEFAULT_AGENTS

    default = [a.key for a in DEFAULT_AGENTS]
    agents = [k for k in templates if k not in NON_AGENT]
    agents.sort(key=lambda k: (default.index(k) if k in default else len(default), k))
    return agents + [k for k in NON_AGENT if k in templates]


# ------------------------------------------------------------------------------------------- slot values
PRODUCTS = (
    "wireless earbuds", "running shoes", "laptop backpack", "coffee maker", "winter jacket", "yoga mat",
    "smartwatch", "bluetooth speaker", "desk lamp", "phone case", "hiking boots", "blender", "air fryer",
    "gaming mouse", "mechanical keyboard", "office chair", "rain jacket", "denim jeans", "wool sweater",
    "sunglasses", "electric toothbrush", "hair dryer", "water bottle", "tablet", "e-reader", "USB-C charger",
    "HDMI cable", "27 inch monitor", "standing desk", "duvet cover", "bath towels", "frying pan", "knife set",
    "toaster", "vacuum cleaner", "robot vacuum", "baby stroller", "dog bed", "camping tent", "sleeping bag",
    "bike helmet", "dumbbells", "tennis racket", "skateboard", "board game", "lego set", "leather wallet",
    "handbag", "watch strap", "summer dress", "linen shirt", "hoodie", "sneakers", "ankle boots", "scarf",
    "beanie", "perfume", "face cream", "noise cancelling headphones", "webcam", "printer", "wifi router",
    "external hard drive", "power bank", "smart bulb", "doorbell camera", "kettle", "espresso machine",
    "rice cooker", "stand mixer", "suitcase", "umbrella", "wall clock", "throw pillow", "area rug",
    "bookshelf", "mattress", "memory foam pillow", "gaming headset", "fitness tracker", "puffer coat",
    "trail running shoes", "cast iron skillet", "kids' raincoat", "phone charger", "desk organizer",
)
BRANDS = (
    "Nike", "Adidas", "Samsung", "Apple", "Sony", "Bose", "Philips", "Dyson", "Levi's", "Puma", "The North Face",
    "Patagonia", "Lenovo", "Logitech", "Anker", "JBL", "Le Creuset", "KitchenAid", "Zara", "Uniqlo",
    "New Balance", "Asics", "Garmin", "Fitbit", "Canon", "Xiaomi", "Braun", "Tefal", "Columbia", "Ray-Ban",
    "Casio", "Nespresso", "Salomon", "Vans", "Converse", "HP", "Dell", "Sennheiser", "Under Armour", "Birkenstock",
)
SIZES = (
    "size 10", "size 8", "size 42", "size 38", "XL", "XS", "S", "M", "L", "XXL", "small", "medium", "large",
    "extra large", "size 7.5", "EU 44", "UK 9", "US 11", "32x34", "queen size", "king size", "size 12",
    "size 6", "a medium", "size 40", "W30 L32", "2XL", "size 9.5", "petite small", "age 6-7",
)
COLORS = (
    "black", "white", "navy", "navy blue", "red", "dark green", "olive", "beige", "grey", "gray", "pink",
    "burgundy", "light blue", "silver", "gold", "rose gold", "brown", "tan", "cream", "yellow", "orange",
    "purple", "charcoal", "khaki", "teal", "mint green", "sand", "forest green", "sky blue", "off-white",
)
PAYMENT_METHODS = (
    "Visa", "Mastercard", "PayPal", "Apple Pay", "Google Pay", "Amex", "American Express", "debit card",
    "credit card", "Klarna", "bank transfer", "Afterpay", "Maestro", "Visa debit", "store credit",
    "Discover card", "prepaid card", "business card", "iDEAL", "Revolut card",
)
APP_SCREENS = (
    "checkout page", "cart", "home page", "login screen", "order history page", "wishlist", "payment page",
    "search results", "product page", "account settings", "sign-up form", "basket", "tracking page",
    "returns portal", "notifications screen", "filters menu", "address form", "coupon field", "order summary",
    "password reset page",
)
DEVICES = (
    "iPhone 13", "iPhone 15 Pro", "iPhone SE", "Android phone", "Samsung Galaxy S23", "Pixel 7", "iPad",
    "Chrome on Windows", "Safari on Mac", "Firefox", "Edge", "my laptop", "Huawei P30", "Android tablet",
    "MacBook", "Windows 11 PC", "Chromebook", "OnePlus 11", "Galaxy Tab", "Firefox on Linux", "work computer",
    "Xiaomi phone", "iPhone 12 mini", "Opera browser",
)
CARRIERS = (
    "UPS", "DHL", "FedEx", "USPS", "Royal Mail", "DPD", "Hermes", "Evri", "GLS", "PostNL", "Canada Post",
    "Australia Post", "La Poste", "Parcelforce", "Yodel", "TNT", "Correos", "the courier", "OnTrac", "Purolator",
)
MATERIALS = (
    "leather", "cotton", "wool", "merino wool", "polyester", "linen", "stainless steel", "aluminium", "bamboo",
    "silk", "cashmere", "nylon", "suede", "oak", "glass", "ceramic", "recycled plastic", "organic cotton",
    "denim", "canvas", "silicone", "titanium", "fleece", "vegan leather", "walnut", "cast iron", "gore-tex",
)
FIRST_NAMES = ("jane", "john", "maria", "li", "ahmed", "sofia", "tom", "emma", "lukas", "priya", "carlos",
               "anna", "mike", "fatima", "olivia", "noah", "yuki", "sam", "chloe", "david")
SURNAMES = ("doe", "smith", "garcia", "chen", "khan", "rossi", "brown", "muller", "patel", "silva", "kim",
            "novak", "jones", "martin", "nguyen", "lopez", "taylor", "weber")
EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.co.uk", "icloud.com", "proton.me", "web.de",
                 "gmx.net", "mail.com", "company.io")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
                10: "ten", 12: "twelve", 14: "fourteen", 20: "twenty"}
ERROR_CODES = ("error 500", "error 404", "error 403", "error 502", "error 503", "error 429", "ERR_CONNECTION_RESET",
               "ERR_TIMED_OUT", "code 0x80070005", "timeout error", "network error", "error 401",
               "SSL error", "NaN error", "unknown error")


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def make_order_id(rng: random.Random, bare: bool = False) -> str:
    """An order id in one of several formats; `bare` omits a leading 'order'."""
    n5, n6, n7 = rng.randint(10000, 99999), rng.randint(100000, 999999), rng.randint(1000000, 9999999)
    bare_forms = (f"#{n5}", f"{n5}", f"#{n6}", f"{n7}", f"ORD-{n6}", f"SR{rng.randint(10**7, 10**8 - 1)}",
                  f"#A{n5}", f"{rng.choice('ABCDEFGHJK')}{rng.choice('LMNPQRSTUV')}-{n5}", f"#{n7}", f"{n6}")
    if bare:
        return rng.choice(bare_forms)
    full = (f"order {n5}", f"order #{n6}", f"order no. {n5}", f"order number {n7}", f"order ORD-{n6}")
    return rng.choice(bare_forms + full)


def make_amount(rng: random.Random) -> str:
    """A money amount in $, EUR or GBP, in several written forms."""
    value = round(rng.choice((4.99, 9.5, 12, 19.99, 24, 35.5, 49.99, 59, 75, 89.9, 120, 149.99, 199, 249.5,
                              320, 499, 799.99, 1299)) * rng.choice((1, 1, 1, 0.8, 1.1)), 2)
    if value >= 100 or rng.random() < 0.25:
        value = round(value)
    num = f"{value:,.2f}" if value != int(value) else (f"{int(value):,}" if rng.random() < 0.6 else f"{value:,.2f}")
    form = rng.random()
    cur = rng.choice(("$", "€", "£"))
    if form < 0.7:
        return f"{cur}{num}"
    if form < 0.8:
        return f"{num}{cur}" if cur == "€" else f"{cur} {num}"
    words = {"$": ("dollars", "bucks", "USD"), "€": ("euros", "EUR"), "£": ("pounds", "GBP", "quid")}[cur]
    return f"{num} {rng.choice(words)}"


def make_date(rng: random.Random) -> str:
    """A date as customers write it (relative or absolute)."""
    day, month = rng.randint(1, 28), rng.choice(MONTHS)
    forms = (
        f"last {rng.choice(WEEKDAYS)}", f"{month} {day}", f"{month[:3]} {day}", f"the {_ordinal(day)}",
        f"{day}/{rng.randint(1, 12):02d}", f"2024-{rng.randint(1, 12):02d}-{day:02d}", "yesterday",
        f"{rng.randint(2, 9)} days ago", "last week", f"on {rng.choice(WEEKDAYS)}", f"the {_ordinal(day)} of {month}",
        "two weeks ago", "last month", f"{month} {_ordinal(day)}", "this morning", "the day before yesterday",
        f"{rng.choice(WEEKDAYS)} night", "a week ago", "over the weekend", f"{day} {month}",
    )
    return rng.choice(forms)


def make_email(rng: random.Random) -> str:
    """A plausible customer e-mail address."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(SURNAMES)
    local = rng.choice((f"{first}.{last}", f"{first}{last}", f"{first}_{last}{rng.randint(1, 99)}",
                        f"{first[0]}{last}", f"{first}{rng.randint(70, 2005)}"))
    return f"{local}@{rng.choice(EMAIL_DOMAINS)}"


def make_error_code(rng: random.Random) -> str:
    """An error code as shown by the site or app."""
    r = rng.random()
    if r < 0.45:
        return rng.choice(ERROR_CODES)
    if r < 0.7:
        return f"code E-{rng.randint(1000, 9999)}"
    if r < 0.85:
        return f"error {rng.choice(('PAY', 'AUTH', 'CHK', 'APP', 'NET'))}-{rng.randint(10, 999)}"
    return f"error code {rng.randint(100, 9999)}"


def make_number(rng: random.Random, low: int, high: int, words: float = 0.25) -> str:
    """A small number, sometimes written as a word."""
    n = rng.randint(low, high)
    return NUMBER_WORDS[n] if n in NUMBER_WORDS and rng.random() < words else str(n)


def make_price(rng: random.Random) -> str:
    """A price range ("under $50", "less than 100 euros")."""
    n = rng.choice((20, 25, 30, 40, 50, 60, 75, 80, 100, 120, 150, 200, 250, 300, 500, 1000))
    cur = rng.choice(("$", "€", "£", ""))
    money = f"{cur}{n}" if cur else f"{n} {rng.choice(('dollars', 'euros', 'pounds', 'bucks'))}"
    low = max(5, n // 2)
    forms = (f"under {money}", f"less than {money}", f"below {money}", f"max {money}", f"around {money}",
             f"no more than {money}", f"cheaper than {money}", f"between {cur or '$'}{low} and {cur or '$'}{n}",
             f"for under {money}", f"up to {money}", f"{money} or less")
    return rng.choice(forms)


def _pick(pool: Sequence[str]) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(pool)


SLOT_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "product": _pick(PRODUCTS), "product2": _pick(PRODUCTS), "brand": _pick(BRANDS), "size": _pick(SIZES),
    "color": _pick(COLORS), "color2": _pick(COLORS), "order_id": make_order_id, "amount": make_amount,
    "date": make_date, "payment_method": _pick(PAYMENT_METHODS), "app_screen": _pick(APP_SCREENS),
    "device": _pick(DEVICES), "error_code": make_error_code, "email": make_email, "carrier": _pick(CARRIERS),
    "material": _pick(MATERIALS), "days": lambda rng: make_number(rng, 2, 21),
    "price": make_price, "quantity": lambda rng: make_number(rng, 2, 12),
}
_PAIRS = {"product2": "product", "product": "product2", "color2": "color", "color": "color2"}
_ORDER_WORD_RE = re.compile(r"(order|order number|order no\.?|#)\s?$", re.IGNORECASE)
_ARTICLE_RE = re.compile(r"\b([Aa])n? $")


def slot_value(name: str, rng: random.Random, before: str, chosen: dict[str, str]) -> str:
    """A value for one slot, given the text before it and the values already chosen for this phrase."""
    if name == "order_id":
        bare = bool(_ORDER_WORD_RE.search(before))
        value = make_order_id(rng, bare)
        return value.lstrip("#") if before.endswith("#") else value
    value = SLOT_MAKERS[name](rng)
    other = chosen.get(_PAIRS.get(name, ""))
    for _ in range(20):
        if value != other:
            break
        value = SLOT_MAKERS[name](rng)
    return value


def fill_slots(phrase: str, rng: random.Random) -> str:
    """Replace every {slot} with a value (the same value for repeats), fixing a/an before it."""
    chosen: dict[str, str] = {}
    out, pos = "", 0
    for m in _SLOT_RE.finditer(phrase):
        out += phrase[pos:m.start()]
        name = m.group(1)
        if name not in chosen:
            chosen[name] = slot_value(name, rng, out, chosen)
        value = chosen[name]
        art = _ARTICLE_RE.search(out)
        if art and value[:1].isalpha():
            article = "an" if value[0].lower() in "aeio" else "a"
            article = article.capitalize() if art.group(1) == "A" else article
            out = out[:art.start()] + article + " "
        out += value
        pos = m.end()
    return out + phrase[pos:]


# ------------------------------------------------------------------------------------- surface variation
POLITE_PREFIXES = ("hi,", "hello,", "hi there,", "good morning,", "good evening,", "hello there,",
                   "excuse me,", "sorry to bother you,", "hi team,", "dear support,", "hi", "hello")
POLITE_SUFFIXES = ("please", "thanks", "thank you", "thanks in advance", "thank you so much", "many thanks",
                   "cheers", "much appreciated", "thx", "ty", "thanks!")
CASUAL_PREFIXES = ("hey", "hey,", "yo", "heyy", "ok so", "so", "um", "hmm", "quick q:", "hiya", "sooo")
CASUAL_SUFFIXES = ("lol", "haha", ":)", "pls", "plz", "lmao", "ty", ":(", "ugh")
URGENT_PREFIXES = ("urgent:", "URGENT -", "asap:", "help!", "please help,", "need help fast,")
URGENT_SUFFIXES = ("asap", "urgent!!", "asap please", "need this sorted today", "this is urgent",
                   "pls hurry", "!!!", "urgently")
MID_PREFIXES = ("ok", "ok,", "okay so", "alright,", "hmm", "thanks,", "right,", "great,", "cool,")
SWITCH_PREFIXES = ("also,", "another thing:", "different question,", "oh and", "btw", "unrelated, but",
                   "one more thing,", "separate question:", "also")
MISSPELLINGS = {
    "receive": "recieve", "received": "recieved", "address": "adress", "password": "pasword",
    "definitely": "definately", "separate": "seperate", "account": "acount", "delivery": "delivary",
    "cancel": "cancle", "tomorrow": "tommorow", "wednesday": "wensday", "payment": "paymnet",
    "available": "availible", "warranty": "warrenty", "exchange": "exchnage", "package": "pakage",
    "which": "wich", "really": "realy", "until": "untill", "arrive": "arive", "shipping": "shiping",
    "immediately": "immediatly", "necessary": "neccessary", "because": "becuase",
    "order": "oder", "already": "allready", "different": "diffrent", "email": "emial", "website": "webiste",
    "error": "eror", "charged": "chargd", "their": "thier", "wrong": "wrnog", "login": "loggin",
    "tracking": "traking", "invoice": "invoise", "recommend": "recomend", "comfortable": "comfortible",
    "waterproof": "water proof", "still": "stil", "weird": "wierd", "business": "buisness",
}
CHAT_SHORT = {"you": "u", "your": "ur", "please": "pls", "thanks": "thx", "because": "cuz", "are": "r",
              "okay": "ok", "really": "rly", "tomorrow": "tmrw", "people": "ppl", "don't": "dont",
              "can't": "cant", "i'm": "im", "what": "wat", "probably": "prob"}
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
QUESTION_WORDS = ("where", "when", "what", "why", "how", "can", "could", "is", "are", "do", "does", "did",
                  "will", "would", "which", "who", "any", "has", "have", "should")


def _neighbours(ch: str) -> str:
    """Keys next to a letter on a QWERTY keyboard."""
    for r, row in enumerate(_KEYBOARD_ROWS):
        i = row.find(ch.lower())
        if i >= 0:
            near = row[max(0, i - 1):i] + row[i + 1:i + 2]
            for other in (r - 1, r + 1):
                if 0 <= other < len(_KEYBOARD_ROWS):
                    near += _KEYBOARD_ROWS[other][max(0, i - 1):i + 1]
            return near
    return ""


def typo_word(word: str, rng: random.Random) -> str:
    """One realistic typo in a word (never its first letter): swap, drop, double or a neighbouring key."""
    op = rng.choice(("swap", "drop", "double", "near"))
    i = rng.randint(1, len(word) - 2) if len(word) > 2 else 1
    if op == "swap" and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == "drop":
        return word[:i] + word[i + 1:]
    if op == "near" and _neighbours(word[i]):
        ch = rng.choice(_neighbours(word[i]))
        return word[:i] + (ch.upper() if word[i].isupper() else ch) + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def _match_case(src: str, new: str) -> str:
    return new[:1].upper() + new[1:] if src[:1].isupper() else new


def add_typos(text: str, rng: random.Random) -> str:
    """Add one common misspelling or one or two keyboard typos to words of four letters or more."""
    words = text.split(" ")
    parts = [re.fullmatch(r"([A-Za-z]+)([^A-Za-z]*)", w) for w in words]
    known = [i for i, m in enumerate(parts) if m and m.group(1).lower() in MISSPELLINGS
             and MISSPELLINGS[m.group(1).lower()] != m.group(1).lower()]
    if known and rng.random() < 0.6:
        i = rng.choice(known)
        core, tail = parts[i].group(1), parts[i].group(2)
        words[i] = _match_case(core, MISSPELLINGS[core.lower()]) + tail
        return " ".join(words)
    candidates = [i for i, m in enumerate(parts) if m and len(m.group(1)) >= 4]
    for _ in range(1 if rng.random() < 0.88 else 2):
        if candidates:
            i = rng.choice(candidates)
            m = re.fullmatch(r"([A-Za-z]+)([^A-Za-z]*)", words[i])
            if m:
                words[i] = typo_word(m.group(1), rng) + m.group(2)
    return " ".join(words)


def chat_style(text: str, rng: random.Random) -> str:
    """Replace some words with chat short forms (you -> u, please -> pls)."""
    def short(m: re.Match) -> str:
        word = m.group(0)
        return CHAT_SHORT[word.lower()] if rng.random() < 0.7 else word

    pattern = r"\b(" + "|".join(re.escape(w) for w in CHAT_SHORT) + r")(?![\w'])"
    return re.sub(pattern, short, text, flags=re.IGNORECASE)


def _first_word(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.split(" ")[0].lower()) if text else ""


def _join(prefix: str | None, text: str, suffix: str | None, rng: random.Random) -> str:
    if prefix and _first_word(prefix) != _first_word(text):
        text = f"{prefix} {text}"
    if suffix:
        if text[-1:] in ".?!" or suffix[:1] in "!:":
            sep = " "
        else:
            sep = rng.choice((" ", ", ", "? ") if is_question(text) else (" ", ", ", ". ", " - "))
        text = f"{text}{sep}{suffix}"
    return text


def add_framing(text: str, rng: random.Random, context: str = "first") -> str:
    """Add polite / casual / urgent prefixes and suffixes; `context` is first, mid or switch."""
    r = rng.random()
    if context == "mid":
        prefix = rng.choice(MID_PREFIXES) if r < 0.3 else None
        suffix = rng.choice(POLITE_SUFFIXES + CASUAL_SUFFIXES) if rng.random() < 0.2 else None
        return _join(prefix, text, suffix, rng)
    if context == "switch":
        prefix = rng.choice(SWITCH_PREFIXES) if r < 0.4 else None
        suffix = rng.choice(POLITE_SUFFIXES) if rng.random() < 0.15 else None
        return _join(prefix, text, suffix, rng)
    if r < 0.42:
        return text
    if r < 0.70:
        pre = rng.choice(POLITE_PREFIXES) if rng.random() < 0.6 else None
        suf = rng.choice(POLITE_SUFFIXES) if pre is None or rng.random() < 0.4 else None
        return _join(pre, text, suf, rng)
    if r < 0.88:
        pre = rng.choice(CASUAL_PREFIXES) if rng.random() < 0.6 else None
        suf = rng.choice(CASUAL_SUFFIXES) if pre is None or rng.random() < 0.3 else None
        return chat_style(_join(pre, text, suf, rng), rng) if rng.random() < 0.5 else _join(pre, text, suf, rng)
    pre = rng.choice(URGENT_PREFIXES) if rng.random() < 0.4 else None
    suf = rng.choice(URGENT_SUFFIXES) if pre is None or rng.random() < 0.3 else None
    return _join(pre, text, suf, rng)


def strip_punctuation(text: str) -> str:
    """Drop sentence punctuation and apostrophes but keep ids, amounts, decimals and e-mail addresses."""
    text = re.sub(r"['\u2019\"()]", "", text)
    text = re.sub(r"[?!;]+", "", text)
    text = re.sub(r"[.,:]+(?=\s|$)", "", text)
    text = re.sub(r"\s-\s", " ", text)
    return text


def is_question(text: str) -> bool:
    """True when the text reads as a question."""
    return text.rstrip().endswith("?") or _first_word(text) in QUESTION_WORDS


def vary_punctuation(text: str, rng: random.Random) -> tuple[str, bool]:
    """Strip, repeat or drop the final punctuation; returns the text and whether it was stripped."""
    r = rng.random()
    if r < 0.16:
        return strip_punctuation(text), True
    if r < 0.24 and is_question(text):
        return text.rstrip("?.! ") + rng.choice(("??", "???", "?!", " ??")), False
    if r < 0.36:
        return text.rstrip(".!?"), False
    if r < 0.44 and is_question(text) and not text.endswith("?"):
        return text.rstrip(".!") + "?", False
    return text, False


def vary_case(text: str, rng: random.Random, stripped: bool = False) -> str:
    """Lowercase (often), unchanged, sentence case or, rarely, ALL CAPS."""
    r = rng.random()
    if stripped and r < 0.8 or r < 0.38:
        return text.lower()
    if r < 0.72:
        return text
    if r < 0.965:
        return text[:1].upper() + text[1:]
    return text.upper()


def vary(text: str, rng: random.Random, context: str = "first") -> str:
    """Apply stochastic surface variation: typos, framing, punctuation and casing."""
    text = " ".join(text.split())
    if rng.random() < 0.27:
        text = add_typos(text, rng)
    text = add_framing(text, rng, context)
    text, stripped = vary_punctuation(text, rng)
    text = " ".join(vary_case(text, rng, stripped).split())
    return text or "?"


def normalize(text: str) -> str:
    """Lowercase letters and digits only, single spaces (for conflict / near-duplicate checks)."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


# ---------------------------------------------------------------------------------------------- building
class RowPool:
    """Collects rows, dropping exact duplicates (same text and history) and near-duplicates (same text
    after normalisation) that belong to another group or label, so they cannot leak across splits."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self._exact: set[tuple[str, ...]] = set()
        self._owner: dict[tuple[str, ...], tuple[str, str | None]] = {}

    def add(self, row: Row) -> bool:
        """Add a row; False when it duplicates a kept row or near-duplicates another group's row."""
        history = tuple(t.text for t in row.history)
        exact = (row.text, *history)
        loose = (normalize(row.text), *(normalize(h) for h in history))
        owner = (row.label, row.group)
        if exact in self._exact or self._owner.get(loose, owner) != owner:
            return False
        self._exact.add(exact)
        self._owner[loose] = owner
        self.rows.append(row)
        return True


def fill_quota(pool: RowPool, quota: int, makers: Sequence[Callable[[], Row]]) -> int:
    """Call the makers round-robin until `quota` new rows are kept (or attempts run out)."""
    added = attempts = 0
    limit = quota * 25 + 100
    while makers and added < quota and attempts < limit:
        if pool.add(makers[attempts % len(makers)]()):
            added += 1
        attempts += 1
    return added


def quotas(labels: Sequence[str], n_rows: int) -> dict[str, int]:
    """Rows per label: clarify and none NON_AGENT_SHARE each, the rest split equally over the agents."""
    non_agents = [k for k in labels if k in NON_AGENT]
    agents = [k for k in labels if k not in NON_AGENT]
    out = {k: round(n_rows * NON_AGENT_SHARE) for k in non_agents}
    rest = n_rows - sum(out.values())
    for k in agents:
        out[k] = round(rest / max(1, len(agents)))
    return out


@dataclass
class Generator:
    """Builds rows from templates with one seeded random generator."""

    templates: dict[str, LabelTemplates]
    rng: random.Random

    @property
    def agents(self) -> list[str]:
        return [k for k in ordered_labels(self.templates) if k not in NON_AGENT]

    def text(self, phrase: str, context: str = "first") -> str:
        return vary(fill_slots(phrase, self.rng), self.rng, context)

    def single(self, label: str, phrase: str, group: str) -> Callable[[], Row]:
        return lambda: Row(self.text(phrase), label, [], group)

    def opener_turn(self, label: str, context: str = "first") -> Turn:
        return Turn(self.text(self.rng.choice(self.templates[label].openers), context), label)

    def other_agent(self, label: str) -> str | None:
        others = [k for k in self.agents if k != label and self.templates[k].openers]
        return self.rng.choice(others) if others else None

    def followup_history(self, label: str) -> list[Turn]:
        """1-2 earlier turns ending with an opener of `label` (or an opener and another follow-up)."""
        r = self.rng.random()
        other = self.other_agent(label)
        if r < 0.68:
            return [self.opener_turn(label)]
        if r < 0.83 and other:
            return [self.opener_turn(other), self.opener_turn(label, "switch")]
        if r < 0.91 and CLARIFY in self.templates:
            phrase = self.rng.choice(all_phrases(self.templates[CLARIFY]))[2]
            return [Turn(self.text(phrase), CLARIFY), self.opener_turn(label, "mid")]
        followup = self.rng.choice(self.templates[label].followups)
        return [self.opener_turn(label), Turn(self.text(followup, "mid"), label)]

    def followup(self, label: str, phrase: str, group: str) -> Callable[[], Row]:
        return lambda: Row(self.text(phrase, "mid"), label, self.followup_history(label), group)

    def switch(self, label: str, phrase: str, group: str) -> Callable[[], Row]:
        def make() -> Row:
            other = self.other_agent(label)
            history = [self.opener_turn(other)] if other else []
            if other and self.templates[other].followups and self.rng.random() < 0.3:
                history.append(Turn(self.text(self.rng.choice(self.templates[other].followups), "mid"), other))
            return Row(self.text(phrase, "switch"), label, history, group)
        return make


def all_phrases(t: LabelTemplates) -> list[tuple[str, str, str]]:
    """(intent id, group, phrase) for every base phrase of a label."""
    return [(i.id, f"{t.label}/{i.id}/{n:04d}", p) for i in t.intents for n, p in enumerate(i.phrases)]


def build_rows(templates: dict[str, LabelTemplates], seed: int, n_rows: int) -> list[Row]:
    """All rows (before the split), label by label: single turns, follow-ups, topic switches."""
    gen = Generator(templates, random.Random(seed))
    pool = RowPool()
    can_switch = sum(1 for k in gen.agents if templates[k].openers) >= 1
    for label, quota in quotas(ordered_labels(templates), n_rows).items():
        t = templates[label]
        phrases = all_phrases(t)
        n_follow = round(quota * FOLLOWUP_SHARE) if t.followups and t.openers else 0
        n_switch = round(quota * SWITCH_SHARE) if label != CLARIFY and can_switch else 0
        if label in gen.agents and not gen.other_agent(label):
            n_switch = 0
        fill_quota(pool, quota - n_follow - n_switch, [gen.single(label, p, g) for _, g, p in phrases])
        fill_quota(pool, n_follow, [gen.followup(label, p, f"{label}/followup/{n:04d}")
                                    for n, p in enumerate(t.followups)])
        fill_quota(pool, n_switch, [gen.switch(label, p, g) for _, g, p in phrases])
    return pool.rows


# ------------------------------------------------------------------------------------------------- split
def _hash(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}|{group}".encode()).hexdigest()


def is_followup_group(group: str | None) -> bool:
    """True for groups of follow-up phrases ("<label>/followup/<n>")."""
    return bool(group) and group.split("/")[1:2] == ["followup"]


def assign_groups(sizes: dict[str, int], seed: int) -> dict[str, str]:
    """Assign the groups of one stratum to splits by hashed order and cumulative row share (70/15/15)."""
    order = sorted(sizes, key=lambda g: (_hash(seed, g), g))
    total = sum(sizes.values())
    out, cum = {}, 0
    for g in order:
        frac = cum / total
        out[g] = "train" if frac < SPLIT_CUTS[0] else "val" if frac < SPLIT_CUTS[1] else "test"
        cum += sizes[g]
    if len(order) >= 3:
        if "test" not in out.values():
            out[order[-1]] = "test"
        if "val" not in out.values():
            train = [g for g in order if out[g] == "train"]
            out[train[-1]] = "val"
    return out


def split_rows(rows: list[Row], seed: int) -> dict[str, list[Row]]:
    """Split by group, stratified by (label, follow-up or not); rows are shuffled within each split."""
    strata: dict[tuple[str, bool], Counter] = defaultdict(Counter)
    for r in rows:
        strata[(r.label, is_followup_group(r.group))][r.group or r.text] += 1
    where: dict[str, str] = {}
    for key in sorted(strata):
        where.update(assign_groups(strata[key], seed))
    out: dict[str, list[Row]] = {s: [] for s in SPLITS}
    for r in rows:
        out[where[r.group or r.text]].append(r)
    for n, s in enumerate(SPLITS):
        random.Random(seed * 7919 + n).shuffle(out[s])
    return out


def group_overlap(a: list[Row], b: list[Row]) -> set[str]:
    """Groups present in both row lists."""
    return {r.group for r in a if r.group} & {r.group for r in b if r.group}


# -------------------------------------------------------------------------------------------------- card
def _kind(row: Row) -> str:
    if not row.history:
        return "single"
    return "followup" if is_followup_group(row.group) else "topic_switch"


def make_card(splits: dict[str, list[Row]], labels: list[str], seed: int, n_rows: int,
              templates: dict[str, LabelTemplates]) -> dict:
    """Counts per label and split, distinct groups, multi-turn counts and examples."""
    all_rows = [r for s in SPLITS for r in splits[s]]
    total = len(all_rows)
    card: dict = {"name": "shoprouter-synthetic", "seed": seed, "n_rows_requested": n_rows,
                  "total_rows": total, "labels": labels, "splits": {}, "per_label": {}}
    for s in SPLITS:
        rows = splits[s]
        card["splits"][s] = {
            "rows": len(rows), "groups": len({r.group for r in rows}),
            "multi_turn": sum(1 for r in rows if r.history),
            "per_label": {k: sum(1 for r in rows if r.label == k) for k in labels},
            "groups_per_label": {k: len({r.group for r in rows if r.label == k}) for k in labels},
        }
    for k in labels:
        rows = [r for r in all_rows if r.label == k]
        card["per_label"][k] = {
            "rows": len(rows), "share": round(len(rows) / max(1, total), 4),
            "groups": len({r.group for r in rows}), "multi_turn": sum(1 for r in rows if r.history),
            **{s: card["splits"][s]["per_label"][k] for s in SPLITS},
        }
    kinds = Counter(_kind(r) for r in all_rows)
    multi = kinds["followup"] + kinds["topic_switch"]
    card["multi_turn"] = {"total": multi, "followup": kinds["followup"], "topic_switch": kinds["topic_switch"],
                          "fraction": round(multi / max(1, total), 4)}
    card["shared_groups"] = {f"{a}-{b}": len(group_overlap(splits[a], splits[b]))
                             for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]}
    card["templates"] = {k: {"intents": len(t.intents), "phrases": t.n_phrases, "followups": len(t.followups),
                             "openers": len(t.openers)} for k, t in ((k, templates[k]) for k in labels)}
    card["examples"] = {k: examples(splits["train"], k) for k in labels}
    return card


def examples(rows: list[Row], label: str, n_single: int = 2, n_multi: int = 1) -> list[dict]:
    """A few example rows of one label: single turns, then multi-turn."""
    single = [r.to_dict() for r in rows if r.label == label and not r.history][:n_single]
    multi = [r.to_dict() for r in rows if r.label == label and r.history][:n_multi]
    return single + multi


def _md_row(cells: Iterable[object]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def card_markdown(card: dict) -> str:
    """A readable dataset card (markdown tables)."""
    labels, lines = card["labels"], []
    lines += ["# shoprouter synthetic routing dataset", "",
              f"Generated from the label templates with seed {card['seed']}: {card['total_rows']} rows, "
              f"{card['multi_turn']['total']} multi-turn ({card['multi_turn']['fraction']:.1%}: "
              f"{card['multi_turn']['followup']} follow-ups, {card['multi_turn']['topic_switch']} topic switches).",
              "Each row's `group` is the base phrase it came from; train/val/test are split by group "
              "(70/15/15 by rows, stratified by label), so no base phrase occurs in two splits.", "",
              "## Rows per label and split", "",
              _md_row(["label", *SPLITS, "total", "share", "groups", "multi-turn"]),
              _md_row(["---"] * (len(SPLITS) + 5))]
    for k in labels:
        p = card["per_label"][k]
        lines.append(_md_row([k, *(p[s] for s in SPLITS), p["rows"], f"{p['share']:.1%}", p["groups"],
                              p["multi_turn"]]))
    sp = card["splits"]
    lines.append(_md_row(["**all**", *(sp[s]["rows"] for s in SPLITS), card["total_rows"], "100%",
                          sum(sp[s]["groups"] for s in SPLITS), card["multi_turn"]["total"]]))
    lines += ["", "## Splits", "", _md_row(["split", "rows", "groups", "multi-turn"]), _md_row(["---"] * 4)]
    lines += [_md_row([s, sp[s]["rows"], sp[s]["groups"], sp[s]["multi_turn"]]) for s in SPLITS]
    lines += ["", "Shared groups between splits: "
              + ", ".join(f"{k}: {v}" for k, v in card["shared_groups"].items()), "",
              "## Templates", "", _md_row(["label", "intents", "phrases", "follow-ups", "openers"]),
              _md_row(["---"] * 5)]
    lines += [_md_row([k, *card["templates"][k].values()]) for k in labels]
    lines += ["", "## Examples (train)", "", _md_row(["label", "history", "text", "group"]), _md_row(["---"] * 4)]
    for k in labels:
        for ex in card["examples"][k]:
            hist = " / ".join(f"{h['text']} ({h['label']})" for h in ex.get("history", [])) or "-"
            lines.append(_md_row([k, hist, ex["text"], ex.get("group", "")]))
    lines += ["", "Surface variation: polite, casual and urgent framing, casing (lower, sentence, rare ALL CAPS), "
              "punctuation removal or repetition, keyboard typos and common misspellings. Exact duplicates "
              "(same text and history) and texts that normalise to another label's text are dropped.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- generate
def generate(out_dir: Path, seed: int = 0, templates_dir: Path | None = None, n_rows: int = 14000) -> dict:
    """Generate, split and write train/val/test JSONL, card.json and README.md; return the card."""
    if n_rows < 100:
        raise ShopRouterError(f"n_rows must be at least 100, got {n_rows}")
    templates = load_templates(templates_dir)
    labels = ordered_labels(templates)
    if len(labels) < 2:
        raise ShopRouterError("need templates for at least two labels")
    rows = build_rows(templates, seed, n_rows)
    splits = split_rows(rows, seed)
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            shared = group_overlap(splits[a], splits[b])
            assert not shared, f"groups shared between {a} and {b}: {sorted(shared)[:5]}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        write_rows(splits[s], out / f"{s}.jsonl")
    card = make_card(splits, labels, seed, n_rows, templates)
    (out / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "README.md").write_text(card_markdown(card), encoding="utf-8")
    return card
