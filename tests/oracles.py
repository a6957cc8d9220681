"""Exact denoisers for tests: the true posterior marginals p(x0^l | x_t) of known languages.

With the true marginals a masked-diffusion NELBO is tight (it equals -log p(x) in expectation), and the
sampler is exact for factorised languages: these oracles let tests check the math without training.
"""

import torch


def markov_posterior_log_marginals(lang, x_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Forward-backward on the synthetic Markov chain. x_t: (B, L) -> (B, L, V) float64 log-probs."""
    P, pi = lang.transition.to(x_t.device), lang.stationary.to(x_t.device)
    B, L = x_t.shape
    V = P.shape[0]
    obs = x_t != mask_id
    onehot = torch.nn.functional.one_hot(x_t.clamp(max=V - 1), V).double()
    emit = torch.where(obs[..., None], onehot, torch.ones_like(onehot))
    fwd = torch.empty(B, L, V, dtype=torch.float64)
    a = pi[None] * emit[:, 0]
    fwd[:, 0] = a / a.sum(-1, keepdim=True)
    for i in range(1, L):
        a = (fwd[:, i - 1] @ P) * emit[:, i]
        fwd[:, i] = a / a.sum(-1, keepdim=True)
    bwd = torch.ones(B, L, V, dtype=torch.float64)
    for i in range(L - 2, -1, -1):
        b = (emit[:, i + 1] * bwd[:, i + 1]) @ P.T
        bwd[:, i] = b / b.sum(-1, keepdim=True)
    post = fwd * bwd
    return (post / post.sum(-1, keepdim=True)).log()


def markov_denoiser(lang, mask_id):
    def denoise(x_t, t):
        return markov_posterior_log_marginals(lang, x_t, mask_id).float()

    return denoise


def iid_denoiser(probs: torch.Tensor, mask_id: int):
    """An i.i.d. (per-position) language with probs (L, V): its true denoiser, SUBS form."""
    logp = probs.double().log()

    def denoise(x_t, t):
        out = logp[None].expand(x_t.shape[0], -1, -1).clone()
        carry = torch.full_like(out, float("-inf"))
        carry.scatter_(-1, x_t.clamp(max=probs.shape[1] - 1)[..., None], 0.0)
        return torch.where((x_t != mask_id)[..., None], carry, out).float()

    return denoise


class ModelFromDenoiser(torch.nn.Module):
    """Lets a denoise(x_t, t) log-prob callable stand where a model returning logits is expected."""

    def __init__(self, denoise, mask_id):
        super().__init__()
        self.denoise, self.mask_id = denoise, mask_id

    def forward(self, x_t, t=None):
        lp = self.denoise(x_t, t)
        return torch.cat([lp, torch.full_like(lp[..., :1], -1e9)], -1)  # a MASK column, never chosen
