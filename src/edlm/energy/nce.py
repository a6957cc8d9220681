"""EDLM-NCE: a learned sequence energy E_phi(x0, x_t, t) and its noise-contrastive loss (docs/method.md 3b).

The network is the MDLM backbone (weights copied from a trained MDLM) reading BOTH sequences:
embed(x_t) and embed(x0) are concatenated per position and projected back to the hidden size,
conditioned on the real t, mean-pooled after the last layer, and an MLP head gives one scalar.
The head's output layer starts at zero, so E = 0 and EDLM == MDLM at step 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edlm.config.model import TransformerConfig
from edlm.models.transformer import Transformer


class EnergyNet(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        cfg = TransformerConfig.from_dict({**cfg.to_dict(), "time_conditioning": True, "causal": False})
        self.cfg = cfg
        self.backbone = Transformer(cfg)
        # The backbone's vocabulary projection is never used by the energy (it stays so that an MDLM state
        # dict loads whole); frozen, so DDP does not wait for gradients it will never get.
        self.backbone.final.linear.requires_grad_(False)
        D = cfg.d_model
        self.fuse = nn.Linear(2 * D, D, bias=False)
        with torch.no_grad():  # start as the mean of the two embeddings
            self.fuse.weight.copy_(torch.cat([torch.eye(D), torch.eye(D)], dim=1) * 0.5)
        self.head = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B, L), (B, L), (B,) -> E (B,)"""
        bb = self.backbone
        p = bb.cfg.prefix_token
        if p is not None:  # the token a converted backbone always saw first (its BOS): both streams get it
            first = x0.new_full((x0.shape[0], 1), p)
            x0, x_t = torch.cat([first, x0], 1), torch.cat([first, x_t], 1)
        h = self.fuse(torch.cat([bb.embed(x_t), bb.embed(x0)], dim=-1))
        c = bb.cond(t, x0.shape[0], x0.device)
        h = bb.final.features(bb.hidden(h, c), c)
        if p is not None:
            h = h[:, 1:]  # pool over the real positions only
        return self.head(h.mean(dim=1)).squeeze(-1).float()


class NCEEnergy:
    """Adapter to the energy interface, for sampling with a trained EnergyNet."""

    normalised = False  # a trained network's log Z is unknown

    def __init__(self, net: EnergyNet, batch_size: int = 0):
        self.net, self.batch_size = net, batch_size

    @torch.no_grad()
    def energy(self, x0, x_t, t, *, log_mu=None):
        n = self.batch_size or x0.shape[0]
        return torch.cat([self.net(x0[i:i + n], x_t[i:i + n], t[i:i + n]) for i in range(0, x0.shape[0], n)])


def nce_loss(e_pos: torch.Tensor, e_neg: torch.Tensor):
    """Binary NCE with n negatives per positive. e_pos: (B,), e_neg: (B, n).

    The classifier logit is -E - log n, so at the optimum -E = log p_data(x0|x_t) / mu(x0|x_t) for any n.
    Returns per-positive loss (B,) and per-positive count of correct decisions (B,) out of 1 + n.
    """
    n = e_neg.shape[1]
    shift = math.log(n)
    logit_pos, logit_neg = -e_pos - shift, -e_neg - shift
    loss = -F.logsigmoid(logit_pos) - F.logsigmoid(-logit_neg).sum(-1)
    correct = (logit_pos > 0).float() + (logit_neg < 0).float().sum(-1)
    return loss, correct
