"""Scoring samples and comparing two sets of them, from Python: what `edlm eval samples` prints, plus the
per-sample scores that intervals of differences need.

    a = edlm.score(edlm_samples, "smollm2-135m")      # Samples, rows, or a samples JSONL file
    b = edlm.score(mdlm_samples, "smollm2-135m")
    edlm.compare(a, b)   # {"diff": gen-NLL a minus b, "ci": [lo, hi], "paired": True when the seeds match, ...}

Judge samples with a model that did not serve as their energy (an outside language model, or an AR run trained
apart): the energy's own model favours EDLM by construction.
"""

from __future__ import annotations

from pathlib import Path

from edlm.api.evaluators import evaluate_rows
from edlm.errors import EdlmError
from edlm.eval.stats import difference_interval, paired_difference_interval
from edlm.sampling.generate import Samples
from edlm.utils import quiet_default

SUMMARY = ("method", "steps", "k", "window", "corpus", "num", "gen_nll", "gen_nll_ci95", "gen_ppl", "entropy_nats",
           "seconds_per_sample")


def _rows(samples) -> tuple[list[dict], str | None]:
    from edlm.eval.genppl import read_samples

    if isinstance(samples, Samples):
        return samples.rows, None
    if isinstance(samples, (str, Path)):
        return read_samples(samples), str(samples)
    if isinstance(samples, list):
        return samples, None
    raise EdlmError(f"samples {type(samples).__name__}: give what Run.sample returns, its rows, or a samples "
                    "JSONL file")


def score(samples, evaluator=None, *, device="auto", batch_size: int = 16, max_tokens: int | None = None,
          eos: str = "mdlm", stride: int | None = None, quiet: bool | None = None,
          accept_data_change: bool = False, metrics="genppl", reference=None, mauve_features: str = "smollm2-135m",
          mauve_layer: int = -1, mauve_max_tokens: int | None = None, mauve_buckets: int | None = None,
          mauve_bootstrap: int = 50, mauve_seeds: int = 5, allow_circular: bool = False) -> dict:
    """The summary `edlm eval samples` prints (gen-PPL / gen-NLL with a 95% interval, entropy, distinct-n, speed)
    for `samples` (edlm.Samples, a list of rows, or a samples JSONL file), under `evaluator` ("true" for the
    ground-truth languages, "smollm2-135m", "gemma3-270m", "edlm:AR_RUN", "gguf:FILE", a Hugging Face name or
    folder). It also keeps "scores" (per sample: summed NLL, tokens) and "seeds", for edlm.compare.
    accept_data_change: an "edlm:AR_RUN" evaluator whose corpus changed since it was trained is a warning, not an
    error. allow_circular: score even samples whose energy was the evaluator's own model (refused by default: a
    model judging the candidates it picked measures the selection, not the text).

    metrics: genppl (the default), repetition (repeated n-grams within samples and across the set), mauve (MAUVE
    against `reference`: rows or a samples-style .jsonl / text file, default held-out windows of the samples'
    corpus of their length; features from `mauve_features` at `mauve_layer`; docs/evaluation.md)."""
    rows, path = _rows(samples)
    from edlm.eval.metrics import DEFAULT_METRICS, parse_metrics

    names = parse_metrics(metrics)
    if names != DEFAULT_METRICS or reference is not None:
        return _score_metrics(rows, path, names, evaluator, reference, device=device, batch_size=batch_size,
                              max_tokens=max_tokens, eos=eos, stride=stride, quiet=quiet,
                              accept_data_change=accept_data_change, mauve_features=mauve_features,
                              mauve_layer=mauve_layer, mauve_max_tokens=mauve_max_tokens, mauve_buckets=mauve_buckets,
                              mauve_bootstrap=mauve_bootstrap, mauve_seeds=mauve_seeds, allow_circular=allow_circular)
    if evaluator is None:
        raise EdlmError("the genppl metric needs an `evaluator` (e.g. smollm2-135m, or true on an exact language)")
    out = evaluate_rows(rows, evaluator, device=device, batch_size=batch_size, max_tokens=max_tokens, eos=eos,
                        stride=stride, show_progress=not quiet_default(quiet), keep_scores=True,
                        allow_circular=allow_circular, accept_data_change=accept_data_change)
    out["seeds"] = [r.get("seed") for r in rows]
    if path is not None:
        out["samples"] = path
    return out


def _score_metrics(rows, path, names, evaluator, reference, *, device, batch_size, max_tokens, eos, stride, quiet,
                   accept_data_change, mauve_features, mauve_layer, mauve_max_tokens, mauve_buckets,
                   mauve_bootstrap, mauve_seeds, allow_circular) -> dict:
    """score() with metrics beyond gen-PPL (edlm.eval.metrics.evaluate_samples)."""
    from edlm.api.evaluators import evaluate_samples
    from edlm.eval.mauve import MauveConfig
    from edlm.eval.metrics import read_reference
    from edlm.validate import at_least, existing_path

    if reference is not None and "mauve" not in names:
        raise EdlmError("`reference` is MAUVE's reference text: add mauve to `metrics`")
    for name, value in (("mauve_max_tokens", mauve_max_tokens), ("mauve_buckets", mauve_buckets)):
        at_least(f"`{name}`", value, 1, optional=True)
    at_least("`mauve_bootstrap`", mauve_bootstrap, 0)
    at_least("`mauve_seeds`", mauve_seeds, 1)
    cfg = MauveConfig(layer=mauve_layer, max_tokens=mauve_max_tokens, buckets=mauve_buckets,
                      bootstrap=mauve_bootstrap, seeds=mauve_seeds)
    ref_name = None
    if isinstance(reference, (str, Path)):
        existing_path("`reference`", reference)
        ref_name, reference = str(reference), read_reference(reference)
    out = evaluate_samples(rows, metrics=names, evaluator=evaluator, reference=reference, reference_name=ref_name,
                           mauve_features=mauve_features, mauve=cfg, device=device, batch_size=batch_size,
                           max_tokens=max_tokens, eos=eos, stride=stride, show_progress=not quiet_default(quiet),
                           allow_circular=allow_circular, accept_data_change=accept_data_change)
    if path is not None:
        out["samples"] = path
    return out


def compare(a: dict, b: dict, *, level: float = 0.95) -> dict:
    """gen-NLL of scored set `a` minus that of `b` (each from edlm.score, under one evaluator), with a bootstrap
    interval at `level` over samples. Paired when the sets have the same size and sample i of each came from the
    same seed (the same random stream: Run.sample with one seed and batch_size), else independent. An interval
    that contains 0 is no evidence of a difference. Entropy is reported beside it: a lower gen-NLL at lower
    entropy may be sharpening, not better sampling."""
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, dict) or "scores" not in s:
            raise EdlmError(f"compare: `{name}` is not a scored set; score it first: edlm.score(samples, evaluator)")
    if a.get("evaluator") != b.get("evaluator"):
        raise EdlmError(f"compare: the sets were scored by {a.get('evaluator')!r} and {b.get('evaluator')!r}; "
                        "gen-NLL is comparable only under one evaluator")
    sa, sb = a["scores"], b["scores"]
    seeds_a, seeds_b = a.get("seeds") or [], b.get("seeds") or []
    paired = (len(sa) == len(sb) and len(seeds_a) == len(sa) and seeds_a == seeds_b
              and all(x is not None for x in seeds_a))
    if paired:
        keep = [i for i in range(len(sa)) if sa[i][1] > 0 and sb[i][1] > 0]
        pick = lambda s: ([s[i][0] for i in keep], [s[i][1] for i in keep])  # noqa: E731
        if len(keep) < 2:
            raise EdlmError("compare: fewer than 2 scored pairs; sample more")
        d = paired_difference_interval(pick(sa), pick(sb), level=level)
    else:
        pa, pb = [s for s in sa if s[1] > 0], [s for s in sb if s[1] > 0]
        if len(pa) < 2 or len(pb) < 2:
            raise EdlmError("compare: each set needs at least 2 scored samples")
        d = difference_interval(([s[0] for s in pa], [s[1] for s in pa]), ([s[0] for s in pb], [s[1] for s in pb]),
                                level=level)
    return {**d, "paired": paired, "excludes_zero": not d["ci"][0] <= 0.0 <= d["ci"][1],
            "evaluator": a.get("evaluator"), "a": {k: a.get(k) for k in SUMMARY}, "b": {k: b.get(k) for k in SUMMARY}}
