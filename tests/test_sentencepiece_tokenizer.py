"""The SentencePiece conversion of the base tokenizer gives exactly the `tokenizers` library's ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoprouter.data import SPLITS, generate
from shoprouter.rows import read_rows

pytest.importorskip("sentencepiece")

FIXTURES = Path(__file__).parent / "fixtures" / "templates"
TRICKY = ["", " ", "   a  b   ", " leading", "trailing ", "a\tb\n\nc\r\n", "\n" * 40, "\t" * 35, " " * 70 + "x",
          "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n", "x<unused3>y<unused6241>", "<unused99999>",
          "<bos><eos><pad><unk><mask>[multimodal]", "<<start_of_turn>>", "<table><tr><td>1</td></tr></table>",
          "😀👍🏽👨‍👩‍👧 你好，世界 مرحبا Здравствуйте", "\x00\x01\x1b[0m\x7f\u200b\ufeff\U0010fffd", "▁▁ already ▁escaped",
          "-" * 50, "=" * 33 + "#" * 17, "ahahahahaha", "../../../../x", "|.|.|.|.|", "……… ㅋㅋㅋㅋ 哈哈哈哈",
          "e\u0301 ﬁ ＡＢＣ ℌ𝔢𝔩𝔩𝔬", "<0x41> <unk> ‹start_of_turn› (end_of_turn)"]


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("sp-gen")
    generate(out, seed=5, templates_dir=FIXTURES, n_rows=400)
    rows = [r for s in SPLITS for r in read_rows(out / f"{s}.jsonl")]
    found = [r.text for r in rows] + [t.text for r in rows for t in r.history]
    long = " ".join(found)[:2000]
    return found + TRICKY + [long, long.replace(" ", "  "), long.replace(" ", "\t")]


def test_sentencepiece_ids_equal_the_tokenizers_ids(tiny_base, texts):
    from shoprouter.model import FastTokenizer, SentencePieceTokenizer, load_fast_tokenizer

    fast = FastTokenizer(tiny_base)
    sp = load_fast_tokenizer(tiny_base)
    assert isinstance(sp, SentencePieceTokenizer)
    assert len(list(tiny_base.glob("tokenizer.sp*.model"))) == 1  # converted once, next to tokenizer.json
    assert len(texts) > 400
    for t in texts:
        for split in (False, True):
            for add in (False, True):
                assert sp.encode(t, add_special_tokens=add, split_special_tokens=split) == fast.encode(
                    t, add_special_tokens=add, split_special_tokens=split), (t, split, add)
    assert (sp.bos_token_id, sp.pad_token_id, sp.unk_token_id) == (fast.bos_token_id, fast.pad_token_id,
                                                                   fast.unk_token_id)
    tokens = ("<unused0>", "<bos>", "<start_of_turn>", "no-such-token", "▁the", "<0x41>", "\n", "[multimodal]")
    assert [sp.convert_tokens_to_ids(x) for x in tokens] == [fast.convert_tokens_to_ids(x) for x in tokens]
    cached = SentencePieceTokenizer(tiny_base)  # from the cache file this time
    assert [cached.encode(t) for t in texts[:50]] == [fast.encode(t) for t in texts[:50]]


def test_the_prompt_ids_are_unchanged(tiny_base, texts):
    from shoprouter.agents import default_registry
    from shoprouter.model import FastTokenizer, SentencePieceTokenizer
    from shoprouter.rows import Turn
    from shoprouter.scoring import Engine

    registry = default_registry()
    fast, sp = Engine(None, FastTokenizer(tiny_base), registry), Engine(None, SentencePieceTokenizer(tiny_base), registry)
    assert sp.prefix_ids == fast.prefix_ids
    assert sp.tree.paths == fast.tree.paths and sp.tree.probes == fast.tree.probes
    for t in texts[::4]:
        assert sp.encode(t, [Turn(t[:40], None)]).ids == fast.encode(t, [Turn(t[:40], None)]).ids, t


def test_unsupported_tokenizer_json_is_refused():
    from shoprouter.model import sentencepiece_model_from_tokenizer_json

    with pytest.raises(ValueError, match="byte-fallback BPE"):
        sentencepiece_model_from_tokenizer_json({"model": {"type": "WordPiece"}})
    with pytest.raises(ValueError, match="normalizer"):
        sentencepiece_model_from_tokenizer_json({"model": {"type": "BPE", "byte_fallback": True},
                                                 "normalizer": {"type": "NFKC"}})
