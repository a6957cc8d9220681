"""MAUVE between samples and held-out text, with features from a language model we already ship.

MAUVE (Pillutla et al., "MAUVE: Measuring the Gap Between Neural Text and Human Text using Divergence Frontiers",
NeurIPS 2021; JMLR 2023) embeds both sets of texts with a language model, quantises the embeddings jointly (PCA to
90% of the variance, k-means into ~n/10 clusters), and integrates the divergence frontier of the two cluster
histograms: 1 = the same distribution, near 0 = disjoint. We use the maintained implementation, the `mauve-text`
package (`pip install 'edlm[eval]'`), on features computed here:

- text evaluators (smollm2-135m, gemma3-270m, any Hugging Face model): the hidden state at the LAST token of the
  sample's text (read after the evaluator's BOS), at `layer` (-1: the final, normed state the output layer reads;
  MAUVE's own default is GPT-2 large's final state), the text cut to `max_tokens` evaluator tokens;
- an edlm AR run (edlm:RUN): its trunk's output at the last position after reading the sample's ids.

The number is read against its own noise: `mauve_ci95` is a percentile bootstrap over samples (both sets resampled
with replacement, `bootstrap` replicates). The bootstrap is biased: duplicated points shift a replicate's cluster
histograms, and for two sets close to each other the replicates fall below the full sets' value (held-out text
against held-out text: 0.961, its interval [0.689, 0.934]), so read it as a rough sampling spread that need not
contain the value; the spread over independent draws (benchmarks/mauve_stability.py) is the honest one.
`mauve_seeds`: the spread over k-means seeds on the full sets. MAUVE is only comparable at equal numbers of samples,
equal text length and the same feature model and settings: the JSON records all of them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch

from edlm.errors import EdlmError
from edlm.eval.scoring import EVAL_EXTRA


@dataclass(frozen=True)
class MauveConfig:
    layer: int = -1
    """hidden state to take (-1: the last layer's, what the output layer reads)"""
    max_tokens: int | None = None
    """feature-model tokens per text (None: the model's context)"""
    buckets: int | None = None
    """k-means clusters (None: MAUVE's default, max(2, n / 10) for n samples per set)"""
    scaling: float = 5.0
    """MAUVE's scaling constant c (the package default)"""
    explained_variance: float = 0.9
    """PCA keeps this share of the variance before k-means (the package default)"""
    kmeans_redo: int = 5
    kmeans_iter: int = 500
    seed: int = 25
    """the package's default k-means seed"""
    bootstrap: int = 50
    """replicates of the bootstrap interval over samples (0: none)"""
    seeds: int = 5
    """k-means seeds on the full sets for `mauve_seeds` (1: only `seed`)"""

    def __post_init__(self):
        if self.buckets is not None and self.buckets < 2:
            raise EdlmError(f"MAUVE needs at least 2 clusters (`mauve_buckets` {self.buckets})")
        if self.bootstrap < 0 or self.seeds < 1 or self.kmeans_redo < 1 or self.kmeans_iter < 1:
            raise EdlmError("MAUVE: `mauve_bootstrap` >= 0, `mauve_seeds` >= 1 and k-means redo/iterations >= 1")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise EdlmError(f"`mauve_max_tokens` must be >= 1, not {self.max_tokens}")
        if not 0 < self.explained_variance < 1:
            raise EdlmError(f"MAUVE's explained variance must be in (0, 1), not {self.explained_variance}")


def require_mauve():
    if importlib.util.find_spec("mauve") is None or importlib.util.find_spec("faiss") is None:
        raise EdlmError(f"MAUVE needs the mauve-text package (with faiss-cpu and scikit-learn): run `{EVAL_EXTRA}`")
    import mauve

    return mauve


# -- features ----------------------------------------------------------------------------------------------
def features(ev, rows: list[dict], cfg: MauveConfig = MauveConfig(), batch_size: int = 16) -> np.ndarray:
    """(n, D) float32 features of the rows under evaluator `ev` (module doc)."""
    from edlm.eval.evaluators import EdlmAREvaluator
    from edlm.eval.hf_evaluator import HFEvaluator

    if isinstance(ev, HFEvaluator):
        seqs = [ev.encode(t) for t in ev._texts(rows)]
        limit = cfg.max_tokens or ev.context
        seqs = [s[:limit] for s in seqs]
        return _last_states(seqs, batch_size, ev.device, lambda x, am: _hf_states(ev, x, am, cfg.layer))
    if isinstance(ev, EdlmAREvaluator):
        if cfg.layer != -1:
            raise EdlmError(f"features of an edlm AR run come from its last layer only (`mauve_layer` -1, not "
                            f"{cfg.layer})")
        limit = min(cfg.max_tokens or ev.max_len, ev.max_len - 1)
        seqs = [[ev.bos] + [int(i) for i in r["ids"]][:limit] for r in rows]
        return _last_states(seqs, batch_size, ev.device, lambda x, am: ev.model.trunk(x))
    raise EdlmError(f"evaluator {ev.name!r} has no hidden states to take MAUVE features from: give a language "
                    "model (smollm2-135m, gemma3-270m, a Hugging Face model or edlm:AR_RUN)")


def _hf_states(ev, x, am, layer):
    out = ev.model.get_decoder()(input_ids=x, attention_mask=am, output_hidden_states=True)
    hs = out.hidden_states
    if not -len(hs) <= layer < len(hs):
        raise EdlmError(f"`mauve_layer` {layer}: {ev.name} has hidden states 0..{len(hs) - 1} (or -1 for the last)")
    return hs[layer]


@torch.no_grad()
def _last_states(seqs: list[list[int]], batch_size: int, device, states) -> np.ndarray:
    """The state at each sequence's last token; batches of equal length (no padding reaches a causal model's
    last real position, but equal lengths keep every backend exact)."""
    if any(len(s) == 0 for s in seqs):
        raise EdlmError("a sample has no token to take MAUVE features from (an empty text?)")
    out: list = [None] * len(seqs)
    by_len: dict = {}
    for i, s in enumerate(seqs):
        by_len.setdefault(len(s), []).append(i)
    for _n, idx in sorted(by_len.items()):
        for j in range(0, len(idx), batch_size):
            chunk = idx[j:j + batch_size]
            x = torch.tensor([seqs[i] for i in chunk], dtype=torch.long, device=device)
            h = states(x, torch.ones_like(x))[:, -1].float().cpu().numpy()
            for k, i in enumerate(chunk):
                out[i] = h[k]
    return np.stack(out).astype(np.float32)


# -- the score ---------------------------------------------------------------------------------------------
@contextmanager
def _quiet_stderr():
    """faiss warns on stderr from C++ whenever k-means has under 39 points per cluster, which MAUVE's n/10 clusters
    always have (the package's own setting): once per call, 50 times per bootstrap. Silence the file descriptor."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _one(mauve, p: np.ndarray, q: np.ndarray, cfg: MauveConfig, seed: int):
    buckets = cfg.buckets or "auto"
    with _quiet_stderr():
            return mauve.compute_mauve(p_features=p, q_features=q, num_buckets=buckets,
                                   kmeans_num_redo=cfg.kmeans_redo, kmeans_max_iter=cfg.kmeans_iter,
                                   kmeans_explained_var=cfg.explained_variance, mauve_scaling_factor=cfg.scaling,
                                   seed=seed, verbose=False)


def _unit(v) -> float:
    return min(1.0, max(0.0, float(v)))  # the area under the frontier can round a few ulps past 1


def mauve_score(p: np.ndarray, q: np.ndarray, cfg: MauveConfig = MauveConfig()) -> dict:
    """MAUVE of feature sets p (samples, (n, D)) and q (reference, (m, D)), with its bootstrap interval and the
    spread over k-means seeds."""
    if len(p) < 2 or len(q) < 2:
        raise EdlmError(f"MAUVE needs at least 2 samples and 2 reference texts (got {len(p)} and {len(q)})")
    mauve = require_mauve()
    t0 = time.perf_counter()
    main = _one(mauve, p, q, cfg, cfg.seed)
    seeds = [_unit(main.mauve)] + [_unit(_one(mauve, p, q, cfg, cfg.seed + s).mauve) for s in range(1, cfg.seeds)]
    rng = np.random.default_rng(cfg.seed)
    boot = []
    for b in range(cfg.bootstrap):
        ip, iq = rng.integers(0, len(p), len(p)), rng.integers(0, len(q), len(q))
        boot.append(_unit(_one(mauve, p[ip], q[iq], cfg, cfg.seed + 1000 + b).mauve))
    return {"mauve": _unit(main.mauve), "mauve_star": _unit(main.mauve_star),
            "frontier_integral": float(main.frontier_integral),
            "mauve_ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))] if len(boot) > 1 else None,
            "mauve_seeds": {"n": len(seeds), "mean": float(np.mean(seeds)), "std": float(np.std(seeds)),
                            "min": float(np.min(seeds)), "max": float(np.max(seeds))},
            "mauve_buckets": int(main.num_buckets), "mauve_seconds": time.perf_counter() - t0}


def mauve_of_rows(rows: list[dict], reference: list[dict], ev, cfg: MauveConfig = MauveConfig(),
                  batch_size: int = 16, cache: dict | None = None) -> dict:
    """MAUVE of sample rows against reference rows with features from evaluator `ev`; the JSON says everything it
    depends on (numbers of texts, feature model, layer, max tokens, clusters, scaling, seeds). cache: a dict that
    keeps the reference's features across calls (a sweep compares every setting with the same reference)."""
    require_mauve()
    t0 = time.perf_counter()
    key = (ev.name, cfg.layer, cfg.max_tokens, len(reference), id(reference))
    q = None if cache is None else cache.get(key)
    if q is None:
        q = features(ev, reference, cfg, batch_size)
        if cache is not None:
            cache[key] = q
    p = features(ev, rows, cfg, batch_size)
    feat_s = time.perf_counter() - t0
    out = mauve_score(p, q, cfg)
    settings = {k: v for k, v in asdict(cfg).items()}
    settings["max_tokens"] = cfg.max_tokens or getattr(ev, "context", None)
    return {**out, "mauve_num_samples": len(rows), "mauve_num_reference": len(reference),
            "mauve_features": {"model": ev.name, "dim": int(p.shape[1]), "layer": cfg.layer,
                               "max_tokens": settings["max_tokens"], "seconds": feat_s},
            "mauve_settings": settings}
