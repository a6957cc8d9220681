"""Turn evaluate_split's sums into the labelled report `edlm eval nelbo` prints (and the API returns).

Every entry says what it is: "kind" is "upper bound", "exact" or "estimate", and "what" says of which
model. An EDLM estimate is never printed as a negative NLL: when its log Z draws are degenerate it
has "nll": null and says why (docs/likelihood.md).
"""

from __future__ import annotations

import math

BRACKET_WARN = 0.05
"""nats/token: an EDLM estimate whose two log Z ends differ by more than this is flagged unreliable"""


def _entry(kind: str, what: str, nll: float | None, *, char: bool, stderr: float | None = None, **extra):
    e = {"kind": kind, "what": what, "nll": nll}
    if nll is not None:
        e["ppl"] = math.exp(nll) if nll < 700 else None
        e["bpc"] = nll / math.log(2) if char else None
    if stderr is not None:
        e["stderr"] = stderr
    e.update(extra)
    return e


def _per_token(res, name):
    """Mean per-token value and its standard error (over sequences) of one named quantity."""
    n, L = res["seqs"], res["tokens"] / max(res["seqs"], 1)
    s, q = res["sums"][name], res["sq"][name]
    var = max(q / n - (s / n) ** 2, 0.0) if n > 1 else 0.0
    return s / res["tokens"], math.sqrt(var / max(n - 1, 1)) / L


def likelihood_report(res: dict, *, objective: str, char: bool, steps: int | None = None,
                      energy: str | None = None, k: int | None = None, window=None, temperature: float = 1.0,
                      logz_samples: int | None = None) -> dict:
    """-> {"results": {name: entry}, "primary": name, "nll"/"kind"/"ppl"/"bpc" of the primary, "warnings"}."""
    out: dict = {"results": {}, "warnings": []}
    r = out["results"]
    sums = res["sums"]
    if objective == "ar":
        v, se = _per_token(res, "ar")
        r["ar"] = _entry("exact", "the AR model's NLL (every token scored)", v, char=char, stderr=se)
        primary = "ar"
    else:
        v, se = _per_token(res, "mdlm")
        r["mdlm"] = _entry("upper bound", "continuous-time NELBO of the MDLM (top jump and final decode "
                           "counted)", v, char=char, stderr=se)
        primary = "mdlm"
        if "mdlm_steps" in sums:
            v, se = _per_token(res, "mdlm_steps")
            r["mdlm_steps"] = _entry("upper bound", f"NELBO of the {steps}-step MDLM sampler", v, char=char,
                                     stderr=se, steps=steps)
        if "edlm_steps" in sums:
            v, se = _per_token(res, "edlm_steps")
            d, dse = _per_token(res, "edlm_minus_mdlm_steps")
            r["edlm_steps"] = _entry(
                "upper bound", f"NELBO of the {steps}-step EDLM sampler ({energy}, k={k}, window={window}, "
                f"temperature={temperature}); docs/likelihood.md", v, char=char, stderr=se, steps=steps, k=k,
                window=list(window) if window else None, temperature=temperature, minus_mdlm_steps=d,
                minus_mdlm_steps_stderr=dse)
            primary = "edlm_steps"
        if "edlm_estimate_lo" in sums:
            r["edlm_estimate"] = _estimate(res, char, energy, logz_samples, out["warnings"])
            if primary == "mdlm":
                primary = "edlm_estimate"
    out["primary"] = primary
    p = r[primary]
    out.update(nll=p["nll"], kind=p["kind"], ppl=p.get("ppl"), bpc=p.get("bpc"))
    return out


def _estimate(res, char, energy, n, warnings) -> dict:
    lo, _ = _per_token(res, "edlm_estimate_lo")
    hi, se = _per_token(res, "edlm_estimate_hi")
    ess = res["sums"]["logz_ess"] / res["seqs"]
    what = ("the paper's EDLM likelihood (joint log p(x0|x_t) inside the continuous-time NELBO); NOT a bound: "
            "an estimate that can fall below the true NLL (docs/likelihood.md)")
    extra = {"logz_samples": n, "logz_mean_ess": ess}
    if res.get("energy_normalised"):
        extra["note"] = ("carry-over AR is normalised, so this equals (1 - eps) x the AR's own NLL for ANY MDLM: "
                         "it measures the AR, not EDLM")
    if min(lo, hi) < 0:
        warnings.append(f"EDLM estimate withheld: with n={n} proposal draws the log Z estimate is degenerate "
                        f"(mean ESS {ess:.2f} of {n}) and the formula gives a negative NLL; raise `logz_samples`, "
                        "or use the EDLM sampler's bound (`steps`)")
        return _entry("estimate", what, None, char=char, unreliable=True, **extra)
    if hi - lo > BRACKET_WARN:
        warnings.append(f"EDLM estimate unreliable: its log Z ends differ by {hi - lo:.3f} nats/token at n={n} "
                        f"(mean ESS {ess:.2f}); raise `logz_samples`, or use the EDLM sampler's bound (`steps`)")
        extra["unreliable"] = True
    return _entry("estimate", what, hi, char=char, stderr=se, nll_logz_lower_end=lo, **extra)
