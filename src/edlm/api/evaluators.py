"""Evaluators named the way users name them, edlm runs included: "true", "smollm2-135m", "gemma3-270m", a Hugging
Face name or folder, "gguf:FILE", or "edlm:AR_RUN" (an AR run folder, loaded here). edlm.eval does the scoring.

    ev = get_evaluator("edlm:runs/ar")
    evaluate_rows(rows, "smollm2-135m")   # the summary `edlm eval samples` prints
"""

from __future__ import annotations

from edlm.eval import evaluators, genppl, metrics
from edlm.runs.load import load_model


def get_evaluator(name, device="cpu", accept_data_change: bool = False):
    """edlm.eval.evaluators.get_evaluator, able to open edlm runs (accept_data_change: one whose corpus changed
    since it was made loads, with a warning)."""
    return evaluators.get_evaluator(name, device, load_run=load_model, accept_data_change=accept_data_change)


def evaluate_rows(rows: list[dict], evaluator, **options) -> dict:
    """edlm.eval.genppl.evaluate_rows (options: device, batch_size, max_tokens, eos, stride, show_progress,
    keep_scores, accept_data_change), able to open edlm runs."""
    return genppl.evaluate_rows(rows, evaluator, load_run=load_model, **options)


def evaluate_samples(rows: list[dict], **options) -> dict:
    """edlm.eval.metrics.evaluate_samples (metrics genppl / repetition / mauve: what `edlm eval samples --metrics`
    prints), able to open edlm runs."""
    return metrics.evaluate_samples(rows, load_run=load_model, **options)
