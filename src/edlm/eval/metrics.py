"""Sample metrics by name: what `edlm eval samples --metrics ...` and `edlm bench` compute for a set of samples.

    evaluate_samples(rows, metrics=("genppl", "repetition", "mauve"), evaluator="smollm2-135m")

- genppl: generative perplexity under an evaluator, entropy, distinct-n, speed (edlm.eval.genppl; the default);
- repetition: rep-n within samples and repeated n-grams across the set (edlm.eval.repetition);
- mauve: MAUVE against held-out text of the same length from the samples' corpus, or a reference you give
  (edlm.eval.mauve), with features from `mauve_features` (default smollm2-135m).
Entropy (the mean unigram entropy per sample) is always reported: no quality number reads without it.
"""

from __future__ import annotations

from pathlib import Path

from edlm.errors import EdlmError
from edlm.eval.mauve import MauveConfig

METRICS = ("genppl", "repetition", "mauve")
DEFAULT_METRICS = ("genppl",)
MAUVE_FEATURES = "smollm2-135m"


def parse_metrics(spec: str | list | tuple | None) -> tuple[str, ...]:
    """'mauve,repetition' (or a list) -> the metric names, checked."""
    if spec is None:
        return DEFAULT_METRICS
    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise EdlmError(f"`metrics` {spec!r}: choose from {', '.join(METRICS)} (comma-separated)")
    return tuple(dict.fromkeys(names))


def read_reference(path: str | Path) -> list[dict]:
    """Reference texts: a samples-style JSONL file (rows with ids and text) or a plain text file, one text a line
    (text only: features from a text model)."""
    from edlm.eval.genppl import read_samples

    path = Path(path)
    if path.suffix == ".jsonl":
        return read_samples(path)
    if not path.is_file():
        raise EdlmError(f"reference file {path} does not exist")
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if not lines:
        raise EdlmError(f"reference file {path} holds no text")
    return [{"ids": [], "text": ln} for ln in lines]


def evaluate_samples(rows: list[dict], *, metrics=DEFAULT_METRICS, evaluator=None, reference: list[dict] | None
                     = None, reference_name: str | None = None, mauve_features=MAUVE_FEATURES,
                     mauve: MauveConfig | None = None, device="cpu", batch_size: int = 16, load_run=None,
                     feature_cache: dict | None = None, accept_data_change: bool = False,
                     **genppl_options) -> dict:
    """The summary of `edlm eval samples --metrics ...` for rows in memory. genppl_options go to
    edlm.eval.genppl.evaluate_rows (max_tokens, eos, stride, show_progress, keep_scores). load_run opens an edlm
    run named as an evaluator (edlm.api passes it); feature_cache keeps the reference's MAUVE features between
    calls with the same reference rows. accept_data_change: an edlm run (evaluator or features) whose corpus
    changed since it was made loads, with a warning."""
    from edlm.eval import genppl
    from edlm.eval.evaluators import get_evaluator
    from edlm.eval.heldout import heldout_rows, shape_of
    from edlm.eval.stats import sample_stats
    from edlm.utils import pick_device

    metrics = parse_metrics(metrics)
    if not rows:
        raise EdlmError("no samples to evaluate (empty list of rows)")
    for i, r in enumerate(rows, 1):
        genppl.check_row(r, f"row {i}")
    if "genppl" in metrics and evaluator is None:
        raise EdlmError("the genppl metric needs an `evaluator` (e.g. smollm2-135m, or true on an exact language)")
    feat = None
    if "mauve" in metrics:  # everything MAUVE needs, before any scoring
        from edlm.eval.mauve import require_mauve

        require_mauve()
        if reference is None:
            corpus, length = shape_of(rows)
            reference = heldout_rows(corpus, len(rows), length)
            reference_name = f"{corpus} test split, {len(rows)} windows of {length} tokens"
        feat = get_evaluator(mauve_features, pick_device(device), load_run=load_run,
                             accept_data_change=accept_data_change)
    if "genppl" in metrics:
        out = genppl.evaluate_rows(rows, evaluator, device=device, batch_size=batch_size, load_run=load_run,
                                   accept_data_change=accept_data_change, **genppl_options)
    else:
        st = sample_stats(rows)
        out = {"num": len(rows), **{k: st[k] for k in ("entropy_nats", "entropy_bits", "seq_len", "method", "steps",
                                                        "k", "window", "corpus")}}
    if metrics != DEFAULT_METRICS:  # the default summary stays what it always was
        out["metrics"] = list(metrics)
    if "repetition" in metrics:
        from edlm.eval.repetition import repetition

        out.update(repetition([r["ids"] for r in rows]))
    if feat is not None:
        out.update(mauve_of_rows_named(rows, reference, feat, mauve or MauveConfig(), batch_size, reference_name,
                                       feature_cache))
    return out


def mauve_of_rows_named(rows, reference, feat, cfg, batch_size, reference_name, cache=None) -> dict:
    from edlm.eval.mauve import mauve_of_rows

    res = mauve_of_rows(rows, reference, feat, cfg, batch_size, cache)
    res["mauve_reference"] = reference_name or f"{len(reference)} reference texts"
    return res
