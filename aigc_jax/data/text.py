"""Text datasets for autoregressive models: tokenizers and windowed token sources.

``shakespeare`` is the embedded Tiny Shakespeare (first 90% of the characters train, last 10% validation, as in
nanoGPT); any other name ending in ``.txt`` is a user's UTF-8 file with the same split.
A split is a `TokenWindows` source: example ``i`` is the window ``tokens[i*stride : i*stride + context + 1]``,
so training shuffles over every start position (stride 1) and validation walks non-overlapping windows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aigc_jax.core.errors import UserError
from aigc_jax.data import embedded

TRAIN_FRACTION = 0.9


@dataclass(frozen=True)
class CharTokenizer:
    """Characters of a corpus, sorted, each one id (nanoGPT's shakespeare_char scheme)."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Ids ``[len(text)]`` (int32): each character's index in ``chars``, found by a vectorised search of the
        vocabulary's code points (a corpus of a million characters in tens of milliseconds, not a Python loop)."""
        vocab = np.frombuffer(self.chars.encode("utf-32-le"), np.uint32)
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        known = np.isin(codes, vocab)
        if not known.all():
            missing = "".join(sorted(set(np.asarray(list(text))[~known].tolist())))
            raise UserError(f"the prompt has characters outside the model's vocabulary: {missing!r}")
        order = np.argsort(vocab, kind="stable")  # the identity for `from_text`'s sorted characters
        return order[np.searchsorted(vocab, codes, sorter=order)].astype(np.int32)

    def decode(self, ids) -> str:
        """Ids past the vocabulary (a model's padded vocab) decode to U+FFFD."""
        n = len(self.chars)
        return "".join(self.chars[i] if i < n else "\ufffd" for i in np.asarray(ids).reshape(-1).tolist())

    def to_json(self) -> dict:
        return {"kind": "char", "chars": self.chars}


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes, vocabulary 256."""

    vocab_size: int = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        """Ids past 255 (a model's padded vocab) decode to U+FFFD, as do invalid UTF-8 sequences."""
        replacement = "\ufffd".encode()
        return b"".join(bytes((i,)) if i < 256 else replacement
                        for i in np.asarray(ids).reshape(-1).tolist()).decode("utf-8", errors="replace")

    def to_json(self) -> dict:
        return {"kind": "byte"}


def tokenizer_from_json(data: dict):
    if data.get("kind") == "char":
        return CharTokenizer(data["chars"])
    if data.get("kind") == "byte":
        return ByteTokenizer()
    raise UserError(f"unknown tokenizer {data!r}")


def default_prompt(tokenizer) -> np.ndarray:
    """The prompt of samples drawn without one: a newline (the start of a line) if the vocabulary has it, else
    token 0."""
    try:
        return tokenizer.encode("\n")
    except UserError:
        return np.zeros(1, np.int32)


def save_tokenizer(tok, path: Path) -> None:
    path.write_text(json.dumps(tok.to_json()) + "\n")


class TokenWindows:
    """Random-access windows of ``context + 1`` tokens: ``{"tokens": int32 [context + 1]}`` per example."""

    def __init__(self, tokens: np.ndarray, context: int, stride: int, tokenizer):
        if len(tokens) < context + 1:
            raise UserError(f"the text split has {len(tokens)} tokens, fewer than context + 1 = {context + 1}")
        self.tokens = np.asarray(tokens, np.int32)
        self.context = context
        self.stride = stride
        self.tokenizer = tokenizer
        self._offsets = np.arange(context + 1)

    def __len__(self) -> int:
        return (len(self.tokens) - self.context - 1) // self.stride + 1

    def __getitems__(self, idx):
        starts = np.asarray(idx, np.int64) * self.stride
        return {"tokens": self.tokens[starts[:, None] + self._offsets[None, :]]}

    def __getitem__(self, i):
        return {"tokens": self.__getitems__([i])["tokens"][0]}


def read_corpus(name: str, path: str = "") -> str:
    if name == "shakespeare":
        p = Path(path) / "input.txt" if path else embedded.verified("tinyshakespeare/input.txt")
    else:
        p = Path(name).expanduser()
    if not p.is_file():
        raise UserError(f"text file {str(p)!r} not found")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{p} is not UTF-8 text ({e})") from None


def make_tokenizer(kind: str, text: str):
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "byte":
        return ByteTokenizer()
    raise UserError(f"unknown tokenizer {kind!r}: expected char or byte")


def text_source(name: str, split: str, context: int, tokenizer_kind: str, path: str = "",
                train_fraction: float = TRAIN_FRACTION) -> TokenWindows:
    """A split of a text corpus as token windows (train: every start position; test: non-overlapping): the first
    ``train_fraction`` of the tokens train, the rest test."""
    text = read_corpus(name, path)
    tok = make_tokenizer(tokenizer_kind, text)
    ids = tok.encode(text)
    cut = int(len(ids) * train_fraction)
    part = ids[:cut] if split == "train" else ids[cut:]
    return TokenWindows(part, context, 1 if split == "train" else context, tok)


class SyntheticTokens:
    """Uniform random tokens (for throughput runs of large configs); deterministic per index."""

    def __init__(self, vocab: int, context: int, size: int = 1 << 20, seed: int = 0):
        self.vocab, self.context, self.size, self.seed = vocab, context, size, seed
        self.tokenizer = ByteTokenizer() if vocab == 256 else None

    def __len__(self) -> int:
        return self.size

    def __getitems__(self, idx):
        rows = [np.random.default_rng([self.seed, int(i)]).integers(0, self.vocab, self.context + 1, dtype=np.int32)
                for i in idx]
        return {"tokens": np.stack(rows)}

    def __getitem__(self, i):
        return {"tokens": self.__getitems__([i])["tokens"][0]}
