"""What each objective computes on one micro-batch: (loss SUM, count, extra sums).

Noise (t, masking uniforms) is drawn for the GLOBAL batch from a generator seeded identically on every
rank, and each rank takes its slice: N ranks then compute exactly what one process would on the same
global batch. Callers divide the reduced sums once by the global count.
"""

from __future__ import annotations

import torch

from edlm.diffusion.losses import ar_nll, masked_log_likelihood, mdlm_nelbo
from edlm.diffusion.masking import antithetic_times, mask_tokens
from edlm.energy.nce import nce_loss
from edlm.sampling.denoiser import posterior_of
from edlm.sampling.importance import draw_candidates


def global_noise(B: int, L: int, rank: int, world: int, generator, device, *, t_eps: float, antithetic: bool):
    Bg = B * world
    if antithetic:
        t = antithetic_times(Bg, eps=t_eps, generator=generator, device=device)
    else:
        t = torch.rand(Bg, generator=generator, device=device) * (1 - t_eps) + t_eps
    u = torch.rand(Bg, L, generator=generator, device=device)
    sl = slice(rank * B, (rank + 1) * B)
    return t[sl], u[sl]


class MDLMObjective:
    """The NELBO; in training mode with cfg.loss_weight == "flat", every masked token's cross-entropy weighs
    the constant 1 / E_t[1 - alpha_t] instead of alpha'/(1 - alpha) (1/t): the same minimiser at every t
    (the true posterior marginals), without the 1/t spikes of nearly clean sequences. Eval mode (validation)
    always computes the NELBO."""

    unit = "token"

    def __init__(self, schedule, mask_id: int, cfg):
        self.schedule, self.mask_id, self.cfg = schedule, mask_id, cfg
        grid = torch.linspace(cfg.t_eps, 1.0, 10_001, dtype=torch.float64)
        self.flat = float(1.0 / (1 - torch.as_tensor(schedule.alpha(grid), dtype=torch.float64)).mean())

    def __call__(self, model, x0, generator, rank=0, world=1):
        t, u = global_noise(*x0.shape, rank, world, generator, x0.device, t_eps=self.cfg.t_eps,
                            antithetic=self.cfg.antithetic)
        if model.training and getattr(self.cfg, "loss_weight", "nelbo") == "flat":
            x_t = mask_tokens(x0, self.schedule.alpha(t), self.mask_id, u=u)
            loss = -self.flat * masked_log_likelihood(model, x0, x_t, t, self.mask_id)
        else:
            loss = mdlm_nelbo(model, x0, self.schedule, self.mask_id, t=t, u=u)
        return loss.sum(), x0.numel(), {}


class ARObjective:
    unit = "token"

    def __init__(self, mask_id: int):
        self.mask_id = mask_id

    def __call__(self, model, x0, generator, rank=0, world=1):
        return ar_nll(model, x0, self.mask_id).sum(), x0.numel(), {}


class NCEObjective:
    """Positives: data x0 at x_t ~ q(x_t|x0). Negatives: draws from the frozen MDLM at the same x_t.
    proposal: a denoiser (sampling/denoiser.py), e.g. ModelDenoiser(mdlm, mask_id)."""

    unit = "sequence"

    def __init__(self, proposal, schedule, mask_id: int, cfg):
        self.proposal, self.schedule, self.mask_id, self.cfg = proposal, schedule, mask_id, cfg

    def __call__(self, net, x0, generator, rank=0, world=1):
        B, L = x0.shape
        n = self.cfg.nce_negatives
        t, u = global_noise(B, L, rank, world, generator, x0.device, t_eps=self.cfg.t_eps,
                            antithetic=self.cfg.antithetic)
        x_t = mask_tokens(x0, self.schedule.alpha(t), self.mask_id, u=u)
        # The negatives' uniforms too come from one global draw (every position, masked or not): a draw of
        # "as many as this rank has masked positions" would shift each rank's stream by a different amount.
        Bg = B * world
        u_neg = torch.rand(Bg, L, n, dtype=torch.float64, generator=generator, device=x0.device)
        u_neg = u_neg[rank * B:(rank + 1) * B]
        with torch.no_grad():
            neg, _ = draw_candidates(posterior_of(self.proposal)(x_t, t), x_t, n, self.mask_id, u=u_neg)
        # one forward for positives and negatives together
        x0_all = torch.cat([x0, neg.reshape(B * n, L)])
        xt_all = torch.cat([x_t, x_t.repeat_interleave(n, 0)])
        t_all = torch.cat([t, t.repeat_interleave(n, 0)])
        e = net(x0_all, xt_all, t_all)
        loss, correct = nce_loss(e[:B], e[B:].view(B, n))
        return loss.sum(), B, {"correct": correct.sum().detach(), "decisions": float(B * (1 + n)),
                               "e_pos": e[:B].sum().detach(), "e_neg": e[B:].sum().detach() / n}
