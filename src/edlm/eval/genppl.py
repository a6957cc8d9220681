"""Sample quality: generative perplexity under an evaluator, plus entropy, distinct-n and speed.

    edlm eval samples --samples out.jsonl --evaluator true            # exact, ground-truth languages only
    edlm eval samples --samples out.jsonl --evaluator smollm2-135m    # offline GGUF: pip install 'edlm[eval]'
    edlm eval samples --samples out.jsonl --evaluator edlm:runs/ar    # an edlm AR run, exact in token space

    from edlm.eval.genppl import evaluate_rows
    evaluate_rows(rows, "true")  -> {"evaluator": "true", "num": 64, "gen_ppl": ..., "entropy_nats": ..., ...}

gen_ppl = exp(total NLL / total scored tokens) over all samples (token-weighted); ``gen_nll`` is its log,
``nll_per_sample`` the mean over samples of each sample's per-token NLL, ``nll_per_sequence`` the mean
summed NLL of a sample. Entropy, distinct-n and timing come from the rows' own ids (edlm.eval.stats), whole.

What is scored (edlm.eval.scoring): ``eos="mdlm"`` (the default) is MDLM's rule: every document of the
sample and only its first EOS (later EOS tokens are context, not scored); ``"first"``: only up to and
including the first EOS; ``"all"``: every token. Text longer than the evaluator's context is scored in
sliding windows that advance by ``stride`` tokens (default:
half the context). The summary says both: ``eos``, ``samples_cut_at_eos``, ``eos_tokens_skipped``,
``stride`` and ``samples_windowed``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from edlm.errors import EdlmError
from edlm.eval import scoring
from edlm.eval.evaluators import Evaluator, get_evaluator, perplexity
from edlm.eval.stats import nll_interval, sample_stats
from edlm.utils import pick_device, progress

__all__ = [
    "evaluate_rows",
    "get_evaluator",
    "read_samples",
    "Evaluator",
]


def read_samples(path: str | Path) -> list[dict]:
    """Rows of a samples JSONL file (as written by `edlm sample`), validated; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise EdlmError(f"samples file {path} does not exist; write one with `edlm sample ... --out {path}`")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise EdlmError(
                    f"{path} line {n} is not valid JSON ({e.msg}); the file is corrupt or "
                    f"truncated: regenerate it with `edlm sample`, or delete that line"
                ) from None
            check_row(row, f"{path} line {n}")
            rows.append(row)
    if not rows:
        raise EdlmError(
            f"samples file {path} holds no samples; regenerate it with `edlm sample ... --out {path}`"
        )
    return rows


def check_row(row, where: str) -> None:
    if not isinstance(row, dict):
        raise EdlmError(
            f"{where} is not a JSON object; each line must be a sample row "
            '{"ids": [...], "text": ..., ...} as written by `edlm sample`'
        )
    ids = row.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise EdlmError(
            f'{where} has no "ids" list of integer token ids; each row needs them '
            "(regenerate the file with `edlm sample`)"
        )
    if "text" in row and not isinstance(row["text"], str):
        raise EdlmError(f'{where}: "text" must be a string')
    if row.get("corpus") is not None and not isinstance(row["corpus"], str):
        raise EdlmError(f'{where}: "corpus" must be a corpus name (a string), not {row["corpus"]!r}')
    secs = row.get("seconds")
    if secs is not None and (isinstance(secs, bool) or not isinstance(secs, (int, float))
                             or not math.isfinite(secs) or secs < 0):
        raise EdlmError(f'{where}: "seconds" must be a finite number >= 0 (or absent), not {secs!r}')


def evaluate_rows(
    rows: list[dict],
    evaluator: str | Evaluator,
    *,
    device="cpu",
    batch_size: int = 16,
    max_tokens: int | None = None,
    eos: str = "mdlm",
    stride: int | None = None,
    show_progress: bool = False,
    keep_scores: bool = False,
    load_run=None,
    accept_data_change: bool = False,
) -> dict:
    """The summary of ``edlm eval samples`` for rows already in memory (see module doc). load_run: how to open an
    edlm run named as the evaluator (edlm.api.evaluators.evaluate_rows passes edlm.runs.load.load_model)."""
    if not rows:
        raise EdlmError("no samples to evaluate (empty list of rows)")
    for i, r in enumerate(rows, 1):
        check_row(r, f"row {i}")
    if batch_size < 1:
        raise EdlmError("`batch_size` must be >= 1")
    if max_tokens is not None and max_tokens < 1:
        raise EdlmError("`max_tokens` must be >= 1")
    if eos not in scoring.EOS_MODES:
        raise EdlmError(f"`eos` {eos!r} is not one of {', '.join(scoring.EOS_MODES)}")
    ev = get_evaluator(evaluator, pick_device(device), load_run=load_run, accept_data_change=accept_data_change)
    ev.check_rows(rows)
    used_stride = ev.stride_for(stride)  # checked before any scoring
    todo, eos_done = scoring.apply_eos(rows, ev, eos)
    bar = progress(
        total=len(rows), desc=f"gen-ppl {ev.name}", unit="sample", disable=(not show_progress) or None
    )
    t = time.perf_counter()
    try:
        scores = ev.score(todo, batch_size=batch_size, max_tokens=max_tokens, stride=stride, bar=bar)
    finally:
        bar.close()
    score_s = time.perf_counter() - t
    total = sum(s.nll for s in scores)
    ntok = sum(s.tokens for s in scores)
    if ntok == 0:
        raise EdlmError(
            f"evaluator {ev.name!r} found no token to score in {len(rows)} samples (empty texts?)"
        )
    scored = [s for s in scores if s.tokens > 0]
    per = [s.nll / s.tokens for s in scored]
    out = {
        "evaluator": ev.name,
        "num": len(rows),
        "gen_ppl": perplexity(total, ntok),
        "gen_nll": total / ntok,
        "gen_nll_ci95": nll_interval([s.nll for s in scored], [s.tokens for s in scored]),
        "nll_per_sample": sum(per) / len(per),
        "nll_per_sequence": total / len(rows),
        "tokens_scored": ntok,
    }
    st = sample_stats(rows)
    for k in (
        "entropy_nats",
        "entropy_bits",
        "distinct_1",
        "distinct_2",
        "distinct_3",
        "distinct_4",
        "seconds_per_sample",
        "tokens_per_second",
        "method",
        "steps",
        "k",
        "window",
        "corpus",
        "seq_len",
    ):
        out[k] = st[k]
    out.update({k: v for k, v in ev.describe().items() if k != "evaluator"})
    out["samples_unscored"] = sum(1 for s in scores if s.tokens == 0)
    out["eos"] = eos
    out.update(eos_done)
    out["stride"] = used_stride
    out["samples_windowed"] = sum(1 for s in scores if s.windows > 1)
    out["load_seconds"] = ev.load_seconds
    out["score_seconds"] = score_s
    if keep_scores:  # per sample (nll, tokens), for intervals of differences between sample sets
        out["scores"] = [[s.nll, s.tokens] for s in scores]
    if out["gen_ppl"] is not None and math.isinf(out["gen_ppl"]):
        out["gen_ppl"] = None  # JSON has no infinity; gen_nll still says how bad it is
    return out
