"""EDLM-AR: an energy from a pretrained autoregressive model; no training (docs/method.md 3a).

Full joint ("ar", the sampling default):
    E(x0, x_t, t) = -log p_AR(x0) + log mu_theta(x0 | x_t)
so mu * exp(-E) ∝ p_AR(x0) restricted to the x0 that agree with x_t: every position scored.
Carry-over ("coar"): positions unmasked in x_t count with probability 1 instead of their AR
conditional, so p_coAR(x0|x_t) is normalised (log Z = 0): exact likelihood, weaker sampler.
"""

from __future__ import annotations

import torch

from edlm.diffusion.losses import ar_token_log_probs
from edlm.diffusion.subs import gather_masked_log_probs


class AREnergy:
    def __init__(self, ar_model, proposal, mask_id: int, *, carry_over: bool = False, batch_size: int = 0):
        """proposal: denoise(x_t, t) -> SUBS log-probs (only used when log_mu is not given).
        batch_size: score at most this many sequences per AR forward (0: as many as keep one forward's float32
        logits under ~4 GiB, seqs_per_forward)."""
        self.ar, self.proposal, self.mask_id = ar_model, proposal, mask_id
        self.carry_over, self.batch_size = carry_over, batch_size
        # mu * exp(-E) is then p_coAR(x0|x_t), which sums to 1 over x0: log Z = 0 exactly (docs/method.md 3a).
        self.normalised = carry_over

    def seqs_per_forward(self, length: int) -> int:
        """Sequences of `length` tokens one AR forward scores: batch_size, or as many as keep the chunk's float32
        logits under ~4 GiB (B*k*L*V can reach 100 GB at OWT scale). sampling/budget.py counts on it."""
        return self.batch_size or max(1, (1 << 30) // max(1, length * self.mask_id))

    def ar_log_prob(self, x0: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """log p_AR(x0) (full joint) or log p_coAR(x0 | x_t) (carry-over), (B,) float32."""
        n = self.seqs_per_forward(x0.shape[1])
        out = []
        for i in range(0, x0.shape[0], n):
            lp = ar_token_log_probs(self.ar, x0[i:i + n], bos_id=self.mask_id)
            if self.carry_over:
                lp = lp.masked_fill(x_t[i:i + n] != self.mask_id, 0.0)
            out.append(lp.sum(-1))
        return torch.cat(out)

    @torch.no_grad()
    def energy(self, x0, x_t, t, *, log_mu=None):
        if log_mu is None:
            log_mu = gather_masked_log_probs(self.proposal(x_t, t), x0, x_t, self.mask_id)
        return -self.ar_log_prob(x0, x_t) + log_mu
