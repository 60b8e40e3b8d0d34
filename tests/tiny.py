"""A tiny randomly initialised Gemma 3 (real tokenizer) saved as a local base model, for fast unit tests."""

from __future__ import annotations

from pathlib import Path


def make_tiny_base(directory: Path, seed: int = 0, std: float = 0.02) -> Path:
    """Write a 2-layer Gemma 3 with the embedded model's tokenizer into `directory`; return it. `std`: the
    weights' initialisation (Gemma 3's default 0.02)."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from shoprouter.model import resolve_base

    if (directory / "config.json").is_file():
        return directory
    tok = AutoTokenizer.from_pretrained(str(resolve_base()))
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=512,
                           layer_types=["sliding_attention", "full_attention"], max_position_embeddings=2048,
                           pad_token_id=0, bos_token_id=2, eos_token_id=1, initializer_range=std)
    model = Gemma3ForCausalLM(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
