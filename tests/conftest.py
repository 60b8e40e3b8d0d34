"""Shared fixtures: a small hand-written labelled set (not the realistic dev set) and its JSONL file."""

from __future__ import annotations

import random
import shutil
import uuid

import pytest

from shoprouter.rows import Row, Turn, write_rows
from shoprouter.session import open_store
from shoprouter.train import TrainConfig, train

from .tiny import make_tiny_base

SMALL_SET: dict[str, list[str]] = {
    "order": ["where is my order 5531", "track my package please", "when will my parcel arrive",
              "my order still hasn't shipped", "cancel my order 4410", "has my delivery been dispatched",
              "change the delivery address on my order", "the courier never delivered my parcel",
              "what is the delivery date for order 7781", "my package is late"],
    "search": ["do you have running shoes in size 10", "looking for a cheap blender", "do you sell hiking boots",
               "recommend a laptop under $800", "is the red hoodie in stock", "find me a gift for my dad",
               "show me winter jackets", "any wireless earbuds under 50 dollars", "do you carry nike trainers",
               "what dresses do you have in XL"],
    "details": ["what are the dimensions of the sofa", "is this jacket waterproof", "what material is the bag made of",
                "is the charger compatible with iphone 13", "what do reviews say about the kettle",
                "compare the two vacuum cleaners", "how long is the warranty on the tv", "what is the battery life",
                "how heavy is the stroller", "specs of the gaming monitor"],
    "returns": ["i want to return my shoes", "how do i get a refund", "the blender arrived damaged",
                "you sent me the wrong item", "can i exchange this for a bigger size", "what is your return policy",
                "where is my refund", "the lamp is broken, i want my money back", "send it back for a refund",
                "the shirt doesn't fit, can i return it"],
    "account": ["how do i change my email address", "reset my password", "delete my account",
                "enable two-factor authentication", "update my phone number", "i think my account was hacked",
                "how do i create an account", "change my saved address in my profile", "unsubscribe me from the newsletter",
                "change my username"],
    "payment": ["my card was declined", "i was charged twice", "do you accept paypal", "i need an invoice",
                "my promo code does not work", "how do i use a gift card", "billing address on my card is wrong",
                "there is a double charge on my statement", "can i pay in installments", "the coupon was not applied"],
    "technical": ["the app keeps crashing", "the website is not loading", "the checkout button does nothing",
                  "i get error 500 on the cart page", "login error when i sign in on the app", "the page is blank",
                  "the app freezes on my android phone", "the site shows a bug when i click pay",
                  "images are not loading on the website", "the app crashes when i open it"],
    "clarify": ["help", "hi", "i have a question", "it's not working", "hello", "can you help me",
                "there is a problem", "something is wrong", "question", "i need help with something"],
    "none": ["what is the weather tomorrow", "tell me a joke", "write a poem about cats", "who won the football match",
             "write python code to sort a list", "what is the capital of france", "give me a pasta recipe",
             "what movie should i watch tonight", "translate hello into german", "what is bitcoin worth today"],
}
SMALL_MULTI: list[tuple[str, str, str, str]] = [  # (history text, history label, text, label)
    ("where is my order 5531", "order", "ok then cancel it", "order"),
    ("do you have hoodies in XL", "search", "what about in blue", "search"),
    ("i want to return my shoes", "returns", "how long will the refund take", "returns"),
    ("my card was declined", "payment", "i tried another card too", "payment"),
]


def small_rows() -> list[Row]:
    rows = [Row(t, lab, group=f"{lab}/{i}") for lab, texts in SMALL_SET.items() for i, t in enumerate(texts)]
    rows += [Row(t, lab, [Turn(ht, hl)], group=f"multi/{i}") for i, (ht, hl, t, lab) in enumerate(SMALL_MULTI)]
    return rows


@pytest.fixture
def labelled_rows() -> list[Row]:
    """About a hundred short hand-written rows over the nine labels, a few with history."""
    return small_rows()


@pytest.fixture
def labelled_file(tmp_path, labelled_rows):
    """The small labelled set written as a JSONL data file."""
    path = tmp_path / "small.jsonl"
    write_rows(labelled_rows, path)
    return path


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    """A conversation store of each kind: SQLite in a temp file, Redis under a fresh key prefix
    (the Redis case needs the `redis_server` fixture of tests/service_support.py in the test module)."""
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'conversations.sqlite3'}")
    else:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
        server = request.getfixturevalue("redis_server")
        s = open_store(server.url + f"?prefix=t{uuid.uuid4().hex[:8]}:")
    yield s
    s.close()
@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    return make_tiny_base(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-data")
    rows = small_rows()
    random.Random(0).shuffle(rows)
    write_rows(rows, d / "train.jsonl")
    write_rows(rows[:18], d / "val.jsonl")
    return d


@pytest.fixture(scope="session")
def tiny_adapter(tiny_base, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-adapter")
    cfg = TrainConfig(epochs=2, lr=5e-3, batch_size=16, base=str(tiny_base), val_rows=18, checkpoint_every=3)
    log = train(tiny_data, out, cfg, progress=False)
    return out, log


