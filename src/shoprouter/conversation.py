"""Multi-turn conversations: route each message with its context, run the agent, store the turn.

`ConversationManager.send(conversation_id, text)` is the whole loop:

1. Route the message with the conversation's last turns (a bounded window, `history_window`) as history.
2. Use the context where the router alone cannot decide:
   - the previous reply asked for something (an order number, an e-mail) and this message supplies it:
     the same agent goes on with the earlier request plus this answer;
   - the previous reply was a clarification question: the answer picks one of the agents it named (by name,
     keyword or 'the first / second'), or the original message plus the answer is routed again;
   - a follow-up ('and when will it arrive?', 'ok cancel it then') that the router can't place goes to the
     agent of the previous turn;
   - a message the router places confidently with another agent is an explicit topic switch and is followed.
3. `clarify` asks a question naming the two or three likeliest agents; the second clarification in a row
   hands the conversation to a human (`repeated_clarification`), and so does a `none` decision
   (`out_of_scope`, or `low_confidence` when the router wasn't sure of that either). A hand-off stores a
   record with the transcript and the reason; later messages are kept for the human and not answered by agents.
4. A human takes a handed-off conversation from the console: `reply()` stores the human's message as a turn
   (`role="human"`, never routed and never part of the router's history), `resolve()` closes the hand-off
   (the agents answer the conversation's next message again) and `correct()` stores the right routing label
   for any customer turn (exported as training rows by `shoprouter data export-corrections`).
5. The turn, the conversation's new state and any hand-off are written in one atomic store operation that
   checks nobody else wrote in between (optimistic concurrency; on a conflict the message is processed
   again against the fresh conversation). A message id sent twice returns the stored turn, not a copy.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .agents import CLARIFY, NONE
from .errors import InputError
from .router import Decision, Router
from .rows import Turn, validate_text
from .session import (
    CUSTOMER,
    HANDED_OFF,
    HUMAN,
    HUMAN_DECISION,
    OPEN,
    RESOLVED,
    ConflictError,
    Conversation,
    ConversationStore,
    Correction,
    Handoff,
    TurnRecord,
    check_id,
    new_id,
    now_iso,
)
from .shop.agents import SLOT_KEYS, AgentContext, AgentReply, ShopAgents

HISTORY_WINDOW = 6  # earlier turns given to the router
MAX_CLARIFICATIONS = 2  # the second clarification in a row hands the conversation over
TOPIC_SWITCH_CONFIDENCE = 0.85  # a router decision this sure overrides a pending question of another agent
MAX_ATTEMPTS = 10  # optimistic-concurrency retries of one message
PENDING_TEXT_CHARS = 2000

# How a clarification question names each default agent ('Is this about your order, or a return or refund?').
OPTION_PHRASES = {
    "order": "your order", "search": "finding a product", "details": "a product's details",
    "returns": "a return or refund", "account": "your account", "payment": "a payment",
    "technical": "a technical problem with the site or app",
}
# Words that pick an option in an answer to a clarification question (besides the registry's keywords).
OPTION_WORDS = {
    "order": ("order", "delivery", "parcel", "package", "tracking", "shipping"),
    "search": ("find", "finding", "search", "buy", "looking", "product", "stock"),
    "details": ("details", "detail", "specs", "specifications", "reviews", "info", "information"),
    "returns": ("return", "returns", "refund", "refunds", "exchange", "send back"),
    "account": ("account", "profile", "password", "login details", "email address"),
    "payment": ("payment", "pay", "paid", "charge", "charged", "card", "billing", "invoice", "money"),
    "technical": ("technical", "tech", "bug", "error", "app", "website", "site", "crash", "problem with the site"),
}
ORDINALS = ((("first", "1st", "former", "the 1", "option 1", "number 1"), 0),
            (("second", "2nd", "the 2", "option 2", "number 2"), 1),
            (("third", "3rd", "the 3", "option 3", "number 3"), 2),
            (("latter", "last one", "the last"), -1))
_FOLLOWUP_START = re.compile(
    r"^\W*(and|also|ok|okay|so|then|but|what about|how about|what if|yes|yeah|yep|yup|no|nope|sure|please|"
    r"thanks|thank you|great|perfect|alright|fine|it|its|it's|that|this|those|these|they|them|same|the other|"
    r"the first|the second|another|one more|actually)\b", re.I)
_BACKREF = re.compile(r"\b(it|its|it's|that|this|them|they|those|these|one|there|same)\b", re.I)


def is_followup(text: str) -> bool:
    """A message that leans on the previous turn: starts with 'and / ok / what about / it ...', or is short and
    refers back ('when will it arrive?')."""
    if _FOLLOWUP_START.search(text):
        return True
    return len(text.split()) <= 8 and bool(_BACKREF.search(text))


def _ordinal(text: str, n: int) -> int | None:
    """The option a short answer picks by position ('the first one', 'option 2', 'the latter'), if any."""
    if n <= 0 or len(text.split()) > 8:
        return None
    for words, idx in ORDINALS:
        if any(_has_word(text, w) for w in words) and -n <= idx < n:
            return idx % n
    return None


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(word.lower())}(?![a-z0-9])", text.lower()) is not None


@dataclass
class Step:
    """The routing outcome for one message, after the conversation's context was applied."""

    decision: str
    confidence: float
    reason: str
    router: Decision
    agent_text: str = ""
    candidates: list[str] = field(default_factory=list)


@dataclass
class MessageResult:
    conversation_id: str
    turn: TurnRecord
    created: bool
    status: str
    handoff: Handoff | None = None

    def to_dict(self) -> dict:
        return {"conversation_id": self.conversation_id, "status": self.status, "replayed": not self.created,
                "turn": self.turn.to_dict(), "reply": self.turn.reply,
                "handoff": None if self.handoff is None else self.handoff.to_dict()}


class ConversationManager:
    """Routes, runs agents and stores turns for conversations in a store. Thread-safe."""

    def __init__(self, router: Router, store: ConversationStore, agents: ShopAgents | None = None,
                 history_window: int = HISTORY_WINDOW, inference_concurrency: int = 1):
        self.router = router
        self.store = store
        self.agents = agents if agents is not None else ShopAgents()
        self.history_window = history_window
        self._gate = threading.BoundedSemaphore(max(1, inference_concurrency))

    # ------------------------------------------------------------------------------------------ routing
    @property
    def agent_keys(self) -> list[str]:
        return self.router.registry.keys

    def route(self, text: str, history: Sequence[Turn] | None = None) -> Decision:
        with self._gate:
            return self.router.route(text, list(history or []))

    def route_batch(self, texts: Sequence[str], histories: Sequence[Sequence[Turn]] | None = None) -> list[Decision]:
        with self._gate:
            return self.router.route_batch(list(texts), histories)

    # ------------------------------------------------------------------------------------- conversations
    def start(self, customer_id: int | None = None, meta: dict | None = None,
              conversation_id: str | None = None) -> Conversation:
        return self.store.create(customer_id=customer_id, meta=meta, conversation_id=conversation_id)

    def get(self, conversation_id: str) -> Conversation:
        return self.store.get(conversation_id)

    def send(self, conversation_id: str, text: str, message_id: str | None = None) -> MessageResult:
        """Handle one customer message end to end; see the module doc."""
        text = validate_text(text)
        mid = check_id(message_id, "message id") if message_id is not None else new_id()
        for attempt in range(MAX_ATTEMPTS):
            conv = self.store.get(conversation_id, turns=self.history_window)
            if message_id is not None:
                old = self.store.find_turn(conversation_id, mid)
                if old is not None:
                    return MessageResult(conversation_id, old, False, conv.status)
            received = now_iso()
            start = time.perf_counter()
            turn, state, status, handoff = self._process(conv, text, mid)
            if conv.status == RESOLVED and status is None:
                status = OPEN  # the customer wrote again after a human resolved the hand-off
            turn.received_at = received
            turn.latency_ms = round((time.perf_counter() - start) * 1000, 2)
            try:
                stored, created = self.store.append_turn(conversation_id, turn, state=state, status=status,
                                                         handoff=handoff, expected_seq=conv.turn_count)
            except ConflictError:
                time.sleep(random.uniform(0.001, 0.01 * (attempt + 1)))
                continue
            final_status = status or conv.status
            if not created:
                return MessageResult(conversation_id, stored, False, final_status)
            if handoff is not None:
                handoff.seq = stored.seq
            return MessageResult(conversation_id, stored, True, final_status, handoff)
        raise ConflictError(f"conversation {conversation_id} is busy: too many concurrent messages, try again")

    # ------------------------------------------------------------------------------- the human support desk
    def reply(self, conversation_id: str, text: str, author: str | None = None,
              message_id: str | None = None) -> tuple[TurnRecord, bool]:
        """Store a human's reply to the customer as a turn (role `human`); (turn, created)."""
        text = validate_text(text)
        mid = check_id(message_id, "message id") if message_id is not None else new_id()
        ts = now_iso()
        turn = TurnRecord(seq=None, message_id=mid, text=text, decision=HUMAN_DECISION, confidence=1.0,
                          reason="human_reply", received_at=ts, role=HUMAN, author=author)
        return self.store.append_turn(conversation_id, turn)  # no expected_seq: it goes after whatever is there

    def resolve(self, conversation_id: str, author: str | None = None) -> list[Handoff]:
        """Close the conversation's open hand-offs; the agents answer its next message again."""
        return self.store.resolve_handoffs(conversation_id, author)

    def correct(self, conversation_id: str, seq: int, label: str, author: str | None = None,
                note: str = "") -> Correction:
        """Store the right routing label for a customer turn (the newest correction of a turn counts)."""
        if label not in self.router.labels:
            raise InputError(f"unknown label {label!r}; choose one of: {', '.join(self.router.labels)}")
        return self.store.set_correction(Correction(conversation_id, int(seq), label, "", author, now_iso(), note))

    def delete(self, conversation_id: str) -> bool:
        return self.store.delete(conversation_id)

    # --------------------------------------------------------------------------------------- the logic
    def _process(self, conv: Conversation, text: str, mid: str):
        state = {"last_agent": None, "clarify_streak": 0, "pending": None, "slots": {},
                 **{k: v for k, v in conv.state.items()}}
        state["slots"] = dict(state.get("slots") or {})
        history = [Turn(t.text, t.decision) for t in conv.turns if t.role == CUSTOMER]
        step = self._decide(text, history, state)
        d = step.router
        turn = TurnRecord(seq=None, message_id=mid, text=text, decision=step.decision,
                          agent=step.decision if step.decision in self.agent_keys else None,
                          function=self.router.registry.function_of(step.decision),
                          confidence=round(float(step.confidence), 6), reason=step.reason,
                          scores={k: round(float(v), 6) for k, v in d.scores.items()},
                          meta={"router_decision": d.decision, "router_confidence": round(float(d.confidence), 6),
                                "router_reason": d.reason,
                                "routing_ms": None if d.latency_ms is None else round(d.latency_ms, 2)})
        status = None
        handoff = None
        for e in re.findall(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", text)[:1]:
            state["slots"]["email"] = e.lower()

        if conv.status == HANDED_OFF:
            turn.reply = AgentReply(None, "handed_off", "A colleague has this conversation and will reply here "
                                    "shortly.", {}, []).to_dict()
            return turn, state, None, None

        if step.decision in self.agent_keys:
            reply = self.agents.handle(step.decision, step.agent_text or text,
                                       AgentContext(conv.customer_id, dict(state["slots"])))
            turn.reply = reply.to_dict()
            for k in SLOT_KEYS:
                if reply.data.get(k) is not None:
                    state["slots"][k] = reply.data[k]
            state["last_agent"] = step.decision
            state["clarify_streak"] = 0
            state["pending"] = ({"kind": "missing", "agent": step.decision, "missing": reply.missing,
                                 "options": [str(o) for o in reply.data.get("option_texts") or []][:10],
                                 "text": (step.agent_text or text)[-PENDING_TEXT_CHARS:]} if reply.missing else None)
            return turn, state, None, None

        if step.decision == CLARIFY:
            streak = int(state.get("clarify_streak") or 0) + 1
            state["clarify_streak"] = streak
            if streak < MAX_CLARIFICATIONS:
                question = self.question(step.candidates)
                original = step.agent_text or text
                state["pending"] = {"kind": "clarify", "candidates": step.candidates, "question": question,
                                    "text": original[-PENDING_TEXT_CHARS:]}
                turn.reply = AgentReply(None, "clarify", question, {"candidates": step.candidates},
                                        ["topic"]).to_dict()
                return turn, state, None, None
            reason = "repeated_clarification"
        elif d.decision == NONE and d.confidence < self.router.clarify_threshold:
            reason = "low_confidence"
        else:
            reason = "out_of_scope"
        handoff = self._handoff(conv, turn, reason)
        state["pending"] = None
        state["clarify_streak"] = 0
        state["handoff_reason"] = reason
        turn.reply = AgentReply(None, "handoff", HANDOFF_TEXT[reason], {"reason": reason, "handoff_id": handoff.id},
                                []).to_dict()
        status = HANDED_OFF
        return turn, state, status, handoff

    def _decide(self, text: str, history: list[Turn], state: dict) -> Step:
        d = self.route(text, history)
        keys = self.agent_keys
        pending = state.get("pending") or None
        last = state.get("last_agent")
        threshold = self.router.clarify_threshold

        if pending and pending.get("kind") == "missing" and pending.get("agent") in keys:
            agent = pending["agent"]
            switch = d.decision in keys and d.decision != agent and d.confidence >= TOPIC_SWITCH_CONFIDENCE
            options = pending.get("options") or []
            idx = _ordinal(text, len(options)) if options and not switch else None
            if idx is not None:  # 'the first one' after 'which order: #10268, #10227 or #10093?'
                return Step(agent, d.scores.get(agent, 0.0), "context", d,
                            pending["text"] + "\n" + text + "\n" + options[idx])
            if not switch and (self.agents.fills_missing(text, pending.get("missing") or [])
                               or (d.decision not in keys and is_followup(text))):
                return Step(agent, d.scores.get(agent, 0.0), "context", d, pending["text"] + "\n" + text)

        if pending and pending.get("kind") == "clarify":
            cands = [c for c in pending.get("candidates") or [] if c in keys]
            combined = pending.get("text", "") + "\n" + text
            if d.decision in cands:
                return Step(d.decision, d.confidence, "clarification_answer", d, combined)
            pick = self._pick_option(text, cands)
            if pick is None and d.decision not in keys:  # 'the payment' names an agent the question did not offer
                pick = self._pick_option(text, keys, ordinals=False)
            if pick is not None:
                return Step(pick, d.scores.get(pick, 0.0), "clarification_answer", d, combined)
            if d.decision in keys and d.confidence >= threshold:
                return Step(d.decision, d.confidence, d.reason, d, text)  # a new topic
            d2 = self.route(combined[-2000:].strip(), history)
            if d2.decision in keys:
                return Step(d2.decision, d2.confidence, "clarification_answer", d, combined)
            return Step(CLARIFY, d.confidence, d.reason, d, combined,
                        self._candidates(d, d2, text=combined, prefer=cands))

        if d.decision in keys:
            return Step(d.decision, d.confidence, d.reason, d, text)
        if last in keys and is_followup(text):
            # the router can't place it on its own, but it leans on the previous turn
            return Step(last, d.scores.get(last, 0.0), "context", d, text)
        if d.decision == CLARIFY:
            return Step(CLARIFY, d.confidence, d.reason, d, text, self._candidates(d, text=text))
        return Step(d.decision, d.confidence, d.reason, d, text)

    def _keyword_hits(self, text: str, keys: Sequence[str]) -> dict[str, int]:
        """How many words naming each agent the text has (registry keywords and the option words)."""
        low = text.lower()
        hits = {}
        for c in keys:
            words = set(OPTION_WORDS.get(c, ())) | {c}
            try:
                words |= set(self.router.registry.get(c).keywords)
            except Exception:  # pragma: no cover - unknown keys are filtered by the callers
                pass
            n = sum(1 for w in words if _has_word(low, w))
            phrase = OPTION_PHRASES.get(c)
            if phrase and phrase.lower() in low:
                n += 10
            hits[c] = n
        return hits

    def _pick_option(self, text: str, cands: Sequence[str], ordinals: bool = True) -> str | None:
        """The agent an answer picks: by position ('the second one') or by naming exactly one of them."""
        if ordinals:
            idx = _ordinal(text, len(cands))
            if idx is not None:
                return cands[idx]
        hits = {k: v for k, v in self._keyword_hits(text, cands).items() if v}
        if not hits:
            return None
        ranked = sorted(hits.items(), key=lambda kv: -kv[1])
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            return None
        return ranked[0][0]

    def _candidates(self, *decisions: Decision, text: str = "", prefer: list[str] | None = None) -> list[str]:
        """The two or three likeliest agents: by the router's scores; where those are flat (a router that
        chose clarify may say nothing about the agents), by the words in the message that name an agent."""
        keys = self.agent_keys
        total = {k: 0.0 for k in keys}
        for d in decisions:
            for k in keys:
                total[k] += float(d.scores.get(k, 0.0))
        hits = self._keyword_hits(text, keys) if text else {k: 0 for k in keys}
        pref = set(prefer or [])
        flat = max(total.values()) - min(total.values()) < 0.05 * max(1, len(decisions))
        if flat:
            ranked = sorted(keys, key=lambda k: (-hits[k], k not in pref, keys.index(k)))
            named = [k for k in ranked if hits[k] > 0]
            return (named[:3] if len(named) >= 2 else ranked[:2])
        ranked = sorted(keys, key=lambda k: (-total[k], -hits[k], k not in pref, keys.index(k)))
        out = ranked[:2]
        third = ranked[2] if len(ranked) > 2 else None
        if third and total[third] > 0 and total[third] >= 0.5 * total[ranked[1]] and (
                hits[third] > 0 or total[third] > 1.5 * min(total.values())):
            out.append(third)
        return out

    def question(self, candidates: list[str]) -> str:
        """'Is this about your order, or a return or refund?'"""
        names = [OPTION_PHRASES.get(c) or f"the {c.replace('_', ' ')} team" for c in candidates]
        if len(names) == 1:
            return f"Is this about {names[0]}?"
        if len(names) == 2:
            return f"Is this about {names[0]}, or {names[1]}?"
        return f"Is this about {', '.join(names[:-1])}, or {names[-1]}?"

    def _handoff(self, conv: Conversation, turn: TurnRecord, reason: str) -> Handoff:
        full = self.store.get(conv.id)
        transcript = [{"seq": t.seq, "role": t.role, "text": t.text, "decision": t.decision,
                       "confidence": t.confidence, "reply": (t.reply or {}).get("text")} for t in full.turns]
        transcript.append({"seq": None, "role": CUSTOMER, "text": turn.text, "decision": turn.decision,
                           "confidence": turn.confidence, "reply": None})
        return Handoff(id=new_id(), conversation_id=conv.id, reason=reason, seq=None, created_at=now_iso(),
                       customer_id=conv.customer_id, transcript=transcript, note=HANDOFF_NOTES[reason])


HANDOFF_TEXT = {
    "out_of_scope": "I'm sorry, that's not something I can help with here: I can help with orders, products, "
                    "returns, your account, payments and technical problems with our shop. I've passed your "
                    "message to a colleague, who will reply in this conversation.",
    "low_confidence": "I'm not sure I understood that, so I've passed our conversation to a colleague, who will "
                      "reply here shortly.",
    "repeated_clarification": "Sorry, I still couldn't work out what you need. I've passed our conversation to a "
                              "colleague, who will reply here shortly.",
}
HANDOFF_NOTES = {
    "out_of_scope": "The router judged the message out of scope for the support agents.",
    "low_confidence": "The router was not confident about any agent, nor that the message is out of scope.",
    "repeated_clarification": "Two clarification questions in a row did not resolve what the customer needs.",
}
