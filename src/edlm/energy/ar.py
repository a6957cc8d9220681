"""EDLM-AR: an energy from a pretrained autoregressive model; no training (docs/method.md 3a).

Full joint ("ar", the sampling default):
    E(x0, x_t, t) = -log p_AR(x0) + log mu_theta(x0 | x_t)
so mu * exp(-E) ∝ p_AR(x0) restricted to the x0 that agree with x_t: every position scored.
Carry-over ("coar"): positions unmasked in x_t count with probability 1 instead of their AR
conditional, so p_coAR(x0|x_t) is normalised (log Z = 0): exact likelihood, weaker sampler.

Shared prefix: the k candidates of one sequence agree with x_t wherever x_t is unmasked, so up to x_t's first
MASK they are the same tokens (in semi-autoregressive or block-wise generation, the whole left context). That
prefix runs through the AR model once per distinct prefix, its keys and values are kept, and only the rest
runs once per candidate (models/transformer.py's causal KV cache). The same numbers up to float rounding;
`tokens` counts what ran against what a plain forward would run.
"""

from __future__ import annotations

import torch

from edlm.diffusion.losses import ar_token_log_probs, token_log_probs
from edlm.diffusion.subs import gather_masked_log_probs


class AREnergy:
    def __init__(self, ar_model, proposal, mask_id: int, *, carry_over: bool = False, batch_size: int = 0,
                 share_prefix: bool = True):
        """proposal: denoise(x_t, t) -> SUBS log-probs (only used when log_mu is not given).
        batch_size: score at most this many sequences per AR forward (0: as many as keep one forward's float32
        logits under ~4 GiB, seqs_per_forward).
        share_prefix: run the candidates' common clean prefix once (module doc)."""
        self.ar, self.proposal, self.mask_id = ar_model, proposal, mask_id
        self.carry_over, self.batch_size, self.share_prefix = carry_over, batch_size, share_prefix
        self.tokens = [0, 0]
        """[AR token-positions run, those a plain forward of every candidate would run]"""
        # mu * exp(-E) is then p_coAR(x0|x_t), which sums to 1 over x0: log Z = 0 exactly (docs/method.md 3a).
        self.normalised = carry_over

    def seqs_per_forward(self, length: int) -> int:
        """Sequences of `length` tokens one AR forward scores: batch_size, or as many as keep the chunk's float32
        logits under ~4 GiB (B*k*L*V can reach 100 GB at OWT scale). sampling/budget.py counts on it."""
        return self.batch_size or max(1, (1 << 30) // max(1, length * self.mask_id))

    def ar_log_prob(self, x0: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """log p_AR(x0) (full joint) or log p_coAR(x0 | x_t) (carry-over), (B,) float32."""
        n = self.seqs_per_forward(x0.shape[1])
        N, L = x0.shape
        self.tokens[1] += N * L
        masked = (x_t == self.mask_id).any(0)
        P = int(masked.float().argmax()) if bool(masked.any()) else L  # first position masked in some row
        if self.share_prefix and P > 0:
            uniq, inv = torch.unique_consecutive(x0[:, :P], dim=0, return_inverse=True)
            if uniq.shape[0] < N and uniq.shape[0] <= n:  # the prefixes in one forward: seqs_per_forward's bound
                return self._shared_prefix(x0, x_t, uniq, inv, n)
        self.tokens[0] += N * L
        out = []
        for i in range(0, N, n):
            lp = ar_token_log_probs(self.ar, x0[i:i + n], bos_id=self.mask_id)
            if self.carry_over:
                lp = lp.masked_fill(x_t[i:i + n] != self.mask_id, 0.0)
            out.append(lp.sum(-1))
        return torch.cat(out)

    def _shared_prefix(self, x0, x_t, uniq, inv, n):
        """ar_log_prob with the P-token prefix uniq (U, P) run once; row r of x0 has prefix uniq[inv[r]]."""
        N, L = x0.shape
        U, P = uniq.shape
        bos = torch.full_like(uniq[:, :1], self.mask_id)
        caches = self.ar.new_kv_caches()
        lp_pre = token_log_probs(self.ar(torch.cat([bos, uniq[:, :-1]], 1), kv_caches=caches), uniq, self.mask_id)
        self.tokens[0] += U * P
        out = []
        for i in range(0, N, n):
            rows = inv[i:i + n]
            lp = lp_pre.index_select(0, rows)
            if P < L:
                kv = [{"k": c["k"].index_select(0, rows), "v": c["v"].index_select(0, rows)} for c in caches]
                rest = self.ar(x0[i:i + n, P - 1:L - 1], start=P, kv_caches=kv)
                lp = torch.cat([lp, token_log_probs(rest, x0[i:i + n, P:], self.mask_id)], 1)
                self.tokens[0] += rows.numel() * (L - P)
            if self.carry_over:
                lp = lp.masked_fill(x_t[i:i + n] != self.mask_id, 0.0)
            out.append(lp.sum(-1))
        return torch.cat(out)

    @torch.no_grad()
    def energy(self, x0, x_t, t, *, log_mu=None):
        if log_mu is None:
            log_mu = gather_masked_log_probs(self.proposal(x_t, t), x0, x_t, self.mask_id)
        return -self.ar_log_prob(x0, x_t) + log_mu
