"""Likelihood on a data split: MDLM NELBO, AR exact NLL, and EDLM bounds (method.md 1 and 3d).

Everything is summed over sequences and divided once by the number of tokens.
EDLM replaces the factorised sum_{masked} log x_theta(x0^l|x_t) by log p(x0|x_t):
  coar : log p_coAR(x0|x_t) = sum_{masked} log p_AR(x0^l | x0^{<l})          (normalised: exact)
  ar/nce: log mu(x0|x_t) - E(x0, x_t, t) - log Z(x_t), with log Z estimated from n proposal draws:
     T_n = log mean_j exp(-E_j)          E[T_n] <= log Z   -> optimistic NLL ("nll_lower")
     U_n = (2n-1) T_n - 2(n-1) T_{n-1}   >= log Z for large n (Deng et al. 2020, Thm 2) -> "nll_upper"
  where T_{n-1} is the mean of the n leave-one-out estimates.
"""

from __future__ import annotations

import math

import torch

from edlm.diffusion.losses import accepts_rows, ar_nll, masked_log_likelihood
from edlm.diffusion.masking import antithetic_times, mask_tokens
from edlm.diffusion.schedules import get_schedule, nelbo_weight
from edlm.diffusion.subs import subs_log_probs
from edlm.sampling.denoiser import FullPosterior, ModelDenoiser
from edlm.sampling.importance import draw_candidates


def logz_bounds(neg_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """neg_e: (B, n) values of -E at n proposal draws -> (T_n, U_n), each (B,). Needs n >= 2."""
    n = neg_e.shape[1]
    t_n = torch.logsumexp(neg_e, 1) - math.log(n)
    # leave-one-out: log mean_{j != i} exp(-E_j), via log(sum - exp(-E_i)) computed stably
    m = neg_e.max(1, keepdim=True).values
    s = torch.exp(neg_e - m)
    loo = torch.log((s.sum(1, keepdim=True) - s).clamp_min(1e-300)) + m - math.log(n - 1)
    t_n1 = loo.mean(1)
    return t_n, (2 * n - 1) * t_n - 2 * (n - 1) * t_n1


@torch.no_grad()
def nelbo_batch(model, x0, schedule, mask_id, gen, *, energy=None, energy_kind=None, logz_samples=8,
                t_eps=1e-3):
    """One t-sample per sequence (antithetic across the batch). Returns dict of per-sequence NLL terms (B,)."""
    B = x0.shape[0]
    t = antithetic_times(B, eps=t_eps, generator=gen, device=x0.device)
    x_t = mask_tokens(x0, schedule.alpha(t), mask_id, gen)
    w = -nelbo_weight(schedule, t).double()  # positive weight
    log_mu = masked_log_likelihood(model, x0, x_t, t, mask_id).double()  # projects masked rows only
    if energy is None:
        return {"nll": -w * log_mu}
    if energy_kind == "coar":
        return {"nll": -w * energy.ar_log_prob(x0, x_t).double()}
    e0 = energy.energy(x0, x_t, t, log_mu=log_mu.float()).double()
    post = (ModelDenoiser(model, mask_id).posterior(x_t, t) if accepts_rows(model)
            else FullPosterior(subs_log_probs(model(x_t, t), x_t, mask_id)))
    cand, lmu = draw_candidates(post, x_t, logz_samples, mask_id, gen)  # (B, n, L), (B, n)
    n = logz_samples
    en = energy.energy(cand.reshape(B * n, -1), x_t.repeat_interleave(n, 0), t.repeat_interleave(n, 0),
                       log_mu=lmu.reshape(-1)).double().view(B, n)
    t_n, u_n = logz_bounds(-en)
    base = log_mu - e0
    return {"nll_lower": -w * (base - t_n), "nll_upper": -w * (base - u_n)}


@torch.no_grad()
def evaluate_split(model, meta, blocks, *, t_samples=1, seed=0, energy=None, energy_kind=None,
                   logz_samples=8, device="cpu", bar=None) -> dict:
    """blocks: iterable of (B, L) int64 batches. Returns summed NLL terms and the token count."""
    mask_id = meta["mask_id"]
    schedule = get_schedule(meta["train"].get("schedule", "loglinear"))
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    sums: dict[str, float] = {}
    tokens = 0
    for x0 in blocks:
        x0 = x0.to(device)
        tokens += x0.numel()
        if meta["objective"] == "ar":
            parts = {"nll": ar_nll(model, x0, mask_id).double()}
        else:
            parts = {}
            for _ in range(t_samples):
                for k, v in nelbo_batch(model, x0, schedule, mask_id, gen, energy=energy, energy_kind=energy_kind,
                                        logz_samples=logz_samples).items():
                    parts[k] = parts.get(k, 0) + v / t_samples
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
        if bar is not None:
            bar.update(x0.shape[0])
    return {"sums": sums, "tokens": tokens}
