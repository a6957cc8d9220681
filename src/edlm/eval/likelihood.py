"""Likelihood on a data split: which numbers are bounds, which are exact, which are only estimates.

The proofs are in docs/likelihood.md. Per sequence, all in nats, summed over sequences and divided once
by the token count:

  mdlm_nelbo      continuous-time NELBO of the MDLM. An upper bound on -log p(x0) of the model that
                  starts from all MASK, jumps to alpha(1) (the top jump), runs the continuous-time reverse
                  process down to t_eps and then decodes what is left in one factorised step (the final
                  decode). All three parts are counted, so the number is a bound whatever the schedule's
                  end values are (cosine: alpha(0) = 1 - eps; log-linear: alpha(1) = eps).
  discrete_nelbo  the T-step NELBO of the sampler `edlm sample --steps T` really runs (pinned alpha, final
                  step draws every token left). With an energy: the same for the EDLM sampler (k
                  candidates, window, temperature), which adds E[-log c] per step, c = k e^{a*} /
                  (e^{a*} + sum_{j=2..k} e^{a_j}), a = -E / tau, the data's tokens on the positions that
                  unmask in x0* and k-1 fresh proposals: an upper bound on that sampler's NLL.
  ar_nll          the AR model's exact NLL.
  edlm_estimate   the paper's formula: the JOINT log p(x0|x_t) = log mu - E - log Z inside the
                  continuous-time NELBO. NOT a bound (a correlated pair halves the entropy with it), and
                  log Z comes from n proposal draws: T_n = log-mean-exp(-E_j) (E[T_n] <= log Z) and
                  U_n = (2n-1) T_n - 2(n-1) T_{n-1} (Deng et al. 2020), the leave-one-out T_{n-1} as a
                  log-sum-exp over the other n-1 values.
Each estimator is unbiased for its quantity (Monte Carlo over t, masks and proposals); a "bound" is a
stochastic upper bound: its expectation is >= the NLL it bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from edlm.config.train import TrainConfig
from edlm.diffusion.losses import accepts_rows, ar_nll, token_log_probs
from edlm.diffusion.masking import antithetic_times, mask_tokens
from edlm.diffusion.schedules import T_EPS, get_schedule, nelbo_weight, pinned_alpha
from edlm.diffusion.subs import subs_log_probs
from edlm.energy.base import is_normalised
from edlm.sampling.ancestral import time_grid
from edlm.sampling.categorical import chunk_rows, sample_rows
from edlm.sampling.denoiser import FullPosterior, ModelDenoiser
from edlm.sampling.importance import draw_candidates
from edlm.sampling.loop import in_window


def logz_bounds(neg_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """neg_e: (B, n) values of -E at n proposal draws -> (T_n, U_n), each (B,) float64. Needs n >= 2.

    Each leave-one-out term is a log-sum-exp over the OTHER n-1 values, never log(sum - one term): that
    difference cancels catastrophically when one weight dominates (a 40-nat lead is ordinary at L = 256)."""
    neg_e = neg_e.double()
    n = neg_e.shape[1]
    t_n = torch.logsumexp(neg_e, 1) - math.log(n)
    eye = torch.eye(n, dtype=torch.bool, device=neg_e.device)
    others = neg_e[:, None, :].expand(-1, n, -1).masked_fill(eye, float("-inf"))  # row i: all but i
    t_n1 = (torch.logsumexp(others, -1) - math.log(n - 1)).mean(1)
    return t_n, (2 * n - 1) * t_n - 2 * (n - 1) * t_n1


def _posterior(model, x_t, t, mask_id):
    if accepts_rows(model):
        return ModelDenoiser(model, mask_id).posterior(x_t, t)
    return FullPosterior(subs_log_probs(model(x_t, t), x_t, mask_id))


def masked_token_log_probs(post, x0: torch.Tensor, x_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """log x_theta(x0^l | x_t) at the masked positions of x_t, 0 elsewhere: (B, L) float32."""
    rows = (x_t == mask_id).flatten().nonzero().squeeze(1)
    out = torch.zeros(x0.numel(), dtype=torch.float32, device=x0.device)
    tgt = x0.flatten()
    step = chunk_rows(mask_id)
    for i in range(0, rows.numel(), step):
        r = rows[i:i + step]
        out[r] = token_log_probs(post.logits(r), tgt[r], mask_id)
    return out.view(x0.shape)


def _times(value: float, n: int, device) -> torch.Tensor:
    return torch.full((n,), float(value), device=device)


@torch.no_grad()
def top_jump(model, x0, schedule, mask_id) -> torch.Tensor:
    """alpha(1) * sum_l -log x_theta(x0^l | all MASK): the sampler starts from all MASK where the schedule
    leaves alpha(1) of the tokens clean. (B,) float64; 0 when alpha(1) = 0. All-MASK inputs are identical,
    so one row serves the batch."""
    a1 = float(schedule.alpha(1.0))
    if a1 <= 0:
        return torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
    blank = torch.full_like(x0[:1], mask_id)
    post = _posterior(model, blank, _times(1.0, 1, x0.device), mask_id)
    L = x0.shape[1]
    logits = post.logits(torch.arange(L, device=x0.device))  # (L, >= V)
    lp = torch.log_softmax(logits[:, :mask_id].float(), -1)  # (L, V)
    per_pos = lp.gather(1, x0.T).T  # (B, L): log x_theta(x0^l | MASK^L)
    return -a1 * per_pos.double().sum(-1)


@torch.no_grad()
def final_decode(model, x0, schedule, mask_id, gen, t_eps: float) -> torch.Tensor:
    """E over x_{t_eps} of sum_{masked} -log x_theta(x0^l | x_{t_eps}): the tokens still masked at t_eps are
    drawn in one factorised step (alpha jumps to 1). (B,) float64; one forward for the sequences that
    have a masked token (about (1 - alpha(t_eps)) L per sequence, so usually few)."""
    B = x0.shape[0]
    out = torch.zeros(B, dtype=torch.float64, device=x0.device)
    x_b = mask_tokens(x0, float(schedule.alpha(t_eps)), mask_id, gen)
    idx = (x_b == mask_id).any(1).nonzero().squeeze(1)
    if idx.numel():
        post = _posterior(model, x_b[idx], _times(t_eps, idx.numel(), x0.device), mask_id)
        out[idx] = -masked_token_log_probs(post, x0[idx], x_b[idx], mask_id).double().sum(-1)
    return out


@torch.no_grad()
def mdlm_nelbo(model, x0, schedule, mask_id: int, gen, *, t_eps: float = T_EPS) -> torch.Tensor:
    """Continuous-time NELBO per sequence (B,) float64, with the top jump and the final decode counted.
    The integral over [t_eps, 1] is (1 - t_eps) E_{t ~ U[t_eps, 1]}[...] (antithetic t)."""
    B = x0.shape[0]
    t = antithetic_times(B, eps=t_eps, generator=gen, device=x0.device)
    x_t = mask_tokens(x0, schedule.alpha(t), mask_id, gen)
    w = -nelbo_weight(schedule, t).double()  # positive weight -alpha'/(1-alpha)
    lp = masked_token_log_probs(_posterior(model, x_t, t, mask_id), x0, x_t, mask_id).double().sum(-1)
    body = (1 - t_eps) * w * -lp
    return top_jump(model, x0, schedule, mask_id) + body + final_decode(model, x0, schedule, mask_id, gen, t_eps)


@dataclass
class EDLMSampler:
    """The EDLM sampler a T-step bound describes (the same fields as `edlm sample`)."""

    energy: object
    k: int = 4
    """the sampler's candidates per step (Run.sample's and `edlm sample`'s default too)"""
    window: tuple[float, float] | None = (0.0, 1.0)
    temperature: float = 1.0
    min_unmask: int = 1
    """as the sampler's: the energy runs only where a step unmasks at least this many positions of a sequence;
    the others take a plain MDLM draw, so their step costs no -log c"""
    bound_draws: int = 1
    """R: the T-step bound averages c over R independent draws of (x0*'s fill, the k-1 proposals) before
    the log. Any R gives a valid bound (the average is still unbiased for the step's probability); a
    larger R makes it tighter (smaller Jensen gap) at R times the energy forwards"""


def _neg_log_c(model_post, x0, x_t, t, move, lp_x0, sampler: EDLMSampler, mask_id, gen, act):
    """-log c for the active sequences `act` (B_a,): x0* = the data's tokens on the positions that unmask
    (`move`) and on those already clean, fresh draws from mu on the other masked ones; k-1 proposals."""
    k = sampler.k
    masked = x_t == mask_id
    sel = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
    sel[act] = True
    fill_rows = (masked & ~move & sel[:, None]).flatten().nonzero().squeeze(1)
    star = x0.clone()
    fill_lp = torch.zeros(x0.numel(), dtype=torch.float32, device=x0.device)
    if fill_rows.numel():
        tok, lpf = sample_rows(model_post, fill_rows, mask_id, 1, gen)
        star.view(-1)[fill_rows] = tok[:, 0]
        fill_lp[fill_rows] = lpf[:, 0]
    log_mu_star = (lp_x0 * move).sum(-1) + fill_lp.view(x0.shape).sum(-1)  # log mu(x0* | x_t), (B,)
    cand, lmu = draw_candidates(model_post, x_t, k - 1, mask_id, gen, seqs=act)  # (Ba, k-1, L)
    Ba, L = act.numel(), x0.shape[1]
    x_all = torch.cat([star[act][:, None], cand], 1).reshape(Ba * k, L)
    lmu_all = torch.cat([log_mu_star[act][:, None], lmu], 1).reshape(Ba * k)
    xt_all = x_t[act].repeat_interleave(k, 0)
    t_all = t[act].repeat_interleave(k, 0)
    e = sampler.energy.energy(x_all, xt_all, t_all, log_mu=lmu_all).double().view(Ba, k)
    a = -e / sampler.temperature
    return torch.logsumexp(a, 1) - a[:, 0] - math.log(k)


@torch.no_grad()
def discrete_nelbo(model, x0, schedule, mask_id: int, gen, *, steps: int,
                   sampler: EDLMSampler | None = None) -> dict[str, torch.Tensor]:
    """T-step NELBO per sequence of the T-step MDLM sampler ("mdlm_steps") and, with `sampler`, of the
    EDLM sampler ("edlm_steps"), both (B,) float64 from the same draws (their difference has low
    variance). One step i ~ U{0..T-1} per sequence (stratified), estimate = T * cost_i, where
    cost_i = a_i sum_{masked} -log x_theta(x0^l | x_t) [+ -log c for EDLM on a step in the window],
    a_i = (alpha_s - alpha_t) / (1 - alpha_t) with alpha pinned as the sampler pins it."""
    B, L = x0.shape
    dev = x0.device
    grid = time_grid(steps)
    u = torch.rand((), generator=gen, device=dev)
    i = (((u + torch.arange(B, device=dev) / B) % 1) * steps).long().clamp_(max=steps - 1).tolist()
    a_t = torch.tensor([pinned_alpha(schedule, grid[j]) for j in i], dtype=torch.float64, device=dev)
    a_s = torch.tensor([pinned_alpha(schedule, grid[j + 1]) for j in i], dtype=torch.float64, device=dev)
    t = torch.tensor([grid[j] for j in i], device=dev)
    x_t = mask_tokens(x0, a_t.float(), mask_id, gen)
    a = (a_s - a_t) / (1 - a_t)
    post = _posterior(model, x_t, t, mask_id)
    lp = masked_token_log_probs(post, x0, x_t, mask_id)
    mdlm = steps * a * -lp.double().sum(-1)
    out = {"mdlm_steps": mdlm}
    if sampler is None:
        return out
    extra = torch.zeros(B, dtype=torch.float64, device=dev)
    if sampler.k > 1:
        # Which positions unmask (as the sampler draws them); x0* only matters for sequences where some do.
        move = (x_t == mask_id) & (torch.rand(x0.shape, generator=gen, device=dev) < a[:, None].float())
        win = torch.tensor([in_window(grid[j], sampler.window) for j in i], device=dev)
        act = ((move.sum(1) >= max(sampler.min_unmask, 1)) & win).nonzero().squeeze(1)
        if act.numel():
            R = sampler.bound_draws
            log_c = torch.stack([-_neg_log_c(post, x0, x_t, t, move, lp, sampler, mask_id, gen, act)
                                 for _ in range(R)])  # (R, B_a)
            extra[act] = -(torch.logsumexp(log_c, 0) - math.log(R))
    out["edlm_steps"] = mdlm + steps * extra
    return out


@torch.no_grad()
def edlm_estimate(model, x0, schedule, mask_id: int, gen, energy, *, t_eps: float = T_EPS,
                  logz_samples: int = 8) -> dict[str, torch.Tensor]:
    """The paper's formula per sequence: w(t) (-log mu(x0|x_t) + E + log Z), NOT a bound (module doc).
    -> {"lo": with T_n, "hi": with U_n, "logz_ess": ESS of the n proposal weights}, each (B,) float64.
    An energy with `normalised = True` (carry-over AR) has log Z = 0 exactly."""
    B = x0.shape[0]
    t = antithetic_times(B, eps=t_eps, generator=gen, device=x0.device)
    x_t = mask_tokens(x0, schedule.alpha(t), mask_id, gen)
    w = -nelbo_weight(schedule, t).double()
    post = _posterior(model, x_t, t, mask_id)
    log_mu = masked_token_log_probs(post, x0, x_t, mask_id).sum(-1)
    base = -log_mu.double() + energy.energy(x0, x_t, t, log_mu=log_mu).double()
    if is_normalised(energy):
        v = w * base
        return {"lo": v, "hi": v, "logz_ess": torch.full_like(v, float(logz_samples))}
    n = logz_samples
    cand, lmu = draw_candidates(post, x_t, n, mask_id, gen)
    en = energy.energy(cand.reshape(B * n, -1), x_t.repeat_interleave(n, 0), t.repeat_interleave(n, 0),
                       log_mu=lmu.reshape(-1)).double().view(B, n)
    t_n, u_n = logz_bounds(-en)
    wts = torch.softmax(-en, 1)
    return {"lo": w * (base + t_n), "hi": w * (base + u_n), "logz_ess": 1.0 / (wts ** 2).sum(1)}


@dataclass
class LikelihoodPlan:
    """What `edlm eval nelbo` computes besides the model's own bound (MDLM) or exact NLL (AR)."""

    t_samples: int = 1
    """Monte-Carlo draws (t, masks) per sequence"""
    t_eps: float | None = None
    """smallest t of the continuous integral; None = the run's own train.t_eps"""
    steps: int | None = None
    """also the T-step bounds of the T-step samplers"""
    sampler: EDLMSampler | None = None
    """an energy (+ k, window, temperature): the EDLM estimate, and with steps the EDLM T-step bound"""
    logz_samples: int = 8


@torch.no_grad()
def evaluate_split(model, meta, blocks, plan: LikelihoodPlan | None = None, *, seed: int = 0, device="cpu",
                   bar=None) -> dict:
    """blocks: iterable of (B, L) int64 batches. Returns {"sums": {name: sum of per-sequence nats},
    "sq": {name: sum of squares}, "seqs": n, "tokens": n * L}; names: ar | mdlm, mdlm_steps, edlm_steps,
    edlm_estimate_lo/_hi, logz_ess."""
    plan = plan or LikelihoodPlan()
    # a RunMeta (edlm.runs.folder), or run.json's dict (possibly partial: a missing train entry takes
    # TrainConfig's default)
    if not isinstance(meta, dict):
        objective, mask_id, train = meta.objective, meta.mask_id, meta.train
    else:
        objective, mask_id, train = meta["objective"], meta["mask_id"], TrainConfig.from_dict(meta.get("train", {}))
    schedule = get_schedule(train.schedule)
    t_eps = plan.t_eps if plan.t_eps is not None else float(train.t_eps)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    sums: dict[str, float] = {}
    sq: dict[str, float] = {}
    tokens = seqs = 0
    for x0 in blocks:
        x0 = x0.to(device)
        tokens += x0.numel()
        seqs += x0.shape[0]
        if objective == "ar":
            parts = {"ar": ar_nll(model, x0, mask_id).double()}
        else:
            parts = {}
            for _ in range(plan.t_samples):
                draw = {"mdlm": mdlm_nelbo(model, x0, schedule, mask_id, gen, t_eps=t_eps)}
                if plan.steps:
                    draw.update(discrete_nelbo(model, x0, schedule, mask_id, gen, steps=plan.steps,
                                               sampler=plan.sampler))
                if plan.sampler is not None:
                    est = edlm_estimate(model, x0, schedule, mask_id, gen, plan.sampler.energy, t_eps=t_eps,
                                        logz_samples=plan.logz_samples)
                    draw.update({"edlm_estimate_lo": est["lo"], "edlm_estimate_hi": est["hi"],
                                 "logz_ess": est["logz_ess"]})
                if "edlm_steps" in draw:  # paired: same x_t and moves, so the difference has its own small error
                    draw["edlm_minus_mdlm_steps"] = draw["edlm_steps"] - draw["mdlm_steps"]
                for k, v in draw.items():
                    parts[k] = parts.get(k, 0) + v / plan.t_samples
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
            sq[k] = sq.get(k, 0.0) + float((v ** 2).sum())
        if bar is not None:
            bar.update(x0.shape[0])
    out = {"sums": sums, "sq": sq, "seqs": seqs, "tokens": tokens}
    if plan.sampler is not None:  # the report says when the EDLM "estimate" is an exact log-probability
        out["energy_normalised"] = is_normalised(plan.sampler.energy)
    return out
