"""What each objective computes on one micro-batch: (loss SUM, count, extra sums), and what it adds to the
training loop: its own initialisation of the model and its own metrics from the extra sums, so the loop holds
no objective's special cases.

Noise (t, masking uniforms) is drawn for the GLOBAL batch from a generator seeded identically on every
rank, and each rank takes its slice: N ranks then compute exactly what one process would on the same
global batch. Callers divide the reduced sums once by the global count.
"""

from __future__ import annotations

import torch

from edlm.diffusion.losses import (
    ar_nll,
    ar_nll_sum,
    fused_targets,
    masked_log_likelihood,
    masked_log_likelihood_sum,
    masked_rows_cap,
    mdlm_nelbo,
)
from edlm.diffusion.masking import antithetic_times, mask_tokens
from edlm.diffusion.schedules import get_schedule
from edlm.energy.nce import nce_loss
from edlm.errors import EdlmError
from edlm.sampling.denoiser import ModelDenoiser, posterior_of
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


class Objective:
    """What the loop asks of every objective besides __call__(model, x0, generator, rank, world):
    init_model on a fresh run, metrics for a training log row, val_metrics for a validation result.
    The extra sums are those __call__ returns, reduced over micro-steps and ranks."""

    val_keys: tuple[str, ...] = ()
    """the extra sums validation accumulates (in this order) for val_metrics"""

    def init_model(self, model) -> None:
        """Initialise a new run's weights beyond the random init (not called on resume)."""

    def metrics(self, extra: dict[str, float], count: float) -> dict:
        """Entries of a training log row from the reduced extra sums; count: the reduced loss count."""
        return {}

    def val_metrics(self, extra: torch.Tensor) -> dict:
        """Entries of a validation result from the reduced extra sums named by val_keys, (len(val_keys),)."""
        return {}


def build_objective(cfg, mask_id: int, device, proposal=None) -> Objective:
    """The objective cfg.objective names. NCE needs `proposal`: the trained MDLM (a loaded model, on `device`)
    whose samples are the negatives and whose weights initialise the energy; it is frozen here."""
    if cfg.objective == "mdlm":
        return MDLMObjective(get_schedule(cfg.schedule), mask_id, cfg)
    if cfg.objective == "ar":
        return ARObjective(mask_id)
    if cfg.objective == "nce":
        if proposal is None:
            raise EdlmError("objective 'nce' needs the trained MDLM to correct (`diffusion`)")
        mdlm = proposal
        for p in mdlm.parameters():
            p.requires_grad_(False)
        # The frozen proposal always sees the real t (harmless when it ignores t); as a ModelDenoiser it
        # projects onto the vocabulary only at the masked positions the negatives are drawn at.
        return NCEObjective(ModelDenoiser(mdlm, mask_id), get_schedule(cfg.schedule), mask_id, cfg, start=mdlm)
    raise EdlmError(f"unknown objective {cfg.objective!r}: choose mdlm, ar or nce")


class MDLMObjective(Objective):
    """The NELBO; in training mode with cfg.loss_weight == "flat", every masked token's cross-entropy weighs
    the constant 1 / E_t[1 - alpha_t] instead of alpha'/(1 - alpha) (1/t): the same minimiser at every t
    (the true posterior marginals), without the 1/t spikes of nearly clean sequences. Eval mode (validation)
    always computes the NELBO."""

    def __init__(self, schedule, mask_id: int, cfg):
        self.schedule, self.mask_id, self.cfg = schedule, mask_id, cfg
        self._caps: dict = {}
        grid = torch.linspace(cfg.t_eps, 1.0, 10_001, dtype=torch.float64)
        self.flat = float(1.0 / (1 - torch.as_tensor(schedule.alpha(grid), dtype=torch.float64)).mean())

    def __call__(self, model, x0, generator, rank=0, world=1):
        t, u = global_noise(*x0.shape, rank, world, generator, x0.device, t_eps=self.cfg.t_eps,
                            antithetic=self.cfg.antithetic)
        cap = self._rows_cap(x0, world)
        if model.training and getattr(self.cfg, "loss_weight", "nelbo") == "flat":
            x_t = mask_tokens(x0, self.schedule.alpha(t), self.mask_id, u=u)
            if fused_targets(model):  # every masked token weighs the same: the fused kernel's own sum
                return -self.flat * masked_log_likelihood_sum(model, x0, x_t, t, self.mask_id, max_rows=cap), \
                    x0.numel(), {}
            loss = -self.flat * masked_log_likelihood(model, x0, x_t, t, self.mask_id, max_rows=cap)
        else:
            loss = mdlm_nelbo(model, x0, self.schedule, self.mask_id, t=t, u=u, max_rows=cap)
        return loss.sum(), x0.numel(), {}

    def _rows_cap(self, x0, world):
        """On an accelerator under stratified t, the static bound on this rank's masked positions (masked_rows_cap): the
        vocabulary projection then runs on a fixed number of rows, and the host never waits for the GPU to
        count them (one sync per step otherwise). On the CPU there is no sync to save, and the bound's slack
        rows (~10% at batch 32 x 1024) would cost time: None there."""
        if x0.device.type == "cpu" or not self.cfg.antithetic:
            return None
        key = (*x0.shape, world)
        if key not in self._caps:
            self._caps[key] = masked_rows_cap(self.schedule, x0.shape[0], x0.shape[1], world=world,
                                              t_eps=self.cfg.t_eps)
        return self._caps[key]


class ARObjective(Objective):
    def __init__(self, mask_id: int):
        self.mask_id = mask_id

    def __call__(self, model, x0, generator, rank=0, world=1):
        if fused_targets(model):
            return ar_nll_sum(model, x0, self.mask_id), x0.numel(), {}
        return ar_nll(model, x0, self.mask_id).sum(), x0.numel(), {}


class NCEObjective(Objective):
    """Positives: data x0 at x_t ~ q(x_t|x0). Negatives: draws from the frozen MDLM at the same x_t.
    proposal: a denoiser (sampling/denoiser.py), e.g. ModelDenoiser(mdlm, mask_id). start: the network a new
    energy network's backbone starts from (the proposal's MDLM), or None to keep the random init."""

    val_keys = ("correct", "decisions")

    def __init__(self, proposal, schedule, mask_id: int, cfg, start=None):
        self.proposal, self.schedule, self.mask_id, self.cfg, self.start = proposal, schedule, mask_id, cfg, start

    def init_model(self, net) -> None:
        if self.start is not None:
            net.backbone.load_state_dict(self.start.state_dict())

    def metrics(self, extra, count):
        return {"nce_accuracy": extra["correct"] / extra["decisions"], "e_pos": extra["e_pos"] / count,
                "e_neg": extra["e_neg"] / count}

    def val_metrics(self, extra):
        return {"nce_accuracy": (extra[0] / extra[1]).item()} if extra[1] > 0 else {}

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
