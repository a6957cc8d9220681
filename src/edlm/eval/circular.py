"""The circularity guard: samples drawn with a model as their energy are not judged by that same model.

EDLM with an LM energy picks, at every step, the candidates that LM likes best; scoring the samples with the same
LM then measures the selection, not the text (a sampler can look better by any margin this way). `edlm sample`
writes the energy's spec and model identity into every row ("energy", "energy_model"); `evaluate_rows` (and
`edlm eval samples`) refuse an evaluator that is that model, unless told otherwise (allow_circular=True,
--allow-circular), and then the summary says "circular": true.

    check_not_circular(rows, evaluator)   # EdlmError naming the fix, or the identity it matched (allowed)
"""

from __future__ import annotations

from edlm.errors import EdlmError
from edlm.eval.evaluators import model_identity

OTHER = {"gguf-builtin:smollm2-135m": "gemma3-270m"}


def row_energy_model(row: dict) -> str | None:
    """The identity of the model that served as a row's energy (None: no energy, or one that is no model)."""
    m = row.get("energy_model")
    if m:
        return m
    spec = row.get("energy")  # rows written before energy_model existed: resolve the spec's run or LM name
    if isinstance(spec, str):
        kind, sep, name = spec.partition(":")
        if sep and kind in ("ar", "coar", "lm"):
            return model_identity(name)
    return None


def check_not_circular(rows, ev, allow: bool = False) -> bool:
    """Raise when a row's energy model is the evaluator's model (unless allow); True when it is (allowed)."""
    mine = getattr(ev, "identity", None) or model_identity(ev.name)
    if mine is None:
        return False
    hit = next((r for r in rows if row_energy_model(r) == mine), None)
    if hit is None:
        return False
    if not allow:
        other = OTHER.get(mine, "smollm2-135m")
        raise EdlmError(f"these samples were drawn with the energy {hit.get('energy')!r}, which is the evaluator "
                        f"{ev.name!r} itself: it would judge the candidates it picked (circular). Pick another "
                        f"evaluator (e.g. {other}), or pass --allow-circular (allow_circular=True) to score anyway")
    return True
