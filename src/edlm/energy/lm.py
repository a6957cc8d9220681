"""Energies from any language model, and from any function of the candidates (docs/method.md 3e).

LMEnergy takes a `scorer`: anything with log_prob(x0 (N, L) ids) -> (N,) nats (edlm.eval.lm_scorer.LMScorer wraps
a Hugging Face / GGUF model or an edlm AR run; a test can pass a lambda). Two forms, with a scale lambda > 0:

    residual (the paper's EDLM-AR):  E = lambda * (-log p_LM(x0) + log mu(x0|x_t))
        mu * exp(-E) ∝ mu^(1-lambda) * p_LM^lambda: lambda = 1 samples p_LM itself (on the x0 that agree with x_t),
        the proposal only proposes; lambda < 1 stays between the two.
    product (a reranker):            E = -lambda * log p_LM(x0)
        mu * exp(-E) = mu * p_LM^lambda: the LM's opinion is added to the proposal's, which stays in the target.

FunctionEnergy takes fn(candidates) -> log-weights r (one per candidate) and samples mu * exp(lambda * r) on every
step in the window: a reward (finite r) or a constraint (r = -inf vetoes a candidate; sampling/importance.py says
what happens when every candidate of a step is vetoed). fn sees texts (decoded with the MDLM's tokenizer) or ids.
"""

from __future__ import annotations

import math

import torch

from edlm.diffusion.subs import gather_masked_log_probs
from edlm.errors import EdlmError

FORMS = ("residual", "product")


def check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise EdlmError(f"energy scale {scale!r}: give a finite number > 0 (1 = the LM's own probabilities)")
    return float(scale)


class LMEnergy:
    """E from a language model's log-probability of the whole candidate, in the residual or product form."""

    normalised = False  # log Z of mu * p_LM^lambda over the x0 that agree with x_t is unknown

    def __init__(self, scorer, proposal, mask_id: int, *, form: str = "residual", scale: float = 1.0):
        """scorer: log_prob(x0) -> (N,) log p_LM; proposal: denoise(x_t, t) -> SUBS log-probs (residual form only,
        when the sampler does not pass log_mu)."""
        if form not in FORMS:
            raise EdlmError(f"energy form {form!r}: use residual (target p_LM, the paper's) or product (target "
                            "mu * p_LM^scale, a reranker)")
        self.scorer, self.proposal, self.mask_id = scorer, proposal, mask_id
        self.form, self.scale = form, check_scale(scale)

    def describe(self) -> dict:
        extra = self.scorer.describe() if hasattr(self.scorer, "describe") else {}
        return {"energy_form": self.form, "energy_scale": self.scale, **extra}

    @torch.no_grad()
    def energy(self, x0, x_t, t, *, log_mu=None):
        lp = self.scorer.log_prob(x0).to(x0.device, torch.float64)
        if self.form == "product":
            return -self.scale * lp
        if log_mu is None:
            log_mu = gather_masked_log_probs(self.proposal(x_t, t), x0, x_t, self.mask_id)
        return self.scale * (log_mu.double() - lp)


INPUTS = ("texts", "ids")


class FunctionEnergy:
    """E = -lambda * fn(candidates): the target mu * exp(lambda * r) on every step in the window."""

    normalised = False

    def __init__(self, fn, *, decode=None, inputs: str = "texts", scale: float = 1.0, name: str = "fn"):
        """fn: texts (list of N str) or ids ((N, L) int64 tensor) -> N log-weights (list, array or tensor);
        decode: ids (N, L) -> list of N texts (the MDLM's tokenizer), needed for inputs="texts"."""
        if inputs not in INPUTS:
            raise EdlmError(f"energy function inputs {inputs!r}: use texts or ids")
        if not callable(fn):
            raise EdlmError(f"energy function {name}: {fn!r} is not callable")
        if inputs == "texts" and decode is None:
            raise EdlmError("a function energy on texts needs the MDLM's decode")
        self.fn, self.decode, self.inputs, self.name = fn, decode, inputs, name
        self.scale = check_scale(scale)

    def describe(self) -> dict:
        return {"energy_form": "product", "energy_scale": self.scale, "energy_inputs": self.inputs}

    def log_weights(self, x0: torch.Tensor) -> torch.Tensor:
        """fn on the candidates, checked: (N,) float64 on x0's device."""
        arg = self.decode(x0) if self.inputs == "texts" else x0
        out = self.fn(arg)
        return check_log_weights(out, x0.shape[0], self.name, x0.device, arg)

    @torch.no_grad()
    def energy(self, x0, x_t, t, *, log_mu=None):
        return -self.scale * self.log_weights(x0)


def check_log_weights(out, n: int, name: str, device, inputs=None) -> torch.Tensor:
    """A function's log-weights as a (n,) float64 tensor, or one EdlmError saying what is wrong with them."""
    try:
        r = torch.as_tensor(out.detach().cpu() if isinstance(out, torch.Tensor) else out, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise EdlmError(f"energy function {name} returned {type(out).__name__}, not {n} numbers (one log-weight "
                        "per candidate)") from None
    if r.shape != (n,):
        raise EdlmError(f"energy function {name} returned shape {tuple(r.shape)} for {n} candidates: return one "
                        f"log-weight per candidate, shape ({n},)")
    bad = torch.isnan(r) | torch.isposinf(r)
    if bad.any():
        i = int(bad.nonzero()[0])
        what = "NaN" if torch.isnan(r[i]) else "+inf"
        shown = inputs[i] if isinstance(inputs, list) else None
        raise EdlmError(f"energy function {name} returned {what} for candidate {i}"
                        + (f" ({shown[:60]!r})" if isinstance(shown, str) else "")
                        + ": log-weights must be finite, or -inf to veto a candidate")
    return r.to(device)
