"""Training/evaluation losses, returned as SUMS (plus token counts) so callers divide once.

MDLM continuous-time NELBO per sequence:
    L = E_t [ alpha'_t / (1 - alpha_t) * sum_{l: x_t^l = MASK} log x_theta^l(x0^l | x_t) ]  (>= 0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edlm.diffusion.masking import antithetic_times, mask_tokens
from edlm.diffusion.schedules import T_EPS, nelbo_weight
from edlm.utils import fused_on_gpu

IGNORE = -100
"""a target that counts 0 in Transformer.forward(targets=...) (Liger's ignore_index): the fill rows of a static
row budget"""


def _token_log_probs(logits: torch.Tensor, targets: torch.Tensor, V: int) -> torch.Tensor:
    lf = logits[..., :V].float()
    return lf.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(lf, -1)


def _log_normaliser(logits: torch.Tensor, V: int) -> torch.Tensor:
    return torch.logsumexp(logits[..., :V].float(), -1)


def _token_log_probs_grad(logits, targets, lse, g, V: int) -> torch.Tensor:
    """d/dlogits of sum g * log softmax(logits[..., :V])[target]: g * (onehot - softmax), 0 past V."""
    cols = torch.arange(logits.shape[-1], device=logits.device)
    p = torch.exp(logits.float() - lse[..., None])
    grad = torch.where(cols < V, -p, 0.0) + (cols == targets[..., None]).float()
    return (grad * g[..., None]).to(logits.dtype)


_token_log_probs_fused = fused_on_gpu(_token_log_probs)
_log_normaliser_fused = fused_on_gpu(_log_normaliser)
_token_log_probs_grad_fused = fused_on_gpu(_token_log_probs_grad)


class TokenLogProbs(torch.autograd.Function):
    """log softmax(logits[..., :V])[target] with a hand-written backward: one pass writes the gradient
    (softmax minus one-hot, zero on padding columns) in the logits' dtype, where autograd through the
    fused forward adds a scatter for the gather and a full-size copy for the slice (measured 8.6 ms ->
    see results/bench_train_*.json for the step it is part of)."""

    @staticmethod
    def forward(ctx, logits, targets, V):
        lse = _log_normaliser_fused(logits, V)
        ctx.save_for_backward(logits, targets, lse)
        ctx.V = V
        return logits.gather(-1, targets[..., None]).squeeze(-1).float() - lse

    @staticmethod
    def backward(ctx, g):
        logits, targets, lse = ctx.saved_tensors
        return _token_log_probs_grad_fused(logits, targets, lse, g.float(), ctx.V), None, None


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor, V: int | None = None) -> torch.Tensor:
    """log softmax(logits[..., :V])[target] per row, float32, differentiable; logits in any float dtype.
    On a GPU fused kernels read the (bf16, padded) logits once forward and once backward, where the
    plain version writes float32 copies of the whole (N, V) tensor."""
    V = V or logits.shape[-1]
    if logits.device.type == "cuda":
        if torch.is_grad_enabled() and logits.requires_grad:
            return TokenLogProbs.apply(logits, targets, V)
        return _token_log_probs_fused(logits, targets, V)
    lf = logits[..., :V].float().flatten(0, -2)
    return -F.cross_entropy(lf, targets.flatten(), reduction="none").view(targets.shape)


def accepts_rows(model) -> bool:
    """Does model(x, t, rows=mask) compute logits only at the masked rows? (looks through DDP/compile)"""
    for attr in ("module", "_orig_mod"):
        model = getattr(model, attr, model)
    return bool(getattr(model, "accepts_rows", False))


def fused_targets(model) -> bool:
    """Does the model compute its losses with the fused linear + cross-entropy (the `lce` kernel)? Then the
    losses below ask it for the targets' log-probabilities (model(..., targets=)) instead of logits."""
    for attr in ("module", "_orig_mod"):
        model = getattr(model, attr, model)
    return bool(getattr(getattr(model, "kernels", None), "lce", False))


def masked_log_likelihood(model, x0: torch.Tensor, x_t: torch.Tensor, t, mask_id: int, *,
                          max_rows: int | None = None) -> torch.Tensor:
    """sum over masked positions of log x_theta(x0^l | x_t), (B,) float32.

    Only masked positions enter the MDLM loss (SUBS carries the others over with probability 1), so a
    model that accepts rows= computes its vocabulary projection there alone: about half the positions
    on average, and no (B, L, V) float32 tensor. Same value as the full softmax: the MASK column is
    dropped before normalising either way.

    max_rows: a static bound on the number of masked positions (masked_rows_cap()). Selecting the masked
    rows by a boolean mask makes the host wait for the GPU to count them (one sync per step, ~4 ms of
    an H200 training step); with max_rows the first max_rows positions in masked-first order are
    projected instead (a fixed shape: no sync, CUDA-graph capturable), the unmasked ones among them
    weighted 0. Same value and gradients. More masked positions than max_rows trips a device-side
    assert (the CUDA error stops the run) rather than dropping rows silently."""
    masked = x_t == mask_id
    if max_rows is not None and accepts_rows(model):
        return _masked_log_likelihood_static(model, x0, x_t, t, mask_id, masked, max_rows)
    if fused_targets(model):
        lp = model(x_t, t, rows=masked, targets=x0[masked], classes=mask_id)
    else:
        logits = model(x_t, t, rows=masked) if accepts_rows(model) else model(x_t, t)[masked]
        lp = token_log_probs(logits, x0[masked], mask_id)
    # Scatter back to (B, L) and sum per row: deterministic, unlike an atomic index_add.
    return torch.zeros(x0.shape, dtype=lp.dtype, device=lp.device).masked_scatter(masked, lp).sum(-1)


def _budget_rows(masked, max_rows):
    """-> (idx, keep): max_rows flat positions, the masked ones first (in row-major order, as masked_scatter
    would place them), then unmasked fill; keep marks the masked ones."""
    flat = masked.flatten()
    n = min(int(max_rows), flat.numel())
    idx = torch.sort(flat.logical_not().to(torch.uint8), stable=True).indices[:n]
    torch._assert_async(flat.sum() <= n, "more masked positions than max_rows (masked_rows_cap)")
    return idx, flat[idx]


def _masked_log_likelihood_static(model, x0, x_t, t, mask_id, masked, max_rows):
    flat = masked.flatten()
    idx, keep = _budget_rows(masked, max_rows)
    if fused_targets(model):
        lp = model(x_t, t, rows=idx, targets=torch.where(keep, x0.flatten()[idx], IGNORE), classes=mask_id)
    else:
        logits = model(x_t, t, rows=idx)
        lp = token_log_probs(logits, x0.flatten()[idx], mask_id)
        lp = torch.where(keep, lp, 0.0)  # unmasked fill rows: weight 0, gradient 0
    # idx holds distinct positions: a scatter into (B*L) is deterministic, then the same per-row sum.
    return torch.zeros(flat.numel(), dtype=lp.dtype, device=lp.device).scatter(0, idx, lp).view(x0.shape).sum(-1)


def masked_log_likelihood_sum(model, x0: torch.Tensor, x_t: torch.Tensor, t, mask_id: int, *,
                              max_rows: int | None = None) -> torch.Tensor:
    """masked_log_likelihood(...).sum(): every masked position weighted alike (MDLM's flat loss). With the
    fused linear + cross-entropy the sum is the kernel's own reduction, whose gradients it computes in the
    forward pass (no second projection in the backward pass, as the per-position path needs)."""
    if not (fused_targets(model) and accepts_rows(model)):
        return masked_log_likelihood(model, x0, x_t, t, mask_id, max_rows=max_rows).sum()
    masked = x_t == mask_id
    if max_rows is None:
        return model(x_t, t, rows=masked, targets=x0[masked], classes=mask_id, summed=True)
    idx, keep = _budget_rows(masked, max_rows)
    y = torch.where(keep, x0.flatten()[idx], IGNORE)
    return model(x_t, t, rows=idx, targets=y, classes=mask_id, summed=True)


def masked_rows_cap(schedule, batch: int, length: int, *, world: int = 1, t_eps: float = T_EPS,
                    sigmas: float = 10.0, multiple: int = 128) -> int:
    """A static bound on the masked positions of one rank's micro-batch under antithetic (stratified) t
    (masking.antithetic_times over the global batch of batch * world, this rank holding `batch`
    consecutive strata). Each t_i lies in its own stratum, so with 1 - alpha increasing in t the expected
    count is at most length * (sum of 1 - alpha at the top ends of the `batch` highest strata); the count
    is a sum of independent Bernoullis (variance <= batch * length / 4), and the bound adds `sigmas`
    standard deviations (10: P(exceeded) < 1e-23 per step), rounded up to `multiple`.
    `small` at L = 1024, batch 32, log-linear: 17920 rows, against 16384 on average."""
    bg = batch * world
    top = torch.arange(bg - batch + 1, bg + 1, dtype=torch.float64) / bg * (1 - t_eps) + t_eps
    p = (1 - torch.as_tensor(schedule.alpha(top), dtype=torch.float64)).clamp(0, 1)
    mean = float(p.sum()) * length
    bound = mean + sigmas * (batch * length / 4) ** 0.5
    return min(batch * length, -(-int(bound) // multiple) * multiple)


def mdlm_nelbo(model, x0: torch.Tensor, schedule, mask_id: int, *, generator=None, t=None, u=None,
               t_eps: float = T_EPS, antithetic: bool = True, max_rows: int | None = None) -> torch.Tensor:
    """Per-sequence NELBO estimate (B,) in nats (sum over positions, one t per sequence).
    t (B,) and u (B, L) may be given (pre-drawn noise); otherwise they are drawn from `generator`.
    max_rows: see masked_log_likelihood (a bound from masked_rows_cap() for antithetic t)."""
    B = x0.shape[0]
    if t is None:
        if antithetic:
            t = antithetic_times(B, eps=t_eps, generator=generator, device=x0.device)
        else:
            t = torch.rand(B, generator=generator, device=x0.device) * (1 - t_eps) + t_eps
    x_t = mask_tokens(x0, schedule.alpha(t), mask_id, generator, u)
    return nelbo_weight(schedule, t).float() * masked_log_likelihood(model, x0, x_t, t, mask_id, max_rows=max_rows)


def ar_token_log_probs(model, x: torch.Tensor, bos_id: int) -> torch.Tensor:
    """log p_AR(x^l | x^{<l}) for every position (B, L), float32. The input is [BOS, x^1..x^{L-1}],
    so the first token is scored too and sum(-1) is the exact log p_AR(x) of the whole sequence.
    BOS reuses the MASK id, which an AR model never sees otherwise."""
    inp = torch.cat([torch.full_like(x[:, :1], bos_id), x[:, :-1]], dim=1)
    if fused_targets(model):
        return model(inp, targets=x, classes=bos_id)
    return token_log_probs(model(inp), x, bos_id)


def ar_nll(model, x: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Per-sequence AR negative log-likelihood (B,) in nats, every one of the L tokens scored."""
    return -ar_token_log_probs(model, x, bos_id).sum(-1)


def ar_nll_sum(model, x: torch.Tensor, bos_id: int) -> torch.Tensor:
    """ar_nll(...).sum(); with the fused linear + cross-entropy, the kernel's own sum (gradients computed in
    its forward pass: no logits and no second projection)."""
    if not fused_targets(model):
        return ar_nll(model, x, bos_id).sum()
    inp = torch.cat([torch.full_like(x[:, :1], bos_id), x[:, :-1]], dim=1)
    return -model(inp, targets=x, classes=bos_id, summed=True)
