"""Exact-language pieces of the ceiling sweep: a forward-backward denoiser and the true energy of an order-k
Markov language, exact scoring, and the two `look` modes of ceiling_sweep.py (no training: exact denoisers,
fixed k x window against the ESS policy). ceiling_sweep.py is the command line; window_look.py uses these too.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info  # noqa: E402

from edlm.config.sampling import SamplerConfig  # noqa: E402
from edlm.diffusion.schedules import LogLinear  # noqa: E402
from edlm.eval.stats import unigram_entropy  # noqa: E402
from edlm.sampling.adaptive import KPolicy  # noqa: E402
from edlm.sampling.loop import sample  # noqa: E402


def _ints(s):
    return [int(v) for v in s.split(",") if v.strip()]


def _floats(s):
    return [float(v) for v in s.split(",") if v.strip()]


# ------------------------------------------------------------------------------------------------------------
# Exact denoiser and energy for an order-k Markov language (data/languages.py), for the look.


def markov_oracle(lang):
    """denoise(x_t, t) -> (B, L, V) exact log p(x0^l | x_t) by forward-backward over k-gram states (`synthetic`
    and markov2/markov3; checked against enumeration of every sequence for orders 1-3 at V = 3, L = 5)."""
    V, k = lang.config.vocab_size, getattr(lang.config, "order", 1)  # `synthetic` is first order
    P = torch.tensor(lang.P_np, dtype=torch.float64)  # (V^k, V)
    pi = torch.tensor(lang.pi_k if hasattr(lang, "pi_k") else lang.pi_np, dtype=torch.float64)  # (V^k,)
    S = V**k
    digits = torch.stack([(torch.arange(S) // V ** (k - 1 - i)) % V for i in range(k)], 1)  # (S, k)
    P3 = P.view(V, S // V, V)  # [a, rest, v]

    def denoise(x_t, t=None):
        B, L = x_t.shape
        assert L >= k
        obs = x_t < V
        # emission of the state ending at position t: its last digit must be x_t (if observed); the first
        # state (position k-1) also checks its first k-1 digits against positions 0..k-2
        def emit(pos):
            ok = ~obs[:, pos, None] | (digits[None, :, -1] == x_t[:, pos, None])
            return ok.double()

        e0 = torch.ones(B, S, dtype=torch.float64)
        for i in range(k):
            e0 = e0 * (~obs[:, i, None] | (digits[None, :, i] == x_t[:, i, None])).double()
        n = L - k + 1  # states at positions k-1 .. L-1
        fwd = torch.empty(B, n, S, dtype=torch.float64)
        a = pi[None] * e0
        fwd[:, 0] = a / a.sum(-1, keepdim=True)
        for j in range(1, n):
            m = torch.einsum("bar,arv->brv", fwd[:, j - 1].view(B, V, S // V), P3).reshape(B, S)
            a = m * emit(k - 1 + j)
            fwd[:, j] = a / a.sum(-1, keepdim=True)
        bwd = torch.ones(B, n, S, dtype=torch.float64)
        for j in range(n - 2, -1, -1):
            y = (emit(k + j) * bwd[:, j + 1]).view(B, S // V, V)
            b = torch.einsum("arv,brv->bar", P3, y).reshape(B, S)
            bwd[:, j] = b / b.sum(-1, keepdim=True)
        post = fwd * bwd
        post = post / post.sum(-1, keepdim=True)  # (B, n, S)
        out = torch.empty(B, L, V, dtype=torch.float64)
        oh = torch.nn.functional.one_hot(digits, V).double()  # (S, k, V)
        for i in range(k - 1):
            out[:, i] = post[:, 0] @ oh[:, i]
        out[:, k - 1:] = post @ oh[:, -1]
        return out.clamp_min(1e-300).log().float()

    return denoise


class TrueEnergy:
    """The ideal AR energy: E = -log p_true(x0) + log mu(x0|x_t) (what EDLM-AR is with a perfect AR)."""

    def __init__(self, lang):
        self.lang = lang

    def energy(self, x0, x_t, t, *, log_mu=None):
        return (-self.lang.log_prob(x0) + log_mu.double()).float()


def score(lang, x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-sample exact gen-NLL (nats/token) and unigram entropy (nats)."""
    nll = (-lang.log_prob(x.cpu()) / x.shape[1]).tolist()
    ent = [unigram_entropy(r) for r in x.cpu().tolist()]
    return nll, ent


def facts(lang, L: int) -> dict:
    return {"entropy_rate": lang.entropy_rate, "unigram_entropy": lang.unigram_entropy,
            "neighbour_entropy": getattr(lang, "neighbour_entropy", None), "block_entropy": lang.block_entropy(L),
            "vocab_size": lang.vocab_size, "order": getattr(lang.config, "order", 1)}


def summarise(nll, ent, intervals: bool = False, n_boot: int = 2000) -> dict:
    """Means; with intervals, 95% percentile bootstrap intervals over samples too."""
    out = {"gen_nll": sum(nll) / len(nll) if nll is not None else None, "entropy": sum(ent) / len(ent),
           "num": len(ent)}
    if intervals:
        g = torch.Generator().manual_seed(0)
        idx = torch.randint(0, len(nll), (n_boot, len(nll)), generator=g)
        for key, v in (("gen_nll", nll), ("entropy", ent)):
            m = torch.tensor(v, dtype=torch.float64)[idx].mean(1)
            out[key + "_ci"] = [float(m.quantile(0.025)), float(m.quantile(0.975))]
    return out


def exact_language(name: str):
    """A ground-truth language by corpus name, built directly (no prepared corpus needed)."""
    from edlm.data.languages import make_language
    from edlm.data.synthetic import SyntheticLanguage

    return SyntheticLanguage() if name == "synthetic" else make_language(name)


def data_row(lang, num: int, length: int) -> dict:
    """The reference row: `num` exact samples of the language (seed 0), summarised like every cell."""
    nll, ent = score(lang, lang.sample(num, length, generator=torch.Generator().manual_seed(0)))
    return summarise(nll, ent, intervals=True)


def exact_draw(lang, den, cfg: SamplerConfig, num: int, length: int):
    """`num` samples with the exact denoiser `den` (markov_oracle), the true energy when cfg.k > 1; seeded by
    the step count, so the cells of one step count share their random stream. -> (x, SampleStats)."""
    return sample(den, LogLinear(), lang.vocab_size, cfg, batch=num, length=length,
                  generator=torch.Generator().manual_seed(cfg.steps),
                  energy=TrueEnergy(lang) if cfg.k > 1 else None)


def cpu_threads(n: int) -> None:
    """On a CPU shared with other jobs, torch's 2 OpenMP threads spin against each other: one training step of the
    `cpu` size took 4.9 s with 2 threads and 0.18 s with 1 (load average 11 on 2 cores). Default: 1 thread."""
    if not torch.cuda.is_available() and n > 0:
        torch.set_num_threads(n)


def look(a):
    """Exact denoisers: the cost of drawing many tokens at once, per language, with no training."""
    cpu_threads(a.threads)
    if a.adaptive:
        return look_adaptive(a)
    res = {**device_info(), "what": "exact-denoiser look", "args": vars(a), "languages": {}}
    for name in a.languages.split(","):
        lang = exact_language(name)
        if getattr(lang, "kind", "markov") != "markov":
            res["languages"][name] = {"skipped": "an HMM over words: a misspelt word has probability 0, so one "
                                                 "bad draw makes gen-NLL infinite (no finite mean to compare)"}
            Path(a.out).write_text(json.dumps(res, indent=1))
            continue
        den = markov_oracle(lang)
        out = {"summary": facts(lang, a.length), "block_entropy": lang.block_entropy(a.length),
               "data": data_row(lang, a.num, a.length), "cells": []}
        for steps in map(int, a.steps.split(",")):
            for unmask, k in (("random", 1), ("confidence", 1), ("random", a.k), ("confidence", a.k)):
                t0 = time.perf_counter()
                x, st = exact_draw(lang, den, SamplerConfig(steps=steps, unmask=unmask, k=k), a.num, a.length)
                nll, ent = score(lang, x)
                cell = {"steps": steps, "unmask": unmask, "k": k, **summarise(nll, ent, intervals=True),
                        "mean_ess": st.mean_ess, "seconds": time.perf_counter() - t0}
                out["cells"].append(cell)
                print(name, json.dumps(cell), flush=True)
                res["languages"][name] = out
                Path(a.out).write_text(json.dumps(res, indent=1))
        res["languages"][name] = out
        Path(a.out).write_text(json.dumps(res, indent=1))


def adaptive_cells(a) -> list[dict]:
    """MDLM, fixed k x window (FIXED specs K:W[:M]), and the ESS policy on every step (ESS specs K0:K_MAX[:M]);
    M = min_unmask (the energy only for sequences that unmask at least M positions on the step; default 1)."""
    cells = [{"sampler": "mdlm", "k": 1, "window": None, "k_max": None, "min_unmask": 1}]
    for spec in filter(None, a.fixed.split(",")):
        k, w, *m = spec.split(":")
        window = [float(v) for v in w.split("-")] if "-" in w else float(w)  # LO-HI: the steps with t in [LO, HI]
        cells.append({"sampler": "edlm", "k": int(k), "window": window, "k_max": None,
                      "min_unmask": int(m[0]) if m else 1})
    for spec in filter(None, a.ess.split(",")):
        k0, k_max, *m = map(int, spec.split(":"))
        cells.append({"sampler": "edlm-ess", "k": k0, "window": 1.0, "k_max": k_max, "min_unmask": m[0] if m else 1})
    return cells


CELL_KEY = ("steps", "sampler", "k", "window", "k_max", "min_unmask")


def look_adaptive(a):
    """Adaptive k (KPolicy) against fixed (k, window) with the exact denoiser and the true energy. Cost = energy
    candidate-evaluations per sample (k x the sequences that unmasked something, summed over EDLM steps): the
    quantity that EDLM adds to MDLM, independent of this shared CPU's noisy clock (wall time is kept too)."""
    res = {**device_info(), "what": "adaptive k look (exact denoiser, true energy)", "args": vars(a),
           "cost": "energy candidate-evaluations per sample", "languages": {}}
    if a.resume and Path(a.out).exists():  # keep the cells already there (an earlier invocation), add the others
        old = json.loads(Path(a.out).read_text())
        res["earlier_invocations"] = old.pop("earlier_invocations", []) + [{"commit": old.get("commit"),
                                                                            "args": old.get("args")}]
        res["languages"] = old["languages"]
    for name in a.languages.split(","):
        lang = exact_language(name)
        den = markov_oracle(lang)
        out = res["languages"].get(name) or {"summary": facts(lang, a.length),
                                             "data": data_row(lang, a.num, a.length), "cells": []}
        res["languages"][name] = out
        done = [tuple(c.get(k, 1 if k == "min_unmask" else None) for k in CELL_KEY) for c in out["cells"]]
        for steps in _ints(a.steps):
            for c in adaptive_cells(a):
                if (steps, *(c[k] for k in CELL_KEY[1:])) in done:
                    continue
                w = c["window"]
                pol = KPolicy(k_max=c["k_max"]) if c["k_max"] else None
                win = tuple(w) if isinstance(w, list) else ((1.0 - w, 1.0) if w else None)
                cfg = SamplerConfig(steps=steps, k=c["k"], window=win, k_policy=pol,
                                    min_unmask=c["min_unmask"])
                t0 = time.perf_counter()
                x, st = exact_draw(lang, den, cfg, a.num, a.length)
                dt = time.perf_counter() - t0
                nll, ent = score(lang, x)
                cell = {"steps": steps, **c, **summarise(nll, ent, intervals=True), "mean_ess": st.mean_ess,
                        "candidates_per_sample": st.candidates / a.num,
                        "mean_k": st.candidates / max(sum(e.numel() for e in st.ess), 1) if st.ess else None,
                        "energy_steps": st.energy_steps, "ks": st.ks,
                        "ess_per_step": [round(float(e.mean()), 3) for e in st.ess],
                        "seconds": dt, "nll": [round(v, 5) for v in nll]}
                out["cells"].append(cell)
                print(name, json.dumps({k: v for k, v in cell.items() if k != "nll"}), flush=True)
                Path(a.out).write_text(json.dumps(res, indent=1))
    Path(a.out).write_text(json.dumps(res, indent=1))
