"""The one place that knows the FunctionGemma-style text format, and sanitises user text.

A routing conversation is rendered as (prompt format 3)

    <bos><start_of_turn>developer
    You route shop support messages. Call one of these functions:<start_function_declaration>declaration:route_to_order_agent{description:<escape>…<escape>}<end_function_declaration>
    … one declaration per agent, then the two non-agent decisions …<end_of_turn>
    <start_of_turn>user
    {earlier turn}<end_of_turn><start_function_call>route_to_order_agent{}<end_function_call>{message}<end_of_turn><start_function_call>route_to_order_agent{}<end_function_call>

The two non-agent decisions are declared as functions too, so that every decision is a function call:
`clarify` -> `ask_clarifying_question{}` and `none` -> `decline_out_of_scope{}`. Their names start with
tokens other than `route`, so one next-token distribution after `<start_function_call>` separates the
three kinds of decision, and a second one after `route_to_` separates the agents.

Everything up to and including the user turn's opening is identical for every message (the *prefix*); a
message contributes only the *suffix* (its turns, each closed by `<end_of_turn>` and answered by a function
call).

Tokens. Format 2: FunctionGemma's tokenizer has each function marker as one token; base Gemma 3's splits
them into 3-7 plain-text pieces, which made the declarations prefix 420 tokens and put 18 template tokens
after every message. Where the tokenizer lacks a marker, it is encoded as one of Gemma 3's reserved
`<unusedN>` tokens instead (`marker_ids`), so every marker costs one token and can never come from user text.
Format 3: the model's answer follows the user's `<end_of_turn>` directly as a function call, without a
`<start_of_turn>model` turn around it or the `call:` keyword: 2 template tokens after a message instead of 8
(plus the 4 of `route_to_` that every message runs to read the agent), and 8 instead of 20 per earlier turn.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from .agents import CLARIFY, NONE, Registry
from .rows import Turn

BOS = "<bos>"
START_TURN, END_TURN = "<start_of_turn>", "<end_of_turn>"
START_DECL, END_DECL = "<start_function_declaration>", "<end_function_declaration>"
START_CALL, END_CALL = "<start_function_call>", "<end_function_call>"
ESC = "<escape>"
NON_AGENT_FUNCTIONS = {
    CLARIFY: ("ask_clarifying_question",
              "Too vague to route: ask what it is about."),
    NONE: ("decline_out_of_scope",
           "Not about our shop (weather, jokes, coding, chat): decline."),
}
# Gemma 3 reserved tokens standing in for the FunctionGemma markers its tokenizer lacks (prompt format 2)
RESERVED_MARKER_TOKENS = {START_DECL: "<unused0>", END_DECL: "<unused1>", START_CALL: "<unused2>",
                          END_CALL: "<unused3>", ESC: "<unused4>"}
TEMPLATE_MARKERS = (START_TURN, END_TURN, START_CALL, END_CALL, START_DECL, END_DECL, ESC)
_TEMPLATE_MARKER_RE = re.compile("(" + "|".join(re.escape(m) for m in TEMPLATE_MARKERS) + ")")
HISTORY_WINDOW = 3  # earlier user turns kept in the prompt
_MARKER_RE = re.compile(r"<\s*/?\s*[A-Za-z][A-Za-z0-9_|\-]*\s*>")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")


def sanitize(text: str) -> str:
    """Make user text inert: no turn, function or other `<…>` control markers, no control characters.

    NFKC folds look-alike brackets (＜ ﹤) into `<` first; then every `<name>` marker loses its angle
    brackets, becoming `(name)`, so it can never be read back as a control token.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL_RE.sub(" ", text)
    prev = None
    while prev != text:  # nested tricks like <<end_of_turn>end_of_turn>
        prev = text
        text = _MARKER_RE.sub(lambda m: "(" + m.group(0).strip("<> /") + ")", text)
    text = text.replace("<", "‹").replace(">", "›")
    return re.sub(r"[ \t]+", " ", text).strip()


def marker_ids(marker: str, tokenizer) -> list[int]:
    """Token ids of a template marker: the tokenizer's own single token, else its reserved stand-in."""
    ids = tokenizer.encode(marker, add_special_tokens=False)
    if len(ids) == 1 or marker not in RESERVED_MARKER_TOKENS:
        return ids
    reserved = tokenizer.convert_tokens_to_ids(RESERVED_MARKER_TOKENS[marker])
    if reserved is None or reserved == tokenizer.unk_token_id:
        return ids
    return [reserved]


def split_markers(text: str) -> list[tuple[str, bool]]:
    """Split template text into (piece, is_marker) around the prompt's control markers."""
    return [(p, p in TEMPLATE_MARKERS) for p in _TEMPLATE_MARKER_RE.split(text) if p]


def function_name(label: str, registry: Registry) -> str:
    """The function a decision calls: `route_to_<key>_agent`, or the non-agent function."""
    if label in NON_AGENT_FUNCTIONS:
        return NON_AGENT_FUNCTIONS[label][0]
    return registry.get(label).function


def label_of_function(name: str, registry: Registry) -> str | None:
    """The decision label a function name stands for, None when it is not declared."""
    for label in registry.labels:
        if function_name(label, registry) == name:
            return label
    return None


def _declaration(name: str, description: str) -> str:
    return f"{START_DECL}declaration:{name}{{description:{ESC}{description}{ESC}}}{END_DECL}"


def prefix_text(registry: Registry) -> str:
    """The part shared by every message: BOS, the developer turn declaring the functions, a user turn opening."""
    decls = [_declaration(a.function, a.description) for a in registry.agents]
    decls += [_declaration(name, desc) for name, desc in NON_AGENT_FUNCTIONS.values()]
    return (f"{BOS}{START_TURN}developer\nYou route shop support messages. Call one of these functions:{''.join(decls)}{END_TURN}\n{START_TURN}user\n")


def answer_text(label: str, registry: Registry) -> str:
    """The model's answer for a decision (after `<start_function_call>` is already in the prompt)."""
    return f"{function_name(label, registry)}{{}}{END_CALL}"


def suffix_text(text: str, history: Sequence[Turn] | None, registry: Registry) -> str:
    """The per-message part: earlier turns (last HISTORY_WINDOW) with the calls made for them, the message,
    and the opening of the model's call."""
    parts = []
    for turn in list(history or [])[-HISTORY_WINDOW:]:
        parts.append(f"{sanitize(turn.text)}{END_TURN}")
        if turn.label in registry.labels:
            parts.append(f"{START_CALL}{answer_text(turn.label, registry)}")
    parts.append(f"{sanitize(text)}{END_TURN}{START_CALL}")
    return "".join(parts)


_CALL_RE = re.compile(r"call:([A-Za-z_][A-Za-z0-9_]*)")


def parse_call(generated: str, registry: Registry) -> str | None:
    """Parse a generated answer (a bare `name{…}`, or FunctionGemma's `call:name{…}`) into a label; None if
    not declared."""
    match = _CALL_RE.search(generated) or re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", generated)
    return label_of_function(match.group(1), registry) if match else None
