"""The lean inference forward (runtime.py) against the Hugging Face Gemma 3 it replaces for routing."""

from __future__ import annotations

import json

import pytest
import torch

from shoprouter.agents import default_registry
from shoprouter.lora import LoraRouter
from shoprouter.model import load_base
from shoprouter.runtime import SuffixDecoder
from shoprouter.scoring import Engine


def _tiny_gemma(sliding_window: int, seed: int = 0):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=sliding_window,
                           layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                           max_position_embeddings=512, pad_token_id=0, bos_token_id=2, eos_token_id=1,
                           attn_implementation="eager")
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():  # random norm weights too, so a wrong (1 + w) or eps would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    return model


def _suffix_batch(suffixes):
    """Right-padded ids [B, L] of token lists, and the (row, col) of every real token."""
    width = max(map(len, suffixes))
    ids = torch.zeros(len(suffixes), width, dtype=torch.long)
    for i, s in enumerate(suffixes):
        ids[i, : len(s)] = torch.tensor(s)
    rows = torch.tensor([i for i, s in enumerate(suffixes) for _ in s])
    cols = torch.tensor([c for s in suffixes for c in range(len(s))])
    return ids, rows, cols


@pytest.mark.parametrize("packed", [False, True])  # True: per-token work on the real tokens only
@pytest.mark.parametrize("window", [512, 6])  # 6: the sliding window cuts into the prefix and the suffix
def test_lean_forward_equals_transformers_on_a_cached_prefix(window, packed):
    model = _tiny_gemma(window)
    body = model.model
    prefix = [2, 17, 45, 99, 120, 7, 8, 9, 10, 11]
    suffixes = [[30, 31, 32, 33, 34, 35, 36, 37], [40, 41, 42], [50, 51, 52, 53, 54]]
    with torch.no_grad():
        ref = []
        for s in suffixes:
            out = body(input_ids=torch.tensor([prefix + s]))
            ref.append(out.last_hidden_state[0, len(prefix):])
    lean = SuffixDecoder.from_module(body)
    cache = lean.encode_prefix(prefix)
    ids, rows, cols = _suffix_batch(suffixes)
    lengths = torch.tensor([len(s) for s in suffixes]) if packed else None
    got = lean.hidden_at(ids, cache, rows, cols, lengths)
    torch.testing.assert_close(got, torch.cat(ref), rtol=1e-4, atol=1e-4)


def test_router_lean_and_transformers_forward_agree(tiny_adapter, tiny_base):
    out, _ = tiny_adapter
    texts = ["where is my order", "my card was declined twice and the app crashed", "tell me a joke"]
    hist = [[], [{"text": "hello", "label": "clarify"}], []]
    hf = LoraRouter(adapter=out, base=str(tiny_base), dtype="float32", forward="hf", quantize=None).route_batch(
        texts, hist)
    lean = LoraRouter(adapter=out, base=str(tiny_base), dtype="float32", forward="lean", quantize=None).route_batch(
        texts, hist)
    for a, b in zip(hf, lean, strict=True):
        assert a.decision == b.decision
        assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-4


def test_lora_on_every_linear_layer_routes_the_same_in_both_forwards(tiny_base, tiny_data, tmp_path):
    """An adapter on the MLP layers too (train --targets), of another rank than the default (train --rank), is
    merged by the lean forward as PEFT applies it."""
    from shoprouter.model import LORA_LAYERS
    from shoprouter.train import TrainConfig, train

    cfg = TrainConfig(epochs=0.5, lr=5e-3, batch_size=16, base=str(tiny_base), val_rows=8,
                      target_modules=list(LORA_LAYERS), r=4, alpha=8)
    train(tiny_data, tmp_path, cfg, progress=False)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == set(LORA_LAYERS)
    assert (config["r"], config["lora_alpha"]) == (4, 8)
    texts = ["where is my order", "my card was declined twice and the app crashed"]
    hist = [[], [{"text": "hello", "label": "clarify"}]]
    hf = LoraRouter(adapter=tmp_path, base=str(tiny_base), dtype="float32", forward="hf", quantize=None)
    lean = LoraRouter(adapter=tmp_path, base=str(tiny_base), dtype="float32", quantize=None)
    assert lean.engine.model is None  # merged from the checkpoint files, not through PEFT
    for a, b in zip(hf.route_batch(texts, hist), lean.route_batch(texts, hist), strict=True):
        assert a.decision == b.decision
        assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-4


def test_lean_engine_batch_equals_one_by_one(tiny_base):
    b = load_base(str(tiny_base))
    engine = Engine(b.model, b.tokenizer, default_registry())
    engine.use_runtime()
    enc = [engine.encode(t) for t in ["a", "where is my parcel 5531 please", "refund?"]]
    together = engine.score(enc)
    alone = torch.cat([engine.score([e]) for e in enc])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together.sum(-1), torch.ones(3))


def test_embedding_rows_read_from_disk_equal_the_loaded_ones(tiny_base):
    from shoprouter.model import embedding_rows

    loaded = load_base(str(tiny_base)).model.model.embed_tokens.weight.detach()
    rows = embedding_rows(tiny_base, "model.embed_tokens.weight")
    assert rows is not None and rows.shape == loaded.shape and rows.dtype == loaded.dtype
    last = loaded.shape[0] - 1
    torch.testing.assert_close(rows[[0, 5, 2000, last, 5]], loaded[[0, 5, 2000, last, 5]])
    ids = torch.tensor([[3, 3, 7], [last, 0, 9]])  # any shape, repeats: as F.embedding
    torch.testing.assert_close(rows[ids], torch.nn.functional.embedding(ids, loaded))
    with pytest.raises(IndexError):
        rows[[last + 1]]
    assert embedding_rows(tiny_base, "no.such.tensor") is None
    assert embedding_rows(tiny_base / "missing", "model.embed_tokens.weight") is None


def test_bfloat16_copy_holds_the_cast_weights(tiny_base, tmp_path):
    from shoprouter.model import copy_as_dtype, embedding_rows

    copy = copy_as_dtype(tiny_base, tmp_path / "bf16", "bfloat16")
    assert (copy / "COMPLETE").is_file()
    rows = embedding_rows(copy, "model.embed_tokens.weight")
    assert rows.dtype == torch.bfloat16
    loaded = load_base(str(tiny_base)).model.model.embed_tokens.weight
    assert torch.equal(rows[list(range(50))], loaded[:50].to(torch.bfloat16))


def test_dtype_choice_is_checked():
    from shoprouter.errors import ShopRouterError
    from shoprouter.model import fast_dtype, resolve_dtype

    assert resolve_dtype("auto") == resolve_dtype(None) == fast_dtype()
    assert resolve_dtype("float32") == "float32"
    with pytest.raises(ShopRouterError, match="unknown dtype"):
        resolve_dtype("float64")


def test_router_loads_the_lean_forward_without_building_the_model(tiny_adapter, tiny_base):
    out, _ = tiny_adapter
    router = LoraRouter(adapter=out, base=str(tiny_base), dtype="float32")
    assert router.engine.model is None and router.engine._runtime is not None
    assert router.route("where is my order").decision in router.labels


def test_adapters_only_peft_can_merge_take_the_peft_path(tiny_adapter, tmp_path):
    import json
    import shutil

    from shoprouter.lora import read_lora

    out, _ = tiny_adapter
    assert read_lora(out) is not None
    for change in ({"use_dora": True}, {"target_modules": ["q_proj", "lm_head"]}, {"bias": "all"}):
        other = tmp_path / "-".join(change)
        shutil.copytree(out, other, ignore=shutil.ignore_patterns("checkpoint"))
        cfg = json.loads((other / "adapter_config.json").read_text()) | change
        (other / "adapter_config.json").write_text(json.dumps(cfg))
        assert read_lora(other) is None


def test_adapter_of_another_base_shape_is_refused(tiny_adapter):
    from shoprouter.errors import ShopRouterError
    from shoprouter.lora import read_lora

    out, _ = tiny_adapter
    lora = read_lora(out)
    name = next(iter(lora.factors))
    a, b = lora.factors[name]
    with pytest.raises(ShopRouterError, match="trained on another base"):
        lora.merged(name, torch.zeros(b.shape[0] + 1, a.shape[1]))
    torch.testing.assert_close(lora.merged(name, torch.zeros(b.shape[0], a.shape[1])), lora.scale * (b @ a))
    assert lora.merged("not.a.target.weight", torch.ones(2)).equal(torch.ones(2))


def test_fast_tokenizer_gives_the_transformers_ids(tiny_base, labelled_rows):
    from shoprouter.model import FastTokenizer, load_tokenizer

    hf, fast = load_tokenizer(tiny_base), FastTokenizer(tiny_base)
    texts = [r.text for r in labelled_rows] + ["<start_of_turn>user hi<end_of_turn>", "a  b\n\n\tc", "ünï ✓ 😀",
                                               "<unused0> <pad> <bos>", " leading", "trailing ", ""]
    for split in (True, False):
        for t in texts:
            assert fast.encode(t, add_special_tokens=False, split_special_tokens=split) == hf.encode(
                t, add_special_tokens=False, split_special_tokens=split), t
    assert (fast.bos_token_id, fast.pad_token_id, fast.unk_token_id) == (hf.bos_token_id, hf.pad_token_id, hf.unk_token_id)
    assert [fast.convert_tokens_to_ids(x) for x in ("<unused0>", "<bos>", "no-such-token")] == [
        hf.convert_tokens_to_ids(x) for x in ("<unused0>", "<bos>", "no-such-token")]


def test_padding_the_suffix_changes_no_score(tiny_adapter, tiny_base):
    out, _ = tiny_adapter
    texts = ["where is my order", "my card was declined twice and the app crashed", "tell me a joke"]
    unpadded = LoraRouter(adapter=out, base=str(tiny_base), dtype="float32", quantize=None, pad_to=1)
    exact = [unpadded.route(t) for t in texts]  # one at a time, no padding at all
    router = LoraRouter(adapter=out, base=str(tiny_base), dtype="float32", quantize=None, pad_to=16)
    widths = []
    hidden_at = router.engine._runtime.hidden_at

    def recording(ids, *args, **kwargs):
        widths.append(ids.shape[1])
        return hidden_at(ids, *args, **kwargs)

    router.engine._runtime.hidden_at = recording
    padded = [router.route(t) for t in texts]  # one message at a time
    batched = router.route_batch(texts, [[]] * len(texts))  # the lean runtime pads batches too
    assert widths and all(w % 16 == 0 for w in widths)
    for a, b, c in zip(exact, padded, batched, strict=True):
        assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-5
        assert max(abs(a.scores[k] - c.scores[k]) for k in a.scores) < 1e-5
    from shoprouter.errors import ShopRouterError

    with pytest.raises(ShopRouterError, match="pad_to"):
        LoraRouter(adapter=out, base=str(tiny_base), pad_to=0)


def test_only_bf16_attention_pads_by_default(tiny_adapter, tiny_base):
    from shoprouter.lora import PAD_TO

    out, _ = tiny_adapter
    int8 = LoraRouter(adapter=out, base=str(tiny_base), quantize="int8")
    assert int8.engine.attention_dtype == torch.float32 and int8.engine.pad_multiple == 1
    bf16 = LoraRouter(adapter=out, base=str(tiny_base), quantize=None, dtype="bfloat16")
    assert bf16.engine.attention_dtype == torch.bfloat16 and bf16.engine.pad_multiple == PAD_TO
    assert LoraRouter(adapter=out, base=str(tiny_base), quantize="int8", pad_to=4).engine.pad_multiple == 4


def test_batch_token_cap_splits_forwards_and_changes_no_score(tiny_adapter, tiny_base):
    out, _ = tiny_adapter
    texts = ["where is my order", "my card was declined twice and the app crashed", "tell me a joke", "refund",
             "the parcel says delivered but it is not here and the neighbours have not seen it", "hi"]
    ref = LoraRouter(adapter=out, base=str(tiny_base), dtype="float32", quantize=None, pad_to=1,
                     batch_tokens=10_000).route_batch(texts)
    cap = 24
    router = LoraRouter(adapter=out, base=str(tiny_base), dtype="float32", quantize=None, pad_to=1, batch_tokens=cap)
    shapes = []
    hidden_at = router.engine._runtime.hidden_at

    def recording(ids, *args, **kwargs):
        shapes.append(tuple(ids.shape))
        return hidden_at(ids, *args, **kwargs)

    router.engine._runtime.hidden_at = recording
    got = router.route_batch(texts)
    probe = max(len(p) for p in router.engine.tree.probes)
    assert len(shapes) > 1 and sum(rows for rows, _ in shapes) == len(texts)
    assert all(rows == 1 or rows * (width - probe) <= cap for rows, width in shapes)
    for a, b in zip(ref, got, strict=True):
        assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-5
    from shoprouter.errors import ShopRouterError

    with pytest.raises(ShopRouterError, match="batch_tokens"):
        LoraRouter(adapter=out, base=str(tiny_base), batch_tokens=0)


def test_smoothing_folds_exactly(monkeypatch):
    """SmoothQuant's rescaling alone (no int8) must not change the forward: 1/s folded into the norms, the up
    rows and the value rows, s into the weight columns."""
    from shoprouter import runtime
    from shoprouter.runtime import Linear

    monkeypatch.setattr(runtime, "can_pack", lambda dtype: False)  # plain weights, readable for smoothing
    body = _tiny_gemma(6).model
    prefix = [2, 17, 45, 99, 120, 7, 8, 9, 10, 11]
    ids, rows, cols = _suffix_batch([[30, 31, 32, 33, 34], [40, 41, 42]])
    lean = SuffixDecoder.from_module(body)
    before = lean.hidden_at(ids, lean.encode_prefix(prefix), rows, cols)
    for layer in lean.layers:  # made-up activation peaks with outlier channels: only exactness is tested here
        peaks = {n: torch.rand(getattr(layer, n).weight.shape[1]) * torch.tensor([1.0, 50.0]).repeat_interleave(
            getattr(layer, n).weight.shape[1] // 2) for n in ("qkv", "o", "gate_up", "down")}
        for n, w in lean.smooth(layer, peaks).items():
            setattr(layer, n, Linear(w, pack=False))
    after = lean.hidden_at(ids, lean.encode_prefix(prefix), rows, cols)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("reduce_range", [False, True])  # 8-bit inputs (VNNI CPUs) and 7-bit (older ones)
def test_int8_linear_quantises_each_token_on_its_own_scale(reduce_range):
    from shoprouter.runtime import Int8Linear

    torch.manual_seed(0)
    w = torch.randn(24, 32)
    x = torch.randn(3, 32) * torch.tensor([[1000.0], [1.0], [0.001]])  # one loud token among quiet ones
    linear = Int8Linear(w)
    linear.reduce_range = reduce_range
    got, exact = linear(x), x @ w.T
    rel = (got - exact).norm(dim=1) / exact.norm(dim=1)
    assert (rel < 0.03).all(), rel
    # each token is quantised the same way whatever else is in the call
    for i in range(3):
        assert torch.equal(linear(x[i:i + 1]), got[i:i + 1])
    assert torch.equal(linear(x[1:]), got[1:])


def test_int8_decoder_needs_calibration_ids():
    body = _tiny_gemma(512).model
    with pytest.raises(ValueError, match="calibration"):
        SuffixDecoder.from_module(body, quantize="int8")
    lean = SuffixDecoder.from_module(body, quantize="int8", calibration=[2, 17, 45, 99])
    exact = SuffixDecoder.from_module(body)
    prefix = [2, 17, 45, 99, 120, 7]
    ids, rows, cols = _suffix_batch([[30, 31, 32], [40, 41]])
    a = exact.hidden_at(ids, exact.encode_prefix(prefix), rows, cols)
    b = lean.hidden_at(ids, lean.encode_prefix(prefix), rows, cols)
    assert ((b - a).norm(dim=-1) / a.norm(dim=-1)).max() < 0.1
